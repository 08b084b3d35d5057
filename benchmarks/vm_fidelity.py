"""How faithful is netem inside the AP VM? One-message transfers against the physical floor.

Boots the AP VM (testbed.vm) between two fresh namespaces (md, es), shapes both directions
inside the VM with ``netem rate R delay D`` (offloads off on the shaped path), and for 10,092 B
(the quantized bottleneck) and 75,000 B (about a resized JPEG) over idle 3 and 24 Mbit/s links
prints the median transfer time (send start -> 18-byte reply, one TCP connection, idle gaps, as
benchmarks/message_probe.py does) next to

    floor      = payload * 8 / rate + base RTT            (base RTT: 1-byte messages, same link)
    floor+hdr  = (payload + 66 B per 1448 B segment) * 8 / rate + base RTT

and their ratios, plus QEMU's CPU use during the measurement and the host's load average (the
machine has two cores; the VM is kept at one vCPU). Everything is torn down at the end.

    .venv/bin/python benchmarks/vm_fidelity.py [--count 30] [--delay 2] [--json out.json]   (root)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from testbed.lab import names
from testbed.vm import shaping
from testbed.vm.build import build_image
from testbed.vm.pair import es_address, vm_pair


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=30, help="messages per size (median of these)")
    parser.add_argument("--gap", type=float, default=0.2, help="idle seconds between messages")
    parser.add_argument("--delay", type=float, default=2.0, help="netem delay per direction, ms")
    parser.add_argument("--rates", type=float, nargs="+", default=[3.0, 24.0])
    parser.add_argument("--json", type=Path, help="also write the rows and context as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (namespaces, taps, QEMU)", file=sys.stderr)
        return 2
    image = build_image(progress=print)
    run_id = names.new_run_id()
    with tempfile.TemporaryDirectory(prefix="vm-fidelity-") as tmp:
        with vm_pair(image, run_id, Path(tmp), progress=print) as vm:
            load0 = os.getloadavg()
            cpu0, t0 = _cpu_s(vm.pid), time.monotonic()
            rows = shaping.fidelity_rows(vm, names.namespace_name(run_id, "md"),
                                         names.namespace_name(run_id, "es"), es_address(),
                                         rates_mbit=args.rates, delay_ms=args.delay,
                                         count=args.count, gap_s=args.gap)
            qemu_cpu = (_cpu_s(vm.pid) - cpu0) / (time.monotonic() - t0)
            load1 = os.getloadavg()
            context = {"vm": vm.describe(), "qemu_cpu_share": qemu_cpu,
                       "loadavg_before": load0, "loadavg_after": load1,
                       "delay_ms_per_direction": args.delay, "count": args.count, "gap_s": args.gap}
    print(shaping.format_rows(rows))
    print(f"QEMU CPU during the measurement: {qemu_cpu:.0%} of one core (idle gaps included); "
          f"host load average {load0[0]:.2f} -> {load1[0]:.2f} (2 cores); "
          f"VM booted in {context['vm']['boot_s']} s")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "context": context}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
