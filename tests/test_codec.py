"""8-bit quantization (Jacob et al. 2018) and lossless payload compression."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from testbed import codec

F32_EPS = float(np.finfo(np.float32).eps)
SHAPES = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=12)


def finite_f32(**kw: float) -> st.SearchStrategy[float]:
    return st.floats(width=32, allow_nan=False, allow_infinity=False, **kw)


@st.composite
def tiny_range(draw: st.DrawFn) -> np.ndarray:
    """Values within a tiny interval around an arbitrary centre."""
    shape = draw(SHAPES)
    centre = draw(finite_f32(min_value=-1e6, max_value=1e6))
    width = draw(st.sampled_from([1e-30, 1e-12, 1e-6, 1e-3]))
    noise = draw(hnp.arrays(np.float32, shape, elements=finite_f32(min_value=0.0, max_value=1.0)))
    return (np.float32(centre) + noise * np.float32(width)).astype(np.float32)


@st.composite
def constant(draw: st.DrawFn) -> np.ndarray:
    return np.full(draw(SHAPES), draw(finite_f32()), dtype=np.float32)


ARRAYS = st.one_of(
    hnp.arrays(np.float32, SHAPES, elements=finite_f32()),  # anything finite, incl. +-3.4e38
    hnp.arrays(np.float32, SHAPES, elements=finite_f32(min_value=-100.0, max_value=100.0)),
    hnp.arrays(
        np.float32, SHAPES, elements=finite_f32(min_value=0.5, max_value=30.0)
    ),  # all positive
    hnp.arrays(
        np.float32, SHAPES, elements=finite_f32(min_value=-7.0, max_value=-0.125)
    ),  # all negative
    tiny_range(),
    constant(),
)


def assert_within_one_step(x: np.ndarray, q: codec.QuantizedTensor) -> None:
    """|x - dequantize(q)| <= scale/2, up to float32 rounding of x/scale and of the result."""
    y = codec.dequantize(q)
    assert y.dtype == torch.float32
    assert tuple(y.shape) == x.shape
    err = np.abs(y.numpy().astype(np.float64) - x.astype(np.float64))
    bound = q.scale * (0.5 + 256 * F32_EPS) + np.abs(x.astype(np.float64)) * F32_EPS
    worst = int(np.argmax(err - bound))
    assert np.all(err <= bound), (
        f"element {worst}: x={x.flat[worst]!r} got {y.numpy().flat[worst]!r}, "
        f"error {err.flat[worst]:.3g} > bound {bound.flat[worst]:.3g} (scale {q.scale!r})"
    )


@settings(max_examples=300, deadline=None)
@given(ARRAYS)
def test_dequantized_error_within_one_quantization_step(x: np.ndarray) -> None:
    q = codec.quantize(x)
    assert q.shape == x.shape
    assert len(q.data) == x.size
    assert np.isfinite(q.scale) and q.scale > 0
    assert float(np.float32(q.scale)) == q.scale  # survives a float32 wire field
    assert 0 <= q.zero_point <= 255
    assert_within_one_step(x, q)


@settings(max_examples=100, deadline=None)
@given(finite_f32(), SHAPES)
def test_zero_is_exact_and_constants_are_exact(c: float, shape: tuple[int, ...]) -> None:
    x = np.full(shape, c, dtype=np.float32)
    x.flat[0] = 0.0
    y = codec.dequantize(codec.quantize(x)).numpy()
    assert y.flat[0] == 0.0
    const = np.full(shape, c, dtype=np.float32)
    q = codec.quantize(const)
    assert q.scale == abs(c) or c == 0.0
    np.testing.assert_array_equal(codec.dequantize(q).numpy(), const)


def test_all_zero_tensor_has_unit_scale_and_exact_zeros() -> None:
    q = codec.quantize(np.zeros((3, 4), dtype=np.float32))
    assert (q.scale, q.zero_point) == (1.0, 0)
    assert torch.equal(codec.dequantize(q), torch.zeros(3, 4))


def test_known_values_follow_jacob_et_al() -> None:
    x = np.array([-1.0, 0.0, 0.5, 2.0], dtype=np.float32)
    q = codec.quantize(x)
    scale = float(np.float32(3.0 / 255))
    assert q.scale == pytest.approx(scale, rel=1e-6)
    assert q.zero_point == 85  # round(1 / (3/255))
    assert list(q.data) == [0, 85, 85 + round(0.5 / q.scale), 255]


def test_torch_inputs_of_any_float_dtype_and_layout() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(2, 12, 29, 29, generator=g, requires_grad=True)
    for x in (base, base.transpose(2, 3), base.half(), base.to(torch.bfloat16), base.double()):
        q = codec.quantize(x)
        ref = x.detach().float().numpy()
        assert q.shape == tuple(x.shape)
        assert_within_one_step(ref, q)


def test_quantize_shares_memory_with_float32_torch_tensors() -> None:
    x = torch.randn(12, 29, 29)
    assert np.shares_memory(codec.as_float32_array(x), x.numpy())


def test_empty_tensor() -> None:
    q = codec.quantize(np.zeros((0, 3), dtype=np.float32))
    assert q.data == b"" and q.shape == (0, 3)
    assert codec.dequantize(q).shape == (0, 3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_rejected(bad: float) -> None:
    x = np.ones((4, 4), dtype=np.float32)
    x[2, 3] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        codec.quantize(x)
    with pytest.raises(ValueError):
        codec.quantize(torch.from_numpy(x))


def test_float64_values_beyond_float32_rejected() -> None:
    with pytest.raises(ValueError), np.errstate(over="ignore"):
        codec.quantize(np.array([1e300, 0.0]))


def test_quantized_tensor_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="data"):
        codec.QuantizedTensor(b"\x00" * 5, (2, 3), 1.0, 0)
    with pytest.raises(ValueError, match="scale"):
        codec.QuantizedTensor(b"\x00" * 6, (2, 3), 0.0, 0)
    with pytest.raises(ValueError, match="zero_point"):
        codec.QuantizedTensor(b"\x00" * 6, (2, 3), 1.0, 256)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=4096), st.sampled_from(codec.COMPRESSION_METHODS))
def test_compression_round_trip(data: bytes, method: str) -> None:
    packed = codec.compress(data, method)
    assert codec.decompress(packed, method, max_size=len(data)) == data


def test_zlib_shrinks_a_sparse_bottleneck() -> None:
    x = np.maximum(np.random.default_rng(0).normal(size=(12, 29, 29)), 0).astype(np.float32)
    q = codec.quantize(x)  # ReLU output: about half the codes are the zero point
    packed = codec.compress(q.data, "zlib")
    assert len(packed) < len(q.data)
    assert codec.decompress(packed, "zlib", max_size=len(q.data)) == q.data


def test_decompression_bomb_refused() -> None:
    bomb = zlib.compress(b"\x00" * (16 * 2**20), 9)  # 16 MiB in about 16 KiB
    assert len(bomb) < 2**15
    with pytest.raises(codec.DecompressionBombError, match="limit of 10092 bytes"):
        codec.decompress(bomb, "zlib", max_size=10092)
    with pytest.raises(codec.DecompressionBombError):
        codec.decompress(b"x" * 11, "none", max_size=10)


def test_exact_limit_is_accepted() -> None:
    data = bytes(range(256)) * 4
    assert codec.decompress(codec.compress(data, "zlib"), "zlib", max_size=len(data)) == data


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"not zlib at all", "corrupt"),
        (zlib.compress(b"hello world" * 10)[:-6], "truncated"),
        (zlib.compress(b"hello") + b"junk", "trailing"),
        (b"", "truncated"),
    ],
)
def test_corrupt_zlib_payloads_raise_codec_error(payload: bytes, match: str) -> None:
    with pytest.raises(codec.CodecError, match=match):
        codec.decompress(payload, "zlib", max_size=1000)


def test_unknown_method_rejected() -> None:
    with pytest.raises(ValueError, match="compression method"):
        codec.compress(b"x", "lzma")
    with pytest.raises(ValueError, match="compression method"):
        codec.decompress(b"x", "lzma", 10)
