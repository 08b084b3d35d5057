"""Generated hostapd and wpa_supplicant configurations, checked by Debian's own binaries.

This machine has no wireless hardware (and no cfg80211): each binary must get past parsing
(and, for hostapd, its consistency checks) and fail only when it initialises the nl80211 driver.
The debug output (-dd) shows how far each got. Bad scenario values must be our own errors,
found when the scenario is loaded, before any binary runs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from testbed import wifi_settings, wifi_status
from testbed.scenario import ScenarioError, parse_scenario

HOSTAPD = shutil.which("hostapd") or "/usr/sbin/hostapd"
WPA_SUPPLICANT = shutil.which("wpa_supplicant") or "/usr/sbin/wpa_supplicant"
needs_hostapd = pytest.mark.skipif(not Path(HOSTAPD).exists(), reason="hostapd not installed "
                                   "(scripts/install.sh installs it)")
needs_wpa = pytest.mark.skipif(not Path(WPA_SUPPLICANT).exists(), reason="wpasupplicant not "
                               "installed (scripts/install.sh installs it)")

SETTINGS = [
    wifi_settings.WifiSettings(country_code="DE"),
    wifi_settings.WifiSettings(ssid="hnd.lab-5", country_code="US", hw_mode="a", channel=36, ieee80211n=True),
    wifi_settings.WifiSettings(hw_mode="g", channel=11, supported_rates_mbit=(6.0, 12.0, 24.0, 54.0),
                      basic_rates_mbit=(6.0, 12.0, 24.0)),
    wifi_settings.WifiSettings(hw_mode="b", channel=1, country_code="JP"),
]


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    return proc.stdout + proc.stderr


@needs_hostapd
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"{s.hw_mode}{s.channel}")
def test_hostapd_parses_the_generated_configuration(settings, tmp_path):
    passphrase = wifi_settings.new_passphrase()
    conf = tmp_path / "hostapd.conf"
    conf.write_text(wifi_settings.hostapd_conf(settings, "wlan-none0", passphrase,
                                      ctrl_dir=str(tmp_path / "ctrl"), run="abc123"))
    out = _run([HOSTAPD, "-dd", str(conf)])
    assert f"Configuration file: {conf}" in out, out
    assert "errors found in configuration file" not in out and "Line " not in out, out
    # parsing and the consistency checks passed: hostapd went on to the driver, and only that failed
    assert "Failed to initialize driver 'nl80211'" in out or "nl80211" in out, out
    assert passphrase not in out


@needs_hostapd
def test_hostapd_reports_what_a_broken_file_would_look_like(tmp_path):
    """The markers the test above relies on: a bad line is reported by line number."""
    conf = tmp_path / "bad.conf"
    text = wifi_settings.hostapd_conf(SETTINGS[0], "wlan-none0", "x" * 12, ctrl_dir=str(tmp_path / "c"))
    conf.write_text(text + "no_such_option=1\n")
    out = _run([HOSTAPD, "-dd", str(conf)])
    assert "unknown configuration item 'no_such_option'" in out
    assert "1 errors found in configuration file" in out
    assert "nl80211" not in out  # it stopped before the driver


@needs_wpa
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"{s.hw_mode}{s.channel}")
def test_wpa_supplicant_parses_the_generated_configuration(settings, tmp_path):
    passphrase = wifi_settings.new_passphrase()
    conf = tmp_path / "wpa_supplicant.conf"
    conf.write_text(wifi_settings.wpa_supplicant_conf(settings, passphrase, ctrl_dir=str(tmp_path / "ctrl")))
    out = _run([WPA_SUPPLICANT, "-dd", "-i", "lo", "-D", "nl80211", "-c", str(conf)])
    assert "Reading configuration file" in out, out
    assert "failed to parse" not in out.lower() and "Failed to read or parse" not in out, out
    # the whole network block was read: its SSID and the priority group are echoed ...
    assert f"id=0 ssid='{settings.ssid}'" in out, out
    assert "PSK (ASCII passphrase)" in out and passphrase not in out
    if settings.country_code:
        assert f"country='{settings.country_code}'" in out
    # ... and only the driver (no wireless hardware here) failed
    assert "Failed to initialize driver 'nl80211'" in out or "Unsupported driver 'nl80211'" in out


@needs_wpa
def test_wpa_supplicant_reports_a_broken_network_block(tmp_path):
    conf = tmp_path / "bad.conf"
    text = wifi_settings.wpa_supplicant_conf(SETTINGS[0], "y" * 12, ctrl_dir=str(tmp_path / "c"))
    conf.write_text(text.replace("\tproto=RSN", "\tproto=RSN\n\tno_such_field=1"))
    out = _run([WPA_SUPPLICANT, "-dd", "-i", "lo", "-D", "nl80211", "-c", str(conf)])
    assert "unknown network field 'no_such_field'" in out
    assert "id=0 ssid=" not in out


# --------------------------------------------------------------------------- our own checks


def _lab(radio):
    host = {"address": "10.1.0.{}", "user": "pi", "host_key": "ssh-ed25519 AAAAC3Nza",
            "key_file": "~/.ssh/k", "interfaces": {"wlan": "wlan0"}}
    hosts = [dict(host, name=n, role=n, address=f"10.1.0.{i}") for i, n in
             enumerate(("md", "es", "ap", "ext"), 2)]
    return {"name": "w", "link": {"kind": "wifi"}, "configurations": ["es-only"],
            "lab": {"hosts": hosts, **({"radio": radio} if radio is not None else {})},
            "sweep": {"loads_mbit": [0, 5]}}


def _problems(radio) -> dict[str, str]:
    with pytest.raises(ScenarioError) as ei:
        parse_scenario(_lab(radio), "lab.yaml")
    return {p.path: p.message for p in ei.value.problems}


def test_bad_radio_values_are_scenario_errors_before_any_binary(monkeypatch):
    def no_binaries(*a, **k):  # nothing may run while a scenario is checked
        raise AssertionError(f"a program was started: {a}")

    monkeypatch.setattr(subprocess, "run", no_binaries)
    monkeypatch.setattr(subprocess, "Popen", no_binaries)
    msgs = _problems({"channel": 15, "country_code": "de", "ssid": "has space",
                      "supported_rates_mbit": [6, 7], "hw_mode": "g"})
    assert "expected a 2.4 GHz channel 1-13 for hw_mode g, got 15" in msgs["lab.radio.channel"]
    assert "two-letter ISO 3166-1 country code" in msgs["lab.radio.country_code"]
    assert "SSID" in msgs["lab.radio.ssid"]
    assert "got 7" in msgs["lab.radio.supported_rates_mbit[1]"]
    assert "did you mean 'channel'" in _problems({"chanel": 6})["lab.radio.chanel"]
    assert "5 GHz channel" in _problems({"hw_mode": "a", "channel": 6})["lab.radio.channel"]
    assert "needs hw_mode g or a" in _problems({"hw_mode": "b", "ieee80211n": True})["lab.radio.ieee80211n"]
    assert "/28 or larger" in _problems({"subnet": "198.19.80.0/30"})["lab.radio.subnet"]


def test_defaults_warnings_and_round_trip():
    from testbed.scenario import scenario_to_dict

    s = parse_scenario(_lab(None), "lab.yaml")
    assert s.lab.radio == wifi_settings.WifiSettings()
    assert any("country_code" in w.path for w in s.warnings)
    s = parse_scenario(_lab({"country_code": "DE", "hw_mode": "a", "channel": 52}), "lab.yaml")
    assert s.lab.radio.channel == 52 and s.lab.radio.frequency_mhz == 5260
    assert any("DFS" in w.message for w in s.warnings)
    assert parse_scenario(scenario_to_dict(s), "m") == s


def test_generated_files_and_secrets():
    s = wifi_settings.WifiSettings(country_code="DE", supported_rates_mbit=(6.0, 5.5, 54.0))
    p = wifi_settings.new_passphrase()
    assert len(p) == 32 and p != wifi_settings.new_passphrase()
    conf = wifi_settings.hostapd_conf(s, "wlan0", p, ctrl_dir="/tmp/x")
    assert "supported_rates=60 55 540" in conf and f"wpa_passphrase={p}" in conf
    assert "country_code=DE\nieee80211d=1" in conf
    sta = wifi_settings.wpa_supplicant_conf(s, p, ctrl_dir="/tmp/x")
    assert "scan_freq=2437" in sta and f'psk="{p}"' in sta
    with pytest.raises(ValueError):
        wifi_settings.hostapd_conf(s, "wlan0", "short", ctrl_dir="/tmp/x")


IW_LINK = """Connected to 02:00:00:00:01:00 (on wlan0)
\tSSID: hnd-testbed
\tfreq: 2437
\tRX: 140728 bytes (1372 packets)
\tTX: 4410 bytes (43 packets)
\tsignal: -42 dBm
\trx bitrate: 54.0 MBit/s
\ttx bitrate: 48.0 MBit/s

\tbss flags:\tshort-slot-time
\tdtim period:\t2
\tbeacon int:\t100
"""

STATION_DUMP = """Station 02:00:00:00:00:00 (on wlan1)
\tinactive time:\t48 ms
\trx bytes:\t5082
\trx packets:\t51
\ttx bytes:\t7329
\ttx packets:\t37
\ttx retries:\t3
\ttx failed:\t1
\tbeacon loss:\t0
\tsignal:  \t-41 [-41] dBm
\tsignal avg:\t-40 [-40] dBm
\ttx bitrate:\t54.0 MBit/s
\trx bitrate:\t24.0 MBit/s
\tauthorized:\tyes
\tconnected time:\t12 seconds
Station 02:00:00:00:02:00 (on wlan1)
\ttx retries:\t0
\ttx failed:\t0
\tsignal:  \t-60 dBm
"""


def test_iw_output_is_parsed():
    link = wifi_status.parse_iw_link(IW_LINK)
    assert link["connected"] and link["bssid"] == "02:00:00:00:01:00"
    assert (link["signal_dbm"], link["tx_bitrate_mbit"], link["rx_bitrate_mbit"]) == (-42, 48.0, 54.0)
    assert (link["rx_bytes"], link["tx_packets"], link["freq_mhz"]) == (140728, 43, 2437)
    assert wifi_status.parse_iw_link("Not connected.\n") == {"connected": False}
    dump = wifi_status.parse_station_dump(STATION_DUMP)
    sta = dump["02:00:00:00:00:00"]
    assert (sta["tx_retries"], sta["tx_failed"], sta["signal_dbm"], sta["signal_avg_dbm"]) == (3, 1, -41, -40)
    assert sta["tx_bitrate_mbit"] == 54.0 and sta["inactive_ms"] == 48
    assert dump["02:00:00:00:02:00"]["signal_dbm"] == -60
    later = dict(sta, tx_retries=10, tx_failed=1)
    assert wifi_status.with_deltas(later, sta)["tx_retries_delta"] == 7
