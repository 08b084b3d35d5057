"""The scenario's ``packet_capture`` section: per-step tcpdump captures of packet headers.

```yaml
packet_capture:
  enabled: true        # default false (a scenario without the section captures nothing)
  snap_bytes: 128      # bytes kept of each packet: Ethernet + IP + TCP headers with options
  stop_timeout_s: 10   # how long tcpdump may take to flush and exit after the step
  alternate: false     # true: capture even repetitions only (needs sweep.repetitions >= 2)
```

With ``alternate`` the odd repetitions run without captures, so one run (one lab start) holds
steps with and without them side by side, and the report compares their comm per configuration
and load: the captures' own effect, free of the run-to-run spread between two lab starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from testbed.checks import Checker, Section

ALTERNATE_SKIP = "alternate: an odd repetition runs without captures (packet_capture.alternate)"
"""The ``captures_skipped`` of a step left uncaptured on purpose, to compare with the others."""
SNAP_MIN, SNAP_MAX = 68, 1514
"""68 B still holds Ethernet + IPv4 + a TCP header with options; 1514 B is a whole frame."""


@dataclass(frozen=True)
class PacketCapture:
    enabled: bool = False
    snap_bytes: int = 128
    stop_timeout_s: float = 10.0
    alternate: bool = False

    def captures(self, repetition: int) -> bool:
        """Whether a step of ``repetition`` is captured."""
        return self.enabled and not (self.alternate and repetition % 2)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


KEYS = tuple(PacketCapture.__dataclass_fields__)


def parse_packet_capture(ck: Checker, raw: Any) -> PacketCapture:
    """The ``packet_capture`` section; problems go to ``ck`` (file and key path named)."""
    d = PacketCapture()
    section = Section(ck, raw, "packet_capture", KEYS, "packet capture settings")
    return PacketCapture(
        enabled=section.boolean("enabled", d.enabled),
        snap_bytes=section.integer("snap_bytes", d.snap_bytes, minimum=SNAP_MIN, maximum=SNAP_MAX),
        stop_timeout_s=section.number("stop_timeout_s", d.stop_timeout_s, above=0, maximum=120),
        alternate=section.boolean("alternate", d.alternate),
    )
