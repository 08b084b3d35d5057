"""A step's parsed comm breakdown kept next to its captures (``captures/<step>/breakdown.json``).

Reading a full sweep's captures with scapy takes about a minute; every ``testbed report`` would
redo it. The first breakdown of a step writes what it found (every frame's parts, or the error
that left the step out, and any packet timeline drawn from it) to a JSON file (never pickle)
together with the inputs it was computed from:

- ``analysis``: a digest of the code that reads and splits (``pcap_read``, ``comm_parts``, this
  module, ``testbed.records``) and scapy's version: changing any of them recomputes;
- ``pcaps``: the SHA-256 of each capture file, ``records``: of the step's records,
  ``step_record``: of the step's manifest entries the split reads (captures, clock), and the
  link's nominal rate and the port.

A later read uses the file only when every input matches; a stale file (which input changed is
logged), a corrupt one (not JSON, wrong shape: logged with the reason) or an unwritable folder
(logged) only costs the recomputation.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import types
import typing
from pathlib import Path
from typing import Any

from testbed import records

log = logging.getLogger(__name__)

CACHE_FILE = "breakdown.json"
_HERE = Path(__file__).resolve().parent
_CODE = (_HERE / "pcap_read.py", _HERE / "comm_parts.py", _HERE / "comm_cache.py",
         Path(records.__file__))
"""The code a cached breakdown (frames' parts, timelines) comes from."""


class CacheError(ValueError):
    """A cache file's content is not what this module writes (the message says where)."""


@functools.lru_cache(maxsize=1)
def analysis_version() -> str:
    """Digest of the breakdown's code and scapy's version (changes with either)."""
    import scapy

    h = hashlib.sha256(f"scapy {scapy.VERSION}".encode())
    for path in _CODE:
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return "missing"
    return h.hexdigest()


def step_inputs(folder: Path, files: dict[str, str], records_file: Path,
                record: dict[str, Any], link: dict[str, Any], port: int) -> dict[str, Any]:
    """What a step's breakdown is computed from: ``files`` the capture files (point -> path in
    ``folder``), ``records_file`` the step's records, ``record`` the manifest entries read."""
    return {
        "analysis": analysis_version(),
        "port": port,
        "link": link,
        "step_record": hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest(),
        "records": _file_digest(records_file),
        "pcaps": {point: _file_digest(folder / rel) for point, rel in sorted(files.items())},
    }


def cache_path(folder: Path, step: str) -> Path:
    return Path(folder) / "captures" / step / CACHE_FILE


def _changed(old: Any, new: dict[str, Any]) -> list[str]:
    if not isinstance(old, dict):
        return ["all"]
    out = []
    for key in sorted(set(old) | set(new)):
        if key == "pcaps" and isinstance(old.get(key), dict):
            points = set(old[key]) | set(new[key])
            out += [f"pcap {p}" for p in sorted(points) if old[key].get(p) != new[key].get(p)]
        elif old.get(key) != new.get(key):
            out.append(key)
    return out


def read(folder: Path, step: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """The step's cached breakdown when its inputs match ``inputs``; else ``None`` (a stale or
    corrupt file is logged)."""
    path = cache_path(folder, step)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("breakdown cache %s unreadable (%s): recomputed", path, exc)
        return None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise CacheError(f"expected a JSON object, got {type(data).__name__}")
        if not isinstance(data.get("frames"), list) and not isinstance(data.get("error"), str):
            raise CacheError("neither 'frames' (a list) nor 'error' (a string)")
        if not isinstance(data.get("timelines", {}), dict):
            raise CacheError("'timelines' is not an object")
    except (ValueError, CacheError) as exc:
        log.warning("breakdown cache %s is corrupt (%s): recomputed", path, exc)
        return None
    changed = _changed(data.get("inputs"), inputs)
    if changed:
        log.info("breakdown cache %s is stale (%s changed): recomputed", path, ", ".join(changed))
        return None
    return data


def write(folder: Path, step: str, inputs: dict[str, Any], payload: dict[str, Any]) -> None:
    """Replace the step's cache atomically with ``payload`` (``frames`` or ``error``, optional
    ``timelines``) and ``inputs``; a folder that cannot be written is logged."""
    path = cache_path(folder, step)
    if not path.parent.is_dir():
        return  # the step kept no captures folder: nothing to sit next to
    tmp = path.with_name(f".{CACHE_FILE}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"inputs": inputs, **payload}))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("breakdown cache %s not written (%s)", path, exc)
        tmp.unlink(missing_ok=True)


def _typed(value: Any, tp: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            try:
                return _typed(value, arm, where)
            except CacheError:
                continue
        raise CacheError(f"{where}: expected {tp}, got {value!r:.40}")
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool or tp is str:
        if isinstance(value, tp):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif origin is list and isinstance(value, list):
        return [_typed(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    elif origin is tuple and isinstance(value, list) and len(value) == len(args):
        return tuple(_typed(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    raise CacheError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r:.40}")


def load_dataclass(cls: type, raw: Any, where: str) -> Any:
    """A ``cls`` (dataclass of plain fields) from its JSON form, every field's type checked;
    ``CacheError`` names the field that is missing or wrong."""
    if not isinstance(raw, dict):
        raise CacheError(f"{where}: expected an object, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            raise CacheError(f"{where}.{f.name}: missing")
        kwargs[f.name] = _typed(raw[f.name], hints[f.name], f"{where}.{f.name}")
    return cls(**kwargs)
