"""Pre-flight checks: what ``testbed run`` needs on this machine before it starts anything.

``testbed.lab.capabilities`` says what the kernel and the installed tools *offer*; this module
adds the checks of things a run *needs* that only fail once the lab is half up otherwise, and
names, for one kind of run, the checks that block it (:func:`needed`). Each check is a plain
function returning a :class:`~testbed.lab.capabilities.Capability` whose ``fix`` is one line
saying what to do:

``netns_exec``
    ``ip netns exec NS true`` in a throwaway namespace ``tb-<runid>-pf`` (registered like a lab
    run, so a killed check is found by ``testbed clean``; removed in every case). Every emulated
    host's sshd is started through ``ip netns exec``, which unshares a mount namespace and makes
    ``/`` a slave mount (``mount --make-rslave /``); where ``/`` is not a mount point (a plain
    ``chroot``, some containers) the kernel refuses that with EINVAL and no sshd can start.
``results_dir``
    the folder for result folders can be created and written.
``tun``
    ``/dev/net/tun`` opens (the AP VM's NICs are taps).
``ns3``
    ns-3's Python bindings are installed (the ``ns3`` backend); ``testbed doctor`` also imports
    them once in a fresh process from an empty folder and reports the version and import time.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from testbed.lab import cleanup, names, netns, runs
from testbed.lab.capabilities import KERNEL_FIX, Capabilities, Capability

PROBE_HOST = "pf"
TUN = "/dev/net/tun"
EXEC_TIMEOUT_S = 10.0
NS3_IMPORT_TIMEOUT_S = 300.0

ROOT_NOT_A_MOUNT_FIX = (
    "run from a root where / is a mount point: bind-mount the chroot directory onto itself "
    "before entering it (mount --bind DIR DIR; chroot DIR), or use a container or VM"
)
NETNS_PERMISSION_FIX = ("needs CAP_SYS_ADMIN: run as root on the host, or in a privileged "
                        "container (docker run --privileged)")


def root_is_mount_point(mountinfo: str = "/proc/self/mountinfo") -> bool:
    """True if ``/`` (as this process sees it) is the root of a mount. In a plain ``chroot`` the
    mount holding the new root is above it, so the kernel lists no mount at ``/``."""
    with open(mountinfo) as fh:
        return any(line.split()[4] == "/" for line in fh if len(line.split()) > 4)


def netns_exec() -> Capability:
    """Create a namespace ``tb-<runid>-pf``, run ``ip netns exec NS true`` in it, remove it."""
    name = "netns_exec"
    if os.geteuid() != 0:
        return Capability(name, False, "not checked: needs root", "run as root (sudo)")
    ip = shutil.which("ip")
    if ip is None:
        return Capability(name, False, "ip (iproute2) not found in PATH",
                          "apt-get install iproute2")
    run_id = names.new_run_id()
    ns = names.namespace_name(run_id, PROBE_HOST)
    runs.register_run(run_id, kind="preflight")
    owner = os.getpid()
    try:
        try:
            netns.create_namespace(ns)
        except OSError as e:
            fix = NETNS_PERMISSION_FIX if e.errno == errno.EPERM else KERNEL_FIX["netns"]
            return Capability(name, False, f"cannot create a network namespace: {e}", fix)
        try:
            proc = subprocess.run([ip, "netns", "exec", ns, "true"], capture_output=True,
                                  text=True, timeout=EXEC_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return Capability(name, False, f"`ip netns exec {ns} true` did not finish in "
                              f"{EXEC_TIMEOUT_S:g} s", "check for a hung mount or iproute2")
        if proc.returncode == 0:
            return Capability(name, True, f"`{ip} netns exec {ns} true` ran (namespace removed)")
        said = (proc.stderr or proc.stdout).strip().splitlines()
        detail = (f"`ip netns exec` failed (status {proc.returncode}): "
                  f"{said[-1] if said else 'no output'}")
        if not root_is_mount_point():
            return Capability(name, False, detail + "; / is not a mount point here",
                              ROOT_NOT_A_MOUNT_FIX)
        return Capability(name, False, detail,
                          "`ip netns exec` must be able to unshare a mount namespace and mount "
                          "sysfs: " + NETNS_PERMISSION_FIX)
    finally:
        if os.getpid() == owner:  # never from a forked helper unwinding this stack
            cleanup.remove_run(run_id)


def results_dir(root: str | os.PathLike) -> Capability:
    """The folder for result folders exists and is writable, or can be created."""
    name = "results_dir"
    path = Path(root).absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return Capability(name, False, f"{existing} is not a folder",
                          "choose another folder with --results DIR")
    try:  # a real write: access(2) says yes to root even where nothing can be created
        fd, probe = tempfile.mkstemp(prefix=".testbed-preflight-", dir=existing)
    except OSError as e:
        why = "is not writable" if existing == path else f"cannot be created in {existing}"
        return Capability(name, False, f"{path} {why}: {e.strerror}", f"choose a writable "
                          f"folder with --results DIR, or make {existing} writable")
    os.close(fd)
    os.unlink(probe)
    return Capability(name, True, f"{path} {'writable' if existing == path else 'can be created'}")


def tun() -> Capability:
    """``/dev/net/tun`` opens read-write (QEMU's tap NICs)."""
    try:
        fd = os.open(TUN, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        fix = ("modprobe tun (kernel: CONFIG_TUN); in a container: --device /dev/net/tun"
               if e.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO) else
               "run as root; in a container: --device /dev/net/tun")
        return Capability("tun", False, f"cannot open {TUN}: {e.strerror}", fix)
    os.close(fd)
    return Capability("tun", True, f"{TUN} opens (taps for the AP VM)")


def doctor_checks(results_root: str | os.PathLike = "results") -> list[Capability]:
    """The checks ``testbed doctor`` adds to the capabilities (which it prints already)."""
    return [netns_exec(), results_dir(results_root), tun(), ns3(measure_import=True)]


def needed(*, emulated: bool, backend: str | None, needs_load: bool) -> list[str]:
    """Names of the checks that block a run of this kind: the capabilities' (``root``, ``sshd``,
    ...) and this module's. ``backend``: where the AP runs (``namespace`` or ``vm``);
    ``needs_load``: some step starts iperf3 on the emulated hosts. A real lab's hosts are
    checked by ``testbed lab check``. The results folder is checked by the caller, before it
    creates the run's folder."""
    if not emulated:
        return ["root"]
    return ["root", "netns_exec", "sshd", *(["iperf3"] if needs_load else []),
            *(["qemu-system-x86_64", "tun"] if backend == "vm" else []),
            *(["ns3", "tun"] if backend == "ns3" else [])]


class PreflightError(RuntimeError):
    """Some checks a run needs failed; ``failed`` holds them, each with its fix."""

    def __init__(self, failed: list[Capability]):
        self.failed = failed
        super().__init__("; ".join(f"{c.name}: {c.detail}" for c in failed))

    @property
    def fix(self) -> str:
        return "; ".join(c.fix for c in self.failed if c.fix)


def ns3(measure_import: bool = False) -> Capability:
    """ns-3's bindings installed (found, not imported); ``measure_import``: import them in a fresh
    process from an empty folder (ns-3 scans its working directory) and time it."""
    from importlib import metadata

    from testbed.ns3_settings import NS3_FIX, missing_message, ns3_available

    if not ns3_available():
        return Capability("ns3", False, missing_message().split(": run")[0], NS3_FIX)
    try:
        version = metadata.version("ns3")
    except metadata.PackageNotFoundError:
        version = "unknown version"
    detail = f"ns-3 {version} (Python bindings; the ns3 backend)"
    if not measure_import:
        return Capability("ns3", True, detail)
    with tempfile.TemporaryDirectory(prefix="testbed-ns3-import-") as empty:
        code = ("import time; t = time.monotonic(); from ns import ns; "
                "ns.cppyy.gbl.ns3.Simulator; print(round(time.monotonic() - t, 1))")
        try:
            proc = subprocess.run([sys.executable, "-c", code], cwd=empty, capture_output=True,
                                  text=True, timeout=NS3_IMPORT_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return Capability("ns3", False, f"{detail}: the import did not finish in "
                              f"{NS3_IMPORT_TIMEOUT_S:g} s", NS3_FIX)
    if proc.returncode != 0:
        said = (proc.stderr or "").strip().splitlines()
        return Capability("ns3", False, f"{detail}: the import failed: "
                          f"{said[-1] if said else proc.returncode}", NS3_FIX)
    seconds = proc.stdout.strip().splitlines()[-1]
    return Capability("ns3", True, f"{detail}, imported in {seconds} s (a run's lab start pays "
                                   f"this once)")


def require(caps: Capabilities, wanted: list[str]) -> list[Capability]:
    """Run the ``wanted`` checks (this module's now, the others read from ``caps``, the result of
    ``capabilities.detect()``; ``probe_network=False`` is enough); raise :class:`PreflightError`
    naming every failed one."""
    own = {"netns_exec": netns_exec, "tun": tun, "ns3": ns3}
    checks = [own[name]() if name in own else caps[name] for name in wanted]
    failed = [c for c in checks if not c.available]
    if failed:
        raise PreflightError(failed)
    return checks
