"""The roles of a run's hosts, and the rule of which roles a link needs (checked at load time).

``md`` the mobile device, ``es`` the edge server, ``ap`` the WiFi (or wired) access point,
``enb`` the LTE eNodeB, ``ext`` an external node that makes the competing load, ``ue`` an extra
LTE user equipment (real LTE labs only).
"""

from __future__ import annotations

from typing import Any

from testbed.checks import Checker, join

HOST_ROLES = ("md", "es", "ap", "enb", "ue", "ext")


def check_roles(
    ck: Checker,
    hosts: list[tuple[str, str | None]],
    path: str,
    kind: str | None,
    loads: Any,
    real: bool,
) -> None:
    """Exactly one md, es and ap (wifi, wired) or enb (lte); ext hosts when any load > 0."""
    if kind is None:
        return
    station = "enb" if kind == "lte" else "ap"
    other = "ap" if kind == "lte" else "enb"
    for i, (_, role) in enumerate(hosts):
        rp = join(join(path, i), "role")
        if role == other:
            ck.error(rp, f"role {other!r} does not belong on a {kind} link (use {station!r})")
        elif role == "ue" and not (real and kind == "lte"):
            ck.error(
                rp,
                "role 'ue' is only for a real LTE lab (emulated MD and ext nodes are the UEs)"
                if kind == "lte"
                else f"role 'ue' does not belong on a {kind} link",
            )
    for role in ("md", "es", station):
        n = sum(1 for _, r in hosts if r == role)
        if n != 1:
            ck.error(path, f"expected exactly one host with role {role!r} ({kind} link), found {n}")
    loaded = isinstance(loads, tuple) and any(x > 0 for x in loads)
    if loaded and not any(r == "ext" for _, r in hosts):
        ck.error(
            path,
            "expected at least one host with role 'ext': sweep.loads_mbit asks for competing load",
        )
