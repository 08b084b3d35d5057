"""Which compute model a run's frames used, worded for captions.

A host can replay a device profile (``testbed.devices``): its processing times are then the
profile's samples, emulated, while bytes and predictions stay real. Records say so per frame
(``md_compute``, ``es_compute``: ``real`` or ``profile:<name>``; ``compute_overrun``: the side
whose real work outlasted its sample).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

REAL = "real"


def compute_models(frames: pd.DataFrame) -> dict[str, list[str]]:
    """The compute models of each side in ``frames`` (records written before these columns
    existed count as ``real``)."""
    def labels(col: pd.Series) -> list[str]:
        return sorted({str(v) or REAL for v in col})
    split = frames[frames["mode"] != "LC"]
    return {"md": labels(frames["md_compute"]), "es": labels(split["es_compute"])}


def _emulated(frames: pd.DataFrame) -> dict[str, list[str]]:
    return {side: [m for m in found if m != REAL] for side, found in compute_models(frames).items()}


def compute_label(frames: pd.DataFrame) -> str:
    """A figure's one-line label when any processing in ``frames`` was emulated, else ``""``."""
    emulated = _emulated(frames)
    if not any(emulated.values()):
        return ""
    return "Processing emulated: " + "; ".join(
        f"{side.upper()} {', '.join(found)}" for side, found in emulated.items() if found)


def compute_note(frames: pd.DataFrame) -> str:
    """A caption sentence when any processing in ``frames`` was emulated, else ``""``."""
    emulated = _emulated(frames)
    if not any(emulated.values()):
        return ""
    said = "; ".join(f"{side.upper()} processing emulated from {', '.join(found)}"
                     for side, found in emulated.items() if found)
    measured = frames[~frames["warmup"] & frames["status"].eq("ok")]
    over = int(measured["compute_overrun"].astype(str).ne("").sum())
    return (f" {said} (times sampled from the device profile; bytes on the wire and predictions "
            f"are real). {over} measured frame(s) flagged compute_overrun (the real work "
            f"outlasted the profile's time; their time is the real work's).")


def compute_rows(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """The conditions rows of a manifest's ``compute`` (per host: real, or the profile and where
    its numbers come from); none for manifests written before device profiles."""
    rows = []
    for host, entry in (manifest.get("compute") or {}).items():
        source = f" ({entry['source']})" if entry.get("source") else ""
        rows.append((host, entry.get("model", REAL) + source))
    return rows
