"""Owned names: every object the emulated lab creates carries a recognisable prefix.

Cleanup (``testbed.lab.cleanup``) finds leftovers of killed runs by these names alone and touches
nothing else, so the patterns are deliberately narrow:

=================  ===================================  =====================================
object             pattern                              example
=================  ===================================  =====================================
run id             6 lower-case hex digits              ``3fa9c1``
network namespace  ``tb-<runid>-<host>``                ``tb-3fa9c1-md``
interface (veth)   ``tb<runid>-<tag>`` (<= 15 chars)    ``tb3fa9c1-smd`` (host side of md)
                                                        ``tb3fa9c1-amd`` (AP side of md)
ifb device         ``tb<runid>-i<tag>``                 ``tb3fa9c1-idl`` (shared downlink)
cgroup             ``testbed-<runid>/<host>``           ``testbed-3fa9c1/md``
=================  ===================================  =====================================

Host names are 1-5 characters ``[a-z][a-z0-9]*`` (``md``, ``es``, ``ap``, ``enb``, ``ext``,
``ext2``...), so that ``tb<runid>-<side><host>`` always fits Linux's 15-character ``IFNAMSIZ``.
A name like ``tb-test-proto`` or ``tbf0`` is *not* owned (``test`` is not a 6-hex run id).
"""

from __future__ import annotations

import re
import secrets

IFNAMSIZ = 15  # usable characters of a Linux interface name

NS_PREFIX = "tb-"
IF_PREFIX = "tb"
CGROUP_PREFIX = "testbed-"

RUN_ID_RE = re.compile(r"^[0-9a-f]{6}$")
HOST_RE = re.compile(r"^[a-z][a-z0-9]{0,4}$")
TAG_RE = re.compile(r"^[a-z][a-z0-9]{0,5}$")

_NS_RE = re.compile(r"^tb-(?P<run>[0-9a-f]{6})-(?P<host>[a-z][a-z0-9]{0,4})$")
_IF_RE = re.compile(r"^tb(?P<run>[0-9a-f]{6})-(?P<tag>[a-z][a-z0-9]{0,5})$")
_CG_RE = re.compile(r"^testbed-(?P<run>[0-9a-f]{6})$")

#: interface-name side letters: host end and router (AP/eNB) end of a host's veth pair
HOST_SIDE = "s"
ROUTER_SIDE = "a"
IFB_SIDE = "i"


def new_run_id() -> str:
    """A fresh random run id (6 hex characters)."""
    return secrets.token_hex(3)


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise ValueError(f"run id must be 6 lower-case hex characters, got {run_id!r}")
    return run_id


def check_host(host: str) -> str:
    if not isinstance(host, str) or not HOST_RE.match(host):
        raise ValueError(
            f"host name must match {HOST_RE.pattern} (1-5 chars, so interface names fit "
            f"{IFNAMSIZ} chars), got {host!r}"
        )
    return host


# --------------------------------------------------------------------------- namespaces


def namespace_name(run_id: str, host: str) -> str:
    """``tb-<runid>-<host>``."""
    return f"{NS_PREFIX}{check_run_id(run_id)}-{check_host(host)}"


def parse_namespace_name(name: str) -> tuple[str, str] | None:
    """``(run_id, host)`` if ``name`` is an owned namespace name, else ``None``."""
    m = _NS_RE.match(name or "")
    return (m["run"], m["host"]) if m else None


def is_owned_namespace(name: str, run_id: str | None = None) -> bool:
    parsed = parse_namespace_name(name)
    return parsed is not None and (run_id is None or parsed[0] == run_id)


# --------------------------------------------------------------------------- interfaces


def interface_name(run_id: str, tag: str) -> str:
    """``tb<runid>-<tag>`` (tag 1-6 chars), always <= 15 characters."""
    check_run_id(run_id)
    if not TAG_RE.match(tag or ""):
        raise ValueError(f"interface tag must match {TAG_RE.pattern}, got {tag!r}")
    name = f"{IF_PREFIX}{run_id}-{tag}"
    assert len(name) <= IFNAMSIZ, name
    return name


def veth_names(run_id: str, host: str) -> tuple[str, str]:
    """(host-side name, router-side name) of ``host``'s veth pair to the AP/eNB."""
    check_host(host)
    return (interface_name(run_id, HOST_SIDE + host), interface_name(run_id, ROUTER_SIDE + host))


def ifb_name(run_id: str, tag: str) -> str:
    """An owned ifb device name, ``tb<runid>-i<tag>`` (tag 1-5 chars, e.g. ``dl``/``ul``)."""
    return interface_name(run_id, IFB_SIDE + tag)


def parse_interface_name(name: str) -> tuple[str, str] | None:
    """``(run_id, tag)`` if ``name`` is an owned interface (veth or ifb) name, else ``None``."""
    m = _IF_RE.match(name or "")
    return (m["run"], m["tag"]) if m else None


def is_owned_interface(name: str, run_id: str | None = None) -> bool:
    parsed = parse_interface_name(name)
    return parsed is not None and (run_id is None or parsed[0] == run_id)


def is_owned_ifb(name: str, run_id: str | None = None) -> bool:
    parsed = parse_interface_name(name)
    return (
        parsed is not None
        and parsed[1].startswith(IFB_SIDE)
        and (run_id is None or parsed[0] == run_id)
    )


# --------------------------------------------------------------------------- cgroups


def cgroup_name(run_id: str) -> str:
    """The per-run cgroup directory name, ``testbed-<runid>`` (hosts are sub-groups)."""
    return f"{CGROUP_PREFIX}{check_run_id(run_id)}"


def parse_cgroup_name(name: str) -> str | None:
    """The run id if ``name`` is an owned per-run cgroup directory name, else ``None``."""
    m = _CG_RE.match(name or "")
    return m["run"] if m else None


def is_owned_cgroup(name: str, run_id: str | None = None) -> bool:
    parsed = parse_cgroup_name(name)
    return parsed is not None and (run_id is None or parsed == run_id)
