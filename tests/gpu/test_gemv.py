"""gemv (cuda/gemv.cu) against voxtral.cpu.ops (rms_norm, linear, silu) in float64, at awkward sizes.

Fresh random inputs per test, BF16 weights widened exactly for the reference. Outputs are poisoned
(NaN) first and must come back fully written (for "add", the residual is random and the check is
elementwise). Tolerances: rel L2 < 5e-3 (f32 out) or < 1e-2 (bf16 out), and every element within
1e-2 (f32) or 2e-2 (bf16) of max |ref|.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from voxtral.cpu import ops as ref
from voxtral.gpu.gemv import Config, gemv

cp = pytest.importorskip("cupy", reason="CuPy is not importable")

EPS = 1e-5
BF16_NAN = 0x7FC0
# (B, N, K): N = 1, odd, not a multiple of the 8-row tile; K = 64, 3072 + 8, 4096, and K % 8 ≠ 0 (the
# scalar fallback); B = 1, 3 and the maximum 8.
SIZES = [(1, 1, 64), (3, 37, 3080), (8, 1000, 4096), (2, 37, 45), (1, 1000, 3072), (5, 8, 4096)]


@pytest.fixture
def rng():
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"seed {seed}")  # shown by pytest when the test fails
    return np.random.default_rng(seed)


def bf16(a: np.ndarray):
    """(device uint16 bit patterns, the same values widened to float64)."""
    bits = np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)
    return cp.asarray(bits), widen(bits)


def widen(bits) -> np.ndarray:
    bits = cp.asnumpy(bits) if isinstance(bits, cp.ndarray) else bits
    return np.asarray(bits, np.uint16).view(ml_dtypes.bfloat16).astype(np.float64)


def rel_l2(x: np.ndarray, r: np.ndarray) -> float:
    return float(np.linalg.norm(x - r) / max(np.linalg.norm(r), 1e-30))


def assert_close(out: np.ndarray, expected: np.ndarray, tol: float, elem_tol: float) -> None:
    assert out.shape == expected.shape
    assert np.isfinite(out).all(), f"{out.size - np.isfinite(out).sum()} elements unwritten or not finite"
    assert rel_l2(out, expected) < tol, f"rel L2 {rel_l2(out, expected):.2e} ≥ {tol}"
    err = np.abs(out - expected).max()
    assert err <= elem_tol * np.abs(expected).max(), (
        f"max error {err:.3e}, max |ref| {np.abs(expected).max():.3e}"
    )


def make_inputs(rng, b: int, n: int, k: int, x_bf16: bool, norm: bool):
    """x (device, reference), w (device, reference), g (device, reference) or (None, None)."""
    x = rng.standard_normal((b, k)).astype(np.float32) * 3
    if x_bf16:
        x_dev, x_ref = bf16(x)
    else:
        x_dev, x_ref = cp.asarray(x), x.astype(np.float64)
    w_dev, w_ref = bf16(rng.standard_normal((n, k)) / np.sqrt(k))
    g = rng.standard_normal(k).astype(np.float32) if norm else None
    return x_dev, x_ref, w_dev, w_ref, (cp.asarray(g) if norm else None), g


def reference_y(x_ref, w_ref, g) -> np.ndarray:
    xn = ref.rms_norm(x_ref, g.astype(np.float64), EPS) if g is not None else x_ref
    return ref.linear(xn, w_ref)


@pytest.mark.parametrize("b,n,k", SIZES)
@pytest.mark.parametrize("x_bf16,norm", [(False, False), (True, False), (False, True)])
def test_gemv_store_vs_numpy(rng, b, n, k, x_bf16, norm):
    x, x_ref, w, w_ref, g, g_ref = make_inputs(rng, b, n, k, x_bf16, norm)
    out = cp.full((b, n), np.nan, np.float32)
    gemv(x, w, out, norm_weight=g, eps=EPS)
    assert_close(cp.asnumpy(out).astype(np.float64), reference_y(x_ref, w_ref, g_ref), 5e-3, 1e-2)


@pytest.mark.parametrize("b,n,k", SIZES)
@pytest.mark.parametrize("x_bf16,norm", [(True, False), (False, True)])
def test_gemv_add_vs_numpy(rng, b, n, k, x_bf16, norm):
    x, x_ref, w, w_ref, g, g_ref = make_inputs(rng, b, n, k, x_bf16, norm)
    h = rng.standard_normal((b, n)).astype(np.float32)
    out = cp.asarray(h)
    gemv(x, w, out, norm_weight=g, eps=EPS, epilogue="add")
    y = reference_y(x_ref, w_ref, g_ref)
    got = cp.asnumpy(out).astype(np.float64)
    assert_close(got - h, y, 5e-3, 1e-2)  # every y landed (h alone would miss it by |y|)


@pytest.mark.parametrize("b,f,k", [(1, 1, 64), (3, 37, 3080), (8, 1000, 3072), (2, 9, 45), (4, 4, 4096)])
@pytest.mark.parametrize(
    "x_bf16,norm,out_bf16",
    [(False, True, True), (False, True, False), (True, False, True), (False, False, False)],
)
def test_gemv_swiglu_vs_numpy(rng, b, f, k, x_bf16, norm, out_bf16):
    x, x_ref, w, w_ref, g, g_ref = make_inputs(rng, b, 2 * f, k, x_bf16, norm)
    y = reference_y(x_ref, w_ref, g_ref)
    expected = ref.silu(y[:, :f]) * y[:, f:]
    if out_bf16:
        out = cp.full((b, f), BF16_NAN, np.uint16)
        gemv(x, w, out, norm_weight=g, eps=EPS, epilogue="swiglu")
        assert_close(widen(out), expected, 1e-2, 2e-2)
    else:
        out = cp.full((b, f), np.nan, np.float32)
        gemv(x, w, out, norm_weight=g, eps=EPS, epilogue="swiglu")
        assert_close(cp.asnumpy(out).astype(np.float64), expected, 5e-3, 1e-2)


# (B, N, K): 6000 rows = 750 tiles, more than 4 per block on any GPU of ≤ 187 SMs, so slots are reused.
SLOT_SIZES = [(3, 6000, 64), (8, 37, 3080), (1, 1000, 45)]
BARRIER = Config(16, 8, 256, 0)  # the block-barrier combine


@pytest.mark.parametrize("b,n,k", SLOT_SIZES)
@pytest.mark.parametrize("epilogue,x_bf16,norm", [("store", False, False), ("store", True, False),
    ("store", False, True), ("add", True, False), ("add", False, True), ("add", False, False)])  # fmt: skip
def test_gemv_slots_vs_numpy(rng, b, n, k, epilogue, x_bf16, norm):
    """Many tiles per block: partial-sum slots are reused (and counted) correctly."""
    x, x_ref, w, w_ref, g, g_ref = make_inputs(rng, b, n, k, x_bf16, norm)
    h = rng.standard_normal((b, n)).astype(np.float32) if epilogue == "add" else np.zeros((b, n), np.float32)
    out = cp.asarray(h) if epilogue == "add" else cp.full((b, n), np.nan, np.float32)
    gemv(x, w, out, norm_weight=g, eps=EPS, epilogue=epilogue)
    assert_close(cp.asnumpy(out).astype(np.float64) - h, reference_y(x_ref, w_ref, g_ref), 5e-3, 1e-2)


@pytest.mark.parametrize("b,f,k", [(3, 3000, 64), (8, 37, 3080)])
@pytest.mark.parametrize("x_bf16,norm", [(False, True), (True, False), (False, False)])
@pytest.mark.parametrize("out_bf16", [True, False])
def test_gemv_slots_swiglu_vs_numpy(rng, b, f, k, x_bf16, norm, out_bf16):
    x, x_ref, w, w_ref, g, g_ref = make_inputs(rng, b, 2 * f, k, x_bf16, norm)
    out = cp.full((b, f), BF16_NAN, np.uint16) if out_bf16 else cp.full((b, f), np.nan, np.float32)
    gemv(x, w, out, norm_weight=g, eps=EPS, epilogue="swiglu")
    y = reference_y(x_ref, w_ref, g_ref)
    got = widen(out) if out_bf16 else cp.asnumpy(out).astype(np.float64)
    assert_close(got, ref.silu(y[:, :f]) * y[:, f:], 1e-2 if out_bf16 else 5e-3, 2e-2 if out_bf16 else 1e-2)


CONFIGS = [BARRIER, Config(16, 8, 256, 1), Config(16, 4, 256, 1), Config(8, 8, 256, 1), Config(8, 8, 256, 0),
           Config(8, 4, 0, 0), Config(4, 2, 128, 1)]  # fmt: skip


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_gemv_configs_vs_numpy(rng, config):
    """Other kernel shapes (the timing sweep's) compute the same function, with slots reused."""
    b, f, k = 3, 3000, 200
    x, x_ref, w, w_ref, g, g_ref = make_inputs(rng, b, 2 * f, k, False, True)
    out = cp.full((b, f), BF16_NAN, np.uint16)
    gemv(x, w, out, norm_weight=g, eps=EPS, epilogue="swiglu", config=config)
    y = reference_y(x_ref, w_ref, g_ref)
    assert_close(widen(out), ref.silu(y[:, :f]) * y[:, f:], 1e-2, 2e-2)


@pytest.mark.parametrize("config", [Config(), BARRIER], ids=str)
def test_gemv_prefetch_next(rng, config):
    """Warming the next weights in L2 changes nothing in the result."""
    b, n, k = 2, 1000, 3072
    x, x_ref, w, w_ref, g, g_ref = make_inputs(rng, b, n, k, False, True)
    nxt = cp.zeros((5000, 3072), np.uint16)  # 30 MB: more than the NEXT_BYTES it reads
    out = cp.full((b, n), np.nan, np.float32)
    gemv(x, w, out, norm_weight=g, eps=EPS, prefetch=nxt, config=config)
    assert_close(cp.asnumpy(out).astype(np.float64), reference_y(x_ref, w_ref, g_ref), 5e-3, 1e-2)


def test_gemv_f32_precision(rng):
    """f32 x is split into bf16 hi + lo halves: the product keeps ~16 bits of x, far better than bf16 x."""
    b, n, k = 2, 64, 3072
    x, x_ref, w, w_ref, _, _ = make_inputs(rng, b, n, k, False, False)
    out = gemv(x, w, cp.full((b, n), np.nan, np.float32))
    assert rel_l2(cp.asnumpy(out).astype(np.float64), ref.linear(x_ref, w_ref)) < 1e-4


def test_gemv_in_cuda_graph(rng):
    """The launch allocates nothing and syncs nothing: it captures and replays in a CUDA graph."""
    b, n, k = 2, 300, 1024
    x, x_ref, w, w_ref, g, g_ref = make_inputs(rng, b, n, k, False, True)
    out = cp.full((b, n), np.nan, np.float32)
    gemv(x, w, out, norm_weight=g, eps=EPS)  # compile and load outside the capture
    out.fill(np.nan)
    cp.cuda.Device().synchronize()
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        gemv(x, w, out, norm_weight=g, eps=EPS)
        graph = stream.end_capture()
        graph.launch(stream)
        stream.synchronize()
    assert_close(cp.asnumpy(out).astype(np.float64), reference_y(x_ref, w_ref, g_ref), 5e-3, 1e-2)


def test_gemv_rejects_bad_shapes():
    w = cp.zeros((16, 64), np.uint16)
    with pytest.raises(AssertionError, match="rows"):
        gemv(cp.zeros((9, 64), np.float32), w, cp.zeros((9, 16), np.float32))
    with pytest.raises(AssertionError, match="RMSNorm"):
        gemv(
            cp.zeros((1, 64), np.uint16),
            w,
            cp.zeros((1, 16), np.float32),
            norm_weight=cp.ones(64, np.float32),
        )
    with pytest.raises(AssertionError, match="shape"):
        gemv(cp.zeros((1, 64), np.float32), w, cp.zeros((1, 16), np.float32), epilogue="swiglu")
