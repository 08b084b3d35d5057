"""CPU isolation for real processing: the MD and the ES each on CPUs of their own (cpusets).

With ``compute: real`` the MD's and ES's processing times are what is measured, so nothing else
of the lab should run on their CPUs. :func:`plan_isolation` decides, from the CPUs this process
may use, what is possible: one CPU (or more) for everything else (the AP's QEMU, iperf3, every
sshd, the orchestrator) and a set of its own for each processing host; the ES gets the CPUs
left over. It needs one CPU per processing host plus one; with fewer (a 2-core machine has 2 for
3 sets) nothing is pinned and :attr:`Isolation.reason` says so.

:func:`apply_isolation` makes the groups, ``testbed-<runid>/<host>`` and ``testbed-<runid>/rest``
in the cpuset hierarchy: cgroup v2 where its root offers ``cpuset`` (the host's group then
holds both its CPU cap and its CPUs), else the cgroup v1 ``cpuset`` hierarchy (hybrid layouts
such as this machine's). The lab puts every sshd and the AP's QEMU into ``rest``
(:func:`move_to`); the processes that process frames (the tail, the head agent) join their
host's set when they start (:func:`join_argv`, a prefix of their command line). Torch then uses
as many threads as the host has CPUs. Groups are removed with the run's other cgroups
(``testbed.lab.cpu.remove_run_groups``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from testbed.lab import cpu, names

REST = "rest"
"""The group of everything that is not a processing host (its name is not a host name: hosts
are named ``[a-z][a-z0-9]*`` and ``rest`` is refused by :func:`plan_isolation`)."""


@dataclass(frozen=True)
class CpusetSupport:
    backend: str | None  # "cgroup2" | "cgroup1" | None
    root: str | None
    detail: str
    fix: str = ""


def detect_cpuset_support() -> CpusetSupport:
    """Where cpusets can be made here (reads only)."""
    if os.geteuid() != 0:
        return CpusetSupport(None, None, "needs root to create cpusets", "run as root")
    v2 = cpu.cgroup2_root()
    if v2:
        try:
            if "cpuset" in cpu.read_file(os.path.join(v2, "cgroup.controllers")).split():
                return CpusetSupport("cgroup2", v2, f"cgroup2 cpuset controller at {v2}")
        except OSError:
            pass
    v1 = cpu.cgroup1_root("cpuset")
    if v1:
        return CpusetSupport("cgroup1", v1, f"cgroup v1 cpuset hierarchy at {v1} (the cgroup2 "
                             "root offers no cpuset controller)")
    return CpusetSupport(None, None, "no cpuset controller in cgroup2 nor a cgroup v1 cpuset "
                         "hierarchy", "kernel: CONFIG_CPUSETS=y; mount cgroup2 with cpuset")


def usable_cpus() -> tuple[int, ...]:
    """The CPUs this process may run on (its affinity: a container's or a cpuset's share)."""
    return tuple(sorted(os.sched_getaffinity(0)))


@dataclass(frozen=True)
class Isolation:
    """What isolation is possible (and, once applied, was applied) for one run."""

    possible: bool
    reason: str
    usable: tuple[int, ...]
    cpus: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Processing host -> its own CPUs."""
    rest: tuple[int, ...] = ()
    applied: bool = False
    backend: str | None = None
    groups: dict[str, str] = field(default_factory=dict)

    def threads(self, host: str) -> int | None:
        """Torch threads for ``host``: its CPUs when it has its own, else None (torch's choice)."""
        return len(self.cpus[host]) if self.applied and host in self.cpus else None

    def group(self, host: str) -> str | None:
        return self.groups.get(host) if self.applied else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cpus"] = {h: list(c) for h, c in self.cpus.items()}
        return d


def _cpu_list(cpus: Sequence[int]) -> str:
    return ",".join(str(c) for c in cpus)


def plan_isolation(usable: Sequence[int], hosts: Sequence[str]) -> Isolation:
    """CPUs of their own for ``hosts`` (the hosts that process frames for real), one or more
    for the rest; pure (no cgroup is touched)."""
    usable = tuple(sorted(usable))
    hosts = list(hosts)
    if REST in hosts:
        raise ValueError(f"a host may not be named {REST!r} (the cpuset of everything else)")
    if not hosts:
        return Isolation(False, "no host processes frames for real (compute: real on md/es): "
                         "nothing to isolate", usable)
    need = len(hosts) + 1
    if len(usable) < need:
        return Isolation(False, (
            f"{len(usable)} usable CPU(s) ({_cpu_list(usable)}); isolating "
            f"{' and '.join(hosts)} needs {need} (one each, one for everything else): not "
            f"applied: {', '.join(hosts)}, the AP (QEMU), iperf3, sshd and the orchestrator "
            "share every CPU (CPU caps still apply)"), usable)
    rest, free = usable[:1], list(usable[1:])
    cpus: dict[str, tuple[int, ...]] = {}
    for i, host in enumerate(hosts):
        take = 1 if i < len(hosts) - 1 else len(free)  # the last (the ES) takes what is left
        cpus[host], free = tuple(free[:take]), free[take:]
    shares = "; ".join(f"{h}: CPU {_cpu_list(c)}" for h, c in cpus.items())
    return Isolation(True, f"{shares}; everything else (QEMU, iperf3, sshd, the orchestrator's "
                     f"lab processes): CPU {_cpu_list(rest)}", usable, cpus, rest)


def describe_here(hosts: Sequence[str]) -> str:
    """What isolation a run with these processing hosts would get on this machine (doctor)."""
    plan = plan_isolation(usable_cpus(), hosts)
    if not plan.possible:
        return plan.reason
    support = detect_cpuset_support()
    if support.backend is None:
        return f"possible ({plan.reason}) but not here: {support.detail}; fix: {support.fix}"
    return f"{plan.reason} ({support.detail})"


def _make_group(support: CpusetSupport, run_id: str, name: str, cpus: Sequence[int]) -> str:
    assert support.root
    run_dir = os.path.join(support.root, names.cgroup_name(run_id))
    path = os.path.join(run_dir, name)
    if support.backend == "cgroup2":
        ctl = os.path.join(support.root, "cgroup.subtree_control")
        if "cpuset" not in cpu.read_file(ctl).split():
            cpu.write_file(ctl, "+cpuset")
        os.makedirs(run_dir, exist_ok=True)
        ctl = os.path.join(run_dir, "cgroup.subtree_control")
        if "cpuset" not in cpu.read_file(ctl).split():
            cpu.write_file(ctl, "+cpuset")
        os.makedirs(path, exist_ok=True)
        cpu.write_file(os.path.join(path, "cpuset.cpus"), _cpu_list(cpus))
    else:  # v1: a child starts with no CPUs and no memory nodes; give it both, parent first
        mems = cpu.read_file(os.path.join(support.root, "cpuset.mems")).strip()
        for group, want in ((run_dir, cpu.read_file(os.path.join(support.root, "cpuset.cpus")).strip()),
                            (path, _cpu_list(cpus))):
            os.makedirs(group, exist_ok=True)
            if not cpu.read_file(os.path.join(group, "cpuset.mems")).strip():
                cpu.write_file(os.path.join(group, "cpuset.mems"), mems)
            if group == path or not cpu.read_file(os.path.join(group, "cpuset.cpus")).strip():
                cpu.write_file(os.path.join(group, "cpuset.cpus"), want)
    got = cpu.read_file(os.path.join(path, "cpuset.cpus")).strip()
    if _expand(got) != tuple(cpus):
        raise RuntimeError(f"{path}: cpuset.cpus reads {got!r} after writing {_cpu_list(cpus)!r}")
    return path


def _expand(text: str) -> tuple[int, ...]:
    """``0-2,5`` -> (0, 1, 2, 5)."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return tuple(out)


def apply_isolation(run_id: str, plan: Isolation,
                    support: CpusetSupport | None = None) -> Isolation:
    """Make the run's cpusets for a possible plan; the plan as applied (or why not)."""
    if not plan.possible:
        return plan
    support = support or detect_cpuset_support()
    if support.backend is None:
        return Isolation(False, f"possible ({plan.reason}) but not applied: {support.detail}; "
                         f"fix: {support.fix}", plan.usable)
    groups = {host: _make_group(support, run_id, host, c) for host, c in plan.cpus.items()}
    groups[REST] = _make_group(support, run_id, REST, plan.rest)
    return Isolation(True, plan.reason, plan.usable, dict(plan.cpus), plan.rest, applied=True,
                     backend=support.backend, groups=groups)


def move_to(plan: Isolation, host: str, pid: int) -> bool:
    """Put process ``pid`` into ``host``'s cpuset (``REST`` for the rest); False if not applied."""
    group = plan.group(host)
    if group is None:
        return False
    cpu.add_pid(group, pid)
    return True


def join_argv(plan: Isolation, host: str) -> list[str]:
    """A command-line prefix that moves the command into ``host``'s cpuset before it starts
    (``sh`` writes its own pid, then ``exec``\\ s the command); [] when not applied."""
    group = plan.group(host)
    if group is None:
        return []
    return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', group]
