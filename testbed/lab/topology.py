"""The emulated lab: one network namespace per host, a star around the AP/eNB, one shared medium.

Topology (paper Section V: a WiFi/LTE cell with the MD and external nodes as stations and the ES
wired to the AP)::

        md  (tb-<run>-md)   198.18.1.2/24 ──veth── 198.18.1.1 ┐
        ext (tb-<run>-ext)  198.18.2.2/24 ──veth── 198.18.2.1 ├ ap (tb-<run>-ap)
        es  (tb-<run>-es)   198.19.0.2/24 ──veth── 198.19.0.1 ┘   ip_forward=1

Address plan (from ``LabPlan.subnet``, default 198.18.0.0/15, the benchmarking range): the first
half (198.18.0.0/16) holds the wireless stations (roles ``md`` and ``ext``), the k-th station
(k = 1, 2, ... in plan order) on 198.18.k.0/24; the second half (198.19.0.0/16) holds the wired
hosts (role ``es``), the j-th (j = 0, 1, ...) on 198.19.j.0/24. In each /24 the router side is
``.1`` and the host side ``.2``; every host's default route points at its ``.1``.

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
``testbed.lab.shaping`` for the exact qdisc trees with and without netem, and for what the
report says about bursts. Up- and downlink are modelled as two independent queues (full duplex);
WiFi's half-duplex airtime sharing between the directions is not modelled.

Every veth end (and ifb) on the path has TSO/GSO/GRO (and the other segmentation offloads)
turned off, through pyroute2's ethtool ioctl run inside the namespace (``ethtool -K`` in the
namespace is the fallback), and the state is read back into the report.

Per-namespace sysctls: the router gets ``net.ipv4.ip_forward=1``; IPv6 is disabled in every
namespace by default (no router solicitations / MLD noise on the shaped links); ``LabPlan.sysctls``
(every host) and ``HostPlan.sysctls`` (one host) set any ``net.*`` sysctl; the TCP ones that
decide per-frame transfer times (``RECORDED_SYSCTLS``) are read back and reported per host.

Signals and teardown: ``up()`` and ``down()`` run with SIGINT/SIGTERM deferred (blocked in the main
thread, delivered right after), so an interrupt never leaves a half-made object. A failure
or interrupt during ``up()`` tears down whatever was made and re-raises. As a context manager the
lab is torn down on any exit, including KeyboardInterrupt, and SIGTERM is turned into
``SystemExit`` while the lab is up (if no other SIGTERM handler is installed). A SIGKILLed run
is removed by ``testbed.lab.cleanup.clean()``: everything carries the run's owned prefix.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from typing import Any

from pyroute2 import IPRoute

from testbed.lab import capabilities as caps_mod
from testbed.lab import cleanup, cpu, names, netns, runs, shaping
from testbed.lab.plan import (
    RECORDED_SYSCTLS,
    SYSCTL_RE,
    HostState,
    LabError,
    LabPlan,
    LabState,
    LinkShape,
    ShapingReport,
    StationClass,
    address_plan,
)

log = logging.getLogger(__name__)



# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Block SIGINT/SIGTERM in the main thread for the duration; pending ones fire after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


in_namespace = netns.in_namespace


def _sysctl_path(key: str) -> str:
    if not SYSCTL_RE.match(key):
        raise ValueError(key)
    return "/proc/sys/" + key.replace(".", "/")


def read_sysctls(ns: str, keys: Sequence[str]) -> dict[str, str]:
    out = {}
    with in_namespace(ns):
        for k in keys:
            try:
                with open(_sysctl_path(k)) as fh:
                    out[k] = fh.read().strip()
            except OSError as e:
                out[k] = f"unreadable: {e.strerror}"
    return out


def _host_allowed_congestion_control() -> str:
    try:
        with open("/proc/sys/net/ipv4/tcp_allowed_congestion_control") as fh:
            return fh.read().strip()
    except OSError:
        return "?"


def write_sysctls(ns: str, items: Sequence[tuple[str, str]]) -> None:
    """Write per-namespace sysctls by opening /proc/sys inside the namespace."""
    allowed = _host_allowed_congestion_control()  # host-wide, visible in the root namespace only
    with in_namespace(ns):
        for k, v in items:
            try:
                with open(_sysctl_path(k), "w") as fh:
                    fh.write(str(v))
            except OSError as e:
                hint = ""
                if k == "net.ipv4.tcp_congestion_control":
                    hint = (
                        f" (outside the root namespace only algorithms listed in the host-wide "
                        f"net.ipv4.tcp_allowed_congestion_control may be set; here: {allowed!r}. "
                        f"Add it there, e.g. sysctl -w net.ipv4.tcp_allowed_congestion_control="
                        f"'{allowed} {v}', or choose one of those)"
                    )
                raise LabError(f"{ns}: cannot set {k}={v}: {e.strerror}{hint}") from e


OFFLOAD_OFF = ("tx-generic-segmentation", "rx-gro", "rx-gro-list", "rx-udp-gro-forwarding",
               "tx-gso-list")
OFFLOAD_CHECK = {"tso": "tx-tcp-segmentation", "gso": "tx-generic-segmentation", "gro": "rx-gro"}


def disable_offloads(ns: str, ifnames: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Turn off TSO/GSO/GRO (and every other segmentation offload) and read the state back.

    pyroute2's ethtool ioctl inside the namespace; the ``ethtool -K`` binary run in the
    namespace if that fails.
    """
    result: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    try:
        from pyroute2.ethtool.ioctl import IoctlEthtool
    except ImportError:  # pragma: no cover
        IoctlEthtool = None  # type: ignore[assignment]
    if IoctlEthtool is not None:
        with in_namespace(ns):
            for ifname in ifnames:
                try:
                    eth = IoctlEthtool(ifname)
                    try:
                        feats = eth.get_features()
                        for name in feats.keys():
                            if (name.endswith("segmentation") or name in OFFLOAD_OFF) and \
                                    feats.is_available(name) and feats.is_active(name):
                                feats[name] = False
                        eth.set_features(feats)
                        after = eth.get_features()
                        state = {k: after.is_active(v) for k, v in OFFLOAD_CHECK.items()}
                        still = sorted(n for n in after.keys()
                                       if n.endswith("segmentation") and after.is_active(n))
                    finally:
                        eth.close()
                    result[ifname] = {**state, "method": "pyroute2.ethtool ioctl",
                                      "other_segmentation_still_on": still}
                except Exception as e:
                    log.debug("ethtool ioctl on %s/%s failed: %s", ns, ifname, e)
                    failed.append(ifname)
    else:
        failed = list(ifnames)
    for ifname in failed:
        r = netns.run_in_namespace(ns, ["ethtool", "-K", ifname, "tso", "off", "gso", "off",
                                          "gro", "off"], timeout=10)
        q = netns.run_in_namespace(ns, ["ethtool", "-k", ifname], timeout=10)
        text = q.stdout
        state = {}
        for short, long_ in (("tso", "tcp-segmentation-offload"),
                             ("gso", "generic-segmentation-offload"),
                             ("gro", "generic-receive-offload")):
            m = re.search(rf"^{long_}:\s*(on|off)", text, re.M)
            state[short] = (m.group(1) == "on") if m else None
        result[ifname] = {**state, "method": "ethtool -K in namespace",
                          "ethtool_rc": r.returncode}
    return result


# --------------------------------------------------------------------------- the lab


class SigtermGuard:
    """Mixin for a lab: while it is up, SIGTERM unwinds its ``with`` block (see
    :func:`_make_sigterm_handler`), then the previous handler comes back. Only the main thread
    can set handlers, and a handler someone else installed is left alone."""

    _old_sigterm: Any = None

    def _install_sigterm(self) -> None:
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            self._old_sigterm = signal.signal(signal.SIGTERM, _make_sigterm_handler(os.getpid()))

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None


class EmulatedLab(SigtermGuard):
    """Context manager around one emulated lab run; see the module docstring."""

    def __init__(
        self,
        plan: LabPlan,
        *,
        capabilities: caps_mod.Capabilities | None = None,
        handle_sigterm: bool = True,
    ) -> None:
        self.plan = plan
        self._caps = capabilities
        self._handle_sigterm = handle_sigterm
        self._addr = address_plan(plan)
        self._ipr: dict[str, IPRoute] = {}
        self._cpu_groups: dict[str, cpu.CpuGroup] = {}
        self._cpu_notes: dict[str, dict[str, Any]] = {}
        self._uplink_if: str | None = None
        self._downlink_if: str | None = None
        self._redirects: list[dict[str, Any]] = []
        self._offloads: dict[str, dict[str, dict[str, Any]]] = {}
        self._sysctls: dict[str, dict[str, str]] = {}
        self._reports: list[ShapingReport] = []
        self._notes: list[str] = []
        self.state: LabState | None = None
        self.teardown_log: list[str] = []
        self._owner_pid = os.getpid()
        self._claimed = False

    # ------------------------------------------------------------------ names
    @property
    def run_id(self) -> str:
        return self.plan.run_id

    def namespace(self, host: str) -> str:
        self.plan.host(host)
        return names.namespace_name(self.run_id, host)

    def address(self, host: str) -> str:
        if host not in self._addr:
            raise KeyError(f"{host} has no address of its own (router or unknown)")
        return self._addr[host].address

    def interface(self, host: str) -> str:
        return names.veth_names(self.run_id, host)[0]

    def router_interface(self, host: str) -> str:
        return names.veth_names(self.run_id, host)[1]

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> "EmulatedLab":
        if self._handle_sigterm:
            self._install_sigterm()
        try:
            self.up()
        except BaseException:
            self._restore_sigterm()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.down()
        finally:
            self._restore_sigterm()

    # ------------------------------------------------------------------ up / down
    def up(self) -> LabState:
        """Build the lab; on any failure (or interrupt) tear down what was made and re-raise."""
        self._owner_pid = os.getpid()
        try:
            with signals_deferred():
                self._check_capabilities()
                self._claimed = True  # from here on, owned objects of this run id are ours
                self._register()
                self._create_namespaces()
                self._create_links()
                self._configure_addresses()
                self._apply_sysctls()
                self._create_ifbs()
                self._disable_offloads()
                self._apply_shaping()
                self._setup_cpu()
                self.state = self._make_state()
                self._close_sockets()
        except BaseException:
            self._close_sockets()
            self.down()
            raise
        return self.state

    def down(self) -> None:
        """Remove everything this run made (idempotent; works after a partial ``up()``).

        A no-op in a forked child of the process that built the lab (e.g. pyroute2's helper
        processes, which inherit this stack and may be stopped with SIGTERM/SIGINT).
        """
        if os.getpid() != self._owner_pid or not self._claimed:
            return  # a forked helper, or up() never got past its checks (maybe: run id in use)
        with signals_deferred():
            self._close_sockets()
            self.teardown_log = cleanup.remove_run(self.run_id)
            self._cpu_groups.clear()
            self._cpu_notes.clear()
            self._redirects.clear()
            self._reports = []
            self._offloads.clear()
            self._sysctls.clear()
            self._notes = []
            self._uplink_if = self._downlink_if = None
            self.state = None

    # ------------------------------------------------------------------ steps
    def _check_capabilities(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the emulated lab needs root (network namespaces, qdiscs)")
        if self._caps is None:
            self._caps = caps_mod.detect()
        missing = [c for c in ("netns", "veth") if not self._caps.has(c)]
        if missing:
            raise LabError("missing: " + "; ".join(
                f"{c}: {self._caps[c].detail} (fix: {self._caps[c].fix})" for c in missing))
        try:
            shaping.choose_backend(self.plan.medium, self._caps)
        except RuntimeError as e:
            raise LabError(str(e)) from e
        needs_ifb = len(self.plan.stations) > 1 or len(self.plan.wired) > 1
        if needs_ifb:
            missing = [c for c in ("ifb", "clsact", "u32", "mirred") if not self._caps.has(c)]
            if missing:
                raise LabError(
                    "a shared medium for several stations needs " + ", ".join(missing) + ": "
                    + "; ".join(f"{self._caps[c].fix}" for c in missing))
        if netns.owned_namespaces(self.run_id):
            raise LabError(
                f"run id {self.run_id} is in use: {netns.owned_namespaces(self.run_id)}")

    def _register(self) -> None:
        runs.register_run(self.run_id, kind="lab", extra={
            "namespaces": [self.namespace(h.name) for h in self.plan.hosts]})

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
            netns.create_namespace(self.namespace(h.name))
            ipr = self._ns_ipr(h.name)
            lo = ipr.link_lookup(ifname="lo")
            if lo:
                ipr.link("set", index=lo[0], state="up")

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

    def _apply_sysctls(self) -> None:
        router = self.plan.router.name
        for h in self.plan.hosts:
            ns = self.namespace(h.name)
            items: dict[str, str] = {}
            if self.plan.disable_ipv6:
                items["net.ipv6.conf.all.disable_ipv6"] = "1"
                items["net.ipv6.conf.default.disable_ipv6"] = "1"
            if h.name == router:
                items["net.ipv4.ip_forward"] = "1"
            items.update(dict(self.plan.sysctls))
            items.update(dict(h.sysctls))
            if not os.path.exists("/proc/sys/net/ipv6") and self.plan.disable_ipv6:
                items.pop("net.ipv6.conf.all.disable_ipv6", None)
                items.pop("net.ipv6.conf.default.disable_ipv6", None)
            write_sysctls(ns, sorted(items.items()))
            keys = list(RECORDED_SYSCTLS) + [k for k in items if k not in RECORDED_SYSCTLS]
            got = read_sysctls(ns, keys)
            for k, v in items.items():
                if got.get(k) != v:
                    raise LabError(f"{ns}: {k} reads {got.get(k)!r} after writing {v!r}")
            self._sysctls[h.name] = got

    def _create_ifbs(self) -> None:
        router = self.plan.router.name
        ns = self.namespace(router)
        if len(self.plan.wired) > 1:
            self._uplink_if = names.ifb_name(self.run_id, "ul")
            shaping.add_ifb(ns, self._uplink_if)
        elif self.plan.wired:
            self._uplink_if = self.router_interface(self.plan.wired[0].name)
        if len(self.plan.stations) > 1:
            self._downlink_if = names.ifb_name(self.run_id, "dl")
            shaping.add_ifb(ns, self._downlink_if)
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

    def _apply_shaping(self, medium: LinkShape | None = None,
                       downlink: LinkShape | None = None) -> None:
        router = self.plan.router.name
        ns = self.namespace(router)
        up_shape = medium or self.plan.medium
        down_shape = downlink or (self.plan.downlink if medium is None else None) or up_shape
        stations = [StationClass(h.name, self._addr[h.name].network) for h in self.plan.stations]
        reports: list[ShapingReport] = []
        new_redirects = not self._redirects
        if self._uplink_if:
            wired_ifs = [self.router_interface(h.name) for h in self.plan.wired]
            if names.is_owned_ifb(self._uplink_if) and new_redirects:
                for i in wired_ifs:
                    self._redirects.append(
                        shaping.redirect_to_ifb(ns, i, self._uplink_if, "egress"))
            r = shaping.apply_shape(ns, self._uplink_if, up_shape, self._caps, label="uplink",
                                    stations=stations, match="src", feeds=wired_ifs)
            reports.append(r)
        if self._downlink_if:
            st_ifs = [self.router_interface(h.name) for h in self.plan.stations]
            if names.is_owned_ifb(self._downlink_if) and new_redirects:
                for i in st_ifs:
                    self._redirects.append(
                        shaping.redirect_to_ifb(ns, i, self._downlink_if, "egress"))
            r = shaping.apply_shape(ns, self._downlink_if, down_shape, self._caps,
                                    label="downlink", stations=stations, match="dst", feeds=st_ifs)
            reports.append(r)
        for r in reports:
            r.redirects = [d for d in self._redirects if d["interface"] in r.feeds]
        self._reports = reports

    def _setup_cpu(self) -> None:
        groups, notes, missing = cpu.cap_hosts(
            self.run_id, {h.name: h.cpu_fraction for h in self.plan.hosts
                          if h.cpu_fraction is not None})
        self._cpu_groups.update(groups)
        self._cpu_notes.update(notes)
        self._notes.extend(missing)

    def _make_state(self) -> LabState:
        hosts: dict[str, HostState] = {}
        router = self.plan.router.name
        for h in self.plan.hosts:
            a = self._addr.get(h.name)
            hosts[h.name] = HostState(
                name=h.name,
                role=h.role,
                namespace=self.namespace(h.name),
                interface=None if h.name == router else self.interface(h.name),
                address=a.address if a else None,
                network=a.network if a else None,
                gateway=a.router_address if a else None,
                router_interface=None if h.name == router else self.router_interface(h.name),
                sysctls=dict(self._sysctls.get(h.name, {})),
                offloads=dict(self._offloads.get(h.name, {})),
                cpu=self._cpu_notes.get(h.name),
            )
        return LabState(
            run_id=self.run_id,
            hosts=hosts,
            shaping=list(self._reports),
            capabilities=self._caps.summary() if self._caps else {},
            address_plan={k: asdict(v) for k, v in self._addr.items()},
            notes=list(self._notes),
        )

    # ------------------------------------------------------------------ while up
    def reshape(self, medium: LinkShape, downlink: LinkShape | None = None) -> list[ShapingReport]:
        """Replace the shaping of a running lab (e.g. per load step); returns the new reports."""
        if self.state is None:
            raise LabError("lab is not up")
        with signals_deferred():
            self._apply_shaping(medium, downlink)
            self.state = replace(self.state, shaping=list(self._reports))
        return list(self._reports)

    def cpu_group(self, host: str) -> str | None:
        g = self._cpu_groups.get(host)
        return g.path if g else None

    def add_to_cpu_group(self, host: str, pid: int) -> bool:
        """Put ``pid`` under ``host``'s CPU cap; False if that host has no cap applied."""
        g = self._cpu_groups.get(host)
        if g is None:
            return False
        cpu.add_pid(g, pid)
        return True

    def popen(self, host: str, argv: Sequence[str], *, capped: bool = True,
              **kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` inside ``host``'s namespace (and CPU cap, if any)."""
        return netns.popen_in_namespace(
            self.namespace(host), argv, cgroup=self.cpu_group(host) if capped else None, **kwargs)

    def run(self, host: str, argv: Sequence[str], *, timeout: float = 30,
            **kwargs: Any) -> subprocess.CompletedProcess:
        return netns.run_in_namespace(self.namespace(host), argv, timeout=timeout,
                                        cgroup=self.cpu_group(host), **kwargs)


def _make_sigterm_handler(owner_pid: int) -> Any:
    """SIGTERM -> SystemExit in the lab's process (so ``with`` blocks unwind and tear down).

    A forked child (pyroute2 helpers fork without exec and are stopped with SIGTERM) inherits
    the handler: there it terminates at once, as SIGTERM's default would, without unwinding
    the parent's stack.
    """

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != owner_pid:
            os._exit(128 + signum)
        raise SystemExit(128 + signum)

    return handler
