"""For tests that interrupt a child process with SIGINT (Ctrl-C)."""

from __future__ import annotations

import signal


def restore_sigint() -> None:
    """``preexec_fn``: give the child SIGINT's default disposition. A test run started from a
    background job of a non-interactive shell (``cmd &`` in a script, CI runners) inherits
    SIGINT ignored, and Python then installs no KeyboardInterrupt handler in the child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
