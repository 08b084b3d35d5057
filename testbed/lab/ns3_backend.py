"""The ``ns3`` backend's factory: the simulated cell that fits the scenario's link.

An 802.11g cell (:class:`testbed.lab.ns3_lab.Ns3Lab`) for a WiFi link, a LENA eNB with its EPC
(:class:`testbed.lab.ns3_lte.Ns3LteLab`) for an LTE link; any other link kind is refused by the
lab when it starts (``Ns3Lab._check_backend``).
"""

from __future__ import annotations

from testbed.lab.base import LabSetup
from testbed.lab.ns3_lab import Ns3Lab
from testbed.lab.ns3_lte import Ns3LteLab
from testbed.lab.plan import LabPlan


def make_lab(plan: LabPlan, setup: LabSetup) -> Ns3Lab:
    """The registry's factory (``testbed.lab.backends``)."""
    if setup.link_kind == "lte":
        return Ns3LteLab(plan, setup.run_dir / "ns3", settings=setup.ns3)
    return Ns3Lab(plan, setup.run_dir / "ns3", settings=setup.ns3, kind=setup.link_kind)
