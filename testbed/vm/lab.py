"""The emulated lab with the AP/eNB as a QEMU VM: real netem on a host kernel without it.

Same hosts, addresses and routes as :class:`testbed.lab.namespace_lab.NamespaceLab`, with the router
namespace replaced by the VM (:class:`~testbed.vm.boot.AccessPointVm`)::

        md  (tb-<run>-md)   198.18.1.2/24 ── tap tb<run>-vmd  ── eth1 198.18.1.1 ┐
        ext (tb-<run>-ext)  198.18.2.2/24 ── tap tb<run>-vext ── eth2 198.18.2.1 ├ AP VM
        es  (tb-<run>-es)   198.19.0.2/24 ── tap tb<run>-ves  ── eth3 198.19.0.1 ┘ ip_forward=1
                                               (eth0: management /30, dropbear, never shaped)

The shared medium is shaped inside the VM, over SSH, with ``tc`` (:func:`shape_medium`):

* uplink (stations -> ES): the egress of the VM NIC toward the ES (several ES hosts: their NICs
  redirected into one ifb ``ifbul``), so the MD's frames and the external node's load meet in
  one queue;
* downlink (toward the stations): every station NIC's egress redirected (clsact + ``u32 match
  u32 0 0`` + ``mirred egress redirect``) into one ifb ``ifbdl`` and shaped there (one station:
  its NIC directly);
* each queue is ``netem limit Q delay D [jitter J distribution normal] [loss L%] rate R`` at the
  root (no token bucket: packets are serialised at R), or, with ``fair_per_station`` (LTE), an
  ``htb`` tree with one class per station (rate R/n, ceil R) and ``netem`` leaves for delay,
  jitter, loss and the queue limit (the rate then comes from HTB's token bucket).

WiFi mode (``wifi=WifiSettings(...)``, :mod:`testbed.vm.radio`): the stations associate to
hostapd over mac80211_hwsim radios in the VM; each station NIC then lives in its own namespace in
the VM with the station's radio, the downlink queue is netem on the AP radio's egress, and the
unshaped 802.11 path is measured once against the medium's rate (``RADIO_HEADROOM``).

Segmentation offloads (TSO/GSO/GRO) are off on every guest NIC and ifb and on the host end of
every tap. What the VM holds is read back with ``tc -s qdisc`` / ``tc class`` / ``tc filter`` into
:class:`~testbed.lab.plan.ShapingReport` entries, the same manifest shape the namespace lab
writes.

Host namespaces get the lab's sysctls (IPv6 off, the scenario's TCP settings, read back) and CPU
caps (cgroups) exactly as in the namespace lab. Teardown (any exit, also Ctrl-C and SIGTERM):
VM powered off, taps deleted, then ``testbed.lab.cleanup.remove_run`` (processes in the
namespaces, namespaces, cgroups, run record). A killed run is cleaned by ``testbed clean``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from pyroute2 import IPRoute

from testbed.lab import netns, procs
from testbed.lab.base import LabBase, LabSetup
from testbed.lab.nsconfig import disable_offloads
from testbed.lab.plan import (
    HostPlan,
    HostState,
    LabError,
    LabPlan,
    LabState,
    LinkShape,
    ShapingReport,
    StationClass,
)
from testbed.lab.queue_math import expected_tcp_goodput_mbit, fair_tree, frame_cost
from testbed.lab.signals import signals_deferred
from testbed.vm import shaping
from testbed.vm.boot import AccessPointVm, VmNic
from testbed.vm.build import VmImage, build_image
from testbed.vm.radio import NO_AIRTIME_NOTE, HwsimWifi, StationPlan
from testbed.wifi_settings import WifiSettings

log = logging.getLogger(__name__)

TC = shaping.TC
IP = "/usr/sbin/ip"
VM_SECRETS = ("keys", "initrd-run.img")
"""Per-run files in the VM's work folder that hold keys (the run's SSH keys; the overlay with the
VM's host key and authorized_keys): deleted at teardown, or by `testbed clean` after a kill."""
RADIO_HEADROOM = 1.5
"""WiFi mode: the unshaped 802.11 path must carry this multiple of the medium's rate."""
NETEM_ONLY_NOTE = ("WiFi without radios (hwsim: false): the medium is netem only, no 802.11 "
                   "association; the station NICs are routed directly by the VM")


def _bits(rate_Bps: int) -> str:
    return f"{rate_Bps * 8}bit"


# --------------------------------------------------------------------------- shaping in the VM


@dataclass
class VmShapingReport(ShapingReport):
    """A :class:`ShapingReport` plus what only the VM has: the ``tc`` commands run, ``tc -s
    qdisc`` as text, the guest NICs' offload state."""

    vm: dict[str, Any] = field(default_factory=dict)


def _shared_queue(vm: AccessPointVm, feeds: list[str], ifb: str) -> tuple[str, list[dict]]:
    """The device whose root qdisc serves ``feeds``: the NIC itself, or an ifb they redirect to."""
    if len(feeds) == 1:
        return feeds[0], []
    vm.run(f"{IP} link add {ifb} type ifb 2>/dev/null || true; {IP} link set {ifb} up", timeout=20)
    redirects = []
    for dev in feeds:
        vm.run([TC, "qdisc", "replace", "dev", dev, "clsact"], timeout=20)
        vm.run([TC, "filter", "add", "dev", dev, "egress", "prio", "1", "protocol", "all", "u32",
                "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb],
               timeout=20)
        redirects.append({"interface": dev, "hook": "egress", "qdisc": "clsact",
                          "filter": "u32 match u32 0 0 (all protocols) prio 1",
                          "action": f"mirred egress redirect dev {ifb}"})
    return ifb, redirects


def _netem_for(shape: LinkShape, *, rate: bool) -> shaping.Netem:
    return shaping.Netem(
        rate_mbit=shape.rate_mbit if rate else None, delay_ms=shape.delay_ms,
        jitter_ms=shape.jitter_ms, distribution="normal" if shape.jitter_ms else None,
        loss_pct=shape.loss_pct, limit_packets=shape.queue_packets,
        overhead_bytes=shape.overhead_bytes if rate else 0)


def _apply_fifo(vm: AccessPointVm, dev: str, shape: LinkShape) -> list[list[str]]:
    spec = _netem_for(shape, rate=True)
    argv = [TC, "qdisc", "replace", "dev", dev, "root", "handle", "1:", *spec.tc_args()]
    vm.run(argv, timeout=20)
    return [argv]


def _apply_fair(vm: AccessPointVm, dev: str, shape: LinkShape, stations: list[StationClass],
                match: str, report: ShapingReport) -> tuple[list[list[str]], int]:
    """The HTB tree of :func:`testbed.lab.queue_math.fair_tree` with netem leaves, as ``tc``."""
    tree = fair_tree(shape, stations, match)
    common = ["burst", f"{tree.burst_bytes}b", "cburst", f"{tree.burst_bytes}b",
              "quantum", str(tree.quantum_bytes)]
    if tree.overhead_bytes:
        common += ["overhead", str(tree.overhead_bytes)]
    leaf = _netem_for(shape, rate=False).tc_args()
    total = _bits(tree.rate_Bps)
    cmds = [[TC, "qdisc", "del", "dev", dev, "root"]]
    vm.run(cmds[0], timeout=20, check=False)
    cmds += [[TC, "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default",
              f"{tree.default.minor:x}"],
             [TC, "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb",
              "rate", total, "ceil", total, *common]]
    for c in (*tree.stations, tree.default):
        cmds += [[TC, "class", "add", "dev", dev, "parent", "1:1", "classid", c.classid, "htb",
                  "rate", _bits(c.rate_Bps), "ceil", _bits(c.ceil_Bps), *common],
                 [TC, "qdisc", "add", "dev", dev, "parent", c.classid, "handle", f"{c.minor:x}:",
                  *leaf]]
        if c.station is not None:
            cmds.append([TC, "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip",
                         "prio", "1", "u32", "match", "ip", match, c.network,
                         "flowid", c.classid])
    for argv in cmds[1:]:
        vm.run(argv, timeout=20)
    report.applied.update(per_station_classes=tree.report_classes(),
                          default_class=tree.default.classid, leaf_qdisc="netem",
                          burst_bytes=tree.burst_bytes, cburst_bytes=tree.burst_bytes,
                          queue_limit_scope="per class" if stations else "shared")
    report.notes.append("rate by HTB (token bucket), delay/jitter/loss/queue by netem leaves")
    return cmds, tree.optimism_bytes


def read_back(vm: AccessPointVm, dev: str) -> dict[str, Any]:
    """What the VM's kernel holds on ``dev``: ``tc -s qdisc`` (text and JSON), classes, filters."""
    out: dict[str, Any] = {"tc_s_qdisc": vm.run([TC, "-s", "qdisc", "show", "dev", dev],
                                                timeout=20).stdout.strip()}
    try:
        out["qdiscs"] = json.loads(vm.run([TC, "-s", "-j", "qdisc", "show", "dev", dev],
                                          timeout=20).stdout or "[]")
    except ValueError:
        out["qdiscs"] = []
    classes = vm.run([TC, "class", "show", "dev", dev], timeout=20).stdout.strip()
    filters = vm.run([TC, "filter", "show", "dev", dev], timeout=20).stdout.strip()
    out["classes"] = classes.splitlines() if classes else []
    out["filters"] = filters.splitlines() if filters else []
    return out


def _check_netem(shape: LinkShape, qdiscs: list[dict[str, Any]], fair: bool) -> list[str]:
    """Differences between the shape asked for and the netem qdiscs read back (empty: none)."""
    problems = []
    netems = [q for q in qdiscs if q.get("kind") == "netem"]
    if not netems:
        return ["no netem qdisc on the device"]
    for q in netems:
        o = q.get("options") or {}
        if o.get("limit") != shape.queue_packets:
            problems.append(f"netem {q.get('handle')} limit {o.get('limit')} != {shape.queue_packets}")
        delay = (o.get("delay") or {}).get("delay", 0) if isinstance(o.get("delay"), dict) else 0
        if abs(delay * 1e3 - shape.delay_ms) > 0.01:
            problems.append(f"netem {q.get('handle')} delay {delay * 1e3:g} ms != {shape.delay_ms}")
        if not fair:
            rate = (o.get("rate") or {}).get("rate") if isinstance(o.get("rate"), dict) else None
            if rate is None or abs(rate * 8 / 1e6 - shape.rate_mbit) > 0.01 * shape.rate_mbit:
                problems.append(f"netem {q.get('handle')} rate {rate} B/s != {shape.rate_mbit} Mbit/s")
    return problems


def shape_queue(vm: AccessPointVm, label: str, feeds: list[str], ifb: str, shape: LinkShape,
                stations: list[StationClass], match: str) -> VmShapingReport:
    """Shape one direction of the medium in the VM; the report says what the kernel holds."""
    fair = shape.fair_per_station and bool(stations)
    report = VmShapingReport(label=label, namespace="vm", interface="", feeds=list(feeds),
                           backend="htb+netem" if fair else "netem", requested=asdict(shape))
    dev, report.redirects = _shared_queue(vm, feeds, ifb)
    report.interface = dev
    offloads = {d: shaping.offloads_off(vm, d) for d in dict.fromkeys([*feeds, dev])}
    if fair:
        cmds, optimism = _apply_fair(vm, dev, shape, stations, match, report)
    else:
        cmds, optimism = _apply_fifo(vm, dev, shape), 0
        if shape.burst_bytes:
            report.not_applied["burst_bytes"] = "not applicable: netem rate has no bucket"
    report.applied.update(rate_mbit=shape.rate_mbit, overhead_bytes=shape.overhead_bytes,
                          delay_ms=shape.delay_ms, jitter_ms=shape.jitter_ms,
                          loss_pct=shape.loss_pct, queue_limit_packets=shape.queue_packets)
    if not fair:
        report.applied["burst_bytes"] = 0
    if shape.jitter_ms:
        report.notes.append("netem jitter (normal distribution) can reorder packets")
    back = read_back(vm, dev)
    report.qdiscs = back["qdiscs"]
    report.classes = [{"line": c} for c in back["classes"]]
    report.filters = [{"line": f} for f in back["filters"]]
    mismatch = _check_netem(shape, back["qdiscs"], fair)
    if mismatch:
        raise LabError(f"{label}: the VM does not hold what was asked: {'; '.join(mismatch)}\n"
                       f"{back['tc_s_qdisc']}")
    frame = frame_cost(shape.overhead_bytes)
    report.expected = {
        "frame_bytes_charged": frame,
        "tcp_goodput_mbit": round(expected_tcp_goodput_mbit(
            shape.rate_mbit, shape.overhead_bytes), 3),
        "small_transfer_optimism_bytes": optimism,
        "small_transfer_optimism_ms": round(optimism * 8 / (shape.rate_mbit * 1e3), 3),
        "queue_delay_full_ms": round(shape.queue_packets * frame * 8 / (shape.rate_mbit * 1e3), 1),
    }
    report.notes.append(f"shaped inside the AP VM with `tc` over SSH; read back: "
                        f"{back['tc_s_qdisc'].splitlines()[0] if back['tc_s_qdisc'] else '?'}")
    report.vm = {"commands": [" ".join(c) for c in cmds], "tc_s_qdisc": back["tc_s_qdisc"],
                 "guest_offloads": offloads}
    return report


# --------------------------------------------------------------------------- the lab


class VmLab(LabBase):
    """Context manager: host namespaces + the AP VM + shaping in the VM. See the module docstring.

    Offers what :class:`testbed.emulated.EmulatedHosts` uses of a lab: ``address``,
    ``add_to_cpu_group``, ``state`` (a :class:`LabState`), plus ``vm`` (its ``host`` is the AP's
    SSH connection), :meth:`describe` and :meth:`conditions`.
    """

    RECORD_KIND = "vm-lab"
    NEEDS_ROOT_FOR = "network namespaces, taps, qdiscs"

    def __init__(self, plan: LabPlan, workdir: Path, *, image: VmImage | None = None,
                 accel: str = "tcg", progress: Callable[[str], None] | None = None,
                 kind: str = "wifi", wifi: WifiSettings | None = None) -> None:
        super().__init__(plan)
        self.workdir = Path(workdir)
        self.image = image
        self.accel = accel
        self.progress = progress
        self.kind = kind
        self.wifi_settings = wifi
        self.wifi: HwsimWifi | None = None
        self.vm: AccessPointVm | None = None
        self._sampler: threading.Thread | None = None
        self._stop_sampling = threading.Event()
        self._last_cpu: tuple[float, float] | None = None
        self.boot_s: float | None = None

    # ---- names -------------------------------------------------------------------------------
    @property
    def local_hosts(self) -> list[HostPlan]:
        """Every host but the router (the VM) is a namespace here."""
        return [h for h in self.plan.hosts if h.name != self.plan.router.name]

    @property
    def hosts(self) -> list[str]:
        """The hosts that are namespaces (every host but the router)."""
        return [h.name for h in self.local_hosts]

    # ---- lifecycle ---------------------------------------------------------------------------
    def _record_extra(self) -> dict[str, Any]:
        return {**super()._record_extra(),
                "private_paths": [str(self.workdir / s) for s in VM_SECRETS]}

    def _build(self) -> None:
        if self.image is None:
            self.image = build_image(progress=self.progress)
        with signals_deferred():
            for h in self.local_hosts:
                self._create_namespace(h)
        nics = [VmNic(h, self.namespace(h), f"{a.address}/{a.prefixlen}",
                      f"{a.router_address}/{a.prefixlen}") for h, a in self._addr.items()]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.vm = AccessPointVm(self.image, self.run_id, nics, self.workdir, accel=self.accel,
                                progress=self.progress)
        self.vm.start()  # its own teardown runs in down()
        self.boot_s = self.vm.boot_s
        self.vm.run("for f in /proc/sys/net/ipv6/conf/*/disable_ipv6; do echo 1 > $f; done",
                    timeout=20, check=False)
        for h in self.hosts:
            self._offloads[h] = disable_offloads(self.namespace(h), [self.vm.guest_nics[h].tap])
        if self.wifi_settings is not None:
            self._start_radios(self.wifi_settings)
        self._shape()
        self._start_sampler()

    def _teardown(self) -> None:
        """Sampler stopped, radio logs fetched, VM off (taps deleted), per-run keys deleted."""
        self._stop_sampling.set()
        if self._sampler is not None:
            self._sampler.join(timeout=5)
            self._sampler = None
        if self.wifi is not None:
            self.wifi.fetch_logs()
            self.wifi = None
        if self.vm is not None:
            self.vm.stop()
            self.vm = None
        for secret in VM_SECRETS:  # per-run keys: never kept in results
            p = self.workdir / secret
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()

    # ---- steps -------------------------------------------------------------------------------
    def _create_namespace(self, h: HostPlan) -> None:
        ns = self.namespace(h.name)
        netns.create_namespace(ns)
        with IPRoute(netns=ns, flags=0) as ipr:
            lo = ipr.link_lookup(ifname="lo")
            if lo:
                ipr.link("set", index=lo[0], state="up")
        self._apply_sysctls(h)

    def _start_radios(self, settings: WifiSettings) -> None:
        """WiFi mode: hostapd and one wpa_supplicant per station on hwsim radios in the VM."""
        assert self.vm is not None
        stations = [StationPlan(h.name, self.vm.guest_ifname(h.name),
                                f"{self._addr[h.name].router_address}/{self._addr[h.name].prefixlen}",
                                self._addr[h.name].network) for h in self.plan.stations]
        self.wifi = HwsimWifi(self.vm, settings, stations, run_id=self.run_id,
                              keep_dir=self.workdir / "wifi")
        self.wifi.up()
        if self.plan.wired:
            self._probe_radio_path(self.plan.stations[0].name, self.plan.wired[0].name)

    def _probe_radio_path(self, station: str, wired: str, seconds: float = 3.0) -> None:
        """Unshaped TCP goodput station -> wired host across the 802.11 link (before netem).

        hwsim has no airtime model, so the VM's CPU (802.11 framing and CCMP in software, slow
        under TCG) is the only other limit: if it is not well above the medium's rate, netem is
        not the bottleneck and the run says so."""
        assert self.wifi is not None
        rate = self.plan.medium.rate_mbit
        try:
            got = shaping.tcp_goodput_mbit(self.namespace(station), self.namespace(wired),
                                           self.address(wired), seconds=seconds)
        except Exception as exc:
            self.wifi.path_capacity = {"error": str(exc)}
            self._notes.append(f"WiFi mode: the unshaped 802.11 path could not be measured: {exc}")
            return
        ok = got >= RADIO_HEADROOM * rate
        self.wifi.path_capacity = {"from": station, "to": wired, "seconds": seconds,
                                   "tcp_goodput_mbit": round(got, 2), "medium_rate_mbit": rate,
                                   "headroom_needed": RADIO_HEADROOM, "ok": ok,
                                   "qemu_accel": self.accel}
        if not ok:
            msg = (f"WiFi mode: the 802.11 path through mac80211_hwsim carries only {got:.1f} "
                   f"Mbit/s of TCP here before any shaping ({self.accel.upper()}, the VM's CPU), "
                   f"less than {RADIO_HEADROOM:g} x the medium's {rate:g} Mbit/s: the VM's CPU, "
                   f"not netem, limits this medium (use KVM, a lower rate, or hwsim: false)")
            log.warning("%s", msg)
            self._notes.append(msg)

    def _shape(self, medium: LinkShape | None = None, downlink: LinkShape | None = None) -> None:
        assert self.vm is not None
        up, down = self._shapes(medium, downlink)
        nic = self.vm.guest_ifname
        stations = [StationClass(h.name, self._addr[h.name].network) for h in self.plan.stations]
        reports = []
        if self.plan.wired:
            reports.append(shape_queue(self.vm, "uplink", [nic(h.name) for h in self.plan.wired],
                                       "ifbul", up, stations, "src"))
        if self.wifi is not None and self.wifi.ap is not None:  # the AP radio reaches them all
            reports.append(shape_queue(self.vm, "downlink", [self.wifi.ap.ifname], "ifbdl", down,
                                       stations, "dst"))
        elif self.plan.stations:
            reports.append(shape_queue(self.vm, "downlink",
                                       [nic(h.name) for h in self.plan.stations], "ifbdl", down,
                                       stations, "dst"))
        self._reports = reports

    def _make_state(self) -> LabState:
        assert self.vm is not None
        hosts: dict[str, HostState] = {}
        router = self.plan.router
        guest_offloads = {}
        for r in self._reports:
            guest_offloads.update({d: {"tso": v.get("tcp-segmentation-offload") == "on",
                                       "gso": v.get("generic-segmentation-offload") == "on",
                                       "gro": v.get("generic-receive-offload") == "on",
                                       "method": "ethtool -K in the VM"}
                                   for d, v in r.vm.get("guest_offloads", {}).items()})
        hosts[router.name] = HostState(
            name=router.name, role=router.role, namespace=f"vm (qemu pid {self.vm.pid})",
            interface=None, address=None, network=None, gateway=None, router_interface=None,
            sysctls={"net.ipv4.ip_forward": "1"}, offloads=guest_offloads, cpu=None)
        for h in self.local_hosts:
            hosts[h.name] = self._host_state(h, self.vm.guest_nics[h.name].tap,
                                             self.vm.guest_ifname(h.name))
        notes = list(self._notes)
        if self.wifi is not None:
            notes.append("WiFi mode: stations associate to hostapd over mac80211_hwsim radios in "
                         "the VM (WPA2); downlink shaped on the AP radio's egress")
            notes.append(NO_AIRTIME_NOTE)
        elif len(self.plan.stations) > 1:
            notes.append("downlink: one queue shared by all stations (station NICs redirected "
                         "into ifb 'ifbdl' in the VM)")
        if self.plan.medium.fair_per_station:
            notes.append("per-station fairness: HTB classes with netem leaves in the VM")
        if self.kind == "wifi" and self.wifi is None:
            notes.append(NETEM_ONLY_NOTE)
        notes.append("up- and downlink are two independent queues (full duplex); delay is "
                     "applied once per direction, so the base RTT is 2 x delay_ms")
        return LabState(
            run_id=self.run_id, hosts=hosts, shaping=list(self._reports),
            capabilities={"netem": True, "htb": True, "u32": True, "mirred": True, "ifb": True},
            address_plan={k: asdict(v) for k, v in self._addr.items()}, notes=notes)

    # ---- what the host set reads ---------------------------------------------------------------
    def router_host(self) -> Any:
        """The AP's SSH connection (dropbear in the VM, on its own management /30)."""
        return self.vm.host if self.vm is not None else None

    def describe(self) -> dict[str, Any]:
        """The VM: accel, image (kernel and package versions, sha256), NICs, boot time, SSH."""
        d = self.vm.describe() if self.vm is not None else {}
        d["workdir"] = str(self.workdir)
        d["cpu_samples"] = str(self.workdir / "qemu-cpu.csv")
        if self.vm is not None:
            d["kernel_in_vm"] = self.vm.run("uname -r", timeout=20, check=False).stdout.strip()
            d["tc_version"] = self.vm.run([TC, "-V"], timeout=20, check=False).stdout.strip()
        d["wifi"] = self.wifi.manifest() if self.wifi is not None else {"mode": "none"}
        return d

    def conditions(self) -> dict[str, Any]:
        """Before a step: QEMU's CPU use since the last call, the host load, the queues' stats."""
        out: dict[str, Any] = {"host_loadavg": list(os.getloadavg())}
        if self.vm is None or self.vm.pid is None:
            return out
        now, cpu_s = time.monotonic(), procs.cpu_seconds(self.vm.pid)
        if cpu_s is not None:
            out["qemu_cpu_s"] = round(cpu_s, 2)
            if self._last_cpu is not None:
                dt = now - self._last_cpu[0]
                out["qemu_cpu_pct_since_last_step"] = round(100 * (cpu_s - self._last_cpu[1]) / dt, 1)
            self._last_cpu = (now, cpu_s)
        stats = {}
        for r in self._reports:
            try:
                q = json.loads(self.vm.run([TC, "-s", "-j", "qdisc", "show", "dev", r.interface],
                                           timeout=20).stdout or "[]")
                stats[r.label] = [{k: x.get(k) for k in ("kind", "handle", "bytes", "packets",
                                                         "drops", "overlimits", "backlog", "qlen")}
                                  for x in q if x.get("kind") in ("netem", "htb")]
            except Exception as exc:  # informational only
                stats[r.label] = {"error": str(exc)}
        out["vm_queues"] = stats
        if self.wifi is not None:
            try:
                out["radio"] = self.wifi.radio_state()
            except Exception as exc:  # informational only
                out["radio"] = {"error": str(exc)}
        return out

    def _start_sampler(self, period_s: float = 2.0) -> None:
        """QEMU's CPU time and the host load every ``period_s`` into ``qemu-cpu.csv``."""
        assert self.vm is not None
        pid, path = self.vm.pid, self.workdir / "qemu-cpu.csv"

        def sample() -> None:
            t0 = time.monotonic()
            with open(path, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["t_s", "qemu_cpu_s", "load1", "wall"])
                while not self._stop_sampling.is_set():
                    c = procs.cpu_seconds(pid)
                    if c is None:
                        break
                    w.writerow([round(time.monotonic() - t0, 2), round(c, 2),
                                os.getloadavg()[0], time.strftime("%H:%M:%S")])
                    fh.flush()
                    self._stop_sampling.wait(period_s)

        self._stop_sampling.clear()
        self._sampler = threading.Thread(target=sample, name="qemu-cpu", daemon=True)
        self._sampler.start()


def make_lab(plan: LabPlan, setup: LabSetup) -> VmLab:
    """The registry's factory (``testbed.lab.backends``)."""
    return VmLab(plan, setup.run_dir / "vm", accel=setup.accel or "tcg", kind=setup.link_kind,
                 progress=setup.progress, wifi=WifiSettings() if setup.radios else None)
