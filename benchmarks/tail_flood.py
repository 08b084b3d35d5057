"""Flood a live `testbed tail` with connections and watch its memory and threads.

Starts ``testbed tail`` as a subprocess on 127.0.0.1 (so the figures are the real process's),
warms it up with one good EC session (MobileNetV2, random weights), then, while a good head
streams frames on its own connection, opens CONNECTIONS connections in waves of WAVE, holds each
wave open HOLD_S seconds and closes it. A flood connection stays idle, or (``--frames N``) sends
Hello and N frames, and/or (``--announce BYTES``) sends Hello and the header of a frame of BYTES
bytes and then nothing. Prints the tail's VmRSS, its anonymous part (RssAnon: heap and stacks,
what connections cost; the rest is mostly torch's mapped libraries) and its thread count (from
/proc/PID/status) before, at the peak and SETTLE_S seconds after the flood, how each flood
connection was answered (``served`` = still open when its wave closed, ``busy``/``timeout`` =
the tail's Error, ``closed`` = EOF), and whether the good head lost any frame.

    .venv/bin/python benchmarks/tail_flood.py [--connections 3000] [--wave 1000] [--hold 2]
        [--settle 5] [--frames N] [--announce BYTES] [-- TAIL_ARGS...]

Everything after ``--`` is passed to ``testbed tail`` (e.g. ``-- --max-connections 4000``).
The tail runs with ``--threads 1`` and the environment of this script.
"""

from __future__ import annotations

import argparse
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from testbed import wire
from testbed.configs import Configuration
from testbed.demo import free_port, stop_process, wait_for_port
from testbed.images import encode_jpeg, load_images, resize_crop

CONFIG = Configuration("ec", "EC", "mobilenet_v2")
READ_TIMEOUT_S = 60.0
SESSION_WORKERS = 32


@dataclass(frozen=True)
class Status:
    """VmRSS and its anonymous part (heap, stacks: what connections cost) in MiB, threads."""

    rss: float = 0.0
    anon: float = 0.0
    threads: int = 0

    def max(self, other: "Status") -> "Status":
        return Status(max(self.rss, other.rss), max(self.anon, other.anon),
                      max(self.threads, other.threads))


def status(pid: int) -> Status:
    """The memory and threads of process ``pid`` (from /proc/PID/status)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    kib = lambda name: int(fields[name].split()[0]) / 1024  # noqa: E731
    return Status(kib("VmRSS"), kib("RssAnon"), int(fields["Threads"]))


class PeakSampler(threading.Thread):
    """Samples the process's VmRSS and threads every ``period`` s; keeps the maxima."""

    def __init__(self, pid: int, period: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.peak = Status()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.period):
            self.peak = self.peak.max(status(self.pid))


class GoodHead(threading.Thread):
    """One well-behaved MD streaming EC frames back to back until stopped."""

    def __init__(self, address: tuple[str, int], jpeg: bytes):
        super().__init__(daemon=True)
        self.address, self.jpeg = address, jpeg
        self.sent = self.ok = 0
        self.failure = ""
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            with socket.create_connection(self.address, timeout=READ_TIMEOUT_S) as s:
                hello(s)
                while not self.stop.is_set():
                    self.sent += 1
                    wire.send_message(s, wire.JpegFrame(self.sent, self.jpeg))
                    reply = wire.read_message(s, 1 << 16, timeout=READ_TIMEOUT_S)
                    if not (isinstance(reply, wire.Result) and reply.frame_id == self.sent):
                        raise RuntimeError(f"frame {self.sent}: got {reply}")
                    self.ok += 1
                wire.send_message(s, wire.Bye())
        except Exception as exc:  # reported in the table, not raised from a thread
            self.failure = f"{type(exc).__name__}: {exc}"


class RefusedError(Exception):
    """The tail answered with something other than what a good session expects."""

    def __init__(self, reply: wire.Message):
        super().__init__(f"the tail answered {reply}")
        self.reply = reply


def hello(sock: socket.socket) -> dict:
    wire.send_message(sock, wire.Hello(CONFIG.to_dict()))
    reply = wire.read_message(sock, 1 << 16, timeout=READ_TIMEOUT_S)
    if not isinstance(reply, wire.Ready):
        raise RefusedError(reply)
    return reply.info


def outcome(sock: socket.socket, jpeg: bytes, frames: int, announce: int) -> str:
    """Run ``frames`` EC frames on a flood connection, then send the header of a frame of
    ``announce`` bytes and nothing more (neither: leave it idle). Say how the tail has treated
    it so far: ``served`` (still open), ``closed``, or an ``Error``'s code."""
    try:
        if frames or announce:
            hello(sock)
            for i in range(frames):
                wire.send_message(sock, wire.JpegFrame(i, jpeg))
                reply = wire.read_message(sock, 1 << 16, timeout=READ_TIMEOUT_S)
                if not isinstance(reply, wire.Result):
                    raise RefusedError(reply)
            if announce:
                sock.sendall(wire.HEADER.pack(wire.MAGIC, wire.VERSION, wire.MsgType.JPEG, announce))
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        if not poller.poll(0):
            return "served"
        reply = wire.read_message(sock, 1 << 16, timeout=1.0)
    except RefusedError as exc:
        reply = exc.reply
    except (wire.PeerClosed, ConnectionError):
        return "closed"
    except wire.WireError as exc:
        return f"unreadable reply ({exc.code.name})"
    return reply.code.name.lower() if isinstance(reply, wire.Error) else type(reply).__name__


def flood(address: tuple[str, int], jpeg: bytes, total: int, wave: int, hold: float,
          frames: int, announce: int) -> Counter[str]:
    """Open ``total`` connections, ``wave`` at a time; hold each wave ``hold`` s, then close it."""
    counts: Counter[str] = Counter()
    opened = 0
    with ThreadPoolExecutor(max_workers=SESSION_WORKERS) as pool:
        while opened < total:
            socks = []
            for _ in range(min(wave, total - opened)):
                opened += 1
                try:
                    socks.append(socket.create_connection(address, timeout=10))
                except OSError:
                    counts["connect failed"] += 1
            results = list(pool.map(lambda s: outcome(s, jpeg, frames, announce), socks))
            time.sleep(hold)
            counts.update(results)
            for s in socks:
                s.close()
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--wave", type=int, default=1000, help="connections open at once")
    parser.add_argument("--hold", type=float, default=2.0, help="seconds each wave stays open")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds after the flood before the 'after' reading")
    parser.add_argument("--frames", type=int, default=0,
                        help="EC frames each flood connection sends after Hello (default 0: idle)")
    parser.add_argument("--announce", type=int, default=0, metavar="BYTES",
                        help="then the header of a frame of BYTES bytes, and silence (default 0: no)")
    parser.add_argument("tail_args", nargs="*", help="extra `testbed tail` arguments (after --)")
    args = parser.parse_args()
    if args.connections < 1 or args.wave < 1 or min(args.hold, args.settle, args.frames) < 0 \
            or not 0 <= args.announce <= wire.MAX_BODY_LENGTH:
        parser.error("--connections and --wave must be >= 1, --hold, --settle and --frames >= 0, "
                     f"--announce 0..{wire.MAX_BODY_LENGTH}")

    port = free_port()
    address = ("127.0.0.1", port)
    jpeg = encode_jpeg(resize_crop(load_images("builtin")[0].image, 224), CONFIG.jpeg_quality)
    argv = [sys.executable, "-m", "testbed", "tail", "--host", "127.0.0.1", "--port", str(port),
            "--threads", "1", *args.tail_args]
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "tail.log"
        proc = subprocess.Popen(argv, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for_port(*address, timeout=120, proc=proc)
            with socket.create_connection(address, timeout=READ_TIMEOUT_S) as s:
                info = hello(s)
            time.sleep(0.5)
            before = status(proc.pid)
            head = GoodHead(address, jpeg)
            sampler = PeakSampler(proc.pid)
            head.start()
            sampler.start()
            started = time.monotonic()
            counts = flood(address, jpeg, args.connections, args.wave, args.hold, args.frames,
                           args.announce)
            flood_s = time.monotonic() - started
            head.stop.set()
            head.join(READ_TIMEOUT_S)
            time.sleep(args.settle)
            sampler.stop.set()
            sampler.join()
            after = status(proc.pid)
            log_lines = log_path.read_text().splitlines()
        finally:
            stop_process(proc)

    kind = f"{args.frames}-frame" if args.frames else "idle"
    if args.announce:
        kind += f" then {args.announce}-byte-header-and-stall"
    print(f"testbed tail {' '.join(args.tail_args) or '(defaults)'}: {args.connections} {kind} "
          f"connections in waves of {args.wave}, held {args.hold:g} s each; flood took "
          f"{flood_s:.1f} s; Ready said {info}")
    print(f"{'tail process':<28}{'VmRSS MiB':>10}{'RssAnon MiB':>12}{'threads':>9}")
    for name, row in (("before (model loaded)", before), ("peak during flood", sampler.peak),
                      (f"after (+{args.settle:g} s)", after)):
        print(f"{name:<28}{row.rss:>10.0f}{row.anon:>12.0f}{row.threads:>9}")
    print("flood connections: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"good head: {head.ok} of {head.sent} frames answered during the flood"
          + (f"; FAILED: {head.failure}" if head.failure else "; none lost"))
    refused = sum("busy" in line.lower() for line in log_lines)
    print(f"tail log: {len(log_lines)} lines, {refused} mention 'busy'")
    return 1 if head.failure else 0


if __name__ == "__main__":
    sys.exit(main())
