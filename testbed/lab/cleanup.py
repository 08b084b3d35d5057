"""Find and remove what emulated-lab runs left behind; touch nothing without the owned prefix.

``remove_leftover_runs()`` is what ``testbed clean`` runs after a run was killed (SIGKILL, OOM,
power loss...), after each backend stopped its own leftovers (``testbed.lab.backends.clean``:
the AP VM's QEMU). It looks only for objects whose *names* carry the owned prefix (see
``testbed.lab.names``):

1. network namespaces ``tb-<runid>-<host>`` (``/var/run/netns``): first the processes inside
   are killed (found by comparing ``/proc/<pid>/ns/net`` with the namespace's bind mount,
   device and inode; SIGTERM, then SIGKILL after a grace period, and a bounded wait until each
   has exited: ``testbed.lab.procs.stop_pids``; never this process), then the
   owned interfaces inside are deleted through netlink (deleting a veth end removes its peer),
   then the namespace's bind mount is removed (``pyroute2.netns.remove``);
2. owned interfaces (veth ends, ifb devices) ``tb<runid>-<tag>`` left in the root namespace;
3. owned cgroups ``testbed-<runid>`` (``testbed.lab.cpu``);
4. the run record ``/run/testbed/<runid>.json``.

Live runs are protected: every run writes a record with its owner's pid and start time
(``testbed.lab.runs``); without ``run_id`` runs whose owner is still alive are skipped unless
``include_live=True``. ``run_id=...`` and ``remove_run`` (used by every lab's ``down()``,
``testbed.lab.base``) remove the named run regardless.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil

from pyroute2 import IPRoute

from testbed.lab import cpu, names, netns, procs, runs
from testbed.lab.netns import owned_namespaces
from testbed.lab.runs import read_run_record

log = logging.getLogger(__name__)


def _delete_owned_links(ns: str | None, run_id: str | None, dry_run: bool) -> list[str]:
    """Delete owned interfaces in namespace ``ns`` (None = root namespace)."""
    done: list[str] = []
    where = ns or "root namespace"
    try:
        ipr = netns.iproute(ns)
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


def remove_run(run_id: str, *, dry_run: bool = False) -> list[str]:
    """Remove every owned object of one run (namespaces, links, ifbs, cgroups, record)."""
    names.check_run_id(run_id)
    done: list[str] = []
    spaces = owned_namespaces(run_id)
    # 1. processes inside (they keep a namespace and its devices alive)
    where: dict[int, str] = {}
    for ns in spaces:
        for pid in netns.pids_in_namespace(ns):
            where.setdefault(pid, ns)
    if where:
        done += procs.stop_pids(sorted(where), dry_run=dry_run, where=where)
    # 2. owned links inside each namespace (synchronous; namespace teardown is asynchronous)
    for ns in spaces:
        done += _delete_owned_links(ns, run_id, dry_run)
    # 3. the namespaces themselves
    for ns in spaces:
        done.append(f"remove netns {ns}")
        if not dry_run:
            netns.remove_namespace(ns)
    # 4. owned links (veth ends, ifbs) stranded in the root namespace
    done += _delete_owned_links(None, run_id, dry_run)
    # 5. cgroups
    done += cpu.remove_run_groups(run_id, dry_run=dry_run)
    # 6. per-run secrets the record names (keys in a result folder), the hosts' work folder
    rec = read_run_record(run_id) or {}
    for path in [*rec.get("private_paths", []), runs.host_workdir(run_id)]:
        if os.path.lexists(path):
            done.append(f"remove {path}")
            if not dry_run:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
    # 7. the record
    if read_run_record(run_id) is not None or os.path.exists(runs.record_path(run_id)):
        done.append(f"remove run record {runs.record_path(run_id)}")
        if not dry_run:
            runs.unregister_run(run_id)
    return done


def owned_root_links() -> dict[str, list[str]]:
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
    by_run: dict[str, dict[str, list[str]]] = {}

    def slot(run: str) -> dict[str, list[str]]:
        return by_run.setdefault(
            run, {"namespaces": [], "links": [], "cgroups": [], "records": []}
        )

    for ns in owned_namespaces():
        parsed = names.parse_namespace_name(ns)
        if parsed:
            slot(parsed[0])["namespaces"].append(ns)
    for run, links in owned_root_links().items():
        slot(run)["links"] += links
    for d in cpu.owned_run_dirs():
        run = names.parse_cgroup_name(os.path.basename(d))
        if run:
            slot(run)["cgroups"].append(d)
    for run in runs.recorded_runs():
        slot(run)["records"].append(runs.record_path(run))
    return by_run


def remove_leftover_runs(
    dry_run: bool = False, *, run_id: str | None = None, include_live: bool = False
) -> list[str]:
    """Remove leftovers of killed runs; return what was (or, with ``dry_run``, would be) removed.

    ``run_id``: only that run (removed even if its owner is alive). Without it, every owned run
    whose owner process is gone; runs with a live owner are skipped unless ``include_live``.
    ``testbed clean`` runs this after each backend's own leftovers are stopped
    (``testbed.lab.backends.clean``).
    """
    if run_id is not None:
        return remove_run(run_id, dry_run=dry_run)
    done: list[str] = []
    for run in sorted(find_leftovers()):
        if not include_live and runs.run_owner_alive(run):
            rec = read_run_record(run) or {}
            log.info("skip run %s: owner pid %s is alive", run, rec.get("pid"))
            continue
        done += remove_run(run, dry_run=dry_run)
    return done
