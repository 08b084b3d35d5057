"""A real WiFi link: hostapd and wpa_supplicant started on the lab's hosts over SSH.

Layout (the paper's Section V-D): the AP host runs hostapd on its ``interfaces.wlan``; the MD and
the external node(s) are stations running wpa_supplicant on theirs; the ES is either the AP's
own machine (same SSH address and port: it is reached at the AP's address), a station of its
own (it has ``interfaces.wlan``), or a wired host behind the AP (``interfaces.lab``; the AP then
routes between the two networks). The settings and the configuration files come from
``testbed.wifi_settings``; readiness and radio state are read by ``testbed.wifi_status``; a
failure reports the log lines that explain it.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any, Callable

from testbed.inventory import data_interface, is_station, on_ap_machine
from testbed.realnode import (Daemon, Node, RealLabError, add_route, call_all, enable_forwarding,
                              redact)
from testbed.wifi_settings import (WifiSettings, hostapd_conf, new_passphrase, settings_manifest,
                                   wpa_supplicant_conf)
from testbed.wifi_status import (AP_ENABLED, CONNECTED, parse_iw_link, parse_station_dump,
                                 with_deltas)

log = logging.getLogger(__name__)


class WifiLink:
    """hostapd on the AP, wpa_supplicant on the stations, addresses, routes; undone by down()."""

    kind = "wifi"

    def __init__(self, scenario, nodes: dict[str, Node], workdir: str, run_dir: Path,
                 run_id: str = ""):
        self.scenario = scenario
        self.settings: WifiSettings = scenario.lab.radio or WifiSettings()
        self.nodes = nodes
        self.workdir = workdir
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.passphrase = new_passphrase()
        self.ap = nodes[scenario.host("ap").name]
        self.stations = [nodes[h.name] for h in scenario.lab.hosts if is_station(h, scenario)]
        self._addresses: dict[str, str] = {}
        self._undo: list[Callable[[], Any]] = []
        self._daemons: list[Daemon] = []
        self._macs: dict[str, str] = {}
        self._last: dict[str, dict[str, Any]] = {}
        self._notes: list[str] = []

    # ---- addresses
    def plan(self) -> dict[str, str]:
        """Lab-link address (with prefix) of the AP and of every station."""
        net = ipaddress.IPv4Network(self.settings.subnet)
        pool = list(net.hosts())
        offset = 10 if len(pool) >= 32 else 1
        plan = {self.ap.name: f"{pool[0]}/{net.prefixlen}"}
        for k, node in enumerate(self.stations):
            if offset + k >= len(pool):
                raise RealLabError(f"subnet {net} has no room for {len(self.stations)} stations")
            plan[node.name] = f"{pool[offset + k]}/{net.prefixlen}"
        return plan

    def address(self, name: str) -> str:
        return self._addresses[name]

    # ---- bring-up
    def up(self) -> None:
        s = self.settings
        plan = self.plan()
        ap_if = self.ap.spec.interfaces["wlan"]
        conf_dir = f"{self.workdir}/wifi"
        self.ap.run(["mkdir", "-p", conf_dir], timeout=10)
        self._undo.append(lambda: self.ap.run(["rm", "-rf", conf_dir], timeout=15, check=False,
                                              privileged=True))
        conf = hostapd_conf(s, ap_if, self.passphrase, ctrl_dir=f"{conf_dir}/hostapd-ctrl",
                            run=self.run_id)
        self._keep("hostapd.conf", conf)
        self.ap.put_text(conf, f"{conf_dir}/hostapd.conf")
        hostapd = self.ap.start_daemon([self.ap.tool("hostapd"), f"{conf_dir}/hostapd.conf"],
                                       "hostapd", self.workdir)
        self._daemon(hostapd)
        hostapd.wait_for(AP_ENABLED, s.timeout_s, f"AP-ENABLED on {ap_if}")
        self._assign(self.ap, ap_if, plan[self.ap.name])
        log.info("%s: AP %r up on %s channel %d", self.ap.name, s.ssid, ap_if, s.channel)
        for node in self.stations:
            ifname = node.spec.interfaces["wlan"]
            node.run(["mkdir", "-p", conf_dir], timeout=10)
            self._undo.append(lambda n=node: n.run(["rm", "-rf", conf_dir], timeout=15,
                                                   check=False, privileged=True))
            conf = wpa_supplicant_conf(s, self.passphrase, ctrl_dir=f"{conf_dir}/wpa-ctrl",
                                       run=self.run_id)
            self._keep(f"wpa_supplicant-{node.name}.conf", conf)
            node.put_text(conf, f"{conf_dir}/wpa_supplicant.conf")
            self._power_save(node, ifname)
            wpa = node.start_daemon([node.tool("wpa_supplicant"), "-i", ifname, "-D", "nl80211",
                                     "-c", f"{conf_dir}/wpa_supplicant.conf"],
                                    f"wpa_supplicant-{node.name}", self.workdir)
            self._daemon(wpa)
            wpa.wait_for(CONNECTED, s.timeout_s, f"CTRL-EVENT-CONNECTED on {ifname} (SSID {s.ssid})")
            self._assign(node, ifname, plan[node.name])
            self._macs[node.name] = node.read(f"/sys/class/net/{ifname}/address").strip()
            log.info("%s: associated to %r", node.name, s.ssid)
        for name, addr in plan.items():
            self._addresses[name] = addr.split("/")[0]
        self._place_others(plan)

    def _keep(self, name: str, text: str) -> None:
        path = self.run_dir / "lab" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(redact(text, [self.passphrase]))

    def _daemon(self, d: Daemon) -> None:
        self._daemons.append(d)
        self._undo.append(lambda: (d.stop(), d.fetch_logs(self.run_dir / "logs")))

    def _assign(self, node: Node, ifname: str, address: str) -> None:
        node.run([node.tool("ip"), "addr", "replace", address, "dev", ifname], timeout=15,
                 privileged=True)
        node.run([node.tool("ip"), "link", "set", ifname, "up"], timeout=15, privileged=True)
        self._undo.append(lambda: node.run([node.tool("ip"), "addr", "del", address, "dev", ifname],
                                           timeout=15, check=False, privileged=True))

    def _power_save(self, node: Node, ifname: str) -> None:
        res = node.run([node.tool("iw"), "dev", ifname, "get", "power_save"], timeout=10, check=False)
        was = "on" if "on" in res.stdout.lower() else "off" if res.rc == 0 else None
        want = "on" if self.settings.power_save else "off"
        if was is None or was == want:
            return
        done = node.run([node.tool("iw"), "dev", ifname, "set", "power_save", want], timeout=10,
                        check=False, privileged=True)
        if done.rc == 0:
            self._undo.append(lambda: node.run([node.tool("iw"), "dev", ifname, "set", "power_save",
                                                was], timeout=10, check=False, privileged=True))
        else:
            self._notes.append(f"{node.name}: could not set power_save {want}: {done.stderr.strip()}")

    def _place_others(self, plan: dict[str, str]) -> None:
        """Hosts that are neither AP nor station: on the AP's machine, or wired behind it."""
        ap_addr = plan[self.ap.name].split("/")[0]
        for h in self.scenario.lab.hosts:
            if h.name in self._addresses:
                continue
            if on_ap_machine(h, self.scenario):
                self._addresses[h.name] = ap_addr
                continue
            ifname = data_interface(h)
            if ifname is None or h.role not in ("es",):
                continue
            node = self.nodes[h.name]
            found = node.ipv4(ifname)
            if not found:
                raise RealLabError(f"{h.name}: interface {ifname} has no IPv4 address")
            self._addresses[h.name] = found[0].split("/")[0]
            self._route_behind_ap(node, found[0], plan)

    def _route_behind_ap(self, es: Node, es_addr: str, plan: dict[str, str]) -> None:
        ap_data = data_interface(self.ap.spec)
        if ap_data is None:
            raise RealLabError(f"{es.name} is wired behind the AP: the AP host needs interfaces.lab "
                           "(its interface on the ES's network) to route between them")
        ap_on_es_net = self.ap.ipv4(ap_data)
        if not ap_on_es_net:
            raise RealLabError(f"{self.ap.name}: {ap_data} has no IPv4 address")
        self._undo += enable_forwarding(self.ap)
        ap_wlan = plan[self.ap.name].split("/")[0]
        for node in self.stations:
            self._undo += add_route(node, es_addr.split("/")[0] + "/32", ap_wlan,
                                    node.spec.interfaces["wlan"])
        self._undo += add_route(es, self.settings.subnet, ap_on_es_net[0].split("/")[0], None)

    # ---- per step
    def radio_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for node in self.stations:
            ifname = node.spec.interfaces["wlan"]
            res = node.run([node.tool("iw"), "dev", ifname, "link"], timeout=10, check=False)
            state = parse_iw_link(res.stdout) if res.rc == 0 else {"error": res.stderr.strip()}
            out[node.name] = with_deltas(state, self._last.get(node.name))
            self._last[node.name] = state
        ap_if = self.ap.spec.interfaces["wlan"]
        res = self.ap.run([self.ap.tool("iw"), "dev", ap_if, "station", "dump"], timeout=10,
                          check=False)
        if res.rc != 0:
            res = self.ap.run([self.ap.tool("iw"), "dev", ap_if, "station", "dump"], timeout=10,
                              check=False, privileged=True)
        by_mac = {mac: name for name, mac in self._macs.items()}
        stations = parse_station_dump(res.stdout) if res.rc == 0 else {}
        ap_view = {}
        for mac, state in stations.items():
            key = by_mac.get(mac, mac)
            ap_view[key] = with_deltas(state, self._last.get(f"ap:{key}"))
            self._last[f"ap:{key}"] = state
        out[self.ap.name] = {"stations": ap_view} if res.rc == 0 else {"error": res.stderr.strip()}
        return out

    # ---- teardown
    def down(self) -> list[str]:
        undo, self._undo = self._undo[::-1], []
        return call_all(undo)

    def manifest(self) -> dict[str, Any]:
        return {
            "kind": "wifi",
            **settings_manifest(self.settings),
            "ap": self.ap.name,
            "stations": [n.name for n in self.stations],
            "station_macs": dict(self._macs),
            "addresses": dict(self._addresses),
            "notes": list(self._notes),
            "configs": "lab/hostapd.conf, lab/wpa_supplicant-<host>.conf (passphrase redacted)",
        }
