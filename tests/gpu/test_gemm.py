"""gemm()'s tuned cuBLASLt algorithms (voxtral/gpu/gemm.py): bitwise the default's result, tuned once per
shape outside a capture, replayed inside one."""

from __future__ import annotations

import numpy as np
import pytest

from voxtral.gpu import gemm as gemm_module
from voxtral.gpu.gemm import gemm
from voxtral.gpu.graphs import capture
from voxtral.gpu.launch import launch_graph

cp = pytest.importorskip("cupy", reason="CuPy is not importable")
pytestmark = pytest.mark.gpu


def bf16(rng, shape, scale=1.0):
    x = (rng.standard_normal(shape, dtype=np.float32) * scale).view(np.uint32) >> 16
    return cp.asarray(x.astype(np.uint16))


# the encoder's shapes (qkv to bf16, wo += into f32, w13 to bf16, w2 +=) at pass sizes, and an odd one
@pytest.mark.parametrize("m,n,k,out_dtype,beta", [
    (1024, 3840, 1280, np.uint16, 0.0), (512, 1280, 1280, np.float32, 1.0),
    (256, 10240, 1280, np.uint16, 0.0), (1088, 1280, 5120, np.float32, 1.0),
    (300, 1000, 640, np.float32, 0.0),
])  # fmt: skip
def test_tuned_gemm_is_bitwise_the_default(m, n, k, out_dtype, beta):
    rng = np.random.default_rng(m + n + k)
    x, w = bf16(rng, (m, k)), bf16(rng, (n, k), 0.05)
    start = cp.asarray(rng.standard_normal((m, n), dtype=np.float32)).astype(out_dtype)  # beta = 1 adds it
    if out_dtype == np.uint16:
        start = bf16(rng, (m, n))
    want = gemm(x, w, out=start.copy(), beta=beta)
    got = gemm(x, w, out=start.copy(), beta=beta, tune=True)  # tunes this shape now
    key = (m, n, k, np.dtype(out_dtype).str, beta)
    assert key in gemm_module._lt().plans
    plan = gemm_module._lt().plans[key]
    chosen = "a cuBLASLt algorithm" if plan else "the default"
    print(f"\n{m}x{n}x{k} {np.dtype(out_dtype).name} beta {beta}: {chosen}")
    assert cp.array_equal(got.view(np.uint8), want.view(np.uint8))
    again = gemm(x, w, out=start.copy(), beta=beta, tune=True)  # the kept plan, no second tuning
    assert gemm_module._lt().plans[key] is plan
    assert cp.array_equal(again.view(np.uint8), want.view(np.uint8))
    stream = cp.cuda.Stream(non_blocking=True)
    out = start.copy()

    def run():
        gemm(x, w, out=out, beta=0.0, tune=True)

    with stream:  # replayed in a graph: the same plan, the same bits
        graph = capture(stream, run, ())
        out[...] = 0
        launch_graph(graph, stream)
        stream.synchronize()
    plain = gemm(x, w, out=start.copy(), beta=0.0)
    assert cp.array_equal(out.view(np.uint8), plain.view(np.uint8))


def test_a_shape_first_seen_in_a_capture_runs_the_default():
    rng = np.random.default_rng(1)
    m, n, k = 384, 768, 512
    x, w = bf16(rng, (m, k)), bf16(rng, (n, k), 0.05)
    out = cp.zeros((m, n), np.float32)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        try:
            gemm(x, w, out=out, tune=True)  # no tuning inside a capture (it would synchronize)
        finally:
            graph = stream.end_capture()
        launch_graph(graph, stream)
        stream.synchronize()
    assert (m, n, k, np.dtype(np.float32).str, 0.0) not in gemm_module._lt().plans
    assert cp.array_equal(out, gemm(x, w))


@pytest.mark.parametrize("shape,dtype", [
    ((64, 1000), np.uint16), ((7, 9), np.float32), ((1 << 20,), np.uint16)])  # fmt: skip
def test_same_bits_finds_one_flipped_bit(shape, dtype):
    rng = np.random.default_rng(2)
    a = cp.asarray(rng.integers(0, 1 << 16, shape).astype(dtype))
    assert gemm_module._same_bits(a, a.copy())
    for where in (0, a.size // 2, a.size - 1):
        flipped = a.copy().reshape(-1)
        bits = flipped.view(np.uint16 if dtype == np.uint16 else np.uint32)
        bits[where] ^= 1  # the lowest bit of one element
        assert not gemm_module._same_bits(a, flipped.reshape(shape))
