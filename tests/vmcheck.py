"""What the VM tests share: when they can run, and that a run left nothing behind."""

from __future__ import annotations

import os
import shutil

import pytest

from testbed.lab import cleanup, names, netns, procs, runs
from testbed.vm import boot


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (namespaces, taps, dpkg -x, chroot)"
    if shutil.which(boot.QEMU) is None:
        return f"{boot.QEMU} not installed (apt-get install qemu-system-x86)"
    for tool in ("apt-get", "dpkg", "modinfo", "depmod", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (the VM image build needs apt, dpkg, kmod, coreutils)"
    return None


needs_vm = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


def qemu_pids(run_id: str) -> list[int]:
    found = []
    for e in os.listdir("/proc"):
        if e.isdigit() and boot._is_our_qemu(int(e), run_id) and procs.is_running(int(e)):
            found.append(int(e))
    return found


def owned_links(run_id: str) -> list[str]:
    return [n for links in cleanup.owned_root_links().values() for n in links
            if names.is_owned_interface(n, run_id)]


def assert_nothing_left(run_id: str) -> None:
    """No QEMU, tap, namespace, VM pid file or record, run record of ``run_id``."""
    assert qemu_pids(run_id) == []
    assert owned_links(run_id) == []
    assert netns.owned_namespaces(run_id) == []
    assert not boot.pid_file(run_id).exists() and not boot.record_file(run_id).exists()
    assert runs.read_run_record(run_id) is None
