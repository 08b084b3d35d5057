"""The ES side: a TCP server that runs the tail (SC) or the whole model (EC) for any number of MDs.

One thread per connection. A connection starts with ``Hello`` (the configuration to run), gets
``Ready`` and then streams frames, each answered by a ``Result`` carrying the ES's own processing
time (message fully received -> reply ready). Bad input never takes the server down: the
offending connection gets an ``Error`` reply where possible and is closed, the event is logged
with the peer and the reason, and every other connection carries on.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
import time
from dataclasses import dataclass

import torch

from testbed import wire
from testbed.configs import Configuration
from testbed.images import ImageDecodeError
from testbed.models.split import SplitModel, build_split
from testbed.payloads import es_input, es_predict

log = logging.getLogger(__name__)

HELLO_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class TailSettings:
    host: str = "127.0.0.1"
    port: int = 5500
    max_message_bytes: int = 16 * 1024 * 1024
    idle_timeout_s: float = 900.0
    """A connection silent this long (between or inside messages) is dropped."""
    seed: int = 0
    threads: int | None = None


class ModelCache:
    """Tails built once per configuration (and seed), shared by every connection."""

    def __init__(self, seed: int):
        self.seed = seed
        self._models: dict[str, SplitModel] = {}
        self._lock = threading.Lock()

    def get(self, config: Configuration) -> SplitModel:
        key = json.dumps({**config.to_dict(), "name": ""}, sort_keys=True)
        with self._lock:
            if key not in self._models:
                started = time.perf_counter()
                self._models[key] = build_split(config, side="es", seed=self.seed)
                log.info("built ES side of %s in %.1f s", config.name, time.perf_counter() - started)
            return self._models[key]


class _Handler(socketserver.BaseRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = "%s:%d" % self.client_address[:2]
        settings = self.server.settings
        frame_id = wire.NO_FRAME
        try:
            config, model = self._hello(sock, peer)
            while True:
                msg = wire.read_message(
                    sock, settings.max_message_bytes, timeout=settings.idle_timeout_s
                )
                received = time.perf_counter_ns()
                if isinstance(msg, wire.Bye):
                    break
                frame_id = getattr(msg, "frame_id", wire.NO_FRAME)
                predicted = es_predict(model, es_input(config, model, msg, settings.max_message_bytes))
                es_proc_ns = time.perf_counter_ns() - received
                wire.send_message(sock, wire.Result(frame_id, es_proc_ns, predicted, 0))
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

    def _hello(self, sock: socket.socket, peer: str) -> tuple[Configuration, SplitModel]:
        msg = wire.read_message(sock, HELLO_MAX_BYTES, timeout=self.server.settings.idle_timeout_s)
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
        model = self.server.models.get(config)
        wire.send_message(
            sock,
            wire.Ready(
                {
                    "config": config.name,
                    "input_size": model.input_size,
                    "expected_shape": list(model.head_output_shape or ()),
                    "weights": model.weights.source,
                    "torch_threads": torch.get_num_threads(),
                }
            ),
        )
        log.info("%s: serving %s (%s, %s)", peer, config.name, config.mode, config.model)
        return config, model

    @staticmethod
    def _reply_error(sock: socket.socket, error: wire.Error) -> None:
        try:
            wire.send_message(sock, error)
        except OSError:
            pass  # the peer may already be gone; closing is all that is left


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, settings: TailSettings):
        self.settings = settings
        self.models = ModelCache(settings.seed)
        super().__init__((settings.host, settings.port), _Handler)


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

    def __enter__(self) -> "TailServer":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
