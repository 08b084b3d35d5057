"""What hostapd, wpa_supplicant and ``iw`` print, read into numbers (pure text parsing).

Readiness is read from the programs' own output: hostapd prints ``<if>: AP-ENABLED`` and
wpa_supplicant ``<if>: CTRL-EVENT-CONNECTED``. Per load step a WiFi link records ``iw dev <if>
link`` on stations and ``iw dev <if> station dump`` on the AP (bitrate, signal, tx
retries/failures), with the change of each counter since the previous step (``with_deltas``).
"""

from __future__ import annotations

import re
from typing import Any

AP_ENABLED = re.compile(r"AP-ENABLED")
CONNECTED = re.compile(r"CTRL-EVENT-CONNECTED")


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
