"""Figures of the analytic model (``analysis.analytic``): the paper's Figures 2 and 11-13.

- :func:`fig_edge_vs_local` — Figure 2: edge computing of large models vs local MobileNet v2,
  total delay vs data rate, one panel per edge server, crossing points marked and listed;
- :func:`fig_totals` — LC, EC and SC totals vs data rate, one panel per MD-ES pair, with the
  crossing points (the rate at which offloading starts to win) marked and listed;
- :func:`fig_gains` — gains ``T_LC/T_SC`` (Fig. 11), ``T_EC/T_SC`` (Fig. 12) and
  ``T_LC(MobileNet v2)/T_SC`` (Fig. 13) vs data rate, one panel per MD-ES pair.

Crossing points are computed in closed form (``analytic.crossing``), never read off a curve.
Where SC head/tail times are scaled from full-model times, the figure says so under the panels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis import paper  # noqa: E402
from analysis.analytic import PairAnalysis, analyse_pair, crossing, edge, local  # noqa: E402
from analysis.figures import plain_log as _plain_log, save  # noqa: E402
from analysis.profiles import (DeviceProfile, Payloads, SplitShares, paper_devices,  # noqa: E402
                               paper_payloads, shares_from_table5)

RATES_MBIT = np.logspace(-1, 2, 600)
"""0.1 to 100 Mbit/s, log-spaced."""

BIG_MODELS = ("densenet169", "densenet201", "resnet152", "inception_v3")
MODEL_COLORS = {"densenet169": "#4C72B0", "densenet201": "#C44E52", "resnet152": "#55A868",
                "inception_v3": "#8172B3", "mobilenet_v2": "black"}
MODE_STYLE = {"LC": ("#4C72B0", "-"), "EC": ("#DD8452", "-"), "SC": ("#C44E52", "-"),
              "MB": ("black", "--")}
MD_DASHES = ["--", ":", "-."]


def _panels(n: int, text_lines: int, width: float = 3.6) -> tuple[Figure, np.ndarray, np.ndarray]:
    """n plot panels side by side, each with a text-only panel below it for the numbers."""
    text_h = 0.15 * text_lines + 0.3
    fig, axes = plt.subplots(2, n, figsize=(width * n, 2.9 + text_h), squeeze=False,
                             height_ratios=[2.9, text_h], layout="constrained")
    for ax in axes[1]:
        ax.axis("off")
    return fig, axes[0], axes[1]


def _write(ax, lines: Sequence[str]) -> None:
    ax.text(0.0, 1.0, "\n".join(lines), transform=ax.transAxes, va="top", ha="left", fontsize=6.5,
            family="monospace", wrap=False)


def _fmt_rate(r: float | None) -> str:
    return "never" if r is None else f"{r:.3g} Mbit/s"


def _legend(fig: Figure, axes) -> None:
    seen = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    width_pt = fig.get_figwidth() * 72
    entry = max(len(x) for x in seen) * 4.6 + 40 if seen else 100
    fig.legend(list(seen.values()), list(seen.keys()), loc="outside upper center", frameon=False,
               ncols=max(1, min(len(seen), int(width_pt // entry))))


def fig_edge_vs_local(devices: dict[str, DeviceProfile] | None = None,
                      models: Sequence[str] = BIG_MODELS,
                      es_keys: Sequence[str] = ("jetson-tx2", "desktop-rtx2080ti"),
                      md_keys: Sequence[str] = ("rpi3b+", "jetson-tx2"),
                      baseline: str = "mobilenet_v2", payloads: dict[str, Payloads] | None = None,
                      rates=RATES_MBIT) -> Figure:
    """Figure 2: EC total delay of each large model on each ES vs local MobileNet v2 on each MD."""
    devices = devices or paper_devices()
    payloads = payloads or {m: paper_payloads(m) for m in models}
    n_lines = len(models) * len(md_keys) + 3
    fig, axes, texts = _panels(len(es_keys), n_lines, width=4.0)
    for ax, tax, es_key in zip(axes, texts, es_keys):
        es = devices[es_key]
        lines = [f"crossing (EC = local {paper.MODEL_NAMES[baseline]}):"]
        baselines = [(md_keys[i], local(devices[k], baseline)) for i, k in enumerate(md_keys)]
        for j, (md_key, lc) in enumerate(baselines):
            ax.axhline(lc.fixed_s, color="black", ls=MD_DASHES[j % 3], lw=1,
                       label=f"{paper.MODEL_NAMES[baseline]} local on {devices[md_key].name}")
        for model in models:
            ec = edge(es, model, payloads[model])
            color = MODEL_COLORS.get(model)
            ax.plot(rates, ec.total_s(rates), color=color, lw=1.3,
                    label=f"EC {paper.MODEL_NAMES.get(model, model)}")
            for j, (md_key, lc) in enumerate(baselines):
                c = crossing(ec, lc)
                if c is not None and rates[0] <= c.rate_mbit <= rates[-1]:
                    ax.plot([c.rate_mbit], [c.total_s], "o", mfc="white", mec=color, ms=5, zorder=5)
                lines.append(f" {paper.MODEL_NAMES.get(model, model):13s} vs {devices[md_key].name:17s}"
                             f" {_fmt_rate(c.rate_mbit if c else None)}")
        lines += ["EC faster above the crossing (circles);", "never: local faster at every rate."]
        _write(tax, lines)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("Effective data rate MD→ES [Mbit/s]")
        ax.set_ylabel("Total inference time [s]")
        ax.set_title(f"Edge server: {es.name}")
        ax.grid(True, which="major", lw=0.3, alpha=0.5)
        _plain_log(ax)
    _legend(fig, axes)
    return fig


def fig_totals(pairs: Sequence[PairAnalysis], rates=RATES_MBIT, title_note: str = "") -> Figure:
    """LC, EC, SC and local MobileNet v2 totals vs rate, one panel per MD-ES pair."""
    fig, axes, texts = _panels(len(pairs), 8, width=3.9)
    for ax, tax, p in zip(axes, texts, pairs):
        name = paper.MODEL_NAMES.get(p.model, p.model)
        for opt, key, label in ((p.lc, "LC", f"LC: {name} on the MD"),
                                (p.ec, "EC", f"EC: {name} on the ES"),
                                (p.sc, "SC", f"SC: split {name} (HND, bottleneck)"),
                                (p.mobile, "MB", "LC: MobileNet v2 on the MD")):
            color, ls = MODE_STYLE[key]
            ax.plot(rates, opt.total_s(rates), color=color, ls=ls, lw=1.3, label=label)
        lines = ["crossings (closed form; MBv2: MobileNet v2 on the MD):"]
        for what, c in p.crossings().items():
            if c is not None and rates[0] <= c.rate_mbit <= rates[-1] and what.startswith("SC"):
                ax.axvline(c.rate_mbit, color="gray", ls=":", lw=0.8)
                ax.plot([c.rate_mbit], [c.total_s], "o", mfc="white", mec="black", ms=4, zorder=5)
            first = what.split()[0]
            side = "" if c is None else (" below" if _short(p, c.below) == first else " above")
            short = what.replace("local MobileNet v2", "MBv2")
            lines.append(f" {short:10s} {_fmt_rate(c.rate_mbit if c else None):>15s}"
                         + (f"  {first} faster{side}" if c else ""))
        lines += [f" T_SC = {p.sc.head_s * 1e3:.3g} ms + P·8/r + {p.sc.tail_s * 1e3:.3g} ms",
                  f" P_SC = {p.sc.payload_bytes / 1024:.2f} KB, P_EC = {p.ec.payload_bytes / 1024:.2f} KB"]
        _write(tax, lines)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("Effective data rate MD→ES [Mbit/s]")
        ax.set_ylabel("Total inference time [s]")
        ax.set_title(f"MD: {p.md.name} / ES: {p.es.name}", fontsize=8)
        ax.grid(True, which="major", lw=0.3, alpha=0.5)
        _plain_log(ax)
    _legend(fig, axes)
    if title_note:
        fig.suptitle(title_note, fontsize=7, color="dimgray", y=0.0, va="bottom")
    return fig


def _short(p: PairAnalysis, label: str) -> str:
    return {p.lc.label: "LC", p.ec.label: "EC", p.sc.label: "SC",
            p.mobile.label: "MBv2"}.get(label, label)


GAIN_KINDS = {
    "lc": ("Gain T_LC / T_SC (vs local teacher)", lambda p: p.lc),
    "ec": ("Gain T_EC / T_SC (vs edge computing)", lambda p: p.ec),
    "mobilenet": ("Gain T_LC(MobileNet v2) / T_SC", lambda p: p.mobile),
}


def fig_gains(pairs: dict[tuple[str, str], list[PairAnalysis]], kind: str, rates=RATES_MBIT,
              note: str = "") -> Figure:
    """Figures 11 (kind ``lc``), 12 (``ec``) and 13 (``mobilenet``): gain vs rate per pair."""
    ylabel, ref = GAIN_KINDS[kind]
    n_models = max(len(v) for v in pairs.values())
    fig, axes, texts = _panels(len(pairs), n_models + 2, width=3.6)
    for ax, tax, ((md_key, es_key), analyses) in zip(axes, texts, pairs.items()):
        lines = ["gain = 1 at (closed form):"]
        for p in analyses:
            color = MODEL_COLORS.get(p.model)
            name = paper.MODEL_NAMES.get(p.model, p.model)
            ax.plot(rates, ref(p).total_s(rates) / p.sc.total_s(rates), color=color, lw=1.3, label=name)
            c = crossing(ref(p), p.sc)
            if c is not None and rates[0] <= c.rate_mbit <= rates[-1]:
                ax.plot([c.rate_mbit], [1.0], "o", mfc="white", mec=color, ms=5, zorder=5)
            side = ""
            if c is not None:
                side = " (SC wins below)" if c.below == p.sc.label else " (SC wins above)"
            lines.append(f" {name:13s} {_fmt_rate(c.rate_mbit if c else None)}{side}")
        ax.axhline(1.0, color="black", lw=0.8, ls="--")
        _write(tax, lines)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("Effective data rate MD→ES [Mbit/s]")
        ax.set_ylabel(ylabel)
        ax.set_title(f"MD: {analyses[0].md.name} / ES: {analyses[0].es.name}", fontsize=8)
        ax.grid(True, which="major", lw=0.3, alpha=0.5)
        _plain_log(ax)
    _legend(fig, axes)
    if note:
        fig.suptitle(note, fontsize=7, color="dimgray", y=0.0, va="bottom")
    return fig


# ---------------------------------------------------------------------- all of them


def build_pairs(devices: dict[str, DeviceProfile], shares: dict[str, SplitShares],
                payloads: dict[str, Payloads] | None = None,
                pair_keys: Sequence[tuple[str, str]] = paper.PAIRS) -> dict[tuple[str, str], list[PairAnalysis]]:
    """LC/EC/SC analyses of every model with shares, on every MD-ES pair."""
    payloads = payloads or {m: paper_payloads(m) for m in shares}
    return {(md, es): [analyse_pair(devices[md], devices[es], m, payloads[m], shares[m])
                       for m in shares]
            for md, es in pair_keys}


def scaling_note(shares: dict[str, SplitShares]) -> str:
    """The sentence figures carry when SC head/tail times are scaled from full-model times."""
    parts = [f"{paper.MODEL_NAMES.get(m, m)}: {s.source}" for m, s in shares.items()]
    return ("SC head/tail times scaled from Table 1 full-model times by " + "; ".join(parts)
            + ". Payloads: Table 4 (KB = 1024 B).")


def write_analytic_figures(out: Path | str, devices: dict[str, DeviceProfile] | None = None,
                           shares: dict[str, SplitShares] | None = None,
                           payloads: dict[str, Payloads] | None = None,
                           formats: Sequence[str] = ("png", "pdf")) -> dict[str, list[Path]]:
    """Figure 2, the LC/EC/SC totals of the first model with shares, and Figures 11-13.

    Defaults: the paper's Table 1 devices, Table 4 payloads, and DenseNet-201 SC shares from
    Table 5 (the only split model whose head/tail times the paper reports as numbers).
    """
    devices = devices or paper_devices()
    shares = shares or {"densenet201": shares_from_table5()}
    note = scaling_note(shares)
    pairs = build_pairs(devices, shares, payloads)
    written = {"analytic_fig2_edge_vs_local": save(fig_edge_vs_local(devices), out,
                                                   "analytic_fig2_edge_vs_local", formats)}
    first = next(iter(shares))
    totals = [next(p for p in v if p.model == first) for v in pairs.values()]
    written["analytic_totals_vs_rate"] = save(fig_totals(totals, title_note=note), out,
                                              "analytic_totals_vs_rate", formats)
    for kind, fig_no in (("lc", 11), ("ec", 12), ("mobilenet", 13)):
        name = f"analytic_fig{fig_no}_gain_{kind}"
        written[name] = save(fig_gains(pairs, kind, note=note), out, name, formats)
    return written
