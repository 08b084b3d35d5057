"""Wire format: round trips, overhead, and refusal of every kind of malformed input."""

from __future__ import annotations

import json
import math
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed import codec, wire
from testbed.wire import (
    Bye,
    Error,
    ErrorCode,
    Hello,
    JpegFrame,
    MsgType,
    PeerClosed,
    Ready,
    Result,
    TensorFrame,
    WireError,
    WireTimeout,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
READ_TIMEOUT = 2.0
"""No read in these tests should wait: the writer has always finished or closed."""


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def raw_message(
    type_code: int, body: bytes, length: int | None = None, magic: bytes = b"SB", version: int = 1
) -> bytes:
    return (
        struct.pack("!2sBBI", magic, version, type_code, len(body) if length is None else length)
        + body
    )


def split(data: bytes) -> tuple[bytes, bytes]:
    return data[: wire.HEADER_SIZE], data[wire.HEADER_SIZE :]


def decode_bytes(data: bytes, max_body: int | None = None) -> wire.Message:
    return wire.decode(*split(data), max_body=max_body)


def read_all(data: bytes, max_body: int = 1 << 20) -> list[wire.Message]:
    """Messages a receiver reads from a stream carrying ``data`` and then EOF.

    A thread writes (``data`` may exceed the socket buffer); closing the reader's end makes a
    writer blocked on a refused stream fail instead of hanging.
    """
    a, b = socket.socketpair()

    def write() -> None:
        try:
            a.sendall(data)
            a.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        out: list[wire.Message] = []
        while True:
            try:
                out.append(wire.read_message(b, max_body, timeout=READ_TIMEOUT))
            except PeerClosed:
                return out
    finally:
        b.close()
        writer.join(READ_TIMEOUT)
        a.close()
        assert not writer.is_alive()


def tensor_frame(**kw: object) -> TensorFrame:
    fields: dict[str, object] = dict(
        frame_id=7,
        dtype="uint8",
        shape=(12, 29, 29),
        scale=0.05,
        zero_point=128,
        compression="none",
        payload=bytes(range(256)) * 39 + bytes(108),
    )
    fields.update(kw)
    return TensorFrame(**fields)  # type: ignore[arg-type]


GOOD_TENSOR = wire.encode(tensor_frame())


def patched(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new) :]


# --------------------------------------------------------------------------- strategies

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=12), json_values, max_size=6)
u32 = st.integers(0, 2**32 - 1)
f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def tensor_frames(draw: st.DrawFn) -> TensorFrame:
    dtype = draw(st.sampled_from(sorted(wire.DTYPE_CODES)))
    shape, budget = [], 1024  # at most 1024 elements
    for _ in range(draw(st.integers(1, wire.MAX_NDIM))):
        shape.append(draw(st.integers(1, max(1, min(6, budget)))))
        budget //= shape[-1]
    nbytes = math.prod(shape) * wire.DTYPE_ITEMSIZE[dtype]
    raw = draw(st.binary(min_size=nbytes, max_size=nbytes))
    compression = draw(st.sampled_from(sorted(wire.COMPRESSION_CODES)))
    if dtype == "uint8":
        scale = draw(f32.filter(lambda s: s > 0))
        zero_point = draw(st.integers(0, 255))
    else:
        scale, zero_point = draw(f32), draw(st.integers(-(2**31), 2**31 - 1))
    return TensorFrame(
        draw(u32),
        dtype,
        tuple(shape),
        scale,
        zero_point,
        compression,
        codec.compress(raw, compression),
    )


messages = st.one_of(
    st.builds(Hello, json_objects),
    st.builds(Ready, json_objects),
    tensor_frames(),
    st.builds(JpegFrame, u32, st.binary(max_size=300).map(lambda b: b"\xff\xd8" + b)),
    st.builds(
        Result,
        u32,
        st.integers(0, 2**64 - 1),
        st.integers(-(2**31), 2**31 - 1),
        st.integers(0, 0xFFFF),
    ),
    st.builds(Error, u32, st.sampled_from(ErrorCode), st.text(max_size=80)),
    st.just(Bye()),
)


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """A valid message with a few bytes overwritten, cut short or extended."""
    data = bytearray(wire.encode(draw(messages)))
    for _ in range(draw(st.integers(0, 3))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    how = draw(st.sampled_from(["keep", "cut", "extend"]))
    if how == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif how == "extend":
        data += draw(st.binary(min_size=1, max_size=20))
    return bytes(data)


hostile = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=60).map(lambda b: b"SB\x01" + b),  # valid magic/version, random rest
    st.tuples(st.integers(1, 7), st.binary(max_size=120)).map(lambda t: raw_message(t[0], t[1])),
    mangled(),
)


# --------------------------------------------------------------------------- round trips


@FAST
@given(messages)
def test_every_message_type_round_trips(msg: wire.Message) -> None:
    data = wire.encode(msg)
    assert len(data) == wire.wire_size(msg)
    assert data[:4] == b"SB\x01" + bytes([msg.TYPE])
    assert struct.unpack("!I", data[4:8])[0] == len(data) - 8
    assert decode_bytes(data) == msg


@settings(max_examples=40, deadline=None)
@given(st.lists(messages, min_size=1, max_size=4))
def test_message_sequences_round_trip_through_a_socket(msgs: list[wire.Message]) -> None:
    assert read_all(b"".join(wire.encode(m) for m in msgs)) == msgs


def test_send_message_and_read_message(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    msgs = [Hello({"model": "densenet201", "n_ch": 12}), tensor_frame(), Bye()]
    sent = sum(wire.send_message(a, m) for m in msgs)
    assert sent == sum(wire.wire_size(m) for m in msgs)
    assert [wire.read_message(b, wire.DEFAULT_MAX_BODY, timeout=READ_TIMEOUT) for _ in msgs] == msgs


def test_large_message_arrives_in_pieces(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    x = torch.randn(128, 28, 28)  # an unquantized split tensor, 401,408 bytes: many recv calls
    msg = TensorFrame.from_float(3, x, "float32", "none")
    t = threading.Thread(target=wire.send_message, args=(a, msg))
    t.start()
    got = wire.read_message(b, wire.DEFAULT_MAX_BODY, timeout=READ_TIMEOUT)
    t.join()
    assert got == msg
    assert torch.equal(wire.tensor_from_frame(got, (128, 28, 28)), x)


def test_read_message_restores_the_socket_timeout(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    b.settimeout(None)
    wire.send_message(a, Bye())
    wire.read_message(b, 100, timeout=1.0)
    assert b.gettimeout() is None


def test_tensor_frame_normalises_scale_to_float32() -> None:
    frame = tensor_frame(scale=0.1)
    assert frame.scale == float(np.float32(0.1))
    assert decode_bytes(wire.encode(frame)) == frame


# --------------------------------------------------------------------------- overhead


def test_overhead_of_a_quantized_12x29x29_bottleneck() -> None:
    x = torch.randn(12, 29, 29)
    q = codec.quantize(x)
    msg = TensorFrame.from_quantized(1, q, "none")
    size = wire.wire_size(msg)
    overhead = size - 12 * 29 * 29
    print(
        f"\n12x29x29 uint8: {size} bytes on the wire, overhead {overhead} bytes "
        f"({100 * overhead / (12 * 29 * 29):.3f}%)"
    )
    assert len(msg.payload) == 10_092
    assert size == len(wire.encode(msg))
    assert overhead == 35
    assert size <= 10_092 * 1.01
    batched = TensorFrame.from_quantized(1, codec.quantize(x[None]), "none")  # (1, 12, 29, 29)
    assert wire.wire_size(batched) - 10_092 == 39


# --------------------------------------------------------------------------- tensors


@pytest.mark.parametrize("compression", ["none", "zlib"])
def test_quantized_tensor_through_the_wire(compression: str) -> None:
    x = torch.relu(torch.randn(12, 29, 29))
    q = codec.quantize(x)
    msg = decode_bytes(wire.encode(TensorFrame.from_quantized(5, q, compression)))
    assert isinstance(msg, TensorFrame)
    y = wire.tensor_from_frame(msg, expected_shape=(12, 29, 29))
    assert y.dtype == torch.float32 and y.shape == (12, 29, 29)
    assert float((y - x).abs().max()) <= q.scale * 0.5001
    assert torch.equal(y, codec.dequantize(q))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("compression", ["none", "zlib"])
def test_float_tensor_through_the_wire(dtype: str, compression: str) -> None:
    x = torch.randn(2, 3, 5)
    msg = decode_bytes(wire.encode(TensorFrame.from_float(9, x, dtype, compression)))
    assert isinstance(msg, TensorFrame) and msg.dtype == dtype
    y = wire.tensor_from_frame(msg)
    y[0, 0, 0] = 1.0  # writable, owns its memory
    expected = x if dtype == "float32" else x.half().float()
    assert torch.equal(y[1:], expected[1:])


def test_wrong_shape_names_expected_and_got() -> None:
    with pytest.raises(WireError) as info:
        wire.tensor_from_frame(tensor_frame(), expected_shape=(12, 28, 28))
    assert info.value.code is ErrorCode.WRONG_SHAPE
    assert info.value.field == "body.shape"
    assert "expected (12, 28, 28), got (12, 29, 29)" in str(info.value)


def test_tensor_larger_than_limit_is_refused_before_decompressing() -> None:
    frame = tensor_frame(shape=(1000, 1000, 100), compression="zlib", payload=b"\x78\x9c")
    with pytest.raises(WireError) as info:
        wire.tensor_from_frame(frame, max_size=1 << 20)
    assert (info.value.code, info.value.field) == (ErrorCode.TOO_LARGE, "body.shape")


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (zlib.compress(bytes(10_092 + 1)), "inflates beyond"),  # one byte too many
        (zlib.compress(bytes(16 * 2**20), 9), "inflates beyond"),  # a zip bomb
        (zlib.compress(bytes(10_091)), "after zlib decompression, got 10091"),
        (b"garbage!", "corrupt"),
    ],
)
def test_bad_zlib_payloads_are_bad_bodies(payload: bytes, match: str) -> None:
    frame = tensor_frame(compression="zlib", payload=payload)
    with pytest.raises(WireError, match=match) as info:
        wire.tensor_from_frame(frame, expected_shape=(12, 29, 29))
    assert (info.value.code, info.value.field) == (ErrorCode.BAD_BODY, "body.payload")
    assert info.value.offset == 8 + 7 + 3 * 4 + 8


# --------------------------------------------------------------------------- malformed input

T = int(MsgType.TENSOR)
TENSOR_BODY = GOOD_TENSOR[8:]
HDR = 8

MALFORMED: list[tuple[str, bytes, ErrorCode, str, int | None]] = [
    ("bad magic", b"GE" + GOOD_TENSOR[2:], ErrorCode.BAD_HEADER, "header.magic", 0),
    ("http request", b"GET / HTTP/1.1\r\n\r\n", ErrorCode.BAD_HEADER, "header.magic", 0),
    (
        "unknown version",
        patched(GOOD_TENSOR, 2, b"\x02"),
        ErrorCode.BAD_VERSION,
        "header.version",
        2,
    ),
    ("unknown type 0", patched(GOOD_TENSOR, 3, b"\x00"), ErrorCode.BAD_TYPE, "header.type", 3),
    ("unknown type 200", patched(GOOD_TENSOR, 3, b"\xc8"), ErrorCode.BAD_TYPE, "header.type", 3),
    ("header cut short", GOOD_TENSOR[:5], ErrorCode.TRUNCATED, "header", 5),
    ("body cut short", GOOD_TENSOR[:-1], ErrorCode.TRUNCATED, "body", len(GOOD_TENSOR) - 1),
    (
        "tensor body too short",
        raw_message(T, b"\x00\x00\x00\x07\x01"),
        ErrorCode.BAD_BODY,
        "body",
        13,
    ),
    ("unknown dtype", patched(GOOD_TENSOR, 12, b"\x09"), ErrorCode.BAD_BODY, "body.dtype", 12),
    (
        "unknown compression",
        patched(GOOD_TENSOR, 13, b"\x07"),
        ErrorCode.BAD_BODY,
        "body.compression",
        13,
    ),
    ("ndim 0", patched(GOOD_TENSOR, 14, b"\x00"), ErrorCode.BAD_BODY, "body.ndim", 14),
    ("ndim 9", patched(GOOD_TENSOR, 14, b"\x09"), ErrorCode.BAD_BODY, "body.ndim", 14),
    ("zero dim", patched(GOOD_TENSOR, 19, bytes(4)), ErrorCode.BAD_BODY, "body.shape[1]", 19),
    (
        "shape/payload mismatch",
        patched(GOOD_TENSOR, 23, struct.pack("!I", 30)),
        ErrorCode.BAD_BODY,
        "body.payload",
        len(GOOD_TENSOR),
    ),
    (
        "payload one byte long",
        raw_message(T, TENSOR_BODY + b"\x00"),
        ErrorCode.BAD_BODY,
        "body.payload",
        len(GOOD_TENSOR),
    ),
    (
        "float32 payload for uint8 size",
        patched(GOOD_TENSOR, 12, b"\x02"),
        ErrorCode.BAD_BODY,
        "body.payload",
        len(GOOD_TENSOR),
    ),
    (
        "nan scale",
        patched(GOOD_TENSOR, 27, struct.pack("!f", math.nan)),
        ErrorCode.BAD_BODY,
        "body.scale",
        27,
    ),
    (
        "zero scale",
        patched(GOOD_TENSOR, 27, struct.pack("!f", 0.0)),
        ErrorCode.BAD_BODY,
        "body.scale",
        27,
    ),
    (
        "zero point 300",
        patched(GOOD_TENSOR, 31, struct.pack("!i", 300)),
        ErrorCode.BAD_BODY,
        "body.zero_point",
        31,
    ),
    (
        "empty zlib payload",
        raw_message(T, patched(TENSOR_BODY, 5, b"\x01")[:27]),
        ErrorCode.BAD_BODY,
        "body.payload",
        35,
    ),
    ("hello not utf-8", raw_message(1, b'{"a": "\xff"}'), ErrorCode.BAD_BODY, "body.json", 15),
    ("hello not json", raw_message(1, b'{"a": }'), ErrorCode.BAD_BODY, "body.json", 14),
    ("hello empty", raw_message(1, b""), ErrorCode.BAD_BODY, "body.json", 8),
    ("hello is a list", raw_message(1, b"[1, 2]"), ErrorCode.BAD_BODY, "body.json", 8),
    ("hello NaN", raw_message(1, b'{"a": NaN}'), ErrorCode.BAD_BODY, "body.json", 8),
    ("hello deeply nested", raw_message(1, b"[" * 20_000), ErrorCode.BAD_BODY, "body.json", None),
    ("ready trailing json", raw_message(2, b"{} {}"), ErrorCode.BAD_BODY, "body.json", 11),
    (
        "jpeg without SOI",
        raw_message(4, b"\x00\x00\x00\x01GIF89a"),
        ErrorCode.BAD_BODY,
        "body.payload",
        12,
    ),
    ("jpeg too short", raw_message(4, b"\x00\x00"), ErrorCode.BAD_BODY, "body", 10),
    ("result too short", raw_message(5, bytes(17)), ErrorCode.BAD_BODY, "body", 25),
    ("result between layouts", raw_message(5, bytes(19)), ErrorCode.BAD_BODY, "body", 27),
    ("result too long", raw_message(5, bytes(27)), ErrorCode.BAD_BODY, "body", 34),
    (
        "error unknown code",
        raw_message(6, b"\x00\x00\x00\x01\x01\x00oops"),
        ErrorCode.BAD_BODY,
        "body.code",
        12,
    ),
    (
        "error message not utf-8",
        raw_message(6, b"\x00\x00\x00\x01\x00\x06ab\xc3("),
        ErrorCode.BAD_BODY,
        "body.message",
        16,
    ),
    ("bye with a body", raw_message(7, b"\x00"), ErrorCode.BAD_BODY, "body", 8),
]


@pytest.mark.parametrize(
    ("data", "code", "field", "offset"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_input_gives_the_right_wire_error(
    data: bytes, code: ErrorCode, field: str, offset: int | None
) -> None:
    for attempt in ("decode", "socket"):
        with pytest.raises(WireError) as info:
            if attempt == "decode":
                decode_bytes(data)
            else:
                read_all(data)
        err = info.value
        assert (err.code, err.field) == (code, field), f"{attempt}: {err}"
        if offset is not None:
            assert err.offset == offset, f"{attempt}: {err}"
        assert not isinstance(err, WireTimeout)


def test_bytes_beyond_the_announced_length() -> None:
    with pytest.raises(WireError) as info:
        decode_bytes(GOOD_TENSOR + b"x")
    assert (info.value.code, info.value.field, info.value.offset) == (
        ErrorCode.BAD_BODY,
        "body",
        len(GOOD_TENSOR),
    )
    with pytest.raises(WireError) as info:  # on a stream they are the start of the next message
        read_all(GOOD_TENSOR + b"x")
    assert (info.value.code, info.value.field) == (ErrorCode.BAD_HEADER, "header.magic")
    with pytest.raises(WireError) as info:
        read_all(GOOD_TENSOR + b"S")  # a plausible start of a message, then EOF
    assert (info.value.code, info.value.field, info.value.offset) == (
        ErrorCode.TRUNCATED,
        "header",
        1,
    )


def test_error_text_names_field_offset_expected_and_got() -> None:
    with pytest.raises(WireError) as info:
        decode_bytes(b"GE" + GOOD_TENSOR[2:])
    assert str(info.value) == "header.magic at byte 0: expected b'SB', got b'GE'"
    reply = info.value.to_message()
    assert reply == Error(wire.NO_FRAME, ErrorCode.BAD_HEADER, str(info.value))
    assert decode_bytes(wire.encode(reply)) == reply


def test_body_larger_than_max_body_is_refused() -> None:
    with pytest.raises(WireError) as info:
        decode_bytes(GOOD_TENSOR, max_body=10_000)
    assert (info.value.code, info.value.field, info.value.offset) == (
        ErrorCode.TOO_LARGE,
        "header.length",
        4,
    )
    assert "expected at most 10000 bytes, got 10119" in str(info.value)


def test_4gb_body_is_refused_before_reading_it(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(raw_message(T, b"", length=0xFFFF_FFFF) + b"rest of stream")
    with pytest.raises(WireError) as info:
        wire.read_message(b, max_body=wire.DEFAULT_MAX_BODY, timeout=READ_TIMEOUT)
    assert (info.value.code, info.value.field) == (ErrorCode.TOO_LARGE, "header.length")
    assert "got 4294967295" in str(info.value)
    b.settimeout(READ_TIMEOUT)
    assert b.recv(100) == b"rest of stream"  # nothing after the header was consumed


# --------------------------------------------------------------------------- streams


@pytest.mark.parametrize(
    "msg", [Hello({"a": 1}), tensor_frame(), Result(1, 2, 3), Bye()], ids=lambda m: type(m).__name__
)
def test_truncated_streams_raise_truncated_and_clean_eof_raises_peer_closed(
    msg: wire.Message,
) -> None:
    data = wire.encode(msg)
    cuts = sorted({1, 2, 3, 4, 7, 8, 9, len(data) // 2, len(data) - 1} & set(range(1, len(data))))
    for cut in cuts:
        with pytest.raises(WireError) as info:
            read_all(data[:cut])
        assert info.value.code is ErrorCode.TRUNCATED, f"cut at {cut}: {info.value}"
        assert info.value.offset == cut
    assert read_all(b"") == []
    assert read_all(data) == [msg]


def test_peer_closed_between_messages(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    wire.send_message(a, Bye())
    a.close()
    assert wire.read_message(b, 100, timeout=READ_TIMEOUT) == Bye()
    with pytest.raises(PeerClosed):
        wire.read_message(b, 100, timeout=READ_TIMEOUT)


@pytest.mark.parametrize(("sent", "field"), [(0, "header"), (5, "header"), (20, "body")])
def test_stalled_peer_times_out(
    pair: tuple[socket.socket, socket.socket], sent: int, field: str
) -> None:
    a, b = pair
    a.sendall(GOOD_TENSOR[:sent])
    start = time.monotonic()
    with pytest.raises(WireTimeout) as info:
        wire.read_message(b, wire.DEFAULT_MAX_BODY, timeout=0.1)
    assert time.monotonic() - start < 1.0
    assert (info.value.code, info.value.field, info.value.offset) == (
        ErrorCode.TIMEOUT,
        field,
        sent,
    )
    assert isinstance(info.value, WireError)


def test_socket_timeout_without_explicit_timeout_is_a_wire_timeout(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    b.settimeout(0.05)
    with pytest.raises(WireTimeout):
        wire.read_message(b, 100)


def test_timeout_bounds_the_whole_message_not_each_recv(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    stop = threading.Event()

    def drip() -> None:  # one byte every 30 ms: each recv succeeds, the message never completes
        for byte in GOOD_TENSOR[:40]:
            if stop.wait(0.03):
                return
            a.sendall(bytes([byte]))

    t = threading.Thread(target=drip)
    t.start()
    start = time.monotonic()
    try:
        with pytest.raises(WireTimeout):
            wire.read_message(b, wire.DEFAULT_MAX_BODY, timeout=0.3)
    finally:
        stop.set()
        t.join()
    assert time.monotonic() - start < 0.6


# --------------------------------------------------------------------------- fuzzing


@FAST
@given(hostile)
def test_decode_of_arbitrary_bytes_raises_only_wire_error(data: bytes) -> None:
    try:
        msg = decode_bytes(data, max_body=1 << 16)
    except WireError as err:
        assert isinstance(err.code, ErrorCode)
        assert err.field.startswith(("header", "body"))
    else:
        assert isinstance(msg, wire.MESSAGE_CLASSES)
        if msg.TYPE not in (MsgType.HELLO, MsgType.READY):  # JSON may be re-spaced
            assert wire.encode(msg) == data


@FAST
@given(hostile)
def test_read_message_of_arbitrary_bytes_raises_only_wire_error_or_peer_closed(data: bytes) -> None:
    try:
        msgs = read_all(data, max_body=1 << 16)
    except WireTimeout:
        pytest.fail("read_message waited although the peer had closed")
    except WireError as err:
        assert isinstance(err.code, ErrorCode)
    else:
        assert all(isinstance(m, wire.MESSAGE_CLASSES) for m in msgs)
        if not any(m.TYPE in (MsgType.HELLO, MsgType.READY) for m in msgs):
            assert b"".join(wire.encode(m) for m in msgs) == data


# --------------------------------------------------------------------------- construction


def test_invalid_messages_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="payload"):
        tensor_frame(payload=b"short")
    with pytest.raises(ValueError, match="shape"):
        tensor_frame(shape=(1,) * 9, payload=b"\x00")
    with pytest.raises(ValueError, match="zero_point"):
        tensor_frame(zero_point=-1)
    with pytest.raises(ValueError, match="dtype"):
        tensor_frame(dtype="int8")
    with pytest.raises(ValueError, match="frame_id"):
        Result(-1, 0, 0)
    with pytest.raises(ValueError, match="JPEG"):
        JpegFrame(1, b"PNG")
    with pytest.raises(TypeError, match="JSON object"):
        Hello([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        wire.encode(Ready({"x": math.nan}))


def test_json_messages_are_compact_utf8() -> None:
    msg = Hello({"model": "densenet201", "name": "héllo"})
    body = wire.encode(msg)[8:]
    assert json.loads(body.decode("utf-8")) == msg.config
    assert b" " not in body
