"""Hardware profiles and payload sizes: the inputs of the analytic model (``analysis.analytic``).

A *device profile* gives the full-model inference time of each model on one device, and, when
it was measured by ``testbed profile``, the MD part (head) and ES part (tail) of every Table 5
configuration on that device. The paper's Table 1 devices (Raspberry Pi 3B+, Jetson TX2, desktop
with an RTX 2080 Ti) are built in; measured profiles are JSON files.

Head and tail times of a split configuration on a device that was not measured are *scaled*:
``head = head share x full-model time on the MD``, ``tail = tail share x full-model time on the
ES``, where the shares come from Table 5 of the paper (DenseNet-201) or from a measured profile
of another machine. :class:`SplitShares` carries where its numbers come from, so that figures can
say so.

Payload sizes: Table 4 of the paper, or measured (bytes on the wire) from a profile or from a
result folder. Pure functions, no torch needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis import paper

PROFILE_KIND = "testbed-profile"
PROFILE_SCHEMA = 2
"""2 added ``source`` and per-part distributions (``testbed.devices``); 1 still reads."""


class ProfileError(ValueError):
    """A profile file that cannot be used, with the reason."""


@dataclass(frozen=True)
class Part:
    """One configuration measured on one host: MD and ES seconds (median), bytes sent."""

    mode: str
    md_s: float | None
    es_s: float | None
    payload_bytes: float = 0.0
    wire_bytes: float = 0.0


@dataclass(frozen=True)
class DeviceProfile:
    key: str
    name: str
    full_s: dict[str, float]
    source: str
    hardware: str = ""
    measured: bool = False
    parts: dict[str, dict[str, Part]] = field(default_factory=dict)

    def full(self, model: str) -> float:
        try:
            return self.full_s[model]
        except KeyError:
            raise ProfileError(f"profile {self.key!r} has no full-model time of {model!r} "
                               f"(it has {', '.join(self.full_s) or 'none'})") from None


def paper_devices() -> dict[str, DeviceProfile]:
    """The three devices of the paper's Table 1, by key (``rpi3b+``, ``jetson-tx2``,
    ``desktop-rtx2080ti``)."""
    return {
        key: DeviceProfile(key=key, name=d["name"], full_s=dict(d["full_s"]),
                           source=paper.TABLE1_SOURCE, hardware=d["hardware"])
        for key, d in paper.TABLE1_DEVICES.items()
    }


def read_profile(path: Path | str) -> DeviceProfile:
    """A device profile from JSON: a ``testbed profile`` file, or a hand-written
    ``{"key", "name", "full_s": {model: seconds}, "source"}`` (e.g. a lab device timed elsewhere).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such profile file (make one with `testbed profile --out {path}`)") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{path}: not valid JSON ({exc})") from exc
    return profile_from_dict(data, str(path))


def profile_from_dict(data: dict[str, Any], origin: str = "profile") -> DeviceProfile:
    if data.get("kind") == PROFILE_KIND:
        if int(data.get("schema", 1)) > PROFILE_SCHEMA:
            raise ProfileError(f"{origin}: profile schema {data['schema']} is newer than this "
                               f"analysis ({PROFILE_SCHEMA}); update the testbed")
        device = data.get("device") or {}
        parts: dict[str, dict[str, Part]] = {}
        full: dict[str, float] = {}
        for model, m in (data.get("models") or {}).items():
            parts[model] = {name: Part(mode=p["mode"], md_s=p.get("md_s"), es_s=p.get("es_s"),
                                       payload_bytes=float(p.get("payload_bytes") or 0),
                                       wire_bytes=float(p.get("wire_bytes") or 0))
                            for name, p in (m.get("configs") or {}).items()}
            lc = parts[model].get("md-only")
            if lc is not None and lc.md_s:
                full[model] = float(lc.md_s)
        threads = device.get("threads")
        return DeviceProfile(
            key=device.get("key", "this-host"), name=device.get("name", "this host"),
            full_s=full, hardware=device.get("hardware", ""), measured=True, parts=parts,
            source=data.get("source") or (f"measured by `testbed profile` on {device.get('name', 'this host')} "
                    f"({data.get('created', '?')}, median of {data.get('frames', '?')} frames, "
                    f"{threads} torch thread(s))"),
        )
    if "full_s" in data:
        return DeviceProfile(key=data.get("key", "device"), name=data.get("name", "device"),
                             full_s={k: float(v) for k, v in data["full_s"].items()},
                             source=data.get("source", origin), hardware=data.get("hardware", ""))
    raise ProfileError(f"{origin}: neither a `testbed profile` file (kind {PROFILE_KIND!r}) nor a "
                       f"device profile with 'full_s'")


# ---------------------------------------------------------------------- split shares


@dataclass(frozen=True)
class SplitShares:
    """Head and tail time of a split configuration as fractions of the full model's time.

    ``head``: MD time of the split configuration / MD time of the full model (same MD);
    ``tail``: ES time of the split configuration / ES time of edge-only (same ES).
    """

    head: float
    tail: float
    source: str


def shares_from_table5(config: str = "mimic-bottleneck") -> SplitShares:
    head, tail = paper.table5_shares(config)
    return SplitShares(head, tail, f"Table 5 of the paper (DenseNet-201 {config}: MD "
                                   f"{head:.1%} of MD-only, ES {tail:.1%} of ES-only)")


def shares_from_profile(profile: DeviceProfile, model: str,
                        config: str = "mimic-bottleneck") -> SplitShares:
    parts = profile.parts.get(model) or {}
    needed = {"md-only": "md_s", "es-only": "es_s", config: "md_s"}
    for name, attr in needed.items():
        if name not in parts or not getattr(parts[name], attr):
            raise ProfileError(f"profile {profile.key!r}: no measured {name} of {model} "
                               f"(run `testbed profile --models {model}`)")
    p = parts[config]
    head = p.md_s / parts["md-only"].md_s
    tail = (p.es_s or 0.0) / parts["es-only"].es_s
    return SplitShares(head, tail, f"measured on {profile.name} ({model} {config}: MD {head:.1%} "
                                   f"of MD-only, ES {tail:.1%} of ES-only)")


# ---------------------------------------------------------------------- payloads


@dataclass(frozen=True)
class Payloads:
    """Bytes sent per frame: the JPEG (EC) and the split tensor (SC)."""

    jpeg_bytes: float
    split_bytes: float
    source: str


def paper_payloads(model: str) -> Payloads:
    """Table 4 (KB = 1024 B); models not in Table 4 use the 224 px JPEG and no split tensor."""
    kb = paper.TABLE4_KB.get(model)
    if kb is None:
        return Payloads(paper.JPEG_224_KB * paper.KB, float("nan"), paper.TABLE4_SOURCE)
    return Payloads(kb["jpeg"] * paper.KB, kb["bottleneck"] * paper.KB, paper.TABLE4_SOURCE)


def profile_payloads(profile: DeviceProfile, model: str, config: str = "mimic-bottleneck",
                     wire: bool = True) -> Payloads:
    """Mean bytes per frame that ``testbed profile`` measured on a host: EC's (es-only) and
    ``config``'s; public API, the counterpart of :func:`result_payloads` for profile files."""
    parts = profile.parts.get(model) or {}
    if "es-only" not in parts or config not in parts:
        raise ProfileError(f"profile {profile.key!r}: no measured es-only and {config} of {model}")
    attr = "wire_bytes" if wire else "payload_bytes"
    return Payloads(getattr(parts["es-only"], attr), getattr(parts[config], attr),
                    f"measured by `testbed profile` ({'bytes on the wire' if wire else 'payload bytes'}, "
                    f"builtin images)")


def result_payloads(frames, ec_config: str = "es-only", sc_config: str = "mimic-bottleneck",
                    wire: bool = True, run: str | None = None) -> Payloads:
    """Mean bytes per frame of a loaded result (``analysis.load.Results.frames``)."""
    f = frames if run is None else frames[frames["run"] == run]
    col = "wire_bytes" if wire else "payload_bytes"
    means = {}
    for name in (ec_config, sc_config):
        sel = f.loc[f["config"] == name, col]
        if sel.empty:
            raise ProfileError(f"result has no frames of configuration {name!r} "
                               f"(it has {', '.join(sorted(set(f['config'])))})")
        means[name] = float(np.mean(sel))
    return Payloads(means[ec_config], means[sc_config],
                    f"measured in a run ({'bytes on the wire' if wire else 'payload bytes'}, "
                    f"{ec_config} / {sc_config})")
