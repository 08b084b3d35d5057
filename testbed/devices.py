"""Device profiles: the processing times a host follows instead of its own CPU's.

A host's *compute model* is ``real`` (its processing takes what this machine's CPU takes, the
default) or a *device profile*: per model and per Table 5 configuration, the distribution of the
MD's time (capture -> message ready) and of the ES's time (message received -> reply ready).
The bytes on the wire and the predictions stay real; only the time on the critical path is the
profile's (``testbed.replay``).

Profile files are JSON, the layout ``testbed profile`` writes (kind ``testbed-profile``)::

    {"kind": "testbed-profile", "schema": 2,
     "source": "where the numbers come from (required)",
     "device": {"key": "...", "name": "...", "hardware": "..."},
     "models": {"densenet201": {"configs": {
         "mimic-bottleneck": {"md_s": 0.062, "md_dist": {"distribution": "normal>0",
                                                         "mean_s": 0.062, "std_s": 0.003},
                              "es_s": 0.0225, "es_samples_s": [0.0223, 0.0228, ...]}}}}}

Keying: model name (``testbed.models.catalog``) -> Table 5 configuration name (``md-only``,
``es-only``, ``org-split2``, ``mimic-split2``, ``mimic-bottleneck``) -> the MD part (``md_*``:
the whole model for md-only, resize + JPEG encode for es-only, the head + quantization for the
splits) and the ES part (``es_*``: JPEG decode + the whole model for es-only, the tail for the
splits; md-only has none). A part is given either by measured samples (``<side>_samples_s``,
drawn uniformly with replacement) or by a stated distribution (``<side>_dist``):

- ``normal>0``: normal with ``mean_s`` and ``std_s``, conditioned on > 0 (for ``mean ± std``
  figures whose std is small next to the mean, as in the paper's Table 5);
- ``lognormal``: lognormal with that mean and std (for skewed times);
- ``fixed``: always ``mean_s`` (``std_s`` 0 or absent).

``<side>_s`` is the part's central time (a median or mean, what ``analysis.profiles`` reads) and
is required with either. A host uses the side of its role: an MD host the ``md`` parts, an ES
host the ``es`` parts, so one profile may describe both sides of a device, or one.

Shipped profiles live in ``testbed/data/devices/<name>.json`` (``shipped_names()``): the
paper's WiFi-experiment MD and ES (Table 5), and the Table 1 platforms with head and tail
times derived from this project's measured head/tail shares (``scripts/make_device_profiles.py``
writes them; each says how in ``source`` and ``derivation``).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

from testbed.checks import BAD, Checker, join, ok
from testbed.configs import TABLE5_NAMES
from testbed.models import catalog

REAL = "real"
"""The compute model of a host that processes for real (no profile)."""
PROFILE_KIND = "testbed-profile"
PROFILE_SCHEMA = 2
SIDES = ("md", "es")
DISTRIBUTIONS = ("normal>0", "lognormal", "fixed")
DATA_DIR = Path(__file__).parent / "data" / "devices"

TOP_KEYS = ("kind", "schema", "source", "created", "device", "frames", "warmup", "images", "seed",
            "versions", "note", "derivation", "models")
CONFIG_KEYS = ("mode", "config", "weights", "payload_bytes", "wire_bytes",
               *(f"{side}{suffix}" for side in SIDES for suffix in ("_s", "_samples_s", "_dist")))
DIST_KEYS = ("distribution", "mean_s", "std_s")


class ProfileError(ValueError):
    """A profile that cannot be used; the message lists every problem (file: key path: what)."""


@dataclass(frozen=True)
class Distribution:
    """The processing time of one part, in seconds."""

    kind: str
    """``samples`` (empirical) or one of ``DISTRIBUTIONS``."""
    mean_s: float
    std_s: float = 0.0
    samples_s: tuple[float, ...] = ()
    """Measured times, kept sorted (:meth:`quantile` indexes them)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples_s", tuple(sorted(self.samples_s)))

    def quantile(self, u: float) -> float:
        """The time at probability ``u`` in [0, 1) (the inverse CDF): a uniform ``u`` gives a
        draw from the distribution (``samples``: one of them, each with probability 1/n)."""
        u = min(max(u, 0.0), math.nextafter(1.0, 0.0))
        if self.kind == "samples":
            return self.samples_s[int(u * len(self.samples_s))]
        if self.kind == "fixed" or self.std_s == 0:
            return self.mean_s
        tiny = 1e-12  # the inverse CDF is finite strictly inside (0, 1)
        if self.kind == "lognormal":
            sigma2 = math.log1p((self.std_s / self.mean_s) ** 2)
            z = NormalDist().inv_cdf(min(max(u, tiny), 1 - tiny))
            return math.exp(math.log(self.mean_s) - sigma2 / 2 + math.sqrt(sigma2) * z)
        normal = NormalDist(self.mean_s, self.std_s)  # normal>0: the normal conditioned on > 0
        below = normal.cdf(0.0)
        return max(normal.inv_cdf(min(max(below + u * (1 - below), tiny), 1 - tiny)), 0.0)

    def describe(self) -> str:
        if self.kind == "samples":
            return f"{len(self.samples_s)} measured samples (median {self.mean_s * 1e3:.1f} ms)"
        if self.kind == "fixed":
            return f"fixed {self.mean_s * 1e3:.1f} ms"
        return f"{self.kind} {self.mean_s * 1e3:.1f} ± {self.std_s * 1e3:.1f} ms"


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    """The shipped name, or the file's path."""
    source: str
    parts: dict[tuple[str, str, str], Distribution]
    """(model, configuration, side) -> processing time."""
    content: dict[str, Any]
    """The profile as read (what a run's manifest keeps)."""

    def part(self, model: str, config: str, side: str) -> Distribution:
        try:
            return self.parts[(model, config, side)]
        except KeyError:
            have = sorted({c for (m, c, s) in self.parts if m == model and s == side})
            raise ProfileError(
                f"{self.name}: no {side.upper()} time of {model} {config} "
                f"(it has {side.upper()} times of {', '.join(have) or 'no configuration of it'})"
            ) from None


def shipped_names() -> list[str]:
    return sorted(p.stem for p in DATA_DIR.glob("*.json"))


def profile_path(ref: str, base: Path | None = None) -> Path:
    """The file of a profile reference: a shipped name, or a path (relative to ``base``)."""
    if "/" not in ref and not ref.endswith(".json"):
        return DATA_DIR / f"{ref}.json"
    path = Path(ref).expanduser()
    return path if path.is_absolute() or base is None else base / path


def load_profile(ref: str, base: Path | None = None) -> DeviceProfile:
    """A checked profile by shipped name or path; ``ProfileError`` listing every problem."""
    ck = Checker(str(profile_path(ref, base)))
    profile = read_profile(ck, ref, base)
    if profile is None:
        raise ProfileError("\n".join(map(str, ck.problems)))
    return profile


def read_profile(ck: Checker, ref: str, base: Path | None = None) -> DeviceProfile | None:
    """Read and check the profile ``ref`` into ``ck`` (whose source should be its path)."""
    path = profile_path(ref, base)
    if not path.is_file():
        if path.parent == DATA_DIR:
            ck.error("", f"no shipped device profile {ref!r}; shipped: "
                         f"{', '.join(shipped_names())}, or give a profile file's path")
        else:
            ck.error("", "no such profile file (make one with `testbed profile --out FILE`)")
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        ck.error("", f"not a readable JSON profile ({exc})")
        return None
    return check_profile(ck, data, ref if path.parent == DATA_DIR else str(path.resolve()))


def check_profile(ck: Checker, data: Any, name: str) -> DeviceProfile | None:
    """The profile in ``data`` (parsed JSON), every problem recorded in ``ck``."""
    before = len(ck.problems)
    top = ck.mapping(data, "", TOP_KEYS, required=("kind", "source", "models"), what="a profile")
    if top is None:
        return None
    ck.get(top, "kind", "", ck.string, choices=(PROFILE_KIND,))
    ck.get(top, "schema", "", ck.integer, minimum=1, maximum=PROFILE_SCHEMA)
    source = ck.get(top, "source", "", ck.string,
                    what="a non-empty description of the numbers' origin")
    parts: dict[tuple[str, str, str], Distribution] = {}
    models = ck.mapping(top.get("models"), "models", list(catalog.MODELS), what="models") \
        if top.get("models") is not None else None
    for model, entry in (models or {}).items():
        mpath = join("models", model)
        m = ck.mapping(entry, mpath, ("configs",), required=("configs",))
        if m is None or m.get("configs") is None:
            continue
        configs = ck.mapping(m["configs"], join(mpath, "configs"), TABLE5_NAMES,
                             what="Table 5 configurations")
        for config, raw in (configs or {}).items():
            cpath = join(join(mpath, "configs"), config)
            c = ck.mapping(raw, cpath, CONFIG_KEYS)
            if c is None:
                continue
            found = 0
            for side in SIDES:
                dist = _check_part(ck, c, cpath, side, config)
                if dist is not None and dist is not BAD:
                    parts[(model, config, side)] = dist
                found += dist is not None
            if not found:
                ck.error(cpath, "no times: expected md_samples_s or md_dist (the MD part) "
                                "and/or es_samples_s or es_dist (the ES part)")
    if len(ck.problems) > before or not ok(source):
        return None
    return DeviceProfile(name, source, parts, data)


def _check_part(ck: Checker, c: dict[str, Any], path: str, side: str, config: str) -> Any:
    """The ``side`` part of one configuration: a Distribution, ``None`` if absent, or BAD."""
    central, samples, dist = (c.get(f"{side}{suffix}") for suffix in ("_s", "_samples_s", "_dist"))
    if samples in (None, []) and dist is None:
        if central is not None:
            return ck.error(join(path, f"{side}_s"), f"a central time needs its distribution: "
                                                     f"add {side}_samples_s or {side}_dist")
        return None
    if side == "es" and config == "md-only":
        return ck.error(join(path, "es_dist" if dist is not None else "es_samples_s"),
                        "md-only runs on the MD alone: it has no ES part")
    mean = ck.get(c, f"{side}_s", path, ck.number, BAD, minimum=0)
    if mean is BAD and central is None:
        ck.error(join(path, f"{side}_s"), "required key is missing (the part's central time, "
                                          "a median or mean in seconds)")
    if samples not in (None, []):
        spath = join(path, f"{side}_samples_s")
        items = ck.sequence(samples, spath)
        if items is None:
            return BAD
        values = [ck.number(v, join(spath, i), minimum=0) for i, v in enumerate(items)]
        if not ok(mean, *values):
            return BAD
        return Distribution("samples", mean, _std(values), tuple(values))
    dpath = join(path, f"{side}_dist")
    d = ck.mapping(dist, dpath, DIST_KEYS, required=("distribution", "mean_s"))
    if d is None:
        return BAD
    kind = ck.get(d, "distribution", dpath, ck.string, BAD, choices=DISTRIBUTIONS)
    positive = {"above": 0} if kind in ("normal>0", "lognormal") else {"minimum": 0}
    dmean = ck.get(d, "mean_s", dpath, ck.number, BAD, **positive)
    std = ck.get(d, "std_s", dpath, ck.number, 0.0, minimum=0)
    if kind == "fixed" and std not in (0.0, BAD):
        std = ck.error(join(dpath, "std_s"), f"a fixed time has no spread: expected 0 or no "
                                             f"std_s, got {std:g}")
    if not ok(mean, kind, dmean, std):
        return BAD
    return Distribution(kind, dmean, std)


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1))


def check_compute(ck: Checker, value: Any, path: str, base: Path | None) -> Any:
    """A host's ``compute`` key: ``real`` or a profile (shipped name, or a path relative to
    ``base``), the profile checked with its own file as the problems' source. Returns what a
    ``Host`` keeps (``real``, the shipped name, or the file's absolute path), or BAD."""
    ref = ck.string(value, path, what=f"{REAL!r}, a shipped device profile "
                                      f"({', '.join(shipped_names())}) or a profile file's path")
    if ref is BAD or ref == REAL:
        return ref
    file = profile_path(ref, base)
    sub = Checker(str(file))
    if read_profile(sub, ref, base) is None:
        ck.error(path, f"device profile {ref!r} cannot be used (its problems follow)")
        ck.problems.extend(sub.problems)
        return BAD
    return ref if file.parent == DATA_DIR else str(file.resolve())


def check_coverage(ck: Checker, path: str, ref: str, side: str, configurations: Any) -> None:
    """Every configuration a host with profile ``ref`` processes has its ``side`` part (an MD
    processes every configuration, an ES those that are not LC)."""
    profile = load_profile(ref)
    for config in configurations:
        if side == "es" and config.mode == "LC":
            continue
        if (config.model, config.name, side) not in profile.parts:
            ck.error(path, f"{profile.name} has no {side.upper()} time of configuration "
                           f"{config.name!r} ({config.model}); profiles are keyed by model and "
                           f"Table 5 configuration name")


def compute_label(compute: "DeviceProfile | str | None") -> str:
    """What a record says about a side's compute: ``real`` or ``profile:<name>``."""
    if compute is None or compute == REAL:
        return REAL
    return f"profile:{compute.name if isinstance(compute, DeviceProfile) else compute}"


def compute_argument(value: str) -> DeviceProfile | None:
    """``--compute`` of ``testbed head``/``testbed tail``: ``real`` (``None``) or a profile."""
    if value == REAL:
        return None
    try:
        return load_profile(value)
    except ProfileError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def compute_argv(host: Any) -> list[str]:
    """The ``--compute`` arguments of the head or tail on ``host``: its ``compute`` (an emulated
    lab's ``scenario.Host``: ``real``, a shipped name or an absolute path); a real lab's hosts
    (``lab_section.LabHost``) have none and process for real."""
    compute = getattr(host, "compute", REAL)
    return [] if compute == REAL else ["--compute", compute]


def compute_manifest(hosts: Any) -> dict[str, Any]:
    """A run manifest's ``compute``: per host, ``real`` or the profile it replays (reference,
    source and whole content, so a result folder says what its processing times are)."""
    return {host.name: compute_record(getattr(host, "compute", REAL)) for host in hosts}


def compute_record(ref: str) -> dict[str, Any]:
    """One host's entry of a manifest's ``compute``."""
    if ref == REAL:
        return {"model": REAL}
    profile = load_profile(ref)
    return {"model": compute_label(profile), "profile": ref, "source": profile.source,
            "content": profile.content}
