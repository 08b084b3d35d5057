"""Bottleneck codec: 8-bit asymmetric quantization and lossless payload compression.

Quantization follows Jacob et al. 2018 (the paper's ref. [39]) with one (scale, zero point)
pair per tensor. The real range ``[lo, hi]`` always contains 0, so 0.0 maps to an exact code::

    lo = min(min(x), 0)      hi = max(max(x), 0)
    scale = (hi - lo) / 255                          (a positive float32, see below)
    zero_point = clamp(round(-lo / scale), 0, 255)
    q = clamp(round(x / scale) + zero_point, 0, 255)   as uint8
    x' = (q - zero_point) * scale

``scale`` is rounded *up* to a float32 (so it survives a 32-bit wire field unchanged and
``255 * scale >= hi - lo``; it may be subnormal for subnormal ranges); with that,
``|x - x'| <= scale / 2`` for every element, up to float32 rounding of ``x / scale``
(relative 2**-24) and of ``x'``. A constant tensor gets special parameters that make it
exact: all zeros get ``scale = 1.0, zero_point = 0``; a constant ``c != 0`` gets
``scale = |c|`` and ``zero_point = 0`` (``c > 0``, code 1) or ``1`` (``c < 0``, code 0).

This module imports torch only when it has to build a torch tensor (``dequantize``); torch
tensors passed to ``quantize`` are read through ``Tensor.numpy()``, which shares memory for
contiguous float32 CPU tensors.
"""

from __future__ import annotations

import math
import sys
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

COMPRESSION_METHODS = ("none", "zlib")
"""Lossless payload compression methods understood by ``compress``/``decompress``."""

QMIN = 0
QMAX = 255
_F32_MAX = float(np.finfo(np.float32).max)


class CodecError(ValueError):
    """A payload cannot be decoded (corrupt, truncated or inconsistent)."""


class DecompressionBombError(CodecError):
    """A compressed payload inflates beyond the caller's limit."""


@dataclass(frozen=True)
class QuantizedTensor:
    """An 8-bit quantized tensor.

    data:       the uint8 codes in C order, ``prod(shape)`` bytes.
    shape:      the tensor's shape.
    scale:      real value of one quantization step (positive, finite, exactly a float32).
    zero_point: the code that represents 0.0 (0..255).
    """

    data: bytes
    shape: tuple[int, ...]
    scale: float
    zero_point: int

    def __post_init__(self) -> None:
        if any(not isinstance(d, int) or d < 0 for d in self.shape):
            raise ValueError(f"shape: expected non-negative integers, got {self.shape!r}")
        n = math.prod(self.shape)
        if len(self.data) != n:
            raise ValueError(
                f"data: expected {n} bytes for shape {self.shape}, got {len(self.data)}"
            )
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale: expected a positive finite number, got {self.scale!r}")
        if not QMIN <= self.zero_point <= QMAX:
            raise ValueError(f"zero_point: expected {QMIN}..{QMAX}, got {self.zero_point!r}")

    @property
    def nbytes(self) -> int:
        return len(self.data)


def as_float32_array(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """``x`` as a float32 numpy array, sharing memory when ``x`` already is float32 on the CPU."""
    torch_mod = sys.modules.get("torch")
    if torch_mod is not None and isinstance(x, torch_mod.Tensor):
        t = x.detach()
        if t.dtype != torch_mod.float32:
            t = t.to(torch_mod.float32)
        if t.device.type != "cpu":
            t = t.cpu()
        return t.numpy()
    return np.asarray(x, dtype=np.float32)


def quantization_params(lo: float, hi: float) -> tuple[float, int]:
    """``(scale, zero_point)`` for a tensor whose values span ``[lo, hi]``.

    ``lo`` and ``hi`` must be finite float32 values. The quantized range is
    ``[min(lo, 0), max(hi, 0)]`` and ``scale`` is a float32 value with ``255 * scale`` at least
    its width; a constant tensor (``lo == hi``) gets parameters that represent it exactly.
    """
    if lo == hi:  # constant tensor: one step of exactly |c| makes c a code (1 or 0)
        return (1.0, 0) if lo == 0.0 else (abs(lo), 1 if lo < 0 else 0)
    lo = min(lo, 0.0)
    hi = max(hi, 0.0)
    rng = hi - lo
    scale32 = np.float32(rng / QMAX)
    # Round up so that the whole range fits in 0..255 (float(scale32) * 255 is exact in float64).
    while float(scale32) * QMAX < rng:
        scale32 = np.nextafter(scale32, np.float32(np.inf))
    scale = float(scale32)
    zero_point = int(min(max(round(-lo / scale), QMIN), QMAX))
    return scale, zero_point


def quantize(x: torch.Tensor | np.ndarray) -> QuantizedTensor:
    """Quantize ``x`` to 8 bits with one (scale, zero point) pair; ``ValueError`` on NaN/Inf."""
    arr = as_float32_array(x)
    shape = tuple(int(d) for d in arr.shape)
    if arr.size == 0:
        return QuantizedTensor(b"", shape, 1.0, 0)
    lo = float(arr.min())
    hi = float(arr.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"cannot quantize a tensor with NaN or Inf values (min {lo}, max {hi})")
    scale, zero_point = quantization_params(lo, hi)
    buf = np.divide(arr, np.float32(scale), dtype=np.float32)
    np.rint(buf, out=buf)
    buf += np.float32(zero_point)
    np.clip(buf, QMIN, QMAX, out=buf)
    return QuantizedTensor(buf.astype(np.uint8).tobytes(), shape, scale, zero_point)


def dequantization_table(scale: float, zero_point: int) -> np.ndarray:
    """The 256 float32 values the codes 0..255 stand for (clipped to the float32 range)."""
    table = (np.arange(QMIN, QMAX + 1, dtype=np.float64) - zero_point) * scale
    np.clip(table, -_F32_MAX, _F32_MAX, out=table)
    return table.astype(np.float32)


def dequantize_codes(
    codes: bytes | bytearray | memoryview | np.ndarray,
    shape: tuple[int, ...],
    scale: float,
    zero_point: int,
) -> np.ndarray:
    """Float32 array of ``shape`` for uint8 ``codes`` (a fresh, writable array)."""
    q = np.frombuffer(codes, dtype=np.uint8) if not isinstance(codes, np.ndarray) else codes
    return dequantization_table(scale, zero_point)[q].reshape(shape)


def dequantize_numpy(q: QuantizedTensor) -> np.ndarray:
    """``q`` as a float32 numpy array of its original shape."""
    return dequantize_codes(q.data, q.shape, q.scale, q.zero_point)


def dequantize(q: QuantizedTensor) -> torch.Tensor:
    """``q`` as a float32 torch tensor of its original shape."""
    import torch

    return torch.from_numpy(dequantize_numpy(q))


def compress(data: bytes | bytearray | memoryview, method: str, level: int = 6) -> bytes:
    """``data`` compressed with ``method`` ("none" returns the bytes unchanged)."""
    if method == "none":
        return bytes(data)
    if method == "zlib":
        return zlib.compress(data, level)
    raise ValueError(f"compression method: expected one of {COMPRESSION_METHODS}, got {method!r}")


def decompress(data: bytes | bytearray | memoryview, method: str, max_size: int) -> bytes:
    """``data`` decompressed with ``method``, never producing more than ``max_size`` bytes.

    Raises ``DecompressionBombError`` if the output would exceed ``max_size`` (zlib stops
    inflating at ``max_size + 1`` bytes) and ``CodecError`` for corrupt, truncated or
    trailing data.
    """
    if max_size < 0:
        raise ValueError(f"max_size: expected >= 0, got {max_size}")
    if method == "none":
        if len(data) > max_size:
            raise DecompressionBombError(f"payload is {len(data)} bytes, limit is {max_size}")
        return bytes(data)
    if method == "zlib":
        d = zlib.decompressobj()
        try:
            out = d.decompress(data, max_size + 1)
        except zlib.error as exc:
            raise CodecError(f"zlib payload is corrupt: {exc}") from exc
        if len(out) > max_size:
            raise DecompressionBombError(
                f"zlib payload inflates beyond the limit of {max_size} bytes"
            )
        if not d.eof:
            raise CodecError(
                f"zlib payload is truncated (stream incomplete after {len(data)} bytes)"
            )
        if d.unused_data:
            raise CodecError(
                f"zlib payload has {len(d.unused_data)} trailing bytes after the stream"
            )
        return out
    raise ValueError(f"compression method: expected one of {COMPRESSION_METHODS}, got {method!r}")
