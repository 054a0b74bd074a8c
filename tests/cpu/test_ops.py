"""Each NumPy op against a direct, loop-level formulation on fresh random inputs."""

import math

import numpy as np

from voxtral.cpu import ops


def test_attention_vs_loops():
    rng = np.random.default_rng()
    t, s, h, hkv, dh, window = 5, 23, 6, 2, 8, 7
    q = rng.standard_normal((t, h, dh))
    k = rng.standard_normal((s, hkv, dh))
    v = rng.standard_normal((s, hkv, dh))
    k_pos = rng.permutation(s)  # ring order: slots hold positions in any order
    q_pos = np.array([0, 3, 9, 15, 22])
    out = ops.attention(q, k, v, q_pos, k_pos, window)
    for i in range(t):
        for head in range(h):
            kv = head // (h // hkv)
            keys = [j for j in range(s) if q_pos[i] - window < k_pos[j] <= q_pos[i]]
            scores = np.array([q[i, head] @ k[j, kv] / math.sqrt(dh) for j in keys])
            p = np.exp(scores - scores.max())
            p /= p.sum()
            ref = sum(pj * v[j, kv] for pj, j in zip(p, keys, strict=True))
            np.testing.assert_allclose(out[i, head], ref, rtol=1e-12, atol=1e-12)


def test_rope_rotates_interleaved_pairs():
    rng = np.random.default_rng()
    x = rng.standard_normal((3, 2, 6))
    pos = np.array([0, 1, 1000])
    cos, sin = ops.rope_angles(pos, 6, 1e6, np.float64)
    out = ops.rope(x, cos, sin)
    for t in range(3):
        for i in range(3):
            ang = pos[t] * 1e6 ** (-2 * i / 6)
            c, s = math.cos(ang), math.sin(ang)
            a, b = x[t, :, 2 * i], x[t, :, 2 * i + 1]
            np.testing.assert_allclose(out[t, :, 2 * i], a * c - b * s, atol=1e-12)
            np.testing.assert_allclose(out[t, :, 2 * i + 1], a * s + b * c, atol=1e-12)
    np.testing.assert_allclose(out[0], x[0])


def test_rms_norm_gelu_silu_linear_vs_scalar_math():
    rng = np.random.default_rng()
    x = rng.standard_normal((4, 37))
    g = rng.standard_normal(37)
    ref = np.array(
        [[x[i, j] / math.sqrt(np.mean(x[i] ** 2) + 1e-5) * g[j] for j in range(37)] for i in range(4)]
    )
    np.testing.assert_allclose(ops.rms_norm(x, g, 1e-5), ref, rtol=1e-12)
    flat = x.ravel()
    np.testing.assert_allclose(
        ops.gelu(flat), [0.5 * a * (1 + math.erf(a / math.sqrt(2))) for a in flat], rtol=1e-12
    )
    np.testing.assert_allclose(ops.silu(flat), [a / (1 + math.exp(-a)) for a in flat], rtol=1e-12)
    w = rng.standard_normal((2500, 37))  # more rows than one LINEAR_ROW_BLOCK
    b = rng.standard_normal(2500)
    np.testing.assert_allclose(ops.linear(x, w, b), x @ w.T + b, rtol=1e-12)


def test_time_embedding():
    emb = ops.time_embedding(6, 8, np.float64)
    inv = [10000 ** (-k / 4) for k in range(4)]
    np.testing.assert_allclose(emb, [math.cos(6 * f) for f in inv] + [math.sin(6 * f) for f in inv])
