"""What every lab backend shares: its lifecycle, written once.

:class:`LabBase` runs ``up()`` as: check (root, the run id free, the backend's own checks) ->
claim the run id and write its run record -> the backend's bring-up (:meth:`LabBase._build`) ->
CPU caps -> the state. Any failure or interrupt on the way tears down what was made and re-raises.
``down()`` runs the backend's teardown, then removes every owned object of the run
(``testbed.lab.cleanup.remove_run``); it is idempotent and a no-op in a forked child of the
process that built the lab (pyroute2's helpers inherit its stack). Both run with SIGINT/SIGTERM
deferred where an interrupt would leave a half-made object, and as a context manager the lab
turns SIGTERM into ``SystemExit`` while it is up (``testbed.lab.signals``).

Also shared: the host sysctls (written, read back, checked), the CPU caps of the hosts that run
on this machine, the state of a namespace host, and ``reshape`` (new shaping while up).

A backend implements ``_build`` (and ``_check_backend``, ``_teardown``, ``_shape``,
``_make_state`` as it needs them); see ``testbed.lab.backends`` for the registry.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from testbed.lab import cleanup, cpu, names, netns, runs
from testbed.lab.nsconfig import read_sysctls, write_sysctls
from testbed.lab.plan import (
    RECORDED_SYSCTLS,
    HostPlan,
    HostState,
    LabError,
    LabPlan,
    LabState,
    LinkShape,
    ShapingReport,
    address_plan,
)
from testbed.lab.signals import SigtermGuard, signals_deferred


@dataclass(frozen=True)
class LabSetup:
    """What a backend may need besides the plan to build a run's lab."""

    run_dir: Path
    capabilities: Any
    accel: str | None = None
    link_kind: str = "wifi"
    radios: bool = False
    progress: Callable[[str], None] | None = None
    ns3: Any = None
    """The AP's ``ns3`` section (``testbed.ns3_settings.Ns3Settings``) for the ns3 backend."""


class LabBase(SigtermGuard):
    """One lab run; subclasses are the backends (where the router and the shaping live)."""

    RECORD_KIND = "lab"
    """The ``kind`` of the run record."""
    NEEDS_ROOT_FOR = "network namespaces, qdiscs"

    def __init__(self, plan: LabPlan, *, handle_sigterm: bool = True) -> None:
        self.plan = plan
        self._handle_sigterm = handle_sigterm
        self._addr = address_plan(plan)
        self._cpu_groups: dict[str, cpu.CpuGroup] = {}
        self._cpu_notes: dict[str, dict[str, Any]] = {}
        self._sysctls: dict[str, dict[str, str]] = {}
        self._offloads: dict[str, dict[str, Any]] = {}
        self._reports: list[ShapingReport] = []
        self._notes: list[str] = []
        self.state: LabState | None = None
        self.teardown_log: list[str] = []
        self._owner_pid = os.getpid()
        self._claimed = False

    # ------------------------------------------------------------------ names
    @property
    def run_id(self) -> str:
        return self.plan.run_id

    @property
    def local_hosts(self) -> list[HostPlan]:
        """The hosts that are network namespaces on this machine."""
        return list(self.plan.hosts)

    def namespace(self, host: str) -> str:
        self.plan.host(host)
        return names.namespace_name(self.run_id, host)

    def address(self, host: str) -> str:
        if host not in self._addr:
            raise KeyError(f"{host} has no address of its own (router or unknown)")
        return self._addr[host].address

    def cpu_group(self, host: str) -> str | None:
        g = self._cpu_groups.get(host)
        return g.path if g else None

    def add_to_cpu_group(self, host: str, pid: int) -> bool:
        """Put ``pid`` under ``host``'s CPU cap; False if that host has no cap applied."""
        g = self._cpu_groups.get(host)
        if g is None:
            return False
        cpu.add_pid(g, pid)
        return True

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> "LabBase":
        if self._handle_sigterm:
            self._install_sigterm()
        try:
            self.up()
        except BaseException:
            self._restore_sigterm()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.down()
        finally:
            self._restore_sigterm()

    # ------------------------------------------------------------------ up / down
    def up(self) -> LabState:
        """Build the lab; on any failure (or interrupt) tear down what was made and re-raise."""
        self._owner_pid = os.getpid()
        try:
            with signals_deferred():
                self._check()
                self._claimed = True  # from here on, owned objects of this run id are ours
                runs.register_run(self.run_id, kind=self.RECORD_KIND, extra=self._record_extra())
            self._build()
            with signals_deferred():
                self._setup_cpu()
                self.state = self._make_state()
        except BaseException:
            self.down()
            raise
        return self.state

    def down(self) -> None:
        """Remove everything this run made (idempotent; works after a partial ``up()``)."""
        if os.getpid() != self._owner_pid or not self._claimed:
            return  # a forked helper, or up() never got past its checks (maybe: run id in use)
        with signals_deferred():
            self._teardown()
            self.teardown_log = cleanup.remove_run(self.run_id)
            self._cpu_groups.clear()
            self._cpu_notes.clear()
            self._sysctls.clear()
            self._offloads.clear()
            self._reports = []
            self._notes = []
            self._claimed = False
            self.state = None

    def reshape(self, medium: LinkShape, downlink: LinkShape | None = None) -> list[ShapingReport]:
        """Replace the shaping of a running lab (e.g. per load step); returns the new reports."""
        if self.state is None:
            raise LabError("lab is not up")
        with signals_deferred():
            self._shape(medium, downlink)
            self.state = replace(self.state, shaping=list(self._reports))
        return list(self._reports)

    # ------------------------------------------------------------------ what the host set reads
    def router_host(self) -> Any:
        """An SSH connection to the router if the backend provides one itself, else None (the
        router is a namespace, reached over the management network like every host)."""
        return None

    def describe(self) -> dict[str, Any] | None:
        """What the manifest records about the backend itself (None: nothing beyond the state)."""
        return None

    def conditions(self) -> dict[str, Any]:
        """Recorded before each step: the host's load average."""
        return {"host_loadavg": list(os.getloadavg())}

    def medium_counters(self) -> dict[str, Any] | None:
        """Recorded after each step: what the medium counted during it (None: nothing)."""
        return None

    # ------------------------------------------------------------------ what a backend adds
    def _check_backend(self) -> None:
        """Raise ``LabError`` if this machine cannot run this backend (after the root check)."""

    def _record_extra(self) -> dict[str, Any]:
        """More fields of the run record (``testbed clean`` reads them)."""
        return {"namespaces": [self.namespace(h.name) for h in self.local_hosts]}

    def _build(self) -> None:
        raise NotImplementedError

    def _teardown(self) -> None:
        """Undo what ``remove_run`` cannot find by name (a VM, open sockets); never raises."""

    def _shape(self, medium: LinkShape | None = None, downlink: LinkShape | None = None) -> None:
        """Shape the medium (``None``: the plan's) and set ``self._reports``."""
        raise NotImplementedError

    def _make_state(self) -> LabState:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared steps
    def _check(self) -> None:
        if os.geteuid() != 0:
            raise LabError(f"the emulated lab needs root ({self.NEEDS_ROOT_FOR})")
        self._check_backend()
        if netns.owned_namespaces(self.run_id):
            raise LabError(
                f"run id {self.run_id} is in use: {netns.owned_namespaces(self.run_id)}")

    def _shapes(self, medium: LinkShape | None,
                downlink: LinkShape | None) -> tuple[LinkShape, LinkShape]:
        """(uplink, downlink) shapes: the plan's, or those given to ``reshape``."""
        up = medium or self.plan.medium
        return up, downlink or (self.plan.downlink if medium is None else None) or up

    def _apply_sysctls(self, host: HostPlan) -> None:
        """IPv6 off (unless the plan keeps it), forwarding on the router, the plan's and the
        host's sysctls; written inside the host's namespace, read back and checked."""
        ns = self.namespace(host.name)
        items: dict[str, str] = {}
        if self.plan.disable_ipv6 and os.path.exists("/proc/sys/net/ipv6"):
            items["net.ipv6.conf.all.disable_ipv6"] = "1"
            items["net.ipv6.conf.default.disable_ipv6"] = "1"
        if host.name == self.plan.router.name:
            items["net.ipv4.ip_forward"] = "1"
        items.update(dict(self.plan.sysctls))
        items.update(dict(host.sysctls))
        write_sysctls(ns, sorted(items.items()))
        keys = list(RECORDED_SYSCTLS) + [k for k in items if k not in RECORDED_SYSCTLS]
        got = read_sysctls(ns, keys)
        for k, v in items.items():
            if got.get(k) != v:
                raise LabError(f"{ns}: {k} reads {got.get(k)!r} after writing {v!r}")
        self._sysctls[host.name] = got

    def _setup_cpu(self) -> None:
        groups, notes, missing = cpu.cap_hosts(
            self.run_id, {h.name: h.cpu_fraction for h in self.local_hosts
                          if h.cpu_fraction is not None})
        self._cpu_groups.update(groups)
        self._cpu_notes.update(notes)
        self._notes.extend(missing)

    def _host_state(self, host: HostPlan, interface: str | None,
                    router_interface: str | None) -> HostState:
        """The state of a host that is a namespace here."""
        a = self._addr.get(host.name)
        return HostState(
            name=host.name,
            role=host.role,
            namespace=self.namespace(host.name),
            interface=interface,
            address=a.address if a else None,
            network=a.network if a else None,
            gateway=a.router_address if a else None,
            router_interface=router_interface,
            sysctls=dict(self._sysctls.get(host.name, {})),
            offloads=dict(self._offloads.get(host.name, {})),
            cpu=self._cpu_notes.get(host.name),
        )
