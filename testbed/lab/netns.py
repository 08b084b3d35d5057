"""Named network namespaces: create, list, remove, enter, run a process inside, find and stop the
processes inside, delete an interface. The primitives every lab backend, the capability probe and
the cleanup share (``ip netns`` without the binary: pyroute2 and ``setns``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from testbed.lab import names, procs

log = logging.getLogger(__name__)

NETNS_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000


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


def create_host_namespace(name: str) -> None:
    """:func:`create_namespace` with its loopback up (what every lab host starts from)."""
    create_namespace(name)
    with iproute(name) as ipr:
        lo = ipr.link_lookup(ifname="lo")
        if lo:
            ipr.link("set", index=lo[0], state="up")


def remove_namespace(name: str) -> bool:
    """Unmount and unlink the namespace's bind mount (``ip netns del``); False if absent."""
    if not namespace_exists(name):
        return False
    try:
        pr_netns.remove(name)
    except FileNotFoundError:
        return False
    return True


def _netns_of(pid: int) -> set[tuple[int, int]]:
    """(device, inode) of the network namespace(s) of ``pid``'s threads. A leader that has
    exited while other threads run has no namespace of its own any more: its threads' count."""
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
        return {(st.st_dev, st.st_ino)}
    except OSError:
        pass
    out = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            st = os.stat(f"/proc/{pid}/task/{tid}/ns/net")
        except OSError:
            continue
        out.add((st.st_dev, st.st_ino))
    return out


def pids_in_namespace(name: str) -> list[int]:
    """Running pids whose network namespace is ``name`` (``ip netns pids``); [] if no such
    namespace. Found by comparing ``/proc/<pid>/ns/net`` (or, for a process whose main thread
    has exited, its threads') with the bind mount (device, inode)."""
    try:
        st = os.stat(netns_path(name))
    except OSError:
        return []
    want = (st.st_dev, st.st_ino)
    return sorted(pid for pid in procs.all_pids()
                  if want in _netns_of(pid) and procs.is_running(pid))


def in_same_namespace(pid: int, name: str) -> bool:
    """Whether process ``pid`` is in network namespace ``name`` (False if either is gone)."""
    try:
        st = os.stat(netns_path(name))
    except OSError:
        return False
    return (st.st_dev, st.st_ino) in _netns_of(pid)


def stop_namespace_processes(name: str, *, term_grace_s: float = procs.TERM_GRACE_S,
                             dry_run: bool = False) -> list[str]:
    """Stop every process in namespace ``name`` (:func:`testbed.lab.procs.stop_pids`): a
    namespace is only really gone once no process holds it."""
    pids = pids_in_namespace(name)
    return procs.stop_pids(pids, term_grace_s=term_grace_s, dry_run=dry_run,
                           where={p: name for p in pids})


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


def iproute(namespace: str | None) -> IPRoute:
    """A netlink socket in ``namespace`` (None: this process's own)."""
    return IPRoute(netns=namespace, flags=0) if namespace else IPRoute()


def delete_link(namespace: str | None, ifname: str) -> bool:
    """Delete interface ``ifname`` in ``namespace`` (None: the root one); False if there was
    none (or the namespace is gone)."""
    try:
        ipr = iproute(namespace)
    except Exception as e:  # the namespace vanished
        log.debug("cannot open %s: %s", namespace or "root namespace", e)
        return False
    with ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return False
        try:
            ipr.link("del", index=found[0])
            return True
        except Exception as e:  # the peer of a veth deleted meanwhile: ENODEV
            log.debug("cannot delete %s in %s: %s", ifname, namespace or "root namespace", e)
            return False
