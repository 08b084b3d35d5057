"""The loopback demo: tail and head as separate processes on 127.0.0.1, no shaping.

It answers "does the split runtime work on this machine, and what do the processing parts
cost here?" before any lab exists: the five Table 5 configurations, one after another, records
in a result folder. Communication over loopback is near zero; the emulated lab adds the link.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from testbed.configs import Configuration
from testbed.devices import REAL, DeviceProfile, compute_record
from testbed.head import HeadSettings, StepContext, run_head
from testbed.images import load_images
from testbed.records import FrameRecord
from testbed.resultdir import FRAMES, MANIFEST, new_result_dir, now_utc, software_versions, write_json

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the tail exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def start_local_tail(port: int, log_path: Path, threads: int, seed: int,
                     compute: DeviceProfile | None = None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "testbed", "tail", "--host", "127.0.0.1", "--port", str(port),
            "--threads", str(threads), "--seed", str(seed),
            *([] if compute is None else ["--compute", compute.name])]
    proc = subprocess.Popen(argv, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port("127.0.0.1", port, timeout=60, proc=proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def stop_process(proc: subprocess.Popen, grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_demo(
    configs: list[Configuration],
    frames: int,
    warmup: int,
    results_root: Path,
    images: str = "builtin",
    threads: int = 1,
    seed: int = 0,
    on_frame: Callable[[FrameRecord], None] | None = None,
    on_config: Callable[[Configuration], None] | None = None,
    md_compute: DeviceProfile | None = None,
    es_compute: DeviceProfile | None = None,
) -> Path:
    """Run every configuration once over loopback; returns the result folder. ``md_compute``,
    ``es_compute``: a device profile the head or the tail replays (``testbed.replay``), or
    ``None`` for real processing."""
    out = new_result_dir(results_root, "loopback-demo")
    run_id = out.name
    manifest = {
        "kind": "loopback-demo",
        "run_id": run_id,
        "started": now_utc(),
        "link": "loopback 127.0.0.1, not shaped",
        "configurations": [c.to_dict() for c in configs],
        "frames": frames,
        "warmup": warmup,
        "images": images,
        "threads_per_process": threads,
        "seed": seed,
        "compute": {side: compute_record(p.name if p else REAL)
                    for side, p in (("md", md_compute), ("es", es_compute))},
        "versions": software_versions(),
        "status": {},
    }
    write_json(out / MANIFEST, manifest)
    port = free_port()
    tail = start_local_tail(port, out / "logs" / "tail.log", threads, seed, es_compute)
    pictures = load_images(images)
    try:
        for config in configs:
            if on_config:
                on_config(config)
            settings = HeadSettings(
                config=config, server=("127.0.0.1", port), frames=frames, warmup=warmup,
                images=images, seed=seed, threads=threads, context=StepContext(run_id=run_id),
                compute=md_compute,
            )
            try:
                failed = run_head(settings, out / FRAMES, on_frame=on_frame, frames=pictures)
                manifest["status"][config.name] = "ok" if failed == 0 else f"{failed} frames failed"
            except Exception as exc:  # one configuration failing must not lose the others
                log.exception("configuration %s failed", config.name)
                manifest["status"][config.name] = f"error: {exc}"
            write_json(out / MANIFEST, manifest)
    finally:
        stop_process(tail)
        manifest["finished"] = now_utc()
        write_json(out / MANIFEST, manifest)
    return out
