"""The scenario's ``cell`` and ``es`` sections: several MDs (cameras) in one cell, their busy
policy and deadline, and the ES's service discipline.

```yaml
cell:
  mds: 8               # MD hosts made from the hosts' md entry: md1 .. md8 (default 1: md alone)
  busy_policy: drop    # a camera frame arriving while its MD is busy: drop | queue (default)
  deadline_ms: 200     # each frame's deadline (its age at the result); default: none
es:
  workers: 1           # model workers on the ES, FIFO across connections (default: its cores)
sweep:
  mds: [1, 2, 4, 8]    # MDs streaming at once per step (the first n of cell.mds)
capture_rate_hz: 15    # each MD's camera
```

Every MD is a host of its own (namespace, sshd, CPU cap or device profile), a copy of the md
entry named ``<md name><k>``; all share the medium with the ext hosts and one ES.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from testbed.checks import Checker, Section
from testbed.lab import names
from testbed.lab.plan import LabPlan

BUSY_POLICIES = ("drop", "queue")
"""What a camera-paced MD does with a frame that arrives while it is busy."""


@dataclass(frozen=True)
class Cell:
    mds: int = 1
    busy_policy: str = "queue"
    deadline_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EsService:
    workers: int | None = None
    """Model workers (the tail's ``max_inferences``); ``None``: the ES's usable cores."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def station_limit(subnet: str = LabPlan.__dataclass_fields__["subnet"].default) -> int:
    """Stations (MDs + ext hosts) the emulated lab's address plan holds: one /24 each in the
    subnet's first half, the first /24 unused (``testbed.lab.plan.address_plan``)."""
    prefix = ipaddress.ip_network(subnet).prefixlen
    return 2 ** (24 - prefix - 1) - 1


def parse_cell(ck: Checker, raw: Any, sweep_mds: tuple[int, ...]) -> Cell:
    """The ``cell`` section; ``mds`` defaults to the largest of ``sweep.mds``."""
    d = Cell()
    section = Section(ck, raw, "cell", tuple(f.name for f in fields(Cell)), "cell settings")
    mds = section.integer("mds", max(sweep_mds, default=d.mds), minimum=1)
    for i, n in enumerate(sweep_mds):
        if n > mds:
            ck.error(f"sweep.mds[{i}]", f"expected at most cell.mds ({mds}) MDs, got {n}")
    return Cell(
        mds=mds,
        busy_policy=section.string("busy_policy", d.busy_policy, choices=BUSY_POLICIES),
        deadline_ms=section.number("deadline_ms", d.deadline_ms, above=0),
    )


def parse_es(ck: Checker, raw: Any) -> EsService:
    section = Section(ck, raw, "es", tuple(f.name for f in fields(EsService)), "ES settings")
    return EsService(workers=section.integer("workers", None, minimum=1))


def check_cell_hosts(ck: Checker, cell: Cell, md_name: str, ext_hosts: int) -> None:
    """The lab can hold ``cell.mds`` MDs: their names fit, their addresses exist."""
    if cell.mds == 1:
        return
    last = f"{md_name}{cell.mds}"
    if not names.HOST_RE.match(last):
        ck.error("cell.mds", f"MD host names are the md host's name and a number, and {last!r} "
                             f"does not match {names.HOST_RE.pattern} (at most 5 characters): "
                             f"use a shorter md host name or fewer MDs")
    limit = station_limit()
    if cell.mds + ext_hosts > limit:
        ck.error("cell.mds", f"expected at most {limit - ext_hosts} MDs: the emulated lab's "
                             f"address plan has {limit} station addresses and {ext_hosts} go to "
                             f"ext hosts, got more MDs than addresses ({cell.mds})")


def md_hosts(template: Any, mds: int) -> tuple[Any, ...]:
    """The cell's MD hosts: the template itself for one MD, else copies named ``<name><k>``."""
    if mds == 1:
        return (template,)
    return tuple(replace(template, name=f"{template.name}{k}") for k in range(1, mds + 1))
