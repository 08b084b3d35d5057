"""What the ns3 backend's tests share: when they can run, a TCP transfer across the simulated
cell, a lab owner to kill, and that a lab left nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.lab import names, netns, procs, runs
from testbed.ns3_settings import ns3_available

ROOT = Path(__file__).parents[1]
needs_ns3 = pytest.mark.skipif(not ns3_available(), reason="ns-3 (ns3==3.44.post0) not installed")

SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5001)); s.listen(1); s.settimeout(60)
c, _ = s.accept(); c.settimeout(60); n = 0
while True:
    b = c.recv(65536)
    if not b:
        break
    n += len(b)
c.sendall(str(n).encode()); c.close()
"""
CLIENT = """
import socket, sys, time
t = time.monotonic()
s = socket.create_connection((sys.argv[1], 5001), 20); s.settimeout(60)
s.sendall(b"x" * int(sys.argv[2])); s.shutdown(socket.SHUT_WR)
print(s.recv(64).decode(), time.monotonic() - t)
"""
# A lab owner in its own process: up, prints its run id and the ns-3 pid, waits to be killed.
OWNER = """
import importlib, sys, time
from pathlib import Path
from testbed.lab.plan import LabPlan, LinkShape
module, cls, rate, router = sys.argv[2:6]
lab_class = getattr(importlib.import_module(module), cls)
plan = LabPlan.star(LinkShape(rate_mbit=float(rate)), router=router)
print("RUN", plan.run_id, flush=True)
with lab_class(plan, Path(sys.argv[1])) as lab:
    print("UP", lab.proc.pid, flush=True)
    time.sleep(300)
"""


def transfer(lab, size: int) -> tuple[int, float]:
    """``size`` bytes over TCP from the MD's namespace to the ES's; (bytes the ES counted, as
    sent back to the MD, and the seconds it took)."""
    server = netns.popen_in_namespace(lab.namespace("es"), [sys.executable, "-c", SERVER],
                                      stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        client = netns.run_in_namespace(
            lab.namespace("md"), [sys.executable, "-c", CLIENT, lab.address("es"), str(size)],
            timeout=90, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert client.returncode == 0, client.stderr
        got, seconds = client.stdout.split()
        return int(got), float(seconds)
    finally:
        server.kill()
        server.wait(timeout=10)


def owner(tmp_path: Path, lab_class: str, rate_mbit: float, router: str) -> subprocess.Popen:
    """A process owning a lab of ``lab_class`` (``module:Class``) on a star plan."""
    module, cls = lab_class.split(":")
    return subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path / "ns3"), module, cls,
                             str(rate_mbit), router], stdout=subprocess.PIPE, text=True, cwd=ROOT)


def read_until(proc: subprocess.Popen, word: str, timeout_s: float) -> list[str]:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(word):
            return line.split()
    raise AssertionError(f"owner never printed {word} (exit {proc.poll()})")


def taps(run_id: str) -> list[str]:
    out = []
    for ns in netns.owned_namespaces(run_id):
        with netns.iproute(ns) as ipr:
            out += [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()
                    if names.is_owned_interface(link.get_attr("IFLA_IFNAME"), run_id)]
    return out


def nothing_left(run_id: str, pid: int | None) -> None:
    assert netns.owned_namespaces(run_id) == []
    assert runs.read_run_record(run_id) is None
    if pid is not None:
        assert not procs.is_running(pid), f"ns-3 process {pid} still runs"


def sigkill_then_clean(tmp_path: Path, lab_class: str, rate_mbit: float, router: str) -> None:
    """SIGKILL a lab's owner once the lab is up; ``testbed clean --run-id`` must then stop the
    orphaned simulator and leave no namespace, tap or record."""
    proc = owner(tmp_path, lab_class, rate_mbit, router)
    try:
        run_id = read_until(proc, "RUN", 30)[1]
        pid = int(read_until(proc, "UP", 150)[1])
        proc.kill()
        proc.wait(timeout=10)
        assert procs.is_running(pid)  # orphaned, with its taps
        assert len(taps(run_id)) == 3
        out = subprocess.run([sys.executable, "-m", "testbed", "clean", "--run-id", run_id],
                             capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        assert f"(ns-3 of run {run_id})" in out.stdout
        nothing_left(run_id, pid)
        assert not any(names.is_owned_interface(i, run_id) for i in os.listdir("/sys/class/net"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
