"""One self-contained HTML report of one or more result folders, with its files beside it.

``write_report(folders, out)`` writes::

    out/report.html      figures embedded (base64 PNG), tables, conditions; no external file
    out/figures/         every figure as PNG and PDF
    out/tables/          stats.csv, Table 5 and detail tables as CSV, Markdown and LaTeX

With several folders, runs are compared side by side: one column per run for tables,
figures and conditions, and a comparison figure. The analytic section (Figures 2, 11-13 of
the paper) uses the paper's Table 1 devices, Table 4 payloads (or the runs' measured bytes on
the wire) and split shares from Table 5 or from a ``testbed profile`` file.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from analysis import conditions, paper
from analysis.analytic import crossing_text
from analysis.analytic_figures import build_pairs, write_analytic_figures
from analysis.cells import write_cells
from analysis.comm_report import write_breakdown
from analysis.figures import FIGURES, write_figures
from analysis.load import Results, file_label, load_results
from analysis.profiles import (DeviceProfile, Payloads, ProfileError, SplitShares, paper_devices,
                               paper_payloads, read_profile, result_payloads, shares_from_profile,
                               shares_from_table5)
from analysis.devices_report import PAPER_TABLE5_CAPTION, paper_table5, write_paper_table5
from analysis.htmltable import html_table
from analysis.tables import (DETAIL_CAPTION, FLAG_TEXT, component_stats, detail_table, table5,
                             table5_caption, write_tables)

REPORT = "report.html"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;max-width:1500px;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.0em;margin:1.2em 0 .4em}
table{border-collapse:collapse;font-size:.8em;margin:.4em 0}
th,td{border:1px solid #ddd;padding:.2em .45em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.flagged td{background:#fff4e5}
.runs{display:grid;gap:1.2em;grid-template-columns:repeat(var(--n),minmax(0,1fr))}
.run{min-width:0}.scroll{overflow-x:auto}
.run>h3:first-child{font-size:1.1em;color:#333}
figure{margin:.6em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.8em;color:#555}
.warn{background:#fff4e5;border-left:4px solid #e69500;padding:.4em .8em;margin:.6em 0}
.note{font-size:.85em;color:#555}
code{font-size:.9em}
"""


@dataclass
class ReportFiles:
    html: Path
    figures: dict[str, list[Path]] = field(default_factory=dict)
    tables: dict[str, Path] = field(default_factory=dict)


def default_out(folders: Sequence[Path | str]) -> Path:
    """``FOLDER/report`` for one folder; ``PARENT/compare-A-vs-B`` beside the first for several."""
    folders = [Path(f) for f in folders]
    if len(folders) == 1:
        return folders[0] / "report"
    name = "-vs-".join(f.resolve().name for f in folders)
    return folders[0].resolve().parent / f"compare-{name}"[:120]


# ---------------------------------------------------------------------- HTML helpers


def _e(text) -> str:
    return html.escape(str(text))


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _figure(paths: list[Path] | None, caption: str) -> str:
    if not paths:
        return f'<p class="note">{_e(caption)}: no data</p>'
    png = next(p for p in paths if p.suffix == ".png")
    links = " ".join(f'<a href="figures/{_e(p.name)}">{p.suffix[1:].upper()}</a>' for p in paths)
    return f"<figure>{_img(png, caption)}<figcaption>{_e(caption)} ({links})</figcaption></figure>"


def _kv(rows: list[tuple[str, str]]) -> str:
    def cls(k, v):
        bad = ("NOT applied" in k and not v.startswith("nothing")) or "STILL ON" in v or v.startswith("NOT applied")
        return ' class="flagged"' if bad else ""
    return "<table>" + "".join(f"<tr{cls(k, v)}><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def _columns(cells: list[str]) -> str:
    n = max(1, min(len(cells), 3))
    return f'<div class="runs" style="--n:{n}">' + "".join(f'<div class="run">{c}</div>' for c in cells) + "</div>"


# ---------------------------------------------------------------------- sections


def _summary(results: Results, stats: pd.DataFrame) -> str:
    ex = results.excluded.groupby("run")[["measured", "warmup_excluded", "failed_excluded"]].sum()
    runs = results.runs.set_index("run")
    table = pd.DataFrame({
        "run": runs.index, "scenario": runs["name"], "kind": runs["kind"], "link": runs["link"],
        "status": runs["status"], "models": runs["models"],
        "measured frames": [int(ex["measured"].get(r, 0)) for r in runs.index],
        "warm-up excluded": [int(ex["warmup_excluded"].get(r, 0)) for r in runs.index],
        "failed excluded": [int(ex["failed_excluded"].get(r, 0)) for r in runs.index],
        "folder": runs["path"],
    })
    out = [html_table(table, numeric=("measured frames", "warm-up excluded", "failed excluded"))]
    for run in results.labels:
        missing = conditions.not_applied(results.manifests[run])
        if missing:
            out.append(f'<div class="warn"><b>{_e(run)}: shaping asked for but NOT applied</b><ul>'
                       + "".join(f"<li>{_e(m)}</li>" for m in missing) + "</ul></div>")
        s = results.steps[results.steps["run"] == run]
        bad = s[~s["status"].astype(str).str.startswith("ok")]
        if not bad.empty:
            out.append(f'<div class="warn"><b>{_e(run)}: steps not ok</b><ul>' + "".join(
                f"<li>{_e(r.step)}: {_e(r.status)}</li>" for r in bad.itertuples()) + "</ul></div>")
    counts = {k: int(stats["flags"].astype(str).str.contains(k, regex=False).sum()) for k in FLAG_TEXT}
    flagged = ", ".join(f"{v} cells {k} ({FLAG_TEXT[k]})" for k, v in counts.items() if v)
    out.append(f'<p class="note">Validity flags: {_e(flagged or "none")}.</p>')
    return "".join(out)


def _steps_table(results: Results, run: str) -> str:
    s = results.steps[results.steps["run"] == run]
    table = pd.DataFrame({
        "step": s["step"], "config": s["config"],
        "load asked [Mbit/s]": s["load_asked_mbit"].map(_num),
        "achieved [Mbit/s]": s["load_achieved_mbit"].map(_num),
        "error [%]": s["load_error_pct"].map(_num), "status": s["status"],
        "frames": s["frames"], "failed": s["failed_frames"],
        "max load1": s["load1_max"].map(_num), "saturated hosts": s["saturated_hosts"].replace("", "-"),
    })
    flagged = (s["load_error_pct"].abs() > 10).fillna(False) | s["saturated_hosts"].ne("")
    return html_table(table, flagged=list(flagged), numeric=("load asked [Mbit/s]", "achieved [Mbit/s]",
                                                         "error [%]", "frames", "failed", "max load1"))


def _num(v) -> str:
    return "-" if pd.isna(v) else f"{v:g}"


def _comparison_table(stats: pd.DataFrame, labels: list[str]) -> str:
    t = stats[stats["component"] == "total"]
    keys = list(dict.fromkeys(zip(t["config"], t["load"])))
    rows = []
    for config, load in keys:
        row = {"configuration": config, "load [Mbit/s]": load}
        for run in labels:
            hit = t[(t["run"] == run) & (t["config"] == config) & (t["load"] == load)]
            if hit.empty:
                row[f"{run}: mean ± std [ms]"] = row[f"{run}: p99 [ms] (n)"] = "-"
                continue
            r = hit.iloc[0]
            row[f"{run}: mean ± std [ms]"] = f"{r['mean'] * 1e3:.1f} ± {r['std'] * 1e3:.1f}"
            row[f"{run}: p99 [ms] (n)"] = f"{r['p99'] * 1e3:.1f}{'' if r['p99_ok'] else '†'} ({int(r['n'])})"
        rows.append(row)
    return html_table(pd.DataFrame(rows))


def _analytic(results: Results, out: Path, profile: DeviceProfile | None,
              payload_source: str) -> tuple[str, dict[str, list[Path]]]:
    devices = paper_devices()
    shares: dict[str, SplitShares] = {"densenet201": shares_from_table5()}
    notes = []
    if profile is not None:
        for model in profile.parts:
            try:
                shares[model] = shares_from_profile(profile, model)
            except ProfileError as exc:
                notes.append(str(exc))
    payloads: dict[str, Payloads] = {m: paper_payloads(m) for m in shares}
    if payload_source == "measured":
        used = False
        for run in results.labels:
            f = results.frames[results.frames["run"] == run]
            for model in sorted(set(f["model"]) & set(shares)):
                try:
                    payloads[model] = result_payloads(f[f["model"] == model])
                    used = True
                    notes.append(f"{paper.MODEL_NAMES.get(model, model)}: payloads measured in run {run}")
                except ProfileError as exc:
                    notes.append(str(exc))
        if not used:
            notes.append("measured payloads not used: no run has es-only and mimic-bottleneck frames "
                         "of a model with split shares (give --profile for other models)")
    figs = write_analytic_figures(out, devices, shares, payloads)
    pairs = build_pairs(devices, shares, payloads)
    lines = []
    for (md, es), analyses in pairs.items():
        for p in analyses:
            head = f"{paper.MODEL_NAMES.get(p.model, p.model)}, MD {p.md.name}, ES {p.es.name}"
            items = [crossing_text(k, c, *_pair_opts(p, k)) for k, c in p.crossings().items()]
            lines.append(f"<li><b>{_e(head)}</b> (T_SC = {p.sc.head_s * 1e3:.3g} ms + "
                         f"{p.sc.payload_bytes / 1024:.2f} KB·8/r + {p.sc.tail_s * 1e3:.3g} ms)<ul>"
                         + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul></li>")
    src = "".join(f"<li>{_e(x)}</li>" for x in [paper.TABLE1_SOURCE, paper.TABLE4_SOURCE]
                  + [f"SC shares, {paper.MODEL_NAMES.get(m, m)}: {s.source}" for m, s in shares.items()]
                  + (["profile: " + profile.source] if profile else []) + notes)
    body = [
        "<p>T(r) = head time on the MD + payload·8/r + tail time on the ES (Section II). LC: the "
        "full model on the MD; EC: the resized JPEG, the full model on the ES; SC: the HND student "
        "head with its quantized bottleneck on the MD, the tail on the ES. SC head and tail times "
        "are <b>scaled</b> from Table 1 full-model times by the shares below; crossing points are "
        "computed in closed form, r* = 8(P_a − P_b)/(F_b − F_a).</p>",
        f"<h3>Sources</h3><ul class='note'>{src}</ul>",
    ]
    captions = {
        "analytic_fig2_edge_vs_local": "Fig. 2 view: edge computing vs local MobileNet v2",
        "analytic_totals_vs_rate": "LC, EC and SC totals vs data rate, crossing points marked",
        "analytic_fig11_gain_lc": "Fig. 11: gain over local computing of the teacher",
        "analytic_fig12_gain_ec": "Fig. 12: gain over edge computing",
        "analytic_fig13_gain_mobilenet": "Fig. 13: gain over local MobileNet v2",
    }
    body += [_figure(figs.get(k), c) for k, c in captions.items()]
    body.append(f"<h3>Crossing points</h3><ul class='note'>{''.join(lines)}</ul>")
    return "".join(body), figs


def _pair_opts(p, key: str):
    a, _, b = key.partition(" vs ")
    pick = {"SC": p.sc, "EC": p.ec, "LC": p.lc, "local MobileNet v2": p.mobile}
    return pick[a], pick[b]


# ---------------------------------------------------------------------- entry point


def _collect(figures: dict, tables: dict, section, run: str | None) -> None:
    """A report section's figures (suffixed with the run's label when several runs are shown)
    and tables, into the report's own."""
    suffix = f"-{file_label(run)}" if run is not None else ""
    figures.update({k + suffix: v for k, v in section.figures.items()})
    tables.update(section.tables)


def write_report(folders: Sequence[Path | str] | Path | str, out: Path | str | None = None,
                 labels: Sequence[str] | None = None, profile: Path | str | None = None,
                 payloads: str = "paper", loads: Sequence[str] | None = None,
                 analytic: bool = True) -> ReportFiles:
    """Load ``folders``, write figures, tables and ``report.html`` into ``out``; see the module
    docstring. ``payloads``: ``paper`` (Table 4) or ``measured`` (the runs' bytes on the wire)
    for the analytic section; ``loads``: loads of the time-series and CDF figures."""
    if isinstance(folders, (str, Path)):
        folders = [folders]
    if payloads not in ("paper", "measured"):
        raise ValueError(f"payloads: expected 'paper' or 'measured', got {payloads!r}")
    results = load_results(folders, labels)
    out = Path(out) if out else default_out(folders)
    fig_dir, tab_dir = out / "figures", out / "tables"
    stats = component_stats(results)
    tables = write_tables(results, tab_dir, stats)
    figures = write_figures(results, fig_dir, loads)
    prof = read_profile(profile) if profile else None
    labels = results.labels
    many = len(labels) > 1

    parts = [f"<h1>Split-inference latency report: {_e(', '.join(labels))}</h1>",
             f"<p class='note'>Generated by <code>testbed report</code> from "
             f"{_e(', '.join(str(results.paths[r]) for r in labels))}. Times exclude warm-up and failed "
             "frames. Figures and tables are also in <code>figures/</code> and <code>tables/</code> "
             "beside this file.</p>",
             "<h2>Summary</h2>", _summary(results, stats)]
    if many:
        parts += ["<h2>Runs side by side</h2>",
                  _figure(figures.get("compare_total_vs_load"), "Mean total delay vs load, per run"),
                  "<h3>Total delay per configuration and load</h3>", _comparison_table(stats, labels),
                  "<p class='note'>† p99 from fewer than 100 frames.</p>"]
    parts.append("<h2>Table 5: delay components</h2>")
    cells = []
    for run in labels:
        s = stats[stats["run"] == run]
        t5 = table5(s, run)
        cells.append(f"<h3>{_e(run)}</h3>" + html_table(t5, index=True, numeric=tuple(t5.columns))
                     + f"<p class='note'>{_e(table5_caption(s, results.subset(run)))}</p>")
    parts += cells  # full width: Table 5 of a sweep is wide
    for run in labels:  # runs that replayed the paper's devices: its Table 5 beside theirs
        vs = paper_table5(stats[stats["run"] == run], results.subset(run).frames)
        if vs is not None:
            parts.append(f"<h3>{_e(run)}: the paper's Table 5 beside this run's</h3>"
                         + html_table(vs, index=True, numeric=tuple(vs.columns))
                         + f"<p class='note'>{_e(PAPER_TABLE5_CAPTION)}</p>")
            tables.update(write_paper_table5(vs, tab_dir, f"-{file_label(run)}" if many else ""))
    parts.append("<h2>Statistics per cell (n, percentiles, validity)</h2>")
    parts.append(f"<p class='note'>{_e(DETAIL_CAPTION)} Highlighted rows: load missed or CPU "
                 "saturated.</p>")
    for run in labels:
        s = stats[stats["run"] == run]
        det = detail_table(stats, run)
        serious = list(s["load_missed"] | s["cpu_saturated"])
        parts.append(f"<details open><summary><b>{_e(run)}</b>: {len(det)} cells</summary>"
                     + html_table(det, flagged=serious,
                              numeric=("n", "mean ± std", "p50", "p90", "p99", "min", "max"))
                     + "</details>")
    parts.append("<h2>Figures</h2>")
    for name, (caption, _) in FIGURES.items():
        parts.append(f"<h3>{_e(caption)}</h3>")
        parts.append(_columns([(f"<p class='note'>{_e(run)}</p>" if many else "")
                               + _figure(figures.get(name + (f"-{file_label(run)}" if many else "")),
                                         f"{caption} — {run}") for run in labels]))
    breakdowns = {run: write_breakdown(results.paths[run], fig_dir, tab_dir,
                                       file_label(run) if many else "") for run in labels}
    if any(breakdowns.values()):
        parts.append("<h2>What comm is made of (packet captures)</h2>")
        for run, b in breakdowns.items():
            if b is None:
                continue
            _collect(figures, tables, b, run if many else None)
            parts.append((f"<h3>{_e(run)}</h3>" if many else "") + b.html + _columns([
                _figure(b.figures.get(name), f"{caption} — {run}") for name, caption in (
                    ("comm_parts_vs_load", "Parts of comm vs competing load"),
                    ("comm_variance_share", "Share of comm's variance per part"),
                    ("comm_timeline", "One frame's packets on both sides of the bottleneck"))]))
    cell_runs = {run: write_cells(results.paths[run], fig_dir, tab_dir,
                                  file_label(run) if many else "") for run in labels}
    if any(cell_runs.values()):
        parts.append("<h2>Cells: deadlines, capacity and fairness</h2>")
        for run, c in cell_runs.items():
            if c is None:
                continue
            _collect(figures, tables, c, run if many else None)
            parts.append((f"<h3>{_e(run)}</h3>" if many else "")
                         + _figure(c.figures["cell_miss_vs_load"],
                                   f"Deadline-miss probability vs competing load — {run}")
                         + c.html)
    parts.append("<h2>Loads: asked and achieved</h2>")
    parts += [f"<h3>{_e(run)}</h3>" + _steps_table(results, run) for run in labels]
    parts.append("<p class='note'>Highlighted: achieved load more than 10% off the asked one, or a "
                 "host whose 1-min load average exceeded its cores.</p>")
    parts.append("<h2>Conditions</h2>")
    cells = []
    for run in labels:
        secs = conditions.sections(results.manifests[run], results.paths[run])
        cells.append(f"<h3>{_e(run)}</h3>" + "".join(f"<h3>{_e(t)}</h3>{_kv(rows)}" for t, rows in secs.items()))
    parts.append(_columns(cells))
    if analytic:
        parts.append("<h2>Analytic model: LC, EC and SC vs data rate (paper's Table 1 devices)</h2>")
        body, afigs = _analytic(results, fig_dir, prof, payloads)
        figures.update(afigs)
        parts.append(body)
    parts.append("<h2>Files</h2><ul class='note'>" + "".join(
        f"<li><a href='tables/{_e(p.name)}'>tables/{_e(p.name)}</a></li>" for p in tables.values())
        + "</ul>")
    doc = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
           f"<title>testbed report: {_e(', '.join(labels))}</title><style>{CSS}</style></head><body>"
           + "\n".join(parts) + "</body></html>\n")
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT
    path.write_text(doc, encoding="utf-8")
    return ReportFiles(path, figures, tables)

