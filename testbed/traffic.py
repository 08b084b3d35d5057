"""Competing load with the real iperf3 (UDP), and its JSON report.

The external node sends the competing load with ``iperf3 -u``; its JSON report says what load
was actually achieved, which the run records next to the load asked for. This module builds the
argument lists (never shell strings: the SSH layer quotes them with ``shlex.join``), parses the
reports, and for tests and benchmarks runs a server and a client locally.

Facts about iperf3 (checked with iperf 3.12, the one Debian 12 ships) this module relies on:

* ``-b 0`` means *unlimited*, so a 0 Mbit/s step must run no iperf3 at all: ``client_argv``
  refuses it; ``LoadReport.none()`` stands for such a step.
* ``-t`` takes whole seconds (``-t 1.5`` runs 1 s): durations are rounded up.
* The UDP report of the *receiver* is in ``end.sum_received`` (bytes, bits_per_second, jitter,
  lost packets). On the server of a normal (client -> server) test, ``end.sum`` has ``bytes``
  and ``bits_per_second`` 0 and only the packet counts; the client's ``end.sum`` is its own
  sending rate with the server's loss and jitter copied in, and its ``end.sum_received`` holds
  the server's receiving numbers. So the receiver's numbers are ``sum_received`` when it has data,
  else a ``sum`` marked ``"sender": false`` (older iperf3 versions have no ``sum_received``).
* The server of a reverse (``-R``) test only sends: its report has no receiver numbers.
* A failure is a JSON document with an ``"error"`` key (and exit status 1 for most errors,
  but 0 for "unable to connect to server"). An interrupted test also carries ``"error"``: the
  *client's* partial sums are inconsistent, but when the client is stopped (SIGINT or SIGTERM)
  the *server's* report, with ``"error": "the client has terminated"``, keeps its per-second
  intervals and a correct ``end.sum_received`` for the time the load ran. The orchestrator
  relies on this: a step's length is not known in advance, so the load runs with a generous
  ``-t`` and is stopped when the step's frames are done (``parse_report(...,
  stopped_by_client=True)`` on the server's output). In such a report iperf3 3.12 repeats the
  last interval and its ``end.sum_received`` counts it twice (measured: 4.69 Mbit/s in the end
  block against 4.004 in every interval of a 4 Mbit/s load), so for a stopped test the achieved
  load is computed from the de-duplicated intervals instead.
* ``--idle-timeout N`` with ``-1`` makes a server that no client reached exit after N seconds,
  with status 0 and no output at all. Older iperf3 versions may lack the option: pass
  ``idle_timeout_s=None`` for them and bound the process from outside.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PORT = 5201
UDP_PAYLOAD_BYTES = 1472
"""Largest UDP payload of an unfragmented 1500-byte IPv4 packet (1500 - 20 - 8)."""


class IperfError(RuntimeError):
    """iperf3 failed, or its output is not a usable UDP report.

    ``report``: the parsed JSON document, if there was one.
    """

    def __init__(self, message: str, report: dict[str, Any] | None = None):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class LoadReport:
    """What one iperf3 UDP test achieved.

    achieved_mbit: receiving rate measured by the receiver (``view == "receiver"``), or the sending
        rate when the report comes from a sender that has no receiver numbers (``view ==
        "sender"``; then ``lost_percent`` and ``jitter_ms`` are ``None``).
    packets: datagrams the receiver accounted for (received + lost), or sent, for a sender view.
    """

    asked_mbit: float
    achieved_mbit: float
    lost_percent: float | None
    jitter_ms: float | None
    packets: int
    duration_s: float
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    view: str = "receiver"

    @classmethod
    def none(cls) -> "LoadReport":
        """The report of a 0 Mbit/s step, where no traffic runs."""
        return cls(0.0, 0.0, 0.0, 0.0, 0, 0.0, {}, "none")

    def to_dict(self, include_raw: bool = False) -> dict[str, Any]:
        out = {
            "asked_mbit": self.asked_mbit,
            "achieved_mbit": self.achieved_mbit,
            "lost_percent": self.lost_percent,
            "jitter_ms": self.jitter_ms,
            "packets": self.packets,
            "duration_s": self.duration_s,
            "view": self.view,
        }
        if include_raw:
            out["raw"] = self.raw
        return out


# --------------------------------------------------------------------------- argv


def needs_traffic(asked_mbit: float) -> bool:
    """Whether a step with this load runs iperf3 at all (0 Mbit/s runs nothing)."""
    return asked_mbit > 0


def bits_per_second(asked_mbit: float) -> int:
    return int(round(asked_mbit * 1e6))


def load_duration_s(step_s: float, settle_s: float = 1.0, margin_s: float = 5.0) -> int:
    """Whole seconds of load covering the settle time, the step's frames and a margin.

    The load must outlast the step: an iperf3 client stopped early reports an error and
    inconsistent partial numbers instead of the achieved load.
    """
    if step_s < 0 or settle_s < 0 or margin_s < 0:
        raise ValueError("durations must be non-negative")
    return max(1, math.ceil(settle_s + step_s + margin_s))


def server_argv(
    bind: str,
    port: int = DEFAULT_PORT,
    *,
    idle_timeout_s: int | None = 60,
    iperf3: str = "iperf3",
) -> list[str]:
    """A one-off iperf3 server: serves one test, prints its JSON report, exits.

    ``idle_timeout_s`` bounds the wait for a client (see the module notes for older iperf3).
    """
    argv = [iperf3, "-s", "-1", "-B", bind, "-p", str(int(port)), "--json"]
    if idle_timeout_s is not None:
        argv += ["--idle-timeout", str(int(idle_timeout_s))]
    return argv


def client_argv(
    server: str,
    asked_mbit: float,
    duration_s: float,
    *,
    port: int = DEFAULT_PORT,
    length: int = UDP_PAYLOAD_BYTES,
    reverse: bool = False,
    bind: str | None = None,
    connect_timeout_ms: int | None = 5000,
    iperf3: str = "iperf3",
) -> list[str]:
    """A UDP client asking ``asked_mbit`` of payload for ``duration_s`` (rounded up to whole s).

    ``reverse``: the server sends and the client receives (``-R``), for a downlink load driven
    from the receiving side.
    """
    if not needs_traffic(asked_mbit):
        raise ValueError(
            f"asked_mbit must be > 0 (got {asked_mbit}): a 0 Mbit/s step runs no iperf3, "
            "and iperf3 reads -b 0 as unlimited"
        )
    if not 16 <= length <= 65507:
        raise ValueError(f"length must be 16..65507 bytes of UDP payload, got {length}")
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    argv = [
        iperf3,
        "-c",
        server,
        "-p",
        str(int(port)),
        "-u",
        "-b",
        str(bits_per_second(asked_mbit)),
        "-t",
        str(max(1, math.ceil(duration_s))),
        "-l",
        str(int(length)),
        "--json",
    ]
    if reverse:
        argv.append("-R")
    if bind is not None:
        argv += ["-B", bind]
    if connect_timeout_ms is not None:
        argv += ["--connect-timeout", str(int(connect_timeout_ms))]
    return argv


# --------------------------------------------------------------------------- reports


def _has_data(block: Any) -> bool:
    return isinstance(block, dict) and any(
        (block.get(k) or 0) > 0 for k in ("bytes", "packets", "lost_packets")
    )


CLIENT_TERMINATED = "the client has terminated"


def parse_report(
    doc: str | bytes | dict[str, Any],
    asked_mbit: float | None = None,
    *,
    stopped_by_client: bool = False,
) -> LoadReport:
    """A ``LoadReport`` from one iperf3 ``--json`` output (client's or server's).

    ``asked_mbit`` defaults to the report's own target bitrate. Raises ``IperfError`` for iperf3's
    ``{"error": ...}`` documents, empty or non-JSON output, and non-UDP tests.
    ``stopped_by_client``: this is a server's report of a test whose client we stopped on
    purpose; its "client has terminated" error is expected and its receiver numbers are kept.
    """
    if isinstance(doc, (str, bytes)):
        text = doc.decode("utf-8", "replace") if isinstance(doc, bytes) else doc
        if not text.strip():
            raise IperfError("iperf3 produced no JSON output (server idle timeout, or killed?)")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IperfError(f"iperf3 output is not JSON ({exc}): {text[:200]!r}") from None
    if not isinstance(doc, dict):
        raise IperfError(f"iperf3 report is not a JSON object: {type(doc).__name__}")
    error = doc.get("error")
    if error and not (stopped_by_client and CLIENT_TERMINATED in str(error)):
        raise IperfError(f"iperf3 failed: {error}", doc)
    start = doc.get("start") or {}
    test = start.get("test_start") or {}
    protocol = test.get("protocol")
    if protocol != "UDP":
        raise IperfError(f"expected a UDP test report, got protocol {protocol!r}", doc)
    end = doc.get("end") or {}
    if asked_mbit is None:
        target = test.get("target_bitrate", start.get("target_bitrate"))
        asked_mbit = float(target) / 1e6 if target is not None else 0.0

    received = end.get("sum_received")
    summed = end.get("sum")
    if _has_data(received):
        block, view = received, "receiver"
    elif _has_data(summed) and summed.get("sender") is False:
        block, view = summed, "receiver"
    else:
        block = end.get("sum_sent") if _has_data(end.get("sum_sent")) else summed
        view = "sender"
    if not isinstance(block, dict) or "bits_per_second" not in block:
        raise IperfError("iperf3 report has no end.sum / end.sum_received block", doc)

    def number(key: str) -> float | None:
        value = block.get(key)
        return float(value) if value is not None else None

    receiver = view == "receiver"
    achieved = float(block["bits_per_second"]) / 1e6
    if stopped_by_client:
        achieved = _interval_mbit(doc) or achieved
    return LoadReport(
        asked_mbit=float(asked_mbit),
        achieved_mbit=achieved,
        lost_percent=number("lost_percent") if receiver else None,
        jitter_ms=number("jitter_ms") if receiver else None,
        packets=int(block.get("packets") or 0),
        duration_s=float(block.get("seconds") or 0.0),
        raw=doc,
        view=view,
    )


def _interval_mbit(doc: dict[str, Any]) -> float | None:
    """Mean rate over the report's intervals, each (start, end) counted once."""
    seen: dict[tuple[Any, Any], tuple[float, int]] = {}
    for interval in doc.get("intervals") or []:
        block = interval.get("sum") if isinstance(interval, dict) else None
        if isinstance(block, dict) and block.get("seconds"):
            seen[(block.get("start"), block.get("end"))] = (block["seconds"], block.get("bytes") or 0)
    seconds = sum(s for s, _ in seen.values())
    return sum(b for _, b in seen.values()) * 8 / seconds / 1e6 if seconds > 0 else None


# --------------------------------------------------------------------------- local runs


@dataclass(frozen=True)
class LocalLoad:
    """Both sides of a local test; ``receiver`` is the one that measured the achieved load."""

    client: LoadReport
    server: LoadReport

    @property
    def receiver(self) -> LoadReport:
        return self.server if self.server.view == "receiver" else self.client


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP (iperf3's control connection) and UDP (its data) right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise OSError("no free port found")


def _listening(port: int) -> bool:
    """Whether something listens on TCP ``port`` (Linux /proc; False where unreadable)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, state = parts[1], parts[3]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        return True
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return False


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def run_local_udp_load(
    server_addr: str = "127.0.0.1",
    asked_mbit: float = 5.0,
    duration_s: float = 2.0,
    *,
    port: int | None = None,
    length: int = UDP_PAYLOAD_BYTES,
    reverse: bool = False,
    iperf3: str = "iperf3",
    timeout_margin_s: float = 10.0,
) -> LocalLoad:
    """Run an iperf3 server and a UDP client as local subprocesses; for tests and benchmarks.

    Both processes are bounded (idle timeout, connect timeout, wall-clock timeouts) and killed
    on the way out, whatever happens. A 0 Mbit/s load runs nothing and returns empty reports.
    """
    if not needs_traffic(asked_mbit):
        return LocalLoad(LoadReport.none(), LoadReport.none())
    seconds = max(1, math.ceil(duration_s))
    attempts = 1 if port is not None else 3
    last_error: IperfError | None = None
    for _ in range(attempts):
        use_port = port if port is not None else free_port(server_addr)
        try:
            return _run_once(
                server_addr, asked_mbit, seconds, use_port, length, reverse, iperf3,
                timeout_margin_s,
            )
        except IperfError as exc:
            last_error = exc
            if "listener" not in str(exc) and "in use" not in str(exc):
                raise  # only a port taken between free_port() and the server's bind is retried
    assert last_error is not None
    raise last_error


def _run_once(
    server_addr: str,
    asked_mbit: float,
    seconds: int,
    port: int,
    length: int,
    reverse: bool,
    iperf3: str,
    margin: float,
) -> LocalLoad:
    idle = int(seconds + margin)
    server: subprocess.Popen[bytes] | None = None
    client: subprocess.Popen[bytes] | None = None
    env = dict(os.environ, LC_ALL="C")
    try:
        server = subprocess.Popen(
            server_argv(server_addr, port, idle_timeout_s=idle, iperf3=iperf3),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 5.0
        while not _listening(port) and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if server.poll() is not None:
            out, err = server.communicate()
            parse_report(out or err, asked_mbit)  # raises with iperf3's own message
            raise IperfError(f"iperf3 server exited early: {err.decode(errors='replace')}")
        client = subprocess.Popen(
            client_argv(server_addr, asked_mbit, seconds, port=port, length=length, reverse=reverse,
                        iperf3=iperf3),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        try:
            client_out, client_err = client.communicate(timeout=seconds + margin)
        except subprocess.TimeoutExpired:
            raise IperfError(
                f"iperf3 client did not finish within {seconds + margin:g} s"
            ) from None
        try:
            server_out, server_err = server.communicate(timeout=margin)
        except subprocess.TimeoutExpired:
            raise IperfError(
                f"iperf3 server did not finish within {margin:g} s of the client"
            ) from None
        client_report = parse_report(client_out or client_err, asked_mbit)
        server_report = parse_report(server_out or server_err, asked_mbit)
        return LocalLoad(client_report, server_report)
    finally:
        _stop(client)
        _stop(server)
