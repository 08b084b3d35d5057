"""How faithful (and how costly) is the ns3 backend's simulated 802.11g cell?

Brings up one ns3 lab (testbed.lab.ns3_lab: md and ext as stations, es wired to the AP) and
prints:

1. one saturating station (md -> es, iperf3 UDP, 1472 B payloads, offered above capacity): its
   goodput next to the analytic single-station 802.11g DCF saturation goodput
       T = DIFS + CWmin/2 * slot + T_data + SIFS + T_ack,   goodput = 8 * payload / T
   with DIFS = SIFS + 2 slots, the slot ns-3 reports (9 us short slot when every station is
   ERP), SIFS 10 us, CWmin 15, T_ppdu(bytes, rate) = 20 us (16 us preamble + 4 us SIGNAL) +
   4 us * ceil((16 + 8 bytes + 6) / bits per symbol) + 6 us (the ERP-OFDM signal extension of
   the 2.4 GHz band, which ns-3 models), data at 54 Mbit/s (216 bits/symbol) with
   payload + 8 UDP + 20 IP + 8 LLC/SNAP + 24 MAC + 4 FCS bytes, the ACK (14 B) at 24 Mbit/s
   (96 bits/symbol); no collisions, no losses;
2. two saturating stations (md and ext -> es at once): each one's share of the total (DCF gives
   both the same number of transmission opportunities: 50 % each);
3. idle-link transfers of 10,092 B and 75,000 B (benchmarks/message_probe.py: send -> 18-byte
   reply on one TCP connection, 0.2 s gaps), median vs two references. With
       A(bytes, k) = DIFS + k * slot + T_ppdu(bytes + 36 B LLC/MAC/FCS, 54) + SIFS + T_ack
   one DCF access of a frame carrying ``bytes`` of IP after k backoff slots, n = ceil((size + 4)
   / 1448) segments s_i (+ 52 B TCP/IP each), RTT_1 the measured base RTT (1-byte messages):
   - the old lower bound: RTT_1 + sum_i A(s_i, 0) (no backoff, nothing else on the air);
   - the expected floor, what one transfer costs on the air on average:
       E = RTT_1 - A(5 + 52, 0)                      the base RTT's own 1-byte segment
         + A(s_1, 0) + sum_{i>=2} A(s_i, CW/2)       segment 1 finds the air idle (no backoff);
                                                     the rest draw CWmin/2 = 7.5 slots each
         + N_ack * A(52, E[max(b, b')] - CW/2)       the ES's TCP ACKs, sent by the AP: one for
                                                     every 2nd segment (Linux delayed ACK; the
                                                     last segment's rides on the reply), N_ack =
                                                     floor(n / 2); each contends with the MD's next
                                                     segment, their backoffs b, b' ~ U{0..15} count
                                                     down together: E[max] = 10.16 slots for both
         + N_ack / (CW + 1) * C_coll                 b = b': both collide (p = 1/16): C_coll =
                                                     T_ppdu(segment) + ACK timeout (SIFS + slot + 20
                                                     us) + DIFS + (E[max] at CW 31 - at CW 15) slots
         + (air so far / beacon interval) * T_beacon the AP's beacons (102.4 ms; T_beacon measured
                                                     on the idle cell)
         + slow-start stalls                         sum over rounds r (window 10 * 2^r segments) of
                                                     max(0, RTT_1 - window * A(segment, CW/2)): 0
                                                     here (the first ACK is back long before 10
                                                     segments have left), kept for slower cells;
   the 18-byte reply and its MAC ACK are in RTT_1. E is given with two base RTTs: RTT_1 after
   0.2 s gaps, like the transfers (cold), and back to back (warm). After an idle gap every
   thread on the emulated path (the taps' readers, the simulator, the endpoints) wakes cold and
   the real-time simulator falls behind the wall clock: a 1-byte message pays that in full,
   while a longer transfer wins it back as the simulator catches up during the transfer (its
   segments reach the ES closer together than on the air), so its fixed cost lies between the
   two; a transfer is within 10 % when 0.9 E(warm) <= median <= 1.1 E(cold). The counters of
   each size's window give the MAC frames the AP sent and the retries per transfer next to the
   N_ack + 1 and collisions the floor assumes;
4. the ns-3 process's CPU and its real-time lateness (p99, max) while ext sends 20 Mbit/s of
   competing UDP load to es and md runs the transfers.

    .venv/bin/python benchmarks/ns3_fidelity.py [--seconds 6] [--count 15] [--json out.json]  (root)

With ``--lte [--scheduler rr|pf]`` the LENA LTE cell instead (``lte()``): one saturating UE, two
saturating UEs against 1.5 Mbit/s +- 10 % each, the simulator's CPU and lateness.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from testbed.lab import netns, procs
from testbed.lab.ns3_lab import Ns3Lab
from testbed.lab.plan import LabPlan, LinkShape
from testbed.vm.shaping import transfer_times

PAYLOAD = 1472
SIFS_US, CWMIN = 10, 15
SIGNAL_EXTENSION_US = 6  # ERP-OFDM, 2.4 GHz: after every PPDU (the old analytic figure left it out)
MAC_OVERHEAD = 8 + 24 + 4  # LLC/SNAP, MAC header, FCS
ACK_BYTES = 14
MSS, TCP_IP = 1448, 52  # TCP payload per segment; IP + TCP headers with timestamps
INITCWND = 10
BEACON_INTERVAL_US = 102_400.0  # ns-3's ApWifiMac default


def ppdu_us(nbytes: int, bits_per_symbol: int, extension_us: int = SIGNAL_EXTENSION_US) -> float:
    return 20 + 4 * math.ceil((16 + 8 * nbytes + 6) / bits_per_symbol) + extension_us


def frame_us(mac_bytes: int, slot_us: int, backoff: bool = True,
             extension_us: int = SIGNAL_EXTENSION_US) -> float:
    """One DCF data exchange: DIFS (+ mean backoff) + data at 54 + SIFS + ACK at 24."""
    difs = SIFS_US + 2 * slot_us
    return (difs + (CWMIN / 2 * slot_us if backoff else 0) + ppdu_us(mac_bytes, 216, extension_us)
            + SIFS_US + ppdu_us(ACK_BYTES, 96, extension_us))


def analytic_udp_mbit(slot_us: int, payload: int = PAYLOAD,
                      extension_us: int = SIGNAL_EXTENSION_US) -> float:
    return 8 * payload / frame_us(payload + 8 + 20 + MAC_OVERHEAD, slot_us,
                                  extension_us=extension_us)


def segments(size: int) -> list[int]:
    """The TCP payloads (MSS 1448) of one probe message: ``size`` + its 4-byte length prefix."""
    wire = size + 4
    n = math.ceil(wire / MSS)
    return [MSS] * (n - 1) + [wire - MSS * (n - 1)]


def transfer_floor_s(size: int, rtt_s: float, slot_us: int) -> float:
    """The old lower bound, as it was: base RTT + every segment's DCF exchange without backoff
    (nor signal extension)."""
    air = sum(frame_us(s + TCP_IP + MAC_OVERHEAD, slot_us, backoff=False, extension_us=0)
              for s in segments(size))
    return rtt_s + air / 1e6


def mean_max_backoff(cw: int) -> float:
    """E[max(b, b')] of two independent backoffs b, b' ~ U{0..cw} (slots)."""
    return cw - sum(j * j for j in range(1, cw + 1)) / (cw + 1) ** 2


def access_us(ip_bytes: int, slots: float, slot_us: int) -> float:
    """A(bytes, k): one DCF exchange of a frame with ``ip_bytes`` of IP after ``slots`` of
    backoff: DIFS + backoff + data PPDU at 54 + SIFS + ACK at 24."""
    return (SIFS_US + 2 * slot_us + slots * slot_us + ppdu_us(ip_bytes + MAC_OVERHEAD, 216)
            + SIFS_US + ppdu_us(ACK_BYTES, 96))


def expected_floor(size: int, rtt_s: float, slot_us: int,
                   beacon_us: float) -> dict[str, float]:
    """The expected-cost floor of one idle transfer (module docstring, 3.), by component (ms)
    and in total (``total_ms``)."""
    segs = segments(size)
    n, n_ack = len(segs), len(segs) // 2
    half = CWMIN / 2
    seg_air = [access_us(s + TCP_IP, 0 if i == 0 else half, slot_us) for i, s in enumerate(segs)]
    pair = mean_max_backoff(CWMIN) - half
    extra_backoff = mean_max_backoff(2 * CWMIN + 1) - mean_max_backoff(CWMIN)
    collision = (ppdu_us(MSS + TCP_IP + MAC_OVERHEAD, 216) + SIFS_US + slot_us + 20
                 + SIFS_US + 2 * slot_us + extra_backoff * slot_us)
    parts = {
        "base_rtt": rtt_s * 1e6 - access_us(5 + TCP_IP, 0, slot_us),
        "segments_no_backoff": sum(access_us(s + TCP_IP, 0, slot_us) for s in segs),
        "segment_backoff": (n - 1) * half * slot_us,
        "tcp_acks": n_ack * access_us(TCP_IP, pair, slot_us),
        "collisions": n_ack / (CWMIN + 1) * collision,
    }
    air = sum(seg_air) + parts["tcp_acks"] + parts["collisions"]
    parts["beacons"] = air / BEACON_INTERVAL_US * beacon_us
    full = access_us(MSS + TCP_IP, half, slot_us)
    stall, window, sent = 0.0, INITCWND, 0
    while sent + window < n:  # the next round waits for the first ACK of this one
        stall += max(0.0, rtt_s * 1e6 + full - window * full)
        sent += window
        window *= 2
    parts["slow_start_stalls"] = stall
    out = {k: v / 1e3 for k, v in parts.items()}
    out["total_ms"] = sum(out.values())
    out["segments"], out["tcp_acks_expected"] = n, n_ack
    out["collisions_expected"] = n_ack / (CWMIN + 1)
    return out


def _iperf_server(lab: Ns3Lab, port: int) -> subprocess.Popen:
    proc = netns.popen_in_namespace(
        lab.namespace("es"), ["iperf3", "-s", "-1", "-J", "-B", lab.address("es"), "-p", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    end = time.monotonic() + 10
    while not procs.listening(proc.pid, lab.address("es"), port):
        if time.monotonic() > end or proc.poll() is not None:
            raise RuntimeError(f"iperf3 server on port {port} did not start")
        time.sleep(0.05)
    return proc


def udp_goodputs(lab: Ns3Lab, senders: dict[str, float], seconds: float,
                 port: int) -> dict[str, float]:
    """Received UDP goodput (Mbit/s) of each sender -> es, all at once, ``rate`` Mbit/s offered;
    servers on ``port``, ``port + 1``... (fresh ports: a previous flow's late packets must not
    meet a new server)."""
    servers = {h: _iperf_server(lab, port + i) for i, h in enumerate(senders)}
    clients = {h: netns.popen_in_namespace(
        lab.namespace(h), ["iperf3", "-u", "-c", lab.address("es"), "-p", str(port + i),
                           "-b", f"{rate}M", "-l", str(PAYLOAD), "-t", f"{seconds:g}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i, (h, rate) in enumerate(senders.items())}
    out = {}
    for h in senders:
        clients[h].wait(timeout=seconds + 30)
        report = json.loads(servers[h].communicate(timeout=30)[0])
        if "sum_received" not in report.get("end", {}):
            raise RuntimeError(f"iperf3 {h} -> es: {report.get('error', 'no receiver summary')}")
        out[h] = report["end"]["sum_received"]["bits_per_second"] / 1e6
    return out


def _late(counted: dict[str, Any]) -> str:
    late = counted["lateness"]
    return (f"[ns-3 CPU {counted.get('ns3_cpu_pct')} % of a core, lateness p99 "
            f"{late.get('p99_ms')} ms, max {late.get('max_ms')} ms]")


def saturation(lab: Ns3Lab, slot: int, seconds: float) -> dict[str, Any]:
    """1. and 2.: one, then two saturating stations."""
    lab.conditions()
    one = udp_goodputs(lab, {"md": 40.0}, seconds, 5700)["md"]
    counted = lab.medium_counters()
    model, before = analytic_udp_mbit(slot), analytic_udp_mbit(slot, extension_us=0)
    print(f"\n1. one saturating station, UDP {PAYLOAD} B: {one:.2f} Mbit/s; analytic DCF "
          f"{model:.2f} Mbit/s (T = {frame_us(PAYLOAD + 64, slot):.1f} us/frame); "
          f"ratio {one / model:.3f} (without the signal extension: {before:.2f} Mbit/s, "
          f"{one / before:.3f}) {_late(counted)}")
    res: dict[str, Any] = {"one_station": {"measured_mbit": one, "analytic_mbit": model,
                                           "ratio": one / model, "analytic_mbit_before": before,
                                           "counters": counted}}
    lab.conditions()
    two = udp_goodputs(lab, {"md": 40.0, "ext": 40.0}, seconds, 5710)
    counted = lab.medium_counters()
    total = sum(two.values())
    res["two_stations"] = {h: {"mbit": v, "share": v / total} for h, v in two.items()}
    res["two_stations_counters"] = counted
    print("2. two saturating stations: " + ", ".join(
        f"{h} {v:.2f} Mbit/s ({100 * v / total:.1f} %)" for h, v in two.items())
        + f"; total {total:.2f} Mbit/s; airtime md "
        f"{counted['devices']['md']['airtime_share']:.2f}, ext "
        f"{counted['devices']['ext']['airtime_share']:.2f} {_late(counted)}")
    return res


def _per_transfer(counted: dict[str, Any], count: int) -> dict[str, float]:
    """MAC frames and retries of a window of ``count`` transfers, per transfer."""
    dev = counted["devices"]
    return {"md_frames": dev["md"]["mac_tx"] / count, "ap_frames": dev["ap"]["mac_tx"] / count,
            "collisions": dev["md"]["retries"] / count}


def idle_transfers(lab: Ns3Lab, slot: int, count: int) -> dict[str, Any]:
    """3.: the idle cell's beacon airtime, the base RTT after 0.2 s gaps (cold) and back to back
    (warm), then each size against the old lower bound and the expected floor with either base
    RTT (module docstring), with what the MAC counted."""
    md, es, addr = lab.namespace("md"), lab.namespace("es"), lab.address("es")
    lab.conditions()
    time.sleep(1.0)
    idle = lab.medium_counters()
    beacons = idle["sim_s"] / (BEACON_INTERVAL_US / 1e6)
    beacon_us = idle["devices"]["ap"]["tx_airtime_s"] / beacons * 1e6
    lab.conditions()
    rtt = statistics.median(transfer_times(md, es, addr, 1, count, 0.2))
    base = _per_transfer(lab.medium_counters(), count)
    warm = statistics.median(transfer_times(md, es, addr, 1, count, 0.0, port=5601))
    res: dict[str, Any] = {"beacon_airtime_us": beacon_us, "base_rtt_ms": rtt * 1e3,
                           "base_rtt_warm_ms": warm * 1e3, "base_rtt_counted": base,
                           "transfers": []}
    print(f"\n3. idle-link transfers (median of {count}); base RTT {rtt * 1e3:.2f} ms after 0.2 s "
          f"gaps, {warm * 1e3:.2f} ms back to back (1-byte messages: {base['md_frames']:.1f} MD "
          f"and {base['ap_frames']:.1f} AP frames each); beacon {beacon_us:.0f} us of air every "
          f"{BEACON_INTERVAL_US / 1e3:.1f} ms")
    print(f"{'size B':>7} {'median ms':>9} {'old bound':>9} {'ratio':>6} {'expected':>13} "
          f"{'ratio':>11}   {'AP frames':>9} {'(exp.)':>6} {'coll.':>5} {'(exp.)':>6}")
    rows = []
    for i, size in enumerate((10_092, 75_000)):
        lab.conditions()
        times = transfer_times(md, es, addr, size, count, 0.2, port=5602 + i)
        counted = lab.medium_counters()
        seen = _per_transfer(counted, count)
        med, old = statistics.median(times), transfer_floor_s(size, rtt, slot)
        exp = expected_floor(size, rtt, slot, beacon_us)
        low = expected_floor(size, warm, slot, beacon_us)["total_ms"]
        ratio, ratio_warm = med * 1e3 / exp["total_ms"], med * 1e3 / low
        row = {"size": size, "median_ms": med * 1e3, "floor_ms": old * 1e3, "ratio": med / old,
               "expected_ms": exp["total_ms"], "expected_ratio": ratio,
               "expected_warm_ms": low, "expected_warm_ratio": ratio_warm,
               "within_10pct": 0.9 * low <= med * 1e3 <= 1.1 * exp["total_ms"],
               "expected": exp, "counted_per_transfer": seen, "lateness": counted["lateness"],
               "ns3_cpu_pct": counted.get("ns3_cpu_pct")}
        rows.append(row)
        print(f"{size:7d} {med * 1e3:9.2f} {old * 1e3:9.2f} {med / old:6.3f} "
              f"{low:6.2f}-{exp['total_ms']:6.2f} {ratio_warm:5.3f}-{ratio:5.3f}   "
              f"{seen['ap_frames']:9.1f} {exp['tcp_acks_expected'] + 1:6d} "
              f"{seen['collisions']:5.2f} {exp['collisions_expected']:6.2f}   {_late(counted)}")
    res["transfers"] = rows
    print("expected floor by component (ms, base RTT after gaps): " + "; ".join(
        f"{r['size']} B: " + ", ".join(f"{k} {v:.2f}" for k, v in r["expected"].items()
                                     if k not in ("total_ms", "segments", "tcp_acks_expected",
                                                  "collisions_expected"))
        for r in rows))
    print("  old bound = base RTT + segments without backoff (nor signal extension); the expected "
          "floor adds the signal extension, the segments' backoff, the TCP ACKs the AP sends (and "
          "their collisions with the MD's segments), the beacons, and takes the base RTT's own "
          "1-byte segment out. It is given with both base RTTs: after an idle gap every thread "
          "on the emulated path wakes cold and the simulator falls behind the wall clock, which "
          "a 1-byte message pays in full and a longer transfer recovers as the simulator "
          "catches up; within 10 %: 0.9 x the warm one <= median <= 1.1 x the cold one")
    return res


def loaded(lab: Ns3Lab, seconds: float, count: int) -> dict[str, Any]:
    """4.: 75,000 B transfers while ext sends 20 Mbit/s to es; the simulator's cost."""
    md, es, addr = lab.namespace("md"), lab.namespace("es"), lab.address("es")
    lab.conditions()
    server = _iperf_server(lab, 5800)
    load = netns.popen_in_namespace(
        lab.namespace("ext"), ["iperf3", "-u", "-c", addr, "-p", "5800", "-b", "20M", "-l",
                               str(PAYLOAD), "-t", f"{seconds + 4:g}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    times = transfer_times(md, es, addr, 75_000, count, 0.2)
    load.wait(timeout=seconds + 30)
    got = json.loads(server.communicate(timeout=30)[0])["end"]["sum_received"][
        "bits_per_second"] / 1e6
    counted = lab.medium_counters()
    late = counted["lateness"]
    print(f"\n4. 20 Mbit/s competing load (ext -> es, got {got:.1f}): ns-3 CPU "
          f"{counted.get('ns3_cpu_pct')} % of a core, lateness p99 {late.get('p99_ms')} ms, "
          f"max {late.get('max_ms')} ms over {late['samples']} samples; 75,000 B transfer "
          f"median {statistics.median(times) * 1e3:.1f} ms; MAC retries md "
          f"{counted['devices']['md']['retries']}, ext {counted['devices']['ext']['retries']}, "
          f"ap {counted['devices']['ap']['retries']}; host load average "
          f"{os.getloadavg()[0]:.2f} (2 cores)")
    return {"loaded": {"load_mbit": got, "transfer_75k_median_ms": statistics.median(times) * 1e3,
                       "ns3_cpu_pct": counted.get("ns3_cpu_pct"), "lateness": late,
                       "devices": counted["devices"], "loadavg": os.getloadavg()}}


LTE_TBS_BITS = {6: 3240, 3: 1608}
"""Transport block bits per 1 ms TTI at uplink MCS 24 (TBS index 22; 3GPP TS 36.213 Table
7.1.7.2.1-1) on 6 RBs (one UE alone) and 3 RBs (each of two UEs)."""
LTE_IP_SHARE = PAYLOAD / (PAYLOAD + 28 + 2)  # UDP payload of a PDCP PDU (IP/UDP 28 B, PDCP 2 B)
LTE_SEGMENT_OVERHEAD = TCP_IP + 2 + 2  # TCP/IP, PDCP and RLC UM headers of one TCP segment
LTE_MAC_HEADER = 3  # bytes of each transport block's MAC header


def lte_floor_ms(size: int, rtt_ms: float) -> float:
    """An idle one-message transfer of ``size`` bytes over one UE alone: the base RTT (a 1-byte
    message: request, grant, its TB and the reply) plus the transport blocks the rest needs,
    one per 1 ms TTI on 6 RBs at MCS 24 (TCP, PDCP, RLC headers per segment; MAC per TB). Slow
    start never stalls: the first window (10 segments, 37 TTIs) outlasts the base RTT."""
    tb = LTE_TBS_BITS[6] // 8 - LTE_MAC_HEADER
    air = sum(s + LTE_SEGMENT_OVERHEAD for s in segments(size))
    return rtt_ms + (air - (1 + 4 + LTE_SEGMENT_OVERHEAD)) / tb


def _lte_ues(counted: dict[str, Any]) -> str:
    return "; ".join(f"{h}: RB share {d['rb_share']:.2f}, MCS {d['ul_mcs_mean']}, grants "
                     f"{d['ul_grants']} ({d['ul_unused_grants']} unused), TBs not decoded "
                     f"{d['ul_tb_errors']}, RLC drops {d['ul_rlc_drops']}"
                     for h, d in counted["devices"].items() if d["ul_grants"])


def lte(args: argparse.Namespace) -> int:
    """``--lte``: the LENA cell (md and ext as UEs, es behind the PGW; testbed.lab.ns3_lte).

    1. idle cell: the ns-3 process's CPU and lateness, base RTT (1-byte messages), transfers of
       10,092 B (the paper's bottleneck payload) and 75,000 B (its JPEG), median of ``--count``,
       against their transport-block floor (``lte_floor_ms``);
    2. one saturating UE (md -> es, iperf3 UDP 1472 B, 4 Mbit/s offered): its uplink goodput next
       to the transport blocks' bound (6 RBs at MCS 24 x the UDP payload's share of a PDCP PDU);
    3. two saturating UEs (md and ext -> es at once): each one's goodput against 1.5 Mbit/s
       +- 10 % (the paper's 3 Mbit/s split evenly), RB shares.
    """
    from testbed.lab.ns3_lte import Ns3LteLab
    from testbed.ns3_settings import Ns3Settings

    plan = LabPlan.star(LinkShape(rate_mbit=3, queue_packets=128), router="enb")
    settings = Ns3Settings(rate_control=None, scheduler=args.scheduler)
    res: dict[str, Any] = {"loadavg_start": os.getloadavg(), "scheduler": args.scheduler}
    rows: list[tuple[str, str, str]] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ns3-lte-") as tmp, \
            Ns3LteLab(plan, Path(tmp), settings) as lab:
        res["bringup_s"] = round(time.monotonic() - t0, 1)
        print(f"LTE lab up in {res['bringup_s']} s (scheduler {args.scheduler}): {lab.ready}")
        md, es, addr = lab.namespace("md"), lab.namespace("es"), lab.address("es")

        lab.conditions()
        time.sleep(args.seconds)
        idle = lab.medium_counters()
        rtt = statistics.median(transfer_times(md, es, addr, 1, args.count, 0.2)) * 1e3
        res["idle"] = {"counters": idle, "base_rtt_ms": rtt, "transfers": {}}
        rows.append(("base RTT, 1-byte messages (median)", f"{rtt:.1f} ms", "-"))
        for i, size in enumerate((10_092, 75_000)):
            got = statistics.median(transfer_times(md, es, addr, size, args.count, 0.2,
                                                   port=5602 + i)) * 1e3
            floor = lte_floor_ms(size, rtt)
            res["idle"]["transfers"][str(size)] = {"median_ms": got, "floor_ms": floor,
                                                   "ratio": got / floor}
            rows.append((f"{size:,} B transfer on the idle cell (median)", f"{got:.1f} ms",
                         f"transport-block floor {floor:.1f} ms (ratio {got / floor:.3f})"))

        lab.conditions()
        one = udp_goodputs(lab, {"md": 4.0}, args.seconds, 5900)["md"]
        one_counted = lab.medium_counters()
        bound = LTE_TBS_BITS[6] * 1e3 * LTE_IP_SHARE / 1e6
        res["one_ue"] = {"mbit": one, "tb_bound_mbit": bound, "counters": one_counted}
        rows.append(("one saturating UE (md), UDP goodput", f"{one:.2f} Mbit/s",
                     f"3 Mbit/s; TB bound {bound:.2f} (ratio {one / bound:.3f})"))

        lab.conditions()
        two = udp_goodputs(lab, {"md": 4.0, "ext": 4.0}, args.seconds, 5910)
        two_counted = lab.medium_counters()
        res["two_ues"] = {"mbit": two, "counters": two_counted}
        half = LTE_TBS_BITS[3] * 1e3 * LTE_IP_SHARE / 1e6
        for h, v in two.items():
            ok = abs(v - 1.5) <= 0.15
            rows.append((f"two saturating UEs: {h}, UDP goodput", f"{v:.2f} Mbit/s",
                         f"1.5 +- 10 %: {'ok' if ok else 'MISSED'}; TB bound {half:.2f}"))
        rows.append(("two saturating UEs: RB share md / ext",
                     " / ".join(f"{two_counted['devices'][h]['rb_share']:.2f}" for h in two),
                     "0.50 / 0.50"))
        for label, c in (("idle", idle), ("one UE", one_counted), ("two UEs", two_counted)):
            late = c["lateness"]
            rows.append((f"ns-3 CPU, lateness p99 (max): {label}",
                         f"{c.get('ns3_cpu_pct')} % of a core, {late.get('p99_ms')} ms "
                         f"({late.get('max_ms')} ms)", "p99 <= 1 ms (else ns3-late)"))
    res["loadavg_end"] = os.getloadavg()
    width = max(len(r[0]) for r in rows)
    print(f"\n{'LTE check':<{width}}  {'measured':<34}  reference")
    for name, got, ref in rows:
        print(f"{name:<{width}}  {got:<34}  {ref}")
    print(f"\none UE: {_lte_ues(one_counted)}\ntwo UEs: {_lte_ues(two_counted)}\nhost load "
          f"average {res['loadavg_start'][0]:.2f} -> {res['loadavg_end'][0]:.2f} (2 cores)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="per UDP measurement")
    ap.add_argument("--count", type=int, default=15, help="transfers per size")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--lte", action="store_true",
                    help="the LTE cell instead (LENA eNB + EPC; see lte()): UE uplink shares")
    ap.add_argument("--scheduler", choices=("rr", "pf"), default="rr",
                    help="with --lte: the eNB's MAC scheduler")
    ap.add_argument("--idle-only", action="store_true",
                    help="only the idle cell and its transfers (3.), not the saturation and load")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("ns3_fidelity: needs root (namespaces, taps)", file=sys.stderr)
        return 2
    if args.lte:
        return lte(args)
    plan = LabPlan.star(LinkShape(rate_mbit=24))
    res: dict[str, Any] = {"loadavg_start": os.getloadavg()}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ns3-fidelity-") as tmp, Ns3Lab(plan, Path(tmp)) as lab:
        res["bringup_s"] = round(time.monotonic() - t0, 1)
        slot = int(lab.ready["devices"]["md"]["slot_us"])
        res["slot_us"] = slot
        print(f"lab up in {res['bringup_s']} s; slot {slot} us, SIFS {SIFS_US} us")
        if not args.idle_only:
            res.update(saturation(lab, slot, args.seconds))
        res.update(idle_transfers(lab, slot, args.count))
        if not args.idle_only:
            res.update(loaded(lab, args.seconds, args.count))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
