"""The ``lab`` section of a scenario: a real lab's inventory (``LabHost``, ``Lab``) and its checks.

In a real lab (``lab: {hosts: [...]}``) the inventory replaces the scenario's ``hosts``; key and
known_hosts files need not exist when a scenario is validated (``testbed lab check`` checks them
on the machine that runs it); ``~`` in paths is left for the SSH layer to expand. A host must pin
its SSH host key (``known_hosts`` file or ``host_key`` line): the testbed never trusts an unknown
key. A real WiFi or LTE lab may add ``lab.radio`` (``testbed.wifi_settings``,
``testbed.lte_settings`` say what each key means), and a host its own ``radio`` (LTE: SDR device
name and arguments) and ``tools`` (program paths).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from testbed import lte_settings, wifi_settings
from testbed.checks import BAD, Checker, Section, describe, join
from testbed.roles import HOST_ROLES, check_roles

LAB_HOST_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
LAB_HOST_NAME = "a lowercase name of at most 32 letters, digits, '_' or '-', starting with a letter"
IFNAME_RE = re.compile(r"^[^\s/:]{1,15}$")
HOST_KEY_RE = re.compile(
    r"^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+)\s+[A-Za-z0-9+/=]+"
)
HOST_PROGRAMS = ("hostapd", "wpa_supplicant", "iw", "ip", "iperf3", "srsepc", "srsenb", "srsue",
                 "ss", "sysctl")
"""Programs a lab host may name a path for (``lab.hosts[i].tools``)."""
TOOL_PATH_RE = re.compile(r"^[^\s'\"]+$")


@dataclass(frozen=True)
class LabHost:
    """A real host of a lab inventory, reached over SSH."""

    name: str
    role: str
    address: str
    user: str
    port: int = 22
    key_file: str | None = None
    """Private key; ``None``: the SSH agent or the user's default keys."""
    known_hosts: str | None = None
    host_key: str | None = None
    """One public-key line (``ssh-ed25519 AAAA...``) pinning the host's key."""
    python: str = "python3"
    testbed_path: str | None = None
    """Checkout of this project on the host; ``None``: ``testbed`` is installed for ``python``."""
    interfaces: dict[str, str] = field(default_factory=dict, hash=False)
    """Logical name (e.g. ``wlan``, ``lab``) -> interface name on the host."""
    sudo: bool = False
    torch_threads: int | None = None
    """``None``: torch's own default on that host."""
    radio: dict[str, Any] = field(default_factory=dict, hash=False)
    """LTE radio of this host (``device_name``, ``device_args``, gains): see
    ``testbed.lte_settings``."""
    tools: dict[str, str] = field(default_factory=dict, hash=False)
    """Tool name (``hostapd``, ``srsenb``...) -> path on the host; default: found on its PATH."""


@dataclass(frozen=True)
class Lab:
    kind: str = "emulated"
    """``emulated`` (namespaces on this machine) or ``real`` (the inventory in ``hosts``)."""
    hosts: tuple[LabHost, ...] = ()
    radio: wifi_settings.WifiSettings | lte_settings.LteSettings | None = None
    """A real WiFi or LTE lab's radio settings (defaults filled in); ``None`` otherwise."""


LAB_KEYS = ("hosts", "radio")
LAB_HOST_KEYS = tuple(f.name for f in dataclasses.fields(LabHost))


def parse_lab(ck: Checker, raw: Any, kind: str | None, loads: Any) -> Lab | None:
    """The ``lab`` section: ``emulated`` (or absent), or a real lab's inventory and radio."""
    if raw is None or raw == "emulated":
        return Lab()
    if isinstance(raw, str):
        ck.error("lab", f"expected 'emulated' or a mapping with an inventory of hosts, got {raw!r}")
        return None
    data = ck.mapping(raw, "lab", LAB_KEYS, required=("hosts",))
    if data is None or "hosts" not in data:
        return None
    items = ck.sequence(data["hosts"], "lab.hosts")
    if items is None:
        return None
    out: list[LabHost | None] = []
    names: dict[str, int] = {}
    roles: list[tuple[str, str | None]] = []
    for i, item in enumerate(items):
        path = join("lab.hosts", i)
        p = lambda k: join(path, k)  # noqa: E731
        d = ck.mapping(item, path, LAB_HOST_KEYS, required=("name", "role", "address", "user"))
        if d is None:
            out.append(None)
            continue
        n0 = len(ck.problems)
        name = ck.get(d, "name", path, ck.string, BAD, pattern=LAB_HOST_NAME_RE, what=LAB_HOST_NAME)
        if name is not BAD:
            if name in names:
                name = ck.error(
                    p("name"), f"duplicate host name {name!r} (also lab.hosts[{names[name]}])"
                )
            else:
                names[name] = i
        role = ck.get(d, "role", path, ck.string, BAD, choices=HOST_ROLES)
        roles.append((str(name), role if role is not BAD else None))
        address = ck.get(d, "address", path, ck.string, BAD)
        user = ck.get(d, "user", path, ck.string, BAD)
        port = ck.get(d, "port", path, ck.integer, 22, minimum=1, maximum=65535)
        values: dict[str, Any] = {}
        for key in ("key_file", "known_hosts", "testbed_path"):
            values[key] = ck.get(d, key, path, ck.string)
        values["python"] = ck.get(d, "python", path, ck.string, "python3")
        host_key = ck.get(d, "host_key", path, ck.string)
        if isinstance(host_key, str) and not HOST_KEY_RE.match(host_key):
            host_key = ck.error(
                p("host_key"),
                f"expected a public-key line such as 'ssh-ed25519 AAAA...', got {host_key!r}",
            )
        if d.get("known_hosts") is None and d.get("host_key") is None:
            ck.error(path, "expected known_hosts or host_key: the host's SSH key must be pinned")
        interfaces: dict[str, str] = {}
        if d.get("interfaces") is not None:
            raw_if = d["interfaces"]
            if not isinstance(raw_if, dict):
                ck.error(
                    p("interfaces"),
                    f"expected a mapping of name: interface, got {describe(raw_if)}",
                )
            else:
                for key, ifname in raw_if.items():
                    ip = join(p("interfaces"), str(key))
                    if not isinstance(key, str):
                        ck.error(ip, f"expected a string key, got {describe(key)}")
                    elif ck.string(ifname, ip, pattern=IFNAME_RE,
                                   what="an interface name of at most 15 characters") is not BAD:
                        interfaces[key] = ifname
        sudo = ck.get(d, "sudo", path, ck.boolean, False)
        threads = ck.get(d, "torch_threads", path, ck.integer, minimum=1)
        extra = _lab_host_extras(ck, d, path, kind)
        if len(ck.problems) > n0:
            out.append(None)
            continue
        out.append(
            LabHost(
                name=name,
                role=role,
                address=address,
                user=user,
                port=port,
                host_key=host_key,
                interfaces=interfaces,
                sudo=sudo,
                torch_threads=threads,
                **extra,
                **values,
            )
        )
    check_roles(ck, roles, "lab.hosts", kind, loads, real=True)
    radio = _lab_radio(ck, data.get("radio"), kind)
    if any(h is None for h in out) or radio is BAD:
        return None
    return Lab("real", tuple(h for h in out if h is not None), radio)


def _lab_host_extras(ck: Checker, d: dict[str, Any], path: str, kind: str | None) -> dict:
    """A lab host's ``radio`` and ``tools`` mappings."""
    out: dict[str, Any] = {}
    for key, parse in (("radio", _host_radio), ("tools", _tools)):
        if d.get(key) is not None:
            value = parse(ck, d[key], join(path, key), kind)
            if value is not None:
                out[key] = value
    return out


def _host_radio(ck: Checker, raw: Any, path: str, kind: str | None) -> dict[str, Any] | None:
    """A lab host's ``radio`` mapping (LTE: its SDR's device name, arguments and gains)."""
    if raw == {}:
        return {}
    if kind not in ("lte", None):
        ck.error(path, f"only hosts of a real LTE lab have radio settings (this is a {kind} "
                       "link): remove it")
        return None
    return lte_settings.parse_host_radio(ck, raw, path)


def _tools(ck: Checker, raw: Any, path: str, kind: str | None) -> dict[str, str] | None:
    """A lab host's ``tools`` mapping: program -> path on that host."""
    f = Section(ck, raw, path, HOST_PROGRAMS, "program: path on the host")
    out = {}
    for key in f.data:
        value = f.string(key, None, pattern=TOOL_PATH_RE, what="a path without spaces or quotes")
        if value is not None:
            out[key] = value
    return out if f.ok else None


def _lab_radio(ck: Checker, raw: Any, kind: str | None) -> Any:
    """``lab.radio``: the WiFi or LTE settings of a real lab (``None`` for wired)."""
    if kind is None:
        return None
    errors_before = len(ck.problems)
    if kind == "wifi":
        value: Any = wifi_settings.parse_settings(ck, raw, "lab.radio")
    elif kind == "lte":
        value = lte_settings.parse_settings(ck, raw, "lab.radio")
    else:
        value = None
        if raw is not None:
            ck.error("lab.radio", f"a {kind} link has no radio settings: remove lab.radio")
    return BAD if len(ck.problems) > errors_before else value
