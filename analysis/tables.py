"""Table 5-style delay statistics with validity flags; CSV, Markdown and LaTeX (booktabs).

:func:`component_stats` gives the long table: one row per run, configuration, load and
component with n, mean, std, p50, p90, p99, min, max (``numpy.percentile``, linear
interpolation; std with ddof=1: ``analysis.stats``) and validity flags. Processing
components (``md_proc``, ``es_proc``) also get a row pooled over every load (``load == "all"``),
as the paper's Table 5 does ("processing delay ... is independent of network conditions and used
across the table").

Validity flags (a cell is flagged, never silently reported):

- ``p99<100``: the p99 comes from fewer than 100 frames (it is then at most the 2nd largest);
- ``p90<10``: the p90 comes from fewer than 10 frames;
- ``load-missed``: a step of this cell achieved a competing load more than 10% off the one asked;
- ``cpu-saturated``: during a step of this cell a host's 1-min load average exceeded its cores
  (the emulated hosts share this machine's CPUs, so processing times are inflated).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.compute import compute_note
from analysis.load import COMPONENTS, Results, file_label
from analysis.stats import STAT_COLUMNS, stat_row

PROCESSING = ("md_proc", "es_proc")
POOLED = "all"
P99_MIN_FRAMES = 100
P90_MIN_FRAMES = 10
LOAD_TOLERANCE_PCT = 10.0
COMPONENT_TITLES = {"md_proc": "MD processing", "es_proc": "ES processing",
                    "comm": "Communication", "es_queue": "ES queueing", "total": "Total"}
FLAG_TEXT = {
    "p99<100": f"p99 from fewer than {P99_MIN_FRAMES} frames",
    "p90<10": f"p90 from fewer than {P90_MIN_FRAMES} frames",
    "load-missed": f"achieved competing load missed the asked one by more than {LOAD_TOLERANCE_PCT:g}%",
    "cpu-saturated": "a host's load average exceeded its cores during the step",
}


def _config_order(results: Results) -> dict[tuple[str, str], int]:
    order: dict[tuple[str, str], int] = {}
    for key in zip(results.frames["run"], results.frames["config"]):
        order.setdefault(key, len(order))
    return order


def load_order(labels) -> list[str]:
    """Load labels sorted by their numeric value; ``loopback`` and ``all`` last."""
    def key(x):
        try:
            return (0, float(x))
        except ValueError:
            return (1, 0.0)
    return sorted(set(labels), key=key)


def _step_flags(results: Results) -> pd.DataFrame:
    """Per (run, config, load): whether a step missed its load or saturated the CPU."""
    s = results.steps.copy()
    missed = s["load_asked_mbit"].gt(0) & s["load_error_pct"].abs().gt(LOAD_TOLERANCE_PCT)
    s["load_missed"] = missed.fillna(False)
    s["cpu_saturated"] = s["saturated_hosts"].fillna("").ne("")
    g = s.groupby(["run", "config", "load"], sort=False)
    return g.agg(load_missed=("load_missed", "any"), cpu_saturated=("cpu_saturated", "any"),
                 load_asked_mbit=("load_asked_mbit", "first"),
                 load_achieved_mbit=("load_achieved_mbit", "mean")).reset_index()


def component_stats(results: Results, pool_processing: bool = True) -> pd.DataFrame:
    """The long table (see the module docstring); times in seconds."""
    f = results.frames
    rows = []
    for (run, config, load), g in f.groupby(["run", "config", "load"], sort=False):
        for comp in COMPONENTS:
            rows.append(dict(run=run, config=config, mode=g["mode"].iloc[0], load=load,
                             component=comp, **stat_row(g[comp])))
    if pool_processing:
        for (run, config), g in f.groupby(["run", "config"], sort=False):
            for comp in PROCESSING:
                rows.append(dict(run=run, config=config, mode=g["mode"].iloc[0], load=POOLED,
                                 component=comp, **stat_row(g[comp])))
    out = pd.DataFrame(rows, columns=["run", "config", "mode", "load", "component", *STAT_COLUMNS])
    out = out[out["n"] > 0].reset_index(drop=True)
    flags = _step_flags(results)
    out = out.merge(flags, on=["run", "config", "load"], how="left")
    if pool_processing:  # a pooled cell inherits the flags of every load it pools
        pooled = flags.groupby(["run", "config"])[["load_missed", "cpu_saturated"]].any()
        sel = out["load"].eq(POOLED)
        for col in ("load_missed", "cpu_saturated"):
            out.loc[sel, col] = [bool(pooled[col].get((r, c), False))
                                 for r, c in zip(out.loc[sel, "run"], out.loc[sel, "config"])]
    out["load_missed"] = out["load_missed"].fillna(False).astype(bool)
    out["cpu_saturated"] = out["cpu_saturated"].fillna(False).astype(bool)
    out["p99_ok"] = out["n"] >= P99_MIN_FRAMES
    out["p90_ok"] = out["n"] >= P90_MIN_FRAMES
    out["flags"] = [
        ";".join(k for k, bad in (("p99<100", not p99), ("p90<10", not p90),
                                  ("load-missed", lm), ("cpu-saturated", cs)) if bad)
        for p99, p90, lm, cs in zip(out["p99_ok"], out["p90_ok"], out["load_missed"], out["cpu_saturated"])
    ]
    out["valid"] = out["flags"].eq("")
    order = _config_order(results)
    loads = {x: i for i, x in enumerate(load_order(out["load"]))}
    comps = {c: i for i, c in enumerate(COMPONENTS)}
    out = out.assign(_c=[order.get((r, c), 0) for r, c in zip(out["run"], out["config"])],
                     _l=out["load"].map(loads), _k=out["component"].map(comps))
    return out.sort_values(["_c", "_l", "_k"]).drop(columns=["_c", "_l", "_k"]).reset_index(drop=True)


# ---------------------------------------------------------------------- Table 5 (wide)


def _pm(mean: float, std: float, unit: float = 1.0, digits: int = 3) -> str:
    """``mean ± std`` with at least ``digits`` decimals and 3 significant digits of the mean."""
    if not np.isfinite(mean):
        return "-"
    m = abs(mean * unit)
    decimals = max(digits, 2 - int(np.floor(np.log10(m)))) if m > 0 else digits
    sd = f"{std * unit:.{decimals}f}" if np.isfinite(std) else "-"
    return f"{mean * unit:.{decimals}f} ± {sd}"


def table5(stats: pd.DataFrame, run: str | None = None, digits: int = 3) -> pd.DataFrame:
    """Table 5 of the paper: per configuration, MD and ES processing pooled over loads, then
    communication and total per load; cells "mean ± std" in seconds, flagged cells marked ``*``.
    """
    s = stats if run is None else stats[stats["run"] == run]
    configs = list(dict.fromkeys(s["config"]))
    loads = [x for x in load_order(s["load"]) if x != POOLED]
    table = pd.DataFrame(index=pd.Index(configs, name="configuration"))

    def cell(config, load, comp):
        hit = s[(s["config"] == config) & (s["load"] == load) & (s["component"] == comp)]
        if hit.empty:
            return "-"
        r = hit.iloc[0]
        mark = " *" if (r["load_missed"] or r["cpu_saturated"]) else ""
        return _pm(r["mean"], r["std"], digits=digits) + mark

    has_pool = (s["load"] == POOLED).any()
    for comp in PROCESSING:
        where = POOLED if has_pool else None
        table[f"{COMPONENT_TITLES[comp]} [s]"] = [
            cell(c, where, comp) if where else "-" for c in configs]
    for load in loads:
        head = f"{load} Mbit/s" if load != "loopback" else "loopback"
        table[f"Communication @ {head} [s]"] = [cell(c, load, "comm") for c in configs]
        table[f"Total @ {head} [s]"] = [cell(c, load, "total") for c in configs]
    return table


def table5_caption(stats: pd.DataFrame, results: Results | None = None) -> str:
    pooled = (stats["load"] == POOLED).any()
    text = ("Delay components, mean ± standard deviation in seconds, warm-up and failed frames "
            "excluded.")
    if pooled:
        text += (" Processing delays on the MD and the ES are pooled over all competing loads "
                 "(as in the paper's Table 5, they do not depend on the network).")
    text += (" * marks a cell whose steps missed the asked competing load by more than "
             f"{LOAD_TOLERANCE_PCT:g}% or saturated a host's CPU.")
    if results is not None:
        ex = results.excluded
        text += (f" Excluded: {int(ex['warmup_excluded'].sum())} warm-up and "
                 f"{int(ex['failed_excluded'].sum())} failed frames.")
        text += compute_note(results.frames)
    return text


def detail_table(stats: pd.DataFrame, run: str | None = None, unit: float = 1e3) -> pd.DataFrame:
    """Every cell with n and its percentiles, in milliseconds; flagged percentiles marked."""
    s = stats if run is None else stats[stats["run"] == run]
    out = pd.DataFrame({
        "configuration": s["config"], "load [Mbit/s]": s["load"],
        "component": [COMPONENT_TITLES[c] for c in s["component"]], "n": s["n"].astype(int),
    })
    fmt = lambda v: "-" if not np.isfinite(v) else f"{v * unit:.1f}"  # noqa: E731
    out["mean ± std"] = [_pm(m, d, unit, 1) for m, d in zip(s["mean"], s["std"])]
    out["p50"] = [fmt(v) for v in s["p50"]]
    out["p90"] = [fmt(v) + ("†" if not ok else "") for v, ok in zip(s["p90"], s["p90_ok"])]
    out["p99"] = [fmt(v) + ("†" if not ok else "") for v, ok in zip(s["p99"], s["p99_ok"])]
    out["min"] = [fmt(v) for v in s["min"]]
    out["max"] = [fmt(v) for v in s["max"]]
    out["flags"] = [f or "ok" for f in s["flags"]]
    return out.reset_index(drop=True)


DETAIL_CAPTION = (
    "Delay statistics per configuration, competing load and component, in milliseconds "
    "(n frames; percentiles by linear interpolation). † marks a percentile computed from fewer "
    f"frames than it needs (p90: {P90_MIN_FRAMES}, p99: {P99_MIN_FRAMES}). Flags: "
    + "; ".join(f"{k}: {v}" for k, v in FLAG_TEXT.items()) + ". Load 'all' pools every load."
)


# ---------------------------------------------------------------------- output formats


def to_markdown(table: pd.DataFrame, caption: str = "", index: bool = True) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency), caption below."""
    df = table.reset_index() if index else table
    cols = [str(c) for c in df.columns]
    esc = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    if caption:
        lines += ["", caption]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                  "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "\\": r"\textbackslash{}", "±": r"$\pm$", "†": r"$^\dagger$", "<": r"$<$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _numeric(column: pd.Series) -> bool:
    """Whether a column holds numbers (possibly as "mean ± std", with a † or * mark)."""
    def num(v) -> bool:
        text = str(v).replace("±", " ").replace("†", "").replace("*", "").split()
        try:
            return bool(text) and all(np.isfinite(float(t)) for t in text)
        except ValueError:
            return str(v).strip() == "-"
    values = [v for v in column if str(v).strip() != "-"]
    return bool(values) and all(num(v) for v in values)


def to_latex(table: pd.DataFrame, caption: str = "", label: str = "", index: bool = True) -> str:
    """A booktabs table (``\\usepackage{booktabs}``); written by hand, no jinja2 needed."""
    df = table.reset_index() if index else table
    cols = [latex_escape(c) for c in df.columns]
    spec = "".join("r" if _numeric(df[c]) else "l" for c in df.columns)
    lines = [r"% needs \usepackage{booktabs} and \usepackage{graphicx}",
             r"\begin{table}[t]", r"\centering", r"\small"]
    if caption:
        lines.append(r"\caption{" + latex_escape(caption) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines += [r"\resizebox{\linewidth}{!}{%", r"\begin{tabular}{" + spec + "}", r"\toprule",
              " & ".join(cols) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_csv_md(df: pd.DataFrame, out: Path, name: str, caption: str) -> list[Path]:
    """``df`` as ``out/name.csv`` and ``out/name.md`` (with ``caption``); the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    csv, md = out / f"{name}.csv", out / f"{name}.md"
    df.to_csv(csv, index=False)
    md.write_text(to_markdown(df, caption, index=False))
    return [csv, md]


def write_tables(results: Results, out: Path | str, stats: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write the long CSV and, per run, the Table 5 and detail tables as Markdown and LaTeX.

    Returns {name: path}. File names: ``stats.csv``, ``table5[-RUN].md/.tex``,
    ``detail[-RUN].md/.tex`` (the run suffix only with several runs).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stats = component_stats(results) if stats is None else stats
    written = {"stats.csv": out / "stats.csv"}
    stats.to_csv(written["stats.csv"], index=False)
    many = len(results.labels) > 1
    for run in results.labels:
        suffix = f"-{file_label(run)}" if many else ""
        t5 = table5(stats, run)
        cap5 = table5_caption(stats[stats["run"] == run], results.subset(run))
        det = detail_table(stats, run)
        t5.to_csv(out / f"table5{suffix}.csv")
        written[f"table5{suffix}.csv"] = out / f"table5{suffix}.csv"
        for name, table, cap, idx in (("table5", t5, cap5, True), ("detail", det, DETAIL_CAPTION, False)):
            md = out / f"{name}{suffix}.md"
            md.write_text(to_markdown(table, cap, index=idx))
            tex = out / f"{name}{suffix}.tex"
            tex.write_text(to_latex(table, cap, label=f"tab:{name}{suffix}", index=idx))
            written[md.name], written[tex.name] = md, tex
    return written

