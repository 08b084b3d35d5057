"""CPU isolation of real processing: the plan for a machine's CPUs, and real cpusets (root)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from testbed.lab import cpu, cpuset


def test_two_cpus_are_not_enough_and_the_reason_says_what_is_shared():
    plan = cpuset.plan_isolation([0, 1], ["md", "es"])
    assert not plan.possible and not plan.cpus
    assert plan.reason.startswith("2 usable CPU(s) (0,1); isolating md and es needs 3")
    assert "QEMU" in plan.reason and "iperf3" in plan.reason and "sshd" in plan.reason
    assert plan.threads("md") is None


@pytest.mark.parametrize("usable, md, es, rest", [
    ([0, 1, 2], (1,), (2,), (0,)),
    ([0, 1, 2, 3, 4, 5], (1,), (2, 3, 4, 5), (0,)),
    ([4, 6, 9], (6,), (9,), (4,)),  # an affinity mask with gaps
])
def test_each_processing_host_gets_cpus_of_its_own(usable, md, es, rest):
    plan = cpuset.plan_isolation(usable, ["md", "es"])
    assert plan.possible
    assert (plan.cpus["md"], plan.cpus["es"], plan.rest) == (md, es, rest)
    assert not set(md) & set(es) and not (set(md) | set(es)) & set(rest)


def test_nothing_to_isolate_without_real_processing():
    plan = cpuset.plan_isolation([0, 1, 2, 3], [])
    assert not plan.possible and "nothing to isolate" in plan.reason
    with pytest.raises(ValueError, match="'rest'"):
        cpuset.plan_isolation([0, 1, 2, 3], ["rest"])


@pytest.mark.skipif(os.geteuid() != 0, reason="cpusets need root")
def test_cpusets_pin_processes_and_go_with_the_run():
    usable = cpuset.usable_cpus()
    if len(usable) < 2 or cpuset.detect_cpuset_support().backend is None:
        pytest.skip(f"needs 2 CPUs and a cpuset controller: {cpuset.detect_cpuset_support().detail}")
    run_id = secrets.token_hex(3)
    # this machine may have too few CPUs for the real plan: pin md to one CPU, the rest to another
    plan = cpuset.Isolation(True, "test", usable, {"md": (usable[-1],)}, (usable[0],))
    applied = cpuset.apply_isolation(run_id, plan)
    sleeper = None
    try:
        assert applied.applied and applied.threads("md") == 1
        show = "import os; print(sorted(os.sched_getaffinity(0)))"
        out = subprocess.run([*cpuset.join_argv(applied, "md"), sys.executable, "-c", show],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        assert out.strip() == str([usable[-1]])
        sleeper = subprocess.Popen(["sleep", "30"])
        assert cpuset.move_to(applied, cpuset.REST, sleeper.pid)
        assert os.sched_getaffinity(sleeper.pid) == {usable[0]}
    finally:
        done = cpu.remove_run_groups(run_id)
    assert not any("FAILED" in line for line in done), done
    assert cpu.owned_run_dirs(run_id) == []
    assert sleeper.poll() is None  # moved out, not killed
    assert os.sched_getaffinity(sleeper.pid) == set(usable)
    sleeper.kill()
    sleeper.wait()
