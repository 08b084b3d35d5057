"""What packet captures cost: the same sweep run with ``packet_capture`` off and on.

    .venv/bin/python benchmarks/capture_cost.py [--loads 5 20] [--frames 20]
        [--configurations es-only org-split2 mimic-bottleneck] [--compute paper]
        [--backend auto] [--results DIR]

Runs ``testbed run`` twice (captures off, then on) over the same loads and configurations and
prints per configuration and load: comm's mean without and with captures and their ratio, and
for the run with captures: the tcpdump processes' CPU time per step (sampled from /proc every
0.2 s while they run, summed over the capture points), its share of the step's wall time, the
compressed pcap bytes and the packets kept. Then the breakdown of the run with captures: flagged
frames, and how long it took read from the captures and again from its cache.

``--compute paper`` (the default) replays the paper's devices (``paper-wifi-md`` on the MD,
``paper-wifi-es`` on the ES, DenseNet-201, no CPU cap), so a difference between the two runs is
the network's and the captures', not this machine's processing; ``--compute real`` processes for
real with the MD capped at half a core. ``--paired N`` runs once instead, alternating captured
and uncaptured repetitions (``packet_capture.alternate``), which takes the spread between two
lab starts (about 1 ms of an 8-14 ms comm here) out of the comparison. Needs root (the emulated
lab); takes about
2 x (loads x configurations x (frames + 2) x a frame's time) plus the lab's bring-up twice.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

TICK = os.sysconf("SC_CLK_TCK")
COMPUTE = {
    "paper": ({"compute": "paper-wifi-md"}, {"compute": "paper-wifi-es"}),
    "real": ({"cpu": 0.5}, {}),
}
"""Per ``--compute``: the MD's and the ES's extra host keys."""


def scenario(args: argparse.Namespace, capture: bool) -> dict:
    md, es = COMPUTE[args.compute]
    paired = {"repetitions": 2 * args.paired} if args.paired else {}
    return {
        "name": "capture-cost-paired" if args.paired else f"capture-cost-{'on' if capture else 'off'}",
        "lab": "emulated",
        "link": {"kind": "wifi", "preset": "wifi-80211g"},
        "hosts": [{"name": "md", "role": "md", **md}, {"name": "es", "role": "es", **es},
                  {"name": "ap", "role": "ap", "backend": args.backend},
                  {"name": "ext", "role": "ext"}],
        "sweep": {"loads_mbit": list(args.loads), "settle_s": 1.0, **paired},
        "model": args.model,
        "configurations": list(args.configurations),
        "frames": args.frames,
        "warmup": 2,
        "packet_capture": {"enabled": capture, **({"alternate": True} if args.paired else {})},
    }


class TcpdumpCpu:
    """Largest CPU time (s) seen per tcpdump process, summed per step (from its pcap's name)."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    if not cmd or not cmd[0].endswith(b"tcpdump"):
                        continue
                    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                cpu = (int(stat[11]) + int(stat[12])) / TICK  # utime + stime
                path = next((c.decode() for c in cmd if c.endswith(b".pcap")), "")
                self.seen[int(pid)] = (path, max(cpu, self.seen.get(int(pid), ("", 0.0))[1]))

    def __enter__(self) -> "TcpdumpCpu":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def per_step(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for path, cpu in self.seen.values():
            step = Path(path).name.split(".")[0]
            out[step] = out.get(step, 0.0) + cpu
        return out


def run(args: argparse.Namespace, capture: bool, root: Path) -> Path:
    path = root / f"{'on' if capture else 'off'}.yaml"
    path.write_text(yaml.safe_dump(scenario(args, capture), sort_keys=False))
    results = root / ("on" if capture else "off")
    proc = subprocess.run([sys.executable, "-m", "testbed", "run", str(path), "--results",
                           str(results)], capture_output=True, text=True, timeout=6 * 3600)
    if proc.returncode != 0:
        sys.exit(f"testbed run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return next(results.iterdir())


def comm_ms(folder: Path) -> dict[tuple[str, float], list[float]]:
    """Measured frames' comm (ms) per (configuration, asked load)."""
    from testbed.records import read_records

    out: dict[tuple[str, float], list[float]] = {}
    for r in read_records(folder / "frames.csv"):
        if not r.warmup and r.status == "ok" and r.comm is not None:
            out.setdefault((r.config, r.load_mbit), []).append(r.comm * 1e3)
    return out


def _mean(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f}" if values else "-"


def breakdown_times(folder: Path) -> tuple[int, int, float, float]:
    """(frames, flagged, seconds to split them from the captures, seconds from the cache)."""
    from analysis.comm_parts import run_parts

    t0 = time.perf_counter()
    parts = [p for p in run_parts(folder) if not p.warmup]
    t1 = time.perf_counter()
    again = [p for p in run_parts(folder) if not p.warmup]
    t2 = time.perf_counter()
    assert again == parts, "the cached breakdown differs from the computed one"
    return len(parts), sum(bool(p.flag) for p in parts), t1 - t0, t2 - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loads", type=float, nargs="+", default=[5.0, 20.0],
                    help="competing loads, Mbit/s")
    ap.add_argument("--frames", type=int, default=20, help="measured frames per step")
    ap.add_argument("--model", default="densenet201",
                    help="the paper's device profiles hold DenseNet-201 only")
    ap.add_argument("--configurations", nargs="+",
                    default=["es-only", "org-split2", "mimic-bottleneck"])
    ap.add_argument("--compute", choices=sorted(COMPUTE), default="paper",
                    help="paper: replay the paper's MD and ES (no CPU cap); real: process for "
                         "real, MD at half a core")
    ap.add_argument("--backend", default="auto", choices=("auto", "vm", "namespace", "ns3"))
    ap.add_argument("--results", type=Path, default=None, help="keep both runs here")
    ap.add_argument("--paired", type=int, default=0, metavar="N",
                    help="instead of two runs: one run of 2N repetitions with "
                         "packet_capture.alternate (captures on even repetitions only), so the "
                         "steps with and without captures share one lab start; prints the "
                         "report's capture_effect table (comm on / off per configuration and "
                         "load)")
    args = ap.parse_args()
    root = args.results or Path(tempfile.mkdtemp(prefix="capture-cost-"))
    root.mkdir(parents=True, exist_ok=True)
    if args.paired:
        from analysis.comm_report import capture_effect_table
        from analysis.tables import to_markdown

        folder = run(args, True, root)
        print(f"captures on even repetitions, off on odd ones, {args.paired} of each, "
              f"{args.frames} frames per step, compute {args.compute}, one lab start; run in "
              f"{folder}\n")
        print(to_markdown(capture_effect_table(folder), index=False))
        return
    off = run(args, False, root)
    with TcpdumpCpu() as cpu:
        on = run(args, True, root)
    manifest = json.loads((on / "manifest.json").read_text())
    comm_off, comm_on = comm_ms(off), comm_ms(on)
    tcpdump = cpu.per_step()
    print(f"capture cost, {args.frames} frames per step, compute {args.compute}, backend "
          f"{manifest['lab']['backend']['backend']}, {len(cpu.seen)} tcpdump processes sampled "
          f"(CPU in {1 / TICK:g} s ticks); runs in {root}\n")
    print("| configuration | load (Mbit/s) | comm off (ms) | comm on (ms) | on / off "
          "| step wall (s) | tcpdump CPU (s) | tcpdump CPU / wall | pcap.gz bytes | packets kept |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = sorted(manifest["steps"].items(), key=lambda kv: (kv[1]["config"],
                                                              kv[1]["load_asked_mbit"]))
    for step, rec in rows:
        key = (rec["config"], rec["load_asked_mbit"])
        c_off, c_on = comm_off.get(key, []), comm_on.get(key, [])
        ratio = (f"{statistics.mean(c_on) / statistics.mean(c_off):.2f}"
                 if c_off and c_on else "-")
        caps = rec.get("captures") or {}
        size = sum(c.get("bytes", 0) for c in caps.values())
        packets = sum(c.get("captured", 0) for c in caps.values())
        used = tcpdump.get(step, 0.0)
        wall = rec.get("captures_s") or rec["wall_s"]
        print(f"| {rec['config']} | {key[1]:g} | {_mean(c_off)} | {_mean(c_on)} | {ratio} | "
              f"{wall:.1f} | {used:.2f} | {100 * used / wall:.1f} % | {size:,} | {packets:,} |")
    frames, flagged, first, cached = breakdown_times(on)
    print(f"\nbreakdown of the run with captures: {frames} measured frames, {flagged} flagged; "
          f"split from the captures in {first:.2f} s, from the cache in {cached:.2f} s")


if __name__ == "__main__":
    main()
