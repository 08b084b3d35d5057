"""The ns3 backend on an LTE link: a real-time LENA eNB + EPC joined to the lab's namespaces.

Root tests (skipped without root or without ns-3): bring-up, a real TCP transfer MD -> ES through
the simulated cell (uplink data, downlink ACKs and the reply) with the counters it leaves,
teardown leaving nothing (namespaces, taps, the ns-3 process); SIGKILL of the lab's owner, then
``testbed clean --run-id`` stops the orphaned LTE simulator. Settings tests: the eNB host's
``ns3.scheduler`` and the keys that belong to the other link kind.
"""

from __future__ import annotations

import pytest

from testbed.checks import Checker
from testbed.lab import runs
from testbed.lab.plan import LabPlan, LinkShape
from testbed.ns3_settings import Ns3Settings, parse_ns3
from testbed.scenario import ScenarioError, load_scenario, parse_scenario, scenario_to_dict

from tests import ns3check
from tests.ns3check import ROOT, needs_ns3, nothing_left, taps, transfer


@pytest.mark.root
@needs_ns3
def test_lte_bringup_tcp_through_the_cell_and_teardown(needs_root, tmp_path) -> None:
    from testbed.lab.ns3_lte import Ns3LteLab

    plan = LabPlan.star(LinkShape(rate_mbit=3, queue_packets=128), router="enb")
    lab = Ns3LteLab(plan, tmp_path / "ns3", Ns3Settings(distance_m={"md": 50.0, "ext": 100.0},
                                                        rate_control=None, scheduler="pf"))
    with lab:
        pid = lab.proc.pid
        assert set(lab.ready["devices"]) == {"md", "ext"}
        assert lab.ready["ul_rbs"] == 6
        assert {d["lte_address"] for d in lab.ready["devices"].values()} == {"7.0.0.2", "7.0.0.3"}
        assert sorted(taps(plan.run_id)) == sorted(lab.tap(h) for h in ("md", "ext", "es"))
        assert runs.read_run_record(plan.run_id)["ns3_process"]["pid"] == pid
        state = lab.state.to_dict()
        assert state["hosts"]["md"]["address"] == "198.18.1.2"
        assert state["hosts"]["md"]["gateway"] == "198.18.1.1"
        assert state["shaping"][0]["applied"]["scheduler"] == "pf: ns3::PfFfMacScheduler"
        assert state["shaping"][0]["not_applied"]["rate_mbit"].startswith("simulated LTE")
        lab.conditions()
        size = 400_000
        got, seconds = transfer(lab, size)
        assert got == size  # the ES's count came back down the LTE downlink
        counted = lab.medium_counters()
        mbit = size * 8 / seconds / 1e6
        # TCP from one UE: at most the ~3.1 Mbit/s the 6 uplink RBs carry at MCS 24
        assert 0.5 < mbit < 3.3, mbit
        md, ext = counted["devices"]["md"], counted["devices"]["ext"]
        assert md["ul_pdcp_rx_bytes"] >= size  # every byte crossed the eNB's uplink PDCP
        assert md["dl_pdcp_rx_pkts"] > 0  # TCP ACKs and the reply came down
        assert md["ul_grants"] > 0 and 0 < md["rb_share"] <= 1
        assert 0 < md["ul_sent"] <= md["ul_grants"]
        assert md["ul_mcs_mean"] is not None and md["ul_mcs_mean"] > 20
        assert ext["ul_pdcp_rx_bytes"] < size / 100  # the idle UE sent (almost) nothing
        assert counted["lateness"]["samples"] > 0 and counted["lateness"]["max_ms"] > 0
        assert counted["flags"] in ([], ["ns3-late"])
        assert counted["ns3_cpu_pct"] > 0
    nothing_left(plan.run_id, pid)
    assert not (tmp_path / "ns3" / "cwd").exists()


@pytest.mark.root
@needs_ns3
def test_sigkill_of_the_owner_then_testbed_clean_stops_the_lte_simulator(needs_root,
                                                                         tmp_path) -> None:
    ns3check.sigkill_then_clean(tmp_path, "testbed.lab.ns3_lte:Ns3LteLab", 3, "enb")


def test_the_ns3_backend_makes_the_lte_cell_for_an_lte_link(tmp_path) -> None:
    from testbed.lab.backends import BACKENDS
    from testbed.lab.base import LabSetup
    from testbed.lab.ns3_lab import Ns3Lab
    from testbed.lab.ns3_lte import Ns3LteLab

    plan = LabPlan.star(LinkShape(rate_mbit=3), router="enb")
    lte = BACKENDS["ns3"].make_lab(plan, LabSetup(tmp_path, None, link_kind="lte",
                                                  ns3=Ns3Settings.for_kind("lte")))
    assert type(lte) is Ns3LteLab and lte.SIM_MODULE == "testbed.lab.ns3_lte_sim"
    wifi = BACKENDS["ns3"].make_lab(LabPlan.star(LinkShape(rate_mbit=24)),
                                    LabSetup(tmp_path, None, link_kind="wifi"))
    assert type(wifi) is Ns3Lab


# ---------------------------------------------------------------- settings


def _lte_scenario(**enb: object) -> dict:
    data = scenario_to_dict(load_scenario(ROOT / "scenarios" / "lte-load-sweep.yaml"))
    for h in data["hosts"]:
        if h["role"] == "enb":
            h.update(enb)
    return data


def test_a_bad_scheduler_names_file_key_and_choices() -> None:
    ck = Checker("s.yaml")
    parse_ns3(ck, {"scheduler": "fifo"}, "hosts[2]", "lte", "ns3", available=True)
    assert [str(p) for p in ck.problems] == [
        "s.yaml: hosts[2].ns3.scheduler: expected one of rr, pf, got 'fifo'"]


def test_keys_of_the_other_link_kind_are_refused() -> None:
    ck = Checker("s.yaml")
    parse_ns3(ck, {"rate_control": "minstrel"}, "hosts[2]", "lte", "ns3", available=True)
    parse_ns3(ck, {"scheduler": "rr"}, "hosts[3]", "wifi", "ns3", available=True)
    text = "\n".join(map(str, ck.problems))
    assert "s.yaml: hosts[2].ns3.rate_control: rate control belongs to the 802.11g cell" in text
    assert ("s.yaml: hosts[3].ns3.scheduler: the scheduler is LENA's eNB MAC scheduler of an "
            "LTE link; this link is wifi: remove it") in text


def test_a_wired_link_is_not_simulated() -> None:
    ck = Checker("s.yaml")
    parse_ns3(ck, None, "hosts[2]", "wired", "ns3", available=True)
    assert [str(p) for p in ck.problems] == [
        "s.yaml: hosts[2].backend: the ns3 backend simulates a WiFi (802.11g) or an LTE (LENA) "
        "cell, not a wired link: use backend vm, namespace or auto"]


@needs_ns3
def test_lte_ns3_section_is_parsed_and_round_trips() -> None:
    s = parse_scenario(_lte_scenario(backend="ns3", ns3={"scheduler": "pf",
                                                         "distance_m": {"md": 50}}))
    enb = s.host("enb")
    assert enb.ns3 == Ns3Settings({"md": 50.0}, None, 1, "pf")
    assert parse_scenario(scenario_to_dict(s)) == s
    default = parse_scenario(_lte_scenario(backend="ns3")).host("enb")
    assert default.ns3 == Ns3Settings.for_kind("lte") and default.ns3.scheduler == "rr"
    with pytest.raises(ScenarioError, match=r"hosts\[2\]\.ns3\.scheduler: expected one of rr, pf"):
        parse_scenario(_lte_scenario(backend="ns3", ns3={"scheduler": "maxci"}), source="s.yaml")
