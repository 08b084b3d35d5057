"""What a lab is, as data: the plan asked for, the state brought up, the shaping report.

Pure data, no side effects: host roles, ``HostPlan``/``LinkShape``/``LabPlan``, the address plan,
``HostState``/``LabState`` (the manifest's ``lab`` entry), ``StationClass``/``ShapingReport`` (one
shaped queue, as read back), and ``LabError``. Every other lab module (both backends, shaping,
capabilities, cleanup) builds on this one; it imports nothing of the lab but ``names``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from testbed.lab import names

ROUTER_ROLES = ("ap", "enb")
STATION_ROLES = ("md", "ext")
WIRED_ROLES = ("es",)
LAB_ROLES = ROUTER_ROLES + STATION_ROLES + WIRED_ROLES

RECORDED_SYSCTLS = (
    "net.ipv4.tcp_slow_start_after_idle",
    "net.ipv4.tcp_congestion_control",
    "net.ipv4.tcp_no_metrics_save",
)
SYSCTL_RE = re.compile(r"^net(\.[A-Za-z0-9_-]+)+$")

SysctlItems = tuple[tuple[str, str], ...]


def _sysctl_items(value: Mapping[str, Any] | Sequence[tuple[str, Any]] | None) -> SysctlItems:
    if not value:
        return ()
    items = value.items() if isinstance(value, Mapping) else value
    out = []
    for k, v in items:
        if not SYSCTL_RE.match(k):
            raise ValueError(
                f"sysctl {k!r}: only per-namespace net.* sysctls may be set by the lab"
            )
        out.append((k, str(v)))
    return tuple(sorted(out))


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class HostPlan:
    """One emulated host. ``role``: md | es | ap | enb | ext.

    ``cpu_fraction``: cap the host's processes (those started with ``NamespaceLab.popen``) to this
    fraction of one core. ``sysctls``: per-host ``net.*`` sysctls (dict accepted).
    """

    name: str
    role: str
    cpu_fraction: float | None = None
    sysctls: SysctlItems = ()

    def __post_init__(self) -> None:
        names.check_host(self.name)
        if self.role not in LAB_ROLES:
            raise ValueError(
                f"host {self.name}: role must be one of {LAB_ROLES}, got {self.role!r}")
        object.__setattr__(self, "sysctls", _sysctl_items(self.sysctls))
        if self.cpu_fraction is not None and not (0 < self.cpu_fraction <= 64):
            raise ValueError(f"host {self.name}: cpu_fraction must be in (0, 64]")


@dataclass(frozen=True)
class LinkShape:
    """The shared medium: rate (Mbit/s, counting whole Ethernet frames + ``overhead_bytes``),
    delay/jitter/loss (netem only), queue limit in packets, per-station fairness (HTB), and the
    token-bucket burst for tbf/htb (None = one frame + 0.5 ms at the rate: about 1.1-2 frames at
    3-24 Mbit/s, the smallest that keeps the rate; see ``testbed.lab.host_shaping``)."""

    rate_mbit: float
    delay_ms: float = 0
    jitter_ms: float = 0
    loss_pct: float = 0
    queue_packets: int = 100
    overhead_bytes: int = 0
    fair_per_station: bool = False
    burst_bytes: int | None = None

    def __post_init__(self) -> None:
        if not (0 < self.rate_mbit <= 100_000):
            raise ValueError(f"rate_mbit must be in (0, 100000], got {self.rate_mbit}")
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError("delay_ms and jitter_ms must be >= 0")
        if not (0 <= self.loss_pct <= 100):
            raise ValueError("loss_pct must be in [0, 100]")
        if not (1 <= self.queue_packets <= 100_000):
            raise ValueError("queue_packets must be in [1, 100000]")
        if not (0 <= self.overhead_bytes <= 1000):
            raise ValueError("overhead_bytes must be in [0, 1000]")
        if self.burst_bytes is not None and not (1 <= self.burst_bytes <= 10_000_000):
            raise ValueError("burst_bytes must be in [1, 10 MB]")


@dataclass(frozen=True)
class LabPlan:
    run_id: str
    hosts: tuple[HostPlan, ...]
    medium: LinkShape
    subnet: str = "198.18.0.0/15"
    downlink: LinkShape | None = None  # None: the same shape as ``medium``
    sysctls: SysctlItems = ()  # every host (HostPlan.sysctls override)
    disable_ipv6: bool = True

    def __post_init__(self) -> None:
        names.check_run_id(self.run_id)
        object.__setattr__(self, "hosts", tuple(self.hosts))
        object.__setattr__(self, "sysctls", _sysctl_items(self.sysctls))
        seen = set()
        for h in self.hosts:
            if h.name in seen:
                raise ValueError(f"duplicate host name {h.name}")
            seen.add(h.name)
        routers = [h for h in self.hosts if h.role in ROUTER_ROLES]
        if len(routers) != 1:
            raise ValueError(f"a lab needs exactly one ap/enb host, got {len(routers)}")
        if len(self.hosts) < 2:
            raise ValueError("a lab needs at least one host besides the ap/enb")
        net = ipaddress.ip_network(self.subnet)
        if net.version != 4 or net.prefixlen > 23:
            raise ValueError(f"subnet must be an IPv4 network of /23 or larger, got {self.subnet}")
        half = 2 ** (24 - net.prefixlen - 1)  # /24s per half
        if len(self.stations) >= half or len(self.wired) > half:
            raise ValueError(f"subnet {self.subnet} too small for this many hosts")

    @property
    def router(self) -> HostPlan:
        return next(h for h in self.hosts if h.role in ROUTER_ROLES)

    @property
    def stations(self) -> tuple[HostPlan, ...]:
        return tuple(h for h in self.hosts if h.role in STATION_ROLES)

    @property
    def wired(self) -> tuple[HostPlan, ...]:
        return tuple(h for h in self.hosts if h.role in WIRED_ROLES)

    def host(self, name: str) -> HostPlan:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    @classmethod
    def star(
        cls,
        medium: LinkShape,
        *,
        run_id: str | None = None,
        router: str = "ap",
        stations: Sequence[str] = ("md", "ext"),
        servers: Sequence[str] = ("es",),
        **kwargs: Any,
    ) -> "LabPlan":
        """The paper's cell: ``md`` + ``ext`` stations, ``es`` wired, router ``ap`` (or ``enb``).

        Station roles: ``md`` for a host named md*, else ``ext``."""
        hosts = [HostPlan(router, "enb" if router.startswith("enb") else "ap")]
        hosts += [HostPlan(s, "md" if s.startswith("md") else "ext") for s in stations]
        hosts += [HostPlan(s, "es") for s in servers]
        return cls(run_id=run_id or names.new_run_id(), hosts=tuple(hosts), medium=medium,
                   **kwargs)


@dataclass(frozen=True)
class HostAddressing:
    host: str
    network: str  # e.g. 198.18.1.0/24
    address: str  # host side, e.g. 198.18.1.2
    router_address: str  # e.g. 198.18.1.1
    prefixlen: int


def address_plan(plan: LabPlan) -> dict[str, HostAddressing]:
    """Addresses of every non-router host: the first half of ``plan.subnet`` holds the stations,
    the k-th (k = 1, 2, ...) on its k-th /24; the second half the wired hosts, the j-th (j = 0, 1,
    ...) on its j-th /24. In each /24 the router side is ``.1``, the host side ``.2``."""
    net = ipaddress.ip_network(plan.subnet)
    wireless, wired = net.subnets(prefixlen_diff=1)
    out: dict[str, HostAddressing] = {}

    def nth24(half: ipaddress.IPv4Network, k: int) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(f"{half.network_address + k * 256}/24")

    for k, h in enumerate(plan.stations, start=1):
        n = nth24(wireless, k)
        out[h.name] = HostAddressing(h.name, str(n), str(n.network_address + 2),
                                     str(n.network_address + 1), 24)
    for j, h in enumerate(plan.wired):
        n = nth24(wired, j)
        out[h.name] = HostAddressing(h.name, str(n), str(n.network_address + 2),
                                     str(n.network_address + 1), 24)
    return out


# --------------------------------------------------------------------------- shaping report


@dataclass(frozen=True)
class StationClass:
    """A station served by its own HTB class: matched by its subnet (src up, dst down)."""

    name: str
    network: str


@dataclass
class ShapingReport:
    label: str
    namespace: str
    interface: str
    backend: str  # "netem" | "htb+netem" | "tbf" | "htb"
    feeds: list[str]
    requested: dict[str, Any]
    applied: dict[str, Any] = field(default_factory=dict)
    not_applied: dict[str, str] = field(default_factory=dict)
    qdiscs: list[dict[str, Any]] = field(default_factory=list)
    classes: list[dict[str, Any]] = field(default_factory=list)
    filters: list[dict[str, Any]] = field(default_factory=list)
    redirects: list[dict[str, Any]] = field(default_factory=list)
    expected: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def qdisc(self, kind: str) -> dict[str, Any] | None:
        for q in self.qdiscs:
            if q["kind"] == kind:
                return q
        return None


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class HostState:
    name: str
    role: str
    namespace: str
    interface: str | None  # host-side interface (None for the router)
    address: str | None  # host-side address (router: None; see router_addresses)
    network: str | None
    gateway: str | None
    router_interface: str | None  # the router-side end of this host's veth
    sysctls: dict[str, str]
    offloads: dict[str, dict[str, Any]]
    cpu: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LabState:
    run_id: str
    hosts: dict[str, HostState]
    shaping: list[ShapingReport]
    capabilities: dict[str, bool]
    address_plan: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "hosts": {k: v.to_dict() for k, v in self.hosts.items()},
            "shaping": [r.to_dict() for r in self.shaping],
            "capabilities": dict(self.capabilities),
            "address_plan": self.address_plan,
            "notes": list(self.notes),
        }


class LabError(RuntimeError):
    """The lab cannot be brought up, reshaped or read as asked (the message says why)."""
