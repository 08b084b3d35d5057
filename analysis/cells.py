"""Cells: deadline misses, capacity and fairness of several MDs sharing one medium and one ES.

Read from a result folder whose frames carry ``deadline_met`` (a scenario with
``cell.deadline_ms``). Every measured (non-warm-up) frame counts: one that met its deadline, one
that missed it, one its MD dropped because it was busy (``dropped: md busy``) and one that failed
all count in the denominator; only met frames in the numerator. So the miss probability is what
a camera application sees.

- ``miss_table``: per configuration, load and number of MDs: frames, met, dropped, failed,
  P(miss), mean total of the frames that got a result.
- ``capacity_table``: per configuration and load, the largest number of MDs at which at least
  ``TARGET`` (99%) of frames met the deadline, this and every smaller tested number also
  meeting it (0: not even one MD); and the same counting only the frames the MDs processed
  (``capacity_mds_processed``: drops left out, so what the medium and the ES sustain).
- ``fairness_table``: per configuration, load and number of MDs: each MD's mean total, their
  spread (max - min) and the lowest MD's share of frames that met the deadline.

Pure functions of the folder: no network, no root, no model.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.figures import save  # noqa: E402
from analysis.load import read_frames  # noqa: E402
from analysis.htmltable import html_table  # noqa: E402
from analysis.tables import write_csv_md  # noqa: E402
from testbed.records import DROPPED_BUSY  # noqa: E402

TARGET = 0.99
"""Share of frames that must meet the deadline for a number of MDs to be within capacity."""


def cell_frames(folder: Path | str) -> pd.DataFrame | None:
    """The measured frames of a run with deadlines: config, load (asked, Mbit/s), mds (MDs in
    the step), md, status, met, total (s). ``None`` when the run set no deadline."""
    raw = read_frames(folder)
    if "deadline_met" not in raw.columns:
        return None
    met = raw["deadline_met"].astype(str).str.strip()
    raw = raw[~raw["warmup"] & met.isin(["True", "False"])].copy()
    if raw.empty:
        return None
    raw["met"] = met[raw.index].eq("True")
    if "md" not in raw.columns:
        raw["md"] = ""
    raw["md"] = raw["md"].fillna("").astype(str)
    raw["mds"] = raw.groupby("step")["md"].transform("nunique").clip(lower=1).astype(int)
    raw["load"] = raw["load_mbit"].fillna(0.0)
    return raw[["config", "load", "mds", "md", "step", "status", "met", "total"]].reset_index(
        drop=True)


def miss_table(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (config, load, mds), g in df.groupby(["config", "load", "mds"], sort=True):
        n = len(g)
        ok = g[g["status"] == "ok"]
        rows.append({
            "config": config, "load_mbit": load, "mds": mds, "frames": n,
            "met": int(g["met"].sum()), "dropped": int((g["status"] == DROPPED_BUSY).sum()),
            "failed": int((~g["status"].isin(["ok", DROPPED_BUSY])).sum()),
            "p_miss": round(1 - g["met"].mean(), 4),
            "p_miss_processed": round(1 - g.loc[g["status"] != DROPPED_BUSY, "met"].mean(), 4)
            if (g["status"] != DROPPED_BUSY).any() else np.nan,
            "mean_total_ms": round(ok["total"].mean() * 1e3, 1) if len(ok) else np.nan,
        })
    return pd.DataFrame(rows)


def _capacity(mds: pd.Series, p_miss: pd.Series, target: float) -> int:
    """The largest tested number of MDs whose frames, and every smaller number's, met the
    deadline at least ``target`` of the time; 0 if the smallest did not."""
    capacity = 0
    for n, p in sorted(zip(mds, p_miss)):
        if not 1 - p >= target:  # NaN (nothing processed) is a miss too
            break
        capacity = int(n)
    return capacity


def capacity_table(miss: pd.DataFrame, target: float = TARGET) -> pd.DataFrame:
    rows = []
    for (config, load), g in miss.groupby(["config", "load_mbit"], sort=True):
        rows.append({"config": config, "load_mbit": load,
                     "capacity_mds": _capacity(g["mds"], g["p_miss"], target),
                     "capacity_mds_processed": _capacity(g["mds"], g["p_miss_processed"], target),
                     "tested_mds": " ".join(str(int(m)) for m in sorted(g["mds"])),
                     "p_miss_by_mds": " ".join(f"{p:.3f}" for _, p in
                                               sorted(zip(g["mds"], g["p_miss"])))})
    return pd.DataFrame(rows)


def fairness_table(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (config, load, mds), g in df.groupby(["config", "load", "mds"], sort=True):
        ok = g[g["status"] == "ok"]
        means = ok.groupby("md")["total"].mean() * 1e3
        met = g.groupby("md")["met"].mean()
        rows.append({
            "config": config, "load_mbit": load, "mds": mds,
            "md_mean_total_ms_min": round(means.min(), 1) if len(means) else np.nan,
            "md_mean_total_ms_max": round(means.max(), 1) if len(means) else np.nan,
            "spread_ms": round(means.max() - means.min(), 1) if len(means) else np.nan,
            "lowest_md_met_share": round(met.min(), 3),
        })
    return pd.DataFrame(rows)


def fig_miss_vs_load(miss: pd.DataFrame):
    configs = sorted(miss["config"].unique())
    fig, axes = plt.subplots(1, len(configs), figsize=(4.2 * len(configs), 3.4), squeeze=False,
                             sharey=True)
    for ax, config in zip(axes[0], configs):
        sub = miss[miss["config"] == config]
        for mds, g in sub.groupby("mds"):
            g = g.sort_values("load_mbit")
            ax.plot(g["load_mbit"], g["p_miss"], marker="o", label=f"{mds} MD" + "s" * (mds > 1))
        ax.axhline(1 - TARGET, color="grey", lw=0.8, ls="--")
        ax.set_title(config)
        ax.set_xlabel("competing load (Mbit/s)")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("P(deadline missed)")
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class CellsOutput:
    html: str
    figures: dict[str, list[Path]]
    tables: dict[str, Path]
    capacity: pd.DataFrame


CAPTIONS = {
    "cell_misses": "Deadline misses per configuration, competing load and number of MDs "
                   "(measured frames; dropped and failed frames count as misses).",
    "cell_capacity": f"Capacity: the largest number of MDs at which {TARGET:.0%} of frames met "
                     "the deadline (every smaller tested number too); _processed: of the frames "
                     "the MDs did not drop.",
    "cell_fairness": "Per-MD fairness: spread of the MDs' mean totals (frames with a result) and "
                     "the lowest MD's share of frames that met the deadline.",
}


def write_cells(folder: Path | str, fig_dir: Path, tab_dir: Path,
                label: str = "") -> CellsOutput | None:
    """Tables, the miss figure and an HTML section for one run; ``None`` without deadlines."""
    df = cell_frames(folder)
    if df is None:
        return None
    suffix = f"-{label}" if label else ""
    miss = miss_table(df)
    built = {"cell_misses": miss, "cell_capacity": capacity_table(miss),
             "cell_fairness": fairness_table(df)}
    tables: dict[str, Path] = {}
    for name, table in built.items():
        for path in write_csv_md(table, tab_dir, name + suffix, CAPTIONS[name]):
            tables[path.name] = path
    figures = {"cell_miss_vs_load": save(fig_miss_vs_load(miss), fig_dir,
                                         "cell_miss_vs_load" + suffix)}
    body = []
    for name, title in (("cell_capacity", "Capacity"), ("cell_misses", "Deadline misses"),
                        ("cell_fairness", "Fairness across MDs")):
        body += [f"<h3>{title}</h3>", f"<p class='note'>{html.escape(CAPTIONS[name])}</p>",
                 html_table(built[name])]
    return CellsOutput("\n".join(body), figures, tables, built["cell_capacity"])
