"""The MD side: capture frames, run the head, stream to the ES, and record every frame.

Frames are processed one at a time: a frame is captured when the previous reply arrived, or on
a fixed capture clock if ``capture_rate_hz`` is set (a camera, started after the warm-up frames,
which go back to back). A camera frame that arrives
while the MD is still busy with the previous one is, by ``busy_policy``, either dropped (its
record says ``dropped: md busy``) or queued: captured as soon as the MD is free, its wait
recorded as ``md_wait``. With ``deadline_s`` each record says whether the frame's age at its
result (``md_wait + total``) met the deadline (``deadline_met``). The
first ``warmup`` frames are marked ``warmup`` and excluded from every summary. One TCP
connection carries the whole step, as in the paper, so slow-start-after-idle and the initial
window act on each frame just as they would on a real MD.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from testbed import replay, wire
from testbed.cell_section import BUSY_POLICIES
from testbed.configs import Configuration
from testbed.devices import REAL, DeviceProfile, ProfileError
from testbed.images import Frame, load_images
from testbed.models.split import SplitModel, build_split
from testbed.payloads import md_local, md_message
from testbed.records import DROPPED_BUSY, FrameRecord, RecordWriter, timings

log = logging.getLogger(__name__)

REPLY_MAX_BYTES = 64 * 1024


class HeadError(RuntimeError):
    """The head could not start or the ES refused the configuration."""


@dataclass(frozen=True)
class StepContext:
    """Where these frames sit in a sweep (copied into every record)."""

    run_id: str = "adhoc"
    step: str = ""
    load_mbit: float | None = None
    repetition: int = 0
    md: str = ""
    """The MD host's name (a cell has several)."""




@dataclass(frozen=True)
class HeadSettings:
    config: Configuration
    server: tuple[str, int] | None = None
    frames: int = 50
    warmup: int = 5
    images: str = "builtin"
    capture_rate_hz: float | None = None
    seed: int = 0
    threads: int | None = None
    connect_timeout_s: float = 30.0
    reply_timeout_s: float = 120.0
    context: StepContext = field(default_factory=StepContext)
    compute: DeviceProfile | None = None
    """A device profile whose MD times this head replays (``testbed.replay``); ``None``: the
    real processing time."""
    busy_policy: str = "queue"
    """``drop`` or ``queue`` a camera frame that arrives while the MD is busy."""
    deadline_s: float | None = None
    """Each frame's deadline (its age at the result); ``None``: none."""

    def __post_init__(self) -> None:
        if self.busy_policy not in BUSY_POLICIES:
            raise ValueError(f"busy_policy: expected one of {', '.join(BUSY_POLICIES)}, "
                             f"got {self.busy_policy!r}")
        for name in ("capture_rate_hz", "deadline_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name}: expected a positive number, got {value!r}")


class _Link:
    """The MD's one TCP connection to the ES for a whole step."""

    def __init__(self, server: tuple[str, int], config: Configuration, connect_timeout: float,
                 ready_timeout: float):
        try:
            self.sock = socket.create_connection(server, timeout=connect_timeout)
        except OSError as exc:
            raise HeadError(
                f"cannot connect to the tail at {server[0]}:{server[1]}: {exc}; "
                "is `testbed tail` running there?"
            ) from exc
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            wire.send_message(self.sock, wire.Hello(config.to_dict()))
            # the tail builds the model before it answers: allow for a slow ES
            reply = wire.read_message(self.sock, REPLY_MAX_BYTES, timeout=ready_timeout)
            if isinstance(reply, wire.Error):
                raise HeadError(f"the tail refused configuration {config.name!r}: {reply.message}")
            if not isinstance(reply, wire.Ready):
                raise HeadError(f"the tail answered Hello with {type(reply).__name__}, not Ready")
        except (OSError, wire.WireError, wire.PeerClosed) as exc:
            self.sock.close()
            raise HeadError(f"the tail at {server[0]}:{server[1]} did not accept Hello: {exc}") from exc
        except HeadError:
            self.sock.close()
            raise
        self.info = reply.info

    def close(self) -> None:
        try:
            wire.send_message(self.sock, wire.Bye())
        except OSError:
            pass
        self.sock.close()


@dataclass(frozen=True)
class PreparedHead:
    """What a head needs before its first frame and keeps across steps: the validated
    configuration, the MD side of the model (built once), the frames to send, and, for an MD
    that replays a profile, each image's real output (computed in the first step only)."""

    config: Configuration
    model: SplitModel
    frames: list[Frame]
    build_s: float
    work: replay.WorkCache = field(default_factory=replay.WorkCache, compare=False, repr=False)


def prepare_head(settings: HeadSettings, frames: list[Frame] | None = None) -> PreparedHead:
    """Validate the configuration, load the frames and build the MD side of the model.

    The slow part of a step (torch import aside): the head agent does it once per configuration
    and runs every step of that configuration on the result."""
    config = settings.config.validated()
    if config.mode != "LC" and settings.server is None:
        raise HeadError(f"configuration {config.name!r} ({config.mode}) needs a tail server address")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    frames = frames or load_images(settings.images)
    started = time.perf_counter()
    model = build_split(config, side="md", seed=settings.seed)
    return PreparedHead(config, model, frames, time.perf_counter() - started)


def run_step(
    prepared: PreparedHead,
    settings: HeadSettings,
    records_path: Path | str,
    on_frame: Callable[[FrameRecord], None] | None = None,
) -> int:
    """Run warm-up plus measured frames of one step on a prepared head, appending one record
    per frame; ``settings`` gives the step (frame counts, tail, capture clock, context).

    Returns the number of failed frames. A link or ES error ends the step after recording the
    failed frame (the ES closes the connection); LC failures are not possible short of a bug.
    """
    config, model, frames = prepared.config, prepared.model, prepared.frames
    if settings.threads:
        torch.set_num_threads(settings.threads)
    if config.mode != "LC" and settings.server is None:
        raise HeadError(f"configuration {config.name!r} ({config.mode}) needs a tail server address")
    link = (
        _Link(settings.server, config, settings.connect_timeout_s, settings.reply_timeout_s)
        if config.mode != "LC" else None
    )
    if link:
        link.sock.settimeout(settings.reply_timeout_s)
    weights = " ".join(
        f"{side}:{source}" for side, source in
        (("md", model.weights.source if model.head is not None else None),
         ("es", link.info.get("weights") if link else None)) if source
    )
    try:
        md = replay.MdReplay.of(settings.compute, config, model, settings.seed, prepared.work)
    except ProfileError as exc:
        if link:
            link.close()
        raise HeadError(str(exc)) from None
    warmup = replay.warmup_frames(settings.warmup, len(frames),
                                  bool(link) and link.info.get("compute", REAL) != REAL)
    if md:  # every distinct image's real work, before the first capture
        md.prepare(frames[:warmup + settings.frames])
    failures = 0
    try:
        with RecordWriter(records_path) as writer:
            started = free_ns = 0  # the camera's start; when the MD finished its last frame
            for i in range(warmup + settings.frames):
                frame = frames[i % len(frames)]
                wait_ns, dropped = None, False
                if i == warmup:  # warm-up frames go back to back, then the camera starts
                    started = free_ns = time.perf_counter_ns()
                if settings.capture_rate_hz and i >= warmup:
                    arrival = started + round((i - warmup) * 1e9 / settings.capture_rate_hz)
                    now = time.perf_counter_ns()
                    if now < arrival:
                        time.sleep((arrival - now) * 1e-9)
                    wait_ns = max(0, time.perf_counter_ns() - arrival)
                    dropped = arrival < free_ns and settings.busy_policy == "drop"
                if dropped:
                    record = _dropped(config, i, frame, settings)
                else:
                    record = _one_frame(config, model, link, i, frame, settings, md)
                    free_ns = time.perf_counter_ns()
                    record.md_wait = wait_ns * 1e-9 if wait_ns is not None else None
                if settings.deadline_s is not None:
                    record.deadline_met = (
                        record.status == "ok" and record.total is not None
                        and (record.md_wait or 0.0) + record.total <= settings.deadline_s
                    )
                record.warmup = i < warmup
                record.weights = weights
                writer.write(record)
                if on_frame:
                    on_frame(record)
                if record.status not in ("ok", DROPPED_BUSY):
                    failures += 1
                    if link:  # the ES closes a connection after an error: the step ends here
                        log.error("frame %d failed (%s); ending this step", i, record.status)
                        break
    finally:
        if link:
            link.close()
    return failures


def run_head(
    settings: HeadSettings,
    records_path: Path | str,
    on_frame: Callable[[FrameRecord], None] | None = None,
    frames: list[Frame] | None = None,
) -> int:
    """One step from scratch (``testbed head``): :func:`prepare_head`, then :func:`run_step`.
    Returns the number of failed frames."""
    return run_step(prepare_head(settings, frames), settings, records_path, on_frame)


def _dropped(config: Configuration, frame_id: int, frame: Frame,
             settings: HeadSettings) -> FrameRecord:
    """The record of a camera frame that arrived while the MD was busy (``drop`` policy)."""
    ctx = settings.context
    return FrameRecord(
        run_id=ctx.run_id, config=config.name, mode=config.mode, model=config.model,
        split=config.split or "", n_ch=config.n_ch, frame_id=frame_id, image_id=frame.image_id,
        warmup=False, payload_bytes=0, wire_bytes=0, md_proc=None, es_proc=None, comm=None,
        total=None, predicted=None, status=DROPPED_BUSY, step=ctx.step, load_mbit=ctx.load_mbit,
        repetition=ctx.repetition, capture_ns=time.perf_counter_ns(), md=ctx.md,
    )


def _one_frame(
    config: Configuration, model: SplitModel, link: _Link | None, frame_id: int, frame: Frame,
    settings: HeadSettings, md_replay: replay.MdReplay | None = None,
) -> FrameRecord:
    """One frame, processed for real or, with ``md_replay``, from its replay cache and sent once the
    profile's sampled MD time has elapsed since capture."""
    ctx = settings.context
    payload = wire_bytes = 0
    predicted: int | None = None
    status = "ok"
    reply_ns = es_ns = es_queue_ns = None
    overrun = {"md": False, "es": False}
    capture_ns = time.perf_counter_ns()
    if link is None:
        if md_replay is None:
            predicted = md_local(model, frame.image)
        else:
            value, work_ns = md_replay.output(frame_id, frame)
            predicted = int(value)
            overrun["md"] = md_replay.release(frame_id, capture_ns, work_ns)
        send_ns = time.perf_counter_ns()
    else:
        if md_replay is None:
            msg = md_message(config, model, frame_id, frame.image)
            data = wire.encode(msg)
        else:
            msg, work_ns = md_replay.output(frame_id, frame)
            data = wire.encode(msg)  # before the wait: encoding is part of the MD's time
            overrun["md"] = md_replay.release(frame_id, capture_ns, work_ns)
        payload, wire_bytes = len(msg.payload), len(data)
        send_ns = time.perf_counter_ns()
        try:
            link.sock.sendall(data)
            reply = wire.read_message(link.sock, REPLY_MAX_BYTES)
            reply_ns = time.perf_counter_ns()
        except (OSError, wire.WireError, wire.PeerClosed) as exc:
            reply, status = None, f"error: link: {exc or 'the tail closed the connection'}"
        if isinstance(reply, wire.Result):
            predicted, es_ns, es_queue_ns = reply.predicted, reply.es_proc_ns, reply.es_queue_ns
            overrun["es"] = bool(reply.status & wire.RESULT_OVERRUN)
        elif isinstance(reply, wire.Error):
            status, reply_ns = f"error: tail: {reply.message}", None
        elif reply is not None:
            status, reply_ns = f"error: unexpected reply {type(reply).__name__}", None
    if status == "ok":
        md, es, comm, total = timings(capture_ns, send_ns, reply_ns, es_ns, es_queue_ns)
    else:
        md, es, comm, total = (send_ns - capture_ns) * 1e-9, None, None, None
    return FrameRecord(
        run_id=ctx.run_id,
        config=config.name,
        mode=config.mode,
        model=config.model,
        split=config.split or "",
        n_ch=config.n_ch,
        frame_id=frame_id,
        image_id=frame.image_id,
        warmup=False,
        payload_bytes=payload,
        wire_bytes=wire_bytes,
        md_proc=md,
        es_proc=es,
        es_queue=es_queue_ns * 1e-9 if es_queue_ns is not None and status == "ok" else None,
        md=ctx.md,
        comm=comm,
        total=total,
        predicted=predicted,
        status=status,
        step=ctx.step,
        load_mbit=ctx.load_mbit,
        repetition=ctx.repetition,
        capture_ns=capture_ns,
        md_compute=md_replay.label if md_replay else REAL,
        es_compute=link.info.get("compute", REAL) if link else "",
        compute_overrun="+".join(side for side, over in overrun.items() if over),
    )
