"""The paper's Table 5 beside a run's, when the run replayed the paper's WiFi devices.

:func:`paper_table5` puts the paper's Table 5 (``analysis.paper``), the run's cells and their
ratio (this run's mean / the paper's) side by side; see ``analysis.compute`` for which compute
model frames used.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import paper
from analysis.tables import POOLED, to_markdown

PAPER_DEVICES = {"md": "profile:paper-wifi-md", "es": "profile:paper-wifi-es"}
PAPER_MODEL = "densenet201"
PAPER_TABLE5_CAPTION = (
    "The paper's Table 5 (DenseNet-201 over WiFi, mean ± std in seconds) beside this run's cells "
    "(warm-up and failed frames excluded; processing pooled over loads) and their ratio "
    "(this run's mean / the paper's). Processing replayed from the paper's devices should come out "
    "near 1; comm and total are this lab's network. Source: " + paper.TABLE5_SOURCE + ".")


def uses_paper_devices(frames: pd.DataFrame) -> bool:
    f = frames[frames["model"] == PAPER_MODEL]
    return bool(f["md_compute"].eq(PAPER_DEVICES["md"]).any()
                or f["es_compute"].eq(PAPER_DEVICES["es"]).any())


def _pm(pair) -> str:
    return "-" if pair is None else f"{pair[0]:.4g} ± {pair[1]:.2g}"


def paper_table5(stats: pd.DataFrame, frames: pd.DataFrame) -> pd.DataFrame | None:
    """Paper, this run and ratio per Table 5 cell, for one run's ``stats`` and ``frames``;
    ``None`` unless the run replayed the paper's devices."""
    if not uses_paper_devices(frames):
        return None
    s = stats[stats["config"].isin(paper.TABLE5)]
    configs = [c for c in dict.fromkeys(s["config"])]
    loads = [load for load in (5, 20) if (s["load"] == f"{load:g}").any()]
    table = pd.DataFrame(index=pd.Index(configs, name="configuration"))

    def ours(config, load, comp):
        hit = s[(s["config"] == config) & (s["load"] == load) & (s["component"] == comp)]
        return None if hit.empty else (float(hit.iloc[0]["mean"]), float(hit.iloc[0]["std"]))

    def columns(title, theirs, mine):
        table[f"{title}: paper"] = [_pm(t) for t in theirs]
        table[f"{title}: this run"] = [_pm(m) for m in mine]
        table[f"{title}: ratio"] = [
            "-" if t is None or m is None or not t[0] else f"{m[0] / t[0]:.2f}"
            for t, m in zip(theirs, mine)]

    for comp, title in (("md_proc", "MD processing"), ("es_proc", "ES processing")):
        columns(title, [paper.TABLE5[c][comp] for c in configs],
                [ours(c, POOLED, comp) for c in configs])
    for load in loads:
        for comp, title in (("comm", "Communication"), ("total", "Total")):
            columns(f"{title} @ {load} Mbit/s",
                    [paper.TABLE5[c]["loads"][load][comp] for c in configs],
                    [ours(c, f"{load:g}", comp) for c in configs])
    return table


def write_paper_table5(table: pd.DataFrame, out: Path, suffix: str = "") -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv, md = out / f"table5-vs-paper{suffix}.csv", out / f"table5-vs-paper{suffix}.md"
    table.to_csv(csv)
    md.write_text(to_markdown(table, PAPER_TABLE5_CAPTION, index=True))
    return {csv.name: csv, md.name: md}
