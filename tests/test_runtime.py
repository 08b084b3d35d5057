"""The split runtime end to end over loopback: a real tail server, real TCP, real models."""

from __future__ import annotations

import socket
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed import wire
from testbed.configs import Configuration
from testbed.head import HeadError, HeadSettings, StepContext, run_head
from testbed.images import encode_jpeg, load_images, resize_crop
from testbed.records import read_records
from testbed.tail import TailServer, TailSettings

EC = Configuration("ec", "EC", "mobilenet_v2")
SC_BOTTLENECK = Configuration("bottleneck", "SC", "densenet169", kind="student", split="bottleneck",
                              n_ch=12)
CONFIGS = [
    Configuration("lc", "LC", "mobilenet_v2"),
    EC,
    Configuration("sc", "SC", "mobilenet_v2", split="features.6"),
    Configuration("sc-zlib", "SC", "mobilenet_v2", split="features.6", compression="zlib"),
    SC_BOTTLENECK,
]


@pytest.fixture(scope="module")
def tail():
    torch.set_num_threads(2)
    server = TailServer(TailSettings(port=0, idle_timeout_s=10, max_message_bytes=1 << 20)).start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def frames():
    return load_images("builtin")


def _run(tail, config, tmp_path, frames, n=4, warmup=1):
    path = tmp_path / f"{config.name}.csv"
    failed = run_head(
        HeadSettings(config=config, server=tail.address, frames=n, warmup=warmup,
                     context=StepContext(run_id="t", step="s0", load_mbit=5.0)),
        path, frames=frames,
    )
    return failed, list(read_records(path))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_each_mode_records_components_that_add_up(tail, tmp_path, frames, config):
    failed, records = _run(tail, config, tmp_path, frames)
    assert failed == 0
    assert [r.warmup for r in records] == [True, False, False, False, False]
    assert [r.frame_id for r in records] == [0, 1, 2, 3, 4]
    for r in records:
        assert r.status == "ok" and r.step == "s0" and r.load_mbit == 5.0
        assert r.predicted is not None and 0 <= r.predicted < 1000
        assert r.md_proc > 0 and r.total > 0
        if config.mode == "LC":
            assert r.comm is None and r.es_proc is None and r.wire_bytes == 0
            assert r.total == r.md_proc
        else:
            assert r.es_proc > 0 and r.comm > 0
            assert abs(r.md_proc + r.comm + r.es_queue + r.es_proc - r.total) < 1e-3
            assert r.wire_bytes > r.payload_bytes > 0


def test_bottleneck_payload_is_the_raw_quantized_tensor(tail, tmp_path, frames):
    _, records = _run(tail, SC_BOTTLENECK, tmp_path, frames, n=2, warmup=0)
    for r in records:
        assert r.payload_bytes == 12 * 29 * 29 == 10_092
        assert r.wire_bytes <= 10_092 * 1.01


def test_unquantized_split_predicts_like_the_whole_model(tail, tmp_path, frames):
    """Head on the MD + tail on the ES, float32 across, is the same network as LC."""
    lc = Configuration("lc", "LC", "mobilenet_v2")
    sc = Configuration("sc-f32", "SC", "mobilenet_v2", split="features.10", quantize=False)
    _, local = _run(tail, lc, tmp_path, frames, n=6, warmup=0)
    _, split = _run(tail, sc, tmp_path, frames, n=6, warmup=0)
    assert [r.predicted for r in local] == [r.predicted for r in split]


def test_head_refused_configuration_is_a_clear_error(tail, tmp_path, frames):
    lc_sent_to_es = Configuration("x", "SC", "mobilenet_v2", split="features.3")
    # A configuration the ES cannot build: bypass validation by sending raw JSON.
    with socket.create_connection(tail.address, timeout=10) as s:
        wire.send_message(s, wire.Hello({**lc_sent_to_es.to_dict(), "split": "nope"}))
        reply = wire.read_message(s, 1 << 16, timeout=10)
    assert isinstance(reply, wire.Error) and reply.code == wire.ErrorCode.BAD_CONFIG
    assert "nope" in reply.message


def test_head_without_tail_says_what_to_do(tmp_path, frames):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    with pytest.raises(HeadError, match="is `testbed tail` running"):
        run_head(HeadSettings(config=EC, server=("127.0.0.1", port), frames=1, warmup=0,
                              connect_timeout_s=2), tmp_path / "x.csv", frames=frames)


# --------------------------------------------------------------------------- hostile input


def _hello_ec(sock):
    wire.send_message(sock, wire.Hello(EC.to_dict()))
    assert isinstance(wire.read_message(sock, 1 << 16, timeout=30), wire.Ready)


def _good_session(tail, frames):
    """A well-behaved MD still gets served."""
    jpeg = encode_jpeg(resize_crop(frames[0].image, 224), 90)
    with socket.create_connection(tail.address, timeout=30) as s:
        _hello_ec(s)
        wire.send_message(s, wire.JpegFrame(7, jpeg))
        reply = wire.read_message(s, 1 << 16, timeout=30)
    assert isinstance(reply, wire.Result) and reply.frame_id == 7


def _reply_or_close(sock, timeout=10):
    """The server's answer to garbage: an Error message, then EOF (never a hang)."""
    sock.settimeout(timeout)
    try:
        msg = wire.read_message(sock, 1 << 16, timeout=timeout)
    except wire.PeerClosed:
        return None
    except ConnectionResetError:
        return None
    assert isinstance(msg, wire.Error), msg
    with pytest.raises((wire.PeerClosed, ConnectionResetError)):
        wire.read_message(sock, 1 << 16, timeout=timeout)
    return msg


def _header(kind, length, magic=b"SB", version=1):
    return struct.pack("!2sBBI", magic, version, kind, length)


@pytest.mark.parametrize(
    "data, code",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", wire.ErrorCode.BAD_HEADER),
        (_header(3, 10, version=9) + bytes(10), wire.ErrorCode.BAD_VERSION),
        (_header(3, 2**31), wire.ErrorCode.TOO_LARGE),
        (_header(99, 0), wire.ErrorCode.BAD_TYPE),
        (_header(1, 5) + b"[1,2]", wire.ErrorCode.BAD_BODY),
    ],
    ids=["http", "version", "oversized", "type", "hello-not-object"],
)
def test_malformed_first_message_closes_only_that_connection(tail, frames, data, code):
    with socket.create_connection(tail.address, timeout=10) as s:
        s.sendall(data)
        reply = _reply_or_close(s)
    assert reply is not None and reply.code == code
    _good_session(tail, frames)


def test_truncated_frame_and_wrong_shape_are_refused(tail, frames):
    with socket.create_connection(tail.address, timeout=10) as s:
        _hello_ec(s)
        s.sendall(_header(4, 5000) + b"\xff\xd8" + bytes(100))
        s.shutdown(socket.SHUT_WR)
        reply = _reply_or_close(s)
    assert reply is not None and reply.code == wire.ErrorCode.TRUNCATED

    with socket.create_connection(tail.address, timeout=60) as s:
        wire.send_message(s, wire.Hello(SC_BOTTLENECK.to_dict()))
        assert isinstance(wire.read_message(s, 1 << 16, timeout=60), wire.Ready)
        wrong = wire.TensorFrame(1, "uint8", (1, 12, 30, 30), 0.1, 0, "none", bytes(12 * 30 * 30))
        wire.send_message(s, wrong)
        reply = _reply_or_close(s)
    assert reply.code == wire.ErrorCode.WRONG_SHAPE and "(1, 12, 29, 29)" in reply.message
    _good_session(tail, frames)


def test_a_stalled_peer_does_not_block_others(tail, frames):
    with socket.create_connection(tail.address, timeout=10) as stalled:
        _hello_ec(stalled)
        stalled.sendall(_header(4, 1000) + b"\xff\xd8")  # then silence
        _good_session(tail, frames)


def test_corrupt_jpeg_gets_an_error(tail, frames):
    with socket.create_connection(tail.address, timeout=10) as s:
        _hello_ec(s)
        wire.send_message(s, wire.JpegFrame(3, b"\xff\xd8" + b"\x00" * 300))
        reply = _reply_or_close(s)
    assert reply.code == wire.ErrorCode.BAD_BODY and reply.frame_id == 3


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(min_size=1, max_size=600))
def test_arbitrary_bytes_after_hello_never_hurt_the_server(tail, frames, garbage):
    with socket.create_connection(tail.address, timeout=10) as s:
        _hello_ec(s)
        s.settimeout(15)
        try:  # the server may refuse and close before we finish sending: that is fine
            s.sendall(garbage)
            s.shutdown(socket.SHUT_WR)
            while s.recv(4096):  # whatever comes back, the server must end the connection
                pass
        except (ConnectionResetError, BrokenPipeError, OSError) as exc:
            assert not isinstance(exc, socket.timeout), "the server neither answered nor closed"
    _good_session(tail, frames)
