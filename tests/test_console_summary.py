"""The console summary after a run: flagged cells marked, one closing line; bars only on a terminal.

Built on the stored sweep fixture (a real run; see tests/fixtures/analysis/README.md), changed
here in tmp_path: no root, network or model needed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from analysis.cellflags import flag_cells
from analysis.load import load_results
from testbed import cli
from tests.test_analysis import SWEEP, copy_folder, edit_manifest, rewrite_rows

FRAMES_PER_STEP = 12  # the fixture's scenario measured 12 frames per step


def flagged_variant(tmp_path):
    folder = copy_folder(SWEEP, tmp_path / "flagged")

    def change(m):
        m["steps"]["L0-r0-md-only"]["loadavg"]["md"].update(load1=3.1, saturated=True)
        m["steps"]["L10-r0-es-only"].update(load_achieved_mbit=6.0, load_error_pct=-40.0)

    edit_manifest(folder, change)

    def fail_two(row):  # two measured frames of mimic-bottleneck @ 10 failed
        if row["config"] == "mimic-bottleneck" and row["load_mbit"] == "10.0" and row["warmup"] == "False" \
                and row["frame_id"] in ("5", "6"):
            row["status"] = "error: timeout"

    rewrite_rows(folder, fail_two)
    return folder


def test_clean_fixture_has_no_flagged_cell():
    assert flag_cells(load_results(SWEEP), FRAMES_PER_STEP) == []


def test_each_flag_names_its_cell_and_evidence(tmp_path):
    flagged = {(f.config, f.load): f for f in flag_cells(load_results(flagged_variant(tmp_path)), FRAMES_PER_STEP)}
    assert set(flagged) == {("md-only", "0"), ("es-only", "10"), ("mimic-bottleneck", "10")}
    assert flagged[("md-only", "0")].detail == "cpu-saturated (md)"
    assert flagged[("es-only", "10")].detail == "load-missed (6 Mbit/s of 10)"
    assert flagged[("mimic-bottleneck", "10")].detail == "few-frames (10 of 12)"


def test_summary_marks_flagged_cells_and_ends_with_a_count(tmp_path, capsys):
    folder = flagged_variant(tmp_path)
    cli._print_summary(folder, FRAMES_PER_STEP)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "flags"
    row = next(line for line in lines if line.startswith("md-only") and line.split()[2] == "0")
    assert row.rstrip().endswith("cpu-saturated (md)")
    clean = next(line for line in lines if line.startswith("es-only") and line.split()[2] == "0")
    assert "cpu-saturated" not in clean and "load-missed" not in clean
    assert any(line.strip().startswith("load-missed:") for line in lines)  # each kind explained once
    assert lines[-1].startswith("3 of 6 cells flagged (cpu-saturated, few-frames, load-missed)")
    assert str(folder) in lines[-1]


def test_summary_without_flags_says_so(tmp_path, capsys):
    cli._print_summary(copy_folder(SWEEP, tmp_path / "clean"), FRAMES_PER_STEP)
    assert capsys.readouterr().out.splitlines()[-1] == "no cell flagged (6 cells)"


def test_demo_to_a_file_gets_plain_lines_not_bar_redraws(tmp_path):
    """Output to a file (not a terminal): no carriage-return redraws, one line per configuration."""
    log = tmp_path / "demo.log"
    with log.open("w") as fh:
        proc = subprocess.run(
            [sys.executable, "-m", "testbed", "demo", "--model", "mobilenet_v2", "--configs", "es-only",
             "--frames", "2", "--warmup", "1", "--results", str(tmp_path / "results")],
            stdout=fh, stderr=subprocess.STDOUT, timeout=300,
        )
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "\r" not in text
    assert "es-only: 1 warm-up + 2 frames" in text


def test_a_cell_counts_every_md_and_its_dropped_frames():
    """Frames a camera-paced MD dropped by its busy policy are accounted for; each MD asks for
    the scenario's frames (the fixture's steps ran 1 and 2 MDs at 60 frames each)."""
    results = load_results(Path(__file__).parent / "fixtures" / "cell_run")
    assert results.steps["dropped_frames"].sum() > 0
    assert not any("few-frames" in f.flags for f in flag_cells(results, 60))
    (short,) = [f for f in flag_cells(results, 61) if "few-frames" in f.flags]
    assert short.detail.endswith("few-frames (180 of 183)")
