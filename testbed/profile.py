"""Hardware profile of this host: full, head and tail time of each model, no network.

For every model and each of its Table 5 configurations that can run (``testbed.configs.table5``;
models without a student head get md-only, es-only and org-split2), this times, on this host and
in this process, exactly what the runtime does per frame (``testbed.payloads``):

- MD part: ``md_local`` (LC: the whole model) or ``md_message`` (EC: resize + JPEG; SC: resize,
  head, quantize, encode);
- ES part: ``es_input`` + ``es_predict`` (EC: JPEG decode + whole model; SC: dequantize + tail);

the median of N frames after W warm-up frames, every frame's time (``md_samples_s``,
``es_samples_s``), plus the payload and wire bytes. The result is a JSON *device profile*
(``testbed.devices``): a host of a scenario can replay it (``compute: FILE``, so a lab profiles
its Pi once and then sweeps networks on a laptop), and ``analysis.profiles.read_profile`` gives
the analytic model this machine's full-model times and the head/tail shares of each split.

The MD and ES parts are timed on the same host, one after the other: a profile describes one
machine. To model an MD-ES pair, profile each machine and combine them (``analysis.analytic``).
"""

from __future__ import annotations

import logging
import socket
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from testbed import devices, wire
from testbed.configs import Configuration, table5
from testbed.images import Frame, load_images
from testbed.machine import cpu_model, usable_cores
from testbed.models import catalog
from testbed.models.split import build_split
from testbed.payloads import es_input, es_predict, md_local, md_message
from testbed.resultdir import now_utc, software_versions, write_json

log = logging.getLogger(__name__)

PROFILE_KIND = devices.PROFILE_KIND
PROFILE_SCHEMA = devices.PROFILE_SCHEMA
DEFAULT_MODELS = ("densenet201", "mobilenet_v2")
MAX_MESSAGE_BYTES = 1 << 30


def configurations(model: str, n_ch: int = 12, names: list[str] | None = None) -> list[Configuration]:
    """The Table 5 configurations of ``model`` that can run (all five with a student head; else
    md-only, es-only and org-split2), optionally only those in ``names``."""
    table = table5(model, n_ch)
    if names:
        unknown = [n for n in names if n not in table]
        if unknown:
            raise ValueError(f"unknown configuration(s) {unknown}; choose from {list(table)}")
    return [c for c in table.values() if not c.problems() and (not names or c.name in names)]


def _median_s(fn: Callable[[int, Any], Any], frames: list[Frame], n: int, warmup: int) -> tuple[float, list[float]]:
    samples = []
    for i in range(warmup + n):
        image = frames[i % len(frames)].image
        t0 = time.perf_counter_ns()
        fn(i, image)
        if i >= warmup:
            samples.append((time.perf_counter_ns() - t0) * 1e-9)
    return statistics.median(samples), samples


def time_configuration(config: Configuration, frames: list[Frame], n: int, warmup: int,
                       seed: int = 0) -> dict[str, Any]:
    """MD and ES seconds (median of ``n`` after ``warmup``) and bytes of one configuration."""
    model = build_split(config, side="both", seed=seed)
    out: dict[str, Any] = {"mode": config.mode, "config": config.to_dict(),
                           "weights": model.weights.source}
    if config.mode == "LC":
        md, samples = _median_s(lambda i, im: md_local(model, im), frames, n, warmup)
        return out | {"md_s": md, "es_s": None, "payload_bytes": 0, "wire_bytes": 0,
                      "md_samples_s": samples, "es_samples_s": []}
    messages: dict[int, wire.Message] = {}

    def md_part(i, image):
        messages[i] = md_message(config, model, i, image)

    md, md_samples = _median_s(md_part, frames, n, warmup)
    es, es_samples = _median_s(
        lambda i, _: es_predict(model, es_input(config, model, messages[i], MAX_MESSAGE_BYTES)),
        frames, n, warmup)
    measured = [messages[i] for i in range(warmup, warmup + n)]
    return out | {
        "md_s": md, "es_s": es,
        "payload_bytes": statistics.mean(len(m.payload) for m in measured),
        "wire_bytes": statistics.mean(len(wire.encode(m)) for m in measured),
        "md_samples_s": md_samples, "es_samples_s": es_samples,
    }


def profile_host(models: list[str], n: int = 10, warmup: int = 2, threads: int = 1,
                 images: str = "builtin", configs: list[str] | None = None, n_ch: int = 12,
                 seed: int = 0, on_config: Callable[[str, Configuration], None] | None = None) -> dict[str, Any]:
    """The profile of this host as a JSON-ready dict (see the module docstring)."""
    unknown = [m for m in models if m not in catalog.MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(catalog.MODELS)}")
    if n < 1 or warmup < 0:
        raise ValueError("frames must be >= 1 and warmup >= 0")
    torch.set_num_threads(threads)
    pictures = load_images(images)
    host = socket.gethostname()
    created = now_utc()
    data: dict[str, Any] = {
        "kind": PROFILE_KIND, "schema": PROFILE_SCHEMA, "created": created,
        "source": (f"measured by `testbed profile` on {host} ({cpu_model()}, {threads} torch "
                   f"thread{'s' if threads > 1 else ''}) at {created}: every frame's time, "
                   f"{n} frames after {warmup} warm-up, images {images!r}"),
        "device": {"key": f"host-{host}", "name": f"{host} ({threads} thread{'s' if threads > 1 else ''})",
                   "hardware": cpu_model(), "threads": threads, "cores": usable_cores()},
        "frames": n, "warmup": warmup, "images": images, "seed": seed,
        "versions": software_versions(),
        "note": ("MD and ES parts timed on this host, one after the other; medians in seconds. "
                 "md-only md_s is the full model (with preprocessing); es-only es_s is JPEG "
                 "decoding plus the full model."),
        "models": {},
    }
    for model in models:
        entry: dict[str, Any] = {"configs": {}}
        for config in configurations(model, n_ch, configs):
            if on_config:
                on_config(model, config)
            entry["configs"][config.name] = time_configuration(config, pictures, n, warmup, seed)
        data["models"][model] = entry
    return data


def write_profile(data: dict[str, Any], path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, data)
    return path


def summary_lines(data: dict[str, Any]) -> list[str]:
    """A short table of a profile for the terminal (milliseconds)."""
    lines = [f"{'model':13s} {'configuration':17s} {'mode':4s} {'MD ms':>9s} {'ES ms':>9s} "
             f"{'wire B':>9s} {'head share':>10s} {'tail share':>10s}"]
    for model, entry in data["models"].items():
        cfgs = entry["configs"]
        full = (cfgs.get("md-only") or {}).get("md_s")
        ec_es = (cfgs.get("es-only") or {}).get("es_s")
        for name, p in cfgs.items():
            es = "-" if p["es_s"] is None else f"{p['es_s'] * 1e3:9.1f}"
            head = f"{p['md_s'] / full:10.1%}" if full and p["mode"] == "SC" else f"{'-':>10s}"
            tail = f"{p['es_s'] / ec_es:10.1%}" if ec_es and p["mode"] == "SC" else f"{'-':>10s}"
            lines.append(f"{model:13s} {name:17s} {p['mode']:4s} {p['md_s'] * 1e3:9.1f} {es:>9s} "
                         f"{p['wire_bytes']:9.0f} {head} {tail}")
    return lines
