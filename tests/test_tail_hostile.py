"""A live tail against hostile peers, over real TCP on loopback: the message deadline, the
connection cap, the warm-up before ``Ready``, and 10,000 fuzzed byte streams while a good head
keeps streaming."""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed import wire
from testbed.configs import Configuration
from testbed.images import load_images
from testbed.models.split import build_split
from testbed.payloads import md_message
from testbed.tail import TailServer, TailSettings

SC = Configuration("sc-late", "SC", "mobilenet_v2", split="features.17")  # a tail of < 1 ms
EC = Configuration("ec", "EC", "mobilenet_v2")
DEADLINE_S = 0.5
"""``message_timeout_s`` of the test tails."""
SLACK_S = 2.0
"""What a loaded machine may add to any bound here."""
IDLE_S = 2.0
"""``idle_timeout_s`` of ``short_idle_tail`` (the fuzzed one): every connection ends soon."""
LONG_IDLE_S = 60.0
"""``idle_timeout_s`` of ``tail``: far beyond DEADLINE_S + SLACK_S, so a close within that
bound is the message deadline's doing, not the idle timeout's."""
HELLO = wire.encode(wire.Hello(SC.to_dict()))


@pytest.fixture(scope="module")
def frame() -> wire.TensorFrame:
    """A real frame of ``SC``: the head's quantized output for a built-in image."""
    head = build_split(SC, side="md")
    return md_message(SC, head, 1, load_images("builtin")[0].image)


def _tail(idle_timeout_s: float):
    torch.set_num_threads(2)
    server = TailServer(TailSettings(port=0, message_timeout_s=DEADLINE_S,
                                     idle_timeout_s=idle_timeout_s, max_message_bytes=1 << 20))
    return server.start()


@pytest.fixture(scope="module")
def tail():
    with _tail(LONG_IDLE_S) as server:
        yield server


@pytest.fixture(scope="module")
def short_idle_tail():
    with _tail(IDLE_S) as server:
        yield server


def _header(kind: int, length: int) -> bytes:
    return struct.pack("!2sBBI", b"SB", 1, kind, length)


def _hello(sock: socket.socket, config: Configuration = SC) -> dict:
    wire.send_message(sock, wire.Hello(config.to_dict()))
    reply = wire.read_message(sock, 1 << 16, timeout=30)
    assert isinstance(reply, wire.Ready), reply
    return reply.info


def _error_then_close(sock: socket.socket, within: float) -> wire.Error:
    """The tail's ``Error`` and then EOF, both within ``within`` seconds."""
    end = time.monotonic() + within
    msg = wire.read_message(sock, 1 << 16, timeout=within)
    assert isinstance(msg, wire.Error), msg
    with pytest.raises((wire.PeerClosed, ConnectionResetError)):
        wire.read_message(sock, 1 << 16, timeout=max(end - time.monotonic(), 0.01))
    return msg


def _handler_threads() -> int:
    return sum("process_request_thread" in t.name for t in threading.enumerate())


# --------------------------------------------------------------------------- read_message


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_idle_wait_is_not_bounded_by_the_message_timeout(pair, frame):
    a, b = pair
    threading.Timer(0.4, a.sendall, [wire.encode(frame)]).start()
    assert wire.read_message(b, 1 << 20, timeout=0.2, idle_timeout=5) == frame


def test_a_started_message_must_complete_within_the_timeout(pair, frame):
    a, b = pair
    a.sendall(wire.encode(frame)[:100])
    started = time.monotonic()
    with pytest.raises(wire.WireTimeout) as info:
        wire.read_message(b, 1 << 20, timeout=0.2, idle_timeout=5)
    assert time.monotonic() - started < 0.2 + SLACK_S
    assert (info.value.field, info.value.offset) == ("body", 100)


def test_an_idle_peer_times_out_at_offset_zero(pair):
    _, b = pair
    with pytest.raises(wire.WireTimeout) as info:
        wire.read_message(b, 1 << 20, timeout=5, idle_timeout=0.2)
    assert (info.value.field, info.value.offset) == ("header", 0)


def test_an_announced_body_costs_memory_only_as_it_arrives(pair):
    a, b = pair
    a.sendall(_header(wire.MsgType.JPEG, 16 << 20) + b"\xff\xd8" + bytes(1000))
    tracemalloc.start()
    try:
        with pytest.raises(wire.WireTimeout):
            wire.read_message(b, 16 << 20, timeout=0.2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * wire.BODY_CHUNK


def test_a_body_larger_than_a_chunk_arrives_whole(pair):
    a, b = pair
    big = wire.TensorFrame(5, "uint8", (1, 3 * wire.BODY_CHUNK + 7), 0.5, 3, "none",
                           bytes(range(256)) * ((3 * wire.BODY_CHUNK + 7) // 256) + bytes(7))
    sender = threading.Thread(target=a.sendall, args=(wire.encode(big),))
    sender.start()
    try:
        assert wire.read_message(b, 1 << 24, timeout=10) == big
    finally:
        sender.join()


# --------------------------------------------------------------------------- message deadline


@pytest.mark.parametrize(
    "after_hello, data, field",
    [
        (False, b"", "header"),  # connected, never said Hello
        (False, b"SB\x01", "header"),
        (False, _header(wire.MsgType.HELLO, 100) + b'{"name"', "body"),
        (True, b"SB\x01\x03\x00", "header"),
        (True, "frame[:100]", "body"),
    ],
    ids=["no-hello", "hello-partial-header", "hello-partial-body", "frame-partial-header",
         "frame-partial-body"],
)
def test_a_partial_message_gets_a_timeout_error_and_close(tail, frame, after_hello, data, field):
    if data == "frame[:100]":
        data = wire.encode(frame)[:100]
    with socket.create_connection(tail.address, timeout=10) as s:
        if after_hello:
            _hello(s)
        s.sendall(data)
        sent = time.monotonic()
        error = _error_then_close(s, DEADLINE_S + SLACK_S)
        assert time.monotonic() - sent < DEADLINE_S + SLACK_S
    assert error.code == wire.ErrorCode.TIMEOUT
    assert error.message.startswith(f"{field} at byte {len(data)}: timed out")


def test_a_dripping_peer_is_cut_at_the_deadline(tail, frame):
    """One byte every 50 ms: every recv succeeds, the message never completes in time."""
    data = wire.encode(frame)
    with socket.create_connection(tail.address, timeout=10) as s:
        _hello(s)
        started = time.monotonic()
        for sent in range(len(data)):
            if select.select([s], [], [], 0.05)[0] or time.monotonic() - started > DEADLINE_S + SLACK_S:
                break  # the tail has answered (or has not, in time: the read below fails)
            s.sendall(data[sent:sent + 1])
        error = _error_then_close(s, SLACK_S)
    assert error.code == wire.ErrorCode.TIMEOUT
    assert time.monotonic() - started < DEADLINE_S + 2 * SLACK_S


def test_idle_between_messages_is_allowed_longer_than_the_deadline(short_idle_tail, frame):
    with socket.create_connection(short_idle_tail.address, timeout=10) as s:
        _hello(s)
        time.sleep(2 * DEADLINE_S)  # idle, but under IDLE_S
        wire.send_message(s, frame)
        reply = wire.read_message(s, 1 << 16, timeout=10)
        assert isinstance(reply, wire.Result) and reply.frame_id == frame.frame_id
        answered = time.monotonic()
        error = _error_then_close(s, IDLE_S + SLACK_S)
        idle = time.monotonic() - answered
    assert error.code == wire.ErrorCode.TIMEOUT and "after 0 of 8 bytes" in error.message
    assert IDLE_S - 0.1 < idle < IDLE_S + SLACK_S


# --------------------------------------------------------------------------- connection cap


def test_the_connection_over_the_cap_gets_busy_and_a_close(frame, caplog):
    cap = 3
    with TailServer(TailSettings(port=0, max_connections=cap, message_timeout_s=30)).start() as server:
        deadline = time.monotonic() + 5
        while _handler_threads() and time.monotonic() < deadline:
            time.sleep(0.02)  # connections of earlier tests are gone
        held = [socket.create_connection(server.address, timeout=10) for _ in range(cap)]
        try:
            _hello(held[0])
            deadline = time.monotonic() + 5
            while _handler_threads() < cap and time.monotonic() < deadline:
                time.sleep(0.02)  # the listener hands each held connection to its thread
            assert _handler_threads() == cap
            with caplog.at_level(logging.WARNING, logger="testbed.tail"):
                with socket.create_connection(server.address, timeout=10) as extra:
                    error = _error_then_close(extra, SLACK_S)
            assert error.code == wire.ErrorCode.BUSY and error.frame_id == wire.NO_FRAME
            assert f"at most {cap} connections" in error.message
            assert _handler_threads() == cap  # refused by the listener, no thread started
            assert any("busy: refused" in r.getMessage() for r in caplog.records)

            wire.send_message(held[0], frame)  # the held ones are still served
            assert isinstance(wire.read_message(held[0], 1 << 16, timeout=10), wire.Result)
        finally:
            for s in held[1:]:
                s.close()
        # two slots free again (as soon as their threads saw the EOF): a newcomer is served
        deadline = time.monotonic() + 5
        while True:
            with socket.create_connection(server.address, timeout=10) as s:
                wire.send_message(s, wire.Hello(SC.to_dict()))
                reply = wire.read_message(s, 1 << 16, timeout=30)
                if isinstance(reply, wire.Ready):
                    wire.send_message(s, frame)
                    assert isinstance(wire.read_message(s, 1 << 16, timeout=10), wire.Result)
                    break
            assert reply.code == wire.ErrorCode.BUSY and time.monotonic() < deadline
            time.sleep(0.05)
        held[0].close()


# --------------------------------------------------------------------------- warm-up


def test_the_model_is_warmed_up_once_before_the_first_ready():
    calls: list[tuple[float, str, tuple[int, ...]]] = []

    def record(module, inputs, output):
        if inputs and isinstance(inputs[0], torch.Tensor):
            calls.append((time.monotonic(), threading.current_thread().name, tuple(inputs[0].shape)))

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        with TailServer(TailSettings(port=0)).start() as server:
            for config, shape in ((SC, (1, 320, 7, 7)), (EC, (1, 3, 224, 224))):
                calls.clear()
                with socket.create_connection(server.address, timeout=10) as s:
                    info = _hello(s, config)
                    ready = time.monotonic()
                assert info["warmup_s"] > 0 and info["build_s"] > 0
                warm = [t for t, thread, x in calls if x == shape and thread.startswith("tail-model")]
                assert warm and warm[0] < ready  # on a worker, the thread that will run frames

                calls.clear()
                with socket.create_connection(server.address, timeout=10) as s:
                    assert _hello(s, config) == info  # the same model, not warmed up again
                assert calls == []
    finally:
        hook.remove()


# --------------------------------------------------------------------------- fuzzing


class GoodHead(threading.Thread):
    """A well-behaved MD streaming the same frame back to back; every one must be answered."""

    def __init__(self, address: tuple[str, int], frame: wire.TensorFrame):
        super().__init__(daemon=True, name="good-head")
        self.address, self.frame = address, frame
        self.answered: list[int] = []
        self.predicted: set[int] = set()
        self.sent = 0
        self.failure: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            with socket.create_connection(self.address, timeout=30) as s:
                _hello(s)
                while not self.done.is_set():
                    self.sent += 1
                    frame = wire.TensorFrame(self.sent, self.frame.dtype, self.frame.shape,
                                             self.frame.scale, self.frame.zero_point,
                                             self.frame.compression, self.frame.payload)
                    wire.send_message(s, frame)
                    reply = wire.read_message(s, 1 << 16, timeout=30)
                    assert isinstance(reply, wire.Result), reply
                    self.answered.append(reply.frame_id)
                    self.predicted.add(reply.predicted)
                wire.send_message(s, wire.Bye())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failure = exc


def _flip(data: bytes, bits: list[int]) -> bytes:
    out = bytearray(data)
    for bit in bits:
        out[bit // 8 % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


def hostile_streams(session: bytes) -> st.SearchStrategy[bytes]:
    """Byte streams a hostile or broken MD might send, built around a real ``session``
    (Hello + tensor frame)."""
    n = len(session)
    cut = st.integers(0, n)
    any_type = st.integers(0, 255)
    return st.one_of(
        st.just(b""),
        st.binary(min_size=1, max_size=1),
        st.binary(max_size=300),
        st.builds(lambda prefix, k, length, tail: prefix + _header(k, length) + tail,
                  st.sampled_from([b"", HELLO]), any_type, st.integers(0, 2**32 - 1),
                  st.binary(max_size=40)),  # huge and odd lengths, before or after Hello
        st.builds(lambda i: session[:i], cut),
        st.builds(lambda bits, i: _flip(session, bits)[:i],
                  st.lists(st.integers(0, 8 * n - 1), min_size=1, max_size=4), cut),
        st.builds(lambda i, junk, j: session[:i] + junk + session[j:], cut, st.binary(max_size=64),
                  cut),
        st.builds(lambda extra: session + extra,
                  st.sampled_from([b"", HELLO, wire.encode(wire.Bye()), session[len(HELLO):]])),
    )


def _drive(address: tuple[str, int], stream: bytes, stall: bool) -> str | None:
    """Send ``stream``, then half-close or stall. The tail must answer (or close) within
    DEADLINE_S + SLACK_S of the last byte, send nothing but well-formed Ready/Result/Error
    messages, close right after an Error, and close within IDLE_S + SLACK_S in any case.
    Returns what went wrong, or None."""
    with socket.create_connection(address, timeout=10) as s:
        try:
            s.sendall(stream)
            if not stall:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the tail refused and closed before the stream was out: allowed
        sent = time.monotonic()
        first, end = sent + DEADLINE_S + SLACK_S, sent + IDLE_S + SLACK_S
        got: list[str] = []
        while True:
            limit = first if not got else end
            try:
                msg = wire.read_message(s, 1 << 16, timeout=max(limit - time.monotonic(), 0.01))
            except (wire.PeerClosed, ConnectionResetError):
                return None
            except wire.WireTimeout:
                return (f"no {'answer' if not got else 'close'} {limit - sent:.1f} s after "
                        f"{len(stream)} bytes (stall={stall}); got {got}: {stream[:48]!r}")
            except (wire.WireError, OSError) as exc:
                return f"the tail sent something unreadable ({exc}) after {stream[:48]!r}"
            got.append(type(msg).__name__)
            if isinstance(msg, wire.Error):
                try:
                    extra = wire.read_message(s, 1 << 16, timeout=SLACK_S)
                except (wire.PeerClosed, ConnectionResetError):
                    return None
                except (wire.WireError, OSError) as exc:
                    return f"no close after Error {msg}: {exc}"
                return f"{type(extra).__name__} after Error {msg}"
            if not isinstance(msg, (wire.Ready, wire.Result)):
                return f"the tail sent {msg}"


FUZZ_CASES = 10_000
BATCH = 500
WORKERS = 32


@pytest.mark.slow
def test_10000_hostile_streams_never_disturb_a_good_head(short_idle_tail, frame):
    tail = short_idle_tail
    session = HELLO + wire.encode(frame)
    driven = 0
    pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="hostile")
    head = GoodHead(tail.address, frame)
    head.start()

    @settings(max_examples=FUZZ_CASES // BATCH, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(hostile_streams(session), st.integers(0, 9).map(lambda i: i == 0)),
                    min_size=BATCH, max_size=BATCH))
    def batch(cases: list[tuple[bytes, bool]]) -> None:
        nonlocal driven
        problems = [p for p in pool.map(lambda c: _drive(tail.address, *c), cases) if p]
        driven += len(cases)
        assert not problems, f"{len(problems)} of {len(cases)}: {problems[:3]}"

    try:
        batch()
    finally:
        head.done.set()
        head.join(30)
        pool.shutdown()
    assert driven >= FUZZ_CASES
    assert head.failure is None, f"the good head failed after {len(head.answered)} frames: {head.failure!r}"
    assert head.answered == list(range(1, head.sent + 1)) and len(head.answered) > 100
    assert len(head.predicted) == 1  # the same frame, the same answer every time
    deadline = time.monotonic() + IDLE_S + SLACK_S
    while _handler_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _handler_threads() == 0, "a hostile connection is still held"


# --------------------------------------------------------------------------- files and models


def test_a_hello_may_name_only_the_checkpoints_the_tail_was_given(tmp_path):
    import torchvision

    checkpoint = tmp_path / "mobilenet_v2.pt"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), checkpoint)
    with_weights = Configuration("ec-weights", "EC", "mobilenet_v2", weights=str(checkpoint))
    elsewhere = Configuration("ec-elsewhere", "EC", "mobilenet_v2", weights="/etc/passwd")
    with TailServer(TailSettings(port=0, checkpoints=(str(checkpoint),))).start() as server:
        with socket.create_connection(server.address, timeout=10) as s:
            assert _hello(s, with_weights)["weights"] == "checkpoint"
        with socket.create_connection(server.address, timeout=10) as s:
            wire.send_message(s, wire.Hello(elsewhere.to_dict()))
            error = _error_then_close(s, 10)
    assert error.code == wire.ErrorCode.BAD_CONFIG and "'/etc/passwd' is not one of them" in error.message
    with TailServer(TailSettings(port=0)).start() as server:  # given none: every named file refused
        with socket.create_connection(server.address, timeout=10) as s:
            wire.send_message(s, wire.Hello(with_weights.to_dict()))
            assert "--checkpoint" in _error_then_close(s, 10).message


def test_the_model_cache_drops_the_least_recently_requested_beyond_its_limit():
    from testbed.tail import ModelCache

    with ThreadPoolExecutor(1) as workers:
        cache = ModelCache(0, workers, limit=2)
        first = cache.get(SC)
        assert cache.get(SC) is first and len(cache) == 1
        cache.get(EC)
        cache.get(SC)  # SC is now the most recent: EC goes when a third comes
        cache.get(Configuration("sc-early", "SC", "mobilenet_v2", split="features.3"))
        assert len(cache) == 2
        assert cache.get(SC) is first  # kept
        assert cache.get(EC).model is not None and len(cache) == 2  # rebuilt, something else dropped
