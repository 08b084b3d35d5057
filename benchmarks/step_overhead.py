"""How much longer a sweep takes than its measured frames: per-step start-up, read from result folders.

For each result folder (made by ``testbed run``) prints, per step and in all: the step's wall
time (``wall_s`` in the manifest: load start, head, load stop, collection), the head's time
(``frames_s``: with head agents, from sending the step to its ``done``) and the time spent in
measured frames (the sum of ``total`` over the step's non-warm-up frames in ``frames.csv``),
its warm-up frames (the same over its warm-up frames), what is left (wall - measured - warm-up:
start-up, competing load, collection) and the ratio wall / measured frames. The sweep's own
wall time (``finished - started``) is printed too.

    .venv/bin/python benchmarks/step_overhead.py RESULT_DIR [RESULT_DIR ...] [--steps]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from testbed.records import read_records


def _seconds(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def summarize(folder: Path) -> tuple[dict, list[tuple[str, float, float, float, float]]]:
    manifest = json.loads((folder / "manifest.json").read_text())
    measured: dict[str, float] = defaultdict(float)
    warmup: dict[str, float] = defaultdict(float)
    for r in read_records(folder / "frames.csv"):
        if r.total is not None:
            (warmup if r.warmup else measured)[r.step] += r.total
    rows = [(step, s.get("wall_s", 0.0), s.get("frames_s", 0.0), measured.get(step, 0.0),
             warmup.get(step, 0.0)) for step, s in manifest["steps"].items()]
    run = {
        "name": folder.name,
        "status": manifest.get("status"),
        "steps": len(rows),
        "ok": sum(str(s.get("status", "")).startswith("ok") for s in manifest["steps"].values()),
        "run_s": _seconds(manifest["started"], manifest["finished"]),
        "wall_s": sum(r[1] for r in rows),
        "head_s": sum(r[2] for r in rows),
        "frames_s": sum(r[3] for r in rows),
        "warmup_s": sum(r[4] for r in rows),
    }
    return run, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--steps", action="store_true", help="one row per step as well")
    args = ap.parse_args()
    head = (f"{'run':44s} {'steps ok':>8s} {'run s':>8s} {'steps wall s':>12s} {'head s':>8s} "
            f"{'frames s':>9s} {'warm-up s':>9s} {'other s':>8s} {'wall/frames':>11s} "
            f"{'run/frames':>10s}")
    print(head)
    print("-" * len(head))
    for folder in args.folders:
        run, rows = summarize(folder)
        ratio = run["wall_s"] / run["frames_s"] if run["frames_s"] else float("nan")
        whole = run["run_s"] / run["frames_s"] if run["frames_s"] else float("nan")
        other = run["wall_s"] - run["frames_s"] - run["warmup_s"]
        print(f"{run['name'][:44]:44s} {run['ok']:>3d}/{run['steps']:<4d} {run['run_s']:8.1f} "
              f"{run['wall_s']:12.1f} {run['head_s']:8.1f} {run['frames_s']:9.1f} "
              f"{run['warmup_s']:9.1f} {other:8.1f} {ratio:11.2f} {whole:10.2f}")
        if args.steps:
            for step, wall, head_s, frames, warm in rows:
                r = wall / frames if frames else float("nan")
                print(f"  {step:42s} {'':8s} {'':8s} {wall:12.1f} {head_s:8.1f} {frames:9.1f} "
                      f"{warm:9.1f} {wall - frames - warm:8.1f} {r:11.2f}")


if __name__ == "__main__":
    main()
