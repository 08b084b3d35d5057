"""A real lab as a set of SSH-reachable hosts: the counterpart of ``testbed.emulated``.

``with RealHosts(scenario, run_dir, run_id) as hosts: Orchestrator(...).run(...)``. Bringing it
up: check the inventory on the controller (key files, pinned host keys: ``InventoryError``),
connect to every host of ``lab.hosts`` (one paramiko connection each, host keys pinned), make
the per-run work folder ``/tmp/testbed-<run id>`` on each, set the link's TCP sysctls where the
host allows it (and record them), and bring the link up:

* ``wired``: nothing to start; a host's lab address is the IPv4 address of its
  ``interfaces.lab`` (or ``data``), or its SSH address if it names none;
* ``wifi``: hostapd on the AP, wpa_supplicant on the stations, addresses (``testbed.wifi_link``);
* ``lte``: srsepc + srsenb on the eNB, srsue on the UEs, attach, routes (``testbed.lte_link``).

Teardown runs in reverse order on success, error and Ctrl-C (an ``ExitStack``): programs
stopped, addresses, routes and sysctls restored, generated files (with their secrets) removed.

The orchestrator runs ``hosts.python -m testbed ...`` on the MD and the ES. Hosts may name
different interpreters (``lab.hosts[i].python``, plus ``testbed_path`` for a checkout that is not
installed): when they differ, each host gets a small launcher ``<workdir>/python`` that runs its
own, so ``hosts.python`` is one path on every host.

Per load step, :meth:`RealHosts.step_conditions` probes the link (TCP handshake RTT and a short
iperf3 TCP test from the MD to the ES) and reads the radio state (``iw`` on WiFi, srsRAN metrics
on LTE), for the step's record in the manifest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
import time
from pathlib import Path
from typing import Any

from testbed.hosts.remote import Host, HostError
from testbed.hostset import HostSetBase
from testbed.inventory import InventoryError, access_for, data_interface, require_local
from testbed.lte_link import LteLink
from testbed.realnode import Node, RealLabError, call_all, set_sysctl
from testbed.scenario import Scenario
from testbed.wifi_link import WifiLink

log = logging.getLogger(__name__)

PROBE_PORT = 5301
PROBE_SECONDS = 1.0

__all__ = ["RealHosts", "WiredLink", "probe_link", "InventoryError", "RealLabError"]


class WiredLink:
    """A lab network that already exists: only the hosts' addresses on it are looked up."""

    kind = "wired"

    def __init__(self, scenario: Scenario, nodes: dict[str, Node], workdir: str, run_dir: Path,
                 run_id: str = ""):
        self.scenario = scenario
        self.nodes = nodes
        self._addresses: dict[str, str] = {}
        self._source: dict[str, str] = {}

    def up(self) -> None:
        for name, node in self.nodes.items():
            ifname = data_interface(node.spec)
            if ifname is None:
                self._addresses[name] = node.spec.address
                self._source[name] = "ssh address"
                continue
            found = node.ipv4(ifname)
            if not found:
                raise RealLabError(f"{name}: interface {ifname} (interfaces.lab) has no IPv4 address")
            self._addresses[name] = found[0].split("/")[0]
            self._source[name] = f"{ifname} {found[0]}"

    def address(self, name: str) -> str:
        return self._addresses[name]

    def radio_state(self) -> dict[str, Any]:
        return {}

    def down(self) -> list[str]:
        return []

    def manifest(self) -> dict[str, Any]:
        return {"kind": "wired", "addresses": dict(self._addresses), "from": dict(self._source)}


LINKS = {"wired": WiredLink, "wifi": WifiLink, "lte": LteLink}


# --------------------------------------------------------------------------- link probe

_RTT_PROBE = r"""
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = []
for _ in range(n):
    t0 = time.perf_counter()
    try:
        s = socket.create_connection((host, port), timeout=3)
    except OSError as e:
        print("error", e); continue
    out.append(time.perf_counter() - t0)
    s.close()
    time.sleep(0.05)
print(" ".join("%.6f" % x for x in out))
"""


def probe_link(client: Host, server: Host, server_address: str, workdir: str, *, python: str,
               port: int = PROBE_PORT, seconds: float = PROBE_SECONDS, rtt_samples: int = 5,
               name: str = "probe") -> dict[str, Any]:
    """A short, bounded look at the link from ``client`` to ``server_address`` (on ``server``).

    Base RTT: ``rtt_samples`` TCP handshakes (connect() time = one round trip, no ICMP needed);
    capacity: one iperf3 TCP test of ``seconds`` (goodput, retransmits, the sender's RTT under
    load). Never raises for a bad link: problems are recorded as ``error`` entries.
    """
    result: dict[str, Any] = {"from": client.name, "to": server.name, "address": server_address,
                              "method": f"TCP connect x{rtt_samples}; iperf3 TCP {seconds:g} s"}
    started = time.monotonic()
    srv = None
    try:
        srv = server.start(["iperf3", "-s", "-p", str(port), "-B", server_address, "--idle-timeout",
                            str(int(seconds + 20))], f"{name}-iperf3-server", workdir)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            out = server.run(["ss", "-Htln", f"sport = :{port}"], timeout=10, check=False)
            if out.stdout.strip():
                break
            time.sleep(0.1)
        res = client.run([python, "-c", _RTT_PROBE, server_address, str(port), str(rtt_samples)],
                         timeout=30, check=False)
        samples = [float(x) for x in res.stdout.split() if x.replace(".", "", 1).isdigit()]
        if samples:
            samples.sort()
            result["rtt_ms"] = {"min": round(samples[0] * 1e3, 3),
                                "median": round(samples[len(samples) // 2] * 1e3, 3),
                                "max": round(samples[-1] * 1e3, 3), "n": len(samples)}
        else:
            result["rtt_error"] = (res.stdout + res.stderr).strip()[-500:]
        res = client.run(["iperf3", "-c", server_address, "-p", str(port), "-t", f"{seconds:g}",
                          "--json", "--connect-timeout", "3000"], timeout=seconds + 30,
                         check=False)
        try:
            report = json.loads(res.stdout)
        except json.JSONDecodeError:
            report = {"error": (res.stdout + res.stderr).strip()[-500:] or f"rc {res.rc}"}
        if "error" in report:
            result["capacity_error"] = report["error"]
        else:
            end_ = report.get("end", {})
            sent, received = end_.get("sum_sent", {}), end_.get("sum_received", {})
            stream = (end_.get("streams") or [{}])[0].get("sender", {})
            result["capacity_mbit"] = round(received.get("bits_per_second", 0) / 1e6, 3)
            result["sent_mbit"] = round(sent.get("bits_per_second", 0) / 1e6, 3)
            result["retransmits"] = sent.get("retransmits")
            if "mean_rtt" in stream:
                result["loaded_rtt_ms"] = {"min": stream.get("min_rtt", 0) / 1e3,
                                           "mean": stream["mean_rtt"] / 1e3,
                                           "max": stream.get("max_rtt", 0) / 1e3}
    except HostError as exc:
        result["error"] = str(exc)
    finally:
        if srv is not None:
            with contextlib.suppress(HostError):
                srv.stop()
    result["probe_s"] = round(time.monotonic() - started, 3)
    return result


# --------------------------------------------------------------------------- the host set


_LAUNCHER = """#!/bin/sh
# The python of this host for run {run} (made by the HND testbed).
{env}exec {python} "$@"
"""


class RealHosts(HostSetBase):
    """The hosts of a real lab, connected and with their link up (a ``HostSet``)."""

    def __init__(self, scenario: Scenario, run_dir: Path, run_id: str, *,
                 connect_timeout: float = 10.0, check: bool = True):
        if scenario.emulated:
            raise ValueError("RealHosts needs a scenario with a real lab (lab.hosts)")
        if check:
            require_local(scenario)
        self.scenario = scenario
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.workdir = f"/tmp/testbed-{run_id}"
        self.connect_timeout = connect_timeout
        self.nodes: dict[str, Node] = {}
        self.link: Any = None
        self.python = self._python_plan()
        self._sysctls: dict[str, dict[str, Any]] = {}
        super().__init__()
        self._steps = 0

    # ---- python
    def _runners(self):
        return [h for h in self.scenario.lab.hosts if h.role in ("md", "es")]

    def _python_plan(self) -> str:
        runners = self._runners()
        pythons = {(h.python, h.testbed_path) for h in runners}
        if len(pythons) == 1:
            python, path = next(iter(pythons))
            if path is None:
                return python
        return f"{self.workdir}/python"

    def _write_launchers(self) -> None:
        if self.python != f"{self.workdir}/python":
            return
        for h in self._runners():
            env = ""
            if h.testbed_path:
                env = f"PYTHONPATH={shlex.quote(h.testbed_path)}${{PYTHONPATH:+:$PYTHONPATH}} "
                env = f"export {env.strip()}\n"
            text = _LAUNCHER.format(run=self.run_id, env=env, python=shlex.quote(h.python))
            self.nodes[h.name].put_text(text, self.python, mode=0o755)

    # ---- life
    def _up(self) -> None:
        for h in self.scenario.lab.hosts:
            host = Host(access_for(h), connect_timeout=self.connect_timeout)
            host.connect()
            self._stack.callback(host.close)
            self.nodes[h.name] = Node(h, host)
        for name, node in self.nodes.items():
            node.run(["mkdir", "-p", self.workdir], timeout=15)
        self._stack.callback(self._remove_workdirs)
        self._write_launchers()
        self._set_tcp_sysctls()
        cls = LINKS[self.scenario.link.kind]
        self.link = cls(self.scenario, self.nodes, self.workdir, self.run_dir, self.run_id)
        self._stack.callback(self._link_down)
        self.link.up()
        log.info("real lab %s up (%s link): %s", self.run_id, self.scenario.link.kind,
                 ", ".join(f"{n}={self.address(n)}" for n in self.nodes if self._has_address(n)))

    def _link_down(self) -> None:
        errors = self.link.down()
        if errors:
            log.warning("link teardown: %d steps failed: %s", len(errors), "; ".join(errors))

    def _remove_workdirs(self) -> None:
        done: set[tuple[str, int]] = set()
        callbacks = []
        for node in self.nodes.values():
            machine = (node.spec.address, node.spec.port)
            if machine in done:
                continue
            done.add(machine)
            callbacks.append(lambda n=node: n.run(["rm", "-rf", self.workdir], timeout=30,
                                                  check=False))
        call_all(callbacks)

    def _set_tcp_sysctls(self) -> None:
        """The link's TCP settings on the hosts that send and receive frames (md, es)."""
        wanted = self.scenario.link.tcp.sysctls()
        for h in self._runners():
            node = self.nodes[h.name]
            record: dict[str, Any] = {}
            for key, value in wanted.items():
                try:
                    before, undo = set_sysctl(node, key, value)
                    record[key] = {"value": value, "was": before}
                    for cb in undo:
                        self._stack.callback(cb)
                except RealLabError as exc:
                    now = node.run(["sysctl", "-n", key], timeout=10, check=False).stdout.strip()
                    record[key] = {"value": now or None, "wanted": value, "error": str(exc)}
                    log.warning("%s", exc)
            self._sysctls[h.name] = record

    # ---- HostSet
    def host(self, name: str) -> Host:
        return self.nodes[name].host

    def _has_address(self, name: str) -> bool:
        try:
            self.link.address(name)
            return True
        except KeyError:
            return False

    def address(self, name: str) -> str:
        """The host's address on the lab link (where frames and load are sent)."""
        try:
            return self.link.address(name)
        except KeyError:
            raise KeyError(f"{name} has no address on the {self.scenario.link.kind} link "
                           f"(role {self.nodes[name].role})") from None

    def manifest(self) -> dict[str, Any]:
        hosts = {}
        for name, node in self.nodes.items():
            s = node.spec
            hosts[name] = {"role": s.role, "ssh": f"{s.user}@{s.address}:{s.port}",
                           "address": self.address(name) if self._has_address(name) else None,
                           "interfaces": dict(s.interfaces), "sudo": s.sudo,
                           "python": s.python, "testbed_path": s.testbed_path}
        return {
            "kind": "real",
            "link": self.link.manifest() if self.link else {},
            "hosts": hosts,
            "tcp_sysctls": self._sysctls,
            "python": self.python,
            "workdir": self.workdir,
            "ssh": "inventory hosts over SSH (paramiko), host keys pinned",
            "clocks": "each host's own: no delay component depends on them agreeing",
        }

    def step_conditions(self) -> dict[str, Any]:
        """The link before a load step: probe (base RTT, capacity) and radio state.

        Bounded (a few seconds) and never raises for a bad link: errors are recorded.
        """
        self._steps += 1
        md, es = self.scenario.host("md").name, self.scenario.host("es").name
        out: dict[str, Any] = {
            "probe": probe_link(self.host(md), self.host(es), self.address(es), self.workdir,
                                python=self.python, name=f"probe{self._steps}"),
        }
        try:
            radio = self.link.radio_state()
        except (HostError, RealLabError) as exc:
            radio = {"error": str(exc)}
        if radio:
            out["radio"] = radio
        return out
