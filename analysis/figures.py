"""Figures of measured runs (matplotlib, Agg): the paper's Figures 14-19 from result folders.

- :func:`fig_components` — delay components vs competing load, stacked, one panel per
  configuration (Figures 16 and 19);
- :func:`fig_mean_std` — mean and standard deviation of the total delay vs load (Figure 17);
- :func:`fig_percentiles` — p50/p90/p99 of the total delay vs load (not in the paper);
- :func:`fig_timeseries` — total delay of every measured frame, for chosen loads (Figure 18);
- :func:`fig_cdf` — empirical CDFs of the total delay, for chosen loads;
- :func:`fig_processing` — MD vs ES processing delay per configuration (Figures 14 and 15);
- :func:`fig_compare` — mean total vs load of several runs side by side.

Each returns a ``Figure``; :func:`save` writes it as PNG and PDF, :func:`write_figures` writes all
of them for every run of a :class:`~analysis.load.Results`. Pure functions of data frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.compute import compute_label  # noqa: E402
from analysis.load import Results, file_label, load_label  # noqa: E402
from analysis.stats import stat_row  # noqa: E402
from analysis.tables import P90_MIN_FRAMES, P99_MIN_FRAMES, load_order  # noqa: E402

COMPONENT_STYLE = {  # stacked from the bottom in this order
    "md_proc": ("MD processing", "#4C72B0"),
    "comm": ("Communication", "#DD8452"),
    "es_queue": ("ES queueing", "#CCB974"),  # runs before tails reported it: not drawn
    "es_proc": ("ES processing", "#55A868"),
}
CONFIG_COLORS = {
    "md-only": "#4C72B0", "es-only": "#DD8452", "org-split2": "#8172B3",
    "mimic-split2": "#937860", "mimic-bottleneck": "#C44E52",
}
_EXTRA_COLORS = ["#64B5CD", "#DA8BC3", "#8C8C8C", "#CCB974", "#55A868"]
FORMATS = ("png", "pdf")

plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9,
                     "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8})


def config_color(config: str, i: int = 0) -> str:
    return CONFIG_COLORS.get(config, _EXTRA_COLORS[i % len(_EXTRA_COLORS)])


def config_label(config: str, mode: str | None = None) -> str:
    return f"{config} ({mode})" if mode else config


def time_unit(max_seconds: float) -> tuple[float, str]:
    """Scale and unit for an axis: milliseconds below 2 s, seconds above."""
    return (1.0, "s") if np.isfinite(max_seconds) and max_seconds >= 2.0 else (1e3, "ms")


def load_axis_label(loads: Sequence[str]) -> str:
    if all(x == "loopback" for x in loads):
        return "Link (loopback demo: no competing load)"
    return "Competing UDP load asked [Mbit/s]"


def _configs(frames: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(frames["config"], frames["mode"])))


def _grid(n: int, max_cols: int = 3, panel=(3.2, 2.6), sharey=False) -> tuple[Figure, np.ndarray]:
    cols = min(n, max_cols)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows + 0.6),
                             squeeze=False, sharey=sharey, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def _use_log(values) -> bool:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return v.size > 1 and v.max() / v.min() > 30


def plain_log(ax) -> None:
    """Log axes labelled 0.1, 1, 10 (not 10^-1...), with 2 and 5 labelled over short ranges."""
    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() != "log":
            continue
        axis.set_major_formatter(plain)
        if np.log10(hi / lo) < 1.5:
            axis.set_minor_formatter(ticker.FuncFormatter(
                lambda v, _: f"{v:g}" if round(v / 10 ** np.floor(np.log10(v))) in (2, 5) else ""))
        else:
            axis.set_minor_formatter(ticker.NullFormatter())


def save(fig: Figure, out: Path | str, name: str, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``fig`` as ``out/name.png`` (150 dpi) and ``.pdf``; close it; return the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in formats:
        path = out / f"{name}.{ext}"
        fig.savefig(path, dpi=150 if ext == "png" else None)
        paths.append(path)
    plt.close(fig)
    return paths


# ---------------------------------------------------------------------- measured figures


def fig_components(frames: pd.DataFrame, sharey: bool = True) -> Figure:
    """Mean MD processing, communication and ES processing stacked per load; error bar: std of
    the total. One panel per configuration, on a shared delay axis unless ``sharey=False``."""
    configs = _configs(frames)
    loads = load_order(frames["load"])
    scale, unit = time_unit(frames.groupby(["config", "load"])["total"].mean().max())
    fig, axes = _grid(len(configs), sharey=sharey)
    for ax, (config, mode) in zip(axes.flat, configs):
        sub = frames[frames["config"] == config]
        x = np.arange(len(loads))
        bottom = np.zeros(len(loads))
        for comp, (label, color) in COMPONENT_STYLE.items():
            if frames[comp].isna().all():
                continue
            means = np.array([np.nan_to_num(sub.loc[sub["load"] == ld, comp].mean()) for ld in loads]) * scale
            ax.bar(x, means, 0.6, bottom=bottom, color=color, label=label)
            bottom += means
        std = np.array([sub.loc[sub["load"] == ld, "total"].std(ddof=1) for ld in loads]) * scale
        ax.errorbar(x, bottom, yerr=np.nan_to_num(std), fmt="none", ecolor="black", capsize=3,
                    elinewidth=0.8, label="± std of total")
        ax.set_xticks(x, loads)
        ax.set_title(config_label(config, mode))
        if ax in axes[:, 0] or not sharey:
            ax.set_ylabel(f"Delay [{unit}]")
    for ax in axes.flat[: len(configs)]:
        ax.set_ylim(bottom=0)
    fig.supxlabel(load_axis_label(loads), fontsize=9)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    _legend(fig, handles, labels)
    return fig


def fig_mean_std(frames: pd.DataFrame) -> Figure:
    """Figure 17: mean (with ± std error bars) and standard deviation of the total delay vs load,
    grouped bars per configuration."""
    configs = _configs(frames)
    loads = load_order(frames["load"])
    g = frames.groupby(["config", "load"])["total"]
    means, stds = g.mean(), g.std(ddof=1)
    scale, unit = time_unit((means + stds.fillna(0)).max())
    fig, (ax_m, ax_s) = plt.subplots(1, 2, figsize=(8.0, 3.2), layout="constrained")
    width = 0.8 / len(configs)
    x = np.arange(len(loads))
    for i, (config, mode) in enumerate(configs):
        m = np.array([means.get((config, ld), np.nan) for ld in loads]) * scale
        s = np.array([stds.get((config, ld), np.nan) for ld in loads]) * scale
        pos = x - 0.4 + width * (i + 0.5)
        err = np.nan_to_num(s)
        ax_m.bar(pos, m, width, color=config_color(config, i), label=config_label(config, mode),
                 yerr=[np.minimum(err, 0.95 * np.nan_to_num(m)), err], capsize=2,
                 error_kw={"elinewidth": 0.8})
        ax_s.bar(pos, s, width, color=config_color(config, i))
    for ax, what in ((ax_m, "Mean total delay"), (ax_s, "Std of total delay")):
        ax.set_xticks(x, loads)
        ax.set_xlabel(load_axis_label(loads))
        ax.set_ylabel(f"{what} [{unit}]")
        if _use_log(means.values if ax is ax_m else stds.values):
            ax.set_yscale("log")
            plain_log(ax)
        else:
            ax.set_ylim(bottom=0)
    ax_m.set_title("Mean ± std")
    ax_s.set_title("Standard deviation")
    _legend(fig, *_all_handles([ax_m]))
    return fig


def fig_percentiles(frames: pd.DataFrame) -> Figure:
    """p50, p90, p99 (and mean) of the total delay vs load, one panel per configuration.
    Hollow markers: a percentile from fewer frames than it needs (p90: 10, p99: 100)."""
    configs = _configs(frames)
    loads = load_order(frames["load"])
    scale, unit = time_unit(frames["total"].max())
    fig, axes = _grid(len(configs))
    styles = {"p50": ("o", "-"), "p90": ("s", "--"), "p99": ("^", ":")}
    needs = {"p50": 1, "p90": P90_MIN_FRAMES, "p99": P99_MIN_FRAMES}
    for ax, (config, mode) in zip(axes.flat, configs):
        sub = frames[frames["config"] == config]
        stats = [stat_row(sub.loc[sub["load"] == ld, "total"]) for ld in loads]
        x = np.arange(len(loads))
        for key, (marker, ls) in styles.items():
            y = np.array([s[key] for s in stats]) * scale
            ok = np.array([s["n"] >= needs[key] for s in stats])
            ax.plot(x, y, ls, color="black", lw=1, label=key)
            ax.plot(x[ok], y[ok], marker, color="black", ms=5, ls="none")
            ax.plot(x[~ok], y[~ok], marker, mfc="white", mec="black", ms=5, ls="none")
        ax.plot(x, np.array([s["mean"] for s in stats]) * scale, "-", color="tab:red", lw=1, alpha=0.7,
                label="mean")
        ax.set_xticks(x, loads)
        ax.set_title(config_label(config, mode))
        ax.set_ylabel(f"Total delay [{unit}]")
    fig.supxlabel(load_axis_label(loads), fontsize=9)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    _legend(fig, handles, labels, title="hollow markers: percentile from fewer frames than it "
            f"needs (p90 < {P90_MIN_FRAMES}, p99 < {P99_MIN_FRAMES} frames)")
    return fig


def _ordered(sub: pd.DataFrame) -> pd.DataFrame:
    key = "capture_ns" if sub["capture_ns"].fillna(0).gt(0).all() else "frame_id"
    return sub.sort_values(["repetition", key])


def fig_timeseries(frames: pd.DataFrame, loads: Sequence[str] | None = None) -> Figure:
    """Figure 18: total delay of each measured frame in capture order, one panel per load."""
    loads = list(loads) if loads else load_order(frames["load"])
    configs = _configs(frames)
    scale, unit = time_unit(frames["total"].max())
    log = _use_log(frames["total"])
    fig, axes = plt.subplots(len(loads), 1, figsize=(7.0, 1.9 * len(loads) + 0.7), squeeze=False,
                             sharex=True, layout="constrained")
    for ax, ld in zip(axes[:, 0], loads):
        for i, (config, mode) in enumerate(configs):
            sub = _ordered(frames[(frames["config"] == config) & (frames["load"] == ld)])
            if sub.empty:
                continue
            ax.plot(np.arange(1, len(sub) + 1), sub["total"] * scale, marker=".", ms=3, lw=0.9,
                    color=config_color(config, i), label=config_label(config, mode))
        ax.set_title(f"{ld} Mbit/s competing load" if ld != "loopback" else "loopback", loc="left")
        ax.set_ylabel(f"Total delay [{unit}]")
        if log:
            ax.set_yscale("log")
            plain_log(ax)
    axes[-1, 0].set_xlabel("Measured frame (capture order)")
    _legend(fig, *_all_handles(axes.flat))
    return fig


def fig_cdf(frames: pd.DataFrame, loads: Sequence[str] | None = None) -> Figure:
    """Empirical CDF of the total delay per configuration, one panel per load."""
    loads = list(loads) if loads else load_order(frames["load"])
    configs = _configs(frames)
    scale, unit = time_unit(frames["total"].max())
    log = _use_log(frames["total"])
    cols = min(len(loads), 3)
    rows = int(np.ceil(len(loads) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.7 * rows + 0.6), squeeze=False,
                             sharey=True, layout="constrained")
    for ax in axes.flat[len(loads):]:
        ax.set_visible(False)
    for ax, ld in zip(axes.flat, loads):
        for i, (config, mode) in enumerate(configs):
            v = np.sort(frames.loc[(frames["config"] == config) & (frames["load"] == ld), "total"].dropna())
            if v.size == 0:
                continue
            ax.step(v * scale, np.arange(1, v.size + 1) / v.size, where="post",
                    color=config_color(config, i), label=config_label(config, mode))
        ax.set_title(f"{ld} Mbit/s competing load" if ld != "loopback" else "loopback", loc="left")
        ax.set_xlabel(f"Total delay [{unit}]")
        ax.set_ylim(0, 1.02)
        if log:
            ax.set_xscale("log")
            plain_log(ax)
    for ax in axes[:, 0]:
        ax.set_ylabel("Fraction of frames ≤ x")
    _legend(fig, *_all_handles(axes.flat))
    return fig


def fig_processing(frames: pd.DataFrame) -> Figure:
    """Figures 14/15: MD (local) and ES (edge) processing delay per configuration, pooled over
    loads; bars are means, error bars standard deviations."""
    configs = _configs(frames)
    md = frames.groupby("config")["md_proc"]
    es = frames.groupby("config")["es_proc"]
    top = max(np.nanmax((md.mean() + md.std(ddof=1).fillna(0)).values),
              np.nanmax(np.nan_to_num((es.mean() + es.std(ddof=1).fillna(0)).values)))
    scale, unit = time_unit(top)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(configs) + 1.5), 3.2), layout="constrained")
    x = np.arange(len(configs))
    for off, grp, (label, color) in ((-0.2, md, COMPONENT_STYLE["md_proc"]),
                                     (0.2, es, COMPONENT_STYLE["es_proc"])):
        m = np.array([grp.mean().get(c, np.nan) for c, _ in configs]) * scale
        s = np.array([grp.std(ddof=1).get(c, np.nan) for c, _ in configs]) * scale
        s = np.nan_to_num(s)
        ax.bar(x + off, np.nan_to_num(m), 0.4, color=color, label=f"{label} (local)" if "MD" in label
               else f"{label} (edge)", yerr=[np.minimum(s, 0.95 * np.nan_to_num(m)), s], capsize=3,
               error_kw={"elinewidth": 0.8})
        for xi, mi in zip(x + off, m):
            if not np.isfinite(mi):
                ax.text(xi, 0.02, "none", ha="center", va="bottom", fontsize=7, color="dimgray",
                        transform=ax.get_xaxis_transform())
    ax.set_xticks(x, [config_label(c, m) for c, m in configs], rotation=20 if len(configs) > 3 else 0,
                  ha="right" if len(configs) > 3 else "center")
    ax.set_ylabel(f"Processing delay [{unit}]")
    ax.set_xlabel("Configuration (all loads pooled)")
    if _use_log(np.concatenate([md.mean().values, es.mean().dropna().values])):
        ax.set_yscale("log")
        plain_log(ax)
    _legend(fig, *_all_handles([ax]))
    return fig


def fig_compare(frames: pd.DataFrame) -> Figure:
    """Several runs side by side: mean total delay (± std) vs load, one panel per run, one
    colour per configuration, shared delay axis."""
    runs = list(dict.fromkeys(frames["run"]))
    scale, unit = time_unit(frames.groupby(["run", "config", "load"])["total"].mean().max())
    fig, axes = plt.subplots(1, len(runs), figsize=(3.4 * len(runs) + 0.4, 3.0), squeeze=False,
                             sharey=True, layout="constrained")
    all_configs = list(dict.fromkeys(frames["config"]))
    for ax, run in zip(axes[0], runs):
        sub = frames[frames["run"] == run]
        loads = load_order(sub["load"])
        configs = _configs(sub)
        for i, (config, mode) in enumerate(configs):
            x = np.arange(len(loads)) + (i - (len(configs) - 1) / 2) * 0.06
            g = sub[sub["config"] == config].groupby("load")["total"]
            m = np.array([g.mean().get(ld, np.nan) for ld in loads]) * scale
            s = np.nan_to_num(np.array([g.std(ddof=1).get(ld, np.nan) for ld in loads]) * scale)
            ax.errorbar(x, m, yerr=[np.minimum(s, 0.95 * m), s], marker="o", ms=4, capsize=3, lw=1,
                        color=config_color(config, all_configs.index(config)),
                        label=config_label(config, mode))
        ax.set_xticks(np.arange(len(loads)), loads)
        ax.set_xlim(-0.5, len(loads) - 0.5)
        ax.set_title(run, fontsize=8)
        ax.set_xlabel(load_axis_label(loads))
    axes[0, 0].set_ylabel(f"Mean total delay ± std [{unit}]")
    if _use_log(frames["total"]):
        axes[0, 0].set_yscale("log")
        plain_log(axes[0, 0])
    _legend(fig, *_all_handles(axes.flat))
    return fig


def _legend(fig: Figure, handles, labels, title: str | None = None) -> None:
    """A legend above the panels, with as many columns as fit the figure's width."""
    width_pt = fig.get_figwidth() * 72
    entry_pt = max(len(str(t)) for t in labels) * 5.0 + 40 if labels else 100
    ncols = max(1, min(len(labels), int(width_pt // entry_pt)))
    fig.legend(handles, labels, loc="outside upper center", ncols=ncols, frameon=False,
               title=title, title_fontsize=7)


def _all_handles(axes) -> tuple[list, list]:
    seen: dict[str, object] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    return list(seen.values()), list(seen.keys())


# ---------------------------------------------------------------------- all of them

FIGURES = {
    "components_vs_load": ("Delay components vs competing load (paper Fig. 16/19)", fig_components),
    "total_mean_std_vs_load": ("Mean and standard deviation of the total delay (Fig. 17)", fig_mean_std),
    "total_percentiles_vs_load": ("p50/p90/p99 of the total delay vs load", fig_percentiles),
    "total_timeseries": ("Total delay per frame (Fig. 18)", fig_timeseries),
    "total_cdf": ("CDF of the total delay", fig_cdf),
    "processing_md_vs_es": ("Local (MD) vs edge (ES) processing delay (Fig. 14/15)", fig_processing),
}


def write_figures(results: Results, out: Path | str, loads: Sequence[str] | None = None,
                  formats: Sequence[str] = FORMATS) -> dict[str, list[Path]]:
    """Every figure of every run (names suffixed with the run with several runs), plus the
    side-by-side comparison with several runs. ``loads`` selects the time-series/CDF loads."""
    written: dict[str, list[Path]] = {}
    many = len(results.labels) > 1
    loads = [_norm_load(x) for x in loads] if loads else None
    for run in results.labels:
        frames = results.frames[results.frames["run"] == run]
        if frames.empty:
            continue
        suffix = f"-{file_label(run)}" if many else ""
        chosen = [ld for ld in (loads or []) if ld in set(frames["load"])] or None
        for name, (_, fn) in FIGURES.items():
            fig = fn(frames, chosen) if fn in (fig_timeseries, fig_cdf) else fn(frames)
            label_emulation(fig, frames)
            written[name + suffix] = save(fig, out, name + suffix, formats)
    if many:
        written["compare_total_vs_load"] = save(fig_compare(results.frames), out,
                                                "compare_total_vs_load", formats)
    return written


def label_emulation(fig: Figure, frames: pd.DataFrame) -> None:
    """Say on ``fig`` which processing times came from a device profile, if any: in the title
    of the legend above the panels, else as a small title."""
    label = compute_label(frames)
    if not label:
        return
    for legend in fig.legends or [None]:
        if legend is None:
            fig.suptitle(label, fontsize=7, color="dimgray")
        else:
            said = legend.get_title().get_text()
            legend.set_title(f"{label}\n{said}" if said else label, prop={"size": 7})


def _norm_load(text) -> str:
    """``10``, ``10.0`` and ``10 `` all name the load labelled ``10``."""
    try:
        return load_label(float(text))
    except (TypeError, ValueError):
        return str(text).strip()
