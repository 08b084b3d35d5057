"""Processing cost of each Table 5 configuration on this CPU, without any network.

For every model with a student head and each of the five configurations it prints the median
MD time (capture -> message ready) and ES time (message -> prediction) over N frames after
warm-up, the payload and wire bytes, and the ratio of the full teacher's time to the student
head's time on the same CPU (the paper's reason for distilling the head).

    .venv/bin/python benchmarks/runtime.py [--models densenet201 ...] [--frames 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from testbed import wire
from testbed.configs import table5
from testbed.images import load_images
from testbed.models import catalog
from testbed.models.split import build_split
from testbed.payloads import es_input, es_predict, md_local, md_message


def median_ms(fn, frames, n, warmup):
    times = []
    for i in range(warmup + n):
        image = frames[i % len(frames)].image
        t0 = time.perf_counter_ns()
        fn(i, image)
        if i >= warmup:
            times.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(times)


def bench_config(config, frames, n, warmup):
    model = build_split(config, side="both")
    if config.mode == "LC":
        return median_ms(lambda i, im: md_local(model, im), frames, n, warmup), None, 0, 0
    messages = {}

    def md(i, image):
        messages[i] = md_message(config, model, i, image)

    md_ms = median_ms(md, frames, n, warmup)
    es_ms = median_ms(
        lambda i, _: es_predict(model, es_input(config, model, messages[i], 1 << 30)),
        frames, n, warmup,
    )
    payload = statistics.mean(len(m.payload) for m in messages.values())
    wire_bytes = statistics.mean(len(wire.encode(m)) for m in messages.values())
    return md_ms, es_ms, payload, wire_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(catalog.students()))
    parser.add_argument("--frames", type=int, default=10, help="measured frames (median of these)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a weak MD)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames = load_images("builtin")
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.frames} frames")
    print(f"{'model':13s} {'configuration':17s} {'mode':4s} {'MD ms':>8s} {'ES ms':>8s} "
          f"{'payload B':>10s} {'wire B':>8s} {'overhead':>8s}")
    ratios = []
    for name in args.models:
        rows = {}
        for config in table5(name).values():
            md_ms, es_ms, payload, wire_bytes = bench_config(config, frames, args.frames, args.warmup)
            rows[config.name] = md_ms
            over = f"{(wire_bytes / payload - 1) * 100:.2f}%" if payload else "-"
            es = f"{es_ms:8.1f}" if es_ms is not None else f"{'-':>8s}"
            print(f"{name:13s} {config.name:17s} {config.mode:4s} {md_ms:8.1f} {es} "
                  f"{payload:10.0f} {wire_bytes:8.0f} {over:>8s}")
        ratios.append((name, rows["md-only"], rows["mimic-bottleneck"]))
    print("\nfull teacher on the MD vs student head (MD part of mimic-bottleneck), same CPU:")
    for name, full, head in ratios:
        print(f"  {name:13s} teacher {full:8.1f} ms  student head {head:6.1f} ms  ratio {full / head:6.1f}x")


if __name__ == "__main__":
    main()
