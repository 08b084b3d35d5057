"""WiFi over hostapd: the settings, the generated configurations and the link's life on real hosts.

Layout (the paper's Section V-D): the AP host runs hostapd on its ``interfaces.wlan``; the MD and
the external node(s) are stations running wpa_supplicant on theirs; the ES is either the AP's
own machine (same SSH address and port: it is reached at the AP's address), a station of its
own (it has ``interfaces.wlan``), or a wired host behind the AP (``interfaces.lab``; the AP then
routes between the two networks).

``lab.radio`` of a real WiFi lab (every key optional)::

    ssid: hnd-testbed          # letters, digits, '.', '_', '-' (1-32)
    country_code: DE           # ISO 3166-1 alpha-2: sets the regulatory domain (strongly advised)
    hw_mode: g                 # a (5 GHz), b or g (2.4 GHz)
    channel: 6                 # valid for hw_mode (DFS channels 52-144 warn: slow start)
    ieee80211n: false          # HT (802.11n); the paper's AP was 802.11g
    supported_rates_mbit: []   # e.g. [6, 12, 24, 54]: restrict the AP's rates (hostapd)
    basic_rates_mbit: []       # must be among the supported rates
    subnet: 198.19.80.0/24     # lab-link addresses the testbed assigns (AP .1, stations .11...)
    power_save: false          # false: stations' power save is turned off for the run
    timeout_s: 30              # bound of AP start-up and of each association

A WPA2-PSK (CCMP) passphrase is made for every run; it never enters a manifest or a log, and the
copies of the configurations kept in the result folder have it replaced.

Readiness is read from the programs' own output: hostapd prints ``<if>: AP-ENABLED`` and
wpa_supplicant ``<if>: CTRL-EVENT-CONNECTED``; a failure reports the log lines that explain it.
Per load step ``radio_state`` records ``iw dev <if> link`` on stations and ``iw dev <if>
station dump`` on the AP (bitrate, signal, tx retries/failures, with the change since the
previous step).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from testbed.inventory import (Daemon, Fields, LabError, Node, Problems, add_route, call_all,
                               data_interface, enable_forwarding, is_station, on_ap_machine, redact)

log = logging.getLogger(__name__)

HW_MODES = ("a", "b", "g")
CHANNELS_24 = tuple(range(1, 15))
CHANNELS_5 = (36, 40, 44, 48, 52, 56, 60, 64, 100, 104, 108, 112, 116, 120, 124, 128, 132, 136,
              140, 144, 149, 153, 157, 161, 165)
DFS_CHANNELS = tuple(c for c in CHANNELS_5 if 52 <= c <= 144)
RATES_B = (1.0, 2.0, 5.5, 11.0)
RATES_OFDM = (6.0, 9.0, 12.0, 18.0, 24.0, 36.0, 48.0, 54.0)
RATES = {"b": RATES_B, "g": RATES_B + RATES_OFDM, "a": RATES_OFDM}
SSID_RE = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
DEFAULT_SUBNET = "198.19.80.0/24"

SETTING_KEYS = ("ssid", "country_code", "hw_mode", "channel", "ieee80211n", "supported_rates_mbit",
                "basic_rates_mbit", "subnet", "power_save", "timeout_s")


@dataclass(frozen=True)
class WifiSettings:
    ssid: str = "hnd-testbed"
    country_code: str | None = None
    hw_mode: str = "g"
    channel: int = 6
    ieee80211n: bool = False
    supported_rates_mbit: tuple[float, ...] = ()
    basic_rates_mbit: tuple[float, ...] = ()
    subnet: str = DEFAULT_SUBNET
    power_save: bool = False
    timeout_s: float = 30.0

    @property
    def frequency_mhz(self) -> int:
        return channel_frequency(self.channel)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["supported_rates_mbit"] = list(self.supported_rates_mbit)
        d["basic_rates_mbit"] = list(self.basic_rates_mbit)
        return d


def channel_frequency(channel: int) -> int:
    """Centre frequency (MHz) of a 2.4 or 5 GHz channel."""
    if channel == 14:
        return 2484
    if 1 <= channel <= 13:
        return 2407 + 5 * channel
    return 5000 + 5 * channel


def parse_settings(raw: Any) -> tuple[WifiSettings | None, Problems]:
    """``lab.radio`` of a WiFi lab: every problem as ``(key, message, severity)``."""
    f = Fields(raw, SETTING_KEYS, "WiFi settings")
    d = WifiSettings()
    ssid = f.string("ssid", d.ssid, pattern=SSID_RE,
                    what="an SSID of 1-32 letters, digits, '.', '_' or '-'")
    cc = f.string("country_code", None, pattern=COUNTRY_RE,
                  what="a two-letter ISO 3166-1 country code in capitals, such as DE or US")
    if f.data.get("country_code") is None:
        f.warn("country_code", "not set: hostapd and the stations then follow the world "
               "regulatory domain (fewer channels, lower power); set your country, e.g. DE")
    mode = f.string("hw_mode", d.hw_mode, choices=HW_MODES)
    default_channel = 36 if mode == "a" else 6
    channel = f.integer("channel", default_channel)
    if isinstance(f.data.get("channel"), int) and not isinstance(f.data["channel"], bool):
        if mode in ("b", "g"):
            allowed = CHANNELS_24 if mode == "b" else CHANNELS_24[:-1]
            if channel not in allowed:
                f.error("channel", f"expected a 2.4 GHz channel 1-{allowed[-1]} for hw_mode {mode}"
                        f"{' (14 is 802.11b only, in Japan)' if channel == 14 else ''}, got {channel}")
                channel = default_channel
        elif channel not in CHANNELS_5:
            f.error("channel", f"expected a 5 GHz channel for hw_mode a ({CHANNELS_5[0]}-"
                    f"{CHANNELS_5[-1]}, e.g. 36, 40, 44, 48, 149), got {channel}")
            channel = default_channel
        elif channel in DFS_CHANNELS:
            f.warn("channel", f"channel {channel} is a DFS channel: hostapd must listen for "
                   "radar for at least 60 s before the AP is enabled (prefer 36-48 or 149-165)")
    ht = f.boolean("ieee80211n", d.ieee80211n)
    if ht is True and mode == "b":
        f.error("ieee80211n", "802.11n needs hw_mode g or a, not b")
    rates: dict[str, tuple[float, ...]] = {}
    for key in ("supported_rates_mbit", "basic_rates_mbit"):
        value = f.data.get(key)
        rates[key] = ()
        if value is None:
            continue
        if not isinstance(value, list):
            f.error(key, f"expected a list of rates in Mbit/s, got a {type(value).__name__}")
            continue
        legal = RATES.get(mode, ())
        parsed = []
        for i, r in enumerate(value):
            if isinstance(r, bool) or not isinstance(r, (int, float)) or float(r) not in legal:
                f.error(f"{key}[{i}]", f"expected a rate of hw_mode {mode} "
                        f"({', '.join(f'{x:g}' for x in legal)}), got {r!r}")
            else:
                parsed.append(float(r))
        rates[key] = tuple(sorted(set(parsed)))
    if rates["basic_rates_mbit"] and rates["supported_rates_mbit"]:
        extra = set(rates["basic_rates_mbit"]) - set(rates["supported_rates_mbit"])
        if extra:
            f.error("basic_rates_mbit", "expected basic rates among the supported rates, "
                    f"{', '.join(f'{x:g}' for x in sorted(extra))} are not")
    subnet = f.string("subnet", d.subnet, what="an IPv4 network such as 198.19.80.0/24")
    if f.data.get("subnet") is not None and isinstance(subnet, str):
        try:
            net = ipaddress.IPv4Network(subnet, strict=True)
            if net.prefixlen > 28:
                f.error("subnet", f"expected a network with room for the AP and its stations "
                        f"(/28 or larger), got {subnet}")
            subnet = str(net)
        except ValueError as exc:
            f.error("subnet", f"expected an IPv4 network such as 198.19.80.0/24, got {subnet!r} "
                    f"({exc})")
    power_save = f.boolean("power_save", d.power_save)
    timeout = f.number("timeout_s", d.timeout_s, minimum=1, maximum=600)
    if not f.ok:
        return None, f.problems
    return WifiSettings(ssid, cc, mode, channel, ht, rates["supported_rates_mbit"],
                        rates["basic_rates_mbit"], subnet, power_save, timeout), f.problems


# --------------------------------------------------------------------------- configurations


def new_passphrase(length: int = 32) -> str:
    """A per-run WPA2 passphrase (8-63 printable characters; here letters and digits)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _rates_field(rates: tuple[float, ...]) -> str:
    return " ".join(str(int(round(r * 10))) for r in rates)  # hostapd counts 100 kbit/s units


def _check_secret(passphrase: str) -> None:
    if not 8 <= len(passphrase) <= 63 or any(c not in string.printable or c in "\"\n\r" for c in passphrase):
        raise ValueError("a WPA passphrase has 8-63 printable characters and no quotes")


def hostapd_conf(s: WifiSettings, interface: str, passphrase: str, *, ctrl_dir: str,
                 run: str = "") -> str:
    """hostapd.conf for an AP on ``interface`` (WPA2-PSK, CCMP)."""
    _check_secret(passphrase)
    lines = [
        f"# hostapd configuration made by the HND testbed{f' for run {run}' if run else ''}.",
        "# The passphrase is made for this run only.",
        f"interface={interface}",
        "driver=nl80211",
        f"ctrl_interface={ctrl_dir}",
        "ctrl_interface_group=0",
        f"ssid={s.ssid}",
    ]
    if s.country_code:
        lines += [f"country_code={s.country_code}", "ieee80211d=1"]
    lines += [f"hw_mode={s.hw_mode}", f"channel={s.channel}", "beacon_int=100", "dtim_period=2"]
    if s.ieee80211n:
        lines += ["ieee80211n=1", "wmm_enabled=1"]
    if s.supported_rates_mbit:
        lines.append(f"supported_rates={_rates_field(s.supported_rates_mbit)}")
    if s.basic_rates_mbit:
        lines.append(f"basic_rates={_rates_field(s.basic_rates_mbit)}")
    lines += [
        "auth_algs=1",
        "ignore_broadcast_ssid=0",
        "wpa=2",
        "wpa_key_mgmt=WPA-PSK",
        "rsn_pairwise=CCMP",
        f"wpa_passphrase={passphrase}",
    ]
    return "\n".join(lines) + "\n"


def wpa_supplicant_conf(s: WifiSettings, passphrase: str, *, ctrl_dir: str, run: str = "") -> str:
    """wpa_supplicant.conf for a station of that AP (only its channel is scanned)."""
    _check_secret(passphrase)
    lines = [
        f"# wpa_supplicant configuration made by the HND testbed{f' for run {run}' if run else ''}.",
        f"ctrl_interface={ctrl_dir}",
    ]
    if s.country_code:
        lines.append(f"country={s.country_code}")
    lines += [
        "ap_scan=1",
        "network={",
        f'\tssid="{s.ssid}"',
        "\tscan_ssid=1",
        "\tkey_mgmt=WPA-PSK",
        "\tproto=RSN",
        "\tpairwise=CCMP",
        "\tgroup=CCMP",
        f'\tpsk="{passphrase}"',
        f"\tscan_freq={s.frequency_mhz}",
        f"\tfreq_list={s.frequency_mhz}",
        "}",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- iw output


_NUM = re.compile(r"^-?\d+(\.\d+)?")


def _value(text: str) -> Any:
    text = text.strip()
    m = _NUM.match(text)
    if m and (len(m.group(0)) == len(text) or text[len(m.group(0)):].strip().split()[0]
              in ("dBm", "ms", "MBit/s", "bytes", "packets")):
        number = float(m.group(0))
        return int(number) if number.is_integer() and "." not in m.group(0) else number
    return text


_KEYS = {
    "signal": "signal_dbm", "signal avg": "signal_avg_dbm", "tx bitrate": "tx_bitrate_mbit",
    "rx bitrate": "rx_bitrate_mbit", "tx retries": "tx_retries", "tx failed": "tx_failed",
    "tx packets": "tx_packets", "rx packets": "rx_packets", "tx bytes": "tx_bytes",
    "rx bytes": "rx_bytes", "inactive time": "inactive_ms", "freq": "freq_mhz", "SSID": "ssid",
    "beacon loss": "beacon_loss", "rx drop misc": "rx_drop_misc", "connected time": "connected_s",
    "expected throughput": "expected_throughput_mbit",
}


def _fields(lines: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for line in lines:
        key, sep, rest = line.strip().partition(":")
        if not sep:
            continue
        key = key.strip()
        if key in ("RX", "TX"):  # iw link: "RX: 12345 bytes (100 packets)"
            m = re.match(r"\s*(\d+) bytes \((\d+) packets\)", rest)
            if m:
                out[f"{key.lower()}_bytes"] = int(m.group(1))
                out[f"{key.lower()}_packets"] = int(m.group(2))
            continue
        if key in _KEYS:
            value = _value(rest.split("[")[0])
            if key in ("tx bitrate", "rx bitrate"):
                out[_KEYS[key]] = value
                out[_KEYS[key].replace("_mbit", "_info")] = rest.strip()
            else:
                out[_KEYS[key]] = value
    return out


def parse_iw_link(text: str) -> dict[str, Any]:
    """``iw dev <if> link`` of a station: ``{"connected": bool, "bssid", "signal_dbm", ...}``."""
    lines = text.splitlines()
    if not lines or lines[0].startswith("Not connected"):
        return {"connected": False}
    m = re.match(r"Connected to ([0-9a-f:]{17})", lines[0].strip())
    out: dict[str, Any] = {"connected": bool(m)}
    if m:
        out["bssid"] = m.group(1)
    out.update(_fields(lines[1:]))
    return out


def parse_station_dump(text: str) -> dict[str, dict[str, Any]]:
    """``iw dev <if> station dump`` of an AP: MAC -> the station's counters and rates."""
    stations: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        m = re.match(r"^Station ([0-9a-f:]{17})", line.strip())
        if m:
            current = stations.setdefault(m.group(1), [])
        elif current is not None:
            current.append(line)
    return {mac: _fields(lines) for mac, lines in stations.items()}


COUNTERS = ("tx_retries", "tx_failed", "tx_packets", "rx_packets", "tx_bytes", "rx_bytes",
            "beacon_loss", "rx_drop_misc")


def with_deltas(now: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    """``now`` plus ``<counter>_delta`` for every counter also in ``before``."""
    out = dict(now)
    if before:
        for key in COUNTERS:
            if isinstance(now.get(key), int) and isinstance(before.get(key), int):
                out[f"{key}_delta"] = now[key] - before[key]
    return out


# --------------------------------------------------------------------------- the link


def settings_manifest(s: WifiSettings) -> dict[str, Any]:
    """What every WiFi link (radio lab, or hwsim in the AP VM) records of its settings."""
    return {"settings": s.to_dict(), "frequency_mhz": s.frequency_mhz,
            "security": "WPA2-PSK (CCMP), per-run passphrase (not recorded)"}


AP_ENABLED = re.compile(r"AP-ENABLED")
CONNECTED = re.compile(r"CTRL-EVENT-CONNECTED")


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
                raise LabError(f"subnet {net} has no room for {len(self.stations)} stations")
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
                raise LabError(f"{h.name}: interface {ifname} has no IPv4 address")
            self._addresses[h.name] = found[0].split("/")[0]
            self._route_behind_ap(node, found[0], plan)

    def _route_behind_ap(self, es: Node, es_addr: str, plan: dict[str, str]) -> None:
        ap_data = data_interface(self.ap.spec)
        if ap_data is None:
            raise LabError(f"{es.name} is wired behind the AP: the AP host needs interfaces.lab "
                           "(its interface on the ES's network) to route between them")
        ap_on_es_net = self.ap.ipv4(ap_data)
        if not ap_on_es_net:
            raise LabError(f"{self.ap.name}: {ap_data} has no IPv4 address")
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
