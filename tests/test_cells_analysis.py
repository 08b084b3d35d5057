"""Cell analysis: deadline misses, capacity and fairness from a real cell run
(tests/fixtures/cell_run: the two es-only steps at 5 Mbit/s, 1 and 2 MDs, of a run of
scenarios/cell-capacity.yaml, its manifest cut to those steps), checked against the frames
counted here from frames.csv."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pandas as pd

from analysis.cells import capacity_table, cell_frames, fairness_table, miss_table, write_cells
from analysis.load import COMPONENTS, load_results

RUN = Path(__file__).parent / "fixtures" / "cell_run"


def _rows():
    with (RUN / "frames.csv").open(newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["warmup"] == "False"]


def test_misses_count_every_measured_frame_of_every_md():
    miss = miss_table(cell_frames(RUN))
    counted = defaultdict(lambda: [0, 0, 0, set()])
    for r in _rows():
        c = counted[r["step"]]
        c[0] += 1
        c[1] += r["deadline_met"] == "True"
        c[2] += r["status"] == "dropped: md busy"
        c[3].add(r["md"])
    assert sorted(miss["mds"]) == [1, 2]
    for row in miss.itertuples():
        (step,) = [s for s, c in counted.items() if len(c[3]) == row.mds]
        frames, met, dropped, mds = counted[step]
        assert (row.frames, row.met, row.dropped) == (frames, met, dropped)
        assert row.frames == 60 * row.mds  # every MD's 60 measured frames
        assert abs(row.p_miss - (1 - met / frames)) < 1e-4


def test_capacity_is_the_largest_number_of_mds_within_the_target():
    miss = miss_table(cell_frames(RUN))
    cap = capacity_table(miss)
    (row,) = cap.itertuples()
    on_time = {r.mds: 1 - r.p_miss for r in miss.itertuples()}
    expected = 0
    for n in sorted(on_time):
        if on_time[n] < 0.99:
            break
        expected = n
    assert row.capacity_mds == expected
    # the rule itself, on numbers chosen to exercise it: a gap stops the count
    made = pd.DataFrame({"config": "c", "load_mbit": 5.0, "mds": [1, 2, 4, 8],
                         "p_miss": [0.0, 0.005, 0.2, 0.0], "p_miss_processed": [0, 0, 0, 0]})
    (r,) = capacity_table(made).itertuples()
    assert (r.capacity_mds, r.capacity_mds_processed) == (2, 8)


def test_fairness_spread_is_of_the_mds_mean_totals():
    fair = fairness_table(cell_frames(RUN))
    two = fair[fair["mds"] == 2].iloc[0]
    totals = defaultdict(list)
    for r in _rows():
        if r["status"] == "ok" and r["step"].startswith("L") and "-m2-" in r["step"]:
            totals[r["md"]].append(float(r["total"]) * 1e3)
    means = [sum(v) / len(v) for v in totals.values()]
    assert len(means) == 2
    assert abs(two["spread_ms"] - (max(means) - min(means))) < 0.11


def test_es_queue_is_a_component_and_the_parts_add_up():
    assert "es_queue" in COMPONENTS
    frames = load_results(RUN).frames
    assert frames["es_queue"].notna().all() and set(frames["md"]) == {"md1", "md2"}
    parts = frames["md_proc"] + frames["comm"] + frames["es_queue"] + frames["es_proc"]
    assert ((parts - frames["total"]).abs() < 1e-6).all()


def test_the_report_section_files(tmp_path):
    out = write_cells(RUN, tmp_path / "figures", tmp_path / "tables")
    assert out is not None and "Capacity" in out.html
    assert {p.name for p in out.figures["cell_miss_vs_load"]} == {"cell_miss_vs_load.png",
                                                                  "cell_miss_vs_load.pdf"}
    assert {"cell_capacity.csv", "cell_misses.csv", "cell_fairness.csv"} <= set(out.tables)


def test_a_run_without_deadlines_has_no_cell_section(tmp_path):
    fixture = Path(__file__).parent / "fixtures" / "analysis"
    folder = next(p for p in fixture.iterdir() if (p / "frames.csv").exists())
    assert write_cells(folder, tmp_path / "f", tmp_path / "t") is None


def test_a_run_whose_every_frame_was_dropped_still_gets_its_report(tmp_path):
    from analysis.report import write_report

    folder = tmp_path / "all-dropped"
    folder.mkdir()
    for name in ("manifest.json",):
        (folder / name).write_bytes((RUN / name).read_bytes())
    with (RUN / "frames.csv").open(newline="") as src, (folder / "frames.csv").open("w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames)
        writer.writeheader()
        for row in reader:
            if row["warmup"] == "False":
                row["status"] = "dropped: md busy"
            writer.writerow(row)
    files = write_report(folder, tmp_path / "report", analytic=False)
    assert files.html.exists()
    capacity = pd.read_csv(files.tables["cell_capacity.csv"])
    assert (capacity["capacity_mds"] == 0).all()
