"""The ns3 backend: a real-time ns-3 802.11g cell joined to the lab's namespaces through taps.

Root tests (skipped without root or without ns-3): bring-up, a real TCP transfer MD -> ES across
the simulated air with the counters it leaves, teardown leaving nothing (namespaces, taps, the
ns-3 process); Ctrl-C during bring-up; SIGKILL of the owner, then ``testbed clean --run-id``.
Settings tests: the AP host's ``ns3`` section and the error of a scenario asking for ns-3 where
it is missing (LTE and the links it does not simulate: tests/test_ns3_lte.py).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from testbed.checks import Checker
from testbed.lab import runs
from testbed.lab.plan import LabPlan, LinkShape
from testbed.ns3_settings import Ns3Settings, ns3_available, parse_ns3
from testbed.scenario import ScenarioError, load_scenario, parse_scenario, scenario_to_dict

from tests import ns3check
from tests.ns3check import ROOT, needs_ns3, nothing_left, read_until, taps, transfer


@pytest.mark.root
@needs_ns3
def test_bringup_tcp_transfer_and_teardown(needs_root, tmp_path, monkeypatch) -> None:
    from testbed.lab.ns3_lab import Ns3Lab

    plan = LabPlan.star(LinkShape(rate_mbit=24))
    # a relative folder, as `testbed run` gives with its default `results`: the simulator runs in
    # a folder of its own and must still find its configuration
    monkeypatch.chdir(tmp_path)
    lab = Ns3Lab(plan, Path("ns3"), Ns3Settings(distance_m={"md": 5.0, "ext": 10.0}))
    with lab:
        pid = lab.proc.pid
        assert lab.ready["devices"]["md"]["slot_us"] == 9  # ERP short slot: all stations ERP
        assert sorted(taps(plan.run_id)) == sorted(lab.tap(h) for h in ("md", "ext", "es"))
        assert runs.read_run_record(plan.run_id)["ns3_process"]["pid"] == pid
        state = lab.state.to_dict()
        assert state["hosts"]["md"]["gateway"] == "198.18.1.1"
        assert state["shaping"][0]["not_applied"]["rate_mbit"].startswith("simulated 802.11g")
        lab.conditions()
        size = 2_000_000
        got, seconds = transfer(lab, size)
        assert got == size
        counted = lab.medium_counters()
        mbit = size * 8 / seconds / 1e6
        # TCP over one 54 Mbit/s 802.11g station: at most the ~30 Mbit/s UDP saturation goodput
        assert 2 < mbit < 31, mbit
        md, ap = counted["devices"]["md"], counted["devices"]["ap"]
        assert md["mac_tx"] >= size / 1500  # every data segment went through md's MAC
        assert ap["mac_tx"] > 0  # TCP ACKs back over the air
        assert 0 < md["airtime_share"] < 1
        assert counted["lateness"]["samples"] > 0 and counted["lateness"]["max_ms"] > 0
        assert counted["flags"] in ([], ["ns3-late"])
        assert counted["ns3_cpu_pct"] > 0
    nothing_left(plan.run_id, pid)
    assert not (tmp_path / "ns3" / "cwd").exists()


def _wait_for_ns3_pid(run_id: str, timeout_s: float) -> int:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        rec = runs.read_run_record(run_id) or {}
        if "ns3_process" in rec:
            return int(rec["ns3_process"]["pid"])
        time.sleep(0.1)
    raise AssertionError("the ns-3 process never appeared in the run record")


@pytest.mark.root
@needs_ns3
def test_ctrl_c_during_bringup_leaves_nothing(needs_root, tmp_path) -> None:
    owner = ns3check.owner(tmp_path, "testbed.lab.ns3_lab:Ns3Lab", 24, "ap")
    try:
        run_id = read_until(owner, "RUN", 30)[1]
        pid = _wait_for_ns3_pid(run_id, 30)
        time.sleep(1)  # the simulator imports ns-3; the owner waits for READY
        owner.send_signal(signal.SIGINT)
        assert owner.wait(timeout=60) != 0
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    nothing_left(run_id, pid)


@pytest.mark.root
@needs_ns3
def test_sigkill_then_testbed_clean_stops_the_simulator(needs_root, tmp_path) -> None:
    ns3check.sigkill_then_clean(tmp_path, "testbed.lab.ns3_lab:Ns3Lab", 24, "ap")


# ---------------------------------------------------------------- settings


def _scenario(**ap: object) -> dict:
    data = scenario_to_dict(load_scenario(ROOT / "scenarios" / "quickstart.yaml"))
    for h in data["hosts"]:
        if h["role"] == "ap":
            h.update(ap)
    return data


@needs_ns3
def test_ns3_section_is_parsed_and_round_trips() -> None:
    s = parse_scenario(_scenario(backend="ns3", ns3={"distance_m": {"md": 3, "ext": 20},
                                                     "rate_control": "minstrel"}))
    ap = next(h for h in s.hosts if h.role == "ap")
    assert ap.ns3 == Ns3Settings({"md": 3.0, "ext": 20.0}, "minstrel", 1)
    assert ap.ns3.distance("md") == 3.0
    assert parse_scenario(scenario_to_dict(s)) == s
    default = next(h for h in parse_scenario(_scenario(backend="ns3")).hosts if h.role == "ap")
    assert default.ns3 == Ns3Settings() and default.ns3.distance("ext") == 5.0


def test_bad_ns3_sections_name_file_and_key() -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(_scenario(backend="vm", ns3={"rate_control": "aarf"}), source="s.yaml")
    assert "s.yaml: hosts[2].ns3: the ns3 section configures the ns3 backend" in str(err.value)
    ck = Checker("s.yaml")
    parse_ns3(ck, {"rate_control": "aarf", "distance_m": {"md": -1}, "slot": 9}, "hosts[2]",
              "wifi", "ns3", available=True)
    text = "\n".join(map(str, ck.problems))
    assert "s.yaml: hosts[2].ns3.rate_control: expected one of constant, minstrel" in text
    assert "s.yaml: hosts[2].ns3.distance_m.md: expected a number > 0, got -1" in text
    assert "s.yaml: hosts[2].ns3.slot: unknown key 'slot'" in text


@needs_ns3
def test_distance_of_a_host_that_is_not_a_station_is_refused() -> None:
    with pytest.raises(ScenarioError, match=r"hosts\[2\].ns3.distance_m.es: not a station of this "
                                            r"scenario \(stations: md, ext\)"):
        parse_scenario(_scenario(backend="ns3", ns3={"distance_m": {"es": 3}}))


def test_asking_for_ns3_where_it_is_missing_says_how_to_install_it() -> None:
    ck = Checker("s.yaml")
    parse_ns3(ck, None, "hosts[2]", "wifi", "ns3", available=False)
    assert [str(p) for p in ck.problems] == [
        "s.yaml: hosts[2].backend: ns-3 is not installed in this Python (ns3==3.44.post0 is "
        "missing): run `bash scripts/install.sh` (it installs ns3==3.44.post0 from "
        "pyproject.toml into .venv), or `.venv/bin/pip install ns3==3.44.post0`"]


def test_window_counters_from_two_snapshots() -> None:
    from testbed.lab.ns3_lab import window_counters

    dev = {"mac_tx": 10, "mac_rx": 0, "retries": 1, "retry_limit_drops": 0, "mac_tx_drops": 0,
           "mac_rx_drops": 0, "phy_rx_drops": 0, "queue_dropped": 0, "tx_airtime_s": 0.1,
           "queue_now": 0, "queue_max": 3}
    before = {"sim_s": 1.0, "late_bin_us": 10, "late_hist": {"0": 50}, "devices": {"md": dev}}
    after = json.loads(json.dumps(before))
    after.update(sim_s=2.0, late_hist={"0": 149, "150": 1})
    after["devices"]["md"].update(mac_tx=110, retries=4, tx_airtime_s=0.6, queue_max=7)
    got = window_counters(before, after)
    assert got["devices"]["md"]["mac_tx"] == 100 and got["devices"]["md"]["retries"] == 3
    assert got["devices"]["md"]["airtime_share"] == 0.5
    assert got["lateness"] == {"samples": 100, "p99_ms": 0.01, "max_ms": 1.51}


def test_preflight_of_an_ns3_run_needs_ns3_and_tun() -> None:
    from testbed.lab import preflight

    assert preflight.needed(emulated=True, backend="ns3", needs_load=True)[-2:] == ["ns3", "tun"]
    found = preflight.ns3()
    assert found.available == ns3_available()
    assert found.detail.startswith("ns-3 3.44") if found.available else "ns3==3.44" in found.detail


def test_a_late_simulator_step_flags_its_cell(tmp_path) -> None:
    from analysis.cellflags import REASONS, flag_cells
    from analysis.load import load_results
    from tests.test_analysis import SWEEP, copy_folder, edit_manifest

    folder = copy_folder(SWEEP, tmp_path / "late")

    def change(m):
        m["steps"]["L10-r0-es-only"]["medium"] = {
            "lateness": {"samples": 900, "p99_ms": 1.7, "max_ms": 4.2}, "flags": ["ns3-late"]}
        m["steps"]["L0-r0-es-only"]["medium"] = {
            "lateness": {"samples": 900, "p99_ms": 0.4, "max_ms": 0.9}, "flags": []}

    edit_manifest(folder, change)
    flagged = {(f.config, f.load): f for f in flag_cells(load_results(folder), 12)}
    assert set(flagged) == {("es-only", "10")}
    assert flagged[("es-only", "10")].detail == "ns3-late (p99 up to 1.70 ms)"
    assert "ns3-late" in REASONS
