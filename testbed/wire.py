"""Wire format between the mobile device (MD) and the edge server (ES): versioned,
length-prefixed binary messages over one TCP stream.

Every message is an 8-byte header followed by a body; all integers and floats in headers and
bodies are network byte order (big-endian)::

    offset size field
    0      2    magic     b"SB"
    2      1    version   1
    3      1    type      MsgType (1..7)
    4      4    length    body length in bytes (uint32)
    8      n    body      per type, below

Bodies (offsets relative to the body start; add 8 for the offset in the message):

    HELLO  (1) MD->ES  UTF-8 JSON object: the configuration to run
    READY  (2) ES->MD  UTF-8 JSON object: what the ES loaded
    TENSOR (3) MD->ES  0 frame_id u32 | 4 dtype u8 | 5 compression u8 | 6 ndim u8 |
                       7 dims ndim*u32 | 7+4n scale f32 | 11+4n zero_point i32 |
                       15+4n payload (rest of body)
    JPEG   (4) MD->ES  0 frame_id u32 | 4 payload (JPEG bytes, rest of body)
    RESULT (5) ES->MD  0 frame_id u32 | 4 es_proc_ns u64 | 12 predicted i32 | 16 status u16 |
                       18 es_queue_ns u64 (optional: a body of 18 bytes has none, read as 0)
    ERROR  (6) either  0 frame_id u32 | 4 code u16 | 6 message (UTF-8, rest of body)
    BYE    (7) either  empty

``RESULT``'s ``es_queue_ns`` (the ES's queueing delay: request fully received -> a model worker
starts it, on the ES clock) was appended to a body that used to end at ``status``: a receiver
takes a body of 18 bytes (a tail that sends no queueing delay) as ``es_queue_ns`` = 0 and one of
26 bytes with it, so the header ``version`` stays 1. ``encode`` always writes the 26-byte body.

dtype codes: 1 uint8 (8-bit quantized, scale/zero_point meaningful), 2 float32, 3 float16;
float payloads are little-endian IEEE 754 in C order. compression codes: 0 none, 1 zlib.
A quantized 12x29x29 tensor costs 8 + 15 + 3*4 = 35 bytes on top of its 10,092 payload bytes.

An ``Error`` carries an ``ErrorCode`` (below). Two concern the connection rather than a message:
``TIMEOUT`` (10), the peer stalled (idle too long, or a started message did not complete in
time), and ``BUSY`` (12), the receiver is at its limit of concurrent connections and refuses
this one before reading anything from it (``frame_id`` = ``NO_FRAME``). Either way the sender
closes the connection after the ``Error``; after ``BUSY`` the peer may retry later.

``decode`` is pure and ``read_message`` reads exactly one message from a blocking socket; both
raise ``WireError`` (with an ``ErrorCode``, the offending field and its byte offset in the
message) for anything malformed, and never another exception for any input bytes.
"""

from __future__ import annotations

import json
import math
import socket
import struct
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from testbed import codec

if TYPE_CHECKING:
    import torch

MAGIC = b"SB"
VERSION = 1
HEADER = struct.Struct("!2sBBI")
HEADER_SIZE = HEADER.size
MAX_BODY_LENGTH = 0xFFFF_FFFF
MAX_NDIM = 8
NO_FRAME = 0xFFFF_FFFF
"""``frame_id`` of an ``Error`` that concerns no particular frame (e.g. a bad header)."""
DEFAULT_MAX_BODY = 16 * 2**20
"""A sensible ``max_body`` for ``read_message``: 16 MiB."""
BODY_CHUNK = 256 * 2**10
"""``read_message`` allocates a body's buffer up to this size at once, larger ones as they arrive."""
DEFAULT_MAX_TENSOR_BYTES = 64 * 2**20
"""Default limit on a tensor's raw (decompressed) size in ``tensor_from_frame``: 64 MiB."""

_U32 = 0xFFFF_FFFF
_TENSOR_FIXED = struct.Struct("!IBBB")
_SCALE_ZP = struct.Struct("!fi")
_DIMS = tuple(struct.Struct(f"!{n}I") for n in range(MAX_NDIM + 1))
_FRAME_ID = struct.Struct("!I")
_RESULT = struct.Struct("!IQiH")
_RESULT_QUEUE = struct.Struct("!Q")
_ERROR_FIXED = struct.Struct("!IH")
_F32 = struct.Struct("!f")
_JPEG_SOI = b"\xff\xd8"


class MsgType(IntEnum):
    """Message type codes (header byte 3)."""

    HELLO = 1
    READY = 2
    TENSOR = 3
    JPEG = 4
    RESULT = 5
    ERROR = 6
    BYE = 7


class ErrorCode(IntEnum):
    """Why a message was refused; carried by ``WireError`` and by ``Error`` replies."""

    BAD_HEADER = 1
    """Bad magic, or a header of the wrong size."""
    BAD_VERSION = 2
    BAD_TYPE = 3
    """Unknown message type code."""
    TOO_LARGE = 4
    """Announced body (or tensor) larger than the receiver's limit."""
    TRUNCATED = 5
    """The stream ended in the middle of a message."""
    BAD_BODY = 6
    """The body does not match its type's layout."""
    WRONG_SHAPE = 7
    """A tensor's shape differs from what the receiver's tail expects."""
    BAD_CONFIG = 8
    """A HELLO's configuration cannot be run."""
    UNEXPECTED = 9
    """A well-formed message at the wrong point of the conversation."""
    TIMEOUT = 10
    """The peer stalled: a message did not arrive within the timeout."""
    INTERNAL = 11
    """The receiver failed while processing a valid message."""
    BUSY = 12
    """The receiver is at its limit of concurrent connections: this one is refused, retry later."""


DTYPE_CODES: dict[str, int] = {"uint8": 1, "float32": 2, "float16": 3}
DTYPE_ITEMSIZE: dict[str, int] = {"uint8": 1, "float32": 4, "float16": 2}
_DTYPE_NUMPY: dict[str, str] = {"uint8": "u1", "float32": "<f4", "float16": "<f2"}
COMPRESSION_CODES: dict[str, int] = {"none": 0, "zlib": 1}
_DTYPE_BY_CODE = {v: k for k, v in DTYPE_CODES.items()}
_COMPRESSION_BY_CODE = {v: k for k, v in COMPRESSION_CODES.items()}


class WireError(Exception):
    """A malformed or refused message.

    code:   the ``ErrorCode``.
    field:  the offending field, e.g. ``header.magic`` or ``body.shape[1]``.
    offset: byte offset of that field in the message (header start = 0), when known.
    detail: what was expected and what was found.
    """

    def __init__(self, code: ErrorCode, field: str, detail: str, offset: int | None = None):
        self.code = ErrorCode(code)
        self.field = field
        self.offset = offset
        self.detail = detail
        where = field if offset is None else f"{field} at byte {offset}"
        super().__init__(f"{where}: {detail}")

    def to_message(self, frame_id: int = NO_FRAME) -> Error:
        """This error as an ``Error`` reply."""
        return Error(frame_id, self.code, str(self))


class WireTimeout(WireError):
    """The socket timed out before a whole message arrived; ``offset`` = bytes received."""

    def __init__(self, field: str, detail: str, offset: int):
        super().__init__(ErrorCode.TIMEOUT, field, detail, offset)


class PeerClosed(EOFError):
    """The peer closed the stream cleanly, between two messages."""


def _check_u32(name: str, value: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= _U32:
        raise ValueError(f"{name}: expected an integer 0..{_U32}, got {value!r}")


def _check_json_object(name: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise TypeError(f"{name}: expected a dict (JSON object), got {type(value).__name__}")


@dataclass(frozen=True)
class Hello:
    """MD->ES, first message of a connection: the configuration to run (a JSON object)."""

    config: dict[str, Any]
    TYPE: ClassVar[MsgType] = MsgType.HELLO

    def __post_init__(self) -> None:
        _check_json_object("config", self.config)


@dataclass(frozen=True)
class Ready:
    """ES->MD reply to ``Hello``: what the ES loaded (a JSON object)."""

    info: dict[str, Any]
    TYPE: ClassVar[MsgType] = MsgType.READY

    def __post_init__(self) -> None:
        _check_json_object("info", self.info)


@dataclass(frozen=True)
class TensorFrame:
    """MD->ES: the head's output for one frame.

    dtype ``uint8`` carries 8-bit codes with ``scale``/``zero_point``; for ``float32`` and
    ``float16`` those two fields are carried but mean nothing. ``scale`` is stored as the
    nearest float32 (the wire field's precision). ``payload`` is the tensor's bytes in C order,
    compressed with ``compression``.
    """

    frame_id: int
    dtype: str
    shape: tuple[int, ...]
    scale: float
    zero_point: int
    compression: str
    payload: bytes
    TYPE: ClassVar[MsgType] = MsgType.TENSOR

    def __post_init__(self) -> None:
        _check_u32("frame_id", self.frame_id)
        if self.dtype not in DTYPE_CODES:
            raise ValueError(f"dtype: expected one of {tuple(DTYPE_CODES)}, got {self.dtype!r}")
        if self.compression not in COMPRESSION_CODES:
            raise ValueError(
                f"compression: expected one of {tuple(COMPRESSION_CODES)}, got {self.compression!r}"
            )
        shape = tuple(self.shape)
        if not 1 <= len(shape) <= MAX_NDIM:
            raise ValueError(f"shape: expected 1..{MAX_NDIM} dimensions, got {len(shape)}")
        for i, d in enumerate(shape):
            if not isinstance(d, (int, np.integer)) or not 1 <= d <= _U32:
                raise ValueError(f"shape[{i}]: expected an integer 1..{_U32}, got {d!r}")
        object.__setattr__(self, "shape", tuple(int(d) for d in shape))
        try:
            scale = _F32.unpack(_F32.pack(float(self.scale)))[0]
        except (OverflowError, TypeError, ValueError) as exc:
            raise ValueError(
                f"scale: expected a float32-representable number, got {self.scale!r}"
            ) from exc
        if not math.isfinite(scale):
            raise ValueError(f"scale: expected a finite number, got {self.scale!r}")
        object.__setattr__(self, "scale", scale)
        if (
            not isinstance(self.zero_point, (int, np.integer))
            or not -(2**31) <= self.zero_point < 2**31
        ):
            raise ValueError(f"zero_point: expected an int32, got {self.zero_point!r}")
        object.__setattr__(self, "zero_point", int(self.zero_point))
        if self.dtype == "uint8":
            if scale <= 0:
                raise ValueError(f"scale: expected > 0 for uint8, got {scale!r}")
            if not codec.QMIN <= self.zero_point <= codec.QMAX:
                raise ValueError(f"zero_point: expected 0..255 for uint8, got {self.zero_point!r}")
        if not isinstance(self.payload, bytes):
            object.__setattr__(self, "payload", bytes(self.payload))
        if self.compression == "none" and len(self.payload) != self.raw_nbytes:
            raise ValueError(
                f"payload: expected {self.raw_nbytes} bytes for {self.dtype} {self.shape}, "
                f"got {len(self.payload)}"
            )
        if self.compression != "none" and not self.payload:
            raise ValueError(f"payload: a {self.compression} payload cannot be empty")

    @property
    def raw_nbytes(self) -> int:
        """Size of the uncompressed tensor: prod(shape) * itemsize."""
        return math.prod(self.shape) * DTYPE_ITEMSIZE[self.dtype]

    @classmethod
    def from_quantized(
        cls, frame_id: int, q: codec.QuantizedTensor, compression: str = "none", level: int = 6
    ) -> TensorFrame:
        """A uint8 frame carrying ``q``, its codes compressed with ``compression``."""
        payload = codec.compress(q.data, compression, level)
        return cls(frame_id, "uint8", q.shape, q.scale, q.zero_point, compression, payload)

    @classmethod
    def from_float(
        cls,
        frame_id: int,
        x: torch.Tensor | np.ndarray,
        dtype: str = "float32",
        compression: str = "none",
        level: int = 6,
    ) -> TensorFrame:
        """An unquantized frame carrying ``x`` as little-endian ``float32`` or ``float16``."""
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype: expected 'float32' or 'float16', got {dtype!r}")
        arr = codec.as_float32_array(x)
        raw = np.ascontiguousarray(arr, dtype=_DTYPE_NUMPY[dtype]).tobytes()
        payload = codec.compress(raw, compression, level)
        return cls(frame_id, dtype, tuple(arr.shape), 1.0, 0, compression, payload)


@dataclass(frozen=True)
class JpegFrame:
    """MD->ES (EC mode): one resized image as JPEG bytes (starting with the SOI marker)."""

    frame_id: int
    payload: bytes
    TYPE: ClassVar[MsgType] = MsgType.JPEG

    def __post_init__(self) -> None:
        _check_u32("frame_id", self.frame_id)
        if not isinstance(self.payload, bytes):
            object.__setattr__(self, "payload", bytes(self.payload))
        if not self.payload.startswith(_JPEG_SOI):
            raise ValueError(
                f"payload: expected JPEG bytes starting {_JPEG_SOI!r}, got {self.payload[:2]!r}"
            )


RESULT_OVERRUN = 0x8000
"""``Result.status``: a good prediction whose emulated ES time was overrun."""


@dataclass(frozen=True)
class Result:
    """ES->MD: the prediction for one frame.

    es_proc_ns: the ES's own processing time, from a model worker starting the request to the
                reply ready (ns).
    predicted:  predicted class index (-1 if none).
    status:     0 = ok, ``RESULT_OVERRUN`` = ok, but the ES follows a device profile and its
                real work outlasted the time the profile gave this frame (``testbed.replay``),
                otherwise an ``ErrorCode`` value.
    es_queue_ns: the ES's queueing delay, from the request fully received to a worker starting
                it (ns); 0 from a tail that does not report it.
    """

    frame_id: int
    es_proc_ns: int
    predicted: int
    status: int = 0
    es_queue_ns: int = 0
    TYPE: ClassVar[MsgType] = MsgType.RESULT

    def __post_init__(self) -> None:
        _check_u32("frame_id", self.frame_id)
        if not isinstance(self.es_proc_ns, int) or not 0 <= self.es_proc_ns < 2**64:
            raise ValueError(f"es_proc_ns: expected an integer 0..2**64-1, got {self.es_proc_ns!r}")
        if not isinstance(self.es_queue_ns, int) or not 0 <= self.es_queue_ns < 2**64:
            raise ValueError(
                f"es_queue_ns: expected an integer 0..2**64-1, got {self.es_queue_ns!r}")
        if not isinstance(self.predicted, int) or not -(2**31) <= self.predicted < 2**31:
            raise ValueError(f"predicted: expected an int32, got {self.predicted!r}")
        if not isinstance(self.status, int) or not 0 <= self.status <= 0xFFFF:
            raise ValueError(f"status: expected an integer 0..65535, got {self.status!r}")


@dataclass(frozen=True)
class Error:
    """An error reply; ``frame_id`` is ``NO_FRAME`` when it concerns no particular frame."""

    frame_id: int
    code: ErrorCode
    message: str
    TYPE: ClassVar[MsgType] = MsgType.ERROR

    def __post_init__(self) -> None:
        _check_u32("frame_id", self.frame_id)
        object.__setattr__(self, "code", ErrorCode(self.code))
        if not isinstance(self.message, str):
            raise TypeError(f"message: expected str, got {type(self.message).__name__}")


@dataclass(frozen=True)
class Bye:
    """Clean end of the conversation."""

    TYPE: ClassVar[MsgType] = MsgType.BYE


Message = Hello | Ready | TensorFrame | JpegFrame | Result | Error | Bye
MESSAGE_CLASSES: tuple[type, ...] = (Hello, Ready, TensorFrame, JpegFrame, Result, Error, Bye)


@dataclass(frozen=True)
class Header:
    """A parsed message header."""

    type: MsgType
    length: int


# --------------------------------------------------------------------------- encoding


def _json_bytes(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode(
        "ascii"
    )


def _body_parts(msg: Message) -> list[bytes]:
    if isinstance(msg, TensorFrame):
        n = len(msg.shape)
        fixed = (
            _TENSOR_FIXED.pack(
                msg.frame_id, DTYPE_CODES[msg.dtype], COMPRESSION_CODES[msg.compression], n
            )
            + _DIMS[n].pack(*msg.shape)
            + _SCALE_ZP.pack(msg.scale, msg.zero_point)
        )
        return [fixed, msg.payload]
    if isinstance(msg, Result):
        return [_RESULT.pack(msg.frame_id, msg.es_proc_ns, msg.predicted, msg.status),
                _RESULT_QUEUE.pack(msg.es_queue_ns)]
    if isinstance(msg, JpegFrame):
        return [_FRAME_ID.pack(msg.frame_id), msg.payload]
    if isinstance(msg, Hello):
        return [_json_bytes(msg.config)]
    if isinstance(msg, Ready):
        return [_json_bytes(msg.info)]
    if isinstance(msg, Error):
        return [
            _ERROR_FIXED.pack(msg.frame_id, msg.code),
            msg.message.encode("utf-8", "backslashreplace"),
        ]
    if isinstance(msg, Bye):
        return []
    raise TypeError(f"not a wire message: {type(msg).__name__}")


def encode(msg: Message) -> bytes:
    """The bytes of ``msg`` on the wire (header + body).

    Raises ``TypeError``/``ValueError`` if a JSON message holds values JSON cannot represent.
    """
    parts = _body_parts(msg)
    length = sum(len(p) for p in parts)
    if length > MAX_BODY_LENGTH:
        raise ValueError(f"body of {length} bytes exceeds the uint32 length field")
    return b"".join([HEADER.pack(MAGIC, VERSION, msg.TYPE, length), *parts])


def wire_size(msg: Message) -> int:
    """Number of bytes ``encode(msg)`` produces."""
    if isinstance(msg, TensorFrame):
        return (
            HEADER_SIZE
            + _TENSOR_FIXED.size
            + 4 * len(msg.shape)
            + _SCALE_ZP.size
            + len(msg.payload)
        )
    if isinstance(msg, JpegFrame):
        return HEADER_SIZE + _FRAME_ID.size + len(msg.payload)
    if isinstance(msg, Result):
        return HEADER_SIZE + _RESULT.size + _RESULT_QUEUE.size
    if isinstance(msg, Bye):
        return HEADER_SIZE
    return HEADER_SIZE + sum(len(p) for p in _body_parts(msg))


def send_message(sock: socket.socket, msg: Message) -> int:
    """Send ``msg`` with one ``sendall`` (header and body in one write); return bytes sent."""
    data = encode(msg)
    sock.sendall(data)
    return len(data)


# --------------------------------------------------------------------------- decoding


def _type_list() -> str:
    return ", ".join(f"{t.value} ({t.name})" for t in MsgType)


def _check_header_prefix(header: bytes | bytearray | memoryview, n: int) -> None:
    """Validate the magic/version/type bytes among the first ``n`` header bytes."""
    magic = bytes(header[: min(n, 2)])
    if magic != MAGIC[: len(magic)]:
        raise WireError(
            ErrorCode.BAD_HEADER, "header.magic", f"expected {MAGIC!r}, got {magic!r}", 0
        )
    if n >= 3 and header[2] != VERSION:
        raise WireError(
            ErrorCode.BAD_VERSION, "header.version", f"expected {VERSION}, got {header[2]}", 2
        )
    if n >= 4 and header[3] not in _DECODERS:
        raise WireError(
            ErrorCode.BAD_TYPE, "header.type", f"expected one of {_type_list()}, got {header[3]}", 3
        )


def parse_header(header: bytes | bytearray | memoryview, max_body: int | None = None) -> Header:
    """Parse the 8-byte header; ``WireError`` if malformed or announcing more than ``max_body``."""
    n = len(header)
    _check_header_prefix(header, n)
    if n < HEADER_SIZE:
        raise WireError(ErrorCode.TRUNCATED, "header", f"expected {HEADER_SIZE} bytes, got {n}", n)
    if n > HEADER_SIZE:
        raise WireError(
            ErrorCode.BAD_HEADER, "header", f"expected {HEADER_SIZE} bytes, got {n}", HEADER_SIZE
        )
    _, _, type_code, length = HEADER.unpack(header)
    if max_body is not None and length > max_body:
        raise WireError(
            ErrorCode.TOO_LARGE,
            "header.length",
            f"expected at most {max_body} bytes, got {length}",
            4,
        )
    return Header(MsgType(type_code), length)


def _bad(field: str, detail: str, body_offset: int | None) -> WireError:
    offset = None if body_offset is None else HEADER_SIZE + body_offset
    return WireError(ErrorCode.BAD_BODY, field, detail, offset)


def _need(body: memoryview, n: int, what: str) -> None:
    if len(body) < n:
        raise _bad("body", f"expected at least {n} bytes ({what}), got {len(body)}", len(body))


def _exact(body: memoryview, n: int, what: str) -> None:
    if len(body) != n:
        raise _bad(
            "body", f"expected exactly {n} bytes ({what}), got {len(body)}", min(n, len(body))
        )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _decode_json_object(body: memoryview) -> dict[str, Any]:
    raw = bytes(body)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(
            "body.json", f"expected UTF-8 text, got byte {raw[exc.start]:#04x}", exc.start
        ) from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        offset = len(text[: exc.pos].encode("utf-8"))
        raise _bad(
            "body.json", f"expected a JSON object, got invalid JSON ({exc.msg})", offset
        ) from None
    except (ValueError, RecursionError) as exc:
        raise _bad("body.json", f"expected a JSON object, got unparsable JSON ({exc})", 0) from None
    if not isinstance(obj, dict):
        raise _bad("body.json", f"expected a JSON object, got a JSON {type(obj).__name__}", 0)
    return obj


def _decode_hello(body: memoryview) -> Hello:
    return Hello(_decode_json_object(body))


def _decode_ready(body: memoryview) -> Ready:
    return Ready(_decode_json_object(body))


def _decode_tensor(body: memoryview) -> TensorFrame:
    _need(body, _TENSOR_FIXED.size, "frame_id, dtype, compression, ndim")
    frame_id, dtype_code, comp_code, ndim = _TENSOR_FIXED.unpack_from(body, 0)
    dtype = _DTYPE_BY_CODE.get(dtype_code)
    if dtype is None:
        raise _bad("body.dtype", f"expected one of {_DTYPE_BY_CODE}, got {dtype_code}", 4)
    compression = _COMPRESSION_BY_CODE.get(comp_code)
    if compression is None:
        raise _bad(
            "body.compression", f"expected one of {_COMPRESSION_BY_CODE}, got {comp_code}", 5
        )
    if not 1 <= ndim <= MAX_NDIM:
        raise _bad("body.ndim", f"expected 1..{MAX_NDIM}, got {ndim}", 6)
    dims_at = _TENSOR_FIXED.size
    payload_at = dims_at + 4 * ndim + _SCALE_ZP.size
    _need(body, payload_at, f"fixed fields for ndim={ndim}")
    shape = _DIMS[ndim].unpack_from(body, dims_at)
    for i, d in enumerate(shape):
        if d == 0:
            raise _bad(f"body.shape[{i}]", "expected a positive size, got 0", dims_at + 4 * i)
    scale_at = dims_at + 4 * ndim
    scale, zero_point = _SCALE_ZP.unpack_from(body, scale_at)
    if not math.isfinite(scale):
        raise _bad("body.scale", f"expected a finite number, got {scale}", scale_at)
    if dtype == "uint8":
        if scale <= 0:
            raise _bad("body.scale", f"expected > 0 for uint8, got {scale}", scale_at)
        if not codec.QMIN <= zero_point <= codec.QMAX:
            raise _bad(
                "body.zero_point", f"expected 0..255 for uint8, got {zero_point}", scale_at + 4
            )
    payload = bytes(body[payload_at:])
    if compression == "none":
        expected = math.prod(shape) * DTYPE_ITEMSIZE[dtype]
        if len(payload) != expected:
            raise _bad(
                "body.payload",
                f"expected {expected} bytes for uncompressed {dtype} {shape}, got {len(payload)}",
                payload_at + min(expected, len(payload)),
            )
    elif not payload:
        raise _bad(
            "body.payload", f"expected a non-empty {compression} payload, got 0 bytes", payload_at
        )
    return TensorFrame(frame_id, dtype, shape, scale, zero_point, compression, payload)


def _decode_jpeg(body: memoryview) -> JpegFrame:
    _need(body, _FRAME_ID.size + len(_JPEG_SOI), "frame_id and JPEG SOI marker")
    (frame_id,) = _FRAME_ID.unpack_from(body, 0)
    payload = bytes(body[_FRAME_ID.size :])
    if not payload.startswith(_JPEG_SOI):
        raise _bad(
            "body.payload", f"expected JPEG SOI {_JPEG_SOI!r}, got {payload[:2]!r}", _FRAME_ID.size
        )
    return JpegFrame(frame_id, payload)


def _decode_result(body: memoryview) -> Result:
    if len(body) == _RESULT.size:  # a tail that reports no queueing delay
        return Result(*_RESULT.unpack_from(body, 0))
    _exact(body, _RESULT.size + _RESULT_QUEUE.size,
           "frame_id u32, es_proc_ns u64, predicted i32, status u16[, es_queue_ns u64]")
    return Result(*_RESULT.unpack_from(body, 0), *_RESULT_QUEUE.unpack_from(body, _RESULT.size))


def _decode_error(body: memoryview) -> Error:
    _need(body, _ERROR_FIXED.size, "frame_id u32, code u16")
    frame_id, code = _ERROR_FIXED.unpack_from(body, 0)
    try:
        code = ErrorCode(code)
    except ValueError:
        raise _bad(
            "body.code", f"expected one of {[c.value for c in ErrorCode]}, got {code}", 4
        ) from None
    raw = bytes(body[_ERROR_FIXED.size :])
    try:
        message = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(
            "body.message",
            f"expected UTF-8 text, got byte {raw[exc.start]:#04x}",
            _ERROR_FIXED.size + exc.start,
        ) from None
    return Error(frame_id, code, message)


def _decode_bye(body: memoryview) -> Bye:
    _exact(body, 0, "BYE has no body")
    return Bye()


_DECODERS = {
    MsgType.HELLO: _decode_hello,
    MsgType.READY: _decode_ready,
    MsgType.TENSOR: _decode_tensor,
    MsgType.JPEG: _decode_jpeg,
    MsgType.RESULT: _decode_result,
    MsgType.ERROR: _decode_error,
    MsgType.BYE: _decode_bye,
}


def decode_body(header: Header, body: bytes | bytearray | memoryview) -> Message:
    """The message made of a parsed ``header`` and its whole ``body``; raises only ``WireError``."""
    n = len(body)
    if n < header.length:
        raise WireError(
            ErrorCode.TRUNCATED, "body", f"expected {header.length} bytes, got {n}", HEADER_SIZE + n
        )
    if n > header.length:
        raise WireError(
            ErrorCode.BAD_BODY,
            "body",
            f"expected {header.length} bytes, got {n} ({n - header.length} trailing)",
            HEADER_SIZE + header.length,
        )
    return _DECODERS[header.type](memoryview(body))


def decode(
    header: bytes | bytearray | memoryview,
    body: bytes | bytearray | memoryview,
    max_body: int | None = None,
) -> Message:
    """The message encoded as ``header`` (8 bytes) + ``body``; raises only ``WireError``."""
    return decode_body(parse_header(header, max_body), body)


# --------------------------------------------------------------------------- sockets


def _recv_into(
    sock: socket.socket,
    buf: bytearray | memoryview,
    deadline: float | None,
    field: str,
    base: int,
    start: int = 0,
    total: int | None = None,
) -> int:
    """Fill ``buf[start:]`` from ``sock``; return how many bytes of ``buf`` are then filled
    (fewer than ``len(buf)`` only at EOF). ``total``: the field's whole size, for messages."""
    view = memoryview(buf)
    n = len(buf)
    size = n if total is None else total
    got = start
    while got < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WireTimeout(field, f"timed out after {got} of {size} bytes", base + got)
            sock.settimeout(remaining)
        try:
            k = sock.recv_into(view[got:], n - got)
        except TimeoutError:  # socket.timeout is TimeoutError since Python 3.10
            raise WireTimeout(field, f"timed out after {got} of {size} bytes", base + got) from None
        if k == 0:
            break
        got += k
    return got


def _recv_body(sock: socket.socket, length: int, deadline: float | None) -> bytearray:
    """A body of ``length`` bytes (fewer only at EOF), in a buffer that starts at
    ``BODY_CHUNK`` and at most doubles as bytes arrive: an announced length costs memory only
    once the peer has sent it."""
    body = bytearray(min(length, BODY_CHUNK))
    got = 0
    while True:
        got = _recv_into(sock, body, deadline, "body", HEADER_SIZE, start=got, total=length)
        if got < len(body) or got == length:
            del body[got:]
            return body
        body.extend(bytes(min(len(body), length - got)))


def read_message(
    sock: socket.socket,
    max_body: int,
    timeout: float | None = None,
    *,
    idle_timeout: float | None = None,
) -> Message:
    """Read exactly one message from a blocking socket.

    ``timeout`` (seconds) bounds the whole message, first byte included; ``None`` keeps the
    socket's own timeout. With ``idle_timeout``, the wait for the first byte is bounded by
    ``idle_timeout`` instead and ``timeout`` runs from the first byte on: a peer may stay idle
    between messages for long, but a message it has started must be complete within
    ``timeout``. The socket's timeout is restored afterwards. The body length is checked
    against ``max_body`` before the body is read; its buffer grows as the body arrives (from
    ``BODY_CHUNK``), so a peer that announces a large body and stalls costs little memory.

    Raises ``PeerClosed`` on EOF before the first header byte, ``WireTimeout`` (its ``offset``
    = bytes of this message received; 0 means the peer was idle) when the time runs out, and
    ``WireError`` for malformed or truncated messages. After any ``WireError`` the stream is out
    of step: send an ``Error`` if useful, then close. ``OSError``s such as a connection reset
    propagate unchanged.
    """
    restore = timeout is not None or idle_timeout is not None
    previous = sock.gettimeout() if restore else None
    try:
        header = bytearray(HEADER_SIZE)
        got = 0
        if idle_timeout is not None:
            first = memoryview(header)[:1]
            idle_deadline = time.monotonic() + idle_timeout
            got = _recv_into(sock, first, idle_deadline, "header", 0, total=HEADER_SIZE)
            if got == 0:
                raise PeerClosed("peer closed the connection")
            sock.settimeout(previous)  # for the rest when ``timeout`` is None
        deadline = None if timeout is None else time.monotonic() + timeout
        got = _recv_into(sock, header, deadline, "header", 0, start=got)
        if got == 0:
            raise PeerClosed("peer closed the connection")
        h = parse_header(header if got == HEADER_SIZE else header[:got], max_body)
        return decode_body(h, _recv_body(sock, h.length, deadline))
    finally:
        if restore:
            sock.settimeout(previous)


# --------------------------------------------------------------------------- tensors


def array_from_frame(
    frame: TensorFrame,
    expected_shape: tuple[int, ...] | None = None,
    max_size: int = DEFAULT_MAX_TENSOR_BYTES,
) -> np.ndarray:
    """The frame's tensor as a fresh float32 numpy array (dequantized if uint8).

    Raises ``WireError``: ``WRONG_SHAPE`` if ``expected_shape`` differs from the frame's,
    ``TOO_LARGE`` if the raw tensor exceeds ``max_size`` bytes, ``BAD_BODY`` if the payload does
    not decompress to exactly prod(shape) * itemsize bytes.
    """
    dims_offset = HEADER_SIZE + _TENSOR_FIXED.size
    if expected_shape is not None and tuple(expected_shape) != frame.shape:
        raise WireError(
            ErrorCode.WRONG_SHAPE,
            "body.shape",
            f"expected {tuple(expected_shape)}, got {frame.shape}",
            dims_offset,
        )
    nbytes = frame.raw_nbytes
    if nbytes > max_size:
        raise WireError(
            ErrorCode.TOO_LARGE,
            "body.shape",
            f"expected a tensor of at most {max_size} bytes, "
            f"got {frame.dtype} {frame.shape} = {nbytes} bytes",
            dims_offset,
        )
    payload_offset = dims_offset + 4 * len(frame.shape) + _SCALE_ZP.size
    try:
        raw = codec.decompress(frame.payload, frame.compression, nbytes)
    except codec.CodecError as exc:
        raise WireError(
            ErrorCode.BAD_BODY,
            "body.payload",
            f"expected {nbytes} bytes of {frame.dtype}: {exc}",
            payload_offset,
        ) from None
    if len(raw) != nbytes:
        raise WireError(
            ErrorCode.BAD_BODY,
            "body.payload",
            f"expected {nbytes} bytes after {frame.compression} decompression, got {len(raw)}",
            payload_offset,
        )
    if frame.dtype == "uint8":
        return codec.dequantize_codes(raw, frame.shape, frame.scale, frame.zero_point)
    return (
        np.frombuffer(raw, dtype=_DTYPE_NUMPY[frame.dtype]).astype(np.float32).reshape(frame.shape)
    )


def tensor_from_frame(
    frame: TensorFrame,
    expected_shape: tuple[int, ...] | None = None,
    max_size: int = DEFAULT_MAX_TENSOR_BYTES,
) -> torch.Tensor:
    """The frame's tensor as a float32 torch tensor; see ``array_from_frame`` for the errors."""
    import torch

    return torch.from_numpy(array_from_frame(frame, expected_shape, max_size))
