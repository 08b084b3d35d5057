"""What every host set (the emulated lab's, a real lab's) shares: ``with hosts:`` brings them up,
and every step of the bring-up is undone in reverse on exit, also when the bring-up fails
half-way or is interrupted."""

from __future__ import annotations

import contextlib
from typing import Any


class HostSet:
    """Subclasses implement :meth:`_up` and register each undo step on ``self._stack``."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()

    def _up(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "HostSet":
        try:
            self._up()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()
