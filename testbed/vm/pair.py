"""The smallest VM lab: namespaces ``md`` and ``es`` on either side of the AP VM.

Used by ``testbed vm check``, ``benchmarks/vm_fidelity.py`` and the tests. Addresses follow the
emulated lab's wired plan (198.18.<k>.0/24, the VM is ``.1`` of each side). Everything is undone
on exit (VM powered off, taps, namespaces, records), also on error and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable, Iterator

from testbed.lab import cleanup, names, netns, runs
from testbed.vm.boot import AccessPointVm, VmNic
from testbed.vm.build import VmImage

log = logging.getLogger(__name__)

SIDES = {"md": ("198.18.1.2/24", "198.18.1.1/24"), "es": ("198.18.2.2/24", "198.18.2.1/24")}


def es_address() -> str:
    return SIDES["es"][0].split("/")[0]


@contextlib.contextmanager
def vm_pair(image: VmImage, run_id: str, workdir: Path, *,
            progress: Callable[[str], None] | None = None,
            boot_timeout_s: float = 180.0) -> Iterator[AccessPointVm]:
    """Namespaces ``tb-<run>-md`` / ``tb-<run>-es`` and the AP VM between them."""
    made: list[str] = []
    runs.register_run(run_id, kind="vm-pair")  # protects the namespaces from `testbed clean`
    try:
        nics = []
        for host, (host_addr, vm_addr) in SIDES.items():
            ns = names.namespace_name(run_id, host)
            netns.create_namespace(ns)
            made.append(ns)
            nics.append(VmNic(host, ns, host_addr, vm_addr))
        with AccessPointVm(image, run_id, nics, Path(workdir), progress=progress,
                           boot_timeout_s=boot_timeout_s) as vm:
            yield vm
    finally:
        # processes inside, owned links, namespaces (the VM is already stopped here)
        cleanup.remove_run(run_id)
