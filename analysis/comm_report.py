"""Figures, tables and the report section of the comm breakdown (runs with packet captures).

- ``comm_parts_vs_load``: the mean of each part of comm, stacked, against the competing load, one
  panel per configuration;
- ``comm_variance_share``: the share of comm's variance each part explains
  (cov(part, comm) / var(comm): the shares add up to 1 because the parts add up to comm);
- ``comm_timeline``: one frame's uplink segments entering and leaving the bottleneck, and its
  reply (the frame with the largest comm unless another is asked for);
- tables ``comm_parts`` (means per configuration and load, flagged frames), ``comm_variance``,
  ``tcp_events`` (retransmissions and stalls) and ``comm_frames`` (every frame's parts).

A part that does not apply to a run is left out of its tables and figures: ``medium`` where the
bottleneck's time is split into ``queue`` and ``serialization``, those two where it is not (the
ns3 backend: the section says why). The timeline drawn (``comm_parts.read_timeline``) is kept
in the step's breakdown cache.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import comm_cache, comm_parts  # noqa: E402
from analysis.comm_parts import PARTS, TOLERANCE_S, FrameParts  # noqa: E402
from analysis.figures import save  # noqa: E402
from analysis.htmltable import html_table  # noqa: E402
from analysis.load import read_frames, read_manifest  # noqa: E402
from analysis.tables import write_csv_md  # noqa: E402
from testbed.capture_settings import ALTERNATE_SKIP  # noqa: E402

log = logging.getLogger(__name__)

PART_COLORS = {"queue": "#d62728", "serialization": "#1f77b4", "medium": "#8c564b",
               "fixed": "#7f7f7f", "stall": "#ff7f0e", "retransmission": "#9467bd",
               "reply": "#2ca02c"}
SPLIT_ONLY, UNSPLIT_ONLY = ("queue", "serialization"), ("medium",)
LEGEND_IN = 1.3
"""Inches beside the parts-vs-load panels for their legend (it covered a lone panel's bars)."""


def frames_table(parts: Sequence[FrameParts]) -> pd.DataFrame:
    """One row per measured frame (warm-up left out), times in ms; parts that do not apply to
    a frame (``SPLIT_ONLY`` where its bottleneck is unsplit, else ``UNSPLIT_ONLY``) are NaN."""
    df = pd.DataFrame([p.to_dict() for p in parts if not p.warmup])
    if df.empty:
        return df
    for col in (*PARTS, "comm", "residual", "reply_md_wait"):
        df[col] = df[col] * 1e3
    unsplit = df["unsplit"] != ""
    df.loc[unsplit, list(SPLIT_ONLY)] = float("nan")
    df.loc[~unsplit, list(UNSPLIT_ONLY)] = float("nan")
    df["load"] = df["load_mbit"].map(lambda v: f"{v:g}")
    return df


def applicable(df: pd.DataFrame) -> list[str]:
    """The parts that apply to at least one frame of ``frames_table``'s ``df``."""
    return [p for p in PARTS if df[p].notna().any()]


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["flag"] == ""]


def parts_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean of each part per configuration and load (unflagged frames), and the flagged share."""
    rows = []
    for (config, load), g in df.groupby(["config", "load_mbit"], sort=True):
        ok = _ok(g)
        row = {"config": config, "load_mbit": load, "frames": len(g), "flagged": int(len(g) - len(ok)),
               "comm_ms": round(ok["comm"].mean(), 2) if len(ok) else float("nan")}
        for p in applicable(df):
            row[f"{p}_ms"] = round(ok[p].mean(), 2) if len(ok) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def variance_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: the share of comm's variance (over every load) each part explains."""
    rows = []
    for config, g in _ok(df).groupby("config", sort=True):
        var = g["comm"].var()
        row = {"config": config, "frames": len(g), "comm_std_ms": round(g["comm"].std(), 2)}
        for p in applicable(df):
            row[p] = round(g[p].cov(g["comm"]) / var, 3) if var and len(g) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def tcp_events_table(df: pd.DataFrame) -> pd.DataFrame:
    """Retransmissions and stalls per configuration and load (every measured frame)."""
    rows = []
    for (config, load), g in df.groupby(["config", "load_mbit"], sort=True):
        rows.append({
            "config": config, "load_mbit": load, "frames": len(g),
            "retransmitted_segments": int(g["retransmissions"].sum()),
            "frames_with_retransmission": int((g["retransmissions"] > 0).sum()),
            "lost_in_bottleneck": int(g["lost_in_bottleneck"].sum()),
            "retransmission_ms_mean": round(g["retransmission"].mean(), 2),
            "frames_with_stall": int((g["stall"] > 0.05).sum()),
            "stall_ms_mean": round(g["stall"].mean(), 2),
            "stall_ms_max": round(g["stall"].max(), 2),
        })
    return pd.DataFrame(rows)


def capture_effect_table(folder: Path) -> pd.DataFrame:
    """Comm of the steps captured beside the steps a run left uncaptured on purpose
    (``packet_capture.alternate``), per configuration and load: frames, mean comm (ms) each way
    and their ratio. Empty when the run did not alternate."""
    steps = read_manifest(folder).get("steps", {})
    captured = {k for k, v in steps.items() if v.get("captures")}
    left = {k for k, v in steps.items() if v.get("captures_skipped") == ALTERNATE_SKIP}
    if not captured or not left:
        return pd.DataFrame()
    frames = read_frames(folder)
    frames = frames[~frames["warmup"] & frames["status"].eq("ok") & frames["comm"].notna()]
    frames = frames.assign(captured=frames["step"].isin(captured),
                           comm_ms=frames["comm"] * 1e3)
    frames = frames[frames["step"].isin(captured | left)]
    rows = []
    for (config, load), g in frames.groupby(["config", "load_mbit"], sort=True):
        on, off = g[g["captured"]]["comm_ms"], g[~g["captured"]]["comm_ms"]
        if on.empty or off.empty:
            continue
        rows.append({"config": config, "load_mbit": load, "frames_on": len(on),
                     "frames_off": len(off), "comm_on_ms": round(on.mean(), 3),
                     "comm_off_ms": round(off.mean(), 3),
                     "on_over_off": round(on.mean() / off.mean(), 3)})
    return pd.DataFrame(rows)


def fig_parts_vs_load(df: pd.DataFrame):
    configs = sorted(df["config"].unique())
    width = 3.4 * len(configs) + LEGEND_IN
    fig, axes = plt.subplots(1, len(configs), figsize=(width, 3.0), squeeze=False,
                             sharey=True)
    table = parts_table(df)
    for ax, config in zip(axes[0], configs):
        t = table[table["config"] == config].sort_values("load_mbit")
        x = range(len(t))
        bottom = [0.0] * len(t)
        for p in applicable(df):
            vals = list(t[f"{p}_ms"].fillna(0))
            ax.bar(x, vals, bottom=bottom, color=PART_COLORS[p], label=p, width=0.7)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xticks(list(x), [f"{v:g}" for v in t["load_mbit"]])
        ax.set_title(config, fontsize=9)
        ax.set_xlabel("competing load (Mbit/s)")
    axes[0][0].set_ylabel("mean comm (ms)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles[::-1], labels[::-1], loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1 - LEGEND_IN / width, 1))
    return fig


def fig_variance_share(df: pd.DataFrame):
    table = variance_table(df)
    parts = applicable(df)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(table) + 2), 3.0))
    width = 0.8 / len(parts)
    for i, p in enumerate(parts):
        ax.bar([k + i * width for k in range(len(table))], table[p], width, label=p,
               color=PART_COLORS[p])
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(table))], table["config"])
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel("share of var(comm)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def frame_timeline(folder: Path, parts: FrameParts, port: int = 5500) -> comm_parts.Timeline:
    """The packets of one frame on the two sides of the bottleneck, relative to its send start:
    from the step's breakdown cache, else read from its captures (and cached)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    record = manifest["steps"][parts.step]
    inputs = comm_parts.step_inputs(folder, parts.step, record, comm_parts.bottleneck_of(manifest),
                                    port)
    cached = comm_cache.read(folder, parts.step, inputs)
    key = str(parts.frame_id)
    if cached is not None and key in cached.get("timelines", {}):
        try:
            return comm_cache.load_dataclass(comm_parts.Timeline, cached["timelines"][key],
                                             f"timelines[{key}]")
        except comm_cache.CacheError as exc:
            log.warning("breakdown cache of step %s is corrupt (%s): recomputed", parts.step, exc)
    timeline = comm_parts.read_timeline(folder, parts.step, parts.frame_id, record, port)
    if cached is not None:
        cached.pop("inputs")
        cached.setdefault("timelines", {})[key] = asdict(timeline)
        comm_cache.write(folder, parts.step, inputs, cached)
    return timeline


def fig_timeline(t: comm_parts.Timeline):
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    if t.up_in:
        ax.scatter(*zip(*t.up_in), s=8, marker="|", color="#1f77b4", label="into the bottleneck")
    if t.up_out:
        ax.scatter(*zip(*t.up_out), s=8, marker="_", color="#d62728", label="out of the bottleneck")
    top = max([kb for _, kb in t.up_in] + [0])
    for x in t.reply_es:
        ax.axvline(x, color="#2ca02c", lw=0.8, ls="--")
    for x in t.reply_md:
        ax.axvline(x, color="#2ca02c", lw=0.8)
    ax.axvline(t.reply_ms, color="black", lw=0.8)
    ax.text(t.reply_ms, top, " reply read", fontsize=7, va="top")
    ax.set_xlabel(f"time since the frame's send start (ms; reply times less es_queue + "
                  f"es_proc, {t.es_ms:.1f} ms)")
    ax.set_ylabel("frame byte offset (KB)")
    ax.set_title(f"{t.step}, frame {t.frame_id} (reply: dashed at the ES, solid at the MD)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


@dataclass
class BreakdownOutput:
    html: str
    figures: dict[str, list[Path]]
    tables: dict[str, Path]


CAPTION = (f"Parts of comm from the packet captures (ms, unflagged measured frames). A frame is "
           f"flagged when its parts miss comm by more than {TOLERANCE_S * 1e3:g} ms or a stack "
           "part is negative; see docs/comm-breakdown.md.")


EFFECT_CAPTION = ("Comm (ms, measured ok frames) of the captured steps (even repetitions) and of "
                  "the steps the run left uncaptured (odd repetitions, packet_capture.alternate) "
                  "in the same lab start: the captures' own effect.")


def write_breakdown(folder: Path | str, fig_dir: Path, tab_dir: Path, label: str = "",
                    frame: tuple[str, int] | None = None) -> BreakdownOutput | None:
    """Figures, tables and an HTML section for one run; ``None`` when it has no captures."""
    folder = Path(folder)
    if not comm_parts.has_captures(folder):
        return None
    parts = comm_parts.run_parts(folder)
    df = frames_table(parts)
    suffix = f"-{label}" if label else ""
    if df.empty:
        return BreakdownOutput("<p class='note'>The run has captures but no frame could be split "
                               "(see the log).</p>", {}, {})
    tables: dict[str, Path] = {}
    effect = capture_effect_table(folder)
    for name, table, caption in (
            *((("capture_effect", effect, EFFECT_CAPTION),) if not effect.empty else ()),
            ("comm_parts", parts_table(df), CAPTION),
            ("comm_variance", variance_table(df), "Share of var(comm) per part (cov/var)."),
            ("tcp_events", tcp_events_table(df), "Retransmissions and stalls per frame."),
            ("comm_frames", df.drop(columns=["load", "unsplit", *(
                p for p in PARTS if p not in applicable(df))]),
             "Every measured frame's parts (ms).")):
        for path in write_csv_md(table, tab_dir, name + suffix, caption):
            tables[path.name] = path
    figures = {
        "comm_parts_vs_load": save(fig_parts_vs_load(df), fig_dir, "comm_parts_vs_load" + suffix),
        "comm_variance_share": save(fig_variance_share(df), fig_dir,
                                    "comm_variance_share" + suffix),
    }
    pick = ([p for p in parts if (p.step, p.frame_id) == frame] if frame else
            sorted((p for p in parts if not p.warmup and not p.flag), key=lambda p: -p.comm)[:1])
    if pick:
        figures["comm_timeline"] = save(fig_timeline(frame_timeline(folder, pick[0])), fig_dir,
                                        "comm_timeline" + suffix)
    flagged = int((df["flag"] != "").sum())
    body = [f"<p class='note'>{html.escape(CAPTION)} Flagged: {flagged} of {len(df)} frames.</p>",
            *(f"<p class='warn'>Not split: {html.escape(why)}.</p>"
              for why in sorted(set(df["unsplit"]) - {""})),
            "<h3>Mean parts per configuration and load</h3>", html_table(parts_table(df)),
            "<h3>Share of comm's variance explained by each part</h3>",
            html_table(variance_table(df)),
            "<h3>Retransmissions and stalls</h3>", html_table(tcp_events_table(df)),
            *((f"<h3>Comm with and without captures</h3><p class='note'>"
               f"{html.escape(EFFECT_CAPTION)}</p>", html_table(effect)) if not effect.empty
              else ())]
    return BreakdownOutput("\n".join(body), figures, tables)
