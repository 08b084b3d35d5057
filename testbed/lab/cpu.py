"""CPU caps for emulated hosts: one cgroup per host with a CPU quota (a fraction of one core).

Layout: ``<cgroup root>/testbed-<runid>/<host>``, e.g. ``/sys/fs/cgroup/testbed-3fa9c1/md``.

Backends, detected at run time (``detect_cpu_support``):

* **cgroup2** (preferred): the cgroup2 mount whose root ``cgroup.controllers`` lists ``cpu``.
  ``cpu.max`` = ``"<quota> <period>"`` (0.5 core -> ``"50000 100000"``). Creating a group
  enables ``+cpu`` in ``cgroup.subtree_control`` of the root (if not already enabled: this is
  a change to the host that outlives the run and is reported in ``CpuGroup.notes``) and of
  ``testbed-<runid>``.
* **cgroup1** (fallback, hybrid hierarchies such as this machine's, where the cpu controller is
  bound to a v1 hierarchy and the unified mount has none): ``cpu.cfs_period_us`` /
  ``cpu.cfs_quota_us`` in the v1 ``cpu`` hierarchy. Same CFS bandwidth control, same effect.

If neither is usable, ``CpuSupport.available`` is False with the reason and the fix; callers
must report "cpu cap not applied" instead of pretending.

The location of the cgroup2 mount is read from ``/proc/self/mounts`` (it is not always
``/sys/fs/cgroup``: on hybrid systems that is a tmpfs, where ``mkdir`` would silently make a plain
directory rather than a cgroup).
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from testbed.lab import names

DEFAULT_PERIOD_US = 100_000


@dataclass(frozen=True)
class CpuSupport:
    available: bool
    backend: str | None  # "cgroup2" | "cgroup1" | None
    root: str | None  # mount point of the hierarchy used
    detail: str
    fix: str = ""
    cgroup2_root: str | None = None
    cgroup2_cpu: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CpuGroup:
    run_id: str
    host: str
    path: str
    backend: str
    fraction: float
    quota_us: int
    period_us: int
    notes: list[str] = field(default_factory=list)

    @property
    def setting(self) -> str:
        """What was written (``cpu.max`` text, or the v1 quota/period pair)."""
        if self.backend == "cgroup2":
            return f"{self.quota_us} {self.period_us}"
        return f"cfs_quota_us={self.quota_us} cfs_period_us={self.period_us}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["setting"] = self.setting
        return d


def mounts() -> list[tuple[str, str, str]]:
    """(mountpoint, fstype, options) of every mount of this process's mount namespace."""
    out = []
    try:
        with open("/proc/self/mounts") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 4:
                    mnt = parts[1].replace("\\040", " ")
                    out.append((mnt, parts[2], parts[3]))
    except OSError:
        pass
    return out


def cgroup2_root() -> str | None:
    for mnt, fstype, _ in mounts():
        if fstype == "cgroup2":
            return mnt
    return None


def cgroup1_root(controller: str) -> str | None:
    """The cgroup v1 hierarchy ``controller`` (cpu, cpuset) is bound to, if any."""
    for mnt, fstype, opts in mounts():
        if fstype == "cgroup" and controller in opts.split(","):
            return mnt
    return None


def cgroup1_cpu_root() -> str | None:
    return cgroup1_root("cpu")


def read_file(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def write_file(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def detect_cpu_support() -> CpuSupport:
    """Which cgroup backend can cap CPU here (reads only; changes nothing)."""
    v2 = cgroup2_root()
    v2_cpu = False
    v2_detail = "no cgroup2 mount"
    if v2:
        try:
            ctrls = read_file(os.path.join(v2, "cgroup.controllers")).split()
            v2_cpu = "cpu" in ctrls
            v2_detail = f"cgroup2 at {v2}, controllers: {' '.join(ctrls) or '(none)'}"
        except OSError as e:
            v2_detail = f"cgroup2 at {v2} unreadable: {e}"
    writable = os.geteuid() == 0
    if v2 and v2_cpu:
        return CpuSupport(
            available=writable,
            backend="cgroup2",
            root=v2,
            detail=v2_detail + ("" if writable else "; needs root to create groups"),
            fix="" if writable else "run as root",
            cgroup2_root=v2,
            cgroup2_cpu=True,
        )
    v1 = cgroup1_cpu_root()
    if v1 and os.path.exists(os.path.join(v1, "cpu.cfs_quota_us")):
        return CpuSupport(
            available=writable,
            backend="cgroup1",
            root=v1,
            detail=(
                f"{v2_detail}; the cpu controller is bound to the cgroup v1 hierarchy at {v1} "
                "(hybrid layout): using cpu.cfs_quota_us/cpu.cfs_period_us there"
                + ("" if writable else "; needs root to create groups")
            ),
            fix=(
                "for cgroup v2: boot with systemd.unified_cgroup_hierarchy=1 (or "
                "cgroup_no_v1=cpu) so the cpu controller appears in cgroup.controllers"
            ),
            cgroup2_root=v2,
            cgroup2_cpu=False,
        )
    return CpuSupport(
        available=False,
        backend=None,
        root=None,
        detail=f"{v2_detail}; no cgroup v1 cpu hierarchy either",
        fix="kernel: CONFIG_CGROUPS=y, CONFIG_CGROUP_SCHED=y, CONFIG_FAIR_GROUP_SCHED=y, "
        "CONFIG_CFS_BANDWIDTH=y; mount cgroup2 with the cpu controller available",
        cgroup2_root=v2,
        cgroup2_cpu=False,
    )


def _enable_cpu_in(path: str) -> bool:
    """Ensure ``+cpu`` in ``path/cgroup.subtree_control``; True if this call enabled it."""
    ctl = os.path.join(path, "cgroup.subtree_control")
    if "cpu" in read_file(ctl).split():
        return False
    write_file(ctl, "+cpu")
    return True


def create_group(
    run_id: str,
    host: str,
    fraction: float,
    *,
    period_us: int = DEFAULT_PERIOD_US,
    support: CpuSupport | None = None,
) -> CpuGroup:
    """Create ``testbed-<runid>/<host>`` with a quota of ``fraction`` of one core.

    Raises ``RuntimeError`` if no backend is usable (``support.detail`` says why).
    """
    names.check_host(host)
    if not (0 < fraction <= 64):
        raise ValueError(f"cpu fraction must be in (0, 64], got {fraction}")
    support = support or detect_cpu_support()
    if not support.available or not support.root:
        raise RuntimeError(f"cpu cap not available: {support.detail}; fix: {support.fix}")
    quota = max(1000, int(round(fraction * period_us)))
    run_dir = os.path.join(support.root, names.cgroup_name(run_id))
    path = os.path.join(run_dir, host)
    notes: list[str] = []
    if support.backend == "cgroup2":
        if _enable_cpu_in(support.root):
            notes.append(
                f"enabled +cpu in {support.root}/cgroup.subtree_control (left enabled: other "
                "groups may rely on it)"
            )
        os.makedirs(run_dir, exist_ok=True)
        _enable_cpu_in(run_dir)
        os.makedirs(path, exist_ok=True)
        write_file(os.path.join(path, "cpu.max"), f"{quota} {period_us}")
        got = read_file(os.path.join(path, "cpu.max")).split()
        if got != [str(quota), str(period_us)]:
            raise RuntimeError(f"cpu.max of {path} reads {got}, wanted {quota} {period_us}")
    else:
        os.makedirs(path, exist_ok=True)
        # period first: the quota is checked against it
        write_file(os.path.join(path, "cpu.cfs_period_us"), str(period_us))
        write_file(os.path.join(path, "cpu.cfs_quota_us"), str(quota))
        got_q = int(read_file(os.path.join(path, "cpu.cfs_quota_us")))
        got_p = int(read_file(os.path.join(path, "cpu.cfs_period_us")))
        if (got_q, got_p) != (quota, period_us):
            raise RuntimeError(f"{path}: quota/period read back {got_q}/{got_p}")
    return CpuGroup(run_id, host, path, support.backend or "", fraction, quota, period_us, notes)


def add_pid(group: CpuGroup | str, pid: int) -> None:
    """Move process ``pid`` (all its threads) into the group."""
    path = group.path if isinstance(group, CpuGroup) else group
    write_file(os.path.join(path, "cgroup.procs"), str(int(pid)))


def group_pids(path: str) -> list[int]:
    try:
        return [int(x) for x in read_file(os.path.join(path, "cgroup.procs")).split()]
    except OSError:
        return []


def owned_run_dirs(run_id: str | None = None) -> list[str]:
    """Existing ``testbed-<runid>`` directories in every cgroup hierarchy we use (CPU caps,
    cpusets: ``testbed.lab.cpuset``)."""
    roots = {r for r in (cgroup2_root(), cgroup1_cpu_root(), cgroup1_root("cpuset")) if r}
    found = []
    for root in sorted(roots):
        try:
            entries = os.listdir(root)
        except OSError:
            continue
        for entry in entries:
            if names.is_owned_cgroup(entry, run_id) and os.path.isdir(os.path.join(root, entry)):
                found.append(os.path.join(root, entry))
    return found


def remove_run_dir(run_dir: str, *, dry_run: bool = False, timeout_s: float = 2.0) -> list[str]:
    """Remove ``testbed-<runid>`` and its host groups.

    Processes still inside are moved to the hierarchy's root group (not killed: processes in
    the lab's namespaces are killed by the namespace teardown; anything else was put here by
    the caller). Returns what was done.
    """
    if not names.is_owned_cgroup(os.path.basename(run_dir)):
        raise ValueError(f"not an owned cgroup: {run_dir}")
    done: list[str] = []
    root = os.path.dirname(run_dir)
    try:
        children = [
            os.path.join(run_dir, e)
            for e in os.listdir(run_dir)
            if os.path.isdir(os.path.join(run_dir, e))
        ]
    except FileNotFoundError:
        return done
    for group in children + [run_dir]:
        for pid in group_pids(group):
            done.append(f"move pid {pid} from cgroup {group} to {root}")
            if not dry_run:
                try:
                    add_pid(root, pid)
                except OSError:
                    pass
        done.append(f"remove cgroup {group}")
        if dry_run:
            continue
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                os.rmdir(group)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                # EBUSY: a dying task is still accounted; retry briefly (bounded)
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    done[-1] += f" FAILED: {e}"
                    break
                time.sleep(0.05)
    return done


def remove_run_groups(run_id: str, *, dry_run: bool = False) -> list[str]:
    done: list[str] = []
    for run_dir in owned_run_dirs(run_id):
        done += remove_run_dir(run_dir, dry_run=dry_run)
    return done


def cap_hosts(
    run_id: str, fractions: dict[str, float]
) -> tuple[dict[str, CpuGroup], dict[str, dict[str, Any]], list[str]]:
    """A CPU cap group per host (host -> fraction of one core).

    Returns the groups made, a per-host note for the manifest (applied or why not, and the fix),
    and one line per cap that could not be applied.
    """
    groups: dict[str, CpuGroup] = {}
    notes: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    if not fractions:
        return groups, notes, missing
    support = detect_cpu_support()
    for host, fraction in fractions.items():
        if not support.available:
            notes[host] = {"applied": False, "fraction": fraction,
                           "reason": f"not applied: {support.detail}", "fix": support.fix}
            missing.append(f"cpu cap for {host} not applied: {support.detail}")
            continue
        groups[host] = create_group(run_id, host, fraction, support=support)
        notes[host] = {"applied": True, **groups[host].to_dict()}
    return groups, notes, missing
