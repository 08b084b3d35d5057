"""Signals around a lab's lifecycle: SIGINT/SIGTERM deferred while objects are being made or
removed (so an interrupt never leaves a half-made one), and SIGTERM turned into ``SystemExit``
while a lab is up (so its ``with`` block unwinds and tears it down).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Block SIGINT/SIGTERM in the main thread for the duration; pending ones fire after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class SigtermGuard:
    """Mixin for a lab: while it is up, SIGTERM unwinds its ``with`` block (see
    :func:`_make_sigterm_handler`), then the previous handler comes back. Only the main thread
    can set handlers, and a handler someone else installed is left alone."""

    _old_sigterm: Any = None

    def _install_sigterm(self) -> None:
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            self._old_sigterm = signal.signal(signal.SIGTERM, _make_sigterm_handler(os.getpid()))

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None


def _make_sigterm_handler(owner_pid: int) -> Any:
    """SIGTERM -> SystemExit in the lab's process (so ``with`` blocks unwind and tear down).

    A forked child (pyroute2 helpers fork without exec and are stopped with SIGTERM) inherits
    the handler: there it terminates at once, as SIGTERM's default would, without unwinding
    the parent's stack.
    """

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != owner_pid:
            os._exit(128 + signum)
        raise SystemExit(128 + signum)

    return handler
