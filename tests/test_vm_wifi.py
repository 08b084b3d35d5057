"""WiFi mode of the AP VM: stations associate to hostapd over mac80211_hwsim radios.

The scenario key (``hwsim`` on the AP host) is checked anywhere. The root tests boot one VM lab
(md, es, ap, ext) in WiFi mode: hostapd must report AP-ENABLED and both wpa_supplicants
CTRL-EVENT-CONNECTED (WPA2), the MD's messages must reach the ES across the 802.11 link (the
station's and the AP's radio counters grow by at least the bytes sent), and the downlink queue must
be netem on the AP's radio. A station that cannot associate must fail the bring-up with the
supplicant's log and leave nothing behind.
"""

from __future__ import annotations

import statistics
import time

import pytest

from testbed import scenario as sc
from testbed.emulated import wifi_radios
from testbed.lab import names
from testbed.lab.plan import HostPlan, LabPlan, LinkShape
from testbed.wifi_settings import WifiSettings

from tests.vmcheck import assert_nothing_left, needs_vm

HOSTS = [{"name": "md", "role": "md"}, {"name": "es", "role": "es"},
         {"name": "ap", "role": "ap", "backend": "vm"}, {"name": "ext", "role": "ext"}]


def _scenario(ap: dict, kind: str = "wifi"):
    station = "enb" if kind == "lte" else "ap"
    hosts = [dict(h) for h in HOSTS]
    hosts[2] = {"name": station, "role": station, **ap}
    return sc.parse_scenario({"name": "t", "link": {"kind": kind}, "hosts": hosts,
                              "sweep": {"loads_mbit": [0]}, "configurations": ["es-only"]},
                             cores=2)


def _problems(ap: dict, kind: str = "wifi") -> dict[str, str]:
    with pytest.raises(sc.ScenarioError) as err:
        _scenario(ap, kind)
    return {p.path: p.message for p in err.value.problems}


def test_hwsim_key_defaults_to_radios_only_where_kvm_makes_them_cheap():
    s = _scenario({"backend": "vm"})
    assert s.host("ap").hwsim is None
    assert wifi_radios(s, s.host("ap"), "vm", "kvm")[0] is True
    on, why = wifi_radios(s, s.host("ap"), "vm", "tcg")
    assert on is False and "CPU-bound" in why and "hwsim: true" in why
    assert wifi_radios(s, s.host("ap"), "namespace", None)[0] is False  # no radios there
    off = _scenario({"backend": "vm", "hwsim": False})
    assert wifi_radios(off, off.host("ap"), "vm", "kvm") == (False, "hwsim: false in the scenario")
    forced = _scenario({"backend": "auto", "hwsim": True})
    assert forced.host("ap").hwsim is True and wifi_radios(forced, forced.host("ap"), "vm", "tcg")[0]
    lte = _scenario({"backend": "vm"}, kind="lte")
    assert wifi_radios(lte, lte.host("enb"), "vm", "kvm")[0] is False
    # the scenario round-trips with the key
    assert sc.parse_scenario(sc.scenario_to_dict(off), cores=2) == off


def test_hwsim_key_errors_name_the_field_and_the_fix():
    assert "set backend: vm" in _problems({"backend": "namespace", "hwsim": True})["hosts[2].hwsim"]
    assert "remove the key" in _problems({"backend": "vm", "hwsim": True}, kind="lte")["hosts[2].hwsim"]
    assert _problems({"backend": "vm", "hwsim": "yes please"})["hosts[2].hwsim"].startswith(
        "expected true or false")
    hosts = [dict(h) for h in HOSTS]
    hosts[0] = {"name": "md", "role": "md", "hwsim": True}
    with pytest.raises(sc.ScenarioError) as err:
        sc.parse_scenario({"name": "t", "link": {"kind": "wifi"}, "hosts": hosts,
                           "sweep": {"loads_mbit": [0]}, "configurations": ["es-only"]}, cores=2)
    assert any(p.path == "hosts[0].hwsim" and "only the ap host" in p.message
               for p in err.value.problems)


# --------------------------------------------------------------------------- root: one WiFi lab


def _plan(run_id: str, rate_mbit: float = 3.0) -> LabPlan:
    return LabPlan(run_id=run_id, hosts=(HostPlan("md", "md"), HostPlan("es", "es"),
                                         HostPlan("ap", "ap"), HostPlan("ext", "ext")),
                   medium=LinkShape(rate_mbit=rate_mbit, delay_ms=2, queue_packets=100))


@pytest.fixture(scope="module")
def wifi_lab(tmp_path_factory):
    from testbed.vm.lab import VmLab

    run_id = names.new_run_id()
    t0 = time.monotonic()
    with VmLab(_plan(run_id), tmp_path_factory.mktemp("wifi"), wifi=WifiSettings()) as lab:
        print(f"\nWiFi VM lab up in {time.monotonic() - t0:.1f}s")
        yield lab
    assert_nothing_left(run_id)


@pytest.mark.root
@needs_vm
def test_stations_associate_with_wpa2_and_the_md_reaches_the_es_over_802_11(wifi_lab):
    from testbed.vm import shaping

    wifi = wifi_lab.describe()["wifi"]
    assert wifi["mode"] == "hwsim" and "WPA2" in wifi["security"]
    assert wifi["ccmp_cipher_driver"].startswith("ccm")
    capacity = wifi["path_capacity"]  # unshaped 802.11 path, measured before netem went on
    assert capacity["tcp_goodput_mbit"] > 0 and capacity["ok"] == (
        capacity["tcp_goodput_mbit"] >= 1.5 * capacity["medium_rate_mbit"])
    assert wifi["events"]["ap"]["AP-ENABLED"]["line"].endswith(f"{wifi['ap_radio']['ifname']}: AP-ENABLED")
    for station in ("md", "ext"):
        line = wifi["events"][station]["CTRL-EVENT-CONNECTED"]["line"]
        assert f"Connection to {wifi['ap_radio']['mac']} completed" in line
    before = wifi_lab.conditions()["radio"]
    assert before["md"]["connected"] and before["md"]["bssid"] == wifi["ap_radio"]["mac"]
    size, count = 10_092, 8
    md, es = wifi_lab.namespace("md"), wifi_lab.namespace("es")
    rtt = statistics.median(shaping.transfer_times(md, es, wifi_lab.address("es"), 1, 5, 0.1))
    times = shaping.transfer_times(md, es, wifi_lab.address("es"), size, count, 0.1)
    after = wifi_lab.conditions()["radio"]
    # the bytes crossed the 802.11 link: the station sent them, the AP received them from it
    assert after["md"]["tx_bytes_delta"] >= size * count
    assert after["ap"]["stations"]["md"]["rx_bytes_delta"] >= size * count
    assert after["ext"].get("tx_bytes_delta", 0) < size  # the other station stayed quiet
    # shaped by netem at 3 Mbit/s (the floor) and not wildly slower than it
    floor, floor_hdr = shaping.floors(size, 3.0, rtt)
    median = statistics.median(times)
    print(f"10,092 B over WiFi mode at 3 Mbit/s: median {median * 1e3:.1f} ms, floor+hdr "
          f"{floor_hdr * 1e3:.1f} ms, base RTT {rtt * 1e3:.1f} ms")
    assert floor * 0.95 <= median <= floor_hdr * 2
    downlink = next(r for r in wifi_lab.state.shaping if r.label == "downlink")
    assert downlink.interface == wifi["ap_radio"]["ifname"] and downlink.backend == "netem"
    assert any(q["kind"] == "netem" for q in downlink.qdiscs)


@pytest.mark.root
@needs_vm
def test_a_station_that_cannot_associate_fails_clearly_and_leaves_nothing(tmp_path, monkeypatch):
    from testbed.vm import radio
    from testbed.vm.lab import VmLab

    real = radio.wpa_supplicant_conf

    def wrong_ssid(settings, *args, **kw):
        return real(WifiSettings(ssid="not-the-ap", timeout_s=settings.timeout_s), *args, **kw)

    monkeypatch.setattr(radio, "wpa_supplicant_conf", wrong_ssid)
    run_id = names.new_run_id()
    with pytest.raises(radio.RadioError) as err:
        with VmLab(_plan(run_id), tmp_path, wifi=WifiSettings(timeout_s=6)):
            pytest.fail("the lab came up although no station can associate")
    message = str(err.value)
    assert "no CTRL-EVENT-CONNECTED from md's wpa_supplicant" in message
    assert "wpa_supplicant-md.log ends with" in message
    assert_nothing_left(run_id)
    # what the supplicant said is kept for diagnosis
    assert (tmp_path / "wifi" / "wpa_supplicant-md.log").exists()
