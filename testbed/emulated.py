"""The emulated lab as a set of SSH-reachable hosts: what the orchestrator drives.

Bringing it up: the lab of the chosen backend (namespaces, veths, addresses, shaping); a
management veth per host (``testbed.lab.management``); key material made for this run; one real
sshd per namespace listening on its management address, its pid placed in the host's CPU cgroup
(so every process started over SSH inherits the cap); one paramiko connection per host pinned to
that host's key. From then on the orchestrator uses exactly the code path of a real lab.

Teardown runs in reverse order on success, error and Ctrl-C (an ``ExitStack``), and the lab's
own teardown kills whatever still runs inside its namespaces.

Where the AP/eNB runs is the scenario's ``backend`` key of that host, chosen and built through
the backend registry (``testbed.lab.backends``): ``namespace`` (the router is a namespace, host
qdiscs -- netem, or tbf/htb on kernels without it) or ``vm`` (the router is a QEMU VM with
Debian's kernel and real netem; the stations and the ES stay namespaces). Every backend offers
the same interface here (``testbed.lab.backends.Lab``: ``address``, ``add_to_cpu_group``,
``state``, ``router_host``, ``describe``, ``conditions``); the VM gives the AP's SSH connection
(``host("ap")``: the VM, for load averages) and, before each step, QEMU's CPU use and the
queues' counters (``step_conditions``).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from testbed.devices import REAL
from testbed.hosts.keys import RunKeys
from testbed.hosts.remote import Host, HostAccess
from testbed.lab.sshd import SshdInstance
from testbed.hostset import HostSetBase
from testbed.lab import backends, capabilities, cpuset, management, runs
from testbed.lab.base import LabSetup
from testbed.lab.plan import HostPlan, LabPlan
from testbed.scenario import Scenario

log = logging.getLogger(__name__)

SSH_PORT = 22


def default_radios(accel: str | None) -> tuple[bool, str]:
    """Radios in the AP VM when ``hwsim`` is unset: on with KVM, off under TCG."""
    if accel == "kvm":
        return True, "default with KVM: stations associate over hwsim radios in the VM"
    return False, ("default without KVM: netem only; under TCG the 802.11 path through hwsim is "
                   "CPU-bound below the WiFi presets' rates (set hwsim: true to use it anyway)")


def wifi_radios(scenario: Scenario, router: Any, backend: str,
                accel: str | None) -> tuple[bool, str]:
    """Whether the stations associate over hwsim radios in the AP VM, and why.

    The AP host's ``hwsim`` decides; unset, radios are on with KVM and off with TCG, where the
    802.11 path (framing and CCMP in software) is CPU-bound below the WiFi presets' rates
    (``benchmarks/vm_fidelity.py --modes wifi``). A namespace AP has no radios."""
    if scenario.link.kind != "wifi":
        return False, f"not a WiFi link ({scenario.link.kind})"
    if not backends.BACKENDS[backend].radios:
        if router.hwsim:
            log.warning("hwsim: true is not applied: the AP runs as a namespace, which has no "
                        "radios")
        return False, f"the {backend} backend has no hwsim radios"
    if router.hwsim is not None:
        return router.hwsim, f"hwsim: {'true' if router.hwsim else 'false'} in the scenario"
    return default_radios(accel)


def lab_plan(scenario: Scenario, run_id: str) -> LabPlan:
    """The emulated lab a scenario asks for."""
    return LabPlan(
        run_id=run_id,
        hosts=tuple(HostPlan(h.name, h.role, cpu_fraction=h.cpu) for h in scenario.members()),
        medium=scenario.link.shape,
        sysctls=scenario.link.tcp.sysctls(),
    )


class EmulatedHosts(HostSetBase):
    """``with EmulatedHosts(scenario, run_dir, run_id) as hosts: hosts.host("md").run(...)``."""

    def __init__(self, scenario: Scenario, run_dir: Path, run_id: str):
        self.scenario = scenario
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        router = next(h for h in scenario.hosts if h.role in ("ap", "enb"))
        self.router = router.name
        caps = capabilities.detect()
        self.choice = backends.choose(router.backend, caps, scenario.link.kind)
        for warning in self.choice["warnings"]:
            log.warning("%s", warning)
        log.info("AP backend: %s (%s)", self.choice["backend"], self.choice["reason"])
        self.backend = backends.BACKENDS[self.choice["backend"]]
        radios, why = wifi_radios(scenario, router, self.choice["backend"], self.choice["accel"])
        self.choice.update(hwsim=radios, hwsim_reason=why)
        log.info("WiFi radios (hwsim): %s (%s)", "on" if radios else "off", why)
        self.lab: backends.Lab = self.backend.make_lab(
            lab_plan(scenario, run_id),
            LabSetup(run_dir=self.run_dir, capabilities=caps, accel=self.choice["accel"],
                     link_kind=scenario.link.kind, radios=radios, progress=log.info,
                     ns3=router.ns3))
        self.python = sys.executable
        self.workdir = runs.host_workdir(run_id)
        self._hosts: dict[str, Host] = {}
        self._links: list[management.ManagementLink] = []
        self.isolation: cpuset.Isolation | None = None
        """CPUs of their own for the hosts that process frames for real (once up)."""
        super().__init__()

    def _up(self) -> None:
        self._stack.enter_context(self.lab)
        router_host = self.lab.router_host()
        if router_host is not None:  # e.g. the AP VM: its own management link, keys, pinned key
            self._hosts[self.router] = router_host
        names = [h.name for h in self.scenario.members()
                 if not (router_host is not None and h.name == self.router)]
        self._links = management.create(self.run_id, names)
        self._stack.callback(management.remove, self._links)
        private = self.run_dir / "private"
        self._stack.callback(shutil.rmtree, private, ignore_errors=True)  # keys die with the lab
        runs.remember_private(self.run_id, private)  # ... or with `testbed clean` after a kill
        self._stack.callback(shutil.rmtree, self.workdir, ignore_errors=True)
        keys = RunKeys.create(private / "keys",
                              [(link.host, link.address, SSH_PORT) for link in self._links])
        sshd_pids: list[int] = []
        for link in self._links:
            sshd = SshdInstance.from_run_keys(keys, link.host, link.namespace, self.run_dir)
            sshd.start()
            self._stack.callback(sshd.stop)
            self.lab.add_to_cpu_group(link.host, sshd.pid)
            sshd_pids.append(sshd.pid)
            host = Host(HostAccess.from_run_keys(keys, link.host, python=self.python))
            host.connect()
            self._stack.callback(host.close)
            self._hosts[link.host] = host
        self._isolate(sshd_pids)
        log.info("emulated lab %s up: %s", self.run_id, ", ".join(names))

    def _isolate(self, sshd_pids: list[int]) -> None:
        """CPUs of their own for the md/es hosts with ``compute: real`` as far as this machine
        allows and the scenario's ``cpu_isolation`` wants (``testbed.lab.cpuset``: full, partial
        or none); every sshd, the AP's helper process (QEMU, a simulator) and this process go to
        the rest. The groups go with the run's other cgroups."""
        real = [h for h in self.scenario.members() if h.compute == REAL]
        plan = cpuset.plan_isolation(
            cpuset.usable_cpus(), [h.name for h in real if h.role == "md"],
            next((h.name for h in real if h.role == "es"), None),
            enabled=self.scenario.cpu_isolation,
            ap_process=cpuset.AP_PROCESSES.get(self.choice["backend"]))
        self.isolation = cpuset.apply_isolation(self.run_id, plan)
        log.info("CPU isolation: %s", self.isolation.reason)
        helpers = [getattr(getattr(self.lab, attr, None), "pid", None) for attr in ("vm", "proc")]
        for pid in [*sshd_pids, os.getpid(), *filter(None, helpers)]:
            cpuset.move_to(self.isolation, cpuset.REST, pid)

    def host(self, name: str) -> Host:
        return self._hosts[name]

    def address(self, name: str) -> str:
        """The host's address on the lab network (what frames and load are sent to)."""
        return self.lab.address(name)

    def manifest(self) -> dict[str, Any]:
        state = self.lab.state.to_dict() if self.lab.state else {}
        out = {
            "kind": "emulated",
            "backend": self.choice,
            **state,
            "management": [vars(link) for link in self._links],
            "ssh": "one sshd per namespace on its management address, per-run keys, pinned host keys",
            "python": self.python,
            "cpu_isolation": self.isolation.to_dict() if self.isolation else None,
        }
        if self.backend.manifest_key:
            out[self.backend.manifest_key] = self.lab.describe()
        if self.backend.ssh_note:
            out["ssh"] += self.backend.ssh_note
        return out

    def step_medium(self) -> dict[str, Any] | None:
        """Recorded after each step: what a simulated medium (ns-3) counted during it."""
        return self.lab.medium_counters()

    def step_conditions(self) -> dict[str, Any]:
        """Recorded before each step: the host load (and with the VM: QEMU's CPU, queue counters)."""
        return self.lab.conditions()
