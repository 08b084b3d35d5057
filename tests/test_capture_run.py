"""A run with packet captures on, end to end on the emulated lab (the AP as a namespace: the
four capture points): the files are kept and sized in the manifest, the breakdown reads them,
and no tcpdump is left behind, after a finished run and after Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.comm_parts import TOLERANCE_S, run_parts

from tests.childproc import restore_sigint

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the emulated lab needs root (network namespaces)"),
]

SCENARIO = """\
name: capture-test
link: {{kind: wifi, preset: wifi-80211g}}
hosts:
  - {{name: md, role: md}}
  - {{name: es, role: es}}
  - {{name: ap, role: ap, backend: namespace}}
  - {{name: ext, role: ext}}
sweep: {{loads_mbit: [0], settle_s: 0.5}}
model: mobilenet_v2
configurations:
  - {{name: ec, mode: EC, model: mobilenet_v2}}
frames: {frames}
warmup: 1
packet_capture: {{enabled: true, snap_bytes: 96}}
"""
POINTS = {"md", "ap-in", "ap-out", "es"}


def _tcpdumps(run_id: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cmd.startswith("tcpdump") and run_id in cmd:
            found.append(f"{pid}: {cmd[:120]}")
    return found


def test_captures_are_kept_and_no_tcpdump_stays(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.format(frames=4))
    proc = subprocess.run([sys.executable, "-m", "testbed", "run", str(scenario), "--results",
                           str(tmp_path / "results")], capture_output=True, text=True, timeout=600)
    runs = list((tmp_path / "results").iterdir())
    assert proc.returncode == 0 and len(runs) == 1, proc.stderr[-3000:]
    out = runs[0]
    manifest = json.loads((out / "manifest.json").read_text())
    (step, record), = manifest["steps"].items()
    assert set(record["captures"]) == POINTS
    for point, entry in record["captures"].items():
        path = out / entry["file"]
        assert path == out / "captures" / step / f"{point}.pcap.gz"
        assert path.stat().st_size == entry["bytes"] > 0
        assert entry["captured"] > 0 and entry["dropped_by_kernel"] == 0
        assert entry["captured"] == entry["received_by_filter"]  # nothing left in a kernel buffer
    assert record["clock"]["before"]["reading_ns"] < 1_000_000
    parts = [p for p in run_parts(out) if not p.warmup]
    assert len(parts) == 4
    assert all(abs(p.comm - p.parts_sum) <= TOLERANCE_S for p in parts if not p.flag)
    assert _tcpdumps(manifest["run_id"]) == []


def test_ctrl_c_stops_the_captures(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.format(frames=400))
    proc = subprocess.Popen([sys.executable, "-m", "testbed", "run", str(scenario), "--results",
                             str(tmp_path / "results")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=restore_sigint)
    run_id = None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and run_id is None:  # until tcpdump runs
            for path in (tmp_path / "results").glob("*/manifest.json"):
                rid = json.loads(path.read_text()).get("run_id")
                if rid and _tcpdumps(rid):
                    run_id = rid
            time.sleep(0.5)
        assert run_id, "no tcpdump started within 180 s"
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert _tcpdumps(run_id) == []
