"""testbed.lab.procs: a process runs until its last thread is gone, and stopping one returns only
after it has exited (what `testbed clean` relies on). Real processes, real signals."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from testbed.lab import backends, cleanup, names, netns, procs

# A process that ignores SIGTERM and whose main thread exits (pthread_exit) while a second thread
# keeps it alive: /proc shows its leader as a zombie, as with a QEMU whose main thread is gone.
STUBBORN = """
import ctypes, signal, sys, threading, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
threading.Thread(target=time.sleep, args=(60,)).start()
print("ready", flush=True)
ctypes.CDLL(None).pthread_exit(None)
"""


def _leader_state(pid: int) -> str | None:
    st = procs.proc_stat(pid)
    return st[0] if st else None


def _start_stubborn(popen=subprocess.Popen, *args) -> subprocess.Popen:
    proc = popen(*args, [sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 10
    while _leader_state(proc.pid) != "Z":
        assert time.monotonic() < deadline, f"leader never became a zombie: {_leader_state(proc.pid)}"
        time.sleep(0.01)
    return proc


def test_a_zombie_leader_with_a_live_thread_is_running_and_stop_pids_waits_for_it() -> None:
    proc = _start_stubborn()
    try:
        assert procs.is_running(proc.pid), "its second thread still runs"
        t0 = time.monotonic()
        done = procs.stop_pids([proc.pid], term_grace_s=0.3)
        waited = time.monotonic() - t0
        assert not procs.is_running(proc.pid), done  # gone when stop_pids returns
        assert len(done) == 1 and done[0].startswith(f"kill pid {proc.pid} ("), done
        assert "STILL RUNNING" not in done[0]
        assert waited >= 0.3, "SIGTERM is ignored: only SIGKILL after the grace period stops it"
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_stop_pids_spares_this_process_and_reports_a_dry_run() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert procs.stop_pids([proc.pid], dry_run=True, where={proc.pid: "here"}) == \
            [f"kill pid {proc.pid} ({procs.comm(proc.pid)}) in here"]
        assert proc.poll() is None
        assert procs.stop_pids([os.getpid(), os.getppid(), 1]) == []
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.mark.root
def test_clean_returns_after_a_stubborn_process_in_the_runs_namespace_has_exited(needs_root) -> None:
    run_id = names.new_run_id()
    ns = names.namespace_name(run_id, "md")
    netns.create_namespace(ns)
    proc = None
    try:
        proc = _start_stubborn(netns.popen_in_namespace, ns)
        assert netns.pids_in_namespace(ns) == [proc.pid]
        removed = backends.clean(run_id=run_id)
        assert not procs.is_running(proc.pid), removed
        assert any(r.startswith(f"kill pid {proc.pid} (") and r.endswith(f") in {ns}")
                   for r in removed), removed
        assert not netns.namespace_exists(ns)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(timeout=10)
            proc.stdout.close()
        cleanup.remove_run(run_id)
