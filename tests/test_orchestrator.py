"""The orchestrator end to end on the emulated lab: namespaces, sshd, iperf3, head and tail."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.lab.cleanup import owned_namespaces
from testbed.orchestrator import finished_steps
from testbed.records import read_records

from tests.childproc import restore_sigint

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the emulated lab needs root (network namespaces)"),
]

SCENARIO = """\
name: orch-test
link: {{kind: wifi, preset: wifi-80211g}}
hosts:
  - {{name: md, role: md}}
  - {{name: es, role: es}}
  - {{name: ap, role: ap, backend: namespace}}   # tests orchestration, not shaping: fast
  - {{name: ext, role: ext}}
sweep: {{loads_mbit: [0, 4], settle_s: 0.5}}
model: mobilenet_v2
configurations:
  - {{name: ec, mode: EC, model: mobilenet_v2}}
  - {{name: broken, mode: SC, model: mobilenet_v2, split: features.6, weights: /nonexistent/w.pth}}
frames: {frames}
warmup: 1
"""


def _testbed(*args, **kw):
    return subprocess.run([sys.executable, "-m", "testbed", *args], capture_output=True, text=True,
                          timeout=600, **kw)


def _leftovers(run_dir: Path) -> list[str]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    run_id = manifest["run_id"]
    found = [f"namespace {n}" for n in owned_namespaces(run_id)]
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if run_id in cmd or str(run_dir) in cmd:
            found.append(f"process {pid}: {cmd[:100]}")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines() if f"tb{run_id}" in line]
    return found


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("orch")
    scenario = root / "s.yaml"
    scenario.write_text(SCENARIO.format(frames=3))
    proc = _testbed("run", str(scenario), "--results", str(root / "results"))
    runs = list((root / "results").iterdir())
    assert len(runs) == 1, proc.stderr
    return proc, runs[0]


def test_sweep_writes_a_complete_result_folder(sweep):
    proc, out = sweep
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete", proc.stderr[-3000:]
    assert set(manifest["steps"]) == {"L0-r0-ec", "L0-r0-broken", "L4-r0-ec", "L4-r0-broken"}
    assert manifest["scenario"]["name"] == "orch-test"
    assert manifest["lab"]["kind"] == "emulated" and manifest["lab"]["shaping"]
    assert manifest["versions"]["torch"].startswith("2.14.1")
    assert (out / "traffic" / "L4-r0-ec.json").exists()
    assert not (out / "private").exists(), "per-run keys must not outlive the lab"
    records = list(read_records(out / "frames.csv"))
    assert {r.step for r in records} == {"L0-r0-ec", "L4-r0-ec"}
    assert all(r.status == "ok" and abs(r.md_proc + r.comm + r.es_queue + r.es_proc - r.total) < 1e-3
               for r in records)
    assert len(records) == 2 * (3 + 1)
    assert _leftovers(out) == []


def test_a_failed_step_is_recorded_and_the_sweep_goes_on(sweep):
    proc, out = sweep
    manifest = json.loads((out / "manifest.json").read_text())
    broken = manifest["steps"]["L0-r0-broken"]
    assert broken["status"].startswith("failed") and "head could not run the step" in broken["status"]
    assert manifest["steps"]["L4-r0-ec"]["status"] == "ok"  # ran after the failure
    assert proc.returncode == 1 and "L0-r0-broken" in proc.stderr


def test_competing_load_is_measured_by_iperf3(sweep):
    _, out = sweep
    step = json.loads((out / "manifest.json").read_text())["steps"]["L4-r0-ec"]
    assert step["load_asked_mbit"] == 4.0
    assert abs(step["load_achieved_mbit"] - 4.0) <= 0.4, step
    report = json.loads((out / "traffic" / "L4-r0-ec.json").read_text())
    assert any("intervals" in r for r in report.values())
    records = [r for r in read_records(out / "frames.csv") if r.step == "L4-r0-ec"]
    assert all(r.load_mbit == 4.0 and r.load_achieved_mbit == step["load_achieved_mbit"]
               for r in records)


def test_head_and_tail_ran_inside_their_namespaces_over_ssh(sweep):
    _, out = sweep
    tail_log = (out / "logs").glob("es.tail.err")
    text = "".join(p.read_text() for p in tail_log)
    lab = json.loads((out / "manifest.json").read_text())["lab"]
    es_address = lab["hosts"]["es"]["address"]
    md_address = lab["hosts"]["md"]["address"]
    assert f"tail listening on {es_address}" in text
    assert f"{md_address}:" in text, "the tail must see the MD's lab address as its peer"
    assert any(p.name.startswith("md.") and "-agent-" in p.name for p in (out / "logs").iterdir())


def test_resume_runs_only_unfinished_steps(sweep, tmp_path):
    _, original = sweep
    out = tmp_path / "resumed"
    subprocess.run(["cp", "-r", str(original), str(out)], check=True)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["steps"]["L4-r0-ec"]["status"] = "interrupted"
    (out / "manifest.json").write_text(json.dumps(manifest))
    before = {k: v["started"] for k, v in manifest["steps"].items()}
    assert finished_steps(out) == {"L0-r0-ec"}
    _testbed("run", "--resume", str(out))
    after = json.loads((out / "manifest.json").read_text())["steps"]
    assert after["L0-r0-ec"]["started"] == before["L0-r0-ec"]  # kept, not rerun
    assert after["L4-r0-ec"]["status"] == "ok"
    records = list(read_records(out / "frames.csv"))
    assert sorted({r.step for r in records}) == ["L0-r0-ec", "L4-r0-ec"]
    assert len(records) == 8  # the rerun step's rows replaced, not duplicated
    assert _leftovers(out) == []


def test_ctrl_c_mid_step_tears_everything_down(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.format(frames=400))
    proc = subprocess.Popen([sys.executable, "-m", "testbed", "run", str(scenario), "--results",
                             str(tmp_path / "results")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=restore_sigint)
    try:
        deadline = time.monotonic() + 180
        out = None
        while time.monotonic() < deadline:  # wait until frames are flowing in the first step
            runs = list((tmp_path / "results").glob("*"))
            if runs and (runs[0] / "manifest.json").exists():
                out = runs[0]
                steps = json.loads((out / "manifest.json").read_text()).get("steps", {})
                if steps and list((out / "logs").glob("*")):
                    break
            time.sleep(0.5)
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "testbed run --resume" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert _leftovers(out) == []
