"""How faithful is the emulated link? One-message transfer times against the physical floor.

For payloads of 10,092 B (the quantized 12x29x29 bottleneck) and 75,000 B (about Table 4's
resized JPEG) over idle emulated links of 3 and 24 Mbit/s, it prints the median measured
transfer time (send start -> 18-byte reply received, on one TCP connection with idle gaps
between messages, as the head does) next to the physical floor:

    floor      = payload * 8 / rate + base RTT
    floor+hdr  = (payload + 66 bytes of Ethernet/IP/TCP headers per 1448-byte segment) * 8 / rate
                 + base RTT

and their ratio. The base RTT is measured on the same link with 1-byte messages. With netem
the ratio should sit at about 1.0; with the tbf/htb fallback the first ``burst`` bytes after an
idle gap leave at line rate, so small transfers come in under the floor (ratio < 1).

With ``--sweep RESULT_DIR`` it also prints the orchestration overhead of a finished sweep: the
wall time of the run divided by the time spent in frames.

    .venv/bin/python benchmarks/link_fidelity.py [--count 30] [--sweep results/...]   (root)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from datetime import datetime
from pathlib import Path

from testbed.lab.queue_math import default_burst_bytes
from testbed.lab.plan import LabPlan, LinkShape
from testbed.lab.namespace_lab import NamespaceLab
from testbed.records import read_records

PROBE = str(Path(__file__).with_name("message_probe.py"))
MSS = 1448
HEADERS = 66  # Ethernet 14 + IPv4 20 + TCP 32 (with timestamps)
PORT = 5600


def transfer_times(lab: NamespaceLab, size: int, count: int, gap: float) -> list[float]:
    es = lab.address("es")
    server = lab.popen("es", [sys.executable, PROBE, "server", es, str(PORT)])
    try:
        out = lab.run("md", [sys.executable, PROBE, "client", es, str(PORT), str(size), str(count),
                             str(gap)], timeout=60 + count * (gap + 5))
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return json.loads(out.stdout)
    finally:
        server.kill()
        server.wait()


def floors(size: int, rate_mbit: float, rtt: float) -> tuple[float, float]:
    wire = size + 4  # the probe's length prefix
    with_headers = wire + math.ceil(wire / MSS) * HEADERS
    rate = rate_mbit * 1e6
    return wire * 8 / rate + rtt, with_headers * 8 / rate + rtt


def link_table(count: int, gap: float) -> None:
    print(f"{'rate':>6} {'payload B':>9} {'median ms':>9} {'floor ms':>8} {'+hdr ms':>8} "
          f"{'ratio':>6} {'ratio+hdr':>9} {'burst B':>8}  shaping")
    for rate in (3.0, 24.0):
        with NamespaceLab(LabPlan.star(LinkShape(rate_mbit=rate))) as lab:
            report = lab.state.shaping[0].to_dict()
            kinds = "+".join(q.get("kind", "?") for q in report.get("qdiscs", [])) or "?"
            rtt = statistics.median(transfer_times(lab, 1, count, gap))
            for size in (10_092, 75_000):
                median = statistics.median(transfer_times(lab, size, count, gap))
                floor, floor_hdr = floors(size, rate, rtt)
                burst = default_burst_bytes(rate * 1e6 / 8)
                print(f"{rate:6g} {size:9d} {median * 1e3:9.2f} {floor * 1e3:8.2f} "
                      f"{floor_hdr * 1e3:8.2f} {median / floor:6.2f} {median / floor_hdr:9.2f} "
                      f"{burst:8d}  {kinds}, base RTT {rtt * 1e3:.2f} ms")


def sweep_overhead(result_dir: Path) -> None:
    manifest = json.loads((result_dir / "manifest.json").read_text())
    wall = (datetime.fromisoformat(manifest["finished"])
            - datetime.fromisoformat(manifest["started"])).total_seconds()
    steps = sum(s.get("wall_s", 0) for s in manifest["steps"].values())
    spans: dict[str, tuple[int, int]] = {}  # step -> first capture, last reply (ns, MD clock)
    for r in read_records(result_dir / "frames.csv"):
        end = r.capture_ns + int((r.total or r.md_proc or 0) * 1e9)
        first, last = spans.get(r.step, (r.capture_ns, end))
        spans[r.step] = (min(first, r.capture_ns), max(last, end))
    frames = sum(last - first for first, last in spans.values()) / 1e9
    print(f"\nsweep {result_dir.name}: {len(manifest['steps'])} steps")
    print(f"  run wall time (first step start .. last step end)  {wall:8.1f} s")
    print(f"  time in steps (load start .. records fetched)      {steps:8.1f} s")
    print(f"  time in frames (first capture .. last reply)       {frames:8.1f} s")
    print(f"  orchestration overhead: wall / frames = {wall / frames:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=30, help="messages per size (median of these)")
    parser.add_argument("--gap", type=float, default=0.2, help="idle seconds between messages")
    parser.add_argument("--sweep", type=Path, help="a finished result folder to measure overhead on")
    args = parser.parse_args()
    link_table(args.count, args.gap)
    if args.sweep:
        sweep_overhead(args.sweep)


if __name__ == "__main__":
    main()
