"""The head agent (``testbed agent``): one process on the MD that runs every step of a sweep.

Started once per run over SSH (``testbed.agent_client``), it spares each step Python's start-up,
the torch import and the model build: the head of each configuration is built once
(:func:`testbed.head.prepare_head`) and every later step of that configuration reuses it. Each
step still runs its own warm-up frames and writes its records file exactly as ``testbed head``
does, through the same :func:`testbed.head.run_step`, with the same arguments (parsed by the
same parser: ``testbed.cli.add_head_arguments``).

Control channel: a TCP socket bound to 127.0.0.1 on the MD (an ephemeral port), reached by the
orchestrator through its SSH connection (a direct-tcpip channel opened by the MD's sshd, so
inside the MD's namespace). The port and a random token go to a control file readable only by
the agent's user; the agent accepts one connection, which must say ``hello`` with that token
first, then closes its listening socket. Messages are JSON lines (``testbed.agent_protocol``).
The agent exits on ``quit``, when its controller goes away (end of stream), or when nobody
connects within ``accept_timeout_s``: an orchestrator that was killed leaves no agent running
once the step under way has ended.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from testbed import agent_protocol as proto
from testbed.head_args import add_head_arguments, head_settings
from testbed.head import HeadError, HeadSettings, PreparedHead, prepare_head, run_step
from testbed.records import FrameRecord

log = logging.getLogger(__name__)

ACCEPT_TIMEOUT_S = 120.0


class StepArgumentError(ValueError):
    """A step's head arguments are not valid (the text is argparse's, naming the option)."""


class _StepParser(argparse.ArgumentParser):
    """``testbed head``'s parser that raises instead of printing and exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise StepArgumentError(message)


def step_parser() -> argparse.ArgumentParser:
    p = _StepParser(prog="testbed head", add_help=False)
    add_head_arguments(p)
    return p


def prepared_key(settings: HeadSettings) -> str:
    """What makes two steps' heads the same: configuration, seed of the weights, frames."""
    return json.dumps({"config": settings.config.to_dict(), "seed": settings.seed,
                       "images": settings.images}, sort_keys=True)


@dataclass
class HeadAgent:
    """Heads built once per configuration; :meth:`step` runs one step on them."""

    parser: argparse.ArgumentParser = field(default_factory=step_parser)
    prepared: dict[str, PreparedHead] = field(default_factory=dict)

    def step(self, request: proto.Step) -> proto.Done:
        started = time.perf_counter()
        written = failed = 0
        built = False
        prepare_s = 0.0

        def count(record: FrameRecord) -> None:
            nonlocal written
            written += 1

        try:
            args = self.parser.parse_args(list(request.argv))
            settings = head_settings(args)
            key = prepared_key(settings)
            if key not in self.prepared:
                self.prepared[key] = prepare_head(settings)
                built, prepare_s = True, self.prepared[key].build_s
                log.info("step %s: built the MD side of %s in %.2f s (%d heads kept)",
                         request.id, settings.config.name, prepare_s, len(self.prepared))
            else:
                log.info("step %s: reusing the MD side of %s", request.id, settings.config.name)
            failed = run_step(self.prepared[key], settings, args.records, on_frame=count)
            error = None
        except SystemExit as exc:  # the configuration arguments' checks (testbed.cli)
            error = str(exc)
        except (StepArgumentError, HeadError, ValueError, OSError) as exc:
            error = str(exc) or type(exc).__name__
        except Exception as exc:  # a bug: keep the agent, report the step failed
            log.exception("step %s failed", request.id)
            error = f"{type(exc).__name__}: {exc}"
        if error:
            log.error("step %s: %s", request.id, error)
        step_s = time.perf_counter() - started
        log.info("step %s done in %.2f s: %d frames, %d failed", request.id, step_s, written, failed)
        return proto.Done(id=request.id, frames=written, failed_frames=failed, error=error,
                          built=built, prepare_s=round(prepare_s, 3), step_s=round(step_s, 3))


def _serve_connection(conn: socket.socket, token: str, agent: HeadAgent) -> None:
    """Answer requests until ``quit`` or end of stream; the first must be ``hello`` + token."""
    reader = conn.makefile("rb")
    greeted = False
    while True:
        line = reader.readline(proto.MAX_LINE_BYTES + 1)
        if not line:
            log.info("controller closed the connection")
            return
        try:
            msg = proto.decode(line, proto.REQUESTS)
        except proto.ProtocolError as exc:
            log.error("refused a request: %s", exc)
            conn.sendall(proto.encode(proto.Refused(str(exc))))
            if not greeted:
                return
            continue
        if not greeted:
            if not isinstance(msg, proto.Hello) or not secrets.compare_digest(msg.token, token):
                log.error("the first request was not hello with this agent's token; closing")
                conn.sendall(proto.encode(proto.Refused("hello with the control file's token first")))
                return
            greeted = True
            conn.sendall(proto.encode(proto.Welcome(pid=os.getpid(), version=proto.VERSION)))
        elif isinstance(msg, proto.Step):
            conn.sendall(proto.encode(agent.step(msg)))
        elif isinstance(msg, proto.Ping):
            conn.sendall(proto.encode(proto.Pong(prepared=len(agent.prepared))))
        elif isinstance(msg, proto.Quit):
            conn.sendall(proto.encode(proto.Bye()))
            return
        else:  # a second hello
            conn.sendall(proto.encode(proto.Refused("already greeted")))


def serve(control: Path, accept_timeout_s: float = ACCEPT_TIMEOUT_S) -> int:
    """Run the agent: listen, write ``control``, serve one controller, exit. Returns 0, or 3
    when no controller came within ``accept_timeout_s``."""
    token = secrets.token_hex(16)
    control = Path(control)
    try:
        with socket.create_server(("127.0.0.1", 0)) as server:
            proto.write_control(control, server.getsockname()[1], token)
            log.info("head agent %d listening on 127.0.0.1:%d (control file %s)", os.getpid(),
                     server.getsockname()[1], control)
            server.settimeout(accept_timeout_s)
            try:
                conn, _ = server.accept()
            except socket.timeout:
                log.error("no controller connected within %.0f s; exiting", accept_timeout_s)
                return 3
        with conn:
            conn.settimeout(None)
            try:
                _serve_connection(conn, token, HeadAgent())
            except OSError as exc:  # the controller went away while we answered
                log.info("control connection ended: %s", exc)
    finally:
        control.unlink(missing_ok=True)
    log.info("head agent %d exiting", os.getpid())
    return 0
