"""The namespace backend: one network namespace per host, the AP/eNB included, a star around it,
one shared medium shaped by the host kernel's qdiscs.

Topology (paper Section V: a WiFi/LTE cell with the MD and external nodes as stations and the ES
wired to the AP)::

        md  (tb-<run>-md)   198.18.1.2/24 ──veth── 198.18.1.1 ┐
        ext (tb-<run>-ext)  198.18.2.2/24 ──veth── 198.18.2.1 ├ ap (tb-<run>-ap)
        es  (tb-<run>-es)   198.19.0.2/24 ──veth── 198.19.0.1 ┘   ip_forward=1

Address plan (``testbed.lab.plan.address_plan``, from ``LabPlan.subnet``, default 198.18.0.0/15,
the benchmarking range): the first half (198.18.0.0/16) holds the wireless stations (roles ``md``
and ``ext``), the k-th station (k = 1, 2, ... in plan order) on 198.18.k.0/24; the second half
(198.19.0.0/16) holds the wired hosts (role ``es``), the j-th (j = 0, 1, ...) on 198.19.j.0/24. In
each /24 the router side is ``.1`` and the host side ``.2``; every host's default route points at
its ``.1``.

The shared medium. Wireless stations share one channel, so the MD's frames and the external
node's UDP load must meet in ONE queue with ONE rate:

* uplink (stations -> ES): shaped on the router's egress toward the ES (``tb<run>-a<es>``):
  all station traffic to the ES leaves through that one interface. (With several wired hosts,
  their router-side veths are redirected into one ifb ``tb<run>-iul`` and shaped there.)
* downlink (toward the stations): the router-side veths of all stations are redirected
  (clsact egress + u32 match-all + mirred) into one ifb ``tb<run>-idl``, shaped there, so
  replies and ACKs to every station share one queue too. (One station: shaped on its veth.)

``LinkShape.fair_per_station`` (LTE: the eNB schedules resource blocks fairly) turns each queue
into HTB with one class per station (rate = R/n, ceil = R) so one UE cannot starve another;
without it (WiFi) it is one FIFO whose packet limit decides the queueing delay. See
``testbed.lab.host_shaping`` for the exact qdisc trees with and without netem, and for what the
report says about bursts. Up- and downlink are modelled as two independent queues (full duplex);
WiFi's half-duplex airtime sharing between the directions is not modelled.

Every veth end (and ifb) on the path has TSO/GSO/GRO (and the other segmentation offloads)
turned off, through pyroute2's ethtool ioctl run inside the namespace (``ethtool -K`` in the
namespace is the fallback), and the state is read back into the report.

Per-namespace sysctls: the router gets ``net.ipv4.ip_forward=1``; IPv6 is disabled in every
namespace by default (no router solicitations / MLD noise on the shaped links); ``LabPlan.sysctls``
(every host) and ``HostPlan.sysctls`` (one host) set any ``net.*`` sysctl; the TCP ones that
decide per-frame transfer times (``RECORDED_SYSCTLS``) are read back and reported per host.

Signals and teardown: ``up()`` and ``down()`` run with SIGINT/SIGTERM deferred (blocked in the
main thread, delivered right after), so an interrupt never leaves a half-made object. A failure or
interrupt during ``up()`` tears down whatever was made and re-raises. As a context manager the lab
is torn down on any exit, including KeyboardInterrupt, and SIGTERM is turned into ``SystemExit``
while the lab is up (if no other SIGTERM handler is installed). A SIGKILLed run is removed by
``testbed clean`` (``testbed.lab.backends.clean``): everything carries the run's owned prefix.
"""


from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from pyroute2 import IPRoute

from testbed.lab import capabilities as caps_mod
from testbed.lab import host_shaping, names, netns
from testbed.lab.base import LabBase, LabSetup
from testbed.lab.nsconfig import disable_offloads
from testbed.lab.plan import LabError, LabPlan, LabState, ShapingReport, StationClass, LinkShape
from testbed.lab.signals import signals_deferred

log = logging.getLogger(__name__)


class NamespaceLab(LabBase):
    """Context manager around one lab run with every host a namespace; see the module docstring."""

    def __init__(
        self,
        plan: LabPlan,
        *,
        capabilities: caps_mod.Capabilities | None = None,
        handle_sigterm: bool = True,
    ) -> None:
        super().__init__(plan, handle_sigterm=handle_sigterm)
        self._caps = capabilities
        self._ipr: dict[str, IPRoute] = {}
        self._uplink_if: str | None = None
        self._downlink_if: str | None = None
        self._redirects: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ names
    def interface(self, host: str) -> str:
        return names.veth_names(self.run_id, host)[0]

    def router_interface(self, host: str) -> str:
        return names.veth_names(self.run_id, host)[1]

    # ------------------------------------------------------------------ lifecycle
    def _check_backend(self) -> None:
        if self._caps is None:
            self._caps = caps_mod.detect()
        missing = [c for c in ("netns", "veth") if not self._caps.has(c)]
        if missing:
            raise LabError("missing: " + "; ".join(
                f"{c}: {self._caps[c].detail} (fix: {self._caps[c].fix})" for c in missing))
        try:
            host_shaping.choose_tree(self.plan.medium, self._caps)
        except RuntimeError as e:
            raise LabError(str(e)) from e
        needs_ifb = len(self.plan.stations) > 1 or len(self.plan.wired) > 1
        if needs_ifb:
            missing = [c for c in ("ifb", "clsact", "u32", "mirred") if not self._caps.has(c)]
            if missing:
                raise LabError(
                    "a shared medium for several stations needs " + ", ".join(missing) + ": "
                    + "; ".join(f"{self._caps[c].fix}" for c in missing))

    def _build(self) -> None:
        try:
            with signals_deferred():
                self._create_namespaces()
                self._create_links()
                self._configure_addresses()
                for h in self.plan.hosts:
                    self._apply_sysctls(h)
                self._create_ifbs()
                self._disable_offloads()
                self._shape()
        finally:
            self._close_sockets()

    def _teardown(self) -> None:
        self._close_sockets()
        self._redirects.clear()
        self._uplink_if = self._downlink_if = None

    # ------------------------------------------------------------------ steps
    def _ns_ipr(self, host: str) -> IPRoute:
        if host not in self._ipr:
            self._ipr[host] = IPRoute(netns=self.namespace(host), flags=0)
        return self._ipr[host]

    def _close_sockets(self) -> None:
        for ipr in self._ipr.values():
            try:
                ipr.close()
            except Exception:
                pass
        self._ipr.clear()

    def _create_namespaces(self) -> None:
        for h in self.plan.hosts:
            netns.create_host_namespace(self.namespace(h.name))

    def _create_links(self) -> None:
        router = self.plan.router.name
        ripr = self._ns_ipr(router)
        for h in self.plan.hosts:
            if h.name == router:
                continue
            host_if, router_if = names.veth_names(self.run_id, h.name)
            peer_ns = netns.netns_path(self.namespace(h.name))
            ripr.link("add", ifname=router_if, kind="veth",
                      peer={"ifname": host_if, "net_ns_fd": peer_ns})
            ripr.link("set", index=ripr.link_lookup(ifname=router_if)[0], state="up")
            hipr = self._ns_ipr(h.name)
            found = hipr.link_lookup(ifname=host_if)
            if not found:
                raise LabError(f"veth end {host_if} did not appear in {self.namespace(h.name)}")
            hipr.link("set", index=found[0], state="up")

    def _configure_addresses(self) -> None:
        router = self.plan.router.name
        ripr = self._ns_ipr(router)
        for name, a in self._addr.items():
            host_if, router_if = names.veth_names(self.run_id, name)
            ripr.addr("add", index=ripr.link_lookup(ifname=router_if)[0],
                      address=a.router_address, prefixlen=a.prefixlen)
            hipr = self._ns_ipr(name)
            hipr.addr("add", index=hipr.link_lookup(ifname=host_if)[0],
                      address=a.address, prefixlen=a.prefixlen)
            hipr.route("add", dst="0.0.0.0/0", gateway=a.router_address)

    def _create_ifbs(self) -> None:
        router = self.plan.router.name
        ns = self.namespace(router)
        if len(self.plan.wired) > 1:
            self._uplink_if = names.ifb_name(self.run_id, "ul")
            host_shaping.add_ifb(ns, self._uplink_if)
        elif self.plan.wired:
            self._uplink_if = self.router_interface(self.plan.wired[0].name)
        if len(self.plan.stations) > 1:
            self._downlink_if = names.ifb_name(self.run_id, "dl")
            host_shaping.add_ifb(ns, self._downlink_if)
        elif self.plan.stations:
            self._downlink_if = self.router_interface(self.plan.stations[0].name)

    def _disable_offloads(self) -> None:
        router = self.plan.router.name
        router_ifs = [self.router_interface(h.name) for h in self.plan.hosts if h.name != router]
        router_ifs += [i for i in (self._uplink_if, self._downlink_if)
                       if i and names.is_owned_ifb(i)]
        self._offloads[router] = disable_offloads(self.namespace(router), router_ifs)
        for h in self.plan.hosts:
            if h.name != router:
                self._offloads[h.name] = disable_offloads(self.namespace(h.name),
                                                          [self.interface(h.name)])
        bad = [(host, i, st) for host, d in self._offloads.items() for i, st in d.items()
               if st.get("tso") or st.get("gso")]
        if bad:
            self._notes.append(f"segmentation offloads still on: {bad}")

    def _shape(self, medium: LinkShape | None = None, downlink: LinkShape | None = None) -> None:
        router = self.plan.router.name
        ns = self.namespace(router)
        up_shape, down_shape = self._shapes(medium, downlink)
        stations = [StationClass(h.name, self._addr[h.name].network) for h in self.plan.stations]
        reports: list[ShapingReport] = []
        new_redirects = not self._redirects
        if self._uplink_if:
            wired_ifs = [self.router_interface(h.name) for h in self.plan.wired]
            if names.is_owned_ifb(self._uplink_if) and new_redirects:
                for i in wired_ifs:
                    self._redirects.append(
                        host_shaping.redirect_to_ifb(ns, i, self._uplink_if, "egress"))
            r = host_shaping.apply_shape(ns, self._uplink_if, up_shape, self._caps, label="uplink",
                                    stations=stations, match="src", feeds=wired_ifs)
            reports.append(r)
        if self._downlink_if:
            st_ifs = [self.router_interface(h.name) for h in self.plan.stations]
            if names.is_owned_ifb(self._downlink_if) and new_redirects:
                for i in st_ifs:
                    self._redirects.append(
                        host_shaping.redirect_to_ifb(ns, i, self._downlink_if, "egress"))
            r = host_shaping.apply_shape(ns, self._downlink_if, down_shape, self._caps,
                                    label="downlink", stations=stations, match="dst", feeds=st_ifs)
            reports.append(r)
        for r in reports:
            r.redirects = [d for d in self._redirects if d["interface"] in r.feeds]
        self._reports = reports

    def _make_state(self) -> LabState:
        router = self.plan.router.name
        hosts = {h.name: self._host_state(
            h, None if h.name == router else self.interface(h.name),
            None if h.name == router else self.router_interface(h.name)) for h in self.plan.hosts}
        return LabState(
            run_id=self.run_id,
            hosts=hosts,
            shaping=list(self._reports),
            capabilities=self._caps.summary() if self._caps else {},
            address_plan={k: asdict(v) for k, v in self._addr.items()},
            notes=list(self._notes),
        )

    # ------------------------------------------------------------------ while up
    def popen(self, host: str, argv: Sequence[str], *, capped: bool = True,
              **kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` inside ``host``'s namespace (and CPU cap, if any)."""
        return netns.popen_in_namespace(
            self.namespace(host), argv, cgroup=self.cpu_group(host) if capped else None, **kwargs)

    def run(self, host: str, argv: Sequence[str], *, timeout: float = 30,
            **kwargs: Any) -> subprocess.CompletedProcess:
        return netns.run_in_namespace(self.namespace(host), argv, timeout=timeout,
                                        cgroup=self.cpu_group(host), **kwargs)


def make_lab(plan: LabPlan, setup: LabSetup) -> NamespaceLab:
    """The registry's factory (``testbed.lab.backends``)."""
    return NamespaceLab(plan, capabilities=setup.capabilities)
