"""The ``ns3`` lab backend: the shared medium is an 802.11g cell simulated by ns-3 in real time.

Every host is a namespace, as in the namespace backend, but the stations and the ES are not
joined by veths to a router namespace: each gets a tap (``tb<run>-s<host>``, the name of the
host end of the other backends' veth) whose other end is an ns-3 ``FdNetDevice`` in the
simulation (:mod:`testbed.lab.ns3_sim`, run as its own process inside the router's namespace,
from an empty working directory)::

    md  198.18.1.2/24 ─tap─ ns-3 STA node (198.18.1.1) ┐ 802.11g: DCF, backoff, retries, ACKs
    ext 198.18.2.2/24 ─tap─ ns-3 STA node (198.18.2.1) ┤
                                         ns-3 AP node ─┘── point-to-point 1 Gbit/s ──┐
    es  198.19.0.2/24 ─tap─ ns-3 wired node (198.19.0.1) ────────────────────────────┘

Addresses and default routes are those of the other backends (the ns-3 nodes are the
gateways). The scenario's link shape is not applied (the PHY and MAC decide capacity, delay and
loss) except ``queue_packets``, the size of every WifiMacQueue; the report says so. What the
AP host's ``ns3`` section sets: station distances, rate control, seed (``testbed.ns3_settings``).
An LTE link gets a LENA eNB with an EPC instead: :mod:`testbed.lab.ns3_lte` (same lifecycle).

Lifecycle: namespaces -> the ns-3 process (its pid and start time go into the run record) ->
``TAPS`` (taps open: addresses, routes, offloads off) -> ``READY`` (every station associated).
Teardown: the process is stopped (SIGTERM, then SIGKILL); its taps are not persistent and vanish
with it. After a SIGKILL of the run, ``testbed clean`` stops the recorded process
(:func:`clean_leftovers`) before the namespaces are removed.

Each step records (``medium_counters``): per 802.11 device the MAC retries, drops after the
retry limit, MAC/PHY drops, airtime (TX share of the step's wall time), queue maximum; the
real-time scheduler's lateness over the step (max, p99; ``LATE_P99_LIMIT_MS`` flags the step);
the ns-3 process's CPU use. The simulator runs as a real-time task (``RT_PRIORITY``).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from testbed.lab import names, netns, procs, runs
from testbed.lab.base import LabBase
from testbed.lab.nsconfig import disable_offloads
from testbed.lab.plan import LabError, LabPlan, LabState, LinkShape, ShapingReport
from testbed.lab.signals import signals_deferred
from testbed.ns3_settings import Ns3Settings, missing_message, ns3_available

log = logging.getLogger(__name__)

LATE_P99_LIMIT_MS = 1.0
"""A step whose real-time lateness p99 exceeds this is flagged ``ns3-late``."""
TAPS_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 120.0
"""Import (9-13 s on a quiet machine, more under load), cling compile, association."""
STATS_PERIOD_MS = 100
RT_PRIORITY = 10
NICE = -10
"""The simulator's scheduling: a simulator that falls behind the wall clock distorts the medium
(BestEffort real time: events run late, simulated time stretches), so it runs as a real-time
task (SCHED_RR, priority ``RT_PRIORITY``; the kernel's RT throttling keeps 5 % of every CPU for
others) and goes before the hosts' processes. Where the kernel refuses real-time scheduling
(a container without CAP_SYS_NICE) it runs at nice ``NICE``; measured on a 2-core machine at
load average 9-10, nice -10 alone left p99 wake-up lateness at 6 ms with the cell idle."""
RECORD_KEY = "ns3_process"
NOT_APPLIED = ("simulated 802.11g: capacity, delay and loss come from ns-3's PHY and MAC "
               "(54 Mbit/s ERP-OFDM, DCF), not from the link shape")


class Ns3Lab(LabBase):
    """Context manager: host namespaces joined through taps by a real-time ns-3 802.11g cell."""

    RECORD_KIND = "ns3-lab"
    NEEDS_ROOT_FOR = "network namespaces, taps"
    KIND = "wifi"
    """The link kind this class simulates (LTE: :class:`testbed.lab.ns3_lte.Ns3LteLab`)."""
    SIM_MODULE = "testbed.lab.ns3_sim"
    """The simulator process's module."""

    def __init__(self, plan: LabPlan, workdir: Path, settings: Ns3Settings | None = None,
                 kind: str = "wifi") -> None:
        super().__init__(plan)
        self.workdir = Path(workdir).absolute()  # the simulator runs in a folder of its own
        self.settings = settings or Ns3Settings()
        self.kind = kind
        self.proc: subprocess.Popen | None = None
        self.ready: dict[str, Any] | None = None
        self.bringup_s: dict[str, float] = {}
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._log_fh: Any = None
        self._baseline: tuple[float, float | None, dict[str, Any] | None] | None = None

    # ---- names -------------------------------------------------------------------------------
    def tap(self, host: str) -> str:
        return names.veth_names(self.run_id, host)[0]

    @property
    def stats_path(self) -> Path:
        return self.workdir / "stats.json"

    # ---- lifecycle ---------------------------------------------------------------------------
    def _check_backend(self) -> None:
        if self.kind != self.KIND:
            raise LabError(f"the ns3 backend simulates a WiFi (802.11g) or an LTE (LENA) cell, "
                           f"not a {self.kind!r} link: use backend vm, namespace or auto")
        if not ns3_available():
            raise LabError(missing_message())
        if not os.path.exists("/dev/net/tun"):
            raise LabError("/dev/net/tun is missing: the ns3 backend needs tun/tap (modprobe tun)")

    def _build(self) -> None:
        with signals_deferred():
            for h in self.plan.hosts:
                netns.create_host_namespace(self.namespace(h.name))
                self._apply_sysctls(h)
        t0 = time.monotonic()
        self._start_process()
        self._wait_for("TAPS", TAPS_TIMEOUT_S)
        self.bringup_s["taps"] = round(time.monotonic() - t0, 2)
        with signals_deferred():
            self._configure_taps()
        line = self._wait_for("READY", READY_TIMEOUT_S)
        self.bringup_s["ready"] = round(time.monotonic() - t0, 2)
        self.ready = json.loads(line.split(" ", 1)[1])
        self._shape()
        self._log_up()

    def _log_up(self) -> None:
        log.info("ns-3 802.11g cell up in %.1f s (slot %s us)", self.bringup_s["ready"],
                 self.ready["devices"]["ap"]["slot_us"])

    def _config(self) -> dict[str, Any]:
        def host(name: str, network: str) -> dict[str, Any]:
            a = self._addr[name]
            return {"name": name, "netns": netns.netns_path(self.namespace(name)),
                    "tap": self.tap(name), "gateway": a.router_address, "prefixlen": a.prefixlen,
                    "network": network, "distance_m": self.settings.distance(name)}

        stations = [host(h.name, self._addr[h.name].network) for h in self.plan.stations]
        wired = [host(h.name, self._addr[h.name].network) for h in self.plan.wired]
        wireless, wired_half = ipaddress.ip_network(self.plan.subnet).subnets(prefixlen_diff=1)
        return {"kind": self.kind, "stations": stations, "wired": wired,
                "rate_control": self.settings.rate_control, "seed": self.settings.seed,
                "queue_packets": self.plan.medium.queue_packets,
                # ns-3's own links: the stations' half's /24 number 0 (no station uses it), the
                # wired half's last /30
                "bss_network": str(wireless.network_address),
                "wire_network": str(wired_half.broadcast_address - 3),
                "stats_path": str(self.stats_path), "stats_period_ms": STATS_PERIOD_MS}

    def _start_process(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cwd = self.workdir / "cwd"  # empty: ns-3's import scans its working directory
        shutil.rmtree(cwd, ignore_errors=True)
        cwd.mkdir()
        self.stats_path.unlink(missing_ok=True)  # a resumed run's: not this simulator's counters
        cfg = self.workdir / "config.json"
        cfg.write_text(json.dumps(self._config(), indent=1))
        self._log_fh = open(self.workdir / "ns3.log", "w")
        with signals_deferred():
            self.proc = netns.popen_in_namespace(
                self.namespace(self.plan.router.name),
                [sys.executable, "-m", self.SIM_MODULE, str(cfg)],
                cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log_fh,
                text=True, start_new_session=True, preexec_fn=_prioritise)
            rec = runs.read_run_record(self.run_id) or {}
            rec[RECORD_KEY] = {"pid": self.proc.pid, "starttime": procs.starttime(self.proc.pid)}
            runs.write_record(self.run_id, rec)
        self._reader = threading.Thread(target=self._read_stdout, name="ns3-stdout", daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line.startswith(("TAPS", "READY", "RUNNING")):
                self._lines.put(line)
            elif line:
                log.debug("ns-3: %s", line)
        self._lines.put(None)

    def _wait_for(self, word: str, timeout_s: float) -> str:
        end = time.monotonic() + timeout_s
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                raise LabError(f"the ns-3 process did not report {word} within {timeout_s:g} s "
                               f"({self._log_tail()})") from None
            if line is None:
                code = self.proc.wait(timeout=5) if self.proc else None
                raise LabError(f"the ns-3 process exited (status {code}) before {word}: "
                               f"{self._log_tail()}")
            if line.startswith(word):
                return line

    def _log_tail(self, lines: int = 8) -> str:
        try:
            text = (self.workdir / "ns3.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return "log " + str(self.workdir / "ns3.log") + ": " + " | ".join(text[-lines:])

    def _configure_taps(self) -> None:
        for name, a in self._addr.items():
            ns, tap = self.namespace(name), self.tap(name)
            with IPRoute(netns=ns, flags=0) as ipr:
                found = ipr.link_lookup(ifname=tap)
                if not found:
                    raise LabError(f"tap {tap} did not appear in {ns}")
                ipr.addr("add", index=found[0], address=a.address, prefixlen=a.prefixlen)
                ipr.link("set", index=found[0], state="up")
                ipr.route("add", dst="0.0.0.0/0", gateway=a.router_address)
            self._offloads[name] = disable_offloads(ns, [tap])

    def _teardown(self) -> None:
        """The ns-3 process stopped (its taps go with it), the reader joined, the log closed."""
        if self.proc is not None:
            if self.proc.poll() is None:
                procs.stop_pids([self.proc.pid])
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.warning("ns-3 process %d did not exit", self.proc.pid)
            self.proc = None
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        shutil.rmtree(self.workdir / "cwd", ignore_errors=True)

    # ---- the medium --------------------------------------------------------------------------
    def _shape(self, medium: LinkShape | None = None, downlink: LinkShape | None = None) -> None:
        if medium is not None or downlink is not None:
            raise LabError("the ns3 backend cannot reshape a running simulation (the 802.11g "
                           "cell is fixed at bring-up)")
        shape = self.plan.medium
        not_applied = {k: NOT_APPLIED for k in ("rate_mbit", "delay_ms", "jitter_ms", "loss_pct",
                                                "overhead_bytes", "fair_per_station",
                                                "burst_bytes")}
        self._reports = [ShapingReport(
            label="medium", namespace=self.namespace(self.plan.router.name),
            interface="ns-3 802.11g BSS", backend="ns3",
            feeds=[self.tap(h.name) for h in self.plan.stations + self.plan.wired],
            requested=asdict(shape),
            applied={"queue_packets": shape.queue_packets, "standard": "802.11g ERP-OFDM",
                     "access": "DCF (non-QoS): CWmin 15, CWmax 1023, AIFSN 2",
                     "rate_control": (self.settings.rate_control + (
                         ": data ErpOfdmRate54Mbps, control ErpOfdmRate24Mbps"
                         if self.settings.rate_control == "constant" else "")),
                     "distance_m": {h.name: self.settings.distance(h.name)
                                    for h in self.plan.stations},
                     "wired": "point-to-point 1 Gbit/s, 0 ms, AP node to the ES gateway node",
                     "propagation": "log-distance (exponent 3, 46.68 dB at 1 m), "
                                    "constant-speed delay",
                     "ready": self.ready},
            not_applied=not_applied,
            notes=["both directions share the air (half duplex): uplink data, downlink data "
                   "and every ACK contend through DCF"])]

    def _make_state(self) -> LabState:
        hosts = {}
        for h in self.plan.hosts:
            if h.name == self.plan.router.name:
                hosts[h.name] = self._host_state(h, None, None)
            else:
                hosts[h.name] = self._host_state(h, self.tap(h.name), "ns-3 FdNetDevice")
        notes = list(self._notes)
        notes.append(f"ns-3 {self._ns3_version()} simulates the cell in real time "
                     f"(pid {self.proc.pid if self.proc else '?'} in the router's namespace)")
        return LabState(run_id=self.run_id, hosts=hosts, shaping=list(self._reports),
                        capabilities={"tun": True, "ns3": True},
                        address_plan={k: asdict(v) for k, v in self._addr.items()}, notes=notes)

    @staticmethod
    def _ns3_version() -> str:
        from importlib import metadata
        try:
            return metadata.version("ns3")
        except metadata.PackageNotFoundError:
            return "?"

    # ---- what the host set reads ---------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {"version": self._ns3_version(), "pid": self.proc.pid if self.proc else None,
                "scheduling": scheduling(self.proc.pid) if self.proc else None,
                "workdir": str(self.workdir), "bringup_s": dict(self.bringup_s),
                "ready": self.ready, "settings": self.settings.to_dict(),
                "lateness_limit_p99_ms": LATE_P99_LIMIT_MS}

    def _stats(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return None

    def _mark(self) -> None:
        cpu = procs.cpu_seconds(self.proc.pid) if self.proc else None
        self._baseline = (time.monotonic(), cpu, self._stats())

    def conditions(self) -> dict[str, Any]:
        """Before a step: the host load; starts the window ``medium_counters`` reports on."""
        self._mark()
        return {"host_loadavg": list(os.getloadavg())}

    def medium_counters(self) -> dict[str, Any] | None:
        """After a step: what ns-3 counted since :meth:`conditions` (see the module docstring)."""
        if self._baseline is None or self.proc is None:
            return None
        t0, cpu0, before = self._baseline
        time.sleep(STATS_PERIOD_MS / 1000 * 1.5)  # let the simulator write the step's end
        wall = time.monotonic() - t0
        cpu1 = procs.cpu_seconds(self.proc.pid)
        after = self._stats()
        out: dict[str, Any] = {"window_s": round(wall, 3)}
        if cpu0 is not None and cpu1 is not None:
            out["ns3_cpu_pct"] = round(100 * (cpu1 - cpu0) / wall, 1)
        if after is None:
            out["error"] = f"no counters in {self.stats_path}"
            return out
        out.update(self._window(before, after))
        late = out.get("lateness", {})
        out["flags"] = (["ns3-late"] if late.get("p99_ms") is not None
                        and late["p99_ms"] > LATE_P99_LIMIT_MS else [])
        return out

    def _window(self, before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
        """The counters of a step from the stats file's snapshots before and after it."""
        return window_counters(before, after)


def _prioritise() -> None:
    """In the simulator's process before exec: SCHED_RR, else nice (see ``RT_PRIORITY``)."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(RT_PRIORITY))
    except OSError:
        os.nice(NICE)


def scheduling(pid: int) -> str:
    """How the kernel schedules ``pid``: ``SCHED_RR priority 10`` or ``nice -10``."""
    try:
        if os.sched_getscheduler(pid) == os.SCHED_RR:
            return f"SCHED_RR priority {os.sched_getparam(pid).sched_priority}"
        return f"nice {os.getpriority(os.PRIO_PROCESS, pid)}"
    except OSError as exc:
        return f"unknown ({exc})"


def window_counters(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """Counters between two snapshots of the simulator's stats file: per device deltas, airtime
    share (TX time / simulated time), queue maximum so far; lateness max and p99 of the window
    from the histogram deltas."""
    before = before or {"sim_s": 0.0, "late_hist": {}, "devices": {}}
    sim = max(after["sim_s"] - before["sim_s"], 1e-9)
    devices = {}
    for name, d in after["devices"].items():
        b = before["devices"].get(name, {})
        delta = {k: d[k] - b.get(k, 0) for k in ("mac_tx", "mac_rx", "retries",
                                                 "retry_limit_drops", "mac_tx_drops",
                                                 "mac_rx_drops", "phy_rx_drops",
                                                 "queue_dropped")}
        tx = d["tx_airtime_s"] - b.get("tx_airtime_s", 0.0)
        delta["tx_airtime_s"] = round(tx, 4)
        delta["airtime_share"] = round(tx / sim, 4)
        delta["queue_now"] = d["queue_now"]
        delta["queue_max_so_far"] = d["queue_max"]
        devices[name] = delta
    return {"sim_s": round(sim, 3), "devices": devices, "lateness": lateness_window(before, after)}


def lateness_window(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """The real-time lateness between two snapshots of a simulator's stats file (its
    ``late_hist`` histogram deltas): samples, p99 and max in ms."""
    before = before or {"late_hist": {}}
    hist = {int(k): v - before["late_hist"].get(k, 0) for k, v in after["late_hist"].items()}
    hist = {k: v for k, v in hist.items() if v > 0}
    n = sum(hist.values())
    late: dict[str, Any] = {"samples": n}
    if n:
        bin_ms = after["late_bin_us"] / 1000
        acc, p99 = 0, None
        for k in sorted(hist):
            acc += hist[k]
            if p99 is None and acc >= 0.99 * n:
                p99 = (k + 1) * bin_ms
        late.update(p99_ms=round(p99, 3), max_ms=round((max(hist) + 1) * bin_ms, 3))
    return late


def clean_leftovers(dry_run: bool = False, *, run_id: str | None = None,
                    include_live: bool = False) -> list[str]:
    """``testbed clean``: the ns-3 process a killed run left (its record names the pid and start
    time; a pid reused by another process is left alone). Its taps vanish with it."""
    done: list[str] = []
    for run in runs.recorded_runs():
        if run_id is not None and run != run_id:
            continue
        rec = runs.read_run_record(run) or {}
        proc = rec.get(RECORD_KEY)
        if not proc:
            continue
        if run_id is None and not include_live and runs.run_owner_alive(run):
            log.info("skip the ns-3 process of run %s: its owner is alive", run)
            continue
        pid, start = int(proc["pid"]), proc.get("starttime")
        if procs.starttime(pid) is None or procs.starttime(pid) != start:
            continue
        done += [f"{line} (ns-3 of run {run})" for line in procs.stop_pids([pid], dry_run=dry_run)]
    return done

