"""What this machine can do for the emulated lab, detected at run time (``testbed doctor``).

Network features are probed for real, in a throwaway namespace ``tb-<runid>-probe`` holding a
veth pair and an ifb device: each qdisc/filter is added and deleted, then the namespace is
removed (it is registered like a lab run, so a killed probe is found by ``testbed clean``).
Nothing outside that namespace changes, except that adding a qdisc may make the kernel autoload
its module (as ``tc`` would).

Each result is a ``Capability(name, available, detail, fix)``; ``fix`` says what to install or
which kernel option is missing. ``detect()`` returns them all as ``Capabilities``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import platform
import shutil
from dataclasses import asdict, dataclass
from typing import Any

from pyroute2 import IPRoute

from testbed.lab import cleanup, cpu, host_shaping, names, netns, runs

KVM_GET_API_VERSION = 0xAE00


@dataclass(frozen=True)
class Capability:
    name: str
    available: bool
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Capabilities:
    items: tuple[Capability, ...]

    def get(self, name: str) -> Capability | None:
        for c in self.items:
            if c.name == name:
                return c
        return None

    def has(self, name: str) -> bool:
        c = self.get(name)
        return bool(c and c.available)

    def __getitem__(self, name: str) -> Capability:
        c = self.get(name)
        if c is None:
            raise KeyError(name)
        return c

    def __iter__(self):
        return iter(self.items)

    def summary(self) -> dict[str, bool]:
        return {c.name: c.available for c in self.items}


KERNEL_FIX = {
    "netns": "kernel: CONFIG_NET_NS=y",
    "veth": "kernel: CONFIG_VETH (modprobe veth)",
    "netem": (
        "kernel: CONFIG_NET_SCH_NETEM=m (modprobe sch_netem; Ubuntu: apt-get install "
        "linux-modules-extra-$(uname -r)); or run the AP as a QEMU VM with a distribution "
        "kernel (docs/link-emulation-without-netem.md). Without it: tbf/htb rate shaping only, no "
        "delay/jitter/loss"
    ),
    "tbf": "kernel: CONFIG_NET_SCH_TBF (modprobe sch_tbf)",
    "htb": "kernel: CONFIG_NET_SCH_HTB (modprobe sch_htb)",
    "pfifo": "kernel: CONFIG_NET_SCH_FIFO",
    "clsact": "kernel: CONFIG_NET_SCH_INGRESS (provides ingress and clsact)",
    "ifb": "kernel: CONFIG_IFB (modprobe ifb)",
    "u32": "kernel: CONFIG_NET_CLS_U32 (modprobe cls_u32)",
    "mirred": "kernel: CONFIG_NET_ACT_MIRRED (modprobe act_mirred)",
}


def _missing(name: str, detail: str) -> Capability:
    return Capability(name, False, detail, KERNEL_FIX[name])


def _err(e: BaseException) -> str:
    code = getattr(e, "code", None) or getattr(e, "errno", None)
    msg = e.args[1] if len(getattr(e, "args", ())) > 1 else str(e)
    return f"{errno.errorcode.get(code, code)}: {msg}" if code else repr(e)


def _binary(name: str, path: str | None, fix: str) -> Capability:
    found = path if path and os.access(path, os.X_OK) else shutil.which(name)
    if found:
        return Capability(name, True, found)
    where = f" (looked at {path} and PATH)" if path else " in PATH"
    return Capability(name, False, f"{name} not found{where}", fix)


def _kvm() -> Capability:
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    virt = sorted(flags & {"vmx", "svm"})
    if not os.path.exists("/dev/kvm"):
        return Capability(
            "kvm", False, "no /dev/kvm" + ("" if virt else "; cpu has no vmx/svm flag"),
            "enable virtualisation (VT-x/AMD-V, nested virtualisation in a VM) and load kvm_intel/"
            "kvm_amd; QEMU falls back to TCG (slow)",
        )
    if not virt:
        return Capability(
            "kvm", False, "/dev/kvm exists but the cpu has no vmx/svm flag: KVM cannot run "
            "guests here (QEMU must use -accel tcg)",
            "a host with hardware virtualisation (or nested virtualisation enabled)",
        )
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        try:
            api = fcntl.ioctl(fd, KVM_GET_API_VERSION)
        finally:
            os.close(fd)
        return Capability("kvm", True, f"/dev/kvm usable (API {api}), cpu flags {','.join(virt)}")
    except OSError as e:
        return Capability("kvm", False, f"/dev/kvm not usable: {_err(e)}",
                          "add the user to group kvm or run as root")


def _probe_network() -> list[Capability]:
    """Probe namespaces/veth/qdiscs/ifb/u32+mirred in a throwaway namespace."""
    out: list[Capability] = []
    if os.geteuid() != 0:
        for n in ("netns", "veth", "netem", "tbf", "htb", "pfifo", "clsact", "ifb", "u32",
                  "mirred", "offloads"):
            out.append(Capability(n, False, "not probed: needs root", "run as root"))
        return out
    run_id = names.new_run_id()
    ns = names.namespace_name(run_id, "probe")
    va, vb = names.interface_name(run_id, "pa"), names.interface_name(run_id, "pb")
    ifb = names.ifb_name(run_id, "p")
    runs.register_run(run_id, kind="probe")
    owner = os.getpid()
    try:
        try:
            netns.create_namespace(ns)
            out.append(Capability("netns", True, "network namespaces (created and removed one)"))
        except Exception as e:
            out.append(_missing("netns", f"cannot create a namespace: {_err(e)}"))
            return out
        with IPRoute(netns=ns, flags=0, ext_ack=True) as ipr:
            try:
                ipr.link("add", ifname=va, kind="veth", peer=vb)
                index = ipr.link_lookup(ifname=va)[0]
                ipr.link("set", index=index, state="up")
                out.append(Capability("veth", True, "veth pairs"))
            except Exception as e:
                out.append(_missing("veth", f"cannot create veth: {_err(e)}"))
                return out

            def try_qdisc(name: str, add) -> None:
                try:
                    add()
                except Exception as e:
                    detail = f"adding a {name} qdisc failed: {_err(e)}"
                    if getattr(e, "code", None) == errno.ENOENT:
                        detail += f" (no sch_{name} in this kernel {platform.release()})"
                    out.append(Capability(name, False, detail, KERNEL_FIX[name]))
                    return
                try:
                    for m in ipr.tc("dump", index=index):
                        if m["parent"] == host_shaping.TC_H_ROOT:
                            ipr.tc("del", index=index, handle=m["handle"], parent=host_shaping.TC_H_ROOT)
                except Exception:
                    pass
                out.append(Capability(name, True, f"{name} qdisc added and removed"))

            try_qdisc("netem", lambda: host_shaping._nlm_add_qdisc(
                ipr, "netem", index, 0x10000, host_shaping.TC_H_ROOT,
                host_shaping._netem_options(rate_Bps=3_000_000, overhead=0, delay_ms=1,
                                       jitter_ms=0, loss_pct=0, limit_packets=100)))
            try_qdisc("tbf", lambda: host_shaping._nlm_add_qdisc(
                ipr, "tbf", index, 0x10000, host_shaping.TC_H_ROOT,
                host_shaping._tbf_options(3_000_000, 3028, 151400, 0)))
            try_qdisc("htb", lambda: ipr.tc("add", "htb", index, 0x10000, default=0x10))
            try_qdisc("pfifo", lambda: ipr.tc("add", "pfifo", index, 0x10000, limit=10))
            # clsact + ifb + u32 + mirred
            try:
                ipr.tc("add", "clsact", index)
                out.append(Capability("clsact", True, "clsact qdisc (ingress/egress filter hooks)"))
                clsact = True
            except Exception as e:
                out.append(_missing("clsact", f"adding clsact failed: {_err(e)}"))
                clsact = False
            try:
                ipr.link("add", ifname=ifb, kind="ifb")
                ifb_index = ipr.link_lookup(ifname=ifb)[0]
                out.append(Capability("ifb", True, "ifb devices"))
            except Exception as e:
                out.append(_missing("ifb", f"cannot create ifb: {_err(e)}"))
                ifb_index = None
            if clsact and ifb_index:
                try:
                    ipr.tc(
                        "add-filter", "u32", index, parent=host_shaping.TC_H_CLSACT_INGRESS, prio=1,
                        protocol=host_shaping.ETH_P_ALL, target=0x10001, keys=["0x0/0x0+0"],
                        action={"kind": "mirred", "direction": "egress", "action": "redirect",
                                "ifindex": ifb_index},
                    )
                    out.append(Capability("u32", True, "u32 filters"))
                    out.append(Capability("mirred", True, "mirred redirect to ifb"))
                except Exception as e:
                    d = f"u32 match-all + mirred redirect failed: {_err(e)}"
                    # tell which one is missing
                    try:
                        ipr.tc("add-filter", "u32", index, parent=host_shaping.TC_H_CLSACT_INGRESS,
                               prio=2, protocol=host_shaping.ETH_P_ALL, target=0x10001,
                               keys=["0x0/0x0+0"])
                        out.append(Capability("u32", True, "u32 filters"))
                        out.append(Capability("mirred", False, d, KERNEL_FIX["mirred"]))
                    except Exception:
                        out.append(Capability("u32", False, d, KERNEL_FIX["u32"]))
                        out.append(_missing("mirred", "not probed (u32 missing)"))
            else:
                for n in ("u32", "mirred"):
                    out.append(_missing(n, "not probed (needs clsact and ifb)"))
        # segmentation offloads, through pyroute2's ethtool ioctl inside the namespace
        try:
            from pyroute2.ethtool.ioctl import IoctlEthtool

            with netns.in_namespace(ns):
                eth = IoctlEthtool(va)
                try:
                    feats = eth.get_features()
                    feats["tx-tcp-segmentation"] = False
                    eth.set_features(feats)
                    ok = not eth.get_features().is_active("tx-tcp-segmentation")
                finally:
                    eth.close()
            out.append(Capability(
                "offloads", ok,
                "TSO/GSO/GRO switchable via pyroute2.ethtool (ioctl)" if ok else "TSO stayed on",
                "" if ok else "install ethtool (the lab then runs `ethtool -K` in the namespace)",
            ))
        except Exception as e:
            have = shutil.which("ethtool")
            out.append(Capability(
                "offloads", bool(have),
                f"pyroute2 ethtool ioctl failed ({_err(e)}); "
                + ("the ethtool binary will be used" if have else "no ethtool binary either"),
                "" if have else "apt-get install ethtool",
            ))
    finally:
        if os.getpid() == owner:  # never from a forked helper unwinding this stack
            cleanup.remove_run(run_id)
    return out


def detect(*, probe_network: bool = True) -> Capabilities:
    """All capabilities; network ones probed in a throwaway namespace (needs root)."""
    items: list[Capability] = []
    root = os.geteuid() == 0
    items.append(Capability("root", root, f"euid {os.geteuid()}",
                            "" if root else "run as root (sudo)"))
    if probe_network:
        items += _probe_network()
    sup = cpu.detect_cpu_support()
    items.append(Capability(
        "cgroup2_cpu", sup.cgroup2_cpu,
        f"cgroup2 at {sup.cgroup2_root}, cpu controller "
        + ("available" if sup.cgroup2_cpu else "not available"),
        "" if sup.cgroup2_cpu else
        "boot with systemd.unified_cgroup_hierarchy=1 (or cgroup_no_v1=cpu) so cgroup2 "
        "offers the cpu controller",
    ))
    items.append(Capability(
        "cpu_cap", sup.available,
        f"per-host CPU caps via {sup.backend}: {sup.detail}" if sup.available else sup.detail,
        "" if sup.available else sup.fix,
    ))
    items.append(_binary("sshd", "/usr/sbin/sshd", "apt-get install openssh-server"))
    items.append(_binary("iperf3", None, "apt-get install iperf3"))
    items.append(_binary("ethtool", "/usr/sbin/ethtool", "apt-get install ethtool"))
    items.append(_binary("hostapd", "/usr/sbin/hostapd",
                         "apt-get install hostapd (real WiFi labs)"))
    items.append(_binary("wpa_supplicant", "/usr/sbin/wpa_supplicant",
                         "apt-get install wpasupplicant (real WiFi labs)"))
    items.append(_binary("qemu-system-x86_64", None,
                         "apt-get install qemu-system-x86 (VM access point with netem)"))
    items.append(_kvm())
    return Capabilities(tuple(items))


def doctor() -> list[Capability]:
    """The list ``testbed doctor`` prints."""
    return list(detect().items)
