"""The emulated lab as a set of SSH-reachable hosts: what the orchestrator drives.

Bringing it up: the namespaces, veths, addresses and shaping of ``testbed.lab.topology``; a
management veth per host (``testbed.lab.management``); key material made for this run; one real
sshd per namespace listening on its management address, its pid placed in the host's CPU cgroup
(so every process started over SSH inherits the cap); one paramiko connection per host pinned to
that host's key. From then on the orchestrator uses exactly the code path of a real lab.

Teardown runs in reverse order on success, error and Ctrl-C (an ``ExitStack``), and the lab's
own teardown kills whatever still runs inside its namespaces.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from testbed.hosts.keys import RunKeys
from testbed.hosts.remote import Host, HostAccess
from testbed.hosts.sshd import SshdInstance
from testbed.lab import management
from testbed.lab.topology import EmulatedLab, HostPlan, LabPlan, LinkShape
from testbed.scenario import Scenario

log = logging.getLogger(__name__)

SSH_PORT = 22


def lab_plan(scenario: Scenario, run_id: str) -> LabPlan:
    """The emulated lab a scenario asks for."""
    return LabPlan(
        run_id=run_id,
        hosts=tuple(HostPlan(h.name, h.role, cpu_fraction=h.cpu) for h in scenario.hosts),
        medium=LinkShape(**scenario.link.shaping()),
        sysctls=scenario.link.tcp.sysctls(),
    )


class EmulatedHosts:
    """``with EmulatedHosts(scenario, run_dir, run_id) as hosts: hosts.host("md").run(...)``."""

    def __init__(self, scenario: Scenario, run_dir: Path, run_id: str):
        self.scenario = scenario
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.lab = EmulatedLab(lab_plan(scenario, run_id))
        self.python = sys.executable
        self.workdir = f"/tmp/testbed-{run_id}"
        self._hosts: dict[str, Host] = {}
        self._links: list[management.ManagementLink] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "EmulatedHosts":
        try:
            self._up()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def _up(self) -> None:
        self._stack.enter_context(self.lab)
        names = [h.name for h in self.scenario.hosts]
        self._links = management.create(self.run_id, names)
        self._stack.callback(management.remove, self._links)
        private = self.run_dir / "private"
        self._stack.callback(shutil.rmtree, private, ignore_errors=True)  # keys die with the lab
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
        return {
            "kind": "emulated",
            **state,
            "management": [vars(link) for link in self._links],
            "ssh": "one sshd per namespace on its management address, per-run keys, pinned host keys",
            "python": self.python,
        }
