"""Lab backends: where the AP/eNB and the shared medium run. A registry, the interface every
backend offers, the ``auto`` choice, and ``clean()`` composed over every backend.

========== ============================== =====================================================
name       module                         the router and the medium
========== ============================== =====================================================
namespace  ``testbed.lab.namespace_lab``  a network namespace; the host kernel's qdiscs
                                          (netem, or tbf/htb on kernels without it)
vm         ``testbed.vm.lab``             a QEMU VM with Debian's kernel and real netem; the
                                          stations and the ES stay namespaces
ns3        ``testbed.lab.ns3_backend``    an ns-3 process simulating an 802.11g cell in real
                                          time (DCF, retries, ACKs), joined to the hosts'
                                          namespaces through taps; on an LTE link a LENA
                                          eNB + EPC (``testbed.lab.ns3_lte``)
========== ============================== =====================================================

A new backend is one module with a class that extends
:class:`testbed.lab.base.LabBase` (and so offers :class:`Lab`) and a ``make_lab(plan, setup)``
factory, plus one :class:`Backend` entry in :data:`BACKENDS`. Backends are imported only when
chosen (the VM's pulls in its image builder).

``auto`` (:func:`choose`): each backend says whether it can run here and what its medium
measured (:mod:`testbed.lab.fidelity`: idle transfers against the medium's own floor); the most
faithful wins, the cheaper one (registry order: namespace, vm, ns3) on a tie. On a kernel with
sch_netem that is the namespace; on this project's machine kind (no sch_netem, QEMU installed)
the VM's netem; with neither but ns-3 installed, ns-3's 802.11g cell (more faithful than
tbf/htb); else the namespace with tbf/htb and a warning that delay, jitter and loss are not
applied. The reason names every candidate, ns-3 included, with its figure.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from testbed import ns3_settings
from testbed.lab import capabilities, cleanup
from testbed.lab.base import LabSetup
from testbed.lab.fidelity import NETEM, NS3_LTE, NS3_WIFI, TBF, Candidate, choose_auto
from testbed.lab.plan import LabPlan, LabState

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
NO_NETEM_WARNING = ("the host kernel has no sch_netem: the AP namespace shapes with tbf/htb, so "
                    "delay, jitter and loss are NOT applied (rate and queue only)")


class Lab(Protocol):
    """What the host set (``testbed.emulated.EmulatedHosts``) uses of a lab, whatever backend.

    ``router_host()``: an SSH connection to the router when the backend provides one itself
    (the VM's dropbear), else None (the router is a namespace reached like any other host).
    ``describe()``: what the manifest records about the backend under ``manifest_key`` (None:
    nothing). ``conditions()``: recorded before each step (at least ``host_loadavg``).
    ``medium_counters()``: recorded after each step (what a simulated medium counted during
    it), or None.
    """

    state: LabState | None

    def __enter__(self) -> "Lab": ...
    def __exit__(self, *exc: Any) -> None: ...
    def address(self, host: str) -> str: ...
    def add_to_cpu_group(self, host: str, pid: int) -> bool: ...
    def router_host(self) -> Any: ...
    def describe(self) -> dict[str, Any] | None: ...
    def conditions(self) -> dict[str, Any]: ...
    def medium_counters(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class Backend:
    """One registry entry. ``factory``: ``"module:function"`` making the lab from
    ``(plan, setup)``. ``candidate(caps, link_kind)``: what ``auto`` weighs (can it run here,
    what did its medium measure: :mod:`testbed.lab.fidelity`).
    ``radios``: the router can run 802.11 radios (hwsim). ``clean_leftovers``: ``"module:
    function"`` stopping what a killed run of this backend left that is not found by name
    (a QEMU), called by :func:`clean` before the namespaces are removed. ``manifest_key`` /
    ``ssh_note``: where the manifest records ``describe()``, and what it adds about SSH."""

    name: str
    factory: str
    candidate: Callable[[Any, str], Candidate]
    radios: bool = False
    clean_leftovers: str | None = None
    manifest_key: str | None = None
    ssh_note: str | None = None

    def make_lab(self, plan: LabPlan, setup: LabSetup) -> Lab:
        return _load(self.factory)(plan, setup)


def _load(ref: str) -> Any:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _namespace_candidate(caps: Any, link_kind: str) -> Candidate:
    if caps.has("netem"):
        return Candidate("namespace", "the host kernel has sch_netem: netem in the AP namespace",
                         None, NETEM)
    return Candidate("namespace", "no sch_netem in the host kernel: tbf/htb, no delay, jitter "
                                  "or loss", None, TBF)


def _vm_candidate(caps: Any, link_kind: str) -> Candidate:
    qemu = shutil.which(QEMU)
    return Candidate("vm", f"real netem in the AP VM, {qemu} ({'KVM' if _kvm(caps) else 'TCG'})",
                     None if qemu else f"no {QEMU}", NETEM)


def _ns3_candidate(caps: Any, link_kind: str) -> Candidate:
    if not ns3_settings.ns3_available():
        why: str | None = ns3_settings.missing_message()
    elif not os.path.exists("/dev/net/tun"):
        why = "no /dev/net/tun (ns-3's taps)"
    else:
        why = None
    return Candidate("ns3", f"ns-3 {ns3_settings.NS3_REQUIREMENT.split('==')[1]} simulating "
                            f"the cell in real time", why,
                     {"wifi": NS3_WIFI, "lte": NS3_LTE}.get(link_kind))


def _kvm(caps: Any) -> bool:
    return caps.has("kvm") if caps.get("kvm") is not None else False


BACKENDS: dict[str, Backend] = {
    "namespace": Backend("namespace", "testbed.lab.namespace_lab:make_lab", _namespace_candidate),
    "vm": Backend("vm", "testbed.vm.lab:make_lab", _vm_candidate, radios=True,
                  clean_leftovers="testbed.vm.boot:clean_vms", manifest_key="vm",
                  ssh_note="; the AP VM: dropbear on its own management /30, per-run keys, "
                           "pinned host key"),
    "ns3": Backend("ns3", "testbed.lab.ns3_backend:make_lab", _ns3_candidate,
                   clean_leftovers="testbed.lab.ns3_lab:clean_leftovers", manifest_key="ns3"),
}


def choose(requested: str, caps: Any = None, link_kind: str = "wifi") -> dict[str, Any]:
    """Where the AP runs: ``{"requested", "backend", "reason", "warnings", "host_netem",
    "qemu", "kvm", "accel"}`` (recorded in the manifest). ``requested``: a registry name or
    ``auto`` (see the module docstring); ``link_kind``: the scenario's link (wifi, lte, wired:
    which measured figures apply)."""
    caps = caps if caps is not None else capabilities.detect()
    netem = caps.has("netem")
    kvm = _kvm(caps)
    out: dict[str, Any] = {"requested": requested, "host_netem": netem,
                           "qemu": shutil.which(QEMU), "kvm": kvm, "warnings": []}
    if requested in BACKENDS:
        out.update(backend=requested, reason=f"backend: {requested} in the scenario")
    elif requested == "auto":
        picked = choose_auto([b.candidate(caps, link_kind) for b in BACKENDS.values()])
        out.update(backend=picked.backend, reason=picked.reason)
    else:
        raise ValueError(f"backend must be auto or one of {sorted(BACKENDS)}, got {requested!r}")
    if out["backend"] == "namespace" and not netem:
        out["warnings"].append(NO_NETEM_WARNING)
    out["accel"] = ("kvm" if kvm else "tcg") if out["backend"] == "vm" else None
    return out


def clean(dry_run: bool = False, *, run_id: str | None = None,
          include_live: bool = False) -> list[str]:
    """``testbed clean``: what every backend's killed runs left (a QEMU first: it holds its
    taps), then the owned namespaces, links, cgroups and records
    (:func:`testbed.lab.cleanup.remove_leftover_runs`). Returns what was (or, with
    ``dry_run``, would be) removed. ``run_id``: that run only, even if its owner is alive;
    without it, runs whose owner is alive are skipped unless ``include_live``."""
    done: list[str] = []
    for b in BACKENDS.values():
        if b.clean_leftovers:
            done += _load(b.clean_leftovers)(dry_run, run_id=run_id, include_live=include_live)
    return done + cleanup.remove_leftover_runs(dry_run, run_id=run_id, include_live=include_live)
