"""Processes as Linux shows them in /proc: state, start time, tree, listening sockets, stopping.

One place for what the lab's cleanup, the emulated hosts' sshd and the AP VM need to know about
a process they did not necessarily start (a killed run's leftovers):

* :func:`proc_stat` / :func:`starttime`: a pid's state, parent, group and start time (the pair
  pid + start time names one process; a reused pid has another start time);
* :func:`is_running`: the process still exists and is not merely a zombie. A multi-threaded
  process (QEMU) whose main thread has exited shows its leader as a zombie while its other
  threads still run and hold its files and taps: it counts as running until every thread is gone;
* :func:`stop_pids`: SIGTERM, a bounded wait, SIGKILL, and a bounded wait until each has exited
  (never this process, its parent or init);
* :func:`process_tree`, :func:`listening`, :func:`cpu_seconds`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

TERM_GRACE_S = 2.0
"""How long :func:`stop_pids` gives SIGTERM before it sends SIGKILL."""
STOP_TIMEOUT_S = 10.0
"""How long :func:`stop_pids` waits in all for the processes it signalled to exit."""


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, starttime) of ``pid``, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            data = fh.read()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    try:
        rest = data[data.rindex(")") + 2 :].split()
        return rest[0], int(rest[1]), int(rest[2]), int(rest[19])
    except (ValueError, IndexError):
        return None


def starttime(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), or None if no such running
    process (gone, or a zombie)."""
    st = proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return None
    return st[3]


def _thread_running(pid: int, tid: str) -> bool:
    try:
        with open(f"/proc/{pid}/task/{tid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def is_running(pid: int, start: int | None = None) -> bool:
    """True while any thread of ``pid`` runs (a zombie leader with live threads counts) and, if
    ``start`` is given, the pid still names the process that started at that time."""
    st = proc_stat(pid)
    if st is None or (start is not None and st[3] != start):
        return False
    if st[0] not in ("Z", "X"):
        return True
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    return any(_thread_running(pid, t) for t in tids)


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return "?"


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def process_tree(root_pid: int) -> dict[int, int]:
    """Descendants of ``root_pid`` (not including it) as ``{pid: starttime}``."""
    children: dict[int, list[tuple[int, int]]] = {}
    for pid in all_pids():
        st = proc_stat(pid)
        if st is None:
            continue
        children.setdefault(st[1], []).append((pid, st[3]))
    out: dict[int, int] = {}
    todo = [root_pid]
    while todo:
        parent = todo.pop()
        for pid, start in children.get(parent, ()):
            if pid not in out and pid != root_pid:
                out[pid] = start
                todo.append(pid)
    return out


def send(pid: int, sig: int) -> None:
    """``kill(pid, sig)``; a process that is already gone is fine."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def send_group(pgid: int, sig: int) -> None:
    """``killpg(pgid, sig)``; a group that is already gone is fine."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def wait_gone(targets: Mapping[int, int | None], timeout_s: float) -> list[int]:
    """Wait (bounded) until none of ``{pid: starttime or None}`` runs; the pids still running."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = [p for p, s in targets.items() if is_running(p, s)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)


def stop_pids(pids: Iterable[int], *, term_grace_s: float = TERM_GRACE_S,
              timeout_s: float = STOP_TIMEOUT_S, dry_run: bool = False,
              where: Mapping[int, str] | None = None) -> list[str]:
    """SIGTERM, wait, SIGKILL the survivors, wait until every one has exited; what was done.

    ``term_grace_s`` for SIGTERM, the rest of ``timeout_s`` for SIGKILL to take effect. Never
    signals this process, its parent or init. A pid is told from a later process with the same
    number by its start time, read before the first signal. Exited children are left for their
    owners to reap (a zombie whose threads are all gone holds nothing). ``where``: pid -> where it
    was found (its namespace), named in the returned lines. A process still running at the end
    (stuck in the kernel) is named with ``STILL RUNNING`` and logged.
    """
    protected = {os.getpid(), os.getppid(), 1}
    targets = {p: starttime(p) for p in dict.fromkeys(pids) if p not in protected}
    targets = {p: s for p, s in targets.items() if s is not None or is_running(p)}
    where = where or {}
    done = [f"kill pid {p} ({comm(p)})" + (f" in {where[p]}" if p in where else "")
            for p in targets]
    if dry_run or not targets:
        return done
    for p in targets:
        send(p, signal.SIGTERM)
    left = wait_gone(targets, min(term_grace_s, timeout_s))
    for p in left:
        send(p, signal.SIGKILL)
    left = wait_gone({p: targets[p] for p in left}, max(0.0, timeout_s - term_grace_s))
    order = list(targets)
    for p in left:
        log.warning("pid %d (%s) still runs after SIGKILL", p, comm(p))
        done[order.index(p)] += " STILL RUNNING"
    return done


def listening(pid: int, address: str, port: int) -> bool:
    """Does the network namespace of ``pid`` have a TCP socket LISTENing on address:port (or on
    the wildcard address)? Read from ``/proc/<pid>/net/tcp{,6}``."""
    want = ipaddress.ip_address(address)
    files = ("tcp6",) if want.version == 6 else ("tcp",)
    for fname in files:
        try:
            lines = Path(f"/proc/{pid}/net/{fname}").read_text().splitlines()[1:]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "0A":  # 0A = TCP_LISTEN
                continue
            hexaddr, hexport = fields[1].split(":")
            if int(hexport, 16) != port:
                continue
            raw = bytes.fromhex(hexaddr)
            # /proc prints the address as host-endian 32-bit words
            words = [raw[i : i + 4] for i in range(0, len(raw), 4)]
            if sys.byteorder == "little":
                words = [w[::-1] for w in words]
            got = ipaddress.ip_address(b"".join(words))
            if got == want or got.is_unspecified:
                return True
    return False


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` so far (seconds), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None

