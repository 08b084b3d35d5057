"""The shared medium shaped inside the AP VM, over SSH with ``tc``: one queue per direction, read
back and checked (see :mod:`testbed.vm.lab` for where each queue sits).

Each queue is ``netem limit Q delay D [jitter J distribution normal] [loss L%] rate R`` at the
root of the device that serves it (no token bucket: packets are serialised at R), or, with
``fair_per_station``, the HTB tree of :func:`testbed.lab.queue_math.fair_tree` with ``netem``
leaves for delay, jitter, loss and the queue limit. Several NICs feeding one queue are redirected
(clsact + ``u32 match u32 0 0`` + ``mirred egress redirect``) into one ifb. What the VM's kernel
then holds (``tc -s qdisc``, classes, filters) goes into a :class:`VmShapingReport`; a netem
that differs from the shape asked for is an error.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from testbed.lab.plan import LabError, LinkShape, ShapingReport, StationClass
from testbed.lab.queue_math import expected_tcp_goodput_mbit, fair_tree, frame_cost
from testbed.vm import shaping
from testbed.vm.boot import AccessPointVm

TC = shaping.TC
IP = "/usr/sbin/ip"


def _bits(rate_Bps: int) -> str:
    return f"{rate_Bps * 8}bit"


# --------------------------------------------------------------------------- shaping in the VM


@dataclass
class VmShapingReport(ShapingReport):
    """A :class:`ShapingReport` plus what only the VM has: the ``tc`` commands run, ``tc -s
    qdisc`` as text, the guest NICs' offload state."""

    vm: dict[str, Any] = field(default_factory=dict)


def _shared_queue(vm: AccessPointVm, feeds: list[str], ifb: str) -> tuple[str, list[dict]]:
    """The device whose root qdisc serves ``feeds``: the NIC itself, or an ifb they redirect to."""
    if len(feeds) == 1:
        return feeds[0], []
    vm.run(f"{IP} link add {ifb} type ifb 2>/dev/null || true; {IP} link set {ifb} up", timeout=20)
    redirects = []
    for dev in feeds:
        vm.run([TC, "qdisc", "replace", "dev", dev, "clsact"], timeout=20)
        vm.run([TC, "filter", "add", "dev", dev, "egress", "prio", "1", "protocol", "all", "u32",
                "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb],
               timeout=20)
        redirects.append({"interface": dev, "hook": "egress", "qdisc": "clsact",
                          "filter": "u32 match u32 0 0 (all protocols) prio 1",
                          "action": f"mirred egress redirect dev {ifb}"})
    return ifb, redirects


def _netem_for(shape: LinkShape, *, rate: bool) -> shaping.Netem:
    return shaping.Netem(
        rate_mbit=shape.rate_mbit if rate else None, delay_ms=shape.delay_ms,
        jitter_ms=shape.jitter_ms, distribution="normal" if shape.jitter_ms else None,
        loss_pct=shape.loss_pct, limit_packets=shape.queue_packets,
        overhead_bytes=shape.overhead_bytes if rate else 0)


def _apply_fifo(vm: AccessPointVm, dev: str, shape: LinkShape) -> list[list[str]]:
    spec = _netem_for(shape, rate=True)
    argv = [TC, "qdisc", "replace", "dev", dev, "root", "handle", "1:", *spec.tc_args()]
    vm.run(argv, timeout=20)
    return [argv]


def _apply_fair(vm: AccessPointVm, dev: str, shape: LinkShape, stations: list[StationClass],
                match: str, report: ShapingReport) -> tuple[list[list[str]], int]:
    """The HTB tree of :func:`testbed.lab.queue_math.fair_tree` with netem leaves, as ``tc``."""
    tree = fair_tree(shape, stations, match)
    common = ["burst", f"{tree.burst_bytes}b", "cburst", f"{tree.burst_bytes}b",
              "quantum", str(tree.quantum_bytes)]
    if tree.overhead_bytes:
        common += ["overhead", str(tree.overhead_bytes)]
    leaf = _netem_for(shape, rate=False).tc_args()
    total = _bits(tree.rate_Bps)
    cmds = [[TC, "qdisc", "del", "dev", dev, "root"]]
    vm.run(cmds[0], timeout=20, check=False)
    cmds += [[TC, "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default",
              f"{tree.default.minor:x}"],
             [TC, "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb",
              "rate", total, "ceil", total, *common]]
    for c in (*tree.stations, tree.default):
        cmds += [[TC, "class", "add", "dev", dev, "parent", "1:1", "classid", c.classid, "htb",
                  "rate", _bits(c.rate_Bps), "ceil", _bits(c.ceil_Bps), *common],
                 [TC, "qdisc", "add", "dev", dev, "parent", c.classid, "handle", f"{c.minor:x}:",
                  *leaf]]
        if c.station is not None:
            cmds.append([TC, "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip",
                         "prio", "1", "u32", "match", "ip", match, c.network,
                         "flowid", c.classid])
    for argv in cmds[1:]:
        vm.run(argv, timeout=20)
    report.applied.update(per_station_classes=tree.report_classes(),
                          default_class=tree.default.classid, leaf_qdisc="netem",
                          burst_bytes=tree.burst_bytes, cburst_bytes=tree.burst_bytes,
                          queue_limit_scope="per class" if stations else "shared")
    report.notes.append("rate by HTB (token bucket), delay/jitter/loss/queue by netem leaves")
    return cmds, tree.optimism_bytes


def read_back(vm: AccessPointVm, dev: str) -> dict[str, Any]:
    """What the VM's kernel holds on ``dev``: ``tc -s qdisc`` (text and JSON), classes, filters."""
    out: dict[str, Any] = {"tc_s_qdisc": vm.run([TC, "-s", "qdisc", "show", "dev", dev],
                                                timeout=20).stdout.strip()}
    try:
        out["qdiscs"] = json.loads(vm.run([TC, "-s", "-j", "qdisc", "show", "dev", dev],
                                          timeout=20).stdout or "[]")
    except ValueError:
        out["qdiscs"] = []
    classes = vm.run([TC, "class", "show", "dev", dev], timeout=20).stdout.strip()
    filters = vm.run([TC, "filter", "show", "dev", dev], timeout=20).stdout.strip()
    out["classes"] = classes.splitlines() if classes else []
    out["filters"] = filters.splitlines() if filters else []
    return out


def _check_netem(shape: LinkShape, qdiscs: list[dict[str, Any]], fair: bool) -> list[str]:
    """Differences between the shape asked for and the netem qdiscs read back (empty: none)."""
    problems = []
    netems = [q for q in qdiscs if q.get("kind") == "netem"]
    if not netems:
        return ["no netem qdisc on the device"]
    for q in netems:
        o = q.get("options") or {}
        if o.get("limit") != shape.queue_packets:
            problems.append(f"netem {q.get('handle')} limit {o.get('limit')} != {shape.queue_packets}")
        delay = (o.get("delay") or {}).get("delay", 0) if isinstance(o.get("delay"), dict) else 0
        if abs(delay * 1e3 - shape.delay_ms) > 0.01:
            problems.append(f"netem {q.get('handle')} delay {delay * 1e3:g} ms != {shape.delay_ms}")
        if not fair:
            rate = (o.get("rate") or {}).get("rate") if isinstance(o.get("rate"), dict) else None
            if rate is None or abs(rate * 8 / 1e6 - shape.rate_mbit) > 0.01 * shape.rate_mbit:
                problems.append(f"netem {q.get('handle')} rate {rate} B/s != {shape.rate_mbit} Mbit/s")
    return problems


def shape_queue(vm: AccessPointVm, label: str, feeds: list[str], ifb: str, shape: LinkShape,
                stations: list[StationClass], match: str) -> VmShapingReport:
    """Shape one direction of the medium in the VM; the report says what the kernel holds."""
    fair = shape.fair_per_station and bool(stations)
    report = VmShapingReport(label=label, namespace="vm", interface="", feeds=list(feeds),
                           backend="htb+netem" if fair else "netem", requested=asdict(shape))
    dev, report.redirects = _shared_queue(vm, feeds, ifb)
    report.interface = dev
    offloads = {d: shaping.offloads_off(vm, d) for d in dict.fromkeys([*feeds, dev])}
    if fair:
        cmds, optimism = _apply_fair(vm, dev, shape, stations, match, report)
    else:
        cmds, optimism = _apply_fifo(vm, dev, shape), 0
        if shape.burst_bytes:
            report.not_applied["burst_bytes"] = "not applicable: netem rate has no bucket"
    report.applied.update(rate_mbit=shape.rate_mbit, overhead_bytes=shape.overhead_bytes,
                          delay_ms=shape.delay_ms, jitter_ms=shape.jitter_ms,
                          loss_pct=shape.loss_pct, queue_limit_packets=shape.queue_packets)
    if not fair:
        report.applied["burst_bytes"] = 0
    if shape.jitter_ms:
        report.notes.append("netem jitter (normal distribution) can reorder packets")
    back = read_back(vm, dev)
    report.qdiscs = back["qdiscs"]
    report.classes = [{"line": c} for c in back["classes"]]
    report.filters = [{"line": f} for f in back["filters"]]
    mismatch = _check_netem(shape, back["qdiscs"], fair)
    if mismatch:
        raise LabError(f"{label}: the VM does not hold what was asked: {'; '.join(mismatch)}\n"
                       f"{back['tc_s_qdisc']}")
    frame = frame_cost(shape.overhead_bytes)
    report.expected = {
        "frame_bytes_charged": frame,
        "tcp_goodput_mbit": round(expected_tcp_goodput_mbit(
            shape.rate_mbit, shape.overhead_bytes), 3),
        "small_transfer_optimism_bytes": optimism,
        "small_transfer_optimism_ms": round(optimism * 8 / (shape.rate_mbit * 1e3), 3),
        "queue_delay_full_ms": round(shape.queue_packets * frame * 8 / (shape.rate_mbit * 1e3), 1),
    }
    report.notes.append(f"shaped inside the AP VM with `tc` over SSH; read back: "
                        f"{back['tc_s_qdisc'].splitlines()[0] if back['tc_s_qdisc'] else '?'}")
    report.vm = {"commands": [" ".join(c) for c in cmds], "tc_s_qdisc": back["tc_s_qdisc"],
                 "guest_offloads": offloads}
    return report
