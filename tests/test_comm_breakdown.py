"""The per-frame comm breakdown on a real capture (tests/fixtures/capture_run: 7 frames of
org-split2 over the AP VM's netem at 24 Mbit/s, 2 % loss, 10 Mbit/s of competing UDP load,
slow start after idle on), its cache next to the captures, and the capture settings and helpers.
Whatever writes a breakdown cache works on a copy of the fixture (``run``)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from analysis import comm_cache, comm_parts, comm_report
from analysis.comm_parts import PARTS, TOLERANCE_S, run_parts
from analysis.comm_report import write_breakdown
from analysis.pcap_read import CaptureFileError, read_segments
from testbed.capture import CaptureError, capture_points, tcpdump_argv, tcpdump_counts
from testbed.capture_settings import ALTERNATE_SKIP, PacketCapture
from testbed.records import read_records
from testbed.scenario import ScenarioError, load_scenario, parse_scenario, scenario_to_dict

FIXTURE = Path(__file__).parent / "fixtures" / "capture_run"
STEP = "L10-r0-org-split2"
HEADERS = 14 + 20 + 32  # Ethernet + IPv4 + TCP with timestamps: every data segment's overhead


@pytest.fixture(scope="module")
def manifest():
    return json.loads((FIXTURE / "manifest.json").read_text())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A copy of the fixture (a breakdown writes its cache next to the captures)."""
    dst = tmp_path_factory.mktemp("capture") / "run"
    shutil.copytree(FIXTURE, dst)
    return dst


@pytest.fixture(scope="module")
def parts(run):
    return {p.frame_id: p for p in run_parts(run)}


@pytest.fixture(scope="module")
def records():
    return {r.frame_id: r for r in read_records(FIXTURE / "steps" / f"{STEP}.csv")}


def test_the_fixture_is_small():
    assert sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file()) < 1_000_000


def test_every_captured_packet_is_read(manifest):
    for point, entry in manifest["steps"][STEP]["captures"].items():
        segments = read_segments(FIXTURE / entry["file"])
        assert len(segments) == entry["captured"], point
        assert all(s.dport == 5500 or s.sport == 5500 for s in segments)
        assert segments == sorted(segments, key=lambda s: s.t_ns)


def test_each_frame_owns_its_bytes_in_send_order(manifest, records, parts):
    """Frame k's bytes follow frame k-1's; the first new byte the MD sent after each frame's own
    send start is where the frame's range begins (the match holds for every frame)."""
    caps = comm_parts.load_step(FIXTURE, STEP, manifest["steps"][STEP], 5500)
    offset, spread = comm_parts.step_offset_ns(manifest["steps"][STEP])
    assert spread < 1_000_000
    starts = []
    for fid in sorted(records):
        r = records[fid]
        t_send = comm_parts.send_ns(r, offset)
        starts.append(comm_parts._first_new_byte(caps.up["md"], t_send).lo)
    sizes = [records[f].wire_bytes for f in sorted(records)]
    assert [b - a for a, b in zip(starts, starts[1:])] == sizes[:-1]
    assert len(parts) == len(records) and not any(p.flag for p in parts.values())
    # a frame's bytes are all sent after its send start and before its reply
    for fid, r in records.items():
        lo = starts[fid - min(records)]
        t_send = comm_parts.send_ns(r, offset)
        t_reply = r.capture_ns + round(r.total * 1e9) + offset
        mine = [x for x in caps.up["md"] if lo <= x.lo < lo + r.wire_bytes]
        assert mine and min(x.t_ns for x in mine) >= t_send
        assert max(x.t_ns for x in mine) <= t_reply


def test_parts_add_up_to_comm(parts, records):
    for fid, p in parts.items():
        assert p.comm == pytest.approx(records[fid].comm)
        assert abs(p.comm - p.parts_sum) <= TOLERANCE_S, fid
        assert all(getattr(p, k) >= -TOLERANCE_S for k in PARTS), (fid, p)


def test_serialization_is_the_frames_bytes_at_the_shaped_rate(parts, records, manifest):
    rate = comm_parts.bottleneck_of(manifest).rate_bps
    assert rate == 24e6
    clean = [f for f, p in parts.items() if p.retransmissions == 0]
    assert clean, "the fixture should hold a frame without loss"
    for fid in clean:
        expected = (records[fid].wire_bytes + parts[fid].segments * HEADERS) * 8 / rate
        assert parts[fid].serialization == pytest.approx(expected, rel=1e-6)


def test_a_lost_segment_is_a_retransmission(manifest, parts):
    """netem dropped a segment in the VM: the MD sent its range twice (new IP id), the ES saw it
    once; the frame counts the retransmission and its serialization goes to that part."""
    caps = comm_parts.load_step(FIXTURE, STEP, manifest["steps"][STEP], 5500)
    twice = {}
    for x in caps.up["md"]:
        twice.setdefault((x.lo, x.hi), []).append(x.ip_id)
    resent = {k: ids for k, ids in twice.items() if len(ids) > 1}
    arrived = [(y.lo, y.hi) for y in caps.up["es"]]
    assert resent
    for key, ids in resent.items():
        assert len(set(ids)) == len(ids)  # each transmission its own IP id
        assert arrived.count(key) == 1  # the first copy was lost in the bottleneck
    assert sum(p.retransmissions for p in parts.values()) == len(resent)
    assert sum(p.lost_in_bottleneck for p in parts.values()) == len(resent)
    lossy = [p for p in parts.values() if p.retransmissions]
    assert all(p.retransmission > 0 for p in lossy)


def test_a_window_stall_after_idle_is_a_stall(manifest, parts, records):
    """The first frame after the connection's idle start goes out in slow start: the MD sends a
    window, then waits for ACKs with bytes still pending. That idle time (seen as a gap at the MD)
    is the stall part, and it is no longer than the gaps themselves."""
    caps = comm_parts.load_step(FIXTURE, STEP, manifest["steps"][STEP], 5500)
    first = min(records)
    p = parts[first]
    assert p.stall > 2e-3
    r = records[first]
    offset, _ = comm_parts.step_offset_ns(manifest["steps"][STEP])
    t_send = r.capture_ns + round(r.md_proc * 1e9) + offset
    lo = comm_parts._first_new_byte(caps.up["md"], t_send).lo
    times = sorted(x.t_ns for x in caps.up["md"] if lo <= x.lo < lo + r.wire_bytes)
    gaps = sum(b - a for a, b in zip(times, times[1:])) * 1e-9
    assert p.stall <= gaps


def test_report_section_tables_and_figures(tmp_path, run):
    out = write_breakdown(run, tmp_path / "figures", tmp_path / "tables")
    assert out is not None
    assert {"comm_parts_vs_load", "comm_variance_share", "comm_timeline"} <= set(out.figures)
    for name in ("comm_parts.csv", "comm_variance.csv", "tcp_events.csv", "comm_frames.csv"):
        assert (tmp_path / "tables" / name).stat().st_size > 0
    shares = (tmp_path / "tables" / "comm_variance.csv").read_text().splitlines()[1].split(",")
    assert sum(float(v) for v in shares[3:]) == pytest.approx(1.0, abs=0.01)


# ---------------------------------------------------------------- damaged files


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(FIXTURE, dst)
    return dst


def test_truncated_gzip_is_a_clear_error(tmp_path):
    run = _copy(tmp_path)
    path = run / "captures" / STEP / "md.pcap.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CaptureFileError, match=r"md\.pcap\.gz: damaged or truncated gzip"):
        read_segments(path)
    assert run_parts(run) == []  # the step is left out (logged), nothing crashes
    assert write_breakdown(run, tmp_path / "f", tmp_path / "t") is not None


def test_record_cut_short_is_a_clear_error(tmp_path):
    path = tmp_path / "es.pcap.gz"
    data = gzip.decompress((FIXTURE / "captures" / STEP / "es.pcap.gz").read_bytes())
    path.write_bytes(gzip.compress(data[:24 + 16 + 50]))  # header, one record header, 50 B
    with pytest.raises(CaptureFileError, match=r"record 0 is cut short: 50 of its \d+"):
        read_segments(path)
    path.write_bytes(gzip.compress(data[:24 + 7]))
    with pytest.raises(CaptureFileError, match="record 0: its header is cut short"):
        read_segments(path)


def test_not_a_pcap_is_a_clear_error(tmp_path):
    path = tmp_path / "md.pcap.gz"
    path.write_bytes(gzip.compress(b"this is not a capture" * 10))
    with pytest.raises(CaptureFileError, match="md.pcap.gz: not a pcap file"):
        read_segments(path)
    path.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(CaptureFileError, match="damaged or truncated gzip"):
        read_segments(path)


def test_missing_capture_point_is_named(tmp_path):
    run = _copy(tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["steps"][STEP]["captures"]["es"]
    with pytest.raises(comm_parts.BreakdownError, match="no capture for bottleneck-out, es"):
        comm_parts.load_step(run, STEP, manifest["steps"][STEP], 5500)


# ---------------------------------------------------------------- settings and helpers


def test_packet_capture_key_is_checked():
    base = scenario_to_dict(load_scenario(Path(__file__).parents[1] / "scenarios" / "quickstart.yaml"))
    base["packet_capture"] = {"enabled": True, "snap_bytes": 96}
    assert parse_scenario(base).packet_capture == PacketCapture(True, 96)
    assert parse_scenario(scenario_to_dict(parse_scenario(base))) == parse_scenario(base)
    base["packet_capture"] = {"enabled": "yes", "snap_bytes": 20, "port": 1}
    with pytest.raises(ScenarioError) as err:
        parse_scenario(base, source="s.yaml")
    text = str(err.value)
    assert "s.yaml: packet_capture.enabled: expected true or false" in text
    assert "s.yaml: packet_capture.snap_bytes: expected an integer from 68 to 1514, got 20" in text
    assert "s.yaml: packet_capture.port: unknown key 'port'" in text


def test_capture_points_per_backend(manifest):
    lab = manifest["lab"]
    vm = capture_points(lab, "md", "es", "ap")
    assert [(p.name, p.host, p.roles) for p in vm] == [
        ("md", "md", ("md", "bottleneck-in")), ("es", "es", ("bottleneck-out", "es"))]
    ns = {**lab, "backend": {**lab["backend"], "backend": "namespace"}}
    names = [(p.name, p.host) for p in capture_points(ns, "md", "es", "ap")]
    assert names == [("md", "md"), ("ap-in", "ap"), ("ap-out", "ap"), ("es", "es")]
    ns3 = {**lab, "backend": {**lab["backend"], "backend": "ns3"}}
    assert [(p.name, p.interface, p.roles) for p in capture_points(ns3, "md", "es", "ap")] == [
        ("md", lab["hosts"]["md"]["interface"], ("md", "bottleneck-in")),
        ("es", lab["hosts"]["es"]["interface"], ("bottleneck-out", "es"))]
    with pytest.raises(CaptureError, match="no capture points known for the AP backend 'mininet'"):
        capture_points({**lab, "backend": {"backend": "mininet"}}, "md", "es", "ap")
    with pytest.raises(CaptureError, match="need the emulated lab"):
        capture_points({"kind": "real"}, "md", "es", "ap")


def test_tcpdump_argv_and_counts():
    argv = tcpdump_argv("veth0", "/w/x.pcap", PacketCapture(True, 96), 5500)
    assert argv[:5] == ["tcpdump", "-i", "veth0", "-s", "96"] and argv[-1] == "tcp port 5500"
    assert "--time-stamp-precision=nano" in argv and "--immediate-mode" in argv
    text = ("tcpdump: listening on veth0\n914 packets captured\n920 packets received by filter\n"
            "6 packets dropped by kernel\n")
    assert tcpdump_counts(text) == {"captured": 914, "received_by_filter": 920,
                                    "dropped_by_kernel": 6}


def test_a_real_lab_runs_its_steps_without_captures(tmp_path):
    from testbed.capture import step_captures

    record: dict = {}
    with step_captures(None, PacketCapture(True), {"kind": "real"}, {"md": "md", "es": "es",
                       "router": "ap"}, "L0", tmp_path, 5500, record):
        ran = True
    assert ran and "no common clock" in record["captures_skipped"]


def test_a_step_that_sends_nothing_is_not_captured(tmp_path):
    from testbed.capture import step_captures

    record: dict = {}
    with step_captures(None, PacketCapture(True), {"kind": "emulated"}, {}, "L0-md-only",
                       tmp_path, 5500, record, networked=False):
        pass
    assert record == {} and not (tmp_path / "captures").exists()


def test_alternate_captures_even_repetitions_only(tmp_path):
    from testbed.capture import step_captures

    settings = PacketCapture(True, alternate=True)
    assert [settings.captures(r) for r in range(4)] == [True, False, True, False]
    assert not PacketCapture(False, alternate=True).captures(0)
    record: dict = {}
    with step_captures(None, settings, {"kind": "emulated"}, {}, "L0-r1-es-only", tmp_path, 5500,
                       record, repetition=1):  # no host is touched: hosts=None would fail
        pass
    assert record == {"captures_skipped": ALTERNATE_SKIP}


def test_alternate_is_checked_against_enabled_and_repetitions():
    base = scenario_to_dict(load_scenario(Path(__file__).parents[1] / "scenarios" / "quickstart.yaml"))
    base["sweep"]["repetitions"] = 2
    base["packet_capture"] = {"enabled": True, "alternate": True}
    assert parse_scenario(base).packet_capture == PacketCapture(True, alternate=True)
    base["sweep"]["repetitions"] = 1
    with pytest.raises(ScenarioError, match=r"s.yaml: packet_capture.alternate: captures even "
                                            r"repetitions only: needs sweep.repetitions of 2 or "
                                            r"more, got 1"):
        parse_scenario(base, source="s.yaml")
    base["packet_capture"] = {"enabled": False, "alternate": True}
    with pytest.raises(ScenarioError, match=r"packet_capture.alternate: alternates captured and "
                                            r"uncaptured repetitions: set enabled: true"):
        parse_scenario(base, source="s.yaml")


def test_the_capture_effect_compares_captured_and_uncaptured_steps(tmp_path):
    """The fixture's captured step, plus its frames again as an uncaptured repetition with comm
    raised by 1 ms: the table's means are the frames' and their ratio theirs."""
    run = _copy(tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    assert comm_report.capture_effect_table(run).empty  # nothing left uncaptured on purpose
    twin = STEP.replace("-r0-", "-r1-")
    manifest["steps"][twin] = {k: v for k, v in manifest["steps"][STEP].items()
                               if k not in ("captures", "clock")}
    manifest["steps"][twin].update(repetition=1, captures_skipped=ALTERNATE_SKIP)
    (run / "manifest.json").write_text(json.dumps(manifest))
    lines = (run / "frames.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    copies = []
    for r in rows:
        c = dict(r, step=twin, repetition="1")
        if c["comm"]:
            c["comm"] = repr(float(c["comm"]) + 0.001)
        copies.append(",".join(c[h] for h in header))
    (run / "frames.csv").write_text("\n".join(lines + copies) + "\n")
    table = comm_report.capture_effect_table(run)
    measured = [float(r["comm"]) * 1e3 for r in rows
                if r["warmup"] == "False" and r["status"] == "ok" and r["comm"]]
    on = sum(measured) / len(measured)
    assert table.to_dict("records") == [{
        "config": "org-split2", "load_mbit": 10.0, "frames_on": len(measured),
        "frames_off": len(measured), "comm_on_ms": round(on, 3), "comm_off_ms": round(on + 1, 3),
        "on_over_off": round(on / (on + 1), 3)}]
    out = comm_report.write_breakdown(run, tmp_path / "figures", tmp_path / "tables")
    assert (tmp_path / "tables" / "capture_effect.csv").exists()
    assert "Comm with and without captures" in out.html


def test_fixed_and_reply_hold_the_links_configured_delay(manifest, parts):
    """netem delays each way by delay_ms: the bottleneck's fixed delay D is at least that (plus
    the VM's forwarding, well under a millisecond here), and every reply crosses the downlink's."""
    delay = manifest["scenario"]["link"]["delay_ms"] * 1e-3
    caps = comm_parts.load_step(FIXTURE, STEP, manifest["steps"][STEP], 5500)
    d = comm_parts.fixed_delay_ns(caps, comm_parts.bottleneck_of(manifest)) * 1e-9
    assert delay <= d < delay + 1e-3
    for p in parts.values():
        assert p.fixed >= d and p.reply >= delay


def test_uplink_parts_span_send_start_to_last_byte_at_the_es(manifest, parts, records):
    """Independently of the walk: the time from a frame's send start to the moment its last byte
    reached the ES equals the uplink parts (stall, retransmission, queue, serialization) plus the
    MD's stack and the bottleneck's fixed delay, i.e. comm less the ES's stack and the reply."""
    caps = comm_parts.load_step(FIXTURE, STEP, manifest["steps"][STEP], 5500)
    offset, _ = comm_parts.step_offset_ns(manifest["steps"][STEP])
    ranges = {r.frame_id: lo for r, lo, _ in comm_parts.frame_ranges(
        STEP, list(records.values()), caps, offset)}
    for fid, p in parts.items():
        r, lo = records[fid], ranges[fid]
        last = max(y.t_ns for y in caps.up["es"] if y.lo < lo + r.wire_bytes <= y.hi)
        reply_out = min(y.t_ns for y in caps.down["es"] if y.t_ns > last)
        uplink = (last - comm_parts.send_ns(r, offset)) * 1e-9
        es_stack = (reply_out - last) * 1e-9 - r.es_proc - (r.es_queue or 0)
        walk = p.stall + p.retransmission + p.queue + p.serialization
        assert walk + (p.fixed - es_stack) == pytest.approx(uplink, abs=TOLERANCE_S)
        assert p.reply == pytest.approx(r.comm - uplink - es_stack, abs=1e-6)


def test_frames_after_the_capture_ended_are_flagged_and_the_step_kept(manifest, records):
    """A frame sent after the capture stopped has no packets: it and the frames after it are
    flagged with the reason; the frames before keep their breakdown."""
    from dataclasses import replace

    from analysis.comm_parts import NOT_CAPTURED, step_parts

    last = max(records.values(), key=lambda r: r.frame_id)
    late = [replace(last, frame_id=last.frame_id + k, capture_ns=last.capture_ns + k * 10**12)
            for k in (1, 2)]
    link = comm_parts.bottleneck_of(manifest)
    out = step_parts(FIXTURE, STEP, manifest["steps"][STEP], list(records.values()) + late, link, 5500)
    flags = {p.frame_id: p.flag for p in out}
    assert flags[last.frame_id + 1] == flags[last.frame_id + 2] == NOT_CAPTURED
    assert not any(flags[fid] for fid in records)


# ---------------------------------------------------------------- a medium without a nominal rate


def test_a_medium_without_nominal_rate_is_one_part(tmp_path, parts):
    """The ns3 backend's medium (two capture points at the taps, no nominal rate): the time in it
    is one part, ``medium``, with the reason; the parts still add up to comm, the reply is the
    same as with a rate, and the report leaves queue and serialization out and says why."""
    run = _copy(tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["lab"]["backend"]["backend"] = "ns3"
    manifest["lab"]["shaping"] = [{"label": "medium", "backend": "ns3",
                                   "interface": "ns-3 802.11g BSS", "requested": {}}]
    (run / "manifest.json").write_text(json.dumps(manifest))
    link = comm_parts.bottleneck_of(manifest)
    assert link.rate_bps is None and "ns-3 802.11g BSS has no nominal rate" in link.unsplit
    unsplit = {p.frame_id: p for p in run_parts(run)}
    assert unsplit.keys() == parts.keys()
    for fid, p in unsplit.items():
        assert p.unsplit == link.unsplit and not p.flag, (fid, p.flag)
        assert p.queue == p.serialization == 0.0 and p.medium > 0
        assert abs(p.comm - p.parts_sum) <= TOLERANCE_S
        assert p.reply == pytest.approx(parts[fid].reply)
        # D is now the fastest segment's whole transit: fixed grows by at least its serialization
        assert p.fixed > parts[fid].fixed
    out = write_breakdown(run, tmp_path / "f", tmp_path / "t")
    assert "Not split: ns3 backend: ns-3 802.11g BSS has no nominal rate" in out.html
    header = (tmp_path / "t" / "comm_parts.csv").read_text().splitlines()[0].split(",")
    assert "medium_ms" in header and "queue_ms" not in header and "serialization_ms" not in header
    vm = write_breakdown(_copy(tmp_path / "vm"), tmp_path / "vm" / "f", tmp_path / "vm" / "t")
    assert "Not split" not in vm.html
    header = (tmp_path / "vm" / "t" / "comm_parts.csv").read_text().splitlines()[0].split(",")
    assert "queue_ms" in header and "medium_ms" not in header


# ---------------------------------------------------------------- the breakdown's cache


class Parses:
    """Counts the capture files scapy reads (the real reader runs)."""

    def __init__(self, monkeypatch):
        self.files: list[str] = []
        real = comm_parts.read_segments

        def counting(path):
            self.files.append(Path(path).name)
            return real(path)

        monkeypatch.setattr(comm_parts, "read_segments", counting)

    def take(self) -> list[str]:
        out, self.files = sorted(self.files), []
        return out


def test_a_second_report_reads_no_capture(tmp_path, monkeypatch, caplog):
    run = _copy(tmp_path)
    parses = Parses(monkeypatch)
    first = write_breakdown(run, tmp_path / "f1", tmp_path / "t1")
    assert parses.take() == ["es.pcap.gz", "es.pcap.gz", "md.pcap.gz", "md.pcap.gz"]  # parts, timeline
    cache = json.loads(comm_cache.cache_path(run, STEP).read_text())
    assert len(cache["frames"]) == 7 and len(cache["timelines"]) == 1
    second = write_breakdown(run, tmp_path / "f2", tmp_path / "t2")
    assert parses.take() == []
    assert first.html == second.html
    for name in ("comm_parts.csv", "comm_frames.csv", "comm_variance.csv", "tcp_events.csv"):
        assert (tmp_path / "t1" / name).read_text() == (tmp_path / "t2" / name).read_text()
    assert "breakdown cache" not in caplog.text


def test_a_changed_pcap_or_analysis_invalidates_the_cache(tmp_path, monkeypatch, caplog):
    run = _copy(tmp_path)
    parses = Parses(monkeypatch)
    before = run_parts(run)
    assert parses.take() == ["es.pcap.gz", "md.pcap.gz"]
    # the same packets, recompressed: other bytes, so another digest
    path = run / "captures" / STEP / "md.pcap.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1))
    with caplog.at_level("INFO", logger="analysis.comm_cache"):
        assert run_parts(run) == before
    assert parses.take() == ["es.pcap.gz", "md.pcap.gz"]
    assert "is stale (pcap md changed): recomputed" in caplog.text
    assert run_parts(run) == before and parses.take() == []
    monkeypatch.setattr(comm_cache, "analysis_version", lambda: "another version")
    caplog.clear()
    with caplog.at_level("INFO", logger="analysis.comm_cache"):
        assert run_parts(run) == before
    assert parses.take() == ["es.pcap.gz", "md.pcap.gz"]
    assert "is stale (analysis changed)" in caplog.text


@pytest.mark.parametrize("damage, reason", [
    (lambda text: text[: len(text) // 2], "is corrupt ("),
    (lambda text: "[1, 2]", "is corrupt (expected a JSON object, got list)"),
    (lambda text: text.replace('"queue": ', '"queue": "x", "_": ', 1),
     "is corrupt (frames[0].queue: expected float, got 'x')"),
    (lambda text: text.replace('"frame_id": ', '"_": ', 1), "frames[0].frame_id: missing"),
])
def test_a_corrupt_cache_is_recomputed(tmp_path, monkeypatch, caplog, damage, reason):
    run = _copy(tmp_path)
    before = run_parts(run)
    path = comm_cache.cache_path(run, STEP)
    path.write_text(damage(path.read_text()))
    parses = Parses(monkeypatch)
    assert run_parts(run) == before
    assert parses.take() == ["es.pcap.gz", "md.pcap.gz"]
    assert reason in caplog.text and "recomputed" in caplog.text
    assert run_parts(run) == before and parses.take() == []  # rewritten whole


def test_a_steps_error_is_cached_too(tmp_path, monkeypatch, caplog):
    run = _copy(tmp_path)
    path = run / "captures" / STEP / "es.pcap.gz"
    path.write_bytes(path.read_bytes()[:1000])
    assert run_parts(run) == []
    parses = Parses(monkeypatch)
    caplog.clear()
    assert run_parts(run) == [] and parses.take() == []
    assert "es.pcap.gz: damaged or truncated gzip" in caplog.text
