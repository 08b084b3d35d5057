"""The head agent's control messages: one JSON object per line, every field checked.

The orchestrator (``testbed.agent_client``) sends requests, the agent (``testbed.agent``) answers
each with one reply. A line is a JSON object ``{"op": NAME, ...fields}``; :func:`decode` accepts
only the ops it is given, only their fields, each of its declared type, and names the op, the
field and what was expected when something is wrong. Nothing is ever evaluated or unpickled.

Requests: ``hello`` (the token the agent wrote to its control file), ``ping``, ``step`` (a step
id and ``testbed head``'s arguments for it), ``quit``. Replies: ``welcome``, ``pong``, ``done``
(frames written, frames failed, the error that stopped the step if any, whether the head was
built for it), ``refused`` (a request that was not valid), ``bye``.
"""

from __future__ import annotations

import json
import os
import re
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path

VERSION = 1
MAX_LINE_BYTES = 256 * 1024
"""Longest control line accepted (a step's argv is a few hundred bytes)."""
MAX_ARGV = 200
MAX_ARG_CHARS = 8192
STEP_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,199}$")


class ProtocolError(ValueError):
    """A control line that is not a valid message (the text says which field and why)."""


@dataclass(frozen=True)
class Hello:
    token: str


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Step:
    id: str
    argv: tuple[str, ...]

    def __post_init__(self) -> None:
        if not STEP_ID_RE.match(self.id):
            raise ProtocolError(f"step: field 'id': expected letters, digits, '_.+-' (at most "
                                f"200), got {self.id[:60]!r}")
        if len(self.argv) > MAX_ARGV:
            raise ProtocolError(f"step: field 'argv': at most {MAX_ARGV} arguments, got {len(self.argv)}")
        long = [i for i, a in enumerate(self.argv) if len(a) > MAX_ARG_CHARS]
        if long:
            raise ProtocolError(f"step: field 'argv': argument {long[0]} is longer than "
                                f"{MAX_ARG_CHARS} characters")


@dataclass(frozen=True)
class Quit:
    pass


@dataclass(frozen=True)
class Welcome:
    pid: int
    version: int


@dataclass(frozen=True)
class Pong:
    prepared: int
    """Heads built and kept (one per configuration seen)."""


@dataclass(frozen=True)
class Done:
    id: str
    frames: int
    failed_frames: int
    error: str | None
    built: bool
    """Whether this step built its head (False: reused from an earlier step)."""
    prepare_s: float
    step_s: float


@dataclass(frozen=True)
class Refused:
    error: str


@dataclass(frozen=True)
class Bye:
    pass


Message = Hello | Ping | Step | Quit | Welcome | Pong | Done | Refused | Bye
OPS: dict[str, type] = {cls.__name__.lower(): cls for cls in typing.get_args(Message)}
REQUESTS = (Hello, Ping, Step, Quit)
REPLIES = (Welcome, Pong, Done, Refused, Bye)


def encode(msg: Message) -> bytes:
    """One line: ``{"op": ..., fields...}`` and a newline."""
    body = {"op": type(msg).__name__.lower(), **asdict(msg)}
    return (json.dumps(body, separators=(",", ":")) + "\n").encode()


def _check(op: str, name: str, hint: typing.Any, value: typing.Any) -> typing.Any:
    def bad(expected: str) -> ProtocolError:
        return ProtocolError(f"{op}: field {name!r}: expected {expected}, got "
                             f"{type(value).__name__} {str(value)[:60]!r}")

    if hint is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad("a non-negative integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise bad("a non-negative number")
        return float(value)
    if hint == (str | None):
        if value is not None and not isinstance(value, str):
            raise bad("a string or null")
        return value
    if hint == tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return tuple(value)
    raise TypeError(f"{op}.{name}: no check for {hint!r}")  # a message declared wrongly here


def decode(line: bytes, allowed: tuple[type, ...]) -> Message:
    """The message on ``line``, if it is one of ``allowed`` with exactly its fields."""
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"control line of {len(line)} bytes: at most {MAX_LINE_BYTES}")
    try:
        body = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"control line is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ProtocolError(f"control line: expected a JSON object, got {type(body).__name__}")
    op = body.pop("op", None)
    names = [c.__name__.lower() for c in allowed]
    cls = OPS.get(op) if isinstance(op, str) else None
    if cls not in allowed:
        raise ProtocolError(f"field 'op': expected one of {', '.join(names)}, got {op!r}")
    hints = typing.get_type_hints(cls)
    declared = [f.name for f in fields(cls)]
    unknown = sorted(set(body) - set(declared))
    if unknown:
        raise ProtocolError(f"{op}: unknown field(s) {unknown}; expected {declared}")
    missing = [n for n in declared if n not in body]
    if missing:
        raise ProtocolError(f"{op}: missing field(s) {missing}")
    return cls(**{n: _check(op, n, hints[n], body[n]) for n in declared})


# ---------------------------------------------------------------------- control file


def write_control(path: Path, port: int, token: str) -> None:
    """The control file (port, token, pid), readable by the agent's user only, written whole."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"port": port, "token": token, "pid": os.getpid()}, fh)
    os.replace(tmp, path)


def read_control(text: str, where: str) -> tuple[int, str]:
    """(port, token) from a control file's text; ValueError naming the field otherwise."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object")
    port, token = data.get("port"), data.get("token")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"{where}: field 'port': expected a TCP port, got {port!r}")
    if not isinstance(token, str) or not token:
        raise ValueError(f"{where}: field 'token': expected a non-empty string")
    return port, token
