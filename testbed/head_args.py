"""``testbed head``'s arguments and the :class:`~testbed.head.HeadSettings` they make.

One parser for the one-shot ``testbed head`` and for each step the head agent runs
(``testbed.agent``): a step is the same argument list either way.
"""

from __future__ import annotations

import argparse
import json

from testbed.configs import Configuration, table5
from testbed.devices import compute_argument


def _add_config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("configuration (one of Table 5's, or explicit fields, or JSON)")
    g.add_argument("--configuration", "--preset", dest="configuration",
                   help="one of Table 5's configurations: md-only | es-only | org-split2 | "
                        "mimic-split2 | mimic-bottleneck (--preset: the old name of this option)")
    g.add_argument("--config-json", help="a whole configuration as a JSON object")
    g.add_argument("--name", help="configuration name written in every record")
    g.add_argument("--mode", choices=["LC", "EC", "SC"])
    g.add_argument("--model", default="densenet201", help="torchvision model (default: densenet201)")
    g.add_argument("--kind", choices=["teacher", "student"], default="teacher")
    g.add_argument("--split", help="split point name or 1-based index (SC)")
    g.add_argument("--n-ch", type=int, help="student bottleneck channels (default for Table 5's configurations: 12)")
    g.add_argument("--no-quantize", action="store_true", help="SC: send float32, not 8-bit")
    g.add_argument("--compression", choices=["none", "zlib"], default="none")
    g.add_argument("--jpeg-quality", type=int, default=95)
    g.add_argument("--jpeg-size", type=int,
                   help="EC: side of the JPEG sent, px (default: the model's input; 432 with "
                        "--jpeg-quality 98 matches the paper's 74.34 KB)")
    g.add_argument("--weights", help="checkpoint path (state dict; loaded with weights_only=True)")


def add_head_arguments(p: argparse.ArgumentParser) -> None:
    """``testbed head``'s arguments (the head agent parses each step's with these too)."""
    _add_config_args(p)
    p.add_argument("--connect", type=host_port, help="tail address HOST:PORT (not needed for LC)")
    p.add_argument("--frames", type=int, default=50, help="measured frames (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up frames first (default 5)")
    p.add_argument("--images", default="builtin", help="image folder, or 'builtin' (default)")
    p.add_argument("--capture-rate", type=float, help="capture at this rate (Hz) instead of back-to-back")
    p.add_argument("--busy-policy", choices=("drop", "queue"), default="queue",
                   help="with --capture-rate: drop or queue (default) a frame that arrives "
                        "while the MD is busy")
    p.add_argument("--deadline-ms", type=float,
                   help="each frame's deadline (ms): records say whether it was met")
    p.add_argument("--md-name", default="", help="the MD host's name, written in records")
    p.add_argument("--records", default="frames.csv", help="CSV to append records to")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights (must match the tail)")
    p.add_argument("--run-id", default="adhoc")
    p.add_argument("--step", default="", help="step id written in records (set by the orchestrator)")
    p.add_argument("--load", type=float, help="competing load of this step, Mbit/s (for records)")
    p.add_argument("--repetition", type=int, default=0)
    p.add_argument("--compute", type=compute_argument, default=None, metavar="PROFILE",
                   help="this MD's compute model: 'real' (default) or a device profile (shipped "
                        "name or file) whose MD times it replays (README: Emulated devices)")


def _config_from_args(args: argparse.Namespace):
    if args.config_json:
        try:
            data = json.loads(args.config_json)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"--config-json: not valid JSON ({exc})")
        if not isinstance(data, dict):
            raise SystemExit("--config-json: expected a JSON object")
        try:
            return Configuration.from_dict(data).validated()
        except (TypeError, ValueError) as exc:
            raise SystemExit(f"--config-json: {exc}")
    if args.configuration:
        table = table5(args.model, args.n_ch or 12)
        if args.configuration not in table:
            raise SystemExit(f"--configuration: expected one of {', '.join(table)}, "
                             f"got {args.configuration!r}")
        return table[args.configuration].validated()
    if not args.mode:
        raise SystemExit("give --configuration, --config-json, or at least --mode (LC, EC or SC)")
    split = int(args.split) if args.split and args.split.isdigit() else args.split
    config = Configuration(
        name=args.name or f"{args.mode}-{args.model}", mode=args.mode, model=args.model,
        kind=args.kind, split=split, n_ch=args.n_ch, quantize=not args.no_quantize,
        compression=args.compression, jpeg_quality=args.jpeg_quality, weights=args.weights,
        jpeg_size=args.jpeg_size,
    )
    try:
        return config.validated()
    except ValueError as exc:
        raise SystemExit(str(exc))


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def head_settings(args: argparse.Namespace):
    """The HeadSettings of ``testbed head``'s arguments (also each step of ``testbed agent``)."""
    from testbed.head import HeadSettings, StepContext  # torch: only when a head is made

    return HeadSettings(
        config=_config_from_args(args), server=args.connect, frames=args.frames,
        warmup=args.warmup, images=args.images, capture_rate_hz=args.capture_rate, seed=args.seed,
        threads=args.threads, compute=args.compute, busy_policy=args.busy_policy,
        deadline_s=args.deadline_ms / 1000 if args.deadline_ms is not None else None,
        context=StepContext(run_id=args.run_id, step=args.step, load_mbit=args.load,
                            repetition=args.repetition, md=args.md_name),
    )
