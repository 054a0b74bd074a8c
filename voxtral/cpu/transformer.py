"""One pre-norm transformer layer (SPEC §3.3, §5) for any number of positions, and its KV cache.

The encoder and decoder layers are the same function: the encoder passes biases, the decoder
passes its ada-norm scale. Prefill, offline chunks and single streaming steps all go through it.
Shapes: T positions, D model dim, H heads, Hkv kv heads, Dh head dim, R ring slots.
"""

from __future__ import annotations

import numpy as np

from ..checkpoint import LayerWeights
from ..config import TransformerConfig
from . import ops


class KVCache:
    """Preallocated ring of the last R positions' keys and values for every layer.

    max_ring: the ring may grow up to this many slots (doubling) while no position has wrapped, so a
    stream of unknown length starts small and ends at its window.
    """

    def __init__(self, cfg: TransformerConfig, ring: int, dtype=np.float32, max_ring: int | None = None):
        shape = (cfg.n_layers, ring, cfg.n_kv_heads, cfg.head_dim)
        self.k = np.zeros(shape, dtype)  # [layers, R, Hkv, Dh]
        self.v = np.zeros(shape, dtype)  # [layers, R, Hkv, Dh]
        self.slot_pos = np.full(ring, -1, np.int64)  # [R] absolute position held by each slot
        self.ring = ring
        self.max_ring = max(ring, max_ring or ring)

    def fit(self, upto: int) -> None:
        """Grow the ring so that positions < upto need no wrap (up to max_ring; positions not wrapped yet)."""
        if self.ring < self.max_ring and upto > self.ring:
            ring = min(self.max_ring, max(2 * self.ring, upto))
            pad = ((0, 0), (0, ring - self.ring), (0, 0), (0, 0))
            self.k, self.v = np.pad(self.k, pad), np.pad(self.v, pad)
            self.slot_pos = np.concatenate([self.slot_pos, np.full(ring - self.ring, -1, np.int64)])
            self.ring = ring

    def update(self, layer: int, pos: np.ndarray, k: np.ndarray, v: np.ndarray):
        """Store k, v [T, Hkv, Dh] at slots pos % R; return the filled slots' (k, v, positions)."""
        if layer == 0:
            self.fit(int(pos[-1]) + 1)
        if len(pos) > self.ring:
            raise ValueError(f"{len(pos)} positions at once do not fit a ring of {self.ring}")
        slots = pos % self.ring
        self.k[layer, slots] = k
        self.v[layer, slots] = v
        self.slot_pos[slots] = pos
        n = min(self.ring, int(pos[-1]) + 1)  # slots fill in order until the ring wraps
        return self.k[layer, :n], self.v[layer, :n], self.slot_pos[:n]


def attend(q, k, v, pos: np.ndarray, cache: KVCache, index: int, window: int) -> np.ndarray:
    """Store k, v [T, Hkv, Dh] in the cache, then q [T, H, Dh] attends over the cached window."""
    keys, values, key_pos = cache.update(index, pos, k, v)
    return ops.attention(q, keys, values, pos, key_pos, window)  # [T, H, Dh]


def layer(
    h: np.ndarray,
    w: LayerWeights,
    cfg: TransformerConfig,
    pos: np.ndarray,
    rope: tuple[np.ndarray, np.ndarray],
    cache: KVCache | list[KVCache],
    index: int,
    ada: np.ndarray | None = None,
) -> np.ndarray:
    """h [T, D] at positions pos [T] → h [T, D]; appends this layer's k, v to the cache.

    cache: one KVCache for T positions of one stream, or a list of T caches for one position of
    each of T streams (a batched step: the projections run as one GEMM over all streams).
    """
    t = h.shape[0]
    x = ops.rms_norm(h, w.attention_norm, cfg.norm_eps)
    q = ops.linear(x, w.wq, w.wq_bias).reshape(t, cfg.n_heads, cfg.head_dim)  # [T, H, Dh]
    k = ops.linear(x, w.wk).reshape(t, cfg.n_kv_heads, cfg.head_dim)  # [T, Hkv, Dh]
    v = ops.linear(x, w.wv, w.wv_bias).reshape(t, cfg.n_kv_heads, cfg.head_dim)  # [T, Hkv, Dh]
    q, k = ops.rope(q, *rope), ops.rope(k, *rope)
    if isinstance(cache, KVCache):
        o = attend(q, k, v, pos, cache, index, cfg.sliding_window)  # [T, H, Dh]
    else:  # batched streams: row r is one position of the stream whose cache is cache[r]
        rows = [slice(r, r + 1) for r in range(t)]
        o = np.concatenate(
            [
                attend(q[r], k[r], v[r], pos[r], c, index, cfg.sliding_window)
                for r, c in zip(rows, cache, strict=True)
            ]
        )
    h = h + ops.linear(o.reshape(t, cfg.q_dim), w.wo, w.wo_bias)
    x = ops.rms_norm(h, w.ffn_norm, cfg.norm_eps)
    if ada is not None:
        x = x * (1 + ada)
    u = ops.silu(ops.linear(x, w.w1)) * ops.linear(x, w.w3)  # [T, F]
    return h + ops.linear(u, w.w2, w.w2_bias)


def stack(
    h: np.ndarray,
    layers,
    cfg: TransformerConfig,
    pos: np.ndarray,
    cache: KVCache | list[KVCache],
    ada: np.ndarray | None = None,
) -> np.ndarray:
    """All layers over h [T, D] at positions pos [T]; ada [layers, D] or None; cache as in layer()."""
    rope = ops.rope_angles(pos, cfg.head_dim, cfg.rope_theta, h.dtype)
    for i, w in enumerate(layers):
        h = layer(h, w, cfg, pos, rope, cache, i, None if ada is None else ada[i])
    return h
