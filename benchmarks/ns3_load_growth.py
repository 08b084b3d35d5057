"""How much can 802.11 DCF contention stretch a frame's transfer as the competing load grows?

The ns3 backend's 802.11g cell against DCF arithmetic. For each placement (station distances,
rate control, direction of the external node's load) one ns-3 lab comes up; at each load the
external node runs iperf3 UDP (1472 B) and the MD sends ``--count`` one-message TCP transfers of
``--size`` bytes (the paper's es-only JPEG: 77,483 B) ``--gap`` apart (es-only's ES time), each
timed to its 18-byte reply like a frame's comm (benchmarks/message_probe.py). Printed per
placement and load: the transfers' mean, sd, median, p90 and max, the load the external node
got through, MAC retries and retry-limit drops per station, the simulator's lateness; then the
growth from the second load to the last.

The DCF prediction (stations in range of each other, constant 54 Mbit/s, uplink load): with
A(b, k) one DCF exchange of b IP bytes after k backoff slots (benchmarks/ns3_fidelity.py),
t_m = A(1500, 7.5) an MD segment, t_a = A(52, 7.5) a TCP ACK from the AP (one per two
segments), t_e = A(1500, 7.5) an external frame and rho = lambda * t_e the air the load
takes alone (lambda = load / (8 * 1472) frames/s), one MD segment costs

    c(L) = min((t_m + t_a / 2) / (1 - rho),  t_m + t_a / 2 + t_e)

the first while the external node leaves the MD the rest of the air, the second once it is
backlogged: DCF gives each station with a frame queued one access in turn, so the MD's segments
alternate with its frames one for one. The prediction is T(L) = T(0) + n * (c(L) - c(0)) with
T(0) measured and n the transfer's segments (collisions not counted). The growth between two
loads is then at most c(hi) / c(lo) (T(0) only dilutes it); over every possible contender frame
time t_e the largest value of (1 - lambda_lo * t_e) * (1 + t_e / (t_m + t_a / 2)) is printed
too: the most any slower (or faster) contender could give.

    .venv/bin/python benchmarks/ns3_load_growth.py [--placements in-range hidden downlink]
        [--loads 0 5 20] [--size 77483] [--count 30] [--gap 0.035] [--json out.json]   (root)

Placements: ``in-range`` (md 5 m, ext 10 m: they hear each other; the ns3 default),
``hidden`` (md and ext 30 m from the AP on opposite sides, 60 m apart: 100 dB of loss, -84 dBm,
below the -82 dBm preamble detection threshold, so neither defers to the other while the AP
still decodes both at 54 Mbit/s), ``downlink`` (in range; the external node receives, so its
load shares the AP's one queue with the ES's ACKs and replies), ``minstrel`` (in range, minstrel
rate control). About 1.5 min per placement with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ns3_fidelity import MSS, PAYLOAD, TCP_IP, _iperf_server, access_us  # noqa: E402

from testbed.lab import netns  # noqa: E402
from testbed.lab.ns3_lab import Ns3Lab  # noqa: E402
from testbed.lab.plan import LabPlan, LinkShape  # noqa: E402
from testbed.ns3_settings import Ns3Settings  # noqa: E402
from testbed.traffic import IperfError, parse_report  # noqa: E402
from testbed.vm.shaping import transfer_times  # noqa: E402

HALF_CW = 7.5  # CWmin / 2 slots: the mean first backoff
SLOT_US = 9  # the ERP short slot (every station is ERP)


@dataclass(frozen=True)
class Placement:
    distance_m: dict[str, float]
    rate_control: str = "constant"
    downlink: bool = False
    what: str = ""


PLACEMENTS = {
    "in-range": Placement({"md": 5, "ext": 10}, what="md 5 m, ext 10 m: each hears the other"),
    "hidden": Placement({"md": 30, "ext": 30},
                        what="md and ext 30 m from the AP, 60 m apart: hidden from each other"),
    "downlink": Placement({"md": 5, "ext": 10}, downlink=True,
                          what="in range; the load goes es -> ext through the AP's queue"),
    "minstrel": Placement({"md": 5, "ext": 10}, rate_control="minstrel",
                          what="in range, minstrel rate control"),
}


def per_segment_us(load_mbit: float) -> float:
    """c(L): the MD's air cost of one segment at ``load_mbit`` of uplink UDP (docstring)."""
    t_m, t_a, t_e = (access_us(1500, HALF_CW, SLOT_US), access_us(TCP_IP, HALF_CW, SLOT_US),
                     access_us(PAYLOAD + 28, HALF_CW, SLOT_US))
    rho = load_mbit * 1e6 / (8 * PAYLOAD) * t_e / 1e6
    alternate = t_m + t_a / 2 + t_e
    return alternate if rho >= 1 else min((t_m + t_a / 2) / (1 - rho), alternate)


def largest_growth(lo_mbit: float) -> tuple[float, float]:
    """The largest c(hi)/c(lo) any contender frame time t_e could give with a backlogged
    contender at the high load: max over t_e of (1 - lambda_lo t_e)(1 + t_e / (t_m + t_a/2)),
    and the t_e (us) where it is reached."""
    own = access_us(1500, HALF_CW, SLOT_US) + access_us(TCP_IP, HALF_CW, SLOT_US) / 2
    lam = lo_mbit * 1e6 / (8 * PAYLOAD) / 1e6  # frames per us
    best = max(((1 - lam * t) * (1 + t / own), t) for t in range(100, 20_000, 10))
    return best


def predicted_ms(t0_ms: float, size: int, load_mbit: float) -> float:
    n = -(-(size + 4) // MSS)
    return t0_ms + n * (per_segment_us(load_mbit) - per_segment_us(0)) / 1e3


def _load(lab: Ns3Lab, load: float, port: int, downlink: bool) -> tuple[Any, Any]:
    server = _iperf_server(lab, port)
    client = netns.popen_in_namespace(
        lab.namespace("ext"), ["iperf3", "-u", "-c", lab.address("es"), "-p", str(port), "-b",
                               f"{load}M", "-l", str(PAYLOAD), "-t", "600"]
        + (["-R"] if downlink else []),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return server, client


def _got_mbit(server: Any, client: Any) -> float | None:
    """What the load achieved: received at es (uplink), or sent by es (downlink: the server of
    a reverse test only sends)."""
    client.terminate()
    client.wait(timeout=10)
    try:
        return parse_report(server.communicate(timeout=20)[0], stopped_by_client=True).achieved_mbit
    except (IperfError, subprocess.TimeoutExpired):  # a missing report only blanks this column
        server.kill()
        return None


def placement(name: str, p: Placement, loads: list[float], size: int, count: int,
              gap: float) -> dict[str, Any]:
    settings = Ns3Settings(distance_m=p.distance_m, rate_control=p.rate_control)
    rows: dict[float, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ns3-growth-") as tmp, \
            Ns3Lab(LabPlan.star(LinkShape(rate_mbit=24)), Path(tmp), settings) as lab:
        md, es, addr = lab.namespace("md"), lab.namespace("es"), lab.address("es")
        for i, load in enumerate(loads):
            port = 6000 + 10 * i
            lab.conditions()
            running = _load(lab, load, port, p.downlink) if load else None
            if running:
                time.sleep(1.0)
            try:
                times = sorted(t * 1e3 for t in transfer_times(md, es, addr, size, count, gap,
                                                              port=port + 5))
            finally:
                got = _got_mbit(*running) if running else 0.0
            c = lab.medium_counters()
            dev = c["devices"]
            rows[load] = {
                "mean_ms": statistics.mean(times), "sd_ms": statistics.stdev(times),
                "median_ms": statistics.median(times), "p90_ms": times[int(0.9 * len(times))],
                "max_ms": times[-1], "got_mbit": got,
                "retries": {h: dev[h]["retries"] for h in dev},
                "drops": {h: dev[h]["retry_limit_drops"] for h in dev},
                "late_p99_ms": c["lateness"].get("p99_ms"), "ns3_cpu_pct": c.get("ns3_cpu_pct")}
            r = rows[load]
            print(f"{name:9s} {load:5.0f} {'-' if got is None else f'{got:5.1f}':>5} "
                  f"{r['mean_ms']:7.1f} {r['sd_ms']:6.1f} {r['median_ms']:7.1f} {r['p90_ms']:7.1f} "
                  f"{r['max_ms']:7.1f}  {r['retries']['md']:5d} {r['retries']['ext']:5d} "
                  f"{r['retries']['ap']:4d}  {r['drops']['md']:4d} {r['drops']['ap']:4d}  "
                  f"{r['late_p99_ms']}", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--placements", nargs="+", choices=sorted(PLACEMENTS),
                    default=["in-range", "hidden", "downlink"],
                    help="; ".join(f"{k}: {p.what}" for k, p in PLACEMENTS.items()))
    ap.add_argument("--loads", nargs="+", type=float, default=[0.0, 5.0, 20.0],
                    help="external load steps, Mbit/s; the growth is from the second (the "
                         "first, of two) to the last")
    ap.add_argument("--size", type=int, default=77_483, help="bytes per transfer")
    ap.add_argument("--count", type=int, default=30, help="transfers per load")
    ap.add_argument("--gap", type=float, default=0.035, help="seconds between transfers")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("ns3_load_growth: needs root (namespaces, taps)", file=sys.stderr)
        return 2
    if len(args.loads) < 2:
        ap.error("--loads: give at least two loads")
    lo, hi = args.loads[0 if len(args.loads) == 2 else 1], args.loads[-1]
    out: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()},
                           "loadavg_start": os.getloadavg(), "placements": {}}
    print(f"{args.count} transfers of {args.size} B per load, {args.gap * 1e3:.0f} ms apart; "
          f"load average {os.getloadavg()[0]:.2f} (2 cores)")
    for name in args.placements:
        print(f"  {name}: {PLACEMENTS[name].what}")
    print(f"{'placement':9s} {'load':>5} {'got':>5} {'mean':>7} {'sd':>6} {'median':>7} "
          f"{'p90':>7} {'max':>7}  {'retries md/ext/ap':>16}  {'drops md/ap':>9}  late p99 (ms)")
    for name in args.placements:
        try:
            rows = placement(name, PLACEMENTS[name], args.loads, args.size, args.count, args.gap)
        except Exception as exc:  # noqa: BLE001 - one placement's failure must not end the table
            print(f"{name}: failed: {exc}")
            out["placements"][name] = {"error": str(exc)}
            continue
        out["placements"][name] = {str(k): v for k, v in rows.items()}
        if lo in rows and hi in rows:
            g_mean = rows[hi]["mean_ms"] / rows[lo]["mean_ms"]
            g_med = rows[hi]["median_ms"] / rows[lo]["median_ms"]
            print(f"{name:9s} growth {lo:g} -> {hi:g} Mbit/s: mean {g_mean:.2f}x, median "
                  f"{g_med:.2f}x")
            out["placements"][name]["growth"] = {"mean": g_mean, "median": g_med}
    base = out["placements"].get("in-range", {}).get(str(args.loads[0]))
    if base and args.loads[0] == 0:
        print(f"\nDCF prediction for in-range (T(0) = {base['mean_ms']:.1f} ms measured; "
              f"collisions not counted):")
        for load in args.loads[1:]:
            seen = out["placements"]["in-range"].get(str(load), {}).get("mean_ms")
            pred = predicted_ms(base["mean_ms"], args.size, load)
            print(f"  {load:4g} Mbit/s: predicted {pred:6.1f} ms, measured "
                  f"{'-' if seen is None else f'{seen:6.1f} ms ({seen / pred:.2f})'}; one MD "
                  f"segment costs {per_segment_us(load):.0f} us of air")
    bound, t_e = largest_growth(lo)
    print(f"\nThe most a segment's cost can grow from {lo:g} to a backlogged contender at {hi:g} "
          f"Mbit/s: {per_segment_us(hi) / per_segment_us(lo):.2f}x with a 54 Mbit/s contender; "
          f"{bound:.2f}x over every contender frame time (reached at {t_e:.0f} us per frame, "
          f"against {access_us(PAYLOAD + 28, HALF_CW, SLOT_US):.0f} us at 54 Mbit/s)")
    out["dcf_bound"] = {"same_rate": per_segment_us(hi) / per_segment_us(lo),
                        "any_contender": bound, "at_frame_us": t_e}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
