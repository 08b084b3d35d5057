"""What packet captures cost: the same scenario run with ``packet_capture`` off and on.

    .venv/bin/python benchmarks/capture_cost.py [--load 20] [--frames 20]
        [--configurations mimic-bottleneck org-split2] [--backend auto] [--results DIR]

Runs ``testbed run`` twice (captures off, then on) at one competing load and prints per
configuration: comm (mean ± std, ms) both ways, and for the run with captures per step: the
tcpdump processes' CPU time (sampled from /proc every 0.2 s while they run, summed over the
capture points), their share of the step's wall time, the compressed pcap bytes and the packets
kept. Needs root (the emulated lab). Prints a Markdown table; takes a few minutes.
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
from pathlib import Path

import yaml

TICK = os.sysconf("SC_CLK_TCK")


def scenario(args: argparse.Namespace, capture: bool) -> dict:
    return {
        "name": f"capture-cost-{'on' if capture else 'off'}",
        "lab": "emulated",
        "link": {"kind": "wifi", "preset": "wifi-80211g"},
        "hosts": [{"name": "md", "role": "md", "cpu": 0.5}, {"name": "es", "role": "es"},
                  {"name": "ap", "role": "ap", "backend": args.backend},
                  {"name": "ext", "role": "ext"}],
        "sweep": {"loads_mbit": [args.load], "settle_s": 1.0},
        "model": args.model,
        "configurations": list(args.configurations),
        "frames": args.frames,
        "warmup": 2,
        "packet_capture": {"enabled": capture},
    }


class TcpdumpCpu:
    """Largest CPU time (s) seen per tcpdump process whose command line names ``key``."""

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
                           str(results)], capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        sys.exit(f"testbed run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return next(results.iterdir())


def comm_ms(folder: Path) -> dict[str, list[float]]:
    from testbed.records import read_records

    out: dict[str, list[float]] = {}
    for r in read_records(folder / "frames.csv"):
        if not r.warmup and r.status == "ok" and r.comm is not None:
            out.setdefault(r.config, []).append(r.comm * 1e3)
    return out


def _pm(values: list[float]) -> str:
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {spread:.1f} (p50 {statistics.median(values):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--load", type=float, default=20.0)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--model", default="densenet169")
    ap.add_argument("--configurations", nargs="+", default=["mimic-bottleneck", "org-split2"])
    ap.add_argument("--backend", default="auto", choices=("auto", "vm", "namespace"))
    ap.add_argument("--results", type=Path, default=None, help="keep both runs here")
    args = ap.parse_args()
    root = args.results or Path(tempfile.mkdtemp(prefix="capture-cost-"))
    root.mkdir(parents=True, exist_ok=True)
    off = run(args, False, root)
    with TcpdumpCpu() as cpu:
        on = run(args, True, root)
    manifest = json.loads((on / "manifest.json").read_text())
    comm_off, comm_on = comm_ms(off), comm_ms(on)
    tcpdump = cpu.per_step()
    print(f"capture cost at {args.load:g} Mbit/s competing load, {args.frames} frames per step, "
          f"backend {manifest['lab']['backend']['backend']}; runs in {root}\n")
    print("| configuration | comm off (ms) | comm on (ms) | step wall (s) | tcpdump CPU (s) "
          "| tcpdump CPU / wall | pcap.gz bytes | packets kept |")
    print("|---|---|---|---|---|---|---|---|")
    for step, rec in manifest["steps"].items():
        caps = rec.get("captures") or {}
        size = sum(c.get("bytes", 0) for c in caps.values())
        packets = sum(c.get("captured", 0) for c in caps.values())
        used = tcpdump.get(step, 0.0)
        wall = rec.get("captures_s") or rec["wall_s"]
        print(f"| {rec['config']} | {_pm(comm_off.get(rec['config'], []))} | "
              f"{_pm(comm_on.get(rec['config'], []))} | {wall:.1f} | {used:.2f} | "
              f"{100 * used / wall:.1f} % | {size:,} | {packets:,} |")


if __name__ == "__main__":
    main()
