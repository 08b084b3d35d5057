"""A real lab's inventory on the controller: which host plays what, and what it needs.

* role rules (:func:`same_machine`, :func:`is_station`, :func:`tools_needed`,
  :func:`interfaces_needed`, :func:`needs_root`...): what each ``LabHost`` of a scenario does on
  its link, shared by ``testbed lab check``, deploy and the real WiFi/LTE links;
* :func:`check_local`: what can be checked on the controller before connecting (key files,
  known_hosts entries, interfaces a link needs, hosts sharing a machine), as
  :class:`InventoryError` listing every problem with the file, the key path and what was expected;
* :func:`access_for`: how to reach an inventory host over SSH (``LabHost`` -> ``HostAccess``;
  the testbed's own programs never run under sudo, so ``HostAccess.sudo`` is always false).

The inventory's own keys are checked when the scenario is loaded (``testbed.lab_section``);
connected hosts are ``testbed.realnode.Node``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from testbed.hosts.keys import known_hosts_name
from testbed.hosts.remote import HostAccess

if TYPE_CHECKING:
    from testbed.lab_section import LabHost
    from testbed.scenario import Scenario

DATA_INTERFACES = ("lab", "data")
"""Logical interface names of a host's wired lab interface (the first one present is used)."""


class InventoryError(ValueError):
    """The inventory cannot be used on this controller; one line per problem."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# --------------------------------------------------------------------------- machines and roles


def machine_of(h: LabHost) -> tuple[str, int]:
    """Hosts with the same SSH address and port are one machine (e.g. the ES and the AP)."""
    return (h.address, h.port)


def same_machine(a: LabHost, b: LabHost) -> bool:
    return machine_of(a) == machine_of(b)


def data_interface(h: LabHost) -> str | None:
    """The host's wired lab interface (``interfaces.lab`` or ``interfaces.data``), if named."""
    for key in DATA_INTERFACES:
        if key in h.interfaces:
            return h.interfaces[key]
    return None


def needs_root(h: LabHost, scenario: Scenario) -> list[str]:
    """What this host runs that needs root (empty: nothing)."""
    kind = scenario.link.kind
    why = []
    if kind == "wifi":
        if h.role == "ap":
            why.append("hostapd and the AP's address")
        elif is_station(h, scenario):
            why.append("wpa_supplicant and the station's address")
    elif kind == "lte":
        if h.role == "enb":
            why.append("srsepc (SGi tun) and srsenb (real-time priority)")
        elif h.role in ("md", "ext", "ue"):
            why.append("srsue (its tun interface) and the route to the ES")
    return why


def on_ap_machine(h: LabHost, scenario: Scenario) -> bool:
    """True if ``h`` shares the AP's machine (it then uses the AP's interface, no station)."""
    aps = scenario.by_role("ap")
    return bool(aps) and h.role != "ap" and same_machine(h, aps[0])


def is_station(h: LabHost, scenario: Scenario) -> bool:
    """A WiFi station: md/ext, or an ES with its own wlan interface off the AP's machine."""
    return (scenario.link.kind == "wifi" and h.role in ("md", "es", "ext")
            and "wlan" in h.interfaces and not on_ap_machine(h, scenario))


def tools_needed(h: LabHost, scenario: Scenario) -> list[str]:
    """The programs a host needs for its role on this scenario's link."""
    kind = scenario.link.kind
    need: list[str] = ["ip"]
    if kind == "wifi":
        if h.role == "ap":
            need += ["hostapd", "iw"]
        elif is_station(h, scenario):
            need += ["wpa_supplicant", "iw"]
    elif kind == "lte":
        if h.role == "enb":
            need += ["srsepc", "srsenb"]
        elif h.role in ("md", "ext", "ue"):
            need += ["srsue"]
    if h.role in ("es", "ext"):
        need += ["iperf3"]
    if h.role == "md":
        need += ["iperf3"]  # the link probe's client
    if h.role == "es":
        need += ["ss"]  # the orchestrator waits for listening sockets with it
    return list(dict.fromkeys(need))


def interfaces_needed(h: LabHost, scenario: Scenario) -> list[str]:
    """Logical interface names this host must declare for its role on this link."""
    kind = scenario.link.kind
    if kind == "wifi":
        if h.role == "ap":
            return ["wlan"]
        if h.role in ("md", "ext"):
            return ["wlan"]
        return []  # the ES: on the AP's machine, a station (wlan) or wired behind the AP
    if kind == "lte":
        return []  # tun names default to srsRAN's own (tun_srsue, srs_spgw_sgi)
    if h.role in ("md", "es", "ext"):
        return []  # wired: interfaces.lab if the lab network is not the SSH network
    return []


# --------------------------------------------------------------------------- local checks


def expand(path: str | None) -> Path | None:
    return None if path is None else Path(os.path.expanduser(path))


def check_local(scenario: Scenario) -> list[str]:
    """Problems of the inventory that the controller can see without connecting."""
    import paramiko

    problems: list[str] = []
    source = scenario.source
    if scenario.emulated:
        return [f"{source}: lab: expected a real lab (lab.hosts), this scenario is emulated"]

    def bad(i: int, key: str, message: str) -> None:
        path = f"lab.hosts[{i}]" + (f".{key}" if key else "")
        problems.append(f"{source}: {path}: {message}")

    for i, h in enumerate(scenario.lab.hosts):
        key = expand(h.key_file)
        if key is None:
            bad(i, "key_file", "expected the path of a private key: the testbed uses no SSH agent "
                "and no default keys (e.g. key_file: ~/.ssh/hnd_testbed_ed25519)")
        elif not key.is_file():
            bad(i, "key_file", f"expected an existing private key file, {key} does not exist "
                "(make one with ssh-keygen -t ed25519 and install its .pub on the host)")
        else:
            try:
                paramiko.PKey.from_path(key)
            except Exception as exc:
                bad(i, "key_file", f"expected an unencrypted OpenSSH private key, {key}: {exc}")
            mode = stat.S_IMODE(key.stat().st_mode)
            if mode & 0o077:
                bad(i, "key_file", f"expected a private key readable only by its owner, {key} has "
                    f"mode {mode:04o} (chmod 600 {key})")
        if h.known_hosts is not None:
            kh = expand(h.known_hosts)
            assert kh is not None
            name = known_hosts_name(h.address, h.port)
            if not kh.is_file():
                if h.host_key is None:
                    bad(i, "known_hosts", f"expected an existing known_hosts file, {kh} does not "
                        f"exist (ssh-keyscan -p {h.port} {h.address} >> {kh}, then check the "
                        "fingerprint on the host's console)")
            elif not paramiko.HostKeys(str(kh)).lookup(name) and h.host_key is None:
                bad(i, "known_hosts", f"expected a line for {name!r} in {kh}, found none (address "
                    "and port must match exactly; hashed entries are fine)")
        for logical in interfaces_needed(h, scenario):
            if logical not in h.interfaces:
                bad(i, "interfaces", f"expected interfaces.{logical} (the {logical} interface a "
                    f"{h.role} host uses on a {scenario.link.kind} link), got "
                    f"{sorted(h.interfaces) or 'none'}")
    # hosts on one machine must agree on how they are reached
    seen: dict[tuple[str, int], int] = {}
    for i, h in enumerate(scenario.lab.hosts):
        first = seen.setdefault(machine_of(h), i)
        if first != i:
            other = scenario.lab.hosts[first]
            if (other.user, other.key_file) != (h.user, h.key_file):
                bad(i, "", f"shares {h.address}:{h.port} with lab.hosts[{first}] but names another "
                    "user or key: hosts on one machine must be reached the same way")
    kind = scenario.link.kind
    if kind == "wifi":
        ap = scenario.host("ap")
        for i, h in enumerate(scenario.lab.hosts):
            if h.role in ("md", "ext") and same_machine(h, ap):
                bad(i, "address", f"a {h.role} must be a station of its own, not the AP's machine")
    if kind == "lte":
        enb = scenario.host("enb")
        for i, h in enumerate(scenario.lab.hosts):
            if h.role in ("md", "ext", "ue") and same_machine(h, enb) and \
                    scenario.lab.radio.device_name != "zmq":
                bad(i, "address", f"a {h.role} runs srsue with its own radio: it cannot be the "
                    "eNB's machine (only with the ZeroMQ virtual radio)")
    return problems


def require_local(scenario: Scenario) -> None:
    problems = check_local(scenario)
    if problems:
        raise InventoryError(problems)


def access_for(h: LabHost, *, name: str | None = None) -> HostAccess:
    """How to reach an inventory host (``~`` expanded; HostAccess never uses sudo)."""
    key = expand(h.key_file)
    if key is None:
        raise InventoryError([f"lab host {h.name}: key_file is required (no agent, no default keys)"])
    return HostAccess(
        name=name or h.name, address=h.address, port=h.port, user=h.user, key_file=key,
        known_hosts=expand(h.known_hosts), host_key=h.host_key, python=h.python, sudo=False,
    )
