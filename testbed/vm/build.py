"""Build the access-point VM's kernel and initramfs from Debian packages, cached by their versions.

Nothing is installed on the host: every package is fetched with ``apt-get download`` into
``/var/cache/testbed/debs`` and unpacked with ``dpkg -x`` into a scratch folder. The result is one
folder per set of package versions::

    /var/cache/testbed/vm/<key>/
        vmlinuz          Debian's kernel (linux-image-<abi>-amd64, from linux-image-amd64)
        initrd.img       gzipped newc cpio: busybox-static, iproute2 (ip, tc + netem's
                         distribution tables), iperf3, ethtool, dropbear, iw, hostapd,
                         wpa_supplicant, wireless-regdb's regulatory.db, their shared libraries
                         (found with ldd), the kernel modules below with their dependencies
                         (modinfo -F depends, recursively; depmod -b), /init and busybox init
        manifest.json    package versions, kernel version, modules, sha256 of both files

``<key>`` is a hash of the package versions, the module list and :data:`BUILD_FORMAT`, so a new
Debian kernel or busybox gives a new image and an old one stays reproducible. Builds are atomic
(scratch folder, then rename) and serialised by a lock file.

The image's init mounts /proc, /sys, /dev, loads the modules in dependency order (``insmod``),
reads the run's overlay (``/etc/testbed/run.conf``, appended by :mod:`testbed.vm.boot` as a
second cpio archive), brings up the management NIC (found by its MAC address), starts dropbear on
it and prints ``TESTBED-READY`` on the serial console.

Host needs: ``apt-get`` (the host's Debian sources), ``dpkg``, ``kmod`` (modinfo, depmod) and
``chroot`` (coreutils) for a smoke test of every binary; root.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from testbed.vm.cpio import CpioWriter
from testbed.vm.packages import (
    BuildError,
    BuildProgress,
    OnStage,
    counted_stage,
    download,
    no_progress,
    one_step_stage,
    resolve_packages,
    run_tool,
    unpack,
)

log = logging.getLogger(__name__)

CACHE_ROOT = Path(os.environ.get("TESTBED_CACHE", "/var/cache/testbed"))
BUILD_FORMAT = 2


#: image path -> where the binary may sit in the unpacked packages (first match wins)
BINARIES = {
    "usr/sbin/ip": ("bin/ip", "sbin/ip", "usr/bin/ip", "usr/sbin/ip"),
    "usr/sbin/tc": ("sbin/tc", "usr/sbin/tc", "bin/tc"),
    "usr/bin/iperf3": ("usr/bin/iperf3",),
    "usr/sbin/ethtool": ("sbin/ethtool", "usr/sbin/ethtool"),
    "usr/sbin/dropbear": ("usr/sbin/dropbear",),
    "usr/bin/dropbearkey": ("usr/bin/dropbearkey",),
    "usr/sbin/iw": ("sbin/iw", "usr/sbin/iw"),
    "usr/sbin/hostapd": ("usr/sbin/hostapd",),
    "usr/sbin/wpa_supplicant": ("sbin/wpa_supplicant", "usr/sbin/wpa_supplicant"),
}
#: WiFi regulatory database (cfg80211 loads it as firmware when hostapd sets a country):
#: image name -> candidates in wireless-regdb (Debian ships the copy its kernels trust as -debian)
FIRMWARE = {
    "regulatory.db": ("regulatory.db-debian", "regulatory.db"),
    "regulatory.db.p7s": ("regulatory.db.p7s-debian", "regulatory.db.p7s"),
}
#: busybox applets NOT linked: the real tools are called by absolute path anyway, but a PATH
#: lookup must never find busybox's reduced versions
SKIP_APPLETS = {"ip", "tc", "ethtool", "ipaddr", "iplink", "iproute", "iprule", "iptunnel", "ipneigh"}

#: loaded at boot, in dependency order
BOOT_MODULES = (
    "virtio_pci", "virtio_net", "sch_netem", "sch_tbf", "sch_htb", "sch_ingress",
    "cls_u32", "cls_matchall", "act_mirred", "ifb",
)
#: copied (with dependencies) but loaded only on demand (WiFi mode, :mod:`testbed.vm.radio`):
#: the 802.11 stack, CCMP's ciphers (WPA2; aesni_intel where the vCPU has AES-NI, which TCG's
#: ``-cpu max`` emulates: cheaper than aes-generic), and mac80211_hwsim last (``radios=N``)
WIFI_MODULES = ("cfg80211", "mac80211", "ctr", "ccm", "cmac", "aesni_intel", "mac80211_hwsim")

MULTIARCH = "x86_64-linux-gnu"
LIBDIR = f"usr/lib/{MULTIARCH}"
INTERPRETER = "ld-linux-x86-64.so.2"


@dataclass(frozen=True)
class VmImage:
    """A built image: the folder and its manifest."""

    root: Path
    manifest: dict

    @property
    def kernel(self) -> Path:
        return self.root / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.root / "initrd.img"

    @property
    def key(self) -> str:
        return self.root.name

    def describe(self) -> dict:
        """What a run manifest records about the VM image."""
        m = self.manifest
        return {
            "key": self.key,
            "path": str(self.root),
            "kernel_version": m["kernel_version"],
            "packages": m["packages"],
            "sha256": m["sha256"],
        }


# --------------------------------------------------------------------------- helpers


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(versions: dict[str, str]) -> str:
    blob = json.dumps(
        {"format": BUILD_FORMAT, "packages": versions, "boot_modules": BOOT_MODULES,
         "wifi_modules": WIFI_MODULES, "firmware": sorted(FIRMWARE), "binaries": sorted(BINARIES)},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the image tree


def _norm(rel: str) -> str:
    """Merged-/usr location of a package path (bin/x -> usr/bin/x ...)."""
    rel = rel.lstrip("./").lstrip("/")
    for top in ("bin/", "sbin/", "lib/", "lib64/"):
        if rel.startswith(top):
            return "usr/" + rel
    return rel


def _copy(src: Path, dst: Path, mode: int | None = None) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    shutil.copyfile(src, dst)
    os.chmod(dst, mode if mode is not None else (os.stat(src).st_mode & 0o777))


def _ldd(binary: Path, staging: Path) -> list[tuple[str, str]]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(
        str(staging / d) for d in (f"lib/{MULTIARCH}", LIBDIR) if (staging / d).is_dir()
    )
    proc = run_tool(["ldd", str(binary)], timeout=30, env=env)
    if "not a dynamic executable" in proc.stdout + proc.stderr:
        return []
    if proc.returncode != 0:
        raise BuildError(f"ldd {binary} failed: {proc.stderr.strip()}")
    libs = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        m = re.match(r"^(\S+) => (\S+) \(0x", line)
        if m:
            libs.append((os.path.basename(m[1]), m[2]))
        elif "=> not found" in line:
            raise BuildError(f"{binary.name} needs {line.split()[0]}, which no unpacked package has")
    return libs


def _module_files(modroot: Path) -> dict[str, Path]:
    found = {}
    for p in modroot.rglob("*.ko*"):
        name = p.name.split(".ko")[0].replace("-", "_")
        found[name] = p
    return found


def _builtin_modules(modroot: Path) -> set[str]:
    f = modroot / "modules.builtin"
    if not f.exists():
        return set()
    return {Path(line.strip()).name.split(".ko")[0].replace("-", "_")
            for line in f.read_text().splitlines() if line.strip()}


def _module_closure(wanted: Iterable[str], files: dict[str, Path], builtin: set[str]) -> list[str]:
    """Modules in load order (dependencies first); built-in ones are left out."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in builtin or state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise BuildError(f"module dependency cycle at {name}")
        if name not in files:
            raise BuildError(f"the kernel package has no module {name} (and it is not built in)")
        state[name] = 1
        proc = run_tool(["modinfo", "-F", "depends", str(files[name])], timeout=30)
        if proc.returncode != 0:
            raise BuildError(f"modinfo {files[name]}: {proc.stderr.strip()}")
        for dep in filter(None, proc.stdout.strip().split(",")):
            visit(dep)
        state[name] = 2
        order.append(name)

    for w in wanted:
        visit(w)
    return order


INIT = r"""#!/bin/sh
# testbed access-point VM: PID 1 until busybox init takes over
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox mkdir -p /dev/pts /dev/shm /run /tmp /var/run /var/log
/bin/busybox mount -t devpts devpts /dev/pts
exec /sbin/init
"""

INITTAB = """::sysinit:/etc/init.d/rcS
::shutdown:/bin/sync
"""

RCS = r"""#!/bin/sh
# Load modules, configure the management NIC from the run's overlay, start dropbear.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "testbed: $*" > /dev/console; }
K=$(uname -r)
while read -r m; do
  [ -n "$m" ] && insmod "/lib/modules/$K/$m" 2>/dev/console
done < /etc/testbed/boot-modules
/usr/sbin/ip link set lo up
if [ ! -f /etc/testbed/run.conf ]; then say "no /etc/testbed/run.conf (no run overlay)"; exit 0; fi
. /etc/testbed/run.conf
dev=""
i=0
while [ -z "$dev" ] && [ $i -lt 100 ]; do
  for d in /sys/class/net/*; do
    [ "$(cat $d/address 2>/dev/null)" = "$MGMT_MAC" ] && dev=${d##*/}
  done
  [ -z "$dev" ] && { sleep 0.1; i=$((i+1)); }
done
if [ -z "$dev" ]; then say "no NIC with MAC $MGMT_MAC"; exit 0; fi
/usr/sbin/ip addr add "$MGMT_ADDR" dev "$dev"
/usr/sbin/ip link set "$dev" up
chmod 700 /root /root/.ssh
chmod 600 /root/.ssh/authorized_keys /etc/dropbear/dropbear_ed25519_host_key
/usr/sbin/dropbear -r /etc/dropbear/dropbear_ed25519_host_key -p "${MGMT_ADDR%/*}:22" -s -j -k \
  -E 2>>/var/log/dropbear.log
say "TESTBED-READY mgmt $dev $MGMT_ADDR kernel $K"
"""

ETC = {
    "etc/passwd": "root:*:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\n",
    "etc/shells": "/bin/sh\n",
    "etc/hosts": "127.0.0.1 localhost\n",
    "etc/inittab": INITTAB,
}


def _assemble(staging: Path, root: Path, kernel_version: str, progress: Callable[[str], None]) -> dict:
    """Fill ``root`` (the initramfs tree) from the unpacked packages in ``staging``."""
    for d in ("usr/bin", "usr/sbin", LIBDIR, "usr/lib64", "etc/init.d", "etc/testbed",
              "etc/dropbear", "root/.ssh", "proc", "sys", "dev", "tmp", "run", "var/log", "mnt"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for top in ("bin", "sbin", "lib", "lib64"):
        os.symlink(f"usr/{top}", root / top)
    os.symlink("/run", root / "var/run")
    os.chmod(root / "tmp", 0o1777)

    # busybox and its applet links
    bb = staging / "bin/busybox"
    _copy(bb, root / "usr/bin/busybox", 0o755)
    applets = run_tool([str(bb), "--list-full"], timeout=30).stdout.split()
    linked = 0
    for a in applets:
        if Path(a).name in SKIP_APPLETS:
            continue
        dst = root / _norm(a)
        if dst.exists() or dst.is_symlink():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("/usr/bin/busybox", dst)
        linked += 1

    # real tools and their libraries
    libs: dict[str, str] = {}
    for dst, candidates in BINARIES.items():
        src = next((staging / c for c in candidates if (staging / c).is_file()), None)
        if src is None:
            raise BuildError(f"no {dst} in the unpacked packages (looked at {candidates})")
        _copy(src, root / dst, 0o755)
        for soname, path in _ldd(src, staging):
            libs.setdefault(soname, path)
    from_host = []
    for soname, path in sorted(libs.items()):
        src = Path(path).resolve()
        if not str(src).startswith(str(staging)):
            from_host.append(soname)
        _copy(src, root / LIBDIR / soname, 0o755)
    interp = next((staging / d / INTERPRETER for d in (f"lib/{MULTIARCH}", LIBDIR)
                   if (staging / d / INTERPRETER).exists()), None)
    if interp is None:
        raise BuildError("libc6 was not unpacked (no dynamic loader)")
    _copy(interp.resolve(), root / LIBDIR / INTERPRETER, 0o755)
    os.symlink(f"../lib/{MULTIARCH}/{INTERPRETER}", root / "usr/lib64" / INTERPRETER)
    if from_host:
        log.warning("libraries taken from the host (no package unpacked them): %s", from_host)

    # netem's distribution tables
    tc_src = staging / LIBDIR / "tc"
    dists = sorted(tc_src.glob("*.dist"))
    if not dists:
        raise BuildError(f"no netem distribution tables in {tc_src}")
    for d in dists:
        _copy(d, root / LIBDIR / "tc" / d.name, 0o644)

    # kernel modules, with dependencies, in load order
    modsrc = staging / "lib/modules" / kernel_version
    files = _module_files(modsrc)
    builtin = _builtin_modules(modsrc)
    boot = _module_closure(BOOT_MODULES, files, builtin)
    extra = [m for m in _module_closure(WIFI_MODULES, files, builtin) if m not in boot]
    moddst = root / "usr/lib/modules" / kernel_version
    rel_of = {}
    for name in boot + extra:
        src = files[name]
        rel = src.relative_to(modsrc).as_posix()
        if rel.endswith(".ko.xz"):
            rel = rel[: -len(".xz")]
            (moddst / rel).parent.mkdir(parents=True, exist_ok=True)
            (moddst / rel).write_bytes(lzma.decompress(src.read_bytes()))
        elif rel.endswith(".ko.zst"):
            raise BuildError(f"zstd-compressed module {src.name}: not supported yet")
        else:
            _copy(src, moddst / rel, 0o644)
        rel_of[name] = rel
    for meta in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (modsrc / meta).exists():
            _copy(modsrc / meta, moddst / meta, 0o644)
    proc = run_tool(["depmod", "-b", str(root), kernel_version], timeout=60)
    if proc.returncode != 0:
        raise BuildError(f"depmod -b failed: {proc.stderr.strip()}")
    (root / "etc/testbed/boot-modules").write_text("".join(rel_of[m] + "\n" for m in boot))
    (root / "etc/testbed/wifi-modules").write_text("".join(rel_of[m] + "\n" for m in extra))

    for name, candidates in FIRMWARE.items():
        src = next((staging / d / c for c in candidates for d in ("lib/firmware", "usr/lib/firmware")
                    if (staging / d / c).is_file()), None)
        if src is None:
            raise BuildError(f"no {name} in the unpacked packages (wireless-regdb; looked for "
                             f"{candidates})")
        _copy(src, root / "usr/lib/firmware" / name, 0o644)

    # init, configuration
    for rel, text in ETC.items():
        (root / rel).write_text(text)
    (root / "init").write_text(INIT)
    os.chmod(root / "init", 0o755)
    (root / "etc/init.d/rcS").write_text(RCS)
    os.chmod(root / "etc/init.d/rcS", 0o755)
    os.chmod(root / "root", 0o700)
    os.chmod(root / "root/.ssh", 0o700)
    progress(f"image tree: {linked} busybox applets, {len(BINARIES)} tools, {len(libs)} libraries, "
             f"{len(boot)} boot modules + {len(extra)} on demand")
    return {"boot_modules": boot, "wifi_modules": extra, "libraries": sorted(libs),
            "libraries_from_host": from_host, "busybox_applets": linked,
            "firmware": sorted(FIRMWARE)}


def _smoke_test(root: Path, on_stage: OnStage = no_progress) -> dict[str, str]:
    """Run every tool inside the image tree (chroot): catches a missing library at build time."""
    checks = {
        "ip": ["/usr/sbin/ip", "-V"],
        "tc": ["/usr/sbin/tc", "-V"],
        "iperf3": ["/usr/bin/iperf3", "--version"],
        "ethtool": ["/usr/sbin/ethtool", "--version"],
        "dropbear": ["/usr/sbin/dropbear", "-V"],
        "iw": ["/usr/sbin/iw", "--version"],
        "hostapd": ["/usr/sbin/hostapd", "-v"],
        "wpa_supplicant": ["/usr/sbin/wpa_supplicant", "-v"],
        "busybox": ["/bin/sh", "-c", "busybox | head -1"],
    }
    out = {}
    urandom = root / "dev/urandom"  # hostapd and wpa_supplicant open it before printing -v
    os.mknod(urandom, 0o666 | stat.S_IFCHR, os.makedev(1, 9))
    try:
        for name in counted_stage("smoke test", checks, on_stage):
            proc = run_tool(["chroot", str(root), *checks[name]], timeout=30)
            text = (proc.stdout + proc.stderr).strip()
            if proc.returncode not in (0, 1) or "error while loading shared libraries" in text:
                raise BuildError(f"{name} does not run inside the image: {text[-500:]}")
            out[name] = text.splitlines()[0] if text else ""
    finally:
        urandom.unlink()
    return out


def _write_initrd(root: Path, dest: Path) -> None:
    with open(dest, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
        w = CpioWriter(gz)
        w.directory(".", 0o755)
        w.directory("dev", 0o755)
        w.char_device("dev/console", 5, 1, 0o600)
        w.char_device("dev/null", 1, 3, 0o666)
        seen_dev = True
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            for e in sorted(dirnames + filenames):
                rel = os.path.normpath(os.path.join(rel_dir, e))
                if rel == "dev" and seen_dev:
                    continue
                full = os.path.join(dirpath, e)
                st = os.lstat(full)
                if os.path.islink(full):
                    w.symlink(rel, os.readlink(full))
                elif os.path.isdir(full):
                    w.directory(rel, st.st_mode & 0o7777)
                else:
                    w.file(rel, Path(full).read_bytes(), st.st_mode & 0o7777)
        w.trailer()


# --------------------------------------------------------------------------- entry points


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_image(folder: Path) -> VmImage | None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not (folder / "vmlinuz").is_file() or not (folder / "initrd.img").is_file():
        return None
    return VmImage(folder, manifest)


def build_image(
    cache_root: Path = CACHE_ROOT,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    verify: bool = False,
    on_stage: OnStage | None = None,
) -> VmImage:
    """Build (or find in the cache) the image for the current candidate package versions.

    ``verify``: re-check the cached files' sha256 against the manifest. ``progress`` gets text
    messages (default: logged); ``on_stage`` gets a :class:`BuildProgress` as each stage starts
    and as it advances, for a progress display.
    """
    say = progress or (lambda msg: log.info("%s", msg))
    report = on_stage or no_progress
    if os.geteuid() != 0:
        raise BuildError("building the VM image needs root (dpkg -x ownership, chroot smoke test)")
    with one_step_stage("resolve", report):
        versions = resolve_packages()
    key = cache_key(versions)
    vm_dir = cache_root / "vm"
    dest = vm_dir / key
    with _lock(vm_dir / ".lock"):
        image = None if force else load_image(dest)
        if image is not None:
            if verify:
                for name, digest in image.manifest["sha256"].items():
                    if _sha256(dest / name) != digest:
                        raise BuildError(f"{dest / name} does not match its manifest sha256")
            say(f"VM image {key} is cached ({dest})")
            return image
        t0 = time.monotonic()
        debs = download(versions, cache_root / "debs", say, report)
        kernel_pkg = next(n for n in versions if n.startswith("linux-image-"))
        kernel_version = kernel_pkg[len("linux-image-"):]
        scratch = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=vm_dir))
        try:
            staging, root, out = scratch / "staging", scratch / "root", scratch / "out"
            for p in (staging, root, out):
                p.mkdir()
            say(f"unpacking {len(debs)} packages")
            unpack(debs, staging, report)
            vmlinuz = staging / "boot" / f"vmlinuz-{kernel_version}"
            if not vmlinuz.is_file():
                raise BuildError(f"{kernel_pkg} has no boot/vmlinuz-{kernel_version}")
            say(f"assembling the initramfs (kernel {kernel_version})")
            with one_step_stage("assemble", report):
                content = _assemble(staging, root, kernel_version, say)
            tools = _smoke_test(root, report)
            shutil.copyfile(vmlinuz, out / "vmlinuz")
            say("writing initrd.img")
            with one_step_stage("initrd", report):
                _write_initrd(root, out / "initrd.img")
            manifest = {
                "key": key,
                "format": BUILD_FORMAT,
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_s": round(time.monotonic() - t0, 1),
                "kernel_version": kernel_version,
                "packages": versions,
                "tools": tools,
                **content,
                "sha256": {f: _sha256(out / f) for f in ("vmlinuz", "initrd.img")},
                "bytes": {f: (out / f).stat().st_size for f in ("vmlinuz", "initrd.img")},
            }
            (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            if dest.exists():
                shutil.rmtree(dest)
            os.rename(out, dest)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        say(f"VM image {key} built in {time.monotonic() - t0:.0f}s: {dest} "
            f"(initrd {manifest['bytes']['initrd.img'] / 1e6:.1f} MB)")
        return VmImage(dest, manifest)
