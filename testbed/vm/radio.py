"""WiFi mode of the AP VM: a real 802.11 association (hostapd, wpa_supplicant, WPA2) on
``mac80211_hwsim`` radios inside the VM.

One radio per station plus one for the AP (``insmod mac80211_hwsim radios=N+1``). The AP's radio
stays in the VM's root namespace, where hostapd runs with the configuration
:func:`testbed.wifi_settings.hostapd_conf` makes (the generator a radio lab uses). Each station gets a
namespace inside the VM holding its radio (``iw phy PHY set netns name NS``) and the VM NIC whose
tap leads to the station's host namespace; wpa_supplicant runs there
(:func:`testbed.wifi_settings.wpa_supplicant_conf`)::

    md ns ── tap ── [VM: ns sta-md: eth1 198.18.1.1 ─ wlan1 198.19.80.10] ~~802.11~~
                                                     [VM root: wlan0 198.19.80.1 (hostapd) ─ eth3 ─ tap ── es ns]

so the MD's frames are encrypted, sent over the simulated air and decrypted by the AP before
they are routed to the ES. The bring-up waits for hostapd's ``AP-ENABLED`` and every station's
``CTRL-EVENT-CONNECTED`` (read from their log files) and fails with the log's tail if one does
not come within the settings' ``timeout_s``.

mac80211_hwsim has no airtime model: frames cross the simulated medium as fast as the VM's CPU
moves them. The medium's bottleneck stays netem: on the AP radio's egress (downlink) and on the
VM NIC toward the ES (uplink), see :mod:`testbed.vm.lab`.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.realnode import redact
from testbed.vm.shaping import offloads_off
from testbed.wifi_settings import (WifiSettings, hostapd_conf, new_passphrase, settings_manifest,
                                   wpa_supplicant_conf)
from testbed.wifi_status import (AP_ENABLED, CONNECTED, parse_iw_link, parse_station_dump,
                                 with_deltas)

log = logging.getLogger(__name__)

IP = "/usr/sbin/ip"
IW = "/usr/sbin/iw"
CONF_DIR = "/etc/testbed/wifi"
LOG_DIR = "/var/log/testbed"
NO_AIRTIME_NOTE = ("mac80211_hwsim has no airtime model (no wmediumd): 802.11 frames cross the "
                   "simulated medium at the speed of the VM's CPU; the medium's capacity, delay and "
                   "queue are netem's on the AP radio (downlink) and on the VM NIC toward the ES "
                   "(uplink)")


class RadioError(RuntimeError):
    pass


@dataclass(frozen=True)
class StationPlan:
    """A station of the hwsim medium: its host, the VM NIC toward that host (and the NIC's
    address, with prefix), the host's network (routed from the AP to the station's radio)."""

    host: str
    nic: str
    nic_address: str
    host_network: str


@dataclass
class Radio:
    ifname: str
    phy: str
    mac: str


def _natural(name: str) -> tuple[str, int]:
    m = re.match(r"^(\D*)(\d+)$", name)
    return (m.group(1), int(m.group(2))) if m else (name, -1)


def netns_name(host: str) -> str:
    return f"sta-{host}"


class HwsimWifi:
    """hostapd and wpa_supplicant on hwsim radios in ``vm`` (an :class:`AccessPointVm`)."""

    def __init__(self, vm, settings: WifiSettings, stations: list[StationPlan], *,
                 run_id: str = "", keep_dir: Path | None = None) -> None:
        if not stations:
            raise RadioError("WiFi mode needs at least one station (an md or ext host)")
        self.vm = vm
        self.settings = settings
        self.stations = list(stations)
        self.run_id = run_id
        self.keep_dir = Path(keep_dir) if keep_dir else None
        self.passphrase = new_passphrase()
        self.ap: Radio | None = None
        self.radios: dict[str, Radio] = {}
        self.addresses: dict[str, str] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.offloads: dict[str, dict[str, str]] = {}
        self.cipher_driver: str | None = None
        self.bring_up_s: float | None = None
        self.path_capacity: dict[str, Any] | None = None
        self._last: dict[str, dict[str, Any]] = {}

    # ---- helpers ---------------------------------------------------------------------------
    def _sh(self, script: str, timeout: float = 30, check: bool = True, netns: str | None = None):
        if netns is not None:
            script = f"{IP} netns exec {netns} sh -c {shlex.quote(script)}"
        return self.vm.run(["sh", "-c", "set -e\n" + script], timeout=timeout, check=check)

    def _write(self, path: str, text: str, name: str) -> None:
        self.vm.host.run(["sh", "-c", f"umask 077; mkdir -p {CONF_DIR}; cat > {path}"],
                         timeout=20, input=text)
        if self.keep_dir is not None:
            self.keep_dir.mkdir(parents=True, exist_ok=True)
            (self.keep_dir / name).write_text(redact(text, [self.passphrase]))

    def _wait_event(self, logfile: str, pattern: re.Pattern, what: str) -> dict[str, Any]:
        """Poll ``logfile`` in the VM until ``pattern`` shows; the matching line and the wait."""
        t0 = time.monotonic()
        deadline = t0 + self.settings.timeout_s
        while True:
            text = self.vm.run(["cat", logfile], timeout=20, check=False).stdout
            for line in text.splitlines():
                if pattern.search(line):
                    return {"line": line.strip(), "wait_s": round(time.monotonic() - t0, 2)}
            if time.monotonic() > deadline:
                tail = "\n".join(text.splitlines()[-25:])
                raise RadioError(f"no {what} within {self.settings.timeout_s:g}s "
                                 f"(the WiFi settings' timeout_s); {logfile} ends with:\n{tail}")
            time.sleep(0.3)

    # ---- bring-up --------------------------------------------------------------------------
    def up(self) -> dict[str, Any]:
        t0 = time.monotonic()
        radios = self._load_radios(len(self.stations) + 1)
        self.ap, station_radios = radios[0], radios[1:]
        net = ipaddress.ip_network(self.settings.subnet)
        pool = list(net.hosts())
        if len(pool) < 10 + len(self.stations):
            raise RadioError(f"WiFi subnet {net} is too small for {len(self.stations)} stations")
        ap_addr = f"{pool[0]}/{net.prefixlen}"
        self._sh(f"mkdir -p {LOG_DIR}")
        self._start_ap(ap_addr)
        for k, (st, radio) in enumerate(zip(self.stations, station_radios)):
            self.radios[st.host] = radio
            self._start_station(st, radio, f"{pool[10 + k]}/{net.prefixlen}", str(pool[0]))
        self.bring_up_s = round(time.monotonic() - t0, 2)
        drivers = self._sh("grep -A3 'name *: ccm(aes)' /proc/crypto | sed -n 's/^driver *: //p'",
                           check=False).stdout.split()
        self.cipher_driver = drivers[0] if drivers else None
        log.info("WiFi in the VM: %d station(s) associated to %r in %.1fs", len(self.stations),
                 self.settings.ssid, time.monotonic() - t0)
        return self.manifest()

    def _load_radios(self, count: int) -> list[Radio]:
        self._sh(
            'K=$(uname -r)\n'
            'while read -r m; do\n'
            '  case "$m" in\n'
            '    *mac80211_hwsim*) hwsim="$m" ;;\n'
            '    *aesni*) insmod "/lib/modules/$K/$m" 2>/dev/null || echo "no AES-NI: aes-generic" ;;\n'
            '    "") ;;\n'
            '    *) insmod "/lib/modules/$K/$m" ;;\n'
            '  esac\n'
            f'done < /etc/testbed/wifi-modules\n'
            f'insmod "/lib/modules/$K/$hwsim" radios={count}', timeout=60)
        out = self._sh("for d in /sys/class/net/*; do [ -e $d/phy80211 ] && "
                       "echo ${d##*/} $(cat $d/phy80211/name) $(cat $d/address); done; true").stdout
        radios = sorted((Radio(*line.split()) for line in out.splitlines() if len(line.split()) == 3),
                        key=lambda r: _natural(r.ifname))
        if len(radios) != count:
            raise RadioError(f"mac80211_hwsim made {len(radios)} radios, expected {count}: {out!r}")
        return radios

    def _start_ap(self, address: str) -> None:
        ap = self.ap
        assert ap is not None
        conf = hostapd_conf(self.settings, ap.ifname, self.passphrase, ctrl_dir="/run/hostapd",
                            run=self.run_id)
        self._write(f"{CONF_DIR}/hostapd.conf", conf, "hostapd.conf")
        self._sh(f"{IP} link set {ap.ifname} up\n"
                 f"/usr/sbin/hostapd -B -t -P /run/hostapd.pid -f {LOG_DIR}/hostapd.log "
                 f"{CONF_DIR}/hostapd.conf", timeout=30)
        self.events["ap"] = {"AP-ENABLED": self._wait_event(f"{LOG_DIR}/hostapd.log", AP_ENABLED,
                                                             f"AP-ENABLED from hostapd on {ap.ifname}")}
        self._sh(f"{IP} addr add {address} dev {ap.ifname}")
        self.offloads["ap:" + ap.ifname] = offloads_off(self.vm, ap.ifname)
        self.addresses["ap"] = address

    def _start_station(self, st: StationPlan, radio: Radio, address: str, gateway: str) -> None:
        ns = netns_name(st.host)
        conf = wpa_supplicant_conf(self.settings, self.passphrase, ctrl_dir=f"/run/wpa-{st.host}",
                                   run=self.run_id)
        self._write(f"{CONF_DIR}/wpa_supplicant-{st.host}.conf", conf,
                    f"wpa_supplicant-{st.host}.conf")
        logfile = f"{LOG_DIR}/wpa_supplicant-{st.host}.log"
        self._sh(f"{IP} netns add {ns}\n"
                 f"{IW} phy {radio.phy} set netns name {ns}\n"
                 f"{IP} link set {st.nic} netns {ns}")
        self._sh(f"{IP} link set lo up\n"
                 "echo 1 > /proc/sys/net/ipv4/ip_forward\n"
                 "for f in /proc/sys/net/ipv6/conf/*/disable_ipv6; do echo 1 > $f; done\n"
                 f"{IP} addr add {st.nic_address} dev {st.nic}\n"
                 f"{IP} link set {st.nic} up\n"
                 f"{IP} link set {radio.ifname} up\n"
                 f"{IW} dev {radio.ifname} set power_save off || true\n"
                 f"/usr/sbin/wpa_supplicant -B -t -i {radio.ifname} -D nl80211 "
                 f"-c {CONF_DIR}/wpa_supplicant-{st.host}.conf -P /run/wpa-{st.host}.pid "
                 f"-f {logfile}", netns=ns)
        self.events[st.host] = {"CTRL-EVENT-CONNECTED": self._wait_event(
            logfile, CONNECTED, f"CTRL-EVENT-CONNECTED from {st.host}'s wpa_supplicant "
                                f"(SSID {self.settings.ssid})")}
        self._sh(f"{IP} addr add {address} dev {radio.ifname}\n"
                 f"{IP} route add default via {gateway} dev {radio.ifname}", netns=ns)
        assert self.ap is not None
        self._sh(f"{IP} route add {st.host_network} via {address.split('/')[0]} "
                 f"dev {self.ap.ifname}")
        for dev in (st.nic, radio.ifname):
            self.offloads[f"{st.host}:{dev}"] = offloads_off(self.vm, dev, netns=ns)
        self.addresses[st.host] = address
        log.info("%s: associated to %r (radio %s in VM namespace %s)", st.host,
                 self.settings.ssid, radio.ifname, ns)

    # ---- per step --------------------------------------------------------------------------
    def radio_state(self) -> dict[str, Any]:
        """Each station's ``iw link`` and the AP's ``station dump``, with counter deltas."""
        out: dict[str, Any] = {}
        for st in self.stations:
            radio = self.radios.get(st.host)
            if radio is None:
                continue
            res = self._sh(f"{IW} dev {radio.ifname} link", timeout=20, check=False,
                           netns=netns_name(st.host))
            state = parse_iw_link(res.stdout) if res.rc == 0 else {"error": res.stderr.strip()}
            out[st.host] = with_deltas(state, self._last.get(st.host))
            self._last[st.host] = state
        if self.ap is not None:
            res = self._sh(f"{IW} dev {self.ap.ifname} station dump", timeout=20, check=False)
            by_mac = {r.mac: host for host, r in self.radios.items()}
            view = {}
            for mac, state in (parse_station_dump(res.stdout) if res.rc == 0 else {}).items():
                key = by_mac.get(mac, mac)
                view[key] = with_deltas(state, self._last.get(f"ap:{key}"))
                self._last[f"ap:{key}"] = state
            out["ap"] = {"stations": view} if res.rc == 0 else {"error": res.stderr.strip()}
        return out

    def fetch_logs(self) -> list[Path]:
        """hostapd's and each wpa_supplicant's log into ``keep_dir`` (best effort)."""
        if self.keep_dir is None:
            return []
        kept = []
        for name in ["hostapd", *(f"wpa_supplicant-{st.host}" for st in self.stations)]:
            try:
                res = self.vm.run(["cat", f"{LOG_DIR}/{name}.log"], timeout=20, check=False)
            except Exception as exc:  # the VM may be gone already
                log.debug("no %s log from the VM: %s", name, exc)
                continue
            if res.rc == 0:
                path = self.keep_dir / f"{name}.log"
                path.write_text(redact(res.stdout, [self.passphrase]))
                kept.append(path)
        return kept

    def manifest(self) -> dict[str, Any]:
        return {
            "mode": "hwsim",
            **settings_manifest(self.settings),
            "ap_radio": vars(self.ap) if self.ap else None,
            "station_radios": {h: {**vars(r), "vm_namespace": netns_name(h)}
                               for h, r in self.radios.items()},
            "addresses": dict(self.addresses),
            "events": dict(self.events),
            "bring_up_s": self.bring_up_s,
            "offloads": dict(self.offloads),
            "ccmp_cipher_driver": self.cipher_driver,
            "path_capacity": self.path_capacity,
            "notes": [NO_AIRTIME_NOTE],
            "configs": "vm/wifi/hostapd.conf, vm/wifi/wpa_supplicant-<host>.conf (passphrase "
                       "redacted); logs next to them after the run",
        }

