"""Real netem inside the access-point VM, driven over SSH, and the physical floor to check it with.

Each direction is shaped on the egress of the VM NIC it leaves by: the uplink (stations -> ES)
on the ES-side NIC, the downlink on the stations' side NIC. So both directions are shaped, and
the "ingress" of the AP needs no ifb. Before a qdisc is set, segmentation offloads are switched
off on that guest NIC (and :mod:`testbed.vm.boot` did the same on the host end of every tap), so
netem serialises MTU-sized packets instead of 64 KB TSO/GSO chunks.

netem's ``rate`` charges whole Ethernet frames: a payload of ``n`` bytes over TCP costs
``n + ceil(n / 1448) * 66`` bytes on the wire (Ethernet 14 + IPv4 20 + TCP 32 with timestamps).
:func:`floors` gives both the bare floor and the floor with those headers.

Commands run as explicit paths (``/usr/sbin/tc``, ``/usr/sbin/ethtool``): busybox's shell would
otherwise run its own ``tc`` applet.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from testbed.lab import netns, procs

TC = "/usr/sbin/tc"
ETHTOOL = "/usr/sbin/ethtool"
MSS = 1448
HEADERS = 66
DISTRIBUTIONS = ("normal", "pareto", "paretonormal", "experimental")
PROBE = Path(__file__).resolve().parents[2] / "benchmarks" / "message_probe.py"


@dataclass(frozen=True)
class Netem:
    """One direction's netem settings.

    ``rate_mbit``: serialisation rate (None: unlimited); ``delay_ms`` base one-way delay;
    ``jitter_ms`` with ``distribution`` (a table shipped in the image; None = uniform);
    ``loss_pct`` random loss; ``limit_packets`` the queue limit (netem's default is 1000);
    ``slot_ms``: ``(min, max)`` for netem's slot (aggregation-like bursts), or None.
    """

    rate_mbit: float | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    distribution: str | None = "normal"
    loss_pct: float = 0.0
    limit_packets: int = 1000
    slot_ms: tuple[float, float] | None = None
    overhead_bytes: int = 0
    """Added to every packet's length for ``rate`` (netem's packet overhead)."""

    def __post_init__(self) -> None:
        if self.rate_mbit is not None and not self.rate_mbit > 0:
            raise ValueError(f"rate_mbit must be > 0, got {self.rate_mbit}")
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError("delay and jitter must be >= 0")
        if not 0 <= self.loss_pct <= 100:
            raise ValueError(f"loss_pct must be 0..100, got {self.loss_pct}")
        if self.limit_packets < 1:
            raise ValueError("limit_packets must be >= 1")
        if self.distribution is not None and self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {self.distribution!r}")

    def tc_args(self) -> list[str]:
        args = ["netem", "limit", str(int(self.limit_packets))]
        if self.delay_ms or self.jitter_ms:
            args += ["delay", f"{self.delay_ms * 1000:.0f}us"]
            if self.jitter_ms:
                args.append(f"{self.jitter_ms * 1000:.0f}us")
                if self.distribution:
                    args += ["distribution", self.distribution]
        if self.loss_pct:
            args += ["loss", "random", f"{self.loss_pct:g}%"]
        if self.rate_mbit is not None:
            args += ["rate", f"{self.rate_mbit * 1000:.0f}kbit"]
            if self.overhead_bytes:
                args.append(str(int(self.overhead_bytes)))
        if self.slot_ms:
            args += ["slot", f"{self.slot_ms[0] * 1000:.0f}us", f"{self.slot_ms[1] * 1000:.0f}us"]
        return args

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def offloads_off(vm, dev: str, netns: str | None = None) -> dict[str, str]:
    """Switch TSO/GSO/GRO off on guest NIC ``dev`` (in the VM's namespace ``netns``, if given);
    return what ``ethtool -k`` then reports."""
    pre = ["/usr/sbin/ip", "netns", "exec", netns] if netns else []
    vm.run([*pre, ETHTOOL, "-K", dev, "tso", "off", "gso", "off", "gro", "off"], timeout=20,
           check=False)
    out = vm.run([*pre, ETHTOOL, "-k", dev], timeout=20).stdout
    keep = ("tcp-segmentation-offload", "generic-segmentation-offload", "generic-receive-offload")
    found = {}
    for line in out.splitlines():
        k, _, v = line.strip().partition(":")
        if k in keep:
            found[k] = v.strip()
    return found


def apply(vm, tag: str, spec: Netem) -> dict[str, Any]:
    """Set ``spec`` as the root qdisc of the VM NIC ``tag`` (egress); report what the VM shows."""
    dev = vm.guest_ifname(tag)
    offloads = offloads_off(vm, dev)
    argv = [TC, "qdisc", "replace", "dev", dev, "root", *spec.tc_args()]
    vm.run(argv, timeout=20)
    shown = vm.run([TC, "qdisc", "show", "dev", dev], timeout=20).stdout.strip()
    return {"interface": dev, "nic": tag, "netem": spec.to_dict(), "command": " ".join(argv),
            "qdisc": shown, "offloads": offloads}


def clear(vm, tag: str) -> None:
    vm.run([TC, "qdisc", "del", "dev", vm.guest_ifname(tag), "root"], timeout=20, check=False)


def shape_path(vm, uplink: Netem, downlink: Netem, *, stations: str = "md", es: str = "es") -> dict[str, Any]:
    """Shape both directions between the stations' side and the ES side."""
    return {"uplink": apply(vm, es, uplink), "downlink": apply(vm, stations, downlink)}


# --------------------------------------------------------------------------- measuring


def floors(size: int, rate_mbit: float, rtt_s: float) -> tuple[float, float]:
    """(floor, floor with headers) in seconds for one probe message of ``size`` bytes."""
    wire = size + 4  # the probe's length prefix
    with_headers = wire + math.ceil(wire / MSS) * HEADERS
    rate = rate_mbit * 1e6
    return wire * 8 / rate + rtt_s, with_headers * 8 / rate + rtt_s


@contextlib.contextmanager
def _server(namespace: str, argv: list[str], address: str, port: int,
            timeout_s: float = 10.0) -> Iterator[None]:
    """``argv`` running in ``namespace`` and listening on address:port for the block's length."""
    server = netns.popen_in_namespace(namespace, argv, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout_s
        while not procs.listening(server.pid, address, port):
            if server.poll() is not None:
                raise RuntimeError(f"{argv[0]} server exited ({server.returncode}): "
                                   f"{server.stderr.read().decode(errors='replace')[-500:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} server not listening on {address}:{port} "
                                   f"after {timeout_s:g} s")
            time.sleep(0.02)
        yield
    finally:
        server.kill()
        server.wait(timeout=10)
        server.stderr.close()


def transfer_times(client_ns: str, server_ns: str, server_addr: str, size: int, count: int,
                   gap_s: float, port: int = 5600) -> list[float]:
    """Round-trip times of ``count`` one-message transfers (benchmarks/message_probe.py)."""
    with _server(server_ns, [sys.executable, str(PROBE), "server", server_addr, str(port)],
                 server_addr, port):
        out = netns.run_in_namespace(
            client_ns, [sys.executable, str(PROBE), "client", server_addr, str(port), str(size),
                        str(count), str(gap_s)],
            timeout=30 + count * (gap_s + 5),
        )
    if out.returncode != 0:
        raise RuntimeError(f"message probe failed: {out.stderr.strip()[-1000:]}")
    return json.loads(out.stdout)


def tcp_goodput_mbit(client_ns: str, server_ns: str, server_addr: str, seconds: float = 4.0,
                     port: int = 5601) -> float:
    """iperf3 TCP goodput from ``client_ns`` to ``server_ns`` (Mbit/s, receiver side)."""
    with _server(server_ns, ["iperf3", "-s", "-1", "-B", server_addr, "-p", str(port)],
                 server_addr, port):
        out = netns.run_in_namespace(
            client_ns, ["iperf3", "-c", server_addr, "-p", str(port), "-t", f"{seconds:g}", "-J"],
            timeout=seconds + 30)
    if out.returncode != 0:
        raise RuntimeError(f"iperf3 failed: {(out.stdout + out.stderr).strip()[-1000:]}")
    return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6


def fidelity_rows(vm, client_ns: str, server_ns: str, server_addr: str, *,
                  rates_mbit: Sequence[float] = (3.0, 24.0), sizes: Sequence[int] = (10_092, 75_000),
                  delay_ms: float = 2.0, count: int = 15, gap_s: float = 0.2,
                  stations: str = "md", es: str = "es",
                  shape: Callable[[Netem], Any] | None = None) -> list[dict[str, Any]]:
    """Median one-message transfer vs the floor over idle netem links (both directions shaped).

    ``shape(spec)`` applies one direction's netem to both directions; the default shapes the VM
    NICs ``stations`` and ``es`` (:func:`shape_path`); a VM lab passes its own (e.g. WiFi mode)."""
    apply_both = shape or (lambda spec: shape_path(vm, spec, spec, stations=stations, es=es))
    rows = []
    for rate in rates_mbit:
        apply_both(Netem(rate_mbit=rate, delay_ms=delay_ms))
        rtt = statistics.median(transfer_times(client_ns, server_ns, server_addr, 1, count, gap_s))
        for size in sizes:
            times = transfer_times(client_ns, server_ns, server_addr, size, count, gap_s)
            median = statistics.median(times)
            floor, floor_hdr = floors(size, rate, rtt)
            rows.append({
                "size": size, "rate_mbit": rate, "delay_ms": delay_ms, "n": len(times),
                "median_ms": median * 1e3, "p90_ms": sorted(times)[int(0.9 * (len(times) - 1))] * 1e3,
                "base_rtt_ms": rtt * 1e3, "floor_ms": floor * 1e3, "floor_hdr_ms": floor_hdr * 1e3,
                "ratio": median / floor, "ratio_hdr": median / floor_hdr,
            })
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'size B':>7} {'Mbit/s':>6} {'median ms':>9} {'floor ms':>8} {'+hdr ms':>8} "
             f"{'ratio':>6} {'ratio+hdr':>9} {'RTT ms':>6}"]
    for r in rows:
        lines.append(f"{r['size']:7d} {r['rate_mbit']:6g} {r['median_ms']:9.2f} {r['floor_ms']:8.2f} "
                     f"{r['floor_hdr_ms']:8.2f} {r['ratio']:6.3f} {r['ratio_hdr']:9.3f} "
                     f"{r['base_rtt_ms']:6.2f}")
    return "\n".join(lines)
