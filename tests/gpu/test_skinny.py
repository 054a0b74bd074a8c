"""skinny_gemm (cuda/skinny.cu) against voxtral.cpu.ops (linear, silu) in float64, at awkward sizes.

Rows 1 … 64 (every m-tile instance, rows past M unused), N odd and not a multiple of a block's 128
rows, K a multiple of 8 but not of the 64-column stage, and shapes whose grid splits K over clusters of
2–8 blocks. Outputs are poisoned first and must come back fully written; "add" keeps a random residual.
Tolerances as tests/gpu/test_gemv.py (bf16 x and w widened exactly for the reference).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_gemv import BF16_NAN, assert_close, bf16, widen

from voxtral.cpu import ops as ref
from voxtral.gpu import skinny
from voxtral.gpu.skinny import skinny_gemm

cp = pytest.importorskip("cupy", reason="CuPy is not importable")
if cp.cuda.runtime.getDeviceCount() and int(cp.cuda.Device().compute_capability) != 90:
    pytest.skip("skinny_gemm runs on compute capability 9.0 (Hopper) only", allow_module_level=True)

# (M, N, K): M at each m-tile bucket's edges; N = 1, 37, 1000 (8 boxes → split-K over clusters), 3072;
# K = 8, 72 (one partial stage), 3080 (not a multiple of 64), 4096 and 9216 (the decoder's wo and w2).
SIZES = [(1, 1, 8), (9, 37, 72), (16, 1000, 3080), (17, 1000, 4096), (33, 3072, 4096), (64, 1000, 9216),
         (64, 37, 3072), (48, 130, 256)]  # fmt: skip


@pytest.fixture
def rng():
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"seed {seed}")
    return np.random.default_rng(seed)


def inputs(rng, m: int, n: int, k: int):
    x_dev, x_ref = bf16(rng.standard_normal((m, k)) * 3)
    w_dev, w_ref = bf16(rng.standard_normal((n, k)) / np.sqrt(k))
    return x_dev, x_ref, w_dev, w_ref


@pytest.mark.parametrize("m,n,k", SIZES)
def test_skinny_store_vs_numpy(rng, m, n, k):
    x, x_ref, w, w_ref = inputs(rng, m, n, k)
    out = cp.full((m, n), np.nan, np.float32)
    skinny_gemm(x, w, out)
    assert_close(cp.asnumpy(out).astype(np.float64), ref.linear(x_ref, w_ref), 5e-3, 1e-2)


@pytest.mark.parametrize("m,n,k", SIZES)
def test_skinny_add_vs_numpy(rng, m, n, k):
    x, x_ref, w, w_ref = inputs(rng, m, n, k)
    h = rng.standard_normal((m, n)).astype(np.float32)
    out = cp.asarray(h)
    skinny_gemm(x, w, out, epilogue="add", pdl=True)
    assert_close(cp.asnumpy(out).astype(np.float64), h + ref.linear(x_ref, w_ref), 5e-3, 1e-2)


@pytest.mark.parametrize("m,f,k", [(1, 1, 8), (9, 37, 72), (16, 500, 3080), (64, 700, 3072), (40, 64, 9216)])
def test_skinny_swiglu_vs_numpy(rng, m, f, k):
    x, x_ref, w, w_ref = inputs(rng, m, 2 * f, k)
    out = cp.full((m, f), BF16_NAN, np.uint16)
    skinny_gemm(x, w, out, epilogue="swiglu")
    y = ref.linear(x_ref, w_ref)
    expected = ref.silu(y[:, :f]) * y[:, f:]
    assert_close(widen(out), expected, 1e-2, 2e-2)


def test_skinny_is_deterministic_and_replays_in_a_graph(rng):
    """Split-K sums meet in rank order: two launches give the same bits, and so does a graph replay of a
    PDL launch between two other kernels."""
    x, _, w, _ = inputs(rng, 64, 1000, 9216)
    assert skinny.available(cp.cuda.Device().id)
    assert skinny.plan(1000, 9216, "store", 132, True)[1] == 8  # this shape splits K over clusters of 8
    a = skinny_gemm(x, w, cp.empty((64, 1000), np.float32))
    b = skinny_gemm(x, w, cp.empty((64, 1000), np.float32))
    assert cp.array_equal(a.view(np.uint32), b.view(np.uint32))
    stream = cp.cuda.Stream(non_blocking=True)
    c = cp.zeros((64, 1000), np.float32)
    with stream:
        stream.begin_capture()
        skinny_gemm(x, w, c, epilogue="add", pdl=True)
        skinny_gemm(x, w, c, epilogue="add", pdl=True)
        graph = stream.end_capture()
        graph.launch(stream)
    stream.synchronize()
    assert cp.array_equal((a + a).view(np.uint32), c.view(np.uint32))


@pytest.mark.parametrize("bad", ["rows", "k", "k0", "dtype", "out"])
def test_skinny_rejects_bad_shapes(bad):
    x = cp.zeros((65 if bad == "rows" else 8, {"k": 12, "k0": 0}.get(bad, 16)), np.uint16)
    w = cp.zeros((4, x.shape[1]), np.float32 if bad == "dtype" else np.uint16)
    out = cp.zeros((x.shape[0], 5 if bad == "out" else 4), np.float32)
    with pytest.raises(AssertionError):
        skinny_gemm(x, w, out)


def test_skinny_rejects_a_shape_over_the_shared_memory():
    x, w = cp.zeros((8, 64), np.uint16), cp.zeros((48, 64), np.uint16)
    with pytest.raises(AssertionError, match="shared memory"):
        skinny_gemm(x, w, cp.zeros((8, 48), np.float32), shape=(240, 1, 8))  # 305 KB of stages
