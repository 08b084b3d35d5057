"""The ``ns3`` lab backend on an LTE link: a LENA eNB with an EPC simulated by ns-3 in real time.

Same lifecycle, taps, real-time scheduling, cleanup and lateness as the 802.11g cell
(:class:`testbed.lab.ns3_lab.Ns3Lab`); the simulation is :mod:`testbed.lab.ns3_lte_sim`::

    md  198.18.1.2/24 ─tap─ UE node (198.18.1.1) ┐ LTE uplink/downlink (FDD, 6 + 6 RBs)
    ext 198.18.2.2/24 ─tap─ UE node (198.18.2.1) ┤
                                        eNB ─S1-U─ SGW ─S5─ PGW ─┘── point-to-point 1 Gbit/s ──┐
    es  198.19.0.2/24 ─tap─ wired node (198.19.0.1) ───────────────────────────────────────────┘

Addresses and default routes are those of the other backends: each UE node is its namespace's
gateway and forwards; the PGW maps each namespace's address to its UE's default bearer (see the
simulator's docstring), so packets keep their Linux addresses end to end (no NAT). The UEs' own
LTE addresses (7.0.0.x, ns-3's EPC default) never leave the simulation.

Capacity: ``UL_RBS`` uplink resource blocks (1.4 MHz), every UE with uplink power control
(open loop, full path-loss compensation, ``P0_NOMINAL_PUSCH_DBM`` per RB) so the eNB receives
every UE at the same SINR (about 21.5 dB over a 5 dB noise figure) whatever its distance (up to
about 4 km, where a UE reaches 23 dBm); LENA's AMC maps that SINR to CQI 13, uplink MCS 24
(TBS index 22): 3240 bits per 1 ms TTI on 6 RBs, 1608 on 3. One saturating UE: about 3.1
Mbit/s of IP payload; two: the scheduler splits the 6 RBs 3 + 3, about 1.55 Mbit/s each.
Scheduler: the AP/eNB host's ``ns3.scheduler`` (``rr``: ``ns3::RrFfMacScheduler``, ``pf``:
``ns3::PfFfMacScheduler``); LENA's PF metric is a downlink one, both split the uplink equally
among the UEs with buffered data. Ideal RRC, no fading, Friis path loss, RLC unacknowledged
mode with a transmit buffer of ``queue_packets`` x 1500 bytes per bearer and direction (the
link's only queue), HARQ and the PHY error model on. The link's rate, delay, jitter and loss
are not applied (the report says so).

Each step records (``medium_counters``) per UE: uplink grants, resource blocks and their share
of the step's uplink RBs, mean uplink MCS, PDUs sent and grants left unused (the UE had no data
for them: LENA's eNB counts such a grant as a TB not decoded, ``ul_tb_errors``, when another
UE's transmission ends in that TTI), PDCP bytes/packets each way (Mbit/s received), mean uplink
PDCP delay, RLC buffer drops each way; the lateness and the ns-3 process's CPU as in WiFi mode.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from testbed.lab import netns
from testbed.lab.ns3_lab import STATS_PERIOD_MS, Ns3Lab, lateness_window
from testbed.lab.plan import LabError, LabPlan, LinkShape, ShapingReport
from testbed.ns3_settings import Ns3Settings

log = logging.getLogger(__name__)

UL_RBS = 6
DL_RBS = 6
P0_NOMINAL_PUSCH_DBM = -95
"""Received power per RB the UEs' power control aims at: -95 dBm over the eNB's noise (-174
dBm/Hz, 180 kHz, 5 dB noise figure: -116.4 dBm) is an SINR of about 21.5 dB, inside LENA's
CQI 13 band (20.8-22.7 dB): uplink MCS 24."""
RLC_BYTES_PER_PACKET = 1500
SCHEDULER_TYPES = {"rr": "ns3::RrFfMacScheduler", "pf": "ns3::PfFfMacScheduler"}
NOT_APPLIED = ("simulated LTE: capacity, delay and loss come from ns-3's LENA PHY and MAC "
               f"({UL_RBS} uplink RBs, MCS from the uplink SINR, HARQ, scheduler), not from the "
               "link shape")
COUNTERS = ("ul_grants", "ul_rbs", "ul_mcs_sum", "ul_tb_bytes", "ul_sent", "ul_tbs", "ul_tb_errors",
            "ul_pdcp_tx_bytes", "ul_pdcp_tx_pkts", "ul_pdcp_rx_bytes", "ul_pdcp_rx_pkts",
            "ul_pdcp_delay_ns", "ul_rlc_tx_bytes", "ul_rlc_drops", "dl_pdcp_tx_bytes",
            "dl_pdcp_tx_pkts", "dl_pdcp_rx_bytes", "dl_pdcp_rx_pkts", "dl_rlc_drops")


class Ns3LteLab(Ns3Lab):
    """Context manager: host namespaces joined through taps by a real-time LENA LTE cell."""

    KIND = "lte"
    SIM_MODULE = "testbed.lab.ns3_lte_sim"

    def __init__(self, plan: LabPlan, workdir: Path, settings: Ns3Settings | None = None) -> None:
        super().__init__(plan, workdir, settings or Ns3Settings.for_kind("lte"), kind="lte")
        if self.settings.scheduler not in SCHEDULER_TYPES:
            raise LabError(f"ns3.scheduler must be one of {', '.join(SCHEDULER_TYPES)} on an LTE "
                           f"link, got {self.settings.scheduler!r}")

    @property
    def rlc_buffer_bytes(self) -> int:
        return self.plan.medium.queue_packets * RLC_BYTES_PER_PACKET

    def _config(self) -> dict[str, Any]:
        def host(name: str) -> dict[str, Any]:
            a = self._addr[name]
            return {"name": name, "netns": netns.netns_path(self.namespace(name)),
                    "tap": self.tap(name), "gateway": a.router_address, "address": a.address,
                    "prefixlen": a.prefixlen, "network": a.network,
                    "distance_m": self.settings.distance(name)}

        wire_network = super()._config()["wire_network"]  # the /30 of the 802.11g AP-ES link
        return {"kind": self.kind, "ues": [host(h.name) for h in self.plan.stations],
                "wired": [host(h.name) for h in self.plan.wired], "seed": self.settings.seed,
                "scheduler_type": SCHEDULER_TYPES[self.settings.scheduler],
                "ul_rbs": UL_RBS, "dl_rbs": DL_RBS,
                "p0_nominal_pusch_dbm": P0_NOMINAL_PUSCH_DBM,
                "rlc_buffer_bytes": self.rlc_buffer_bytes,
                "wire_network": wire_network, "stats_path": str(self.stats_path),
                "stats_period_ms": STATS_PERIOD_MS}

    def _log_up(self) -> None:
        log.info("ns-3 LTE cell (LENA, %s) up in %.1f s: %s", self.settings.scheduler,
                 self.bringup_s["ready"], ", ".join(
                     f"{name} RNTI {d['rnti']}" for name, d in self.ready["devices"].items()))

    def _shape(self, medium: LinkShape | None = None, downlink: LinkShape | None = None) -> None:
        if medium is not None or downlink is not None:
            raise LabError("the ns3 backend cannot reshape a running simulation (the LTE cell "
                           "is fixed at bring-up)")
        shape = self.plan.medium
        self._reports = [ShapingReport(
            label="medium", namespace=self.namespace(self.plan.router.name),
            interface="ns-3 LTE cell (LENA eNB + EPC)", backend="ns3",
            feeds=[self.tap(h.name) for h in self.plan.stations + self.plan.wired],
            requested=asdict(shape),
            applied={"queue_packets": shape.queue_packets,
                     "rlc": f"unacknowledged mode, transmit buffer {self.rlc_buffer_bytes} B "
                            f"(queue_packets x {RLC_BYTES_PER_PACKET}) per bearer and direction",
                     "bandwidth_rbs": {"uplink": UL_RBS, "downlink": DL_RBS},
                     "scheduler": f"{self.settings.scheduler}: "
                                  f"{SCHEDULER_TYPES[self.settings.scheduler]}",
                     "uplink_power_control": f"open loop, alpha 1, P0 {P0_NOMINAL_PUSCH_DBM} "
                                             f"dBm per RB (SINR about 21.5 dB: MCS 24)",
                     "rrc": "ideal", "fading": "none", "propagation": "Friis",
                     "distance_m": {h.name: self.settings.distance(h.name)
                                    for h in self.plan.stations},
                     "wired": "point-to-point 1 Gbit/s, 0 ms, PGW node to the ES gateway node",
                     "ready": self.ready},
            not_applied={f.name: NOT_APPLIED for f in fields(LinkShape)
                         if f.name != "queue_packets"},
            notes=["uplink and downlink are separate carriers (FDD); the eNB's scheduler "
                   "shares each one's resource blocks among the UEs with data (LENA's rr and "
                   "pf split the uplink alike)",
                   "the PGW maps each host's own address to its UE's default bearer: no NAT"])]

    def _window(self, before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
        return window_counters(before, after)


def window_counters(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """Per UE counters between two snapshots of the LTE simulator's stats file: deltas, the UE's
    share of the window's uplink resource blocks, mean uplink MCS, uplink and downlink PDCP
    Mbit/s received, mean uplink PDCP delay; and the lateness (``lateness_window``)."""
    before = before or {"sim_s": 0.0, "late_hist": {}, "devices": {}}
    sim = max(after["sim_s"] - before["sim_s"], 1e-9)
    devices = {}
    for name, d in after["devices"].items():
        b = before["devices"].get(name, {})
        delta = {k: d[k] - b.get(k, 0) for k in COUNTERS}
        mcs_sum, delay_ns = delta.pop("ul_mcs_sum"), delta.pop("ul_pdcp_delay_ns")
        delta["ul_unused_grants"] = delta["ul_grants"] - delta["ul_sent"]
        delta["rb_share"] = round(delta["ul_rbs"] / (after["ul_rbs"] * sim * 1000), 4)
        delta["ul_mcs_mean"] = round(mcs_sum / delta["ul_grants"], 2) if delta["ul_grants"] else None
        delta["ul_mbit"] = round(8 * delta["ul_pdcp_rx_bytes"] / sim / 1e6, 3)
        delta["dl_mbit"] = round(8 * delta["dl_pdcp_rx_bytes"] / sim / 1e6, 3)
        delta["ul_pdcp_delay_ms_mean"] = (round(delay_ns / delta["ul_pdcp_rx_pkts"] / 1e6, 2)
                                          if delta["ul_pdcp_rx_pkts"] else None)
        devices[name] = delta
    return {"sim_s": round(sim, 3), "devices": devices, "lateness": lateness_window(before, after)}
