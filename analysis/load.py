"""Result folders -> tidy pandas data frames.

One entry point, :func:`load_results`, reads one or more result folders (``testbed run`` sweeps
and ``testbed demo`` loopback folders) and returns a :class:`Results` with:

- ``frames``: the measured frames only (not warm-up, status ``ok``), one row per frame;
- ``excluded``: how many warm-up and failed frames were left out, per run, configuration, load;
- ``steps``: one row per step: load asked and achieved, its error, status, CPU saturation;
- ``runs``: one row per folder: what ran, where, when, with which status;
- ``manifests``: each folder's manifest as read, for the report's conditions section.

Every folder gets a short *label* (its folder name unless given) that all frames carry in the
``run`` column, so several folders can be compared in one frame.

A loopback demo has no load steps: its frames get step ``loopback`` and no load. Folders that
are incomplete or come from a newer testbed raise :class:`ResultFolderError` saying what is
wrong and what to do. Pure functions: no network, no root, no model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from testbed.records import SCHEMA_VERSION, FrameRecord

MANIFEST = "manifest.json"
FRAMES = "frames.csv"
COMPONENTS = ("md_proc", "comm", "es_queue", "es_proc", "total")
"""Delay components; ``es_queue`` is empty (NaN) in folders written before tails reported it."""

LOOPBACK_STEP = "loopback"
LOOPBACK_LABEL = "loopback"

REQUIRED_COLUMNS = (
    "run_id", "config", "mode", "model", "frame_id", "warmup", "payload_bytes", "wire_bytes",
    "md_proc", "es_proc", "comm", "total", "status",
)
"""Columns every frames.csv of schema 1 has; the others got added later with defaults."""

OPTIONAL_DEFAULTS: dict[str, Any] = {
    "split": "", "n_ch": np.nan, "image_id": "", "predicted": np.nan, "step": "",
    "load_mbit": np.nan, "load_achieved_mbit": np.nan, "repetition": 0, "capture_ns": 0,
    "md_compute": "real", "es_compute": "", "compute_overrun": "",
    "es_queue": np.nan, "md": "", "md_wait": np.nan, "deadline_met": "",
}

SWEEP_KEYS = ("run_id", "scenario", "steps")
DEMO_KEYS = ("kind", "run_id")


class ResultFolderError(ValueError):
    """A folder that cannot be analysed, with the reason and what to do about it."""


@dataclass
class Results:
    frames: pd.DataFrame
    excluded: pd.DataFrame
    steps: pd.DataFrame
    runs: pd.DataFrame
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return list(self.runs["run"])

    def subset(self, run: str) -> "Results":
        """The same tables restricted to one run."""
        pick = lambda df: df[df["run"] == run]  # noqa: E731
        return Results(frames=pick(self.frames), excluded=pick(self.excluded),
                       steps=pick(self.steps), runs=pick(self.runs),
                       manifests={k: v for k, v in self.manifests.items() if k == run},
                       paths={k: v for k, v in self.paths.items() if k == run})


def file_label(run: str) -> str:
    """A run label made safe for file names (figure and table suffixes)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in run)


# ---------------------------------------------------------------------- manifest


def read_manifest(folder: Path | str) -> dict[str, Any]:
    """The folder's manifest, checked for its schema version and the keys analysis needs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ResultFolderError(f"{folder}: no such result folder")
    path = folder / MANIFEST
    if not path.exists():
        raise ResultFolderError(
            f"{folder}: not a result folder, or an incomplete one: {MANIFEST} is missing "
            f"(`testbed run` and `testbed demo` write it when they start; was the folder copied "
            f"without it?)"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ResultFolderError(f"{path}: not valid JSON ({exc}); the file is damaged") from exc
    if not isinstance(manifest, dict):
        raise ResultFolderError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    schema = manifest_schema(manifest)
    if schema > SCHEMA_VERSION:
        raise ResultFolderError(
            f"{folder}: written by a newer testbed (result schema {schema}; this analysis reads "
            f"schema {SCHEMA_VERSION} and older). Update the testbed (git pull, then "
            f"`pip install -e .` in its virtual environment) to analyse it."
        )
    keys = DEMO_KEYS if is_demo(manifest) else SWEEP_KEYS
    missing = [k for k in keys if k not in manifest]
    if missing:
        kind = "loopback demo" if is_demo(manifest) else "sweep (testbed run)"
        raise ResultFolderError(
            f"{path}: incomplete manifest of a {kind}: missing key(s) {', '.join(missing)}. "
            f"The run probably died before writing them; rerun it (or `testbed run --resume "
            f"{folder}` for a sweep)."
        )
    return manifest


def manifest_schema(manifest: dict[str, Any]) -> int:
    """The result schema a manifest declares (``schema``, or ``versions.schema``); 1 if none."""
    value = manifest.get("schema", (manifest.get("versions") or {}).get("schema", 1))
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ResultFolderError(f"manifest: schema must be an integer, got {value!r}") from None


def is_demo(manifest: dict[str, Any]) -> bool:
    return manifest.get("kind") == "loopback-demo"


# ---------------------------------------------------------------------- frames


def read_frames(folder: Path | str) -> pd.DataFrame:
    """Every row of ``frames.csv`` (warm-up and failed frames included), typed."""
    folder = Path(folder)
    path = folder / FRAMES
    if not path.exists():
        raise ResultFolderError(
            f"{folder}: incomplete result folder: {FRAMES} is missing, so no frame was recorded "
            f"(see the manifest's status and logs/ for why; for a sweep, `testbed run --resume "
            f"{folder}` runs the unfinished steps)"
        )
    try:
        df = pd.read_csv(path, dtype={"status": str, "config": str, "step": str, "split": str,
                                      "image_id": str, "run_id": str},
                         keep_default_na=False, na_values={c: [""] for c in _NUMERIC})
    except pd.errors.EmptyDataError:
        raise ResultFolderError(f"{path}: empty file (the run recorded no frame)") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ResultFolderError(
            f"{path}: not a frames file of this testbed: missing column(s) {', '.join(missing)} "
            f"(expected the FrameRecord columns: {', '.join(FrameRecord.columns())})"
        )
    df = df.dropna(subset=["frame_id"])  # a crash mid-line leaves a short final row
    if df.empty:
        raise ResultFolderError(f"{path}: no frame recorded yet (only the header); see the "
                                f"manifest's status and logs/")
    for name, default in OPTIONAL_DEFAULTS.items():
        if name not in df.columns:
            df[name] = default
    for name in _NUMERIC:
        df[name] = pd.to_numeric(df[name], errors="coerce")
    df["warmup"] = df["warmup"].astype(str).str.strip().str.lower().eq("true")
    df["status"] = df["status"].fillna("").astype(str)
    df["step"] = df["step"].fillna("").astype(str)
    return df.reset_index(drop=True)


_NUMERIC = (
    "n_ch", "frame_id", "payload_bytes", "wire_bytes", "md_proc", "es_proc", "comm", "total",
    "predicted", "load_mbit", "load_achieved_mbit", "repetition", "capture_ns", "es_queue",
    "md_wait",
)


def load_label(load: float | None) -> str:
    """How a load shows in tables and on axes: ``10`` (Mbit/s), or ``loopback`` for none."""
    if load is None or (isinstance(load, float) and math.isnan(load)):
        return LOOPBACK_LABEL
    return f"{load:g}"


# ---------------------------------------------------------------------- steps


def _steps_of(label: str, manifest: dict[str, Any], raw: pd.DataFrame) -> pd.DataFrame:
    rows = []
    if is_demo(manifest):
        for config, sub in raw.groupby("config", sort=False):
            status = (manifest.get("status") or {}).get(config, "ok")
            rows.append(dict(step=f"{LOOPBACK_STEP}-{config}", config=config,
                             load_asked_mbit=np.nan, load_achieved_mbit=np.nan,
                             load_error_pct=np.nan, repetition=0, status=status,
                             frames=len(sub), failed_frames=int((sub["status"] != "ok").sum()),
                             wall_s=np.nan, saturated_hosts="", load1_max=np.nan,
                             medium_flags="", ns3_late_p99_ms=np.nan, mds=1, dropped_frames=0))
    else:
        for step_id, s in manifest.get("steps", {}).items():
            asked = _num(s.get("load_asked_mbit"))
            achieved = _num(s.get("load_achieved_mbit"))
            error = _num(s.get("load_error_pct"))
            if math.isnan(error) and asked and not math.isnan(achieved):
                error = round(100 * (achieved - asked) / asked, 1)
            loadavg = s.get("loadavg") or {}
            saturated = sorted(h for h, v in loadavg.items() if isinstance(v, dict) and v.get("saturated"))
            loads = [v["load1"] for v in loadavg.values() if isinstance(v, dict) and "load1" in v]
            medium = s.get("medium") or {}
            rows.append(dict(step=step_id, config=s.get("config", ""), load_asked_mbit=asked,
                             load_achieved_mbit=achieved, load_error_pct=error,
                             repetition=int(s.get("repetition") or 0),
                             status=str(s.get("status", "unknown")),
                             frames=int(s.get("frames") or 0),
                             failed_frames=int(s.get("failed_frames") or 0),
                             wall_s=_num(s.get("wall_s")), saturated_hosts=",".join(saturated),
                             load1_max=max(loads) if loads else np.nan,
                             medium_flags=",".join(medium.get("flags") or []),
                             ns3_late_p99_ms=_num((medium.get("lateness") or {}).get("p99_ms")),
                             mds=int(s.get("mds") or 1),
                             dropped_frames=int(s.get("dropped_frames") or 0)))
    steps = pd.DataFrame(rows, columns=_STEP_COLUMNS)
    steps.insert(0, "run", label)
    steps["load"] = [load_label(x) for x in steps["load_asked_mbit"]]
    return steps


_STEP_COLUMNS = ["step", "config", "load_asked_mbit", "load_achieved_mbit", "load_error_pct",
                 "repetition", "status", "frames", "failed_frames", "wall_s", "saturated_hosts",
                 "load1_max", "medium_flags", "ns3_late_p99_ms", "mds", "dropped_frames"]


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


# ---------------------------------------------------------------------- runs


def _run_row(label: str, folder: Path, manifest: dict[str, Any], raw: pd.DataFrame) -> dict:
    scenario = manifest.get("scenario") or {}
    link = scenario.get("link") or {}
    if is_demo(manifest):
        kind, name, link_text = "loopback-demo", "loopback-demo", manifest.get("link", "loopback")
    else:
        kind = (manifest.get("lab") or {}).get("kind", scenario.get("lab", "sweep"))
        name = scenario.get("name", folder.name)
        link_text = f"{link.get('kind', '?')} {link.get('preset') or ''}".strip()
    return dict(
        run=label, path=str(folder), run_id=manifest.get("run_id", ""), kind=kind, name=name,
        link=link_text, status=_status_text(manifest.get("status")),
        started=manifest.get("started", ""), finished=manifest.get("finished", ""),
        schema=manifest_schema(manifest), models=",".join(sorted(set(raw["model"].astype(str)))),
        rows=len(raw),
    )


def _status_text(status) -> str:
    if isinstance(status, dict):  # the demo keeps one status per configuration
        bad = {k: v for k, v in status.items() if v != "ok"}
        return "complete" if not bad else "; ".join(f"{k}: {v}" for k, v in bad.items())
    return str(status or "unknown")


# ---------------------------------------------------------------------- entry point


def load_results(folders: Iterable[Path | str] | Path | str,
                 labels: Sequence[str] | None = None) -> Results:
    """Read result folders into one :class:`Results` (see the module docstring).

    ``labels`` name the runs (default: folder names, made unique). Raises
    :class:`ResultFolderError` for a folder that is incomplete or from a newer testbed.
    """
    if isinstance(folders, (str, Path)):
        folders = [folders]
    folders = [Path(f) for f in folders]
    if not folders:
        raise ResultFolderError("no result folder given")
    if labels is not None and len(labels) != len(folders):
        raise ValueError(f"{len(labels)} labels for {len(folders)} folders")
    names = list(labels) if labels is not None else _unique([f.resolve().name for f in folders])

    frames, excluded, steps, runs = [], [], [], []
    manifests, paths = {}, {}
    for label, folder in zip(names, folders):
        manifest = read_manifest(folder)
        raw = read_frames(folder)
        raw = _with_steps(raw, manifest)
        raw.insert(0, "run", label)
        use = ~raw["warmup"] & raw["status"].eq("ok")
        frames.append(raw[use])
        excluded.append(_excluded(raw))
        steps.append(_steps_of(label, manifest, raw))
        runs.append(_run_row(label, folder, manifest, raw))
        manifests[label] = manifest
        paths[label] = folder
    out_frames = pd.concat(frames, ignore_index=True)
    out_frames["load"] = [load_label(x) for x in out_frames["load_mbit"]]
    return Results(
        frames=out_frames,
        excluded=pd.concat(excluded, ignore_index=True),
        steps=pd.concat(steps, ignore_index=True),
        runs=pd.DataFrame(runs),
        manifests=manifests,
        paths=paths,
    )


def _with_steps(raw: pd.DataFrame, manifest: dict[str, Any]) -> pd.DataFrame:
    raw = raw.copy()
    if is_demo(manifest) or raw["load_mbit"].isna().all():
        raw["load_mbit"] = np.nan
        raw["step"] = [f"{LOOPBACK_STEP}-{c}" if not s else s for c, s in zip(raw["config"], raw["step"])]
    else:
        steps = manifest.get("steps", {})
        achieved = {k: _num(v.get("load_achieved_mbit")) for k, v in steps.items()}
        from_manifest = raw["step"].map(achieved).astype(float)
        raw["load_achieved_mbit"] = raw["load_achieved_mbit"].fillna(from_manifest)
    return raw


def _excluded(raw: pd.DataFrame) -> pd.DataFrame:
    key = raw.assign(load=[load_label(x) for x in raw["load_mbit"]])
    failed = ~key["warmup"] & key["status"].ne("ok")
    out = (key.assign(warmup_excluded=key["warmup"].astype(int), failed_excluded=failed.astype(int),
                      measured=(~key["warmup"] & ~failed).astype(int))
           .groupby(["run", "config", "load"], sort=False, dropna=False)[
               ["measured", "warmup_excluded", "failed_excluded"]].sum().reset_index())
    return out


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out
