"""The emulated lab as a set of SSH-reachable hosts: what the orchestrator drives.

Bringing it up: the namespaces, veths, addresses and shaping of ``testbed.lab.topology``; a
management veth per host (``testbed.lab.management``); key material made for this run; one real
sshd per namespace listening on its management address, its pid placed in the host's CPU cgroup
(so every process started over SSH inherits the cap); one paramiko connection per host pinned to
that host's key. From then on the orchestrator uses exactly the code path of a real lab.

Teardown runs in reverse order on success, error and Ctrl-C (an ``ExitStack``), and the lab's
own teardown kills whatever still runs inside its namespaces.

Where the AP/eNB runs is the scenario's ``backend`` key of that host (:func:`choose_backend`):
``namespace`` (``testbed.lab.topology.EmulatedLab``: the router is a namespace, host qdiscs --
netem, or tbf/htb on kernels without it) or ``vm`` (``testbed.vm.lab.VmLab``: the router is a
QEMU VM with Debian's kernel and real netem; the stations and the ES stay namespaces). Both
labs offer the same small interface here (``address``, ``add_to_cpu_group``, ``state``); the VM
lab also gives the AP's SSH connection (``host("ap")``: the VM, for load averages) and, before
each step, QEMU's CPU use and the queues' counters (``step_conditions``).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from testbed.hosts.keys import RunKeys
from testbed.hosts.remote import Host, HostAccess
from testbed.hosts.sshd import SshdInstance
from testbed.hostset import HostSet
from testbed.lab import capabilities, management, runs
from testbed.lab.plan import HostPlan, LabPlan
from testbed.lab.topology import EmulatedLab
from testbed.scenario import Scenario

log = logging.getLogger(__name__)

SSH_PORT = 22


QEMU = "qemu-system-x86_64"
NO_NETEM_WARNING = ("the host kernel has no sch_netem: the AP namespace shapes with tbf/htb, so "
                    "delay, jitter and loss are NOT applied (rate and queue only)")


def default_radios(accel: str | None) -> tuple[bool, str]:
    """Radios in the AP VM when ``hwsim`` is unset: on with KVM, off under TCG."""
    if accel == "kvm":
        return True, "default with KVM: stations associate over hwsim radios in the VM"
    return False, ("default without KVM: netem only; under TCG the 802.11 path through hwsim is "
                   "CPU-bound below the WiFi presets' rates (set hwsim: true to use it anyway)")


def choose_backend(requested: str, caps: Any = None) -> dict[str, Any]:
    """Where the AP runs: ``{"requested", "backend": "namespace"|"vm", "reason", "warnings"}``.

    ``auto``: host netem where the kernel has it; else the VM where QEMU is installed (KVM when
    it works, TCG otherwise); else the namespace with tbf/htb and a warning.
    """
    caps = caps if caps is not None else capabilities.detect()
    netem = caps.has("netem")
    qemu = shutil.which(QEMU)
    kvm = caps.has("kvm") if caps.get("kvm") is not None else False
    out: dict[str, Any] = {"requested": requested, "host_netem": netem, "qemu": qemu,
                           "kvm": kvm, "warnings": []}
    if requested == "vm":
        out.update(backend="vm", reason="backend: vm in the scenario")
    elif requested == "namespace":
        out.update(backend="namespace", reason="backend: namespace in the scenario")
    elif netem:
        out.update(backend="namespace", reason="auto: the host kernel has sch_netem")
    elif qemu:
        out.update(backend="vm", reason=f"auto: no sch_netem in the host kernel, {qemu} found: "
                                        f"real netem in the AP VM ({'KVM' if kvm else 'TCG'})")
    else:
        out.update(backend="namespace", reason=f"auto: no sch_netem in the host kernel and no {QEMU}")
    if out["backend"] == "namespace" and not netem:
        out["warnings"].append(NO_NETEM_WARNING)
    out["accel"] = ("kvm" if kvm else "tcg") if out["backend"] == "vm" else None
    return out


def wifi_radios(scenario: Scenario, router: Any, backend: str,
                accel: str | None) -> tuple[bool, str]:
    """Whether the stations associate over hwsim radios in the AP VM, and why.

    The AP host's ``hwsim`` decides; unset, radios are on with KVM and off with TCG, where the
    802.11 path (framing and CCMP in software) is CPU-bound below the WiFi presets' rates
    (``benchmarks/vm_fidelity.py --modes wifi``). A namespace AP has no radios."""
    if scenario.link.kind != "wifi":
        return False, f"not a WiFi link ({scenario.link.kind})"
    if backend != "vm":
        if router.hwsim:
            log.warning("hwsim: true is not applied: the AP runs as a namespace, which has no "
                        "radios")
        return False, "the AP is a namespace: no radios"
    if router.hwsim is not None:
        return router.hwsim, f"hwsim: {'true' if router.hwsim else 'false'} in the scenario"
    return default_radios(accel)


def lab_plan(scenario: Scenario, run_id: str) -> LabPlan:
    """The emulated lab a scenario asks for."""
    return LabPlan(
        run_id=run_id,
        hosts=tuple(HostPlan(h.name, h.role, cpu_fraction=h.cpu) for h in scenario.hosts),
        medium=scenario.link.shape,
        sysctls=scenario.link.tcp.sysctls(),
    )


class EmulatedHosts(HostSet):
    """``with EmulatedHosts(scenario, run_dir, run_id) as hosts: hosts.host("md").run(...)``."""

    def __init__(self, scenario: Scenario, run_dir: Path, run_id: str):
        self.scenario = scenario
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        router = next(h for h in scenario.hosts if h.role in ("ap", "enb"))
        self.router = router.name
        caps = capabilities.detect()
        self.choice = choose_backend(router.backend, caps)
        for warning in self.choice["warnings"]:
            log.warning("%s", warning)
        log.info("AP backend: %s (%s)", self.choice["backend"], self.choice["reason"])
        plan = lab_plan(scenario, run_id)
        radios, why = wifi_radios(scenario, router, self.choice["backend"], self.choice["accel"])
        self.choice.update(hwsim=radios, hwsim_reason=why)
        log.info("WiFi radios (hwsim): %s (%s)", "on" if radios else "off", why)
        if self.choice["backend"] == "vm":
            from testbed.vm.lab import VmLab
            from testbed.wifi_settings import WifiSettings

            self.lab: EmulatedLab | Any = VmLab(plan, self.run_dir / "vm",
                                                accel=self.choice["accel"],
                                                kind=scenario.link.kind, progress=log.info,
                                                wifi=WifiSettings() if radios else None)
        else:
            self.lab = EmulatedLab(plan, capabilities=caps)
        self.python = sys.executable
        self.workdir = runs.host_workdir(run_id)
        self._hosts: dict[str, Host] = {}
        self._links: list[management.ManagementLink] = []
        super().__init__()

    def _up(self) -> None:
        self._stack.enter_context(self.lab)
        vm = self.choice["backend"] == "vm"
        names = [h.name for h in self.scenario.hosts if not (vm and h.name == self.router)]
        if vm:  # the AP is the VM: reached over its own management link, keys and pinned key
            self._hosts[self.router] = self.lab.vm.host
        self._links = management.create(self.run_id, names)
        self._stack.callback(management.remove, self._links)
        private = self.run_dir / "private"
        self._stack.callback(shutil.rmtree, private, ignore_errors=True)  # keys die with the lab
        runs.remember_private(self.run_id, private)  # ... or with `testbed clean` after a kill
        self._stack.callback(shutil.rmtree, self.workdir, ignore_errors=True)
        keys = RunKeys.create(private / "keys",
                              [(link.host, link.address, SSH_PORT) for link in self._links])
        for link in self._links:
            sshd = SshdInstance.from_run_keys(keys, link.host, link.namespace, self.run_dir)
            sshd.start()
            self._stack.callback(sshd.stop)
            self.lab.add_to_cpu_group(link.host, sshd.pid)
            host = Host(HostAccess.from_run_keys(keys, link.host, python=self.python))
            host.connect()
            self._stack.callback(host.close)
            self._hosts[link.host] = host
        log.info("emulated lab %s up: %s", self.run_id, ", ".join(names))

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
        }
        if self.choice["backend"] == "vm":
            out["vm"] = self.lab.describe()
            out["ssh"] += ("; the AP VM: dropbear on its own management /30, per-run keys, "
                           "pinned host key")
        return out

    def step_conditions(self) -> dict[str, Any]:
        """Recorded before each step: the host load (and with the VM: QEMU's CPU, queue counters)."""
        if self.choice["backend"] == "vm":
            return self.lab.conditions()
        return {"host_loadavg": list(os.getloadavg())}
