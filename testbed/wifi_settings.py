"""WiFi settings of a real lab (``lab.radio``), their checks, and the files made from them.

Pure: nothing here runs a program. ``testbed.wifi_link`` brings a real WiFi link up with these
files; ``testbed.vm.radio`` uses the same generators for the hwsim radios of the AP VM.

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
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import secrets
import string
from dataclasses import dataclass
from typing import Any

from testbed.checks import Checker, Section

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


def parse_settings(ck: Checker, raw: Any, path: str = "lab.radio") -> WifiSettings | None:
    """``lab.radio`` of a WiFi lab (``None``: every default); ``None`` after recording errors."""
    f = Section(ck, raw, path, SETTING_KEYS, "WiFi settings")
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
        return None
    return WifiSettings(ssid, cc, mode, channel, ht, rates["supported_rates_mbit"],
                        rates["basic_rates_mbit"], subnet, power_save, timeout)


def settings_manifest(s: WifiSettings) -> dict[str, Any]:
    """What every WiFi link (radio lab, or hwsim in the AP VM) records of its settings."""
    return {"settings": s.to_dict(), "frequency_mhz": s.frequency_mhz,
            "security": "WPA2-PSK (CCMP), per-run passphrase (not recorded)"}


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
