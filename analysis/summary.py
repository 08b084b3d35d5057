"""Per-configuration delay statistics from frame records: n, mean, std, p50, p90, p99, min, max.

Pure functions: records in, rows out. Warm-up frames and failed frames are excluded (and
counted), as serious latency benchmarks (MLPerf LoadGen) report them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from analysis.stats import Stats
from testbed.records import FrameRecord

COMPONENTS = ("md_proc", "comm", "es_queue", "es_proc", "total")


@dataclass(frozen=True)
class ConfigSummary:
    config: str
    mode: str
    load_mbit: float | None
    frames: int
    warmup_excluded: int
    failed_excluded: int
    payload_bytes: float
    wire_bytes: float
    components: dict[str, Stats | None]


def summarize(records: Iterable[FrameRecord]) -> list[ConfigSummary]:
    """One summary per (configuration, load), in order of first appearance."""
    groups: dict[tuple[str, float | None], list[FrameRecord]] = {}
    for r in records:
        groups.setdefault((r.config, r.load_mbit), []).append(r)
    out = []
    for (config, load), rows in groups.items():
        measured = [r for r in rows if not r.warmup and r.status == "ok"]
        out.append(
            ConfigSummary(
                config=config,
                mode=rows[0].mode,
                load_mbit=load,
                frames=len(measured),
                warmup_excluded=sum(r.warmup for r in rows),
                failed_excluded=sum(not r.warmup and r.status != "ok" for r in rows),
                payload_bytes=float(np.mean([r.payload_bytes for r in measured])) if measured else 0.0,
                wire_bytes=float(np.mean([r.wire_bytes for r in measured])) if measured else 0.0,
                components={c: Stats.of(getattr(r, c) for r in measured) for c in COMPONENTS},
            )
        )
    return out


def format_summary_table(summaries: list[ConfigSummary], marks: dict[tuple[str, str], str] | None = None) -> str:
    """A plain-text table in milliseconds: mean ± std and p50/p99 of each component.

    ``marks``: a note per flagged cell, keyed by (configuration, load as shown: ``10``), put in
    a last ``flags`` column (the column appears only when ``marks`` is given).
    """
    header = ["config", "mode", "load", "n", "wire B"] + [
        f"{c} mean±std (p50/p99)" for c in COMPONENTS
    ] + (["flags"] if marks is not None else [])
    lines = []
    for s in summaries:
        load = "-" if s.load_mbit is None else f"{s.load_mbit:g}"
        cells = [s.config, s.mode, load, str(s.frames), f"{s.wire_bytes:.0f}"]
        for c in COMPONENTS:
            st = s.components[c]
            cells.append(
                "-" if st is None
                else f"{st.mean * 1e3:.1f}±{st.std * 1e3:.1f} ({st.p50 * 1e3:.1f}/{st.p99 * 1e3:.1f})"
            )
        if marks is not None:
            cells.append(marks.get((s.config, load), ""))
        lines.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    fmt = lambda row: "  ".join(str(x).ljust(w) for x, w in zip(row, widths))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in lines]) + (
        "\n(all times in ms; warm-up and failed frames excluded)"
    )
