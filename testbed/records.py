"""The per-frame record: the one data type every later stage (orchestrator, analysis) reads.

Delay components (DESIGN.md, "Delay components"), all in seconds from ``perf_counter_ns``:

- ``md_proc``: capture -> message ready on the wire (preprocess, head, quantize, encode), MD clock.
- ``es_queue``: message fully received -> a model worker of the ES starts it (the ES's
  queueing delay behind other MDs' frames), ES clock, reported in its reply. Empty in records
  of tails that did not report it (it was then part of ``es_proc``).
- ``es_proc``: a worker starts the message -> reply ready, ES clock, reported in its reply.
- ``comm``: (reply received - send start) - es_queue - es_proc, MD clock: uplink, queueing,
  retransmissions and the small reply. Needs no clock synchronisation between hosts.
- ``total``: capture -> reply received (capture-to-output delay).

``md_proc + comm + es_queue + es_proc == total`` exactly (same integer nanoseconds) for EC and
SC; LC has no ``comm``/``es_queue``/``es_proc`` (empty) and ``total == md_proc``.

Camera-paced capture (cells): ``md_wait`` is how long a frame waited at the MD for the previous
one to finish (``queue`` policy) before its capture; a frame that arrived while the MD was busy
under the ``drop`` policy has status ``dropped: md busy`` and no times. ``deadline_met``: the
frame's age at its result, ``md_wait + total``, is within the scenario's deadline (empty when
no deadline was set; ``False`` for dropped and failed frames).

Records are written and flushed one frame at a time, so a crash keeps every finished frame.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Iterator

SCHEMA_VERSION = 1
DROPPED_BUSY = "dropped: md busy"
"""Status of a camera frame that arrived while its MD was busy (``drop`` policy)."""

NS = 1e-9


@dataclass
class FrameRecord:
    run_id: str
    config: str
    mode: str
    model: str
    split: str
    n_ch: int | None
    frame_id: int
    image_id: str
    warmup: bool
    payload_bytes: int
    wire_bytes: int
    md_proc: float | None
    es_proc: float | None
    comm: float | None
    total: float | None
    predicted: int | None
    status: str
    step: str = ""
    load_mbit: float | None = None
    load_achieved_mbit: float | None = None
    repetition: int = 0
    capture_ns: int = 0
    weights: str = ""
    """Which weights ran: ``md:<source> es:<source>`` (random, torchvision-local or checkpoint)."""
    md_compute: str = "real"
    """The MD's compute model: ``real`` or ``profile:<name>`` (``md_proc`` is then the profile's
    sampled time, emulated: ``testbed.replay``). Records written before this column: ``real``."""
    es_compute: str = ""
    """The ES's, as its ``Ready`` said (empty for LC)."""
    es_queue: float | None = None
    """The ES's queueing delay (see the module docstring); empty from older tails and files."""
    md: str = ""
    """The MD host that captured the frame (a cell has several); empty in older files."""
    md_wait: float | None = None
    """Seconds the frame waited at a busy MD before its capture (camera-paced, ``queue``)."""
    deadline_met: bool | None = None
    """``md_wait + total`` within the deadline; ``None`` when no deadline was set."""
    compute_overrun: str = ""
    """``md``, ``es`` or ``md+es``: that side's real work ran on the critical path and took
    longer than its sampled time, so the frame's time there is the real work's, not the
    profile's."""

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def timings(capture_ns: int, send_ns: int, reply_ns: int | None, es_proc_ns: int | None,
            es_queue_ns: int | None = None):
    """Delay components in seconds from the MD's three timestamps and the ES's own figures.

    Returns ``(md_proc, es_proc, comm, total)``; for LC (no reply) the last three parts are
    ``None`` except ``total == md_proc``. ``comm`` excludes ``es_queue_ns`` (reported apart).
    """
    md = send_ns - capture_ns
    if reply_ns is None:
        return md * NS, None, None, md * NS
    es = es_proc_ns or 0
    comm = (reply_ns - send_ns) - es - (es_queue_ns or 0)
    return md * NS, es * NS, comm * NS, (reply_ns - capture_ns) * NS


class RecordWriter:
    """Appends ``FrameRecord`` rows to a CSV file, flushing each one."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._fh: IO[str] = self.path.open("a", newline="")
        self._writer = csv.DictWriter(self._fh, fieldnames=FrameRecord.columns())
        if new:
            self._writer.writeheader()
            self._fh.flush()

    def write(self, record: FrameRecord) -> None:
        row = dataclasses.asdict(record)
        self._writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_INT = {"n_ch", "frame_id", "payload_bytes", "wire_bytes", "predicted", "repetition", "capture_ns"}
_FLOAT = {"md_proc", "es_proc", "comm", "total", "load_mbit", "load_achieved_mbit",
          "es_queue", "md_wait"}


def _parse(name: str, value: str):
    if name == "warmup":
        return value == "True"
    if name == "deadline_met":
        return None if value == "" else value == "True"
    if value == "":
        return None if name in _INT | _FLOAT else ""
    if name in _INT:
        return int(value)
    if name in _FLOAT:
        return float(value)
    return value


def read_records(path: Path | str) -> Iterator[FrameRecord]:
    """Records from a CSV written by ``RecordWriter`` (a truncated last line is skipped).

    Columns added after a file was written (fields with defaults) take their defaults.
    """
    with Path(path).open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = [c for c in FrameRecord.columns() if c in (reader.fieldnames or ())]
        for row in reader:
            if None in row.values() or None in row:
                continue  # a crash mid-line leaves a short (or garbled) final row
            yield FrameRecord(**{k: _parse(k, row[k]) for k in cols})
