"""CPU isolation for real processing: the MD and the ES on CPUs of their own (cpusets).

With ``compute: real`` the MD's and ES's processing times are what is measured, so nothing else
of the lab should run on their CPUs. :func:`plan_isolation` decides, from the CPUs this process
may use, what is possible (:attr:`Isolation.level`):

``full``
    one CPU per processing host plus one for everything else (the AP's QEMU or simulator,
    iperf3, every sshd, the orchestrator); each processing host alone on its CPUs, the ES takes
    the CPUs left over.
``partial``
    fewer CPUs than that (a 2-core machine has 2 for 3 sets) but at least 2 and an ES that
    processes for real: the ES (the stronger host, whose short times contention distorts most)
    alone on every CPU but the first; the MDs share the first with everything else, so their
    times include that contention (:attr:`Isolation.shared` names them; the reason says so).
``none``
    one CPU, no real processing, no real ES with too few CPUs, or the scenario's
    ``cpu_isolation: false``: nothing pinned, and :attr:`Isolation.reason` says why.

Either way processes outside the run (other users' work, system services) are not moved.

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
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from testbed.lab import cpu, names

REST = "rest"
"""The group of everything that is not a processing host (its name is not a host name: hosts
are named ``[a-z][a-z0-9]*`` and ``rest`` is refused by :func:`plan_isolation`)."""

FULL, PARTIAL, NONE = "full", "partial", "none"
AP_PROCESSES = {"vm": "the AP VM (QEMU)", "ns3": "the ns-3 simulator"}
"""What the AP runs as a process of its own, per lab backend (a namespace AP runs none)."""
OUTSIDE = "processes outside the run are not moved (they may use any CPU)"


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
    """Processing host -> the CPUs it runs on (its own, or the rest's for a ``shared`` host)."""
    rest: tuple[int, ...] = ()
    level: str = NONE
    """``full``, ``partial`` or ``none`` (see the module's docstring)."""
    shared: tuple[str, ...] = ()
    """Processing hosts pinned to the rest's CPUs (partial plan): not isolated."""
    applied: bool = False
    backend: str | None = None
    groups: dict[str, str] = field(default_factory=dict)

    def threads(self, host: str) -> int | None:
        """Torch threads for ``host``: the CPUs it is pinned to, else None (torch's choice)."""
        return len(self.cpus[host]) if self.applied and host in self.cpus else None

    def group(self, host: str) -> str | None:
        return self.groups.get(host) if self.applied else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cpus"] = {h: list(c) for h, c in self.cpus.items()}
        d["shared"] = list(self.shared)
        return d


def _cpu_list(cpus: Sequence[int]) -> str:
    return ",".join(str(c) for c in cpus)


def _cpus(cpus: Sequence[int]) -> str:
    return f"CPU{'s' if len(cpus) > 1 else ''} {_cpu_list(cpus)}"


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def plan_isolation(usable: Sequence[int], mds: Sequence[str], es: str | None, *,
                   enabled: bool = True, ap_process: str | None = None) -> Isolation:
    """CPUs for the hosts that process frames for real (``mds``, and ``es`` unless None) and for
    the rest, the best plan ``usable`` allows (``enabled``: the scenario's ``cpu_isolation``);
    ``ap_process`` names what the AP runs as a process (:data:`AP_PROCESSES`), for the reason.
    Pure: no cgroup is touched."""
    usable = tuple(sorted(usable))
    hosts = [*mds, *([es] if es else [])]
    if REST in hosts:
        raise ValueError(f"a host may not be named {REST!r} (the cpuset of everything else)")
    if not hosts:
        return Isolation(False, "no host processes frames for real (compute: real on md/es): "
                         "nothing to isolate", usable)
    others = _and([p for p in (ap_process, "iperf3", "every sshd", "the orchestrator") if p])
    unpinned = f"{_and(hosts)}, {others} share every CPU (CPU caps still apply)"
    if not enabled:
        return Isolation(False, f"cpu_isolation: false in the scenario: not applied: {unpinned}",
                         usable)
    need = len(hosts) + 1
    rest = usable[:1]
    if len(usable) >= need:
        free = list(usable[1:])
        cpus: dict[str, tuple[int, ...]] = {}
        for i, host in enumerate(hosts):
            take = 1 if i < len(hosts) - 1 else len(free)  # the last (the ES) takes what is left
            cpus[host], free = tuple(free[:take]), free[take:]
        alone = "; ".join(f"{h} alone on {_cpus(c)}" for h, c in cpus.items())
        return Isolation(True, f"full: {alone}; {others} on {_cpus(rest)}; {OUTSIDE}", usable,
                         cpus, rest, level=FULL)
    short = (f"{len(usable)} usable CPU(s) ({_cpu_list(usable)}); isolating {_and(hosts)} needs "
             f"{need} (one each, one for everything else)")
    if es is None or len(usable) < 2:
        return Isolation(False, f"{short}: not applied: {unpinned}", usable)
    cpus = {md: rest for md in mds}  # mds is not empty here: an ES alone needs 2 CPUs
    cpus[es] = usable[1:]
    one = len(mds) == 1
    return Isolation(True, (
        f"partial: {es} alone on {_cpus(cpus[es])}; {_and(list(mds))} share{'s' if one else ''} "
        f"{_cpus(rest)} with {others}: {'its' if one else 'their'} times include that "
        f"contention ({short}); {OUTSIDE}"), usable, cpus, rest, level=PARTIAL, shared=tuple(mds))


def describe_here(mds: Sequence[str], es: str | None, ap_process: str | None = None) -> str:
    """What isolation a run with these processing hosts would get on this machine (doctor)."""
    plan = plan_isolation(usable_cpus(), mds, es, ap_process=ap_process)
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
    return replace(plan, applied=True, backend=support.backend, groups=groups)


def move_to(plan: Isolation, host: str, pid: int) -> bool:
    """Put process ``pid`` into ``host``'s cpuset (``REST`` for the rest); False if not applied."""
    group = plan.group(host)
    if group is None:
        return False
    cpu.add_pid(group, pid)
    return True


def join_argv(plan: Isolation, host: str) -> list[str]:
    """A command-line prefix that moves the command into ``host``'s cpuset before it starts
    (``sh`` writes its own pid, then ``exec``\\ s the command); [] when not applied.

    The group is reached through ``/proc/<this process>/root``: a host's commands run under
    ``ip netns exec``, whose mount namespace has a fresh ``/sys`` without the cgroup mounts
    (``/sys/fs/cgroup/...`` does not exist there), while this process's root still shows them."""
    group = plan.group(host)
    if group is None:
        return []
    return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"',
            f"/proc/{os.getpid()}/root{group}"]
