"""The ``vm`` lab backend: the AP/eNB as a QEMU VM, real netem on a host kernel without it.

Same hosts, addresses and routes as :class:`testbed.lab.namespace_lab.NamespaceLab`, with the
router namespace replaced by the VM (:class:`~testbed.vm.boot.AccessPointVm`)::

        md  (tb-<run>-md)   198.18.1.2/24 ── tap tb<run>-vmd  ── eth1 198.18.1.1 ┐
        ext (tb-<run>-ext)  198.18.2.2/24 ── tap tb<run>-vext ── eth2 198.18.2.1 ├ AP VM
        es  (tb-<run>-es)   198.19.0.2/24 ── tap tb<run>-ves  ── eth3 198.19.0.1 ┘ ip_forward=1
                                               (eth0: management /30, dropbear, never shaped)

The shared medium is shaped inside the VM, over SSH, with ``tc`` (:mod:`testbed.vm.medium`):

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
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from testbed.lab import netns, procs
from testbed.lab.base import LabBase, LabSetup
from testbed.lab.nsconfig import disable_offloads
from testbed.lab.plan import (
    HostPlan,
    HostState,
    LabPlan,
    LabState,
    LinkShape,
    StationClass,
)
from testbed.lab.signals import signals_deferred
from testbed.vm import shaping
from testbed.vm.boot import AccessPointVm, VmNic
from testbed.vm.build import VmImage, build_image
from testbed.vm.medium import TC, shape_queue
from testbed.vm.radio import NO_AIRTIME_NOTE, HwsimWifi, StationPlan
from testbed.wifi_settings import WifiSettings

log = logging.getLogger(__name__)

VM_SECRETS = ("keys", "initrd-run.img")
"""Per-run files in the VM's work folder that hold keys (the run's SSH keys; the overlay with the
VM's host key and authorized_keys): deleted at teardown, or by `testbed clean` after a kill."""
RADIO_HEADROOM = 1.5
"""WiFi mode: the unshaped 802.11 path must carry this multiple of the medium's rate."""
NETEM_ONLY_NOTE = ("WiFi without radios (hwsim: false): the medium is netem only, no 802.11 "
                   "association; the station NICs are routed directly by the VM")


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
        netns.create_host_namespace(self.namespace(h.name))
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
