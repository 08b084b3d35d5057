"""Link presets: the numbers an emulated link is shaped with, and where each number comes from.

A preset describes one bottleneck: the medium that the mobile device (MD), the external node
(ext) and the edge server (ES) share. Its ``shape`` (a ``testbed.lab.plan.LinkShape``, what the
lab's shapers take) holds, for whoever shapes it (netem, or tbf/htb where the kernel has no netem):

rate_mbit        effective rate at which the bottleneck serialises *whole Ethernet frames* (netem's
                 ``rate`` counts the 14-byte Ethernet header, so TCP goodput is
                 rate x 1448/1514). It already includes the medium's fixed per-frame costs for
                 full-size frames: it is the MAC-layer capacity, not the PHY rate.
delay_ms         one-way base delay, added in each direction (RTT = 2 x delay + serialisation).
jitter_ms        random variation of the delay. 0 in every preset: netem's jitter reorders the
                 packets of one flow, which neither a WiFi station queue nor an LTE bearer does.
loss_pct         packet loss seen by IP. 0 in every preset: 802.11 retries (up to 7 times) and
                 LTE HARQ/RLC AM hide radio losses, and the paper assumes every packet arrives.
queue_packets    packets the bottleneck queue holds before tail drop. With competing load this
                 is what decides the queueing delay (see each preset).
overhead_bytes   bytes added to every packet for the rate accounting (netem ``packetoverhead``,
                 a size table's ``overhead`` for tbf/htb).
fair_per_station True: each station has its own queue and the medium serves the stations in turn
                 (LTE's scheduler grants resource blocks to each UE). False: one shared FIFO.

``resolve_link`` turns a scenario's ``link`` section (kind, preset, overrides, tcp sysctls) into a
``LinkSpec``; the scenario loader has already checked the types.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from testbed.lab.plan import LinkShape

LINK_KINDS = ("wifi", "lte", "wired")

SHAPING_FIELDS = tuple(f.name for f in fields(LinkShape) if f.name != "burst_bytes")
"""The shape's fields a preset sets and a scenario may override (``burst_bytes`` is left to the
shaper: one frame plus 0.5 ms at the rate)."""


@dataclass(frozen=True)
class LinkPreset:
    name: str
    kind: str
    shape: LinkShape
    source: str
    why: str


WIFI_80211G = LinkPreset(
    name="wifi-80211g",
    kind="wifi",
    shape=LinkShape(
        rate_mbit=24.0,
        delay_ms=1.5,
        jitter_ms=0.0,
        loss_pct=0.0,
        queue_packets=100,
        overhead_bytes=0,
        fair_per_station=False,
    ),
    source=(
        "Paper Sec. V-D: hostapd AP, 802.11g, 54 Mbit/s maximum. Rate: 802.11g MAC throughput for "
        "1500-byte packets from the IEEE 802.11 ERP-OFDM timings (computed in this module's "
        "comments): 30.5 Mbit/s with short slots, 24.1 with long slots, before collisions and "
        "retries. In the AP VM, netem at 24 Mbit/s gives the expected 22.95 Mbit/s of TCP "
        "goodput, and mac80211_hwsim radios carry 14-28 Mbit/s (CPU-bound, "
        "docs/link-emulation-without-netem.md). Queue: of the order of a WiFi "
        "driver's per-access-category queue (ath9k: ATH_MAX_QDEPTH = 512/4 - 5 = 123 frames)."
    ),
    why=(
        "54 Mbit/s 802.11g PHY is about 24 Mbit/s of shared MAC capacity; one FIFO of 100 frames "
        "(50 ms at 24 Mbit/s) shared by MD and external node, as DCF contention shares airtime."
    ),
)
# Rate, worked out (IEEE 802.11-2020 clause 18 OFDM PHY, clause 19 ERP):
#   data frame for a 1500-byte IP packet: MPDU = 1500 + 8 LLC/SNAP + 24 MAC header + 4 FCS
#     = 1536 bytes; PSDU bits = 16 service + 12288 + 6 tail = 12310 -> 57 symbols of 216 bits
#     (54 Mbit/s, 4 us each) = 228 us, + 20 us preamble/PLCP header + 6 us signal extension
#     = 254 us.
#   ACK (14 bytes) at the 24 Mbit/s basic rate: 134 bits -> 2 symbols = 8 us + 26 us = 34 us.
#   SIFS 10 us. Short slot 9 us: DIFS 28 us, mean backoff CWmin/2 = 7.5 slots = 67.5 us.
#     Per packet 28 + 67.5 + 254 + 10 + 34 = 393.5 us -> 12000 bits / 393.5 us = 30.5 Mbit/s.
#   Long slot 20 us (any 802.11b station, or no short-slot support): DIFS 50 us, backoff 150 us
#     -> 498 us per packet -> 24.1 Mbit/s.
# Two stations contending (MD and external node) add collisions and doubled backoffs, and a
# real radio adapts its rate below 54 Mbit/s, so 24 Mbit/s is the short-slot ceiling minus those
# losses, or the long-slot ceiling without them. The fixed per-frame airtime is folded into the
# rate (overhead_bytes 0), so small frames (TCP ACKs, the tiny reply) are charged less airtime
# than on a real radio; the uplink data the testbed measures is made of full-size frames.
#
# Delay: an idle WiFi hop has a ping RTT of 1-3 ms; 1.5 ms each way puts the 10 KB bottleneck's
# transfer at about 3.4 ms of serialisation + 3 ms RTT ~ 7 ms, next to Table 5's 8 +- 1 ms.
#
# Queue: the paper's edge-only comm grows 0.09 -> 0.25 s from 5 to 20 Mbit/s of load. With 20
# Mbit/s of UDP in a 24 Mbit/s FIFO about 4 Mbit/s are left to the MD: a 75 KB JPEG needs
# ~0.15 s plus the queue ahead of it, at most 100 x 1514 B x 8 / 24 Mbit/s = 50 ms, plus RTTs
# of slow start: ~0.2-0.25 s. Linux's default txqueuelen (1000 packets) would allow 0.5 s of
# standing queue, which Table 5 does not show. The queue is one FIFO (fair_per_station False):
# the paper observes no protection of the MD from the external node's load on WiFi.


LTE_SRSRAN = LinkPreset(
    name="lte-srsran",
    kind="lte",
    shape=LinkShape(
        rate_mbit=3.0,
        delay_ms=12.0,
        jitter_ms=0.0,
        loss_pct=0.0,
        queue_packets=128,
        overhead_bytes=0,
        fair_per_station=True,
    ),
    source=(
        "Paper Sec. V-D: srsLTE eNodeB and UEs on USRP B210/B200mini, maximum data rate 3 Mbit/s, "
        "fair scheduling of resource blocks to the two UEs. Delay: srsLTE/srsRAN 4G ping RTT "
        "UE-EPC of about 16-36 ms reported by users on the srsRAN 4G issue tracker, "
        "mostly uplink scheduling request + grant. Queue: srsLTE 19.x "
        "lib/include/srslte/interfaces/rrc_interface_types.h, RLC_TX_QUEUE_LEN = 128 SDUs per "
        "bearer (the UE's uplink RLC buffer)."
    ),
    why=(
        "srsLTE link of the paper: 3 Mbit/s, ~24 ms RTT, a 128-packet RLC buffer per UE, served "
        "fairly between MD and external UE by the eNodeB scheduler."
    ),
)
# In the LTE uplink every UE buffers its own data (PDCP/RLC) and transmits only on the resource
# blocks the eNodeB grants it; the scheduler shares them between UEs (round robin or
# proportional fair). So the external UE's load fills *its* buffer, not the MD's: per-station
# queues served in turn. That is why the paper sees LTE "mitigate the delay increase when the
# channel is close to saturation". Header overheads (PDCP 2 B, RLC ~2 B, MAC subheader ~2 B)
# are smaller than the Ethernet header netem already counts: overhead_bytes 0. The observed
# srsLTE RTT oscillates with the scheduling-request period (a sawtooth of ~15 ms); it is not
# emulated as netem jitter because that would reorder packets.


WIRED = LinkPreset(
    name="wired",
    kind="wired",
    shape=LinkShape(
        rate_mbit=100.0,
        delay_ms=0.1,
        jitter_ms=0.0,
        loss_pct=0.0,
        queue_packets=1000,
        overhead_bytes=0,
        fair_per_station=False,
    ),
    source=(
        "Fast Ethernet (IEEE 802.3 100BASE-TX) through one switch or router; queue = Linux's "
        "default txqueuelen of 1000 packets."
    ),
    why="A plain 100 Mbit/s Ethernet hop: a control case where the link hardly matters.",
)


PRESETS: dict[str, LinkPreset] = {p.name: p for p in (WIFI_80211G, LTE_SRSRAN, WIRED)}
DEFAULT_PRESET = {"wifi": WIFI_80211G.name, "lte": LTE_SRSRAN.name, "wired": WIRED.name}


@dataclass(frozen=True)
class TcpSettings:
    """TCP sysctls set in every host's network namespace (or on every real host) for a run.

    slow_start_after_idle: ``net.ipv4.tcp_slow_start_after_idle``. Linux's default (True) shrinks
        the congestion window to the initial window after an idle RTO, so a 75 KB frame sent after
        a pause needs several round trips while a 10 KB bottleneck fits in the first window.
    congestion_control: ``net.ipv4.tcp_congestion_control``; ``None`` (the default) keeps the
        kernel's own, which the manifest records. Inside a network namespace only the algorithms
        in the host-wide ``net.ipv4.tcp_allowed_congestion_control`` may be chosen (some kernels
        allow only ``reno bbr`` there), and the testbed does not change host-wide settings.
    """

    slow_start_after_idle: bool = True
    congestion_control: str | None = None

    def sysctls(self) -> dict[str, str]:
        out = {"net.ipv4.tcp_slow_start_after_idle": "1" if self.slow_start_after_idle else "0"}
        if self.congestion_control:
            out["net.ipv4.tcp_congestion_control"] = self.congestion_control
        return out


@dataclass(frozen=True)
class LinkSpec:
    """A scenario's link: a preset's shape with the scenario's overrides applied."""

    kind: str
    preset: str
    shape: LinkShape
    tcp: TcpSettings = field(default_factory=TcpSettings)
    overrides: tuple[str, ...] = ()
    """Shape fields whose value differs from the preset's."""
    source: str = field(default="", compare=False)
    why: str = field(default="", compare=False)

    @property
    def capacity_mbit(self) -> float:
        """The rate competing loads are compared with (a load above it saturates the medium)."""
        return self.shape.rate_mbit

    def to_dict(self) -> dict[str, Any]:
        """The link section that reproduces this spec (all values explicit, flat as in YAML)."""
        out: dict[str, Any] = {"kind": self.kind, "preset": self.preset}
        for name in SHAPING_FIELDS:
            out[name] = getattr(self.shape, name)
        out["tcp"] = asdict(self.tcp)
        return out


def resolve_link(link_section: Mapping[str, Any]) -> LinkSpec:
    """Apply a link section's overrides to its preset.

    ``link_section`` has ``kind`` (required), optionally ``preset`` (default: the kind's preset),
    any of ``SHAPING_FIELDS`` and ``tcp`` (a mapping or ``TcpSettings``). Raises ``ValueError``
    for an unknown kind or preset, a preset of another kind, or an unknown key.
    """
    section = dict(link_section)
    kind = section.pop("kind", None)
    if kind not in LINK_KINDS:
        raise ValueError(f"kind: expected one of {LINK_KINDS}, got {kind!r}")
    name = section.pop("preset", None) or DEFAULT_PRESET[kind]
    if name not in PRESETS:
        raise ValueError(f"preset: expected one of {tuple(PRESETS)}, got {name!r}")
    preset = PRESETS[name]
    if preset.kind != kind:
        raise ValueError(
            f"preset: {name!r} is a {preset.kind} preset but the link kind is {kind} "
            f"(use {DEFAULT_PRESET[kind]!r})"
        )
    tcp = section.pop("tcp", None)
    if tcp is None:
        tcp = TcpSettings()
    elif not isinstance(tcp, TcpSettings):
        tcp = TcpSettings(**dict(tcp))
    unknown = set(section) - set(SHAPING_FIELDS)
    if unknown:
        raise ValueError(f"unknown link keys {sorted(unknown)}; expected {SHAPING_FIELDS}")
    values: dict[str, Any] = {}
    for key, value in section.items():
        if value is None:
            continue
        if key in ("queue_packets", "overhead_bytes"):
            value = int(value)
        elif key == "fair_per_station":
            value = bool(value)
        else:
            value = float(value)
        values[key] = value
    shape = dataclasses.replace(preset.shape, **values)
    overrides = tuple(n for n in SHAPING_FIELDS if getattr(shape, n) != getattr(preset.shape, n))
    return LinkSpec(
        kind=kind,
        preset=name,
        shape=shape,
        tcp=tcp,
        overrides=overrides,
        source=preset.source,
        why=preset.why,
    )
