"""Each CUDA kernel against its NumPy twin in voxtral.cpu.ops, on fresh random inputs at awkward sizes.

References run in float64 on the BF16-widened inputs. Outputs are poisoned (NaN) before each launch and
must come back fully written. Tolerances: bf16 outputs rel L2 < 1e-2 and max error < 2e-2·max|ref|
(bf16 keeps 8 bits); f32 outputs rel L2 < 1e-5; argmax and index bookkeeping exact.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from voxtral.cpu import ops as ref
from voxtral.gpu import ops

cp = pytest.importorskip("cupy", reason="CuPy is not importable")

BF16_NAN = 0x7FC0


@pytest.fixture
def rng():
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"seed {seed}")  # shown by pytest when the test fails
    return np.random.default_rng(seed)


def to_bf16(x: np.ndarray):
    """(device uint16 bit patterns, the same values widened to float64 on the host)."""
    bits = np.asarray(x, dtype=np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)
    return cp.asarray(bits), widen(bits)


def widen(bits) -> np.ndarray:
    bits = cp.asnumpy(bits) if isinstance(bits, cp.ndarray) else bits
    return np.asarray(bits, dtype=np.uint16).view(ml_dtypes.bfloat16).astype(np.float64)


def rel_l2(x: np.ndarray, r: np.ndarray) -> float:
    return float(np.linalg.norm(x - r) / max(np.linalg.norm(r), 1e-30))


def assert_bf16_close(out_bits, expected: np.ndarray, tol: float = 1e-2) -> None:
    out = widen(out_bits)
    assert out.shape == expected.shape
    assert np.isfinite(out).all(), f"{np.size(out) - np.isfinite(out).sum()} elements unwritten or not finite"
    assert rel_l2(out, expected) < tol, f"rel L2 {rel_l2(out, expected):.2e} ≥ {tol}"
    err = np.abs(out - expected).max()
    assert err <= 2e-2 * np.abs(expected).max(), (
        f"max error {err:.3e} vs max |ref| {np.abs(expected).max():.3e}"
    )


def poison_bf16(shape):
    return cp.full(shape, BF16_NAN, dtype=np.uint16)


@pytest.mark.parametrize("t,d,with_bias", [(1, 3072, False), (5, 37, True), (3, 1283, True), (7, 1280, False),
                                           (2, 2, True), (3, 4100, True)])  # fmt: skip
def test_rms_norm_vs_numpy(rng, t, d, with_bias):
    x = rng.standard_normal((t, d)).astype(np.float32) * 3
    w = rng.standard_normal(d).astype(np.float32)
    bias = rng.standard_normal(d).astype(np.float32) if with_bias else None
    x_dev = cp.asarray(x)
    out = poison_bf16((t, d))
    ops.rms_norm(x_dev, cp.asarray(w), 1e-5, bias=None if bias is None else cp.asarray(bias), out=out)
    x_new = x + bias if with_bias else x
    np.testing.assert_array_equal(cp.asnumpy(x_dev), x_new)  # bias folded into x exactly in f32
    assert_bf16_close(out, ref.rms_norm(x_new.astype(np.float64), w, 1e-5))


@pytest.mark.parametrize("t,h,hkv,dh,r,b,with_bias,theta", [
    (1, 32, 8, 128, 9, 2, False, 1e6), (5, 3, 1, 64, 7, 3, True, 1e6), (4, 2, 2, 6, 5, 2, True, 1e4),
    (6, 32, 32, 64, 11, 1, True, 1e6)])  # fmt: skip
def test_rope_qkv_vs_numpy(rng, t, h, hkv, dh, r, b, with_bias, theta):
    width = (h + 2 * hkv) * dh
    qkv = rng.standard_normal((t, width)).astype(np.float32)
    bias = rng.standard_normal(width).astype(np.float32) if with_bias else None
    stream = rng.integers(0, b, t).astype(np.int32)
    slot = np.empty(t, dtype=np.int64)  # distinct (stream, slot) per position, as within one call
    for s in range(b):
        idx = np.flatnonzero(stream == s)
        slot[idx] = rng.choice(r, size=len(idx), replace=False)
    pos = (slot + r * rng.integers(0, 1_000_000 // r, t)).astype(np.int32)  # positions up to 10^6
    pos[0] = slot[0]  # and one small one
    k_cache, v_cache = poison_bf16((b, r, hkv, dh)), poison_bf16((b, r, hkv, dh))
    bias_dev = None if bias is None else cp.asarray(bias)
    q = poison_bf16((t, h, dh))
    ops.rope_qkv(
        cp.asarray(qkv), cp.asarray(pos), cp.asarray(stream), k_cache, v_cache, theta, bias=bias_dev, out=q
    )
    x = qkv.astype(np.float64) + (bias if with_bias else 0)
    cos, sin = ref.rope_angles(pos, dh, theta, dtype=np.float64)
    q_ref = ref.rope(x[:, : h * dh].reshape(t, h, dh), cos, sin)
    k_ref = ref.rope(x[:, h * dh : (h + hkv) * dh].reshape(t, hkv, dh), cos, sin)
    v_ref = x[:, (h + hkv) * dh :].reshape(t, hkv, dh)
    assert_bf16_close(q, q_ref)
    kc, vc = cp.asnumpy(k_cache), cp.asnumpy(v_cache)
    assert_bf16_close(kc[stream, pos % r], k_ref)
    assert_bf16_close(vc[stream, pos % r], v_ref)
    untouched = np.ones((b, r), dtype=bool)
    untouched[stream, pos % r] = False
    assert (kc[untouched] == BF16_NAN).all() and (vc[untouched] == BF16_NAN).all(), "wrote outside its slots"


def make_ring(rng, b, r, hkv, dh, spans):
    """K/V ring caches poisoned with NaN except positions [lo, hi] of each stream in `spans`.

    Returns the device caches and their float64 host copies (NaN where unwritten).
    """
    k = np.full((b, r, hkv, dh), np.nan, dtype=np.float32)
    v = np.full((b, r, hkv, dh), np.nan, dtype=np.float32)
    for s, (lo, hi) in spans.items():
        assert hi - lo + 1 <= r
        for j in range(lo, hi + 1):
            k[s, j % r] = rng.standard_normal((hkv, dh))
            v[s, j % r] = rng.standard_normal((hkv, dh))
    (k_dev, k64), (v_dev, v64) = to_bf16(k), to_bf16(v)
    return k_dev, v_dev, k64, v64


def attention_ref(q64, k64, v64, s, q_pos, window):
    """Reference for queries q64 [T, H, Dh] of stream s at positions q_pos, keys read from the ring."""
    r = k64.shape[1]
    lo, hi = max(0, int(q_pos.min()) - window + 1), int(q_pos.max())
    js = np.arange(lo, hi + 1)
    return ref.attention(q64, k64[s, js % r], v64[s, js % r], q_pos, js, window)


def split_case(rng, h, hkv, dh, window, r, queries):
    """Ring caches holding every key the (stream, position) queries see, and their pos/stream arrays."""
    streams = sorted({s for s, _ in queries})
    spans = {}
    for s in streams:
        ps = [p for s2, p in queries if s2 == s]
        spans[s] = (max(0, min(ps) - window + 1), max(ps))
    k_dev, v_dev, k64, v64 = make_ring(rng, max(streams) + 1, r, hkv, dh, spans)
    stream = np.array([s for s, _ in queries], dtype=np.int32)
    pos = np.array([p for _, p in queries], dtype=np.int32)
    return k_dev, v_dev, k64, v64, pos, stream


def split_ref(q64, k64, v64, pos, stream, window):
    return np.concatenate(
        [attention_ref(q64[i : i + 1], k64, v64, stream[i], pos[i : i + 1], window) for i in range(len(pos))]
    )


def split_counters(ws, splits, group, dh) -> np.ndarray:
    return cp.asnumpy(ws[..., splits * group * (dh + 2)]).view(np.int32)


# splits None = the launcher's choice (attention_splits); windows of 1 … 8192 keys, ring wrap-around,
# one split looping over a long window (splits=1), odd split counts, several queries of one stream.
@pytest.mark.parametrize("h,hkv,dh,window,r,queries,splits", [
    (32, 8, 128, 300, 310, [(0, 0), (1, 5), (2, 299), (3, 1234), (3, 1235), (4, 777)], None),
    (32, 8, 128, 8192, 8192, [(0, 4999), (1, 499), (2, 12_000)], None),
    (3, 3, 64, 37, 40, [(0, 36), (1, 100), (2, 1), (0, 37)], None),
    (16, 2, 128, 200, 200, [(0, 100_003), (1, 64), (1, 63)], 7),
    (16, 2, 128, 2000, 2048, [(0, 1999), (1, 3000), (1, 2990)], 1),
    (4, 2, 64, 8192, 8200, [(0, 5000), (1, 8191), (2, 9000)], None),
    (4, 4, 64, 8192, 8200, [(0, 8190)], 64),
    (8, 1, 64, 65, 70, [(0, 64), (0, 65), (0, 66), (0, 67)], 3)])  # fmt: skip
def test_attention_split_vs_numpy(rng, h, hkv, dh, window, r, queries, splits):
    k_dev, v_dev, k64, v64, pos, stream = split_case(rng, h, hkv, dh, window, r, queries)
    t, group = len(queries), h // hkv
    ws = ops.attention_workspace(t, h, hkv, dh, splits)
    s = ops.attention_splits(t, hkv) if splits is None else splits
    for _ in range(2):  # the second launch, on fresh queries, checks that the first left the counters at 0
        q_dev, q64 = to_bf16(rng.standard_normal((t, h, dh)) * 2)
        out = poison_bf16((t, h, dh))
        pos_dev, stream_dev = cp.asarray(pos), cp.asarray(stream)
        ops.attention(
            q_dev, k_dev, v_dev, window, pos=pos_dev, stream=stream_dev, out=out, workspace=ws, splits=splits
        )
        assert_bf16_close(out, split_ref(q64, k64, v64, pos, stream, window))
        assert (split_counters(ws, s, group, dh) == 0).all(), "attention_split left a counter set"


def test_attention_split_graph_replay(rng):
    """One captured launch replayed at new positions written to device memory (the decoder step)."""
    h, hkv, dh, window, r = 32, 8, 128, 300, 1024
    steps = [[1500, 700], [2000, 1000], [1300, 5], [1301, 0]]  # per replay: positions of streams 0, 1
    queries = [(s, p) for step in steps for s, p in enumerate(step)]
    k_dev, v_dev, k64, v64, _, _ = split_case(rng, h, hkv, dh, window, r, queries)
    q_dev, q64 = to_bf16(rng.standard_normal((2, h, dh)) * 2)
    stream = np.array([0, 1], dtype=np.int32)
    pos_dev, stream_dev = cp.asarray(np.array(steps[0], np.int32)), cp.asarray(stream)
    out, ws = poison_bf16((2, h, dh)), ops.attention_workspace(2, h, hkv, dh)
    cp.cuda.Device().synchronize()
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        launch = lambda: ops.attention(  # noqa: E731
            q_dev, k_dev, v_dev, window, pos=pos_dev, stream=stream_dev, out=out, workspace=ws
        )
        launch()  # compiled and loaded outside the capture
        s.begin_capture()
        launch()
        graph = s.end_capture()
        for step in steps:
            pos = np.array(step, np.int32)
            pos_dev.set(pos, stream=s)
            out.fill(BF16_NAN)
            graph.launch(s)
            s.synchronize()
            assert_bf16_close(out, split_ref(q64, k64, v64, pos, stream, window))


@pytest.mark.parametrize("t,p0,window,h,hkv,dh,r,rows", [
    (200, 1000, 750, 4, 4, 64, 1000, 64), (77, 0, 37, 3, 3, 64, 128, 64), (1, 5, 750, 2, 2, 64, 751, 64),
    (130, 3, 37, 4, 2, 128, 200, 64), (300, 40, 750, 2, 2, 64, 1100, 128), (65, 7000, 99, 2, 1, 128, 170, 64),
    (129, 2000, 750, 3, 3, 64, 900, 128), (77, 0, 37, 3, 3, 64, 128, 128), (1, 5, 750, 2, 2, 64, 751, 128),
    (200, 1000, 750, 4, 2, 64, 1000, 128), (257, 260, 20, 2, 2, 64, 300, 128)])  # fmt: skip
def test_attention_tiled_vs_numpy(rng, t, p0, window, h, hkv, dh, r, rows):
    b, s = 2, 1
    k_dev, v_dev, k64, v64 = make_ring(rng, b, r, hkv, dh, {s: (max(0, p0 - window + 1), p0 + t - 1)})
    q_dev, q64 = to_bf16(rng.standard_normal((t, h, dh)) * 2)
    out = poison_bf16((t, h, dh))
    ops.attention(q_dev, k_dev, v_dev, window, p0=p0, b=s, tiled=True, out=out, block_rows=rows)
    assert_bf16_close(out, attention_ref(q64, k64, v64, s, p0 + np.arange(t), window))


@pytest.mark.parametrize("t,n,with_bias", [(1, 1280, True), (3, 37, True), (5, 1283, False), (2, 4, False)])
def test_bias_gelu_vs_numpy(rng, t, n, with_bias):
    x = (rng.standard_normal((t, n)) * 3).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    out = poison_bf16((t, n))
    ops.bias_gelu(cp.asarray(x), None if bias is None else cp.asarray(bias), out=out)
    assert_bf16_close(out, ref.gelu(x.astype(np.float64) + (bias if with_bias else 0)))


@pytest.mark.parametrize("t,f", [(1, 9216), (3, 37), (4, 1283), (7, 4), (2, 1)])
def test_silu_mul_vs_numpy(rng, t, f):
    gu = (rng.standard_normal((t, 2 * f)) * 3).astype(np.float32)
    out = poison_bf16((t, f))
    ops.silu_mul(cp.asarray(gu), out=out)
    g, u = gu[:, :f].astype(np.float64), gu[:, f:].astype(np.float64)
    assert_bf16_close(out, ref.silu(g) * u)


@pytest.mark.parametrize("t_in,c,k,stride,pad,time_axis", [
    (13, 5, 3, 1, 2, 1), (9, 7, 3, 2, 1, 0), (10, 1280, 3, 2, 1, 0), (1, 3, 3, 1, 2, 1), (8, 128, 3, 1, 2, 1),
    (5, 3, 5, 3, 2, 0)])  # fmt: skip
def test_im2col_causal_vs_numpy(rng, t_in, c, k, stride, pad, time_axis):
    x = rng.standard_normal((t_in, c)).astype(np.float32)  # [T, C]
    x_in = x if time_axis == 0 else np.ascontiguousarray(x.T)
    t_out = -(-t_in // stride)
    out = poison_bf16((t_out, c * k))
    ops.im2col_causal(cp.asarray(x_in), k, stride, pad, time_axis=time_axis, out=out)
    padded = np.zeros((pad + t_in + k + stride, c))
    padded[pad : pad + t_in] = x
    idx = np.arange(t_out)[:, None] * stride + np.arange(k)[None, :]  # [T_out, K]
    expected = padded[idx].transpose(0, 2, 1).reshape(t_out, c * k)  # [T_out, C·K], element c·K + k
    got = widen(out)
    np.testing.assert_array_equal(got, widen(to_bf16(expected)[0]))  # exact: a gather + one rounding
    # The flattening matches a conv weight [O, C, K] reshaped to [O, C·K]:
    w = rng.standard_normal((4, c, k))
    conv = np.array([[sum(w[o, ci, kk] * padded[ti * stride + kk, ci] for ci in range(c) for kk in range(k))
                      for o in range(4)] for ti in range(min(t_out, 3))])  # fmt: skip
    np.testing.assert_allclose(expected[: len(conv)] @ w.reshape(4, -1).T, conv, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d", [3072, 37, 4])
def test_embed_vs_numpy(rng, d):
    v, b, ra, t = 50, 3, 5, 4
    e_dev, e64 = to_bf16(rng.standard_normal((v, d)))
    audio = rng.standard_normal((b, ra, d)).astype(np.float32)
    tokens = rng.integers(0, v, t).astype(np.int32)
    pos = rng.integers(0, 1000, t).astype(np.int32)
    stream = rng.integers(0, b, t).astype(np.int32)
    out = cp.full((t, d), np.nan, dtype=np.float32)
    ops.embed(cp.asarray(tokens), e_dev, cp.asarray(audio), cp.asarray(pos), cp.asarray(stream), out=out)
    expected = audio[stream, pos % ra].astype(np.float64) + e64[tokens]
    np.testing.assert_allclose(cp.asnumpy(out), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("v,blocks", [(131072, None), (131072, 1), (1001, None), (1001, 3), (1, None), (1, 5),
                                      (40000, 32)])  # fmt: skip
def test_argmax_advance_vs_numpy(rng, v, blocks):
    b, k = 4, 7
    logits = rng.standard_normal((b, v)).astype(np.float32)
    if v > 10:
        logits[1, [v // 3, 5, v - 1]] = 10.0  # a tie: the lowest index wins
        logits[2, [3, v // 2]] = np.nan  # numpy: the first NaN wins
        logits[3] = -np.inf
    pos = np.array([0, 6, 13, 100], dtype=np.int32)
    tokens, pos_dev = cp.full(b, -1, dtype=np.int32), cp.asarray(pos)
    history = cp.full((b, k), -1, dtype=np.int32)
    ws = ops.argmax_workspace(b, blocks or ops.argmax_blocks(v))
    expected = np.argmax(logits, axis=1)
    hist = np.full((b, k), -1)
    for step in range(2):  # the second launch checks that the first left the workspace ready
        tokens.fill(-1)
        ops.argmax_advance(cp.asarray(logits), tokens, pos_dev, history, blocks=blocks, workspace=ws)
        np.testing.assert_array_equal(cp.asnumpy(tokens), expected)
        np.testing.assert_array_equal(cp.asnumpy(pos_dev), pos + step + 1)
        hist[np.arange(b), (pos + step) % k] = expected
        np.testing.assert_array_equal(cp.asnumpy(history), hist)
        assert (cp.asnumpy(ws)[:, -1] == 0).all(), "argmax left its block counter set"
