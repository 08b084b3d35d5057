"""A shaped queue in numbers: frame costs, token-bucket sizes, the per-station HTB tree.

No side effects: both shapers build from this, the host kernel's (``testbed.lab.host_shaping``, over
netlink) and the AP VM's (``testbed.vm.lab``, with ``tc`` over SSH).

Token-bucket fidelity (tbf and htb). A bucket starts full, so after an idle period the first
``burst`` bytes leave at line rate: a transfer of S bytes takes about (S - burst)*8/R instead of
S*8/R. With a 16 KB burst a 10 KB tensor crosses a 24 Mbit/s link in 0.24 ms instead of 3.4 ms.
The burst is therefore kept to what the kernel can work with: by default one full frame plus
what the rate delivers in 0.5 ms of timer slack, ``(1514 + O) + R*0.5 ms`` (1702 B at 3 Mbit/s,
2139 B at 10, 3014 B at 24 -- about two frames). The slack absorbs hrtimer lateness: with a
bucket of exactly one frame, tokens that arrive while the dequeue timer is late overflow the full
bucket and are lost (measured here: 24 Mbit/s gave 22.56 instead of 22.95 Mbit/s of TCP goodput,
10 Mbit/s 9.46 instead of 9.56). tbf *drops* any packet larger than its bucket, so the bucket is
never smaller than one frame, and its size is computed in kernel ticks rounded *up*. The report
states ``small_transfer_optimism_ms`` = burst*8/R: small transfers are optimistic by up to that
much. HTB lets a class run one packet into debt, so its optimism is (burst + one frame)*8/R.

Both netem and tbf/htb charge whole Ethernet frames (skb->len incl. the 14-byte header, + O):
expected TCP goodput is R * 1448/(1514 + O) (MSS 1448 with timestamps); the report gives it.

The per-station tree (``LinkShape.fair_per_station``, :func:`fair_tree`): ``htb`` root ``1:``,
class ``1:1`` rate = ceil = R, one class ``1:1x`` per station (rate R/n, ceil R, matched by the
station's subnet: source on the uplink, destination on the downlink) and ``1:fff`` for
unclassified traffic (ARP, the router's own packets: R/100, at least 1000 B/s, ceil R; all of R
when there are no stations); every class with burst = cburst = the bucket above and quantum one
frame.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass

from testbed.lab.plan import LinkShape, StationClass

ETH_HEADER = 14
IP_MTU = 1500
FRAME_BYTES = IP_MTU + ETH_HEADER  # what a qdisc charges for a full-size packet on veth
TCP_MSS_TS = 1448  # TCP payload of a full-size segment with the timestamp option
TIMER_SLACK_S = 0.0005  # bucket room beyond one frame, as time at the shaped rate
PSCHED_TICK_NS = 64  # kernel PSCHED_SHIFT = 6 (see /proc/net/psched)
FIRST_STATION_MINOR = 0x10
DEFAULT_MINOR = 0xFFF


def rate_bytes(rate_mbit: float) -> int:
    return int(round(rate_mbit * 1e6 / 8))


def frame_cost(overhead_bytes: int = 0) -> int:
    """Bytes a qdisc charges for one full-size frame."""
    return FRAME_BYTES + overhead_bytes


def expected_tcp_goodput_mbit(rate_mbit: float, overhead_bytes: int = 0) -> float:
    """Bulk TCP goodput through a rate R that charges whole frames (+ overhead)."""
    return rate_mbit * TCP_MSS_TS / frame_cost(overhead_bytes)


def bytes_to_ticks(nbytes: float, rate_Bps: float) -> int:
    """Kernel psched ticks (64 ns) to send ``nbytes`` at ``rate_Bps``, rounded up (+1)."""
    ns = nbytes / rate_Bps * 1e9
    return int(math.ceil(ns / PSCHED_TICK_NS)) + 1


def ticks_to_bytes(ticks: int, rate_Bps: float) -> float:
    return ticks * PSCHED_TICK_NS * 1e-9 * rate_Bps


def default_burst_bytes(rate_Bps: float, overhead_bytes: int = 0) -> int:
    """One frame + what the rate delivers in ``TIMER_SLACK_S`` (see module docstring)."""
    return frame_cost(overhead_bytes) + max(64, int(math.ceil(rate_Bps * TIMER_SLACK_S)))


def bucket_bytes(shape: LinkShape) -> int:
    """The token bucket of a tbf/htb shaping ``shape``: its ``burst_bytes``, else
    :func:`default_burst_bytes`; never below one frame (which tbf would drop)."""
    burst = int(shape.burst_bytes or default_burst_bytes(rate_bytes(shape.rate_mbit),
                                                         shape.overhead_bytes))
    return max(burst, frame_cost(shape.overhead_bytes))


@dataclass(frozen=True)
class FairClass:
    """One HTB class under ``1:1``: ``1:<minor>``, serving ``station`` (None: the default)."""

    minor: int
    rate_Bps: int
    ceil_Bps: int
    station: str | None = None
    network: str | None = None

    @property
    def classid(self) -> str:
        return f"1:{self.minor:x}"


@dataclass(frozen=True)
class FairTree:
    """The per-station HTB tree of one queue (see the module docstring)."""

    rate_mbit: float
    rate_Bps: int
    burst_bytes: int
    quantum_bytes: int
    overhead_bytes: int
    match: str  # "src" (uplink) or "dst" (downlink)
    stations: tuple[FairClass, ...]
    default: FairClass

    def report_classes(self) -> list[dict]:
        """``per_station_classes`` of the shaping report."""
        return [{"station": c.station, "classid": c.classid, "match": f"{self.match} {c.network}",
                 "rate_mbit": c.rate_Bps * 8 / 1e6, "ceil_mbit": self.rate_mbit}
                for c in self.stations]

    @property
    def optimism_bytes(self) -> int:
        """HTB lets a class run one frame into debt beyond its bucket."""
        return self.burst_bytes + self.quantum_bytes


def fair_tree(shape: LinkShape, stations: Sequence[StationClass], match: str) -> FairTree:
    """The HTB tree for ``shape`` with one class per station (none: just the default class)."""
    if match not in ("src", "dst"):
        raise ValueError(f"match must be 'src' or 'dst', got {match!r}")
    total = rate_bytes(shape.rate_mbit)
    share = total // max(1, len(stations))
    classes = tuple(FairClass(FIRST_STATION_MINOR + i, share, total, st.name,
                              str(ipaddress.ip_network(st.network)))
                    for i, st in enumerate(stations))
    default_rate = max(1000, total // 100) if stations else total
    return FairTree(rate_mbit=shape.rate_mbit, rate_Bps=total, burst_bytes=bucket_bytes(shape),
                    quantum_bytes=frame_cost(shape.overhead_bytes),
                    overhead_bytes=int(shape.overhead_bytes), match=match, stations=classes,
                    default=FairClass(DEFAULT_MINOR, default_rate, total))
