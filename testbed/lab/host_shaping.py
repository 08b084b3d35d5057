"""Rate/queue/delay shaping of one bottleneck, through netlink (pyroute2), with an honest report.

``apply_shape()`` puts a qdisc tree on one interface inside one namespace and returns a
``ShapingReport`` that says exactly what the kernel now holds (read back through netlink) and what
could *not* be applied. Which tree depends on the kernel (``testbed.lab.capabilities``) and on
``LinkShape.fair_per_station``:

=========================  ==================================================================
netem, shared FIFO (WiFi)  ``netem rate R packet_overhead O delay D jitter J loss L limit Q``
                           at the root. netem's rate has no token bucket: every packet is
                           serialised at R (frames of 1514 + O bytes), so small transfers sit
                           at the physical floor.
netem, fair (LTE)          ``htb`` root, class ``1:1`` rate=ceil=R, one class per station
                           ``1:1x`` rate=R/n ceil=R (+ ``1:fff`` for unclassified traffic),
                           u32 filters by station subnet, leaf ``netem delay D jitter J loss L
                           limit Q`` per class (the rate comes from HTB: see burst below).
no netem, shared FIFO      ``tbf rate R burst B`` root (``1:``) with child ``pfifo limit Q``
                           (``10:``): Q is a packet limit, as with netem. delay, jitter and loss
                           are NOT applied and the report says so.
no netem, fair             the HTB tree above with leaf ``pfifo limit Q``; delay/jitter/loss
                           NOT applied.
=========================  ==================================================================

Token-bucket sizes and what they cost in fidelity, the frame arithmetic and the per-station HTB
tree's numbers are in ``testbed.lab.queue_math`` (shared with the VM backend).

Segmentation offloads must be off on the path (the lab does that): a 64 KB GSO chunk is
segmented by tbf against the bucket, but netem would serialise it as one unit.

Redirecting into an ifb (``redirect_to_ifb``: clsact hook + ``u32`` match-all + ``mirred``
redirect) lets several interfaces share one queue (the lab's shared downlink), or shapes the
ingress direction of an interface.

Implementation note: qdiscs are added with hand-built ``tcmsg`` requests where pyroute2's ``tc()``
helper cannot express the request: its netem helper also emits a bogus ``TCA_RATE`` estimator
attribute when ``rate`` is given (the kernel rejects it with ERANGE), and its tbf helper cannot
set ``rate_overhead`` and rounds the bucket down (which makes tbf drop full-size frames).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_NEWQDISC
from pyroute2.netlink.rtnl.tcmsg import sched_netem, tcmsg

from testbed.lab.plan import LinkShape, ShapingReport, StationClass
from testbed.lab.queue_math import (
    FRAME_BYTES,
    PSCHED_TICK_NS,
    FairClass,
    FairTree,
    bytes_to_ticks,
    default_burst_bytes,
    expected_tcp_goodput_mbit,
    fair_tree,
    frame_cost,
    rate_bytes,
    ticks_to_bytes,
)

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
TC_H_ROOT = 0xFFFFFFFF
TC_H_CLSACT_INGRESS = 0xFFFFFFF2
TC_H_CLSACT_EGRESS = 0xFFFFFFF3
INGRESS_HANDLE = 0xFFFF0000

NO_NETEM = "not applied: no sch_netem in this kernel (CONFIG_NET_SCH_NETEM)"


# --------------------------------------------------------------------------- small helpers


def _has(caps: Any, name: str) -> bool:
    if caps is None:
        return False
    if hasattr(caps, "has"):
        return bool(caps.has(name))
    if isinstance(caps, Mapping):
        return bool(caps.get(name))
    return name in caps


def handle_str(h: int) -> str:
    if h == TC_H_ROOT:
        return "root"
    if h == 0xFFFFFFF1:
        return "ingress"
    if h == TC_H_CLSACT_INGRESS:
        return "clsact:ingress"
    if h == TC_H_CLSACT_EGRESS:
        return "clsact:egress"
    return f"{h >> 16:x}:{h & 0xFFFF:x}"


def _nlm_add_qdisc(
    ipr: IPRoute, kind: str, index: int, handle: int, parent: int, options: dict
) -> None:
    """RTM_NEWQDISC with exactly TCA_KIND + TCA_OPTIONS (see module note)."""
    msg = tcmsg()
    msg["family"] = socket.AF_UNSPEC
    msg["index"] = index
    msg["handle"] = handle
    msg["parent"] = parent
    msg["info"] = 0
    msg["attrs"] = [["TCA_KIND", kind], ["TCA_OPTIONS", options]]
    # pyroute2 0.9's synchronous nlm_request() expects this status key (only set by some
    # constructors); without it the call fails with KeyError before sending anything
    ipr.asyncore.status.setdefault("nlm_generator", False)
    ipr.nlm_request(msg, RTM_NEWQDISC, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)


def _tbf_options(rate_Bps: int, burst_bytes: int, limit_bytes: int, overhead: int) -> dict:
    return {
        "attrs": [
            [
                "TCA_TBF_PARMS",
                {
                    "rate": rate_Bps,
                    "rate_overhead": overhead,
                    "mtu": 0,
                    "buffer": bytes_to_ticks(burst_bytes, rate_Bps),
                    "limit": limit_bytes,
                },
            ],
            ["TCA_TBF_RTAB", True],
        ]
    }


def _netem_options(
    *,
    rate_Bps: int | None,
    overhead: int,
    delay_ms: float,
    jitter_ms: float,
    loss_pct: float,
    limit_packets: int,
) -> dict:
    kw: dict[str, Any] = {
        "delay": int(round(delay_ms * 1000)),  # pyroute2 takes microseconds here
        "jitter": int(round(jitter_ms * 1000)),
        "loss": loss_pct,
        "limit": limit_packets,
    }
    if rate_Bps:
        kw["rate"] = rate_Bps
        kw["packet_overhead"] = overhead
    opts = sched_netem.get_parameters(kw)
    # pyroute2 returns ticks as floats: the kernel struct wants integers
    for key in ("delay", "jitter"):
        opts[key] = int(round(opts[key]))
    return opts


def kernel_tbf_max_packet(buffer_ticks: int, rate_Bps: float, overhead: int) -> int:
    """Largest packet tbf will pass (it drops bigger ones), as the kernel computes it."""
    return int(ticks_to_bytes(buffer_ticks, rate_Bps)) - overhead


# --------------------------------------------------------------------------- read back


def _decode_qdisc(msg: Any) -> dict[str, Any]:
    kind = msg.get_attr("TCA_KIND")
    d: dict[str, Any] = {
        "kind": kind,
        "handle": handle_str(msg["handle"]),
        "parent": handle_str(msg["parent"]),
    }
    opts = msg.get_attr("TCA_OPTIONS")
    try:
        if kind == "tbf" and opts is not None:
            p = opts.get_attr("TCA_TBF_PARMS")
            rate = p["rate"]
            d.update(
                rate_mbit=rate * 8 / 1e6,
                burst_bytes=round(ticks_to_bytes(p["buffer"], rate)),
                buffer_ticks=p["buffer"],
                limit_bytes=p["limit"],
                overhead_bytes=p["rate_overhead"],
                max_packet_bytes=kernel_tbf_max_packet(p["buffer"], rate, p["rate_overhead"]),
            )
        elif kind in ("pfifo", "bfifo") and opts is not None:
            d["limit"] = opts["limit"]
        elif kind == "htb" and opts is not None:
            init = opts.get_attr("TCA_HTB_INIT")
            if init:
                d.update(default_class=f"{init['defcls']:x}", r2q=init["rate2quantum"])
        elif kind == "netem" and opts is not None:
            tick_us = PSCHED_TICK_NS / 1000
            d.update(
                delay_ms=opts["delay"] * tick_us / 1000,
                jitter_ms=opts["jitter"] * tick_us / 1000,
                loss_pct=opts["loss"] / (2**32 - 1) * 100,
                limit_packets=opts["limit"],
            )
            r = opts.get_attr("TCA_NETEM_RATE")
            if r:
                d.update(rate_mbit=r["rate"] * 8 / 1e6, overhead_bytes=r["packet_overhead"])
    except Exception as e:  # decoding must never break a run: say so instead
        d["decode_error"] = repr(e)
    return d


def _decode_class(msg: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "kind": msg.get_attr("TCA_KIND"),
        "classid": handle_str(msg["handle"]),
        "parent": handle_str(msg["parent"]),
    }
    opts = msg.get_attr("TCA_OPTIONS")
    try:
        if d["kind"] == "htb" and opts is not None:
            p = opts.get_attr("TCA_HTB_PARMS")
            d.update(
                rate_mbit=p["rate"] * 8 / 1e6,
                ceil_mbit=p["ceil"] * 8 / 1e6,
                burst_bytes=round(ticks_to_bytes(p["buffer"], p["rate"])),
                cburst_bytes=round(ticks_to_bytes(p["cbuffer"], p["ceil"])),
                quantum=p["quantum"],
                prio=p["prio"],
                overhead_bytes=p["rate_overhead"],
            )
    except Exception as e:
        d["decode_error"] = repr(e)
    return d


def read_tree(namespace: str | None, ifname: str) -> dict[str, list[dict[str, Any]]]:
    """The qdiscs and classes on ``ifname`` as the kernel reports them."""
    with _ipr(namespace) as ipr:
        index = _index(ipr, ifname)
        qdiscs = [_decode_qdisc(m) for m in ipr.tc("dump", index=index)]
        classes = [_decode_class(m) for m in ipr.get_classes(index=index)]
    return {"qdiscs": [q for q in qdiscs if q["kind"] != "noqueue"], "classes": classes}


def _ipr(namespace: str | None) -> IPRoute:
    return IPRoute(netns=namespace, flags=0) if namespace else IPRoute()


def _index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LookupError(f"no interface {ifname}")
    return found[0]


# --------------------------------------------------------------------------- backend choice


def choose_tree(shape: LinkShape, caps: Any) -> str:
    """The tree ``apply_shape`` will build for ``shape`` with capabilities ``caps``."""
    netem = _has(caps, "netem")
    if shape.fair_per_station:
        if _has(caps, "htb") and _has(caps, "u32"):
            return "htb+netem" if netem else "htb"
    if netem:
        return "netem"
    if _has(caps, "tbf"):
        return "tbf"
    if _has(caps, "htb"):
        return "htb"
    raise RuntimeError("no rate shaper available: need sch_netem, sch_tbf or sch_htb")


# --------------------------------------------------------------------------- ifb / redirect


def add_ifb(namespace: str | None, name: str) -> int:
    """Create ifb device ``name`` (up) in ``namespace``; return its index."""
    with _ipr(namespace) as ipr:
        ipr.link("add", ifname=name, kind="ifb")
        index = _index(ipr, name)
        ipr.link("set", index=index, state="up")
        return index


def redirect_to_ifb(
    namespace: str | None, ifname: str, ifb: str, hook: str = "egress"
) -> dict[str, Any]:
    """Redirect all packets of ``ifname``'s ``hook`` ("egress"/"ingress") to ``ifb``.

    clsact qdisc + ``u32 match u32 0 0`` (match-all, any protocol) + ``mirred egress redirect``:
    the packets are queued by the ifb's root qdisc, then continue where they were going (ifb
    returns egress packets to the original device's transmit path and ingress packets to its
    receive path).
    """
    if hook not in ("egress", "ingress"):
        raise ValueError(hook)
    with _ipr(namespace) as ipr:
        index = _index(ipr, ifname)
        ifb_index = _index(ipr, ifb)
        existing = [m.get_attr("TCA_KIND") for m in ipr.tc("dump", index=index)]
        if "clsact" not in existing:
            ipr.tc("add", "clsact", index)
        parent = TC_H_CLSACT_EGRESS if hook == "egress" else TC_H_CLSACT_INGRESS
        ipr.tc(
            "add-filter",
            "u32",
            index,
            parent=parent,
            prio=1,
            protocol=ETH_P_ALL,
            target=0x10001,
            keys=["0x0/0x0+0"],
            action={
                "kind": "mirred",
                "direction": "egress",
                "action": "redirect",
                "ifindex": ifb_index,
            },
        )
    return {
        "interface": ifname,
        "hook": hook,
        "qdisc": "clsact",
        "filter": "u32 match u32 0 0 (all protocols) prio 1",
        "action": f"mirred egress redirect dev {ifb}",
    }


def clear_root(namespace: str | None, ifname: str) -> None:
    """Delete the root qdisc of ``ifname`` (no error if there is none)."""
    with _ipr(namespace) as ipr:
        index = _index(ipr, ifname)
        for m in ipr.tc("dump", index=index):
            if m["parent"] == TC_H_ROOT and m.get_attr("TCA_KIND") not in ("noqueue",):
                try:
                    ipr.tc("del", index=index, handle=m["handle"], parent=TC_H_ROOT)
                except Exception:
                    pass


# --------------------------------------------------------------------------- apply


def apply_shape(
    namespace: str,
    ifname: str,
    shape: LinkShape,
    caps: Any,
    *,
    label: str,
    stations: Sequence[StationClass] = (),
    match: str = "src",
    feeds: Iterable[str] | None = None,
) -> ShapingReport:
    """Shape egress of ``ifname`` in ``namespace`` as ``shape`` says; report what was applied.

    ``stations`` / ``match`` (``"src"`` or ``"dst"``) classify packets into per-station HTB
    classes when ``shape.fair_per_station``. ``feeds``: interfaces whose traffic reaches this
    queue (for the report only; e.g. the veths redirected into an ifb).
    """
    if match not in ("src", "dst"):
        raise ValueError(match)
    backend = choose_tree(shape, caps)
    requested = asdict(shape)
    report = ShapingReport(
        label=label,
        namespace=namespace,
        interface=ifname,
        backend=backend,
        feeds=list(feeds) if feeds is not None else [ifname],
        requested=requested,
    )
    rate_Bps = rate_bytes(shape.rate_mbit)
    overhead = int(shape.overhead_bytes)
    frame = frame_cost(overhead)
    netem = backend in ("netem", "htb+netem")
    if shape.fair_per_station and not backend.startswith("htb"):
        report.not_applied["fair_per_station"] = (
            "not applied: needs sch_htb and cls_u32; one shared FIFO queue instead"
        )
    if not netem:
        for key in ("delay_ms", "jitter_ms", "loss_pct"):
            if getattr(shape, key):
                report.not_applied[key] = NO_NETEM
        if not (shape.delay_ms or shape.jitter_ms or shape.loss_pct):
            report.notes.append(
                "netem unavailable: delay/jitter/loss could not have been applied "
                "(none were requested)"
            )

    clear_root(namespace, ifname)
    with _ipr(namespace) as ipr:
        index = _index(ipr, ifname)
        if backend == "netem":
            _nlm_add_qdisc(
                ipr,
                "netem",
                index,
                0x10000,
                TC_H_ROOT,
                _netem_options(
                    rate_Bps=rate_Bps,
                    overhead=overhead,
                    delay_ms=shape.delay_ms,
                    jitter_ms=shape.jitter_ms,
                    loss_pct=shape.loss_pct,
                    limit_packets=shape.queue_packets,
                ),
            )
            report.applied.update(
                rate_mbit=shape.rate_mbit,
                overhead_bytes=overhead,
                delay_ms=shape.delay_ms,
                jitter_ms=shape.jitter_ms,
                loss_pct=shape.loss_pct,
                queue_limit_packets=shape.queue_packets,
                burst_bytes=0,
            )
            if shape.burst_bytes:
                report.not_applied["burst_bytes"] = "not applicable: netem rate has no bucket"
            if shape.jitter_ms:
                report.notes.append("netem jitter can reorder packets (TCP sees reordering)")
            optimism_bytes = 0
        elif backend == "tbf":
            burst = int(shape.burst_bytes or default_burst_bytes(rate_Bps, overhead))
            if burst < frame:
                report.notes.append(
                    f"burst {burst} B < one frame ({frame} B): tbf would drop full-size "
                    f"frames; raised to {frame} B"
                )
                burst = frame
            limit_bytes = shape.queue_packets * frame
            _nlm_add_qdisc(
                ipr, "tbf", index, 0x10000, TC_H_ROOT,
                _tbf_options(rate_Bps, burst, limit_bytes, overhead),
            )
            ipr.tc("add", "pfifo", index, 0x100000, parent=0x10001, limit=shape.queue_packets)
            report.applied.update(
                rate_mbit=shape.rate_mbit,
                overhead_bytes=overhead,
                burst_bytes=burst,
                queue_limit_packets=shape.queue_packets,
                tbf_limit_bytes=limit_bytes,
            )
            optimism_bytes = burst
        else:  # "htb" / "htb+netem"
            tree = fair_tree(shape, stations if shape.fair_per_station else (), match)
            optimism_bytes = _apply_htb(ipr, index, shape, tree, netem, report)
        # filters, as the kernel holds them (classid), with the match we installed (pyroute2
        # 0.9 decodes u32 keys 4 bytes off, so the keys themselves are not read back)
        if backend.startswith("htb"):
            wanted = {c["classid"]: c["match"]
                      for c in report.applied.get("per_station_classes", [])}
            for m in ipr.get_filters(index=index, parent=0x10000):
                opts = m.get_attr("TCA_OPTIONS")
                classid = opts.get_attr("TCA_U32_CLASSID") if opts is not None else None
                if classid is None:
                    continue
                cid = handle_str(classid)
                report.filters.append({"kind": "u32", "classid": cid,
                                       "match": wanted.get(cid, "?")})
            missing = set(wanted) - {f["classid"] for f in report.filters}
            if missing:
                raise RuntimeError(f"u32 filters missing for classes {sorted(missing)}")

    tree = read_tree(namespace, ifname)
    report.qdiscs = tree["qdiscs"]
    report.classes = tree["classes"]
    report.expected = {
        "frame_bytes_charged": frame,
        "tcp_goodput_mbit": round(expected_tcp_goodput_mbit(shape.rate_mbit, overhead), 3),
        "small_transfer_optimism_bytes": optimism_bytes,
        "small_transfer_optimism_ms": round(optimism_bytes * 8 / (shape.rate_mbit * 1e6) * 1e3, 3),
        "queue_delay_full_ms": round(shape.queue_packets * frame * 8 / (shape.rate_mbit * 1e3), 1),
    }
    if optimism_bytes:
        report.notes.append(
            f"token bucket: transfers after an idle period are optimistic by up to "
            f"{optimism_bytes} B = {report.expected['small_transfer_optimism_ms']} ms "
            f"at {shape.rate_mbit} Mbit/s (burst*8/rate)"
        )
    tbf = report.qdisc("tbf")
    if tbf and tbf.get("max_packet_bytes", frame) < FRAME_BYTES:
        raise RuntimeError(f"tbf bucket too small for full frames: {tbf}")
    return report


def _apply_htb(
    ipr: IPRoute,
    index: int,
    shape: LinkShape,
    tree: FairTree,
    netem: bool,
    report: ShapingReport,
) -> int:
    """Build ``tree`` (:func:`testbed.lab.queue_math.fair_tree`) with netem or pfifo leaves."""
    total = tree.rate_Bps
    ipr.tc("add", "htb", index, 0x10000, default=tree.default.minor)
    common = dict(burst=tree.burst_bytes, cburst=tree.burst_bytes, overhead=tree.overhead_bytes,
                  quantum=tree.quantum_bytes)
    ipr.tc("add-class", "htb", index, 0x10001, parent=0x10000, rate=total, ceil=total, **common)

    def add_class(c: FairClass) -> str:
        classid = 0x10000 | c.minor
        ipr.tc("add-class", "htb", index, classid, parent=0x10001, rate=c.rate_Bps,
               ceil=c.ceil_Bps, **common)
        handle = c.minor << 16
        if netem:
            _nlm_add_qdisc(
                ipr, "netem", index, handle, classid,
                _netem_options(
                    rate_Bps=None, overhead=tree.overhead_bytes, delay_ms=shape.delay_ms,
                    jitter_ms=shape.jitter_ms, loss_pct=shape.loss_pct,
                    limit_packets=shape.queue_packets,
                ),
            )
            return "netem"
        ipr.tc("add", "pfifo", index, handle, parent=classid, limit=shape.queue_packets)
        return "pfifo"

    offset = 12 if tree.match == "src" else 16
    for c in tree.stations:
        add_class(c)
        net = ipaddress.ip_network(c.network)
        ipr.tc(
            "add-filter", "u32", index, parent=0x10000, prio=1, protocol=ETH_P_IP,
            target=0x10000 | c.minor,
            keys=[f"0x{int(net.network_address):08x}/0x{int(net.netmask):08x}+{offset}"],
        )
    leaf_kind = add_class(tree.default)
    report.applied.update(
        rate_mbit=shape.rate_mbit,
        overhead_bytes=tree.overhead_bytes,
        burst_bytes=tree.burst_bytes,
        cburst_bytes=tree.burst_bytes,
        queue_limit_packets=shape.queue_packets,
        queue_limit_scope="per class" if tree.stations else "shared",
        per_station_classes=tree.report_classes(),
        default_class=tree.default.classid,
        leaf_qdisc=leaf_kind,
    )
    if netem:
        report.applied.update(
            delay_ms=shape.delay_ms, jitter_ms=shape.jitter_ms, loss_pct=shape.loss_pct
        )
        report.notes.append("rate by HTB (token bucket), delay/jitter/loss by netem leaves")
    return tree.optimism_bytes
