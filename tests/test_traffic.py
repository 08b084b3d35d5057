"""iperf3 wrapper: argv, and reports of real iperf3 runs on the loopback."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from testbed.traffic import (
    IperfError,
    LoadReport,
    client_argv,
    free_port,
    load_duration_s,
    parse_report,
    run_local_udp_load,
    server_argv,
)

needs_iperf3 = pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 not installed")


def test_server_argv():
    assert server_argv("198.18.0.2", 5301) == [
        "iperf3", "-s", "-1", "-B", "198.18.0.2", "-p", "5301", "--json", "--idle-timeout", "60",
    ]
    assert "--idle-timeout" not in server_argv("::1", idle_timeout_s=None)


def test_client_argv():
    assert client_argv("198.18.0.2", 2.5, 31.2, port=5301) == [
        "iperf3", "-c", "198.18.0.2", "-p", "5301", "-u", "-b", "2500000", "-t", "32",
        "-l", "1472", "--json", "--connect-timeout", "5000",
    ]
    argv = client_argv("198.18.0.2", 0.5, 1, reverse=True, bind="198.18.0.9", length=1200,
                       connect_timeout_ms=None)
    assert argv[argv.index("-b") + 1] == "500000"
    assert argv[argv.index("-l") + 1] == "1200"
    assert "-R" in argv and argv[argv.index("-B") + 1] == "198.18.0.9"
    assert "--connect-timeout" not in argv
    assert all(isinstance(a, str) for a in argv)


def test_zero_load_runs_nothing():
    with pytest.raises(ValueError, match="unlimited"):
        client_argv("198.18.0.2", 0, 10)
    nothing = run_local_udp_load("127.0.0.1", 0, 5)
    assert nothing.client == nothing.server == LoadReport.none()
    assert LoadReport.none().view == "none"


def test_load_duration_covers_the_step():
    assert load_duration_s(42.3, settle_s=1.0, margin_s=5.0) == 49
    assert load_duration_s(0, 0, 0) == 1


def test_error_json_raises_clearly():
    doc = {"start": {"connected": []}, "intervals": [], "end": {},
           "error": "unable to connect to server: Connection refused"}
    with pytest.raises(IperfError, match="iperf3 failed: unable to connect") as info:
        parse_report(json.dumps(doc))
    assert info.value.report == doc
    with pytest.raises(IperfError, match="no JSON output"):
        parse_report("")
    with pytest.raises(IperfError, match="not JSON"):
        parse_report("iperf3: error - oops")
    with pytest.raises(IperfError, match="expected a UDP test report"):
        parse_report({"start": {"test_start": {"protocol": "TCP"}}, "end": {}})


@needs_iperf3
def test_real_error_json_from_iperf3():
    port = free_port()  # nothing listens there
    out = subprocess.run(
        client_argv("127.0.0.1", 1, 1, port=port, connect_timeout_ms=1000),
        capture_output=True, timeout=10,
    ).stdout
    with pytest.raises(IperfError, match="unable to connect"):
        parse_report(out)


@pytest.fixture(scope="module")
def loopback_load():
    if shutil.which("iperf3") is None:
        pytest.skip("iperf3 not installed")
    return run_local_udp_load("127.0.0.1", 5.0, 2)


@needs_iperf3
def test_real_udp_report_on_loopback(loopback_load):
    for report in (loopback_load.client, loopback_load.server):
        assert report.view == "receiver"
        assert report.asked_mbit == 5.0
        assert report.achieved_mbit == pytest.approx(5.0, rel=0.10)
        assert report.lost_percent is not None and report.lost_percent < 5
        assert report.jitter_ms is not None and report.jitter_ms >= 0
        assert report.duration_s == pytest.approx(2.0, abs=0.3)
        # 5 Mbit/s of 1472-byte datagrams for 2 s is about 849 packets
        assert report.packets == pytest.approx(5e6 * 2 / (1472 * 8), rel=0.10)
        assert report.raw["start"]["test_start"]["protocol"] == "UDP"
    assert loopback_load.receiver is loopback_load.server
    # the server's end.sum carries no bytes in iperf 3.12: the parser must not have used it
    server_sum = loopback_load.server.raw["end"].get("sum", {})
    if server_sum.get("bytes") == 0:
        assert loopback_load.server.achieved_mbit > 0


@needs_iperf3
def test_reparse_raw_report_gives_the_same_numbers(loopback_load):
    raw = json.dumps(loopback_load.client.raw)
    again = parse_report(raw)  # asked load taken from the report's target bitrate
    assert again.asked_mbit == 5.0
    assert again.achieved_mbit == loopback_load.client.achieved_mbit
    assert again.to_dict()["view"] == "receiver"


@needs_iperf3
def test_reverse_load_is_measured_by_the_client():
    load = run_local_udp_load("127.0.0.1", 2.0, 1, reverse=True)
    assert load.client.view == "receiver"
    assert load.server.view == "sender" and load.server.lost_percent is None
    assert load.receiver is load.client
    assert load.client.achieved_mbit == pytest.approx(2.0, rel=0.10)
