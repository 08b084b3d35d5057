"""A set of hosts the orchestrator drives (the emulated lab's, a real lab's): what it must offer
(:class:`HostSet`) and the bring-up every one shares (:class:`HostSetBase`: ``with hosts:`` brings
them up, and every step of the bring-up is undone in reverse on exit, also when the bring-up
fails half-way or is interrupted)."""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

from testbed.hosts.remote import Host


class HostSet(Protocol):
    """What the orchestrator uses of a set of hosts. Optional: ``step_conditions() -> dict``,
    recorded before each step (host load; with the AP VM its CPU and queues; on a real lab the
    link probe and the radio state); ``step_medium() -> dict | None``, recorded after each step
    (a simulated medium's counters: ns-3)."""

    run_id: str
    python: str
    workdir: str

    def host(self, name: str) -> Host: ...
    def address(self, name: str) -> str: ...
    def manifest(self) -> dict[str, Any]: ...


class HostSetBase:
    """Subclasses implement :meth:`_up` and register each undo step on ``self._stack``."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()

    def _up(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "HostSetBase":
        try:
            self._up()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()
