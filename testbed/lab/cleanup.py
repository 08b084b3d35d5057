"""Find and remove what emulated-lab runs left behind; touch nothing without the owned prefix.

``clean()`` is what ``testbed clean`` runs after a run was killed (SIGKILL, OOM, power loss...).
It looks only for objects whose *names* carry the owned prefix (see ``testbed.lab.names``):

1. network namespaces ``tb-<runid>-<host>`` (``/var/run/netns``): first the processes inside
   are killed (found by comparing ``/proc/<pid>/ns/net`` with the namespace's bind mount,
   device and inode; SIGTERM, then SIGKILL after a bounded wait; never this process), then the
   owned interfaces inside are deleted through netlink (deleting a veth end removes its peer),
   then the namespace's bind mount is removed (``pyroute2.netns.remove``);
2. owned interfaces (veth ends, ifb devices) ``tb<runid>-<tag>`` left in the root namespace;
3. owned cgroups ``testbed-<runid>`` (``testbed.lab.cpu``);
4. the run record ``/run/testbed/<runid>.json``.

Live runs are protected: every run writes a record with its owner's pid and start time
(``register_run``); ``clean()`` without ``run_id`` skips runs whose owner is still alive unless
``include_live=True``. ``clean(run_id=...)`` and ``remove_run`` (used by
``EmulatedLab.down()``) remove the named run regardless.

This module also holds the small network-namespace primitives the lab and the capability probe
share (create/remove/list, pids inside, run a process inside).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from testbed.lab import cpu, names

log = logging.getLogger(__name__)

NETNS_DIR = "/var/run/netns"
RUN_RECORD_DIR = "/run/testbed"
CLONE_NEWNET = 0x40000000

# --------------------------------------------------------------------------- run records


def _proc_starttime(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), or None if no such running
    process (gone, or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            data = fh.read()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    rest = data[data.rindex(")") + 2 :].split()
    if rest[0] in ("Z", "X"):  # a zombie (killed, not reaped yet) is no longer running
        return None
    return int(rest[19])


def _record_path(run_id: str) -> str:
    return os.path.join(RUN_RECORD_DIR, f"{names.check_run_id(run_id)}.json")


def register_run(run_id: str, kind: str = "lab", extra: dict[str, Any] | None = None) -> str:
    """Write the run record (owner pid + start time) that protects a live run from ``clean()``."""
    os.makedirs(RUN_RECORD_DIR, exist_ok=True)
    pid = os.getpid()
    rec = {
        "run_id": run_id,
        "kind": kind,
        "pid": pid,
        "starttime": _proc_starttime(pid),
        "created": time.time(),
        **(extra or {}),
    }
    return _write_record(run_id, rec)


def _write_record(run_id: str, rec: dict[str, Any]) -> str:
    path = _record_path(run_id)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(rec, fh)
    os.replace(tmp, path)
    return path


def remember_private(run_id: str, *paths: str | os.PathLike) -> None:
    """Add per-run secrets (keys...) to the run's record: :func:`remove_run` deletes them if the
    run dies before its own teardown (SIGKILL), so no result folder keeps them."""
    rec = read_run_record(run_id)
    if rec is None:
        raise RuntimeError(f"run {run_id} has no record: register_run() first")
    known = rec.setdefault("private_paths", [])
    known += [os.fspath(p) for p in paths if os.fspath(p) not in known]
    _write_record(run_id, rec)


def host_workdir(run_id: str) -> str:
    """The hosts' per-run work folder (an emulated lab's hosts share this machine's /tmp)."""
    return f"/tmp/testbed-{names.check_run_id(run_id)}"


def read_run_record(run_id: str) -> dict[str, Any] | None:
    try:
        with open(_record_path(run_id)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def unregister_run(run_id: str) -> None:
    try:
        os.unlink(_record_path(run_id))
    except FileNotFoundError:
        pass


def run_owner_alive(run_id: str) -> bool:
    """True if the run's record names a process that is still the same, running process."""
    rec = read_run_record(run_id)
    if not rec or "pid" not in rec:
        return False
    start = _proc_starttime(int(rec["pid"]))
    return start is not None and start == rec.get("starttime")


def recorded_runs() -> list[str]:
    try:
        entries = os.listdir(RUN_RECORD_DIR)
    except OSError:
        return []
    out = []
    for e in entries:
        if e.endswith(".json") and names.RUN_ID_RE.match(e[:-5]):
            out.append(e[:-5])
    return sorted(out)


# --------------------------------------------------------------------------- namespaces


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def list_namespaces() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except OSError:
        return []


def owned_namespaces(run_id: str | None = None) -> list[str]:
    return [n for n in list_namespaces() if names.is_owned_namespace(n, run_id)]


def namespace_exists(name: str) -> bool:
    return os.path.exists(netns_path(name))


def create_namespace(name: str) -> None:
    """Create a named network namespace (bind mount in /var/run/netns), like ``ip netns add``."""
    if namespace_exists(name):
        raise FileExistsError(errno.EEXIST, "namespace exists", name)
    pr_netns.create(name)
    if not namespace_exists(name):
        raise OSError(errno.ENOENT, "namespace was not created", name)


def remove_namespace(name: str) -> bool:
    """Unmount and unlink the namespace's bind mount (``ip netns del``); False if absent."""
    if not namespace_exists(name):
        return False
    try:
        pr_netns.remove(name)
    except FileNotFoundError:
        return False
    return True


def pids_in_namespace(name: str) -> list[int]:
    """Pids whose network namespace is ``name`` (``ip netns pids`` equivalent)."""
    try:
        st = os.stat(netns_path(name))
    except OSError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            pst = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (pst.st_dev, pst.st_ino) == (st.st_dev, st.st_ino):
            found.append(int(entry))
    return sorted(found)


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return "?"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def kill_pids(pids: Sequence[int], *, timeout_s: float = 2.0, dry_run: bool = False,
              where: dict[int, str] | None = None) -> list[str]:
    """SIGTERM, wait (bounded), then SIGKILL. Never signals this process or its parent.

    Exited children are left for their owners to reap (a zombie holds no namespace).
    ``where``: pid -> the namespace it was found in, named in the returned lines.
    """
    protected = {os.getpid(), os.getppid(), 1}
    targets = [p for p in pids if p not in protected]
    where = where or {}
    done = [f"kill pid {p} ({_comm(p)})" + (f" in {where[p]}" if p in where else "")
            for p in targets]
    if dry_run or not targets:
        return done
    for p in targets:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in targets):
        time.sleep(0.02)
    for p in targets:
        if _alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in targets):
        time.sleep(0.02)
    return done


_libc = None


def _setns_fd(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def in_namespace(name: str) -> Iterator[None]:
    """Run the block with the calling thread inside network namespace ``name`` (setns).

    Only this thread moves; it returns to its previous namespace afterwards. The namespace must
    exist (nothing is created).
    """
    target = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns_fd(target)
            try:
                yield
            finally:
                _setns_fd(saved)
        finally:
            os.close(saved)
    finally:
        os.close(target)


def popen_in_namespace(
    name: str,
    argv: Sequence[str],
    *,
    cgroup: str | None = None,
    **kwargs: Any,
) -> subprocess.Popen:
    """Start ``argv`` inside network namespace ``name`` (and cgroup ``cgroup`` if given).

    The child enters the namespace (``setns``) and the cgroup between fork and exec, so the
    process never runs outside either.
    """
    path = netns_path(name)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "no such namespace", name)
    user_preexec = kwargs.pop("preexec_fn", None)

    def _enter() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            _setns_fd(fd)
        finally:
            os.close(fd)
        if cgroup:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as fh:
                fh.write(str(os.getpid()))
        if user_preexec:
            user_preexec()

    return subprocess.Popen(list(argv), preexec_fn=_enter, **kwargs)


def run_in_namespace(
    name: str, argv: Sequence[str], *, timeout: float = 30, **kwargs: Any
) -> subprocess.CompletedProcess:
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("text", True)
    proc = popen_in_namespace(name, argv, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)


def _delete_owned_links(ns: str | None, run_id: str | None, dry_run: bool) -> list[str]:
    """Delete owned interfaces in namespace ``ns`` (None = root namespace)."""
    done: list[str] = []
    where = ns or "root namespace"
    try:
        ipr = IPRoute(netns=ns, flags=0) if ns else IPRoute()
    except Exception as e:  # namespace vanished, or no permission
        log.debug("cannot open %s: %s", where, e)
        return done
    with ipr:
        try:
            links = list(ipr.get_links())
        except Exception as e:
            log.debug("cannot list links in %s: %s", where, e)
            return done
        gone: set[str] = set()
        for link in links:
            ifname = link.get_attr("IFLA_IFNAME")
            if not names.is_owned_interface(ifname, run_id) or ifname in gone:
                continue
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else "?"
            done.append(f"delete link {ifname} ({kind}) in {where}")
            if dry_run:
                continue
            try:
                ipr.link("del", index=link["index"])
            except Exception as e:  # peer of an already deleted veth: ENODEV
                if getattr(e, "code", None) not in (errno.ENODEV,):
                    done[-1] += f" FAILED: {e}"
    return done


# --------------------------------------------------------------------------- removal


def remove_run(run_id: str, *, dry_run: bool = False, kill_timeout_s: float = 2.0) -> list[str]:
    """Remove every owned object of one run (namespaces, links, ifbs, cgroups, record)."""
    names.check_run_id(run_id)
    done: list[str] = []
    spaces = owned_namespaces(run_id)
    # 1. processes inside (they keep a namespace and its devices alive)
    where: dict[int, str] = {}
    for ns in spaces:
        for pid in pids_in_namespace(ns):
            where.setdefault(pid, ns)
    if where:
        done += kill_pids(sorted(where), timeout_s=kill_timeout_s, dry_run=dry_run, where=where)
    # 2. owned links inside each namespace (synchronous; namespace teardown is asynchronous)
    for ns in spaces:
        done += _delete_owned_links(ns, run_id, dry_run)
    # 3. the namespaces themselves
    for ns in spaces:
        done.append(f"remove netns {ns}")
        if not dry_run:
            remove_namespace(ns)
    # 4. owned links (veth ends, ifbs) stranded in the root namespace
    done += _delete_owned_links(None, run_id, dry_run)
    # 5. cgroups
    done += cpu.remove_run_groups(run_id, dry_run=dry_run)
    # 6. per-run secrets the record names (keys in a result folder), the hosts' work folder
    rec = read_run_record(run_id) or {}
    for path in [*rec.get("private_paths", []), host_workdir(run_id)]:
        if os.path.lexists(path):
            done.append(f"remove {path}")
            if not dry_run:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
    # 7. the record
    if read_run_record(run_id) is not None or os.path.exists(_record_path(run_id)):
        done.append(f"remove run record {_record_path(run_id)}")
        if not dry_run:
            unregister_run(run_id)
    return done


def _owned_root_links() -> dict[str, list[str]]:
    by_run: dict[str, list[str]] = {}
    try:
        with IPRoute() as ipr:
            for link in ipr.get_links():
                ifname = link.get_attr("IFLA_IFNAME")
                parsed = names.parse_interface_name(ifname)
                if parsed:
                    by_run.setdefault(parsed[0], []).append(ifname)
    except Exception as e:
        log.debug("cannot list root links: %s", e)
    return by_run


def find_leftovers() -> dict[str, dict[str, list[str]]]:
    """Owned objects by run id: ``{run_id: {"namespaces": [...], "links": [...], ...}}``."""
    runs: dict[str, dict[str, list[str]]] = {}

    def slot(run: str) -> dict[str, list[str]]:
        return runs.setdefault(
            run, {"namespaces": [], "links": [], "cgroups": [], "records": []}
        )

    for ns in owned_namespaces():
        parsed = names.parse_namespace_name(ns)
        if parsed:
            slot(parsed[0])["namespaces"].append(ns)
    for run, links in _owned_root_links().items():
        slot(run)["links"] += links
    for d in cpu.owned_run_dirs():
        run = names.parse_cgroup_name(os.path.basename(d))
        if run:
            slot(run)["cgroups"].append(d)
    for run in recorded_runs():
        slot(run)["records"].append(_record_path(run))
    return runs


def clean(
    dry_run: bool = False, *, run_id: str | None = None, include_live: bool = False
) -> list[str]:
    """Remove leftovers of killed runs; return what was (or, with ``dry_run``, would be) removed.

    ``run_id``: only that run (removed even if its owner is alive). Without it, every owned run
    whose owner process is gone; runs with a live owner are skipped unless ``include_live``.
    """
    # --- access-point VMs (testbed.vm, issue 7): stop a QEMU a killed run left (its pid file in
    # /run/testbed) first, since it holds its taps. Same run_id/include_live rules as below.
    from testbed.vm.boot import clean_vms

    vm_done = clean_vms(dry_run, run_id=run_id, include_live=include_live)
    # --- end of the VM hook
    if run_id is not None:
        return vm_done + remove_run(run_id, dry_run=dry_run)
    done: list[str] = vm_done
    for run in sorted(find_leftovers()):
        if not include_live and run_owner_alive(run):
            rec = read_run_record(run) or {}
            log.info("skip run %s: owner pid %s is alive", run, rec.get("pid"))
            continue
        done += remove_run(run, dry_run=dry_run)
    return done
