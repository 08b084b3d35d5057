"""The ``link`` section of a scenario: which preset, which overrides, which TCP settings.

``kind`` (wifi, lte, wired) picks the default preset (``testbed.presets``); any shape field of
the preset may be overridden (``rate_mbit``, ``delay_ms``...); ``tcp`` sets the TCP sysctls of
every host for the run. The values are checked here, then ``presets.resolve_link`` builds the
``LinkSpec``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from testbed import presets
from testbed.checks import BAD, Checker, ok
from testbed.presets import LinkSpec, TcpSettings

CC_RE = re.compile(r"^[a-z0-9_]+$")
LINK_KEYS = ("kind", "preset", *presets.SHAPING_FIELDS, "tcp")
TCP_KEYS = tuple(f.name for f in dataclasses.fields(TcpSettings))


def parse_link(ck: Checker, raw: Any) -> LinkSpec | None:
    """The ``link`` section: its preset with the section's overrides and TCP settings."""
    data = ck.mapping(raw, "link", LINK_KEYS, required=("kind",))
    if data is None:
        return None
    kind = ck.get(data, "kind", "link", ck.string, BAD, choices=presets.LINK_KINDS)
    preset = ck.get(data, "preset", "link", ck.string, choices=tuple(presets.PRESETS))
    section: dict[str, Any] = {}
    checks = {
        # ranges as testbed.lab.plan.LinkShape accepts them
        "rate_mbit": lambda v, p: ck.number(v, p, above=0, maximum=100_000),
        "delay_ms": lambda v, p: ck.number(v, p, minimum=0),
        "jitter_ms": lambda v, p: ck.number(v, p, minimum=0),
        "loss_pct": lambda v, p: ck.number(v, p, minimum=0, below=100),
        "queue_packets": lambda v, p: ck.integer(v, p, minimum=1, maximum=100_000),
        "overhead_bytes": lambda v, p: ck.integer(v, p, minimum=0, maximum=1000),
        "fair_per_station": lambda v, p: ck.boolean(v, p),
    }
    for key, check in checks.items():
        if data.get(key) is not None:
            section[key] = check(data[key], f"link.{key}")
    tcp: Any = TcpSettings()
    if data.get("tcp") is not None:
        t = ck.mapping(data["tcp"], "link.tcp", TCP_KEYS)
        if t is None:
            tcp = BAD
        else:
            ssai = ck.get(t, "slow_start_after_idle", "link.tcp", ck.boolean)
            cc = ck.get(
                t,
                "congestion_control",
                "link.tcp",
                ck.string,
                pattern=CC_RE,
                what="a kernel congestion control name such as cubic, reno or bbr",
            )
            if ok(ssai, cc):
                default = TcpSettings()
                tcp = TcpSettings(
                    slow_start_after_idle=default.slow_start_after_idle if ssai is None else ssai,
                    congestion_control=cc or default.congestion_control,
                )
            else:
                tcp = BAD
    if not ok(kind, preset, tcp, *section.values()):
        return None
    try:
        return presets.resolve_link({"kind": kind, "preset": preset, "tcp": tcp, **section})
    except ValueError as exc:
        field_name, _, message = str(exc).partition(": ")
        ck.error(f"link.{field_name}", message)
        return None
