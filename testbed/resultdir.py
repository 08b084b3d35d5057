"""Result folders: ``results/<UTC timestamp>-<name>/`` with a manifest and the frame records.

A result folder describes itself: ``manifest.json`` says what ran, where, with which versions
and weights; ``frames.csv`` holds one ``FrameRecord`` per frame; ``logs/`` keeps every process's
output. Manifests are rewritten atomically so a crash never leaves half a JSON file.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from testbed import __version__
from testbed.records import SCHEMA_VERSION

MANIFEST = "manifest.json"
FRAMES = "frames.csv"


def new_result_dir(root: Path | str, name: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
    path = Path(root) / f"{stamp}-{safe}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path(root) / f"{stamp}-{safe}-{suffix}"
    (path / "logs").mkdir(parents=True)
    return path


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def _tool_version(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else None


def software_versions() -> dict[str, str | None]:
    import torch
    import torchvision

    return {
        "testbed": __version__,
        "schema": str(SCHEMA_VERSION),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "kernel": platform.release(),
        "iperf3": _tool_version(["iperf3", "--version"]),
        "sshd": _tool_version(["ssh", "-V"]),
    }


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

