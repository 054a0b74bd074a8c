"""NumPy operations of the model: the readable reference for every GPU kernel.

All functions work in the dtype of their float inputs (float32 for inference, float64 for
the precision check); BF16 weights are widened to that dtype where they are used.
Shapes: T positions, D model dim, H heads, Hkv kv heads, Dh head dim, F ffn hidden.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from .linear import fast_path, linear_bf16

# Rows of a weight widened from BF16 at a time in `linear`: bounds the float copy to a few MB
# (a full-size ffn weight is 9216 × 3072) so the CPU never holds a float32 model.
LINEAR_ROW_BLOCK = 1024


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """y = x · wᵀ + b with w [N, K] in any dtype (BF16 included), computed in x.dtype.

    float32 x with BF16 w: cpu/linear.py (tiles widened by a shift, all cores); other dtypes (the float64
    reference): row blocks cast by NumPy."""
    k, n = w.shape[1], w.shape[0]
    x2 = x.reshape(-1, k)
    if fast_path(x2, w):
        y = linear_bf16(x2, w).reshape(x.shape[:-1] + (n,))
    else:
        y = np.empty(x.shape[:-1] + (n,), dtype=x.dtype)  # [T, N]
        for r in range(0, n, LINEAR_ROW_BLOCK):
            block = np.asarray(w[r : r + LINEAR_ROW_BLOCK]).astype(x.dtype)  # [n_block, K]
            np.matmul(x, block.T, out=y[..., r : r + LINEAR_ROW_BLOCK])
    if b is not None:
        y += np.asarray(b).astype(x.dtype)
    return y


def rms_norm(x: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x²) + eps) · g over the last axis."""
    ms = np.mean(np.square(x), axis=-1, keepdims=True)
    return x / np.sqrt(ms + eps) * np.asarray(g).astype(x.dtype)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU."""
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)).astype(x.dtype))


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def rope_angles(pos: np.ndarray, head_dim: int, theta: float, dtype=np.float32):
    """cos, sin [T, Dh/2] for interleaved RoPE: pair i turns by pos · θ^(−2i/Dh)."""
    inv = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # [Dh/2]
    ang = np.asarray(pos, dtype=np.float64)[:, None] * inv[None, :]  # [T, Dh/2]
    return np.cos(ang).astype(dtype), np.sin(ang).astype(dtype)


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate interleaved pairs (2i, 2i+1) of x [T, H, Dh] by the angles cos, sin [T, Dh/2]."""
    even, odd = x[..., 0::2], x[..., 1::2]  # [T, H, Dh/2]
    c, s = cos[:, None, :], sin[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = even * c - odd * s
    out[..., 1::2] = even * s + odd * c
    return out


def attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, q_pos: np.ndarray, k_pos: np.ndarray, window: int
) -> np.ndarray:
    """Causal sliding-window GQA attention.

    q [T, H, Dh]; k, v [S, Hkv, Dh]; query at position p sees keys at j with p − window < j ≤ p.
    Returns [T, H, Dh]. Softmax in the inputs' dtype (float32 or float64).
    """
    t, h, dh = q.shape
    hkv = k.shape[1]
    group = h // hkv
    qg = q.reshape(t, hkv, group, dh).transpose(1, 2, 0, 3)  # [Hkv, G, T, Dh]
    kt = k.transpose(1, 2, 0)[:, None]  # [Hkv, 1, Dh, S]
    scores = np.matmul(qg, kt) / np.sqrt(dh).astype(q.dtype)  # [Hkv, G, T, S]: a batched GEMM per head
    rel = q_pos[:, None] - k_pos[None, :]  # [T, S]
    visible = (rel >= 0) & (rel < window)
    scores = np.where(visible[None, None], scores, -np.inf)
    scores -= scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=-1, keepdims=True)
    out = np.matmul(p, v.transpose(1, 0, 2)[:, None])  # [Hkv, G, T, Dh]
    return out.transpose(2, 0, 1, 3).reshape(t, h, dh)


def time_embedding(t: float, dim: int, dtype=np.float32) -> np.ndarray:
    """Sinusoidal t_cond [D] = concat(cos(t·inv), sin(t·inv)), inv = 10000^(−k/(D/2)) (SPEC §5)."""
    inv = np.exp(-np.log(10000.0) * np.arange(dim // 2, dtype=np.float64) / (dim // 2))
    return np.concatenate([np.cos(t * inv), np.sin(t * inv)]).astype(dtype)
