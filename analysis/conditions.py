"""The conditions of a run, read from its manifest: what a reader must know to trust a number.

Pure functions from a manifest (and, for weights, the folder's logs) to small tables of
``(item, value)`` rows: the link and how it was shaped (what was applied and what was NOT),
TCP settings, segmentation offloads, CPU caps and torch threads, versions, and the weights the
models carried. Missing keys give "not recorded", never an error: old or partial manifests
still get a report.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from analysis.compute import compute_rows

NOT_RECORDED = "not recorded"

Rows = list[tuple[str, str]]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) or "-"
    return str(value)


def run_rows(manifest: dict[str, Any]) -> Rows:
    scenario = manifest.get("scenario") or {}
    rows = [("run id", _fmt(manifest.get("run_id"))),
            ("kind", "loopback demo" if manifest.get("kind") == "loopback-demo"
             else _fmt((manifest.get("lab") or {}).get("kind", scenario.get("lab")))),
            ("status", _fmt(manifest.get("status"))),
            ("started", _fmt(manifest.get("started"))), ("finished", _fmt(manifest.get("finished")))]
    if scenario:
        rows += [("scenario", _fmt(scenario.get("name"))),
                 ("description", _fmt(scenario.get("description"))),
                 ("frames per step (+ warm-up)", f"{scenario.get('frames')} (+{scenario.get('warmup')})"),
                 ("loads asked [Mbit/s]", _fmt((scenario.get("sweep") or {}).get("loads_mbit"))),
                 ("repetitions", _fmt((scenario.get("sweep") or {}).get("repetitions"))),
                 ("capture rate", _fmt(scenario.get("capture_rate_hz") or "back-to-back (next frame on reply)")),
                 ("images", _fmt(scenario.get("images"))), ("seed", _fmt(scenario.get("seed")))]
    else:
        rows += [("frames per configuration (+ warm-up)",
                  f"{manifest.get('frames')} (+{manifest.get('warmup')})"),
                 ("images", _fmt(manifest.get("images"))),
                 ("torch threads per process", _fmt(manifest.get("threads_per_process")))]
    return rows


def link_rows(manifest: dict[str, Any]) -> Rows:
    """The link asked for, then per shaped direction what was applied and what was NOT."""
    scenario = manifest.get("scenario") or {}
    link = scenario.get("link")
    if not link:
        return [("link", _fmt(manifest.get("link", NOT_RECORDED)))]
    rows = [("link asked", f"{link.get('kind')} preset {link.get('preset')}: rate "
                           f"{link.get('rate_mbit')} Mbit/s, delay {link.get('delay_ms')} ms, jitter "
                           f"{link.get('jitter_ms')} ms, loss {link.get('loss_pct')}%, queue "
                           f"{link.get('queue_packets')} packets")]
    shaping = (manifest.get("lab") or {}).get("shaping")
    if shaping is None:
        return rows + [("shaping", NOT_RECORDED)]
    for s in shaping:
        label = s.get("label", "?")
        rows.append((f"{label}: backend", f"{s.get('backend')} on {s.get('interface')} "
                                          f"(feeds {_fmt(s.get('feeds'))})"))
        rows.append((f"{label}: applied", _fmt(s.get("applied"))))
        not_applied = s.get("not_applied") or {}
        rows.append((f"{label}: NOT applied", _fmt(not_applied) if not_applied else "nothing: all applied"))
        if s.get("expected"):
            rows.append((f"{label}: expected", _fmt(s["expected"])))
        for note in s.get("notes") or []:
            rows.append((f"{label}: note", note))
    return rows


def not_applied(manifest: dict[str, Any]) -> list[str]:
    """Every shaping parameter that was asked for but not applied, as ``direction: what: why``."""
    out = []
    for s in (manifest.get("lab") or {}).get("shaping") or []:
        for key, why in (s.get("not_applied") or {}).items():
            out.append(f"{s.get('label', '?')}: {key}: {why}")
    return out


def host_rows(manifest: dict[str, Any]) -> Rows:
    """Per host: CPU cap (asked and applied), torch threads, TCP sysctls, offloads."""
    hosts = (manifest.get("lab") or {}).get("hosts") or {}
    caps = manifest.get("cpu_caps") or {}
    threads = manifest.get("torch_threads") or {}
    rows: Rows = []
    for name in sorted(set(hosts) | set(caps) | set(threads)):
        h = hosts.get(name) or {}
        cpu = h.get("cpu")
        applied = ("no cap" if caps.get(name) is None and not cpu else
                   f"{cpu.get('setting')} ({cpu.get('backend')})" if isinstance(cpu, dict) and cpu.get("applied")
                   else f"NOT applied: {_fmt(cpu)}")
        rows.append((f"{name}: CPU", f"asked {caps.get(name) if caps.get(name) is not None else 'no cap'}, "
                                     f"{applied}; torch threads {threads.get(name, '-')}"))
        sysctls = h.get("sysctls") or {}
        tcp = {k.rsplit(".", 1)[-1]: v for k, v in sysctls.items() if "tcp" in k}
        if tcp:
            rows.append((f"{name}: TCP", _fmt(tcp)))
        offloads = h.get("offloads") or {}
        on = [f"{ifc}: {k}" for ifc, o in offloads.items() for k in ("tso", "gso", "gro") if o.get(k)]
        if offloads:
            rows.append((f"{name}: offloads", "TSO/GSO/GRO off on " + ", ".join(offloads)
                         if not on else "STILL ON: " + ", ".join(on)))
    isolation = (manifest.get("lab") or {}).get("cpu_isolation")
    if isolation:  # testbed.lab.cpuset: full, partial or none, and what shares which CPU
        level = isolation.get("level") or ("full" if isolation.get("applied") else "none")
        rows.append(("CPU isolation", f"{level}, "
                     f"{'applied' if isolation.get('applied') else 'not applied'}: "
                     f"{isolation.get('reason')}"))
    return rows or [("hosts", NOT_RECORDED)]


def version_rows(manifest: dict[str, Any]) -> Rows:
    versions = manifest.get("versions") or {}
    return [(k, _fmt(v)) for k, v in versions.items()] or [("versions", NOT_RECORDED)]


def capability_rows(manifest: dict[str, Any]) -> Rows:
    caps = (manifest.get("lab") or {}).get("capabilities") or {}
    if not caps:
        return []
    missing = [k for k, v in caps.items() if not v]
    return [("available", ", ".join(k for k, v in caps.items() if v)),
            ("missing", ", ".join(missing) or "-")]


_WEIGHTS = re.compile(r"built (teacher|student) (\S+)(?: N_ch=\d+)? with (\S+) weights")


def weights_rows(manifest: dict[str, Any], folder: Path | str | None = None) -> Rows:
    """Which weights the models carried: from the logs when kept, else the configurations'."""
    seen: dict[str, set[str]] = {}
    if folder is not None:
        for path in sorted((Path(folder) / "logs").glob("*")):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            for kind, model, source in _WEIGHTS.findall(text):
                seen.setdefault(f"{kind} {model}", set()).add(source)
    if seen:
        return [(k, ", ".join(sorted(v)) + " (from the logs)") for k, v in sorted(seen.items())]
    configs = (manifest.get("scenario") or {}).get("configurations") or manifest.get("configurations") or []
    rows = []
    for c in configs:
        w = c.get("weights")
        rows.append((c.get("name", "?"), w if w else
                     "default: torchvision's pretrained file if cached on the host, else random "
                     "(seeded); the manifest does not say which (logs not kept)"))
    return rows or [("weights", NOT_RECORDED)]


def sections(manifest: dict[str, Any], folder: Path | str | None = None) -> dict[str, Rows]:
    """Every conditions table of one run, by title."""
    out = {"Run": run_rows(manifest), "Link and shaping": link_rows(manifest),
           "Hosts: CPU caps, threads, TCP, offloads": host_rows(manifest),
           "Weights": weights_rows(manifest, folder), "Versions": version_rows(manifest)}
    compute = compute_rows(manifest)
    if compute:
        out["Compute: real or replayed device profiles"] = compute
    caps = capability_rows(manifest)
    if caps:
        out["Capabilities of the machine"] = caps
    return out
