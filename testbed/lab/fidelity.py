"""How faithful each link backend measured, and the ``auto`` choice made from those figures.

A backend's *idle fidelity* is the median of one-message transfers over its idle medium divided
by that medium's own floor (the time the model it emulates says the transfer must take), for the
payloads that matter here (10,092 B: the quantized bottleneck; 75,000 B: the paper's JPEG):

- netem (``vm``; ``namespace`` on a kernel with sch_netem): payload with 66 B of headers per
  segment at the rate + the base RTT (``benchmarks/vm_fidelity.py``);
- tbf/htb (``namespace`` without sch_netem): the same floor (``benchmarks/link_fidelity.py``);
  its bucket lets an idle-period transfer leave at line rate, and it applies no delay;
- ns-3's 802.11g cell (``ns3``): the expected DCF floor of ``benchmarks/ns3_fidelity.py`` (every
  segment's access with its backoff, the TCP ACKs the AP sends, their collisions, the beacons);
- ns-3's LTE cell (``ns3`` on an LTE link): the base RTT plus one transport block (6 RBs at MCS
  24, 402 B) per 1 ms TTI for the rest of the message (``ns3_fidelity.py --lte``).

:func:`choose_auto` takes the backends that can run here, ranks them by their worst idle error
``max |ratio - 1|`` and keeps the cheapest (registry order: namespace, vm, ns3) of those within
``TIE`` of the best; the reason names every candidate, its figure and why it lost. The figures
are constants measured on this project's 2-core machine (where and how in ``measured_by``);
re-measure with the benchmark named there and update them here and in the README.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TIE = 0.05
"""Idle errors closer than this to the best are a tie, which the cheaper backend wins: below
it the figures move by as much from one run of a benchmark to the next on a loaded machine."""


@dataclass(frozen=True)
class IdleFidelity:
    """One backend's measured idle transfers: ``ratios`` (transfer -> median / floor)."""

    medium: str
    floor: str
    ratios: dict[str, float]
    measured_by: str

    @property
    def error(self) -> float:
        """The worst relative distance from the floor."""
        return max(abs(r - 1.0) for r in self.ratios.values())

    def summary(self, source: bool = True) -> str:
        worst = max(self.ratios, key=lambda k: abs(self.ratios[k] - 1.0))
        tail = f"; {self.measured_by})" if source else ")"
        return (f"idle transfers within {100 * self.error:.0f} % of {self.floor} (worst "
                f"{worst}: {self.ratios[worst]:.2f}{tail}")


NETEM = IdleFidelity(
    medium="netem", floor="the netem floor",
    ratios={"10,092 B at 3 Mbit/s": 1.01, "75,000 B at 3 Mbit/s": 1.00,
            "10,092 B at 24 Mbit/s": 0.99, "75,000 B at 24 Mbit/s": 1.01},
    measured_by="benchmarks/vm_fidelity.py --count 20: netem in the AP VM under TCG, the qdisc "
                "host netem runs")
TBF = IdleFidelity(
    medium="tbf/htb", floor="the netem floor",
    ratios={"10,092 B at 3 Mbit/s": 0.84, "75,000 B at 3 Mbit/s": 0.98,
            "10,092 B at 24 Mbit/s": 0.71, "75,000 B at 24 Mbit/s": 0.97},
    measured_by="benchmarks/link_fidelity.py, tbf/htb in the AP namespace")
NS3_WIFI = IdleFidelity(
    medium="ns-3 802.11g DCF", floor="the expected DCF floor",
    ratios={"10,092 B": 0.84, "75,000 B": 0.98},
    measured_by="benchmarks/ns3_fidelity.py on a quiet machine (load average 0.3), against the "
                "floor with the base RTT after 0.2 s gaps (10,092 B: 1.06 with the warm one; "
                "0.79-1.00 in 3 runs at load average 3-4)")
NS3_LTE = IdleFidelity(
    medium="ns-3 LENA LTE", floor="the transport-block floor",
    ratios={"10,092 B": 1.001, "75,000 B": 0.997},
    measured_by="benchmarks/ns3_fidelity.py --lte on a quiet machine: 42.8 and 209.9 ms "
                "against 42.8 and 210.5 ms")


@dataclass(frozen=True)
class Candidate:
    """A backend ``auto`` may pick: ``unavailable`` says why it cannot run here (None: it
    can); ``fidelity`` what it measured for this link kind (None: nothing measured);
    ``what`` a short description for the reason."""

    name: str
    what: str
    unavailable: str | None
    fidelity: IdleFidelity | None


@dataclass(frozen=True)
class AutoChoice:
    backend: str
    reason: str


def choose_auto(candidates: Sequence[Candidate]) -> AutoChoice:
    """The most faithful candidate that can run here (the first, in the given order, of those
    within ``TIE`` of the best), with a reason naming every candidate and why it lost."""
    usable = [(c, c.fidelity) for c in candidates
              if c.unavailable is None and c.fidelity is not None]
    if not usable:
        raise ValueError("auto: no backend can run here with measured figures")
    best = min(f.error for _, f in usable)
    chosen, fid = next((c, f) for c, f in usable if f.error <= best + TIE)
    parts = [f"auto: {chosen.name} ({chosen.what}): {fid.summary()}"]
    for c in candidates:
        if c is chosen:
            continue
        if c.unavailable is not None:
            parts.append(f"{c.name}: not available here: {c.unavailable}")
        elif c.fidelity is None:
            parts.append(f"{c.name} ({c.what}): available, no measured fidelity for this link")
        else:
            why = (f"less faithful than {chosen.name}" if c.fidelity.error > best + TIE
                   else f"no more faithful than {chosen.name} (within {100 * TIE:.0f} points), "
                        f"which costs less")
            parts.append(f"{c.name} ({c.what}): available, {c.fidelity.summary(False)}; not "
                         f"chosen: {why}")
    return AutoChoice(chosen.name, "; ".join(parts))
