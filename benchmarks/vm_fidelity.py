"""How faithful is netem inside the AP VM? One-message transfers against the physical floor.

Boots the AP VM (testbed.vm) between fresh namespaces, shapes both directions inside the VM
with ``netem rate R delay D`` (offloads off on the shaped path), and for 10,092 B (the quantized
bottleneck) and 75,000 B (about a resized JPEG) over idle 3 and 24 Mbit/s links prints the
median transfer time (send start -> 18-byte reply, one TCP connection, idle gaps, as
benchmarks/message_probe.py does) next to

    floor      = payload * 8 / rate + base RTT            (base RTT: 1-byte messages, same link)
    floor+hdr  = (payload + 66 B per 1448 B segment) * 8 / rate + base RTT

and their ratios, plus QEMU's CPU use during the measurement and the host's load average (the
machine has two cores; the VM is kept at one vCPU). Two ways through the VM (``--modes``):

    netem   md and es namespaces on two VM NICs; the VM routes between them (testbed.vm.pair)
    wifi    WiFi mode (testbed.vm.radio): md associates to hostapd over mac80211_hwsim radios
            inside the VM (WPA2); netem on the AP radio (downlink) and the NIC toward es (uplink)

For each mode it also measures the path's unshaped TCP goodput (iperf3, 4 s): with TCG the VM's
CPU, not netem, may become the bottleneck (802.11 framing and CCMP run in software). Everything
is torn down at the end.

    .venv/bin/python benchmarks/vm_fidelity.py [--modes netem wifi] [--count 30] [--json out.json]   (root)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from testbed.lab import names
from testbed.lab.plan import HostPlan, LabPlan, LinkShape
from testbed.vm import shaping
from testbed.vm.build import VmImage, build_image
from testbed.vm.lab import VmLab
from testbed.vm.pair import es_address, vm_pair
from testbed.wifi_settings import WifiSettings

UNSHAPED = shaping.Netem(rate_mbit=10_000)


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _path(mode: str, image: VmImage, run_id: str, workdir: Path) -> Iterator[tuple[Any, Any, str]]:
    """(vm, shape(spec) callable, es address) for one mode; everything undone on exit."""
    if mode == "netem":
        with vm_pair(image, run_id, workdir, progress=print) as vm:
            yield vm, lambda spec: shaping.shape_path(vm, spec, spec), es_address()
        return
    plan = LabPlan(run_id=run_id, hosts=(HostPlan("md", "md"), HostPlan("es", "es"),
                                         HostPlan("ap", "ap")),
                   medium=LinkShape(rate_mbit=24, queue_packets=1000))
    with VmLab(plan, workdir, image=image, progress=print, wifi=WifiSettings()) as lab:
        def shape(spec: shaping.Netem) -> None:
            lab.reshape(LinkShape(rate_mbit=spec.rate_mbit, delay_ms=spec.delay_ms,
                                  queue_packets=spec.limit_packets))
        yield lab.vm, shape, lab.address("es")


def measure(mode: str, image: VmImage, args: argparse.Namespace) -> dict[str, Any]:
    run_id = names.new_run_id()
    md, es = names.namespace_name(run_id, "md"), names.namespace_name(run_id, "es")
    with tempfile.TemporaryDirectory(prefix=f"vm-fidelity-{mode}-") as tmp:
        with _path(mode, image, run_id, Path(tmp)) as (vm, shape, es_addr):
            shape(UNSHAPED)
            goodput = shaping.tcp_goodput_mbit(md, es, es_addr)
            load0 = os.getloadavg()
            cpu0, t0 = _cpu_s(vm.pid), time.monotonic()
            rows = shaping.fidelity_rows(vm, md, es, es_addr, rates_mbit=args.rates,
                                         delay_ms=args.delay, count=args.count, gap_s=args.gap,
                                         shape=shape)
            qemu_cpu = (_cpu_s(vm.pid) - cpu0) / (time.monotonic() - t0)
            return {"mode": mode, "rows": rows, "unshaped_goodput_mbit": goodput,
                    "qemu_cpu_share": qemu_cpu, "loadavg_before": load0,
                    "loadavg_after": os.getloadavg(), "vm": vm.describe()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", choices=("netem", "wifi"), default=["netem", "wifi"],
                        help="paths through the VM to measure (default: both, one after the other)")
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
    results = [measure(mode, image, args) for mode in args.modes]
    for r in results:
        print(f"\n== {r['mode']}: unshaped TCP goodput through the VM {r['unshaped_goodput_mbit']:.1f} "
              f"Mbit/s; delay {args.delay:g} ms each way; {args.count} messages per row")
        print(shaping.format_rows(r["rows"]))
        print(f"QEMU CPU during the measurement: {r['qemu_cpu_share']:.0%} of one core (idle gaps "
              f"included); host load average {r['loadavg_before'][0]:.2f} -> "
              f"{r['loadavg_after'][0]:.2f} (2 cores); VM booted in {r['vm']['boot_s']} s")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "count": args.count, "gap_s": args.gap,
                                         "delay_ms_per_direction": args.delay}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
