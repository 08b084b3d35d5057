"""Run records: ``/run/testbed/<runid>.json`` says which process owns a run, so ``testbed clean``
never removes a live run's objects, and which per-run secrets die with the run.

A record holds the owner's pid and start time (:func:`register_run`); the owner is alive while
that pid still names the process that started at that time (:func:`run_owner_alive`).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from testbed.lab import names, procs

RUN_RECORD_DIR = "/run/testbed"


def record_path(run_id: str) -> str:
    return os.path.join(RUN_RECORD_DIR, f"{names.check_run_id(run_id)}.json")


def register_run(run_id: str, kind: str = "lab", extra: dict[str, Any] | None = None) -> str:
    """Write the run record (owner pid + start time) that protects a live run from ``clean()``."""
    os.makedirs(RUN_RECORD_DIR, exist_ok=True)
    pid = os.getpid()
    rec = {
        "run_id": run_id,
        "kind": kind,
        "pid": pid,
        "starttime": procs.starttime(pid),
        "created": time.time(),
        **(extra or {}),
    }
    return write_record(run_id, rec)


def write_record(run_id: str, rec: dict[str, Any]) -> str:
    """Replace the run's record with ``rec`` (atomically)."""
    path = record_path(run_id)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(rec, fh)
    os.replace(tmp, path)
    return path


def remember_private(run_id: str, *paths: str | os.PathLike) -> None:
    """Add per-run secrets (keys...) to the run's record: removing the run deletes them if it
    dies before its own teardown (SIGKILL), so no result folder keeps them."""
    rec = read_run_record(run_id)
    if rec is None:
        raise RuntimeError(f"run {run_id} has no record: register_run() first")
    known = rec.setdefault("private_paths", [])
    known += [os.fspath(p) for p in paths if os.fspath(p) not in known]
    write_record(run_id, rec)


def host_workdir(run_id: str) -> str:
    """The hosts' per-run work folder (an emulated lab's hosts share this machine's /tmp)."""
    return f"/tmp/testbed-{names.check_run_id(run_id)}"


def read_run_record(run_id: str) -> dict[str, Any] | None:
    try:
        with open(record_path(run_id)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def unregister_run(run_id: str) -> None:
    try:
        os.unlink(record_path(run_id))
    except FileNotFoundError:
        pass


def run_owner_alive(run_id: str) -> bool:
    """True if the run's record names a process that is still the same, running process."""
    rec = read_run_record(run_id)
    if not rec or "pid" not in rec:
        return False
    start = procs.starttime(int(rec["pid"]))
    return start is not None and start == rec.get("starttime")


def recorded_runs() -> list[str]:
    try:
        entries = os.listdir(RUN_RECORD_DIR)
    except OSError:
        return []
    out = []
    for e in entries:
        if e.endswith(".json") and names.RUN_ID_RE.match(e[:-5]):
            out.append(e[:-5])
    return sorted(out)
