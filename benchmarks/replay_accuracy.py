"""How closely replayed processing follows a device profile, over loopback.

A real tail (``TailServer``, replaying the ES profile) and a real head (replaying the MD
profile) on 127.0.0.1; for every configuration, each measured frame's md_proc and es_proc are
compared with the very sample the profile drew for it (``replay.Pacer``, same seed). Prints the
sampled and measured means, the excess (measured - sampled: sleep wake-up latency and the
little real work left on the critical path) and the frames flagged compute_overrun.

    .venv/bin/python benchmarks/replay_accuracy.py                      # the paper's WiFi devices
    .venv/bin/python benchmarks/replay_accuracy.py --md rpi3b+ --es jetson-tx2 --model mobilenet_v2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from testbed.devices import load_profile
from testbed.head import HeadSettings, run_head
from testbed.images import load_images
from testbed.profile import configurations
from testbed.records import read_records
from testbed.replay import Pacer
from testbed.tail import TailServer, TailSettings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--md", default="paper-wifi-md", help="MD profile (shipped name or file)")
    p.add_argument("--es", default="paper-wifi-es", help="ES profile (shipped name or file)")
    p.add_argument("--model", default="densenet201")
    p.add_argument("--configs", nargs="+", help="Table 5 names (default: every one both have)")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    md, es = load_profile(args.md), load_profile(args.es)
    frames = load_images("builtin")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, \
            TailServer(TailSettings(port=0, compute=es, seed=args.seed, threads=1)) as tail:
        tail.start()
        for config in configurations(args.model, names=args.configs):
            sides = ["md"] + ([] if config.mode == "LC" else ["es"])
            profiles = {"md": md, "es": es}
            if any((args.model, config.name, s) not in profiles[s].parts for s in sides):
                continue
            path = Path(tmp) / f"{config.name}.csv"
            run_head(HeadSettings(config=config, server=tail.address, frames=args.frames,
                                  warmup=args.warmup, seed=args.seed, threads=1, compute=md),
                     path, frames=frames)
            measured = [r for r in read_records(path) if not r.warmup and r.status == "ok"]
            for side in sides:
                pacer = Pacer.of(profiles[side], args.model, config.name, side, args.seed)
                sampled = [pacer.sample_ns(r.frame_id) * 1e-9 for r in measured]
                got = [getattr(r, f"{side}_proc") for r in measured]
                excess = sorted((g - s) * 1e3 for g, s in zip(got, sampled))
                rows.append((config.name, side, len(got), statistics.mean(sampled) * 1e3,
                             statistics.mean(got) * 1e3, statistics.mean(excess),
                             excess[min(len(excess) - 1, int(0.99 * len(excess)))],
                             sum(side in r.compute_overrun for r in measured)))
    print(f"{'configuration':17s} {'side':4s} {'n':>3s} {'sampled ms':>11s} {'measured ms':>12s} "
          f"{'ratio':>6s} {'excess ms':>10s} {'p99 exc.':>9s} {'overrun':>7s}")
    for name, side, n, smean, gmean, exc, p99, over in rows:
        ratio = gmean / smean if smean else float("nan")
        print(f"{name:17s} {side:4s} {n:3d} {smean:11.2f} {gmean:12.2f} {ratio:6.3f} {exc:10.2f} "
              f"{p99:9.2f} {over:7d}")


if __name__ == "__main__":
    main()
