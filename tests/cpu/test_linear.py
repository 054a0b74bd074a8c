"""cpu/linear.py: the compiled BF16 kernels widen exactly and their products equal float64."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from voxtral.cpu import linear
from voxtral.cpu.ops import linear as ops_linear


def bf16(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32).astype(ml_dtypes.bfloat16)


def test_widening_is_exact():
    w = bf16((7, 64))
    w.view(np.uint16)[0, :6] = [
        0x7F80,
        0xFF80,
        0x0001,
        0x8000,
        0x7F7F,
        0x0080,
    ]  # inf, -inf, subnormal, -0, max, min
    out = np.empty(w.shape, np.uint32)
    linear.kernels()[1](w.view(np.uint16), 0, out)
    assert np.array_equal(out, w.astype(np.float32).view(np.uint32))


def test_register_widening_is_exact():
    """The one-row GEMV widens in registers: a one-hot x picks each weight out exactly (specials too)."""
    w = bf16((5, 40))
    w.view(np.uint16)[:, 9] = [0x7F80, 0xFF80, 0x0001, 0x7F7F, 0x0080]  # inf, -inf, subnormal, max, min
    x = np.zeros((1, 40), np.float32)
    x[0, 9] = 1.0
    y = np.empty((1, 5), np.float32)
    linear.kernels()[0](w.view(np.uint16), x, y, 2)
    assert np.array_equal(y[0].view(np.uint32), w[:, 9].astype(np.float32).view(np.uint32))


def test_read_probe_reads_every_value():
    values = (np.arange(40_000, dtype=np.float32) % 7).reshape(100, 400)
    sums = np.empty(100, np.float32)
    linear.kernels()[2](values, sums)
    assert np.array_equal(sums, values.astype(np.float64).sum(axis=1).astype(np.float32))  # small ints: exact
    assert linear.read_bandwidth(1 << 24, 2) > 0


@pytest.mark.parametrize("t", [1, 3, 16, 17, 70])  # fused GEMV (≤ 16 rows) and widened blocks + BLAS
@pytest.mark.parametrize("n, k", [(1, 1), (129, 64), (1000, 97), (37, 4098)])
def test_linear_equals_float64(monkeypatch, t, n, k):
    monkeypatch.setattr(linear, "BLOCK_BYTES", 4 * k * 25)  # several blocks even at small sizes
    w = bf16((n, k), seed=n)
    x = np.random.default_rng(t).standard_normal((t, k)).astype(np.float32)
    got = linear.linear_bf16(x, w)
    want = x.astype(np.float64) @ w.astype(np.float64).T
    scale = np.abs(x).astype(np.float64) @ np.abs(w.astype(np.float64)).T
    assert got.dtype == np.float32 and got.shape == (t, n)
    assert (np.abs(got - want) <= 1e-6 * scale + 1e-30).all()


def test_non_finite_weights_give_non_finite_outputs():
    """The fast-math flags keep NaN/Inf semantics: the CPU decoder's non-finite check relies on it."""
    w = bf16((4, 32))
    w.view(np.uint16)[1, 5] = 0x7FC0  # NaN
    w.view(np.uint16)[2, 7] = 0x7F80  # +Inf
    x = np.ones((1, 32), np.float32)
    y = linear.linear_bf16(x, w)
    assert np.isnan(y[0, 1]) and np.isinf(y[0, 2]) and np.isfinite(y[0, [0, 3]]).all()


def test_ops_linear_takes_the_fast_path_and_keeps_shapes_and_bias(monkeypatch):
    monkeypatch.setattr(linear, "COMPILED_MIN_VALUES", 1000)
    w, b = bf16((50, 32)), bf16((50,), seed=1)
    x = np.random.default_rng(2).standard_normal((2, 3, 32)).astype(np.float32)
    got = ops_linear(x, w, b)
    want = x.astype(np.float64) @ w.astype(np.float64).T + b.astype(np.float64)
    assert got.shape == (2, 3, 50) and np.allclose(got, want, rtol=1e-5, atol=1e-5)
    assert linear.fast_path(x.reshape(-1, 32), w) and not linear.fast_path(
        x.reshape(-1, 32).astype(np.float64), w
    )
    np.testing.assert_allclose(
        ops_linear(x.astype(np.float64), w, b), want, rtol=1e-12
    )  # the float64 reference
