"""CPU isolation of real processing: the plan for a machine's CPUs, the scenario's switch, and
real cpusets (root)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import yaml

from testbed.lab import cpu, cpuset, names, netns
from testbed.scenario import ScenarioError, parse_scenario, scenario_to_dict

VM = cpuset.AP_PROCESSES["vm"]


@pytest.mark.parametrize("usable, level, cpus, rest, shared", [
    ([0], "none", {}, (), ()),
    ([0, 1], "partial", {"md": (0,), "es": (1,)}, (0,), ("md",)),
    ([0, 1, 2], "full", {"md": (1,), "es": (2,)}, (0,), ()),
    ([0, 1, 2, 3], "full", {"md": (1,), "es": (2, 3)}, (0,), ()),
    ([4, 6, 9], "full", {"md": (6,), "es": (9,)}, (4,), ()),  # an affinity mask with gaps
    ([3, 7], "partial", {"md": (3,), "es": (7,)}, (3,), ("md",)),
])
def test_plan_for_the_cpus_this_machine_offers(usable, level, cpus, rest, shared):
    plan = cpuset.plan_isolation(usable, ["md"], "es", ap_process=VM)
    assert (plan.level, plan.cpus, plan.rest, plan.shared) == (level, cpus, rest, shared)
    assert plan.possible == (level != "none") and not plan.applied
    alone = set(plan.cpus.get("es", ())) | (set() if shared else set(plan.cpus.get("md", ())))
    assert not alone & set(rest)  # a host alone on its CPUs never shares them with the rest


def test_two_cpus_the_es_alone_and_the_reason_says_the_md_shares():
    plan = cpuset.plan_isolation([0, 1], ["md"], "es", ap_process=VM)
    assert plan.reason.startswith(
        "partial: es alone on CPU 1; md shares CPU 0 with the AP VM (QEMU), iperf3, every sshd "
        "and the orchestrator: its times include that contention (2 usable CPU(s) (0,1); "
        "isolating md and es needs 3")
    assert plan.reason.endswith("processes outside the run are not moved (they may use any CPU)")
    assert "full" not in plan.reason
    assert plan.to_dict()["level"] == "partial" and plan.to_dict()["shared"] == ["md"]


def test_one_cpu_pins_nothing_and_says_who_shares_it():
    plan = cpuset.plan_isolation([0], ["md"], "es", ap_process=VM)
    assert plan.reason == (
        "1 usable CPU(s) (0); isolating md and es needs 3 (one each, one for everything else): "
        "not applied: md and es, the AP VM (QEMU), iperf3, every sshd and the orchestrator share "
        "every CPU (CPU caps still apply)")
    assert plan.threads("md") is None and plan.threads("es") is None


def test_a_cell_of_mds_shares_the_first_cpu_and_the_es_keeps_the_others():
    plan = cpuset.plan_isolation([0, 1, 2], ["md1", "md2"], "es")
    assert plan.level == "partial" and plan.shared == ("md1", "md2")
    assert plan.cpus == {"md1": (0,), "md2": (0,), "es": (1, 2)}
    assert "es alone on CPUs 1,2; md1 and md2 share CPU 0 with iperf3" in plan.reason
    assert "their times include that contention" in plan.reason


def test_without_a_real_es_too_few_cpus_pin_nothing():
    plan = cpuset.plan_isolation([0, 1], ["md1", "md2"], None)
    assert plan.level == "none" and "isolating md1 and md2 needs 3" in plan.reason
    assert cpuset.plan_isolation([0, 1], ["md"], None).cpus == {"md": (1,)}  # full for one MD


def test_off_pins_nothing_and_nothing_to_isolate_without_real_processing():
    off = cpuset.plan_isolation([0, 1, 2, 3], ["md"], "es", enabled=False)
    assert off.level == "none" and off.reason.startswith("cpu_isolation: false in the scenario")
    none = cpuset.plan_isolation([0, 1, 2, 3], [], None)
    assert none.level == "none" and "nothing to isolate" in none.reason
    with pytest.raises(ValueError, match="'rest'"):
        cpuset.plan_isolation([0, 1, 2, 3], ["rest"], "es")


SCENARIO = {"name": "iso", "link": {"kind": "wifi", "preset": "wifi-80211g"},
            "configurations": ["md-only"]}


def test_the_scenario_switches_isolation_off_and_a_wrong_value_is_named():
    assert parse_scenario(SCENARIO, cores=2).cpu_isolation is True
    off = parse_scenario(yaml.safe_load(yaml.safe_dump(SCENARIO) + "cpu_isolation: off\n"),
                         cores=2)  # YAML's off is false
    assert off.cpu_isolation is False
    assert parse_scenario(scenario_to_dict(off), cores=2) == off
    with pytest.raises(ScenarioError, match=r"cpu_isolation: expected true or false, got .*partial"):
        parse_scenario({**SCENARIO, "cpu_isolation": "partial"}, cores=2)


def _allowed(pid: int) -> tuple[int, ...]:
    with open(f"/proc/{pid}/status") as fh:
        line = next(x for x in fh if x.startswith("Cpus_allowed_list:"))
    return cpuset._expand(line.split(":", 1)[1].strip())


def _started(proc: subprocess.Popen, program: str, timeout_s: float = 10.0) -> None:
    """Wait (bounded) until ``proc`` has exec'd ``program`` (join_argv's sh ran first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited with status {proc.returncode}")
        with open(f"/proc/{proc.pid}/comm") as fh:
            if fh.read().strip() == program:
                return
        time.sleep(0.02)
    raise AssertionError(f"pid {proc.pid} did not exec {program} within {timeout_s} s")


@pytest.mark.skipif(os.geteuid() != 0, reason="cpusets need root")
def test_the_es_set_pins_its_process_and_the_groups_go_with_the_run():
    usable = cpuset.usable_cpus()
    support = cpuset.detect_cpuset_support()
    if len(usable) < 2 or support.backend is None:
        pytest.skip(f"needs 2 usable CPUs and a cpuset controller: {support.detail}")
    run_id = names.new_run_id()
    plan = cpuset.plan_isolation(usable, ["md"], "es")  # this machine's plan: partial on 2 CPUs
    procs: list[subprocess.Popen] = []
    spaces = [names.namespace_name(run_id, host) for host in ("es", "md")]
    try:
        applied = cpuset.apply_isolation(run_id, plan, support)
        assert applied.applied and applied.level == plan.level != "none"
        groups = dict(applied.groups)
        for host, ns in zip(("es", "md"), spaces):
            # as a lab host's processes start: under `ip netns exec`, whose /sys has no cgroups
            netns.create_namespace(ns)
            procs.append(subprocess.Popen(["ip", "netns", "exec", ns,
                                           *cpuset.join_argv(applied, host), "sleep", "30"]))
            _started(procs[-1], "sleep")
            assert _allowed(procs[-1].pid) == plan.cpus[host], host
            assert applied.threads(host) == len(plan.cpus[host])
        assert not set(_allowed(procs[0].pid)) & set(plan.rest)  # the ES alone on its CPUs
        procs.append(subprocess.Popen(["sleep", "30"]))
        assert cpuset.move_to(applied, cpuset.REST, procs[-1].pid)
        assert _allowed(procs[-1].pid) == plan.rest
    finally:
        done = cpu.remove_run_groups(run_id)
        after = [_allowed(p.pid) if p.poll() is None else None for p in procs]
        for proc in procs:
            proc.kill()
            proc.wait()
        for ns in spaces:
            netns.remove_namespace(ns)
    assert not any("FAILED" in line for line in done), done
    assert cpu.owned_run_dirs(run_id) == []
    assert not any(os.path.exists(g) for g in groups.values()), groups
    assert netns.owned_namespaces(run_id) == []
    assert after == [tuple(usable)] * 3  # moved out (back on every CPU), not killed
