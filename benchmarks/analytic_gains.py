"""Crossing points of the analytic model for the paper's own numbers (Section V-A, Fig. 2, 11-13).

For DenseNet-201 split computing (SC: HND student head with the 12-channel quantized bottleneck)
on each of the paper's MD-ES pairs (Raspberry Pi 3B+ -> Jetson TX2, Raspberry Pi 3B+ -> desktop,
Jetson TX2 -> desktop) it prints the data rate at which SC and each alternative take the same
time, computed in closed form, and which side wins below and above:

- SC vs EC (DenseNet-201 on the ES; Fig. 12), SC vs LC (DenseNet-201 on the MD; Fig. 11),
  SC vs local MobileNet v2 (Fig. 13), and EC vs local MobileNet v2 (Fig. 2).

Inputs: Table 1 (full-model times), Table 4 (payloads, KB = 1024 B). The paper gives no head or
tail time of the split DenseNet-201 on these devices as numbers (only Fig. 14's bars), so SC head
and tail times are SCALED: head = share x (DenseNet-201 on the MD), tail = share x (DenseNet-201
on the ES), with shares from Table 5's processing delays (MD: Mimic w/B 0.062 s / MD-only 1.520 s;
ES: 0.0225 s / ES-only 0.034 s). With ``--profile FILE`` (from ``testbed profile``) the shares
measured on that machine are shown as well.

    .venv/bin/python benchmarks/analytic_gains.py [--profile results/profile-host-X.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import paper  # noqa: E402
from analysis.analytic import always_faster, analyse_pair, crossing  # noqa: E402
from analysis.profiles import (paper_devices, paper_payloads, read_profile,  # noqa: E402
                               shares_from_profile, shares_from_table5)

MODEL = "densenet201"


def report(shares, payloads, devices) -> None:
    print(f"SC shares: {shares.source}")
    print(f"payloads:  EC {payloads.jpeg_bytes:.0f} B, SC {payloads.split_bytes:.0f} B (Table 4, KB = 1024 B)")
    print("r*: the rate at which the two take the same time, 8 (P_a - P_b) / (F_b - F_a) (closed form)")
    for md_key, es_key in paper.PAIRS:
        md, es = devices[md_key], devices[es_key]
        p = analyse_pair(md, es, MODEL, payloads, shares)
        print(f"\n  MD {md.name} -> ES {es.name}")
        print(f"    T_LC  = {p.lc.fixed_s:.4g} s (DenseNet-201 on the MD); "
              f"T_MBv2 = {p.mobile.fixed_s:.4g} s (MobileNet v2 on the MD)")
        print(f"    T_EC  = {p.ec.tail_s:.4g} s + {p.ec.payload_bytes:.0f} B*8/r")
        print(f"    T_SC  = {p.sc.head_s:.4g} s (head) + {p.sc.payload_bytes:.0f} B*8/r + "
              f"{p.sc.tail_s:.4g} s (tail)")
        for name, (a, b) in {"SC vs EC": (p.sc, p.ec), "SC vs LC": (p.sc, p.lc),
                             "SC vs local MobileNet v2": (p.sc, p.mobile),
                             "EC vs local MobileNet v2": (p.ec, p.mobile)}.items():
            c = crossing(a, b)
            if c is None:
                print(f"    {name:25s} no crossing: {always_faster(a, b) or 'neither'} faster at every rate")
                continue
            win = "SC" if name.startswith("SC") else "EC"
            where = "below" if c.below == a.label else "above"
            print(f"    {name:25s} r* = {c.rate_mbit:8.4g} Mbit/s: {win} faster {where}, "
                  f"T(r*) = {c.total_s:.4g} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", help="a `testbed profile` JSON: also show its measured shares")
    args = parser.parse_args()
    devices = paper_devices()
    payloads = paper_payloads(MODEL)
    print("DenseNet-201 split computing (HND, N_ch = 12, quantized), paper Tables 1, 4 and 5\n")
    report(shares_from_table5(), payloads, devices)
    if args.profile:
        profile = read_profile(args.profile)
        print(f"\n\nSame, with head/tail shares measured on {profile.name} ({profile.source})\n")
        report(shares_from_profile(profile, MODEL), payloads, devices)


if __name__ == "__main__":
    main()
