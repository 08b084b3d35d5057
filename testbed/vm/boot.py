"""Boot the access-point VM: taps, QEMU, a pinned SSH host key, and a teardown that always runs.

One :class:`AccessPointVm` is one QEMU process (``-accel tcg -cpu max -smp 1 -m 512``) with:

* one virtio NIC per side (:class:`VmNic`, e.g. the stations' side ``md`` and the ES side
  ``es``), each on a tap ``tb<run>-v<tag>`` made with pyroute2 and moved into that side's network
  namespace *after* QEMU attached to it (no bridge); the namespace end gets the host's address
  and a default route through the VM;
* a management NIC on tap ``tb<run>-v0`` that stays in the root namespace: a /30 out of
  198.19.254.0/24 (root side ``.4k+1``, VM ``.4k+2``; ``k`` from the run id, the next free /30
  if any root-namespace address already covers it). dropbear listens only there, so SSH never
  crosses the shaped path. (The emulated lab's management /24s come from 198.19.128.0/17 and
  skip any /24 the root namespace already has an address in, so a lab run started next to a VM
  does not take this /24; a VM started next to a lab run takes a /30 no root address overlaps.)

SSH: the run's :class:`~testbed.hosts.keys.RunKeys` makes the client key and an ed25519 host key
for ``ap``; the host key is written in dropbear's own format (``string "ssh-ed25519" ||
string priv32||pub32``) into a small per-run cpio archive appended to the cached initramfs,
together with ``authorized_keys`` and the management address. The client pins that key through
the run's ``known_hosts`` (paramiko ``RejectPolicy``): a VM presenting any other key is refused.

Bookkeeping for ``testbed clean`` (:func:`clean_vms`): ``/run/testbed/vm-<run>.pid`` (QEMU's
``-pidfile``) and ``/run/testbed/vm-<run>.json`` (QEMU pid + start time, owner pid + start time,
taps and namespaces). A VM whose owner is gone is stopped (after checking that the pid still is
that QEMU), its taps deleted and both files removed.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from pyroute2 import IPRoute

from testbed.hosts.keys import RunKeys
from testbed.hosts.remote import Host, HostAccess, HostError
from testbed.lab.sshd import wait_for_ssh
from testbed.lab import management, names, netns, procs, runs
from testbed.vm.build import VmImage
from testbed.vm.cpio import CpioWriter

log = logging.getLogger(__name__)

RUN_DIR = Path(runs.RUN_RECORD_DIR)
MGMT_NET = ipaddress.ip_network("198.19.254.0/24")
MGMT_TAG = "v0"
VM_HOST = "ap"
QEMU = "qemu-system-x86_64"
QEMU_TERM_GRACE_S = 5.0
"""``testbed clean``: how long a leftover QEMU gets to exit on SIGTERM before SIGKILL."""


class VmError(RuntimeError):
    pass


@dataclass(frozen=True)
class VmNic:
    """One data-path NIC of the VM, on a tap moved into ``namespace``.

    ``host_address``/``vm_address``: interface addresses with prefix (``198.18.1.2/24``);
    ``default_route``: add ``default via <vm address>`` in the namespace.
    """

    tag: str
    namespace: str | None
    host_address: str | None = None
    vm_address: str | None = None
    default_route: bool = True

    def tap(self, run_id: str) -> str:
        return names.interface_name(run_id, "v" + self.tag)


@dataclass
class GuestNic:
    tag: str
    mac: str
    tap: str
    namespace: str | None
    guest_ifname: str | None = None


def pid_file(run_id: str) -> Path:
    return RUN_DIR / f"vm-{names.check_run_id(run_id)}.pid"


def record_file(run_id: str) -> Path:
    return RUN_DIR / f"vm-{names.check_run_id(run_id)}.json"


def _mac(run_id: str, index: int) -> str:
    r = bytes.fromhex(run_id)
    return "52:54:%02x:%02x:%02x:%02x" % (r[0], r[1], r[2], index)


def pick_management(run_id: str) -> tuple[str, str]:
    """``(root side, vm side)`` addresses of a free /30 in 198.19.254.0/24 (with prefix)."""
    net = management.free_subnet(MGMT_NET, 30, run_id, "the VM's management link")
    hosts = list(net.hosts())
    return f"{hosts[0]}/30", f"{hosts[1]}/30"


def dropbear_ed25519_key(openssh_private: Path) -> tuple[bytes, str]:
    """(dropbear-format private key, ``ssh-ed25519 base64`` public line) of an OpenSSH key file."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_private_key(Path(openssh_private).read_bytes(), password=None)
    raw = serialization.Encoding.Raw
    seed = key.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pub = key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)

    def string(b: bytes) -> bytes:
        return len(b).to_bytes(4, "big") + b

    blob = string(b"ssh-ed25519") + string(seed + pub)
    line = "ssh-ed25519 " + base64.b64encode(string(b"ssh-ed25519") + string(pub)).decode()
    return blob, line


def _is_our_qemu(pid: int, run_id: str, starttime: int | None = None) -> bool:
    """``pid`` is this run's QEMU: its command line names the run's pid file, or (a QEMU whose
    main thread has exited shows an empty command line) it started when the record says."""
    st = procs.proc_stat(pid)
    if st is None:
        return False
    if starttime is not None and st[3] == starttime:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"qemu-system" in c for c in cmdline[:1]) and str(pid_file(run_id)).encode() in cmdline


@dataclass
class AccessPointVm:
    """The AP as a VM. Use as a context manager: everything is undone on exit, also on error."""

    image: VmImage
    run_id: str
    nics: Sequence[VmNic]
    workdir: Path
    boot_timeout_s: float = 180.0
    memory_mb: int = 512
    accel: str = "tcg"
    """``tcg`` (works everywhere, slow) or ``kvm`` (``-cpu host``; only where KVM works)."""
    progress: Callable[[str], None] | None = None
    keys: RunKeys | None = None
    host: Host | None = None
    management: tuple[str, str] | None = None
    guest_nics: dict[str, GuestNic] = field(default_factory=dict)
    boot_s: float | None = None
    _proc: subprocess.Popen | None = None
    _taps: list[tuple[str, str | None]] = field(default_factory=list)

    # ---- paths -------------------------------------------------------------------------------
    @property
    def serial_log(self) -> Path:
        return self.workdir / "serial.log"

    @property
    def qemu_log(self) -> Path:
        return self.workdir / "qemu.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _say(self, msg: str) -> None:
        (self.progress or (lambda m: log.info("%s", m)))(msg)

    # ---- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> "AccessPointVm":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        names.check_run_id(self.run_id)
        if shutil.which(QEMU) is None:
            raise VmError(f"{QEMU} not found: install qemu-system-x86 (apt-get install qemu-system-x86)")
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        root_mgmt, vm_mgmt = self.management = pick_management(self.run_id)
        vm_ip = vm_mgmt.split("/")[0]
        self.keys = RunKeys.create(self.workdir / "keys", [(VM_HOST, vm_ip, 22)],
                                   comment_prefix=f"testbed-{self.run_id}")
        hostkey, hostkey_line = dropbear_ed25519_key(self.keys.host_key_for(VM_HOST).private)
        if hostkey_line != self.keys.host_key_for(VM_HOST).openssh_public:
            raise VmError("dropbear host key conversion gives a different public key")
        # taps: management first (eth index 0), then the sides
        all_nics = [(MGMT_TAG, None)] + [(n.tag, n.namespace) for n in self.nics]
        for i, (tag, ns) in enumerate(all_nics):
            tap = names.interface_name(self.run_id, "v" + tag if tag != MGMT_TAG else MGMT_TAG)
            self.guest_nics[tag] = GuestNic(tag, _mac(self.run_id, i), tap, ns)
        initrd = self._write_initrd(hostkey, vm_mgmt)
        self._write_record()
        with IPRoute() as ipr:
            for g in self.guest_nics.values():
                ipr.link("add", ifname=g.tap, kind="tuntap", mode="tap",
                         ifr={"no_pi": 1, "one_queue": 0, "vnet_hdr": 1, "multi_queue": 0})
                self._taps.append((g.tap, None))
        self._write_record()
        argv = self._qemu_argv(initrd)
        (self.workdir / "qemu.argv").write_text(" ".join(argv) + "\n")
        self._say(f"booting the AP VM (run {self.run_id}, {self.accel.upper()}, 1 vCPU)")
        with open(self.qemu_log, "wb") as qlog:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=qlog, stderr=qlog,
                                          start_new_session=True)
        self._write_record()
        self._wait_attached()
        self._place_taps(root_mgmt)
        self._wait_ssh(vm_ip)
        self.boot_s = time.monotonic() - t0
        self._configure_guest()
        self._say(f"AP VM up in {self.boot_s:.1f}s (ssh root@{vm_ip}, pinned "
                  f"{self.keys.host_key_for(VM_HOST).fingerprint})")

    def _write_initrd(self, hostkey: bytes, vm_mgmt: str) -> Path:
        """The cached image + a per-run cpio (keys, management address), concatenated."""
        import gzip
        import io

        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
            w = CpioWriter(gz)
            for d in ("etc", "etc/testbed", "etc/dropbear", "root", "root/.ssh"):
                w.directory(d, 0o700 if d.startswith("root") else 0o755)
            conf = f"MGMT_MAC={self.guest_nics[MGMT_TAG].mac}\nMGMT_ADDR={vm_mgmt}\nRUN_ID={self.run_id}\n"
            w.file("etc/testbed/run.conf", conf.encode(), 0o644)
            w.file("etc/dropbear/dropbear_ed25519_host_key", hostkey, 0o600)
            w.file("root/.ssh/authorized_keys", self.keys.authorized_keys.read_bytes(), 0o600)
            w.trailer()
        dest = self.workdir / "initrd-run.img"
        base = self.image.initrd.read_bytes()
        with open(dest, "wb") as fh:
            fh.write(base)
            fh.write(b"\0" * ((4 - len(base) % 4) % 4))
            fh.write(buf.getvalue())
        os.chmod(dest, 0o600)
        return dest

    def _qemu_argv(self, initrd: Path) -> list[str]:
        argv = [
            QEMU, "-name", f"testbed-ap-{self.run_id}", "-accel", self.accel,
            "-cpu", "host" if self.accel == "kvm" else "max",
            "-smp", "1", "-m", str(self.memory_mb), "-nodefaults", "-no-user-config",
            "-display", "none", "-no-reboot",
            "-kernel", str(self.image.kernel), "-initrd", str(initrd),
            "-append", "console=ttyS0 quiet panic=-1",
            "-chardev", f"file,id=serial0,path={self.serial_log}", "-serial", "chardev:serial0",
            "-pidfile", str(pid_file(self.run_id)),
        ]
        for i, g in enumerate(self.guest_nics.values()):
            argv += ["-netdev", f"tap,id=n{i},ifname={g.tap},script=no,downscript=no,vhost=off",
                     "-device", f"virtio-net-pci,netdev=n{i},mac={g.mac},addr={3 + i:#x}"]
        return argv

    def _check_alive(self, what: str) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise VmError(f"QEMU exited (rc {self._proc.returncode}) while {what}: "
                          f"{self._tail(self.qemu_log)} | serial: {self._tail(self.serial_log)}")

    @staticmethod
    def _tail(path: Path, n: int = 1500) -> str:
        try:
            return path.read_text(errors="replace")[-n:].strip()
        except OSError:
            return ""

    def _wait_attached(self, timeout: float = 20.0) -> None:
        """Until QEMU holds every tap open (tun fdinfo ``iff:`` lines name them)."""
        want = {g.tap for g in self.guest_nics.values()}
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive("attaching to its taps")
            held = set()
            fdinfo = Path(f"/proc/{self.pid}/fdinfo")
            try:
                for f in fdinfo.iterdir():
                    try:
                        for line in f.read_text().splitlines():
                            if line.startswith("iff:"):
                                held.add(line.split()[1])
                    except OSError:
                        pass
            except OSError:
                pass
            if want <= held:
                return
            if time.monotonic() > deadline:
                raise VmError(f"QEMU did not attach to {sorted(want - held)} within {timeout:g}s")
            time.sleep(0.05)

    def _place_taps(self, root_mgmt: str) -> None:
        with IPRoute() as ipr:
            m = self.guest_nics[MGMT_TAG]
            idx = ipr.link_lookup(ifname=m.tap)[0]
            ip, plen = root_mgmt.split("/")
            ipr.addr("add", index=idx, address=ip, prefixlen=int(plen))
            ipr.link("set", index=idx, state="up")
            for nic in self.nics:
                g = self.guest_nics[nic.tag]
                if nic.namespace is None:
                    continue
                idx = ipr.link_lookup(ifname=g.tap)[0]
                ipr.link("set", index=idx, net_ns_fd=netns.netns_path(nic.namespace))
                self._taps = [(t, nic.namespace if t == g.tap else n) for t, n in self._taps]
        self._write_record()
        for nic in self.nics:
            g = self.guest_nics[nic.tag]
            ipr = IPRoute(netns=nic.namespace, flags=0) if nic.namespace else IPRoute()
            with ipr:
                idx = ipr.link_lookup(ifname=g.tap)[0]
                if nic.host_address:
                    ip, plen = nic.host_address.split("/")
                    ipr.addr("add", index=idx, address=ip, prefixlen=int(plen))
                ipr.link("set", index=idx, state="up")
                if nic.default_route and nic.vm_address and nic.namespace:
                    ipr.route("replace", dst="default", gateway=nic.vm_address.split("/")[0])
            # the sender's side of the shaped path: no TSO/GSO chunks (see the notes)
            argv = ["ethtool", "-K", g.tap, "tso", "off", "gso", "off", "gro", "off"]
            try:
                if nic.namespace:
                    netns.run_in_namespace(nic.namespace, argv, timeout=10)
                else:
                    subprocess.run(argv, capture_output=True, timeout=10)
            except FileNotFoundError:
                log.warning("ethtool not installed on the host: offloads stay on for %s", g.tap)

    def _wait_ssh(self, vm_ip: str) -> None:
        try:
            wait_for_ssh(vm_ip, 22, self.boot_timeout_s,
                         still_starting=lambda: self._check_alive("booting"), poll_s=0.25)
        except TimeoutError:
            raise VmError(f"the VM's sshd did not answer on {vm_ip}:22 within "
                          f"{self.boot_timeout_s:g}s; serial console: {self._tail(self.serial_log)}"
                          ) from None
        access = HostAccess.from_run_keys(self.keys, VM_HOST)
        self.host = Host(access, connect_timeout=20).connect()

    def run(self, argv: Sequence[str] | str, timeout: float = 30, check: bool = True):
        """Run a command in the VM over SSH (bounded)."""
        if self.host is None:
            raise VmError("the VM is not up")
        return self.host.run(argv, timeout=timeout, check=check)

    def _configure_guest(self) -> None:
        """Map MACs to guest interface names, set the side addresses, forward between them."""
        out = self.run("for d in /sys/class/net/*; do echo ${d##*/} $(cat $d/address); done").stdout
        by_mac = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2:
                by_mac[parts[1].lower()] = parts[0]
        for g in self.guest_nics.values():
            g.guest_ifname = by_mac.get(g.mac)
            if g.guest_ifname is None:
                raise VmError(f"no guest NIC with MAC {g.mac} (found {by_mac})")
        script = ["set -e", "echo 1 > /proc/sys/net/ipv4/ip_forward"]
        for nic in self.nics:
            dev = self.guest_nics[nic.tag].guest_ifname
            if nic.vm_address:
                script.append(f"/usr/sbin/ip addr add {nic.vm_address} dev {dev}")
            script.append(f"/usr/sbin/ip link set {dev} up")
        self.run("\n".join(script), timeout=30)

    def guest_ifname(self, tag: str) -> str:
        name = self.guest_nics[tag].guest_ifname
        if name is None:
            raise VmError(f"guest NIC {tag} not mapped yet")
        return name

    def describe(self) -> dict[str, Any]:
        """What a run manifest records about the VM."""
        return {
            "backend": "vm",
            "accel": self.accel,
            "smp": 1,
            "memory_mb": self.memory_mb,
            "image": self.image.describe(),
            "boot_s": None if self.boot_s is None else round(self.boot_s, 2),
            "management": {"root": self.management[0] if self.management else None,
                           "vm": self.management[1] if self.management else None},
            "nics": {t: {"tap": g.tap, "mac": g.mac, "namespace": g.namespace,
                         "guest_ifname": g.guest_ifname} for t, g in self.guest_nics.items()},
            "ssh": self.keys.describe() if self.keys else None,
        }

    # ---- teardown ------------------------------------------------------------------------------
    def _write_record(self) -> None:
        me = os.getpid()
        rec = {
            "run_id": self.run_id,
            "owner_pid": me,
            "owner_starttime": procs.starttime(me),
            "qemu_pid": self.pid,
            "qemu_starttime": procs.starttime(self.pid) if self.pid else None,
            "taps": [[t, ns] for t, ns in self._taps],
            "workdir": str(self.workdir),
            "created": time.time(),
        }
        path = record_file(self.run_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec))
        os.replace(tmp, path)

    def stop(self) -> None:
        """Power the VM off, delete its taps and records. Idempotent; never raises."""
        if self.host is not None:
            try:
                # busybox: poweroff -f calls reboot(POWER_OFF) at once; the connection drops
                self.host.run("sync; poweroff -f", timeout=2, check=False, kill_on_timeout=False)
            except (HostError, OSError, EOFError, Exception) as e:  # the connection is cut
                log.debug("poweroff: %s", e)
            self.host.close()
            self.host = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=5)
            self._proc = None
        for tap, ns in self._taps:
            if ns and not netns.namespace_exists(ns):
                continue
            netns.delete_link(ns, tap)
        self._taps = []
        for p in (pid_file(self.run_id), record_file(self.run_id)):
            try:
                p.unlink()
            except (FileNotFoundError, ValueError):
                pass


# --------------------------------------------------------------------------- leftovers


def leftover_vms() -> list[str]:
    """Run ids with a VM pid file or record in /run/testbed."""
    found = set()
    try:
        entries = os.listdir(RUN_DIR)
    except OSError:
        return []
    for e in entries:
        for suffix in (".pid", ".json"):
            if e.startswith("vm-") and e.endswith(suffix):
                run = e[3:-len(suffix)]
                if names.RUN_ID_RE.match(run):
                    found.add(run)
    return sorted(found)


def _read_record(run_id: str) -> dict[str, Any]:
    try:
        return json.loads(record_file(run_id).read_text())
    except (OSError, ValueError):
        return {}


def _owner_alive(rec: dict[str, Any]) -> bool:
    pid = rec.get("owner_pid")
    return bool(pid) and procs.starttime(int(pid)) == rec.get("owner_starttime")


def stop_leftover(run_id: str, *, dry_run: bool = False) -> list[str]:
    """Stop run ``run_id``'s QEMU (verified by its command line or recorded start time), wait
    until it has exited (bounded: :func:`testbed.lab.procs.stop_pids`), delete its taps and
    records."""
    done: list[str] = []
    rec = _read_record(run_id)
    pids = set()
    try:
        pids.add(int(pid_file(run_id).read_text().strip()))
    except (OSError, ValueError):
        pass
    if rec.get("qemu_pid"):
        pids.add(int(rec["qemu_pid"]))
    ours = [pid for pid in sorted(pids) if _is_our_qemu(pid, run_id, rec.get("qemu_starttime"))]
    for pid in ours:
        done.append(f"stop VM of run {run_id} (qemu pid {pid})")
    if ours and not dry_run:
        stopped = procs.stop_pids(ours, term_grace_s=QEMU_TERM_GRACE_S)
        done += [f"qemu pid {pid} STILL RUNNING" for pid, line in zip(ours, stopped)
                 if line.endswith("STILL RUNNING")]
    for tap, ns in rec.get("taps", []):
        if ns and not netns.namespace_exists(ns):
            continue
        if not dry_run:
            if netns.delete_link(ns, tap):
                done.append(f"delete tap {tap} in {ns or 'root namespace'}")
        else:
            done.append(f"delete tap {tap} in {ns or 'root namespace'} (if present)")
    for p in (pid_file(run_id), record_file(run_id)):
        if p.exists():
            done.append(f"remove {p}")
            if not dry_run:
                p.unlink(missing_ok=True)
    return done


def clean_vms(dry_run: bool = False, *, run_id: str | None = None, include_live: bool = False) -> list[str]:
    """VMs killed runs left: stop each (pid file), delete its taps; live owners are skipped."""
    done: list[str] = []
    for run in leftover_vms():
        if run_id is not None and run != run_id:
            continue
        if run_id is None and not include_live and _owner_alive(_read_record(run)):
            log.info("skip VM of run %s: its owner is alive", run)
            continue
        done += stop_leftover(run, dry_run=dry_run)
    return done
