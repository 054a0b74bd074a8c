"""Text decoder on the CPU (SPEC §5): input a[p] + E[token] at position p → logits [V].

Shapes: T positions, D decoder dim, V vocab, C ada conditioning dim, L layers.
"""

from __future__ import annotations

import numpy as np

from ..checkpoint import Weights
from ..config import DecoderConfig
from . import ops
from .transformer import KVCache, stack


def ada_scales(w: Weights, cfg: DecoderConfig, delay_tokens: int, dtype=np.float32) -> np.ndarray | None:
    """Per-layer ada-norm scale [L, D] = W_up · gelu(W_down · t_cond(n_delay)); None without ada."""
    if not cfg.ada_t_cond_dim:
        return None
    t_cond = ops.time_embedding(delay_tokens, cfg.dim, dtype)[None]  # [1, D]
    return np.concatenate(
        [ops.linear(ops.gelu(ops.linear(t_cond, lw.ada_down)), lw.ada_up) for lw in w.decoder_layers]
    )


def embed(audio: np.ndarray, tokens: np.ndarray, w: Weights) -> np.ndarray:
    """a [T, D] + E[tokens] [T, D]."""
    return audio + np.asarray(w.tok_embeddings[tokens]).astype(audio.dtype)


def forward(
    h: np.ndarray, pos: np.ndarray, w: Weights, cfg: DecoderConfig, cache: KVCache | list[KVCache], ada
) -> np.ndarray:
    """Inputs h [T, D] at positions pos [T] → final hidden states [T, D]; fills the cache."""
    return stack(h, w.decoder_layers, cfg, pos, cache, ada)


def logits(h: np.ndarray, w: Weights, cfg: DecoderConfig) -> np.ndarray:
    """Hidden [T, D] → logits [T, V] through the tied output projection."""
    return ops.linear(ops.rms_norm(h, w.norm, cfg.norm_eps), w.tok_embeddings)


def new_cache(cfg: DecoderConfig, n_positions: int, max_new: int, dtype=np.float32) -> KVCache:
    """A ring big enough for the window plus the positions written in one call, no bigger than needed."""
    return KVCache(cfg, ring=min(n_positions, cfg.sliding_window + max_new - 1), dtype=dtype)
