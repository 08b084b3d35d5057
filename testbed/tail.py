"""The ES side: a TCP server that runs the tail (SC) or the whole model (EC) for many MDs.

A connection starts with ``Hello`` (the configuration to run), gets ``Ready`` and then streams
frames, each answered by a ``Result`` carrying the ES's own processing time (message fully
received -> reply ready). Bad input never takes the server down: the offending connection gets an
``Error`` reply where possible and is closed, the event is logged with the peer and the reason,
and every other connection carries on.

Threading model: one listener thread accepts connections and hands each to a thread of its own,
which reads its messages and sends its replies. At most ``max_connections`` connections are
served at once; the listener answers one more with ``Error`` ``BUSY`` and closes it at once,
without reading from it, starting a thread or touching a model (refusals are logged at most once
a second, with the running count). Model work (decoding a frame's input and running the model)
goes to a fixed pool of ``max_inferences`` worker threads (default: the usable cores), served
FIFO across connections, and the connection thread waits for its answer; ``Result`` reports the
wait for a worker (message fully received -> a worker starts it, with the ~50 us hand-off) as
``es_queue_ns`` and the worker's time as ``es_proc_ns``. torch's intra-op pool
(``TailSettings.threads``) is shared by all workers. Models are built once per configuration and
seed (``ModelCache``), shared by every connection, and warmed up on a worker with a dummy input
of the served shape before the first ``Ready`` for that configuration goes out, so no MD's first
frame pays for lazy initialisation; ``Ready`` reports the build and warm-up times (``build_s``,
``warmup_s``).

Why a worker pool and not the model on each connection's thread: glibc malloc gives threads
separate arenas (up to 8 per core) and an arena keeps the memory its thread freed, so inference
spread over many short-lived connection threads left each arena holding a forward pass's
activations: 1,000 one-frame connections, 60 at a time, raised a MobileNetV2 tail's anonymous
memory by ~690 MiB at the peak (still +100 MiB after they closed), where the pool keeps it
within +55 MiB (``benchmarks/tail_flood.py --connections 1000 --wave 60 --hold 0 --frames 1``).

What a peer can hold: a slot (one of ``max_connections``) and a thread for at most
``message_timeout_s`` before its ``Hello`` is complete; afterwards ``idle_timeout_s`` of silence
between messages, while a message whose first byte arrived must be complete within
``message_timeout_s``, and every reply must be sent within ``message_timeout_s`` (a peer that
stops reading cannot pin a thread). A stalled peer gets ``Error`` ``TIMEOUT`` and is closed.
A peer cannot make the ES open a file (a ``Hello``'s ``weights`` must be one of the checkpoints
the tail was started with) nor pile models up (at most ``max_models`` configurations are kept).
A message's buffer grows as its bytes arrive (``wire.read_message``), so memory held for
partial messages is what peers actually sent: at most ``max_connections`` x
``max_message_bytes``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import socketserver
import threading
import time
from collections import OrderedDict
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from testbed import replay, wire
from testbed.configs import Configuration
from testbed.devices import DeviceProfile, ProfileError, compute_label
from testbed.images import ImageDecodeError
from testbed.machine import usable_cores
from testbed.models.split import SplitModel, build_split
from testbed.payloads import es_input, es_predict

log = logging.getLogger(__name__)

HELLO_MAX_BYTES = 64 * 1024
REFUSAL_LOG_PERIOD_S = 1.0
"""Refused connections are logged at WARNING at most this often (each one at DEBUG)."""


@dataclass(frozen=True)
class TailSettings:
    host: str = "127.0.0.1"
    port: int = 5500
    max_message_bytes: int = 16 * 1024 * 1024
    idle_timeout_s: float = 900.0
    """A connection silent this long between messages is dropped."""
    message_timeout_s: float = 20.0
    """A message must be complete this long after its first byte (``Hello``: after the
    connection was accepted), and a reply sent within it; 20 s carries a 100 KB frame at
    40 kbit/s."""
    max_connections: int = 64
    """Connections served at once; one more gets ``Error`` ``BUSY`` and is closed."""
    max_inferences: int | None = None
    """Frames processed (input decoding + model) at once; ``None``: the usable cores. More would
    only share the same cores, each holding its activations in memory meanwhile."""
    seed: int = 0
    threads: int | None = None
    compute: DeviceProfile | None = None
    """A device profile whose ES times this tail replays (``testbed.replay``); ``None``: the
    real processing time. Seeded by ``seed``."""
    checkpoints: tuple[str, ...] = ()
    """The checkpoint files a ``Hello`` may name as its configuration's ``weights``; a ``Hello``
    naming any other file is refused: a peer never makes the ES open a path of its choosing."""
    max_models: int = 8
    """Configurations kept built at once; beyond, the least recently requested is dropped (its
    open connections keep their model), so peers naming many configurations cannot pile models
    up in memory."""

    def __post_init__(self) -> None:
        for name in ("idle_timeout_s", "message_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                0 < value < math.inf
            ):
                raise ValueError(f"{name}: expected a positive number of seconds, got {value!r}")
        for name in ("max_connections", "max_inferences", "max_models"):
            value = getattr(self, name)
            if name == "max_inferences" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class ServedModel:
    """A configuration's ES side, built and warmed up."""

    model: SplitModel
    build_s: float
    warmup_s: float
    """The first forward pass, on zeros of the served input shape, before any frame."""


def warm_up(model: SplitModel) -> float:
    """Run the ES side once on zeros of the shape its frames bring (the image for EC, the
    head's output for SC): lazy allocations and kernel selection happen here, not on an MD's
    first frame. Returns the seconds it took."""
    shape = model.input_shape if model.config.mode == "EC" else model.head_output_shape
    started = time.perf_counter()
    es_predict(model, torch.zeros(1, *shape))
    return time.perf_counter() - started


class ModelCache:
    """Tails built once per configuration (and seed) and warmed up on ``workers`` (the threads
    that will run them), shared by every connection; at most ``limit`` kept, least recently
    requested dropped first."""

    def __init__(self, seed: int, workers: Executor, limit: int):
        self.seed = seed
        self.limit = limit
        self._workers = workers
        self._models: OrderedDict[str, ServedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, config: Configuration) -> ServedModel:
        key = json.dumps({**config.to_dict(), "name": ""}, sort_keys=True)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            started = time.perf_counter()
            model = build_split(config, side="es", seed=self.seed)
            build_s = time.perf_counter() - started
            warmup_s = self._workers.submit(warm_up, model).result()
            self._models[key] = ServedModel(model, build_s, warmup_s)
            log.info("built ES side of %s in %.1f s, warmed up in %.3f s",
                     config.name, build_s, warmup_s)
            while len(self._models) > self.limit:
                dropped, _ = self._models.popitem(last=False)
                log.info("dropped the least recently requested model (%d kept): %s",
                         self.limit, dropped)
            return self._models[key]

    def __len__(self) -> int:
        return len(self._models)


def _process(config: Configuration, model: SplitModel, msg: wire.Message, max_bytes: int) -> int:
    """A frame's prediction, on a model worker thread."""
    return es_predict(model, es_input(config, model, msg, max_bytes))


class _Handler(socketserver.BaseRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        settings = self.server.settings
        sock.settimeout(settings.message_timeout_s)  # bounds every send (and the Hello)
        peer = "%s:%d" % self.client_address[:2]
        frame_id = wire.NO_FRAME
        try:
            config, model, pacer = self._hello(sock, peer)
            config_key = json.dumps({**config.to_dict(), "name": ""}, sort_keys=True)
            while True:
                msg = wire.read_message(
                    sock, settings.max_message_bytes, timeout=settings.message_timeout_s,
                    idle_timeout=settings.idle_timeout_s,
                )
                received = time.perf_counter_ns()
                if isinstance(msg, wire.Bye):
                    break
                frame_id = getattr(msg, "frame_id", wire.NO_FRAME)
                predicted, status, started = self._predict(config, config_key, model, pacer, msg)
                done = time.perf_counter_ns()
                wire.send_message(sock, wire.Result(frame_id, done - started, predicted, status,
                                                    es_queue_ns=started - received))
        except wire.PeerClosed:
            pass
        except wire.WireError as exc:
            log.warning("closing %s: %s", peer, exc)
            self._reply_error(sock, exc.to_message(frame_id))
        except ImageDecodeError as exc:
            log.warning("closing %s: %s", peer, exc)
            self._reply_error(sock, wire.Error(frame_id, wire.ErrorCode.BAD_BODY, str(exc)))
        except OSError as exc:
            log.warning("connection %s lost: %s", peer, exc)
        except Exception as exc:  # a bug must cost one connection, never the server
            log.exception("closing %s after an internal error", peer)
            self._reply_error(sock, wire.Error(frame_id, wire.ErrorCode.INTERNAL, f"internal error: {exc}"))

    def _predict(self, config: Configuration, config_key: str, model: SplitModel,
                 pacer: replay.Pacer | None, msg: wire.Message) -> tuple[int, int, int]:
        """A frame's prediction, ``Result`` status and the ``perf_counter_ns`` at which a model
        worker started it (the end of its ES queueing). The work runs on the worker pool, FIFO
        across connections. Following a device profile: the result of these bytes computed once
        (``WorkCache``), returned when the frame's sampled ES time has elapsed since the worker
        started it, the worker held meanwhile (so ``max_inferences`` emulated servers queue
        frames as real ones would); ``RESULT_OVERRUN`` if the real work ran now and took longer
        than the sample."""
        server = self.server
        max_bytes = server.settings.max_message_bytes

        def work() -> int:
            return _process(config, model, msg, max_bytes)

        def on_worker() -> tuple[int, int, int]:
            started = time.perf_counter_ns()
            if pacer is None:
                return work(), 0, started
            sample_ns = pacer.sample_ns(msg.frame_id)
            predicted, work_ns = server.results.get(replay.message_key(config_key, msg), work)
            replay.wait_until(started + sample_ns)
            status = wire.RESULT_OVERRUN if replay.overran(work_ns, sample_ns) else 0
            return int(predicted), status, started

        return server.workers.submit(on_worker).result()

    def _hello(
        self, sock: socket.socket, peer: str
    ) -> tuple[Configuration, SplitModel, replay.Pacer | None]:
        # no idle wait before Hello: the whole of it within message_timeout_s of the accept
        msg = wire.read_message(sock, HELLO_MAX_BYTES, timeout=self.server.settings.message_timeout_s)
        if not isinstance(msg, wire.Hello):
            raise wire.WireError(
                wire.ErrorCode.UNEXPECTED, "header.type",
                f"a connection must start with Hello, got {type(msg).__name__}", 3,
            )
        try:
            config = Configuration.from_dict(msg.config).validated()
        except (TypeError, ValueError) as exc:
            raise wire.WireError(wire.ErrorCode.BAD_CONFIG, "body.config", str(exc)) from None
        if config.mode == "LC":
            raise wire.WireError(
                wire.ErrorCode.BAD_CONFIG, "body.config.mode",
                "LC runs on the MD alone; the ES serves EC and SC",
            )
        if config.weights is not None and not self.server.allows_checkpoint(config.weights):
            raise wire.WireError(
                wire.ErrorCode.BAD_CONFIG, "body.config.weights",
                f"this ES loads only the checkpoints it was started with (testbed tail "
                f"--checkpoint PATH); {config.weights!r} is not one of them",
            )
        compute = self.server.settings.compute
        pacer = None
        if compute is not None:
            try:
                pacer = replay.Pacer.of(compute, config.model, config.name, "es",
                                        self.server.settings.seed)
            except ProfileError as exc:
                raise wire.WireError(wire.ErrorCode.BAD_CONFIG, "body.config",
                                     f"this ES replays a device profile: {exc}") from None
        served = self.server.models.get(config)
        model = served.model
        wire.send_message(
            sock,
            wire.Ready(
                {
                    "config": config.name,
                    "input_size": model.input_size,
                    "expected_shape": list(model.head_output_shape or ()),
                    "weights": model.weights.source,
                    "torch_threads": torch.get_num_threads(),
                    "build_s": round(served.build_s, 4),
                    "warmup_s": round(served.warmup_s, 4),
                    "compute": compute_label(compute),
                }
            ),
        )
        log.info("%s: serving %s (%s, %s, compute %s)", peer, config.name, config.mode,
                 config.model, compute_label(compute))
        return config, model, pacer

    @staticmethod
    def _reply_error(sock: socket.socket, error: wire.Error) -> None:
        try:
            wire.send_message(sock, error)
        except OSError:
            pass  # the peer may already be gone; closing is all that is left


class _Server(socketserver.ThreadingTCPServer):
    """One thread per connection up to ``settings.max_connections``; beyond, ``BUSY``."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, settings: TailSettings):
        self.settings = settings
        self.workers = ThreadPoolExecutor(settings.max_inferences or usable_cores(), "tail-model")
        self.models = ModelCache(settings.seed, self.workers, settings.max_models)
        self._checkpoints = {os.path.realpath(p) for p in settings.checkpoints}
        self.results = replay.WorkCache()
        """Predictions by frame content, when replaying a device profile."""
        self._open = 0
        self._open_lock = threading.Lock()
        self._refused = 0  # only the listener thread touches these two
        self._refusal_logged = -math.inf
        super().__init__((settings.host, settings.port), _Handler)

    def allows_checkpoint(self, path: str) -> bool:
        """Whether ``path`` (from a peer's Hello) is one of the checkpoints this tail may load."""
        return os.path.realpath(path) in self._checkpoints

    def process_request(self, request: socket.socket, client_address) -> None:
        with self._open_lock:
            admitted = self._open < self.settings.max_connections
            if admitted:
                self._open += 1
        if not admitted:
            self._refuse(request, client_address)
            return
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request: socket.socket, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._open_lock:
            self._open -= 1

    def _refuse(self, sock: socket.socket, client_address) -> None:
        """``BUSY`` and close, from the listener thread: never blocks, reads nothing."""
        cap = self.settings.max_connections
        self._refused += 1
        peer = "%s:%d" % client_address[:2]
        now = time.monotonic()
        if now - self._refusal_logged >= REFUSAL_LOG_PERIOD_S:
            self._refusal_logged = now
            log.warning("busy: refused %s (%d connections open, the limit); %d refused so far",
                        peer, cap, self._refused)
        else:
            log.debug("busy: refused %s", peer)
        busy = wire.Error(wire.NO_FRAME, wire.ErrorCode.BUSY,
                          f"the tail serves at most {cap} connections at once; retry later")
        try:
            sock.setblocking(False)
            sock.send(wire.encode(busy))  # a fresh socket's buffer always has room for it
        except OSError:
            pass  # the peer may already be gone
        self.shutdown_request(sock)


class TailServer:
    """``with TailServer(settings) as server: server.serve_forever()`` or ``start()`` in a thread."""

    def __init__(self, settings: TailSettings):
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self._server = _Server(settings)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self._server.server_address[:2]

    def serve_forever(self) -> None:
        log.info("tail listening on %s:%d", *self.address)
        self._server.serve_forever(poll_interval=0.2)

    def start(self) -> "TailServer":
        self._thread = threading.Thread(target=self.serve_forever, name="tail", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
        self._server.workers.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "TailServer":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
