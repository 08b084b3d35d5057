"""Reading a step's capture (``captures/<step>/<point>.pcap.gz``) into TCP segment headers.

scapy reads the pcap records and dissects each one (Ethernet, IPv4, TCP; the payload was not
kept, only its length, from the IP header). A file that is not a pcap, a gzip stream that ends
early or a record cut short raises ``CaptureFileError`` naming the file and the record.
"""

from __future__ import annotations

import gzip
import io
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from scapy.data import MTU
from scapy.error import Scapy_Exception
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import RawPcapReader


class CaptureFileError(ValueError):
    """A capture file cannot be read (the message names the file and what is wrong)."""


@dataclass(frozen=True, slots=True)
class Segment:
    """One captured TCP segment: when (ns, CLOCK_REALTIME), which flow, and its header fields."""

    t_ns: int
    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    ack: int
    flags: int
    payload: int
    """TCP payload bytes (from the IP header's total length: the payload was not captured)."""
    ip_id: int
    wire_bytes: int
    """Ethernet frame length as sent (the pcap record's original length)."""
    window: int

    @property
    def syn(self) -> bool:
        return bool(self.flags & 0x02)


def _records(path: Path, data: bytes) -> Iterator[tuple[int, int, bytes, int]]:
    try:
        reader = RawPcapReader(io.BytesIO(data))
    except (Scapy_Exception, EOFError, ValueError) as exc:
        raise CaptureFileError(f"{path}: not a pcap file ({exc})") from None
    nano = getattr(reader, "nano", False)
    with reader:
        index = 0
        while True:
            at = reader.f.tell()
            try:
                raw, meta = reader._read_packet()  # noqa: SLF001 (the public iterator hides EOF)
            except EOFError:
                if at != len(data):
                    raise CaptureFileError(
                        f"{path}: record {index}: its header is cut short after byte {at} of "
                        f"{len(data)} (truncated capture)") from None
                return
            except (Scapy_Exception, ValueError) as exc:
                raise CaptureFileError(f"{path}: record {index}: unreadable ({exc})") from None
            if len(raw) < min(meta.caplen, MTU):
                raise CaptureFileError(
                    f"{path}: record {index} is cut short: {len(raw)} of its {meta.caplen} "
                    "captured bytes are in the file (truncated capture)")
            t_ns = meta.sec * 1_000_000_000 + (meta.usec if nano else meta.usec * 1000)
            yield index, t_ns, raw, meta.wirelen
            index += 1


def _decompress(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CaptureFileError(f"{path}: cannot read: {exc}") from None
    if not path.name.endswith(".gz"):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise CaptureFileError(f"{path}: damaged or truncated gzip stream ({exc})") from None


def read_segments(path: Path | str) -> list[Segment]:
    """Every IPv4 TCP segment in the capture, in file order (other packets are skipped)."""
    path = Path(path)
    out: list[Segment] = []
    for index, t_ns, raw, wirelen in _records(path, _decompress(path)):
        pkt = Ether(raw)
        ip = pkt.getlayer(IP)
        tcp = pkt.getlayer(TCP)
        if ip is None or tcp is None:
            continue
        if ip.len is None or ip.ihl is None or tcp.dataofs is None:
            raise CaptureFileError(f"{path}: record {index}: IP/TCP header cut short")
        payload = ip.len - 4 * ip.ihl - 4 * tcp.dataofs
        if payload < 0:
            raise CaptureFileError(
                f"{path}: record {index}: IP total length {ip.len} is shorter than its headers")
        out.append(Segment(t_ns, ip.src, tcp.sport, ip.dst, tcp.dport, tcp.seq, tcp.ack,
                           int(tcp.flags), payload, ip.id, wirelen, tcp.window))
    return out
