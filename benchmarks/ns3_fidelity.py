"""How faithful (and how costly) is the ns3 backend's simulated 802.11g cell?

Brings up one ns3 lab (testbed.lab.ns3_lab: md and ext as stations, es wired to the AP) and
prints:

1. one saturating station (md -> es, iperf3 UDP, 1472 B payloads, offered above capacity): its
   goodput next to the analytic single-station 802.11g DCF saturation goodput
       T = DIFS + CWmin/2 * slot + T_data + SIFS + T_ack,   goodput = 8 * payload / T
   with DIFS = SIFS + 2 slots, the slot ns-3 reports (9 us short slot when every station is
   ERP), SIFS 10 us, CWmin 15, T_ppdu(bytes, rate) = 20 us (16 us preamble + 4 us SIGNAL) +
   4 us * ceil((16 + 8 bytes + 6) / bits per symbol), data at 54 Mbit/s (216 bits/symbol) with
   payload + 8 UDP + 20 IP + 8 LLC/SNAP + 24 MAC + 4 FCS bytes, the ACK (14 B) at 24 Mbit/s
   (96 bits/symbol); no collisions, no losses;
2. two saturating stations (md and ext -> es at once): each one's share of the total (DCF gives
   both the same number of transmission opportunities: 50 % each);
3. idle-link transfers of 10,092 B and 75,000 B (benchmarks/message_probe.py: send -> 18-byte
   reply on one TCP connection, gaps between messages), median vs a floor with DCF and ACK
   overhead: base RTT (1-byte messages) + per 1448 B segment (DIFS + T_data(segment + 52 B
   TCP/IP + 36 B LLC/MAC/FCS) + SIFS + T_ack), no backoff (a lower bound);
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
MAC_OVERHEAD = 8 + 24 + 4  # LLC/SNAP, MAC header, FCS
ACK_BYTES = 14


def ppdu_us(nbytes: int, bits_per_symbol: int) -> float:
    return 20 + 4 * math.ceil((16 + 8 * nbytes + 6) / bits_per_symbol)


def frame_us(mac_bytes: int, slot_us: int, backoff: bool = True) -> float:
    """One DCF data exchange: DIFS (+ mean backoff) + data at 54 + SIFS + ACK at 24."""
    difs = SIFS_US + 2 * slot_us
    return (difs + (CWMIN / 2 * slot_us if backoff else 0) + ppdu_us(mac_bytes, 216) + SIFS_US
            + ppdu_us(ACK_BYTES, 96))


def analytic_udp_mbit(slot_us: int, payload: int = PAYLOAD) -> float:
    return 8 * payload / frame_us(payload + 8 + 20 + MAC_OVERHEAD, slot_us)


def transfer_floor_s(size: int, rtt_s: float, slot_us: int) -> float:
    wire = size + 4  # the probe's length prefix
    segments = math.ceil(wire / 1448)
    last = wire - 1448 * (segments - 1)
    air = (segments - 1) * frame_us(1448 + 52 + MAC_OVERHEAD, slot_us, backoff=False)
    air += frame_us(last + 52 + MAC_OVERHEAD, slot_us, backoff=False)
    return rtt_s + air / 1e6


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


LTE_TBS_BITS = {6: 3240, 3: 1608}
"""Transport block bits per 1 ms TTI at uplink MCS 24 (TBS index 22; 3GPP TS 36.213 Table
7.1.7.2.1-1) on 6 RBs (one UE alone) and 3 RBs (each of two UEs)."""
LTE_IP_SHARE = PAYLOAD / (PAYLOAD + 28 + 2)  # UDP payload of a PDCP PDU (IP/UDP 28 B, PDCP 2 B)


def _lte_ues(counted: dict[str, Any]) -> str:
    return "; ".join(f"{h}: RB share {d['rb_share']:.2f}, MCS {d['ul_mcs_mean']}, grants "
                     f"{d['ul_grants']} ({d['ul_unused_grants']} unused), TBs not decoded "
                     f"{d['ul_tb_errors']}, RLC drops {d['ul_rlc_drops']}"
                     for h, d in counted["devices"].items() if d["ul_grants"])


def lte(args: argparse.Namespace) -> int:
    """``--lte``: the LENA cell (md and ext as UEs, es behind the PGW; testbed.lab.ns3_lte).

    1. idle cell: the ns-3 process's CPU and lateness, base RTT (1-byte messages) and a 10,092 B
       transfer (the paper's bottleneck payload), median of ``--count``;
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
        rtt = statistics.median(transfer_times(md, es, addr, 1, args.count, 0.2))
        small = statistics.median(transfer_times(md, es, addr, 10_092, args.count, 0.2))
        res["idle"] = {"counters": idle, "base_rtt_ms": rtt * 1e3, "transfer_10092_ms": small * 1e3}
        rows.append(("base RTT, 1-byte messages (median)", f"{rtt * 1e3:.1f} ms", "-"))
        rows.append(("10,092 B transfer on the idle cell (median)", f"{small * 1e3:.1f} ms", "-"))

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

        lab.conditions()
        one = udp_goodputs(lab, {"md": 40.0}, args.seconds, 5700)["md"]
        counted = lab.medium_counters()
        model = analytic_udp_mbit(slot)
        res["one_station"] = {"measured_mbit": one, "analytic_mbit": model, "ratio": one / model,
                              "counters": counted}
        print(f"\n1. one saturating station, UDP {PAYLOAD} B: {one:.2f} Mbit/s; analytic DCF "
              f"{model:.2f} Mbit/s (T = {frame_us(PAYLOAD + 64, slot):.1f} us/frame); "
              f"ratio {one / model:.3f} {_late(counted)}")

        lab.conditions()
        two = udp_goodputs(lab, {"md": 40.0, "ext": 40.0}, args.seconds, 5710)
        counted = lab.medium_counters()
        total = sum(two.values())
        res["two_stations"] = {h: {"mbit": v, "share": v / total} for h, v in two.items()}
        res["two_stations_counters"] = counted
        print("2. two saturating stations: " + ", ".join(
            f"{h} {v:.2f} Mbit/s ({100 * v / total:.1f} %)" for h, v in two.items())
            + f"; total {total:.2f} Mbit/s; airtime md "
            f"{counted['devices']['md']['airtime_share']:.2f}, ext "
            f"{counted['devices']['ext']['airtime_share']:.2f} {_late(counted)}")

        print("\n3. idle-link transfers (median of %d) vs the DCF floor" % args.count)
        md, es, addr = lab.namespace("md"), lab.namespace("es"), lab.address("es")
        lab.conditions()
        rtt = statistics.median(transfer_times(md, es, addr, 1, args.count, 0.2))
        res["base_rtt_ms"] = rtt * 1e3
        res["transfers"] = []
        print(f"{'size B':>7} {'median ms':>9} {'floor ms':>8} {'ratio':>6}   (base RTT "
              f"{rtt * 1e3:.2f} ms)")
        for size in (10_092, 75_000):
            times = transfer_times(md, es, addr, size, args.count, 0.2)
            med, floor = statistics.median(times), transfer_floor_s(size, rtt, slot)
            res["transfers"].append({"size": size, "median_ms": med * 1e3,
                                     "floor_ms": floor * 1e3, "ratio": med / floor})
            print(f"{size:7d} {med * 1e3:9.2f} {floor * 1e3:8.2f} {med / floor:6.3f}")
        counted = lab.medium_counters()
        res["transfers_counters"] = counted
        print(f"        {_late(counted)}")

        lab.conditions()
        server = _iperf_server(lab, 5800)
        load = netns.popen_in_namespace(
            lab.namespace("ext"), ["iperf3", "-u", "-c", addr, "-p", "5800", "-b", "20M", "-l",
                                   str(PAYLOAD), "-t", f"{args.seconds + 4:g}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        loaded = transfer_times(md, es, addr, 75_000, args.count, 0.2)
        load.wait(timeout=args.seconds + 30)
        got = json.loads(server.communicate(timeout=30)[0])["end"]["sum_received"][
            "bits_per_second"] / 1e6
        counted = lab.medium_counters()
        res["loaded"] = {"load_mbit": got, "transfer_75k_median_ms": statistics.median(loaded) * 1e3,
                         "ns3_cpu_pct": counted.get("ns3_cpu_pct"),
                         "lateness": counted["lateness"], "devices": counted["devices"],
                         "loadavg": os.getloadavg()}
        late = counted["lateness"]
        print(f"\n4. 20 Mbit/s competing load (ext -> es, got {got:.1f}): ns-3 CPU "
              f"{counted.get('ns3_cpu_pct')} % of a core, lateness p99 {late.get('p99_ms')} ms, "
              f"max {late.get('max_ms')} ms over {late['samples']} samples; 75,000 B transfer "
              f"median {statistics.median(loaded) * 1e3:.1f} ms; MAC retries md "
              f"{counted['devices']['md']['retries']}, ext {counted['devices']['ext']['retries']}, "
              f"ap {counted['devices']['ap']['retries']}; host load average "
              f"{os.getloadavg()[0]:.2f} (2 cores)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
