"""Per-namespace settings a lab host gets: ``net.*`` sysctls (written and read back) and
segmentation offloads (TSO/GSO/GRO) turned off on its interfaces, with the state read back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from testbed.lab import netns
from testbed.lab.netns import in_namespace
from testbed.lab.plan import SYSCTL_RE, LabError

log = logging.getLogger(__name__)


def _sysctl_path(key: str) -> str:
    if not SYSCTL_RE.match(key):
        raise ValueError(key)
    return "/proc/sys/" + key.replace(".", "/")


def read_sysctls(ns: str, keys: Sequence[str]) -> dict[str, str]:
    out = {}
    with in_namespace(ns):
        for k in keys:
            try:
                with open(_sysctl_path(k)) as fh:
                    out[k] = fh.read().strip()
            except OSError as e:
                out[k] = f"unreadable: {e.strerror}"
    return out


def _host_allowed_congestion_control() -> str:
    try:
        with open("/proc/sys/net/ipv4/tcp_allowed_congestion_control") as fh:
            return fh.read().strip()
    except OSError:
        return "?"


def write_sysctls(ns: str, items: Sequence[tuple[str, str]]) -> None:
    """Write per-namespace sysctls by opening /proc/sys inside the namespace."""
    allowed = _host_allowed_congestion_control()  # host-wide, visible in the root namespace only
    with in_namespace(ns):
        for k, v in items:
            try:
                with open(_sysctl_path(k), "w") as fh:
                    fh.write(str(v))
            except OSError as e:
                hint = ""
                if k == "net.ipv4.tcp_congestion_control":
                    hint = (
                        f" (outside the root namespace only algorithms listed in the host-wide "
                        f"net.ipv4.tcp_allowed_congestion_control may be set; here: {allowed!r}. "
                        f"Add it there, e.g. sysctl -w net.ipv4.tcp_allowed_congestion_control="
                        f"'{allowed} {v}', or choose one of those)"
                    )
                raise LabError(f"{ns}: cannot set {k}={v}: {e.strerror}{hint}") from e


OFFLOAD_OFF = ("tx-generic-segmentation", "rx-gro", "rx-gro-list", "rx-udp-gro-forwarding",
               "tx-gso-list")
OFFLOAD_CHECK = {"tso": "tx-tcp-segmentation", "gso": "tx-generic-segmentation", "gro": "rx-gro"}


def disable_offloads(ns: str, ifnames: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Turn off TSO/GSO/GRO (and every other segmentation offload) and read the state back.

    pyroute2's ethtool ioctl inside the namespace; the ``ethtool -K`` binary run in the
    namespace if that fails.
    """
    result: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    try:
        from pyroute2.ethtool.ioctl import IoctlEthtool
    except ImportError:  # pragma: no cover
        IoctlEthtool = None  # type: ignore[assignment]
    if IoctlEthtool is not None:
        with in_namespace(ns):
            for ifname in ifnames:
                try:
                    eth = IoctlEthtool(ifname)
                    try:
                        feats = eth.get_features()
                        for name in feats.keys():
                            if (name.endswith("segmentation") or name in OFFLOAD_OFF) and \
                                    feats.is_available(name) and feats.is_active(name):
                                feats[name] = False
                        eth.set_features(feats)
                        after = eth.get_features()
                        state = {k: after.is_active(v) for k, v in OFFLOAD_CHECK.items()}
                        still = sorted(n for n in after.keys()
                                       if n.endswith("segmentation") and after.is_active(n))
                    finally:
                        eth.close()
                    result[ifname] = {**state, "method": "pyroute2.ethtool ioctl",
                                      "other_segmentation_still_on": still}
                except Exception as e:
                    log.debug("ethtool ioctl on %s/%s failed: %s", ns, ifname, e)
                    failed.append(ifname)
    else:
        failed = list(ifnames)
    for ifname in failed:
        r = netns.run_in_namespace(ns, ["ethtool", "-K", ifname, "tso", "off", "gso", "off",
                                          "gro", "off"], timeout=10)
        q = netns.run_in_namespace(ns, ["ethtool", "-k", ifname], timeout=10)
        text = q.stdout
        state = {}
        for short, long_ in (("tso", "tcp-segmentation-offload"),
                             ("gso", "generic-segmentation-offload"),
                             ("gro", "generic-receive-offload")):
            m = re.search(rf"^{long_}:\s*(on|off)", text, re.M)
            state[short] = (m.group(1) == "on") if m else None
        result[ifname] = {**state, "method": "ethtool -K in namespace",
                          "ethtool_rc": r.returncode}
    return result
