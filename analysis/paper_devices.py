"""The shipped device profiles (``testbed/data/devices``), built from the paper's tables.

- ``paper-wifi-md`` / ``paper-wifi-es``: the MD and the ES of the paper's WiFi experiment,
  Table 5's processing columns (DenseNet-201, mean ± std, ``normal>0``). Table 5 gives no MD
  time for es-only: its es-only totals are comm + ES processing (0.091 + 0.034 = 0.125 s at
  5 Mbit/s), so the MD's JPEG step is ``fixed`` 0 there.
- ``rpi3b+``, ``jetson-tx2``, ``desktop-rtx2080ti``: Table 1's whole-model times of all seven
  networks; every other part derived as ``Table 1 whole-model time x (this part / md-only)`` of a
  profile measured on this project's host by ``testbed profile`` (the head/tail shares; see
  ``derivation`` in each file). Table 1 gives means only: std is the median coefficient of
  variation of Table 5's processing columns (``TABLE5_MEDIAN_CV``), ``normal>0``.

``python scripts/make_device_profiles.py`` writes them; a test checks the shipped files match.
"""

from __future__ import annotations

import statistics
from typing import Any

from analysis import paper

SCHEMA = 2
KIND = "testbed-profile"
MODES = {"md-only": "LC", "es-only": "EC", "org-split2": "SC", "mimic-split2": "SC",
         "mimic-bottleneck": "SC"}


def _cvs() -> list[float]:
    out = []
    for row in paper.TABLE5.values():
        for side in ("md_proc", "es_proc"):
            if row[side]:
                mean, std = row[side]
                out.append(std / mean)
    return out


TABLE5_MEDIAN_CV = statistics.median(_cvs())
"""Median std/mean of Table 5's eight processing figures (about 4 %)."""


def _normal(mean: float, std: float) -> dict[str, Any]:
    return {"distribution": "normal>0", "mean_s": round(mean, 7), "std_s": round(std, 7)}


def _part(side: str, mean: float, std: float) -> dict[str, Any]:
    if mean == 0:
        return {f"{side}_s": 0.0, f"{side}_dist": {"distribution": "fixed", "mean_s": 0.0}}
    return {f"{side}_s": round(mean, 7), f"{side}_dist": _normal(mean, std)}


def paper_wifi(side: str) -> dict[str, Any]:
    """``paper-wifi-md`` (side ``md``) or ``paper-wifi-es`` (``es``) from Table 5."""
    column = f"{side}_proc"
    configs: dict[str, Any] = {}
    for name, row in paper.TABLE5.items():
        if row[column] is not None:
            configs[name] = {"mode": MODES[name], **_part(side, *row[column])}
        elif side == "md" and name == "es-only":
            configs[name] = {"mode": MODES[name], **_part(side, 0.0, 0.0)}
    who = "MD" if side == "md" else "ES (laptop i7-6700HQ + Quadro P500)"
    return {
        "kind": KIND, "schema": SCHEMA,
        "source": paper.TABLE5_SOURCE + f"; {side.upper()} processing column",
        "device": {"key": f"paper-wifi-{side}", "name": f"the paper's WiFi {who}",
                   "hardware": "see source"},
        "derivation": (f"Table 5's {side.upper()} processing delay (mean ± std, s) of each "
                       "configuration of DenseNet-201 as a normal distribution truncated at > 0"
                       + ("; es-only: Table 5 has no MD time (its es-only totals are comm + ES "
                          "processing: 0.091 + 0.034 = 0.125 s at 5 Mbit/s), so fixed 0"
                          if side == "md" else "")),
        "models": {"densenet201": {"configs": configs}},
    }


def table1_device(key: str, shares: dict[str, Any]) -> dict[str, Any]:
    """A Table 1 platform: whole models from Table 1, the other parts scaled by the part's
    share of md-only in ``shares`` (a ``testbed profile`` JSON of this project's host)."""
    device = paper.TABLE1_DEVICES[key]
    cv = TABLE5_MEDIAN_CV
    models: dict[str, Any] = {}
    for model, full in device["full_s"].items():
        measured = shares["models"][model]["configs"]
        base = measured["md-only"]["md_s"]
        configs: dict[str, Any] = {}
        for name, part in measured.items():
            entry: dict[str, Any] = {"mode": MODES[name]}
            for side in ("md", "es"):
                if part.get(f"{side}_s") is not None:
                    mean = full * part[f"{side}_s"] / base
                    entry |= _part(side, mean, cv * mean)
            configs[name] = entry
        models[model] = {"configs": configs}
    return {
        "kind": KIND, "schema": SCHEMA,
        "source": (f"{paper.TABLE1_SOURCE}: whole-model times; other parts derived from "
                   f"head/tail shares measured on this project's host ({shares['source']})"),
        "device": {"key": key, "name": device["name"], "hardware": device["hardware"],
                   "roles": device["roles"]},
        "derivation": (
            "md-only md_s: Table 1's inference time. Every other part (es-only md: resize + "
            "JPEG encode; es-only es: JPEG decode + whole model; split md: head + quantize; "
            "split es: tail) = Table 1's time x (that part's median / md-only's median) on the "
            "host of `source`, one torch thread. Table 1 gives means only: each part is a normal "
            f"distribution truncated at > 0 with std = {cv:.4f} x mean, the median std/mean of "
            "Table 5's eight processing figures."),
        "models": models,
    }


def shipped(shares: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every shipped profile by name."""
    out = {f"paper-wifi-{side}": paper_wifi(side) for side in ("md", "es")}
    out |= {key: table1_device(key, shares) for key in paper.TABLE1_DEVICES}
    return out
