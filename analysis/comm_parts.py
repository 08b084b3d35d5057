"""Each frame's ``comm`` split into its parts, from the step's packet captures.

Clock: tcpdump stamps CLOCK_REALTIME; a record's times are CLOCK_MONOTONIC (``perf_counter_ns``)
on the MD. The step's manifest record holds the MD's realtime - monotonic offset read before and
after the step; a frame's send start is ``capture_ns + md_proc`` and its reply ``capture_ns +
total``, moved to the capture clock by the mean offset. In the emulated lab every host shares one
kernel clock, so the four capture points and both records' times are on one time line.

Matching: the step's head<->tail connection is the TCP flow to the tail's port carrying most
bytes. Frames are sent back to back on it, each ``wire_bytes`` long, after the Hello: the first
frame starts at the first new byte the MD sends after its send start, and frame k covers the
``wire_bytes`` after frame k-1 (checked against the first new byte after each frame's own send
start). Transmissions are matched between the two sides of the bottleneck by (sequence, length,
IP id): a retransmission has the same sequence but a new IP id.

Parts (``FrameParts``), adding up to ``comm`` by construction up to ``residual``:

- ``stall``: the MD had frame bytes still to send but none of them was in the bottleneck (the
  sender waited for ACKs: cwnd/rwnd-limited, e.g. slow start after idle);
- ``retransmission``: the same, before a retransmitted segment (waiting to detect the loss);
- ``queue``: a frame segment waited in the bottleneck's queue behind other traffic;
- ``serialization``: the bottleneck sent the frame's bytes (Ethernet frame + overhead at the
  shaped rate);
- ``fixed``: the MD's send stack (send start -> first segment into the bottleneck), the
  bottleneck's fixed delay ``D`` (propagation + forwarding: per step, the smallest one-way delay
  minus serialization over all its frame segments) and the ES's stack (last byte at the ES ->
  first reply byte leaving it, minus ``es_queue`` and ``es_proc``, which comm leaves out);
- ``reply``: first reply byte leaving the ES -> reply received by the MD's application;
- ``medium``: only where the bottleneck has no nominal rate (the ns3 backend's simulated 802.11g
  cell: contention, MAC retries and airtime decide how fast it sends, and its two capture points
  are the MD's and the ES's taps): the frame's time in it beyond the fixed delay (``D`` is then
  the smallest one-way delay, serialization included), which cannot be split into ``queue`` and
  ``serialization`` (those stay 0 and ``FrameParts.unsplit`` says why).

The walk over the frame's segments in the order they left the bottleneck keeps a cursor ``c``
(when the bottleneck last finished a frame segment, ``out - D``): before segment i a gap
``in_i - c`` is a stall (or a retransmission wait, when segment i is a retransmission), then
``out_i - D - c`` is time in the bottleneck. Of that time, the frame's own bytes at the nominal
rate are serialization (a retransmitted segment's go to ``retransmission``), the rest is queueing
behind other traffic. Serialization comes from the bytes and the rate, not from packet spacing
(the VM hands packets to its tap in bunches). A segment leaving before the cursor (reordering,
jitter) adds nothing, and shows up in ``residual``; a frame whose ``|residual|`` exceeds
``TOLERANCE_S``, whose stack parts are negative (clock offset wrong) or whose queueing is negative
(the bottleneck faster than its nominal rate) is flagged with the reason.
"""

from __future__ import annotations

import bisect
import json
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from analysis import comm_cache
from analysis.pcap_read import CaptureFileError, Segment, read_segments
from testbed.records import FrameRecord, read_records

log = logging.getLogger(__name__)

TOLERANCE_S = 1e-3
"""Largest |comm - sum of parts| (and negative stack time) accepted without a flag."""
PARTS = ("queue", "serialization", "medium", "fixed", "stall", "retransmission", "reply")
SEQ_MOD = 1 << 32
NS = 1e-9


class BreakdownError(ValueError):
    """A step's captures cannot be split into frames (the message says which and why)."""


@dataclass
class FrameParts:
    step: str
    config: str
    load_mbit: float | None
    frame_id: int
    warmup: bool
    comm: float
    queue: float = 0.0
    serialization: float = 0.0
    fixed: float = 0.0
    stall: float = 0.0
    retransmission: float = 0.0
    reply: float = 0.0
    medium: float = 0.0
    retransmissions: int = 0
    """Retransmitted frame segments (counted at the MD)."""
    lost_in_bottleneck: int = 0
    """Frame segments that entered the bottleneck and never left it."""
    segments: int = 0
    reply_md_wait: float = 0.0
    """Of ``reply``: last reply byte at the MD's interface -> the application has it."""
    residual: float = 0.0
    flag: str = ""
    """Empty when the parts add up within the tolerance; else the reason."""
    unsplit: str = ""
    """Empty when the bottleneck's time is split into queue and serialization; else why it is
    one part, ``medium``."""

    @property
    def parts_sum(self) -> float:
        return sum(getattr(self, p) for p in PARTS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Flow:
    client: tuple[str, int]
    server: tuple[str, int]

    def up(self, s: Segment) -> bool:
        return (s.src, s.sport) == self.client and (s.dst, s.dport) == self.server

    def down(self, s: Segment) -> bool:
        return (s.src, s.sport) == self.server and (s.dst, s.dport) == self.client


@dataclass
class Transmission:
    """One data segment of the flow seen at one point (relative sequence numbers)."""

    t_ns: int
    lo: int
    hi: int
    ip_id: int
    wire_bytes: int
    retransmitted: bool = False


@dataclass
class StepCaptures:
    """The step's flow as seen at each role's point (md, bottleneck-in, bottleneck-out, es)."""

    up: dict[str, list[Transmission]] = field(default_factory=dict)
    down: dict[str, list[Transmission]] = field(default_factory=dict)


def _relative(segments: list[Segment], flow: Flow) -> tuple[list[Transmission], list[Transmission]]:
    up_isn = next((s.seq for s in segments if flow.up(s) and s.syn), None)
    down_isn = next((s.seq for s in segments if flow.down(s) and s.syn), None)
    up_isn = up_isn if up_isn is not None else min((s.seq for s in segments if flow.up(s)),
                                                   default=0)
    down_isn = down_isn if down_isn is not None else min(
        (s.seq for s in segments if flow.down(s)), default=0)
    up, down = [], []
    for s in segments:
        if s.payload <= 0:
            continue
        for side, isn, out in ((flow.up, up_isn, up), (flow.down, down_isn, down)):
            if side(s):
                lo = (s.seq - isn) % SEQ_MOD
                out.append(Transmission(s.t_ns, lo, lo + s.payload, s.ip_id, s.wire_bytes))
    for seq in (up, down):
        seq.sort(key=lambda x: x.t_ns)
        highest = 0
        for x in seq:
            x.retransmitted = x.lo < highest
            highest = max(highest, x.hi)
    return up, down


def find_flow(segments: Iterable[Segment], port: int) -> Flow:
    """The TCP flow to ``port`` that carries the most payload toward it."""
    sizes: dict[tuple, int] = defaultdict(int)
    for s in segments:
        if s.dport == port:
            sizes[(s.src, s.sport, s.dst, s.dport)] += s.payload
    if not sizes:
        raise BreakdownError(f"no TCP segment to port {port} in the capture")
    src, sport, dst, dport = max(sizes, key=sizes.__getitem__)
    return Flow((src, sport), (dst, dport))


def load_step(folder: Path, step: str, record: dict[str, Any], port: int) -> StepCaptures:
    """Read the step's captures (``CaptureFileError``/``BreakdownError`` say what is wrong)."""
    captures = record.get("captures") or {}
    by_role: dict[str, list[Segment]] = {}
    for point, entry in captures.items():
        if entry.get("error") or not entry.get("file"):
            raise BreakdownError(f"step {step}: capture {point} was not kept: "
                                 f"{entry.get('error', 'no file')}")
        segments = read_segments(folder / entry["file"])
        for role in entry.get("roles", ()):
            by_role[role] = segments
    missing = [r for r in ("md", "bottleneck-in", "bottleneck-out", "es") if r not in by_role]
    if missing:
        raise BreakdownError(f"step {step}: no capture for {', '.join(missing)}")
    flow = find_flow(by_role["md"], port)
    out = StepCaptures()
    for role, segments in by_role.items():
        out.up[role], out.down[role] = _relative(segments, flow)
    return out


def step_offset_ns(record: dict[str, Any]) -> tuple[int, int]:
    """The MD's CLOCK_REALTIME - CLOCK_MONOTONIC during the step (mean of the readings before
    and after it, or the one there is) and how far the two readings differ."""
    clock = record.get("clock") or {}
    readings = [clock[k]["realtime_minus_monotonic_ns"] for k in ("before", "after")
                if isinstance(clock.get(k), dict) and "realtime_minus_monotonic_ns" in clock[k]]
    if not readings:
        raise BreakdownError("the step record has no clock offset (clock.before/after)")
    return sum(readings) // len(readings), max(readings) - min(readings)


def _match(bin_: list[Transmission], bout: list[Transmission]) -> list[tuple[Transmission, Transmission]]:
    """Pairs (into the bottleneck, out of it): same range and IP id, else the latest same range
    that entered before it left."""
    index: dict[tuple[int, int], list[Transmission]] = defaultdict(list)
    for x in bin_:
        index[(x.lo, x.hi)].append(x)
    pairs = []
    for y in bout:
        cands = [x for x in index.get((y.lo, y.hi), ()) if x.t_ns <= y.t_ns]
        if not cands:
            continue
        same = [x for x in cands if x.ip_id == y.ip_id]
        pairs.append(((same or cands)[-1], y))
    return pairs


def _first_new_byte(seq: list[Transmission], after_ns: int) -> Transmission | None:
    times = [x.t_ns for x in seq]
    for x in seq[bisect.bisect_left(times, after_ns):]:
        if not x.retransmitted:
            return x
    return None


def _completion(arrivals: list[Transmission], lo: int, hi: int) -> tuple[int, list[Transmission]]:
    """When every byte of [lo, hi) has arrived, and the arrivals (time order) up to then."""
    covered: list[tuple[int, int]] = []
    used = []
    for y in arrivals:
        if y.hi <= lo or y.lo >= hi:
            continue
        used.append(y)
        covered.append((max(y.lo, lo), min(y.hi, hi)))
        covered.sort()
        merged = [covered[0]]
        for a, b in covered[1:]:
            if a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        covered = merged
        if covered[0][0] <= lo and covered[0][1] >= hi:
            return y.t_ns, used
    raise BreakdownError(f"bytes {lo}-{hi} never all arrived at the ES")


@dataclass(frozen=True)
class Bottleneck:
    rate_bps: float | None
    """The nominal rate; ``None`` when the medium has none (``unsplit`` says why)."""
    overhead_bytes: int
    unsplit: str = ""

    def serialization_ns(self, wire_bytes: int) -> float:
        if self.rate_bps is None:
            return 0.0
        return (wire_bytes + self.overhead_bytes) * 8 / self.rate_bps * 1e9


def fixed_delay_ns(caps: StepCaptures, link: Bottleneck) -> float:
    """The bottleneck's fixed one-way delay: the smallest (out - in - serialization) over the
    step's uplink data segments (one that found the queue empty)."""
    pairs = _match(caps.up["bottleneck-in"], caps.up["bottleneck-out"])
    if not pairs:
        raise BreakdownError("no uplink segment seen on both sides of the bottleneck")
    return min(y.t_ns - x.t_ns - link.serialization_ns(x.wire_bytes) for x, y in pairs)


def split_frame(r: FrameRecord, caps: StepCaptures, lo: int, offset_ns: int, d_ns: float,
                link: Bottleneck, pairs: dict[int, Transmission]) -> FrameParts:
    """One frame's parts (see the module docstring); ``pairs``: id(out) -> its ``in``."""
    assert r.comm is not None and r.md_proc is not None and r.total is not None
    parts = FrameParts(r.step, r.config, r.load_mbit, r.frame_id, r.warmup, r.comm)
    hi = lo + r.wire_bytes
    t_send = send_ns(r, offset_ns)
    t_reply = r.capture_ns + round(r.total * 1e9) + offset_ns
    es_ns = round(((r.es_queue or 0) + (r.es_proc or 0)) * 1e9)  # not in comm
    mine = [x for x in caps.up["md"] if x.hi > lo and x.lo < hi]
    parts.retransmissions = sum(x.retransmitted for x in mine)
    done_ns, used = _completion(caps.up["bottleneck-out"], lo, hi)
    entered = [x for x in caps.up["bottleneck-in"] if x.hi > lo and x.lo < hi]
    left = {id(pairs[id(y)]) for y in caps.up["bottleneck-out"] if id(y) in pairs}
    parts.lost_in_bottleneck = sum(id(x) not in left for x in entered if x.t_ns <= done_ns)
    parts.segments = len(used)
    flags = []
    first_in = min((x.t_ns for x in entered), default=None)
    if first_in is None:
        raise BreakdownError(f"frame {r.frame_id}: no segment entered the bottleneck")
    md_stack = first_in - t_send
    c = float(first_in)
    walk = {"bottleneck": 0.0, "serialization": 0.0, "stall": 0.0, "retransmission": 0.0}
    for y in sorted(used, key=lambda t: t.t_ns):
        x = pairs.get(id(y))
        if x is None:
            flags.append("a segment left the bottleneck without entering it")
            continue
        if x.t_ns > c:
            walk["retransmission" if x.retransmitted else "stall"] += x.t_ns - c
            c = x.t_ns
        done = y.t_ns - d_ns
        if done > c:
            walk["bottleneck"] += done - c
            c = done
        walk["retransmission" if x.retransmitted else "serialization"] += \
            link.serialization_ns(y.wire_bytes)
    in_bottleneck = walk.pop("bottleneck") - walk["serialization"] - sum(
        link.serialization_ns(y.wire_bytes) for y in used
        if id(y) in pairs and pairs[id(y)].retransmitted)
    walk["medium" if link.unsplit else "queue"] = in_bottleneck
    reply_first = _first_new_byte(caps.down["es"], done_ns)
    if reply_first is None or reply_first.t_ns > t_reply:
        raise BreakdownError(f"frame {r.frame_id}: no reply segment left the ES before the "
                             "reply arrived")
    es_stack = reply_first.t_ns - done_ns - es_ns
    parts.queue, parts.serialization = walk.get("queue", 0.0) * NS, walk["serialization"] * NS
    parts.medium, parts.unsplit = walk.get("medium", 0.0) * NS, link.unsplit
    parts.stall, parts.retransmission = walk["stall"] * NS, walk["retransmission"] * NS
    parts.fixed = (md_stack + d_ns + es_stack) * NS
    parts.reply = (t_reply - reply_first.t_ns) * NS
    reply_md = [x for x in caps.down["md"] if reply_first.t_ns <= x.t_ns <= t_reply]
    if reply_md:
        parts.reply_md_wait = (t_reply - reply_md[-1].t_ns) * NS
    parts.residual = parts.comm - parts.parts_sum
    tol_ns = TOLERANCE_S * 1e9
    if md_stack < -tol_ns:
        flags.append(f"first segment {-md_stack * NS * 1e3:.2f} ms before the send start (clock)")
    if es_stack < -tol_ns:
        flags.append(f"reply left the ES {-es_stack * NS * 1e3:.2f} ms before es_queue + es_proc ended")
    if parts.queue < -TOLERANCE_S:
        flags.append(f"the frame left the bottleneck {-parts.queue * 1e3:.2f} ms sooner than "
                     "its nominal rate allows")
    if abs(parts.residual) > TOLERANCE_S:
        flags.append(f"parts off by {parts.residual * 1e3:+.2f} ms (overlapping segments: "
                     "jitter or a fixed delay below its estimate)")
    parts.flag = "; ".join(dict.fromkeys(flags))
    return parts


def step_parts(folder: Path, step: str, record: dict[str, Any], records: list[FrameRecord],
               link: Bottleneck, port: int) -> list[FrameParts]:
    """Every frame of one step (records in frame order), split into its parts."""
    caps = load_step(folder, step, record, port)
    offset_ns, spread = step_offset_ns(record)
    if spread > TOLERANCE_S * 1e9:
        log.warning("step %s: the MD's clock offset moved %.2f ms during the step", step,
                    spread * 1e-6)
    d_ns = fixed_delay_ns(caps, link)
    pairs = {id(y): x for x, y in _match(caps.up["bottleneck-in"], caps.up["bottleneck-out"])}
    out = []
    for r, lo, mismatch in frame_ranges(step, records, caps, offset_ns):
        if lo is None:
            out.append(FrameParts(r.step, r.config, r.load_mbit, r.frame_id, r.warmup, r.comm,
                                  flag=mismatch, unsplit=link.unsplit))
            continue
        try:
            parts = split_frame(r, caps, lo, offset_ns, d_ns, link, pairs)
        except BreakdownError as exc:
            parts = FrameParts(r.step, r.config, r.load_mbit, r.frame_id, r.warmup, r.comm,
                               flag=str(exc), unsplit=link.unsplit)
        parts.flag = "; ".join(filter(None, [parts.flag, mismatch]))
        out.append(parts)
    return out


def send_ns(r: FrameRecord, offset_ns: int) -> int:
    """The frame's send start on the capture clock."""
    return r.capture_ns + round((r.md_proc or 0) * 1e9) + offset_ns


NOT_CAPTURED = "not in the capture: the MD sent nothing new after its send start (the capture ended first)"


def frame_ranges(step: str, records: list[FrameRecord], caps: StepCaptures,
                 offset_ns: int) -> list[tuple[FrameRecord, int | None, str]]:
    """(record, first byte, mismatch) of each frame up to the first failed one: frames follow
    each other on the connection; ``mismatch`` says when the first new byte the MD sent after the
    frame's send start is not where the frame should begin. From the first frame whose bytes the
    capture does not hold on, the first byte is ``None`` and ``mismatch`` says why."""
    out: list[tuple[FrameRecord, int | None, str]] = []
    lo = None
    for r in sorted(records, key=lambda r: r.frame_id):
        if r.status != "ok" or r.comm is None:
            break  # the step ended at a failed frame; later bytes are unknown
        first = _first_new_byte(caps.up["md"], send_ns(r, offset_ns)) if (
            not out or out[-1][1] is not None) else None
        if first is None:
            out.append((r, None, NOT_CAPTURED))
            continue
        lo = first.lo if lo is None else lo
        out.append((r, lo, "" if first.lo == lo else
                    f"first new byte after the send start is {first.lo}, expected {lo}"))
        lo += r.wire_bytes
    return out


@dataclass(frozen=True)
class Timeline:
    step: str
    frame_id: int
    up_in: list[tuple[float, float]]
    """(ms since send start, KB into the frame) of each segment entering the bottleneck."""
    up_out: list[tuple[float, float]]
    reply_es: list[float]
    reply_md: list[float]
    reply_ms: float
    es_ms: float
    """The ES's es_queue + es_proc (not in comm: reply times are shifted back by it)."""


def read_timeline(folder: Path, step: str, frame_id: int, record: dict[str, Any],
                  port: int) -> Timeline:
    """The packets of one frame on the two sides of the bottleneck, relative to its send start,
    read from the step's captures."""
    caps = load_step(folder, step, record, port)
    offset, _ = step_offset_ns(record)
    records = [r for r in read_records(folder / "steps" / f"{step}.csv") if r.mode != "LC"]
    r, lo = next((r, lo) for r, lo, _ in frame_ranges(step, records, caps, offset)
                 if r.frame_id == frame_id)
    if lo is None:
        raise BreakdownError(f"step {step}: frame {frame_id}: {NOT_CAPTURED}")
    hi = lo + r.wire_bytes
    t_send = send_ns(r, offset)
    t_reply = r.capture_ns + round(r.total * 1e9) + offset
    es_ms = ((r.es_queue or 0) + (r.es_proc or 0)) * 1e3

    def rel(seq):
        return [((x.t_ns - t_send) * 1e-6, (x.lo - lo) / 1000) for x in seq if x.hi > lo and x.lo < hi]

    def reply(seq):  # shifted back by the ES's time: the time line is comm's
        return [(x.t_ns - t_send) * 1e-6 - es_ms for x in seq if t_send < x.t_ns <= t_reply]

    return Timeline(step, frame_id, rel(caps.up["bottleneck-in"]),
                    rel(caps.up["bottleneck-out"]), reply(caps.down["es"]),
                    reply(caps.down["md"]), (t_reply - t_send) * 1e-6 - es_ms, es_ms)


def bottleneck_of(manifest: dict[str, Any]) -> Bottleneck:
    """The uplink queue's rate and per-packet overhead, as the lab was asked to shape it; no
    rate for a medium ns-3 simulates (the link shape is not applied there)."""
    lab = manifest.get("lab") or {}
    if (lab.get("backend") or {}).get("backend") == "ns3":
        medium = next((r.get("interface") for r in lab.get("shaping", [])
                       if r.get("backend") == "ns3"), None) or "the simulated medium"
        return Bottleneck(None, 0, unsplit=(
            f"ns3 backend: {medium} has no nominal rate (contention, MAC retries and airtime "
            "set it) and is captured only at the MD's and ES's taps, so the time in it is one "
            "part, medium, not queue + serialization"))
    for report in lab.get("shaping", []):
        if report.get("label") == "uplink":
            req = report["requested"]
            return Bottleneck(req["rate_mbit"] * 1e6, int(req.get("overhead_bytes") or 0))
    link = manifest["scenario"]["link"]
    return Bottleneck(link["rate_mbit"] * 1e6, int(link.get("overhead_bytes") or 0))


def step_inputs(folder: Path, step: str, record: dict[str, Any], link: Bottleneck,
                port: int) -> dict[str, Any]:
    """What the step's breakdown is computed from, the key of its cache (``comm_cache``)."""
    captures = record.get("captures") or {}
    files = {point: e["file"] for point, e in captures.items() if isinstance(e.get("file"), str)}
    return comm_cache.step_inputs(folder, files, folder / "steps" / f"{step}.csv",
                                  {"captures": captures, "clock": record.get("clock")},
                                  asdict(link), port)


def cached_step_parts(folder: Path, step: str, record: dict[str, Any], link: Bottleneck,
                      port: int) -> list[FrameParts]:
    """``step_parts`` of the step's records, from its cache when that is current (else computed
    and cached). A step whose captures cannot be read is logged and gives no frame."""
    inputs = step_inputs(folder, step, record, link, port)
    cached = comm_cache.read(folder, step, inputs)
    if cached is not None:
        if "error" in cached:
            log.warning("step %s: no breakdown: %s", step, cached["error"])
            return []
        try:
            return [comm_cache.load_dataclass(FrameParts, d, f"frames[{i}]")
                    for i, d in enumerate(cached["frames"])]
        except comm_cache.CacheError as exc:
            log.warning("breakdown cache of step %s is corrupt (%s): recomputed", step, exc)
    records = [r for r in read_records(folder / "steps" / f"{step}.csv") if r.mode != "LC"]
    try:
        parts = step_parts(folder, step, record, records, link, port) if records else []
        payload: dict[str, Any] = {"frames": [p.to_dict() for p in parts]}
    except (CaptureFileError, BreakdownError) as exc:
        log.warning("step %s: no breakdown: %s", step, exc)
        parts, payload = [], {"error": str(exc)}
    comm_cache.write(folder, step, inputs, payload)
    return parts


def run_parts(folder: Path | str, port: int = 5500) -> list[FrameParts]:
    """Every frame of every step with captures in a result folder (each step's from its cache
    when current). A step whose captures cannot be read is logged and left out."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    link = bottleneck_of(manifest)
    out: list[FrameParts] = []
    for step, record in manifest.get("steps", {}).items():
        if not record.get("captures") or record.get("config") is None:
            continue
        if (folder / "steps" / f"{step}.csv").exists():
            out += cached_step_parts(folder, step, record, link, port)
    return out


def has_captures(folder: Path | str) -> bool:
    path = Path(folder) / "manifest.json"
    if not path.exists():
        return False
    steps = json.loads(path.read_text()).get("steps", {})
    return any(s.get("captures") for s in steps.values())
