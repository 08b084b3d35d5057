"""A run with packet captures on, end to end on the emulated lab (the AP as a namespace: the
four capture points; the AP simulated by ns-3: the MD's and ES's taps): the files are kept and
sized in the manifest, the breakdown reads them, and no tcpdump is left behind, after a finished
run and after Ctrl-C."""

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
from analysis.comm_report import write_breakdown
from testbed.ns3_settings import ns3_available

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
  - {{name: ap, role: ap, backend: {backend}}}
  - {{name: ext, role: ext}}
sweep: {{loads_mbit: [0], settle_s: 0.5}}
model: mobilenet_v2
configurations:
  - {{name: ec, mode: EC, model: mobilenet_v2}}
frames: {frames}
warmup: 1
packet_capture: {{enabled: true, snap_bytes: 96}}
cpu_isolation: false   # captures, not processing, are under test
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


def _run(tmp_path: Path, backend: str, frames: int) -> tuple[Path, dict, str, dict]:
    """A one-step run with captures: its folder, manifest, step and step record; each kept
    capture checked (file, size, no packet lost by tcpdump)."""
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.format(frames=frames, backend=backend))
    proc = subprocess.run([sys.executable, "-m", "testbed", "run", str(scenario), "--results",
                           str(tmp_path / "results")], capture_output=True, text=True, timeout=600)
    runs = list((tmp_path / "results").iterdir())
    assert proc.returncode == 0 and len(runs) == 1, proc.stderr[-3000:]
    out = runs[0]
    manifest = json.loads((out / "manifest.json").read_text())
    (step, record), = manifest["steps"].items()
    for point, entry in record["captures"].items():
        path = out / entry["file"]
        assert path == out / "captures" / step / f"{point}.pcap.gz"
        assert path.stat().st_size == entry["bytes"] > 0
        assert entry["captured"] > 0 and entry["dropped_by_kernel"] == 0
        assert entry["captured"] == entry["received_by_filter"]  # nothing left in a kernel buffer
    assert record["clock"]["before"]["reading_ns"] < 1_000_000
    return out, manifest, step, record


def test_captures_are_kept_and_no_tcpdump_stays(tmp_path):
    out, manifest, _, record = _run(tmp_path, "namespace", frames=4)
    assert set(record["captures"]) == POINTS
    parts = [p for p in run_parts(out) if not p.warmup]
    assert len(parts) == 4
    assert all(abs(p.comm - p.parts_sum) <= TOLERANCE_S for p in parts if not p.flag)
    assert _tcpdumps(manifest["run_id"]) == []


@pytest.mark.skipif(not ns3_available(), reason="ns-3 (ns3==3.44.post0) not installed")
def test_ns3_backend_captures_at_the_taps(tmp_path):
    """The ns3 backend: tcpdump on the MD's and the ES's taps (the simulated cell between them
    has no Linux interface); every frame splits, its time in the cell one part (``medium``),
    and the report says queue and serialization are not split there."""
    out, manifest, step, record = _run(tmp_path, "ns3", frames=4)
    run_id = manifest["lab"]["run_id"]
    assert {p: (e["interface"], tuple(e["roles"])) for p, e in record["captures"].items()} == {
        "md": (f"tb{run_id}-smd", ("md", "bottleneck-in")),
        "es": (f"tb{run_id}-ses", ("bottleneck-out", "es"))}
    parts = [p for p in run_parts(out) if not p.warmup]
    assert len(parts) == 4 and not [p.flag for p in parts if p.flag]
    for p in parts:
        assert abs(p.residual) < 1e-5  # one station, no reordering: the parts are comm exactly
        assert p.queue == p.serialization == 0.0 and p.medium >= 0 and p.fixed > 0
        assert p.unsplit.startswith("ns3 backend: ns-3 802.11g BSS has no nominal rate")
    report = write_breakdown(out, tmp_path / "figures", tmp_path / "tables")
    assert "Not split: ns3 backend" in report.html and "comm_timeline" in report.figures
    assert (out / "captures" / step / "breakdown.json").exists()
    assert _tcpdumps(run_id) == []


def test_ctrl_c_stops_the_captures(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.format(frames=400, backend="namespace"))
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
