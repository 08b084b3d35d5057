"""Per-step packet captures: tcpdump (headers only) at the MD, both sides of the shaped
bottleneck, and the ES, started before the step's frames and stopped after them.

Where the capture points are (``capture_points``), from the manifest's ``lab`` entry:

- namespace backend: ``md`` (the MD's veth), ``ap-in`` (the AP's end of the MD's veth: before
  the shaped queue uplink, after it downlink), ``ap-out`` (the AP's end of the ES's veth: after
  the queue uplink, before it downlink), ``es`` (the ES's veth);
- VM backend: the MD's and the ES's interfaces *are* the taps into and out of the VM, so two
  captures stand for the four points (``md`` is also ``bottleneck-in``, ``es`` also
  ``bottleneck-out``);
- ns3 backend: the same two points, the MD's and the ES's taps (``tb<run>-s<host>`` in the
  host's namespace), whose other ends are ns-3 devices: the simulated medium between them has
  no Linux interface to capture on.

Each tcpdump runs on its host over SSH (so inside that host's namespace, where the lab's
teardown and ``testbed clean`` find it), writes a nanosecond pcap of ``snap_bytes`` per packet
filtered to the head<->tail TCP stream, and is stopped with SIGTERM (SIGKILL after
``stop_timeout_s``) on success, failure and Ctrl-C alike. The files end up compressed in
``captures/<step>/<point>.pcap.gz``; their sizes, packet counts and kernel drops go in the
step's manifest record.

The MD's clock offset (CLOCK_REALTIME, which tcpdump stamps, minus CLOCK_MONOTONIC, which the
records' ``perf_counter_ns`` reads) is sampled on the MD before and after the step
(``clock_offset``): both clocks are system-wide, so any process on the MD gives the head's.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from testbed.capture_settings import ALTERNATE_SKIP, PacketCapture
from testbed.hosts.remote import Host, RemoteProcess

log = logging.getLogger(__name__)

CAPTURES = "captures"
ROLES = ("md", "bottleneck-in", "bottleneck-out", "es")
LISTEN_TIMEOUT_S = 10.0

_OFFSET_PROBE = (
    "import time\n"
    "best=None\n"
    "for _ in range(50):\n"
    "    a=time.time_ns(); m=time.perf_counter_ns(); b=time.time_ns()\n"
    "    if best is None or b-a<best[0]: best=(b-a,(a+b)//2-m)\n"
    "print(best[1],best[0])\n"
)


class CaptureError(RuntimeError):
    """A capture could not be planned, started or collected (the message says which and why)."""


@dataclass(frozen=True)
class CapturePoint:
    name: str
    host: str
    interface: str
    roles: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def capture_points(lab: dict[str, Any], md: str, es: str, router: str) -> list[CapturePoint]:
    """The capture points of an emulated lab, from the manifest's ``lab`` entry."""
    if lab.get("kind") != "emulated":
        raise CaptureError(f"packet captures need the emulated lab (this lab is {lab.get('kind')!r}:"
                           " its hosts have no common clock)")
    backend = (lab.get("backend") or {}).get("backend")
    hosts = lab.get("hosts") or {}
    try:
        md_if, es_if = hosts[md]["interface"], hosts[es]["interface"]
    except KeyError as exc:
        raise CaptureError(f"the lab state names no interface for host {exc}") from None
    if backend in ("vm", "ns3"):  # the hosts' taps are the medium's two ends
        return [CapturePoint("md", md, md_if, ("md", "bottleneck-in")),
                CapturePoint("es", es, es_if, ("bottleneck-out", "es"))]
    if backend == "namespace":
        return [CapturePoint("md", md, md_if, ("md",)),
                CapturePoint("ap-in", router, hosts[md]["router_interface"], ("bottleneck-in",)),
                CapturePoint("ap-out", router, hosts[es]["router_interface"], ("bottleneck-out",)),
                CapturePoint("es", es, es_if, ("es",))]
    raise CaptureError(f"no capture points known for the AP backend {backend!r}")


def tcpdump_argv(interface: str, path: str, settings: PacketCapture, port: int) -> list[str]:
    """Headers only, nanosecond stamps, delivered and written per packet (--immediate-mode, -U:
    without it the kernel hands packets over a buffer block at a time, and a block still open
    when tcpdump is stopped is lost: the last frame of a step with no other traffic went
    missing), no privilege drop (-Z root: the file is in a root-owned folder), no name
    lookups, only the head<->tail stream."""
    return ["tcpdump", "-i", interface, "-s", str(settings.snap_bytes), "-w", path, "-U",
            "--immediate-mode", "-n",
            "-Z", "root", "--time-stamp-precision=nano", "-B", "4096", f"tcp port {port}"]


_STAT_RE = re.compile(r"^(\d+) packets? (captured|received by filter|dropped by kernel)", re.M)


def tcpdump_counts(stderr: str) -> dict[str, int]:
    """tcpdump's closing statistics: captured, received_by_filter, dropped_by_kernel."""
    return {m.group(2).replace(" ", "_"): int(m.group(1)) for m in _STAT_RE.finditer(stderr)}


def clock_offset(md: Host, python: str) -> dict[str, int]:
    """CLOCK_REALTIME - CLOCK_MONOTONIC on the MD (ns), from the tightest of 50 readings."""
    out = md.run([python, "-c", _OFFSET_PROBE], timeout=30).stdout.split()
    return {"realtime_minus_monotonic_ns": int(out[0]), "reading_ns": int(out[1])}


class StepCapture:
    """The captures of one step: ``start()`` before the frames, ``stop()`` always after."""

    def __init__(self, hosts: Any, points: list[CapturePoint], settings: PacketCapture,
                 step_id: str, out: Path, port: int):
        self.hosts = hosts
        self.points = points
        self.settings = settings
        self.step_id = step_id
        self.folder = Path(out) / CAPTURES / step_id
        self.port = port
        self._procs: list[tuple[CapturePoint, RemoteProcess, str]] = []

    def _remote(self, point: CapturePoint) -> str:
        return f"{self.hosts.workdir}/{self.step_id}.{point.name}.pcap"

    def start(self) -> None:
        for point in self.points:
            host = self.hosts.host(point.host)
            path = self._remote(point)
            host.run(["rm", "-f", path, path + ".gz"], timeout=10)
            proc = host.start(tcpdump_argv(point.interface, path, self.settings, self.port),
                              f"tcpdump-{self.step_id}-{point.name}", self.hosts.workdir)
            self._procs.append((point, proc, path))
        for point, proc, _ in self._procs:
            self._wait_listening(point, proc)

    def _wait_listening(self, point: CapturePoint, proc: RemoteProcess) -> None:
        host = proc.host
        end = time.monotonic() + LISTEN_TIMEOUT_S
        while True:
            err = host.run(["cat", proc.stderr_path], timeout=10, check=False).stdout
            if "listening on" in err:
                return
            if proc.wait(0.1) is not None or time.monotonic() > end:
                raise CaptureError(f"tcpdump on {point.host} ({point.interface}) did not start: "
                                   f"{err.strip().splitlines()[-1] if err.strip() else 'no output'}")

    def stop(self) -> dict[str, Any]:
        """Stop every tcpdump (bounded), fetch and compress its file; what each point holds."""
        out: dict[str, Any] = {}
        for point, proc, path in self._procs:
            entry: dict[str, Any] = {**point.to_dict()}
            try:
                proc.stop(grace=self.settings.stop_timeout_s)
                host = proc.host
                stderr = host.run(["cat", proc.stderr_path], timeout=10, check=False).stdout
                entry.update(tcpdump_counts(stderr))
                host.run(["gzip", "-f", path], timeout=60)
                local = self.folder / f"{point.name}.pcap.gz"
                host.get(path + ".gz", local)
                host.run(["rm", "-f", path + ".gz"], timeout=10)
                entry.update(file=str(local.relative_to(self.folder.parent.parent)),
                             bytes=local.stat().st_size)
            except Exception as exc:  # one point's failure must not keep the others running
                log.warning("capture %s of step %s: %s", point.name, self.step_id, exc)
                entry["error"] = str(exc)
            out[point.name] = entry
        self._procs.clear()
        return out


@contextlib.contextmanager
def step_captures(hosts: Any, settings: PacketCapture, lab: dict[str, Any], names: dict[str, str],
                  step_id: str, out: Path, port: int, record: dict[str, Any],
                  networked: bool = True, repetition: int = 0) -> Iterator[None]:
    """Captures around the body of a step when ``settings.enabled``; fills ``record``'s
    ``captures`` (per point: file, bytes, packet counts) and ``clock`` (the MD's offsets), or
    ``captures_skipped`` (why: a real lab, or an odd ``repetition`` with ``alternate``) and runs
    the step without. A step that sends nothing (``networked`` false: the whole model on the
    MD) is not captured."""
    if not settings.enabled or not networked:
        yield
        return
    if not settings.captures(repetition):
        record["captures_skipped"] = ALTERNATE_SKIP
        yield
        return
    try:
        points = capture_points(lab, names["md"], names["es"], names["router"])
    except CaptureError as exc:
        log.warning("step %s: no packet capture: %s", step_id, exc)
        record["captures_skipped"] = str(exc)
        yield
        return
    md = hosts.host(names["md"])
    capture = StepCapture(hosts, points, settings, step_id, out, port)
    record["clock"] = {"before": clock_offset(md, hosts.python)}
    started = time.monotonic()
    try:
        capture.start()
        yield
    finally:  # never masks the step's own error or Ctrl-C
        record["captures"] = capture.stop()
        record["captures_s"] = round(time.monotonic() - started, 3)
        try:
            record["clock"]["after"] = clock_offset(md, hosts.python)
        except Exception as exc:
            log.warning("step %s: the MD's clock offset after the step: %s", step_id, exc)
