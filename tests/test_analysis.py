"""Analysis: loading result folders and Table 5 statistics, on stored result folders.

Fixtures in tests/fixtures/analysis/ come from real runs (see its README); the variants with
failed frames, a missed load, a newer schema or missing files are made here, in tmp_path.
No root, network or model needed.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis.load import LOOPBACK_LABEL, ResultFolderError, load_results, read_manifest
from analysis.tables import (P90_MIN_FRAMES, P99_MIN_FRAMES, POOLED, component_stats, detail_table,
                             table5, table5_caption, to_latex, to_markdown, write_tables)
from testbed.records import SCHEMA_VERSION

FIXTURES = Path(__file__).parent / "fixtures" / "analysis"
SWEEP = FIXTURES / "sweep"
LOOPBACK = FIXTURES / "loopback"
COMPONENTS = ("md_proc", "comm", "es_proc", "total")


def raw_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "frames.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rewrite_rows(folder: Path, change) -> None:
    rows = raw_rows(folder)
    fields = list(rows[0])
    for row in rows:
        change(row)
    with (folder / "frames.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def edit_manifest(folder: Path, change) -> None:
    path = folder / "manifest.json"
    m = json.loads(path.read_text())
    change(m)
    path.write_text(json.dumps(m))


# ---------------------------------------------------------------------- loading


def test_sweep_loads_with_steps_runs_and_exclusions():
    r = load_results(SWEEP)
    rows = raw_rows(SWEEP)
    measured = [x for x in rows if x["warmup"] == "False" and x["status"] == "ok"]
    assert len(r.frames) == len(measured) == 72
    assert int(r.excluded["warmup_excluded"].sum()) == sum(x["warmup"] == "True" for x in rows) == 12
    assert int(r.excluded["failed_excluded"].sum()) == 0
    assert not r.frames["warmup"].any() and r.frames["status"].eq("ok").all()
    assert len(r.steps) == 6
    assert set(r.steps["load"]) == {"0", "10"}
    assert r.steps.loc[r.steps["load_asked_mbit"] == 10, "load_achieved_mbit"].notna().all()
    assert list(r.runs["run"]) == ["sweep"] and r.runs["status"].iloc[0] == "complete"
    assert set(r.frames["load"]) == {"0", "10"}


def test_loopback_demo_is_one_step_without_load():
    r = load_results(LOOPBACK)
    assert set(r.frames["load"]) == {LOOPBACK_LABEL}
    assert r.frames["load_mbit"].isna().all()
    assert set(r.steps["step"]) == {f"loopback-{c}" for c in r.frames["config"].unique()}
    assert r.runs["kind"].iloc[0] == "loopback-demo"


def test_several_folders_get_distinct_labels(tmp_path):
    other = copy_folder(SWEEP, tmp_path / "x" / "sweep")
    r = load_results([SWEEP, other, LOOPBACK])
    assert r.labels == ["sweep", "sweep#2", "loopback"]
    assert set(r.frames["run"]) == set(r.labels)
    r = load_results([SWEEP, LOOPBACK], labels=["emulated", "demo"])
    assert r.labels == ["emulated", "demo"]


def test_frames_csv_from_before_load_achieved_column_still_loads(tmp_path):
    folder = copy_folder(LOOPBACK, tmp_path / "old")
    rows = raw_rows(folder)
    fields = [f for f in rows[0] if f != "load_achieved_mbit"]
    with (folder / "frames.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    assert len(load_results(folder).frames) == 25


# ---------------------------------------------------------------------- statistics


def direct(rows, config, load, comp):
    sel = [float(x[comp]) for x in rows
           if x["config"] == config and x["warmup"] == "False" and x["status"] == "ok"
           and x[comp] != "" and (load == POOLED or x["load_mbit"] == "" or float(x["load_mbit"]) == float(load))]
    return np.array(sel)


@pytest.mark.parametrize("folder", [SWEEP, LOOPBACK], ids=["sweep", "loopback"])
def test_means_and_percentiles_match_numpy(folder):
    rows = raw_rows(folder)
    stats = component_stats(load_results(folder))
    assert len(stats) > 0
    for s in stats.itertuples():
        a = direct(rows, s.config, s.load if s.load != LOOPBACK_LABEL else POOLED, s.component)
        assert s.n == a.size > 0
        assert s.mean == pytest.approx(a.mean(), rel=1e-12)
        assert s.std == pytest.approx(a.std(ddof=1), rel=1e-12)
        p50, p90, p99 = np.percentile(a, [50, 90, 99])
        assert (s.p50, s.p90, s.p99) == pytest.approx((p50, p90, p99), rel=1e-12)
        assert (s.min, s.max) == (a.min(), a.max())
    # every (config, load) of the sweep has its four components, LC only md_proc and total
    lc = stats[(stats["config"] == "md-only") & (stats["load"] != POOLED)]
    assert set(lc["component"]) == {"md_proc", "total"}


def test_components_add_up_to_total():
    f = load_results(SWEEP).frames
    split = f[f["mode"] != "LC"]
    assert np.allclose(split["md_proc"] + split["comm"] + split["es_proc"], split["total"], atol=2e-9)


def test_processing_is_pooled_over_loads():
    stats = component_stats(load_results(SWEEP))
    pooled = stats[(stats["load"] == POOLED)]
    assert set(pooled["component"]) == {"md_proc", "es_proc"}
    es = pooled[(pooled["config"] == "es-only") & (pooled["component"] == "es_proc")].iloc[0]
    assert es.n == 24
    t5 = table5(stats, "sweep")
    assert "pooled over all competing loads" in table5_caption(stats)
    assert list(t5.index) == ["md-only", "es-only", "mimic-bottleneck"]
    assert t5.loc["md-only", "ES processing [s]"] == "-"
    assert "±" in t5.loc["es-only", "Total @ 10 Mbit/s [s]"]


def make_failed_variant(tmp_path) -> Path:
    folder = copy_folder(SWEEP, tmp_path / "failed")
    state = {"n": 0}

    def change(row):
        if row["step"] == "L10-r0-es-only" and row["warmup"] == "False" and state["n"] < 3:
            state["n"] += 1  # what the head writes for a failed frame: md_proc only
            row.update(status="error: link: the tail closed the connection", md_proc="99.0",
                       es_proc="", comm="", total="", predicted="")
        if row["warmup"] == "True":  # warm-up frames must never count
            row["total"] = row["md_proc"] = "1000.0"

    rewrite_rows(folder, change)
    edit_manifest(folder, lambda m: m["steps"]["L10-r0-es-only"].update(
        failed_frames=3, status="ok (3 frames failed)"))
    return folder


def test_warmup_and_failed_frames_are_excluded_and_counted(tmp_path):
    r = load_results(make_failed_variant(tmp_path))
    ex = r.excluded.set_index(["config", "load"])
    assert ex.loc[("es-only", "10"), "failed_excluded"] == 3
    assert ex.loc[("es-only", "10"), "measured"] == 9
    assert int(r.excluded["warmup_excluded"].sum()) == 12
    stats = component_stats(r)
    cell = stats[(stats["config"] == "es-only") & (stats["load"] == "10")]
    assert set(cell["n"]) == {9}
    assert stats["max"].max() < 99.0  # neither the failed md_proc nor the warm-up values
    assert len(r.frames) == 72 - 3


# ---------------------------------------------------------------------- validity flags


def test_percentile_flags_trigger_on_few_frames():
    stats = component_stats(load_results([SWEEP, LOOPBACK]))
    sweep = stats[stats["run"] == "sweep"]
    assert (sweep["n"] < P99_MIN_FRAMES).all() and not sweep["p99_ok"].any()
    assert sweep["p90_ok"].all()  # 12 frames >= 10
    assert sweep["flags"].str.contains("p99<100").all()
    loop = stats[stats["run"] == "loopback"]
    assert (loop["n"] < P90_MIN_FRAMES).all()
    assert loop["flags"].str.contains("p90<10").all() and not loop["valid"].any()
    det = detail_table(stats, "loopback")
    assert det["p99"].str.endswith("†").all() and det["p90"].str.endswith("†").all()


def test_missed_load_and_saturated_cpu_are_flagged(tmp_path):
    folder = copy_folder(SWEEP, tmp_path / "missed")

    def change(m):
        for step in ("L10-r0-es-only", "L10-r0-mimic-bottleneck"):
            m["steps"][step].update(load_achieved_mbit=8.5, load_error_pct=-15.0)
        m["steps"]["L0-r0-md-only"]["loadavg"]["md"].update(load1=3.1, saturated=True)

    edit_manifest(folder, change)
    stats = component_stats(load_results(folder))
    missed = stats[stats["load_missed"]]
    assert set(zip(missed["config"], missed["load"])) >= {("es-only", "10"), ("mimic-bottleneck", "10")}
    assert not stats[(stats["load"] == "0")]["load_missed"].any()
    assert not stats[(stats["config"] == "md-only") & (stats["load"] == "10")]["load_missed"].any()
    assert stats[(stats["config"] == "md-only") & (stats["load"] == "0")]["cpu_saturated"].all()
    pooled = stats[(stats["config"] == "es-only") & (stats["load"] == POOLED)]
    assert pooled["load_missed"].all()  # a pooled cell inherits the flags of what it pools
    t5 = table5(stats, "missed")
    assert t5.loc["es-only", "Total @ 10 Mbit/s [s]"].endswith("*")
    assert not t5.loc["es-only", "Total @ 0 Mbit/s [s]"].endswith("*")
    assert t5.loc["md-only", "Total @ 0 Mbit/s [s]"].endswith("*")


def test_ten_percent_miss_is_tolerated(tmp_path):
    folder = copy_folder(SWEEP, tmp_path / "ok")
    edit_manifest(folder, lambda m: m["steps"]["L10-r0-es-only"].update(
        load_achieved_mbit=9.1, load_error_pct=-9.0))
    assert not component_stats(load_results(folder))["load_missed"].any()


# ---------------------------------------------------------------------- output formats


def test_tables_are_written_as_csv_markdown_and_booktabs(tmp_path):
    r = load_results([SWEEP, LOOPBACK])
    written = write_tables(r, tmp_path)
    for name in ("stats.csv", "table5-sweep.md", "table5-sweep.tex", "detail-loopback.md",
                 "detail-loopback.tex", "table5-loopback.csv"):
        assert written[name].stat().st_size > 100, name
    tex = written["table5-sweep.tex"].read_text()
    assert all(k in tex for k in (r"\toprule", r"\midrule", r"\bottomrule", r"$\pm$"))
    assert "mimic-bottleneck" in tex and "_" not in tex.replace(r"\_", "")
    md = written["table5-sweep.md"].read_text()
    assert md.startswith("| configuration |") and "pooled" in md
    detail = written["detail-sweep.md"].read_text()
    assert "p99<100" in detail and "†" in detail
    csv_rows = list(csv.DictReader(written["stats.csv"].open()))
    assert {"run", "config", "load", "component", "n", "mean", "std", "p50", "p90", "p99", "min",
            "max", "flags", "valid"} <= set(csv_rows[0])


def test_markdown_and_latex_escape():
    import pandas as pd

    df = pd.DataFrame({"a|b": ["x_y & 5%"]})
    assert "a\\|b" in to_markdown(df, index=False)
    tex = to_latex(df, index=False)
    assert r"x\_y \& 5\%" in tex


# ---------------------------------------------------------------------- broken folders


def test_missing_folder_manifest_or_frames_give_clear_errors(tmp_path):
    with pytest.raises(ResultFolderError, match="no such result folder"):
        load_results(tmp_path / "nope")
    folder = copy_folder(SWEEP, tmp_path / "no-manifest")
    (folder / "manifest.json").unlink()
    with pytest.raises(ResultFolderError, match="manifest.json is missing"):
        load_results(folder)
    folder = copy_folder(SWEEP, tmp_path / "no-frames")
    (folder / "frames.csv").unlink()
    with pytest.raises(ResultFolderError, match=r"frames.csv is missing.*--resume"):
        load_results(folder)


def test_incomplete_manifest_names_missing_keys(tmp_path):
    folder = copy_folder(SWEEP, tmp_path / "partial")
    edit_manifest(folder, lambda m: (m.pop("steps"), m.pop("scenario")))
    with pytest.raises(ResultFolderError, match="missing key.*scenario.*steps|missing key.*steps"):
        read_manifest(folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ResultFolderError, match="not valid JSON"):
        read_manifest(folder)


def test_newer_schema_says_to_update(tmp_path):
    folder = copy_folder(SWEEP, tmp_path / "future")
    edit_manifest(folder, lambda m: m.update(schema=SCHEMA_VERSION + 1))
    with pytest.raises(ResultFolderError, match=r"newer testbed.*Update the testbed"):
        load_results(folder)


def test_foreign_csv_is_rejected(tmp_path):
    folder = copy_folder(LOOPBACK, tmp_path / "foreign")
    (folder / "frames.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ResultFolderError, match="missing column"):
        load_results(folder)
    (folder / "frames.csv").write_text("")
    with pytest.raises(ResultFolderError, match="empty"):
        load_results(folder)
    header = (LOOPBACK / "frames.csv").read_text().splitlines()[0]
    (folder / "frames.csv").write_text(header + "\n")
    with pytest.raises(ResultFolderError, match="no frame recorded"):
        load_results(folder)
