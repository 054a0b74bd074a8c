"""Audio encoder and adapter on the CPU (SPEC §3, §4): mel [M, T] → audio embeddings [T/8, D].

The encoder runs in time chunks, every layer per chunk, with a ring KV cache of the last
`window` positions: memory stays bounded for long audio, and the offline pass is the same
computation as the streaming one.
Shapes: T mel frames, M mel bins, S encoder positions, E encoder dim, D decoder dim.
"""

from __future__ import annotations

import numpy as np

from ..checkpoint import Weights
from ..config import ModelConfig
from . import ops
from .transformer import KVCache, stack

CHUNK_POSITIONS = 512  # encoder positions per chunk (offline); a multiple of the downsample factor


def conv1d_causal(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """Causal conv over time: x [T, C], weight [O, C, K] → [ceil(T/stride), O], left pad K − stride."""
    t, c = x.shape
    o, _, k = weight.shape
    t_out = -(-t // stride)
    pad_left = k - stride
    pad_right = max(0, (t_out - 1) * stride + k - (t + pad_left))
    xp = np.pad(x, ((pad_left, pad_right), (0, 0)))  # [T + pads, C]
    taps = [xp[j : j + (t_out - 1) * stride + 1 : stride] for j in range(k)]  # K × [T_out, C]
    cols = np.stack(taps, axis=-1).reshape(t_out, c * k)  # [T_out, C·K], column c·K + j
    return ops.linear(cols, weight.reshape(o, c * k), bias)


def conv_stem(mel: np.ndarray, w: Weights, dtype=np.float32) -> np.ndarray:
    """mel [M, T] → [ceil(T/2), E]: conv k3 s1, GELU, conv k3 s2, GELU (SPEC §3.1)."""
    x = np.ascontiguousarray(mel.T, dtype=dtype)  # [T, M]
    x = ops.gelu(conv1d_causal(x, w.conv0_weight, w.conv0_bias, stride=1))  # [T, E]
    return ops.gelu(conv1d_causal(x, w.conv1_weight, w.conv1_bias, stride=2))  # [T/2, E]


def encode(mel: np.ndarray, w: Weights, cfg: ModelConfig, dtype=np.float32) -> np.ndarray:
    """mel [M, T] → encoder output [S, E] after the final norm, S a multiple of 4 (SPEC §3)."""
    x = conv_stem(mel, w, dtype)  # [T/2, E]
    x = x[x.shape[0] % cfg.audio.downsample_factor :]  # streaming edge case only: drop the first few
    enc = cfg.encoder
    cache = KVCache(enc, ring=enc.sliding_window + CHUNK_POSITIONS - 1, dtype=dtype)
    out = np.empty_like(x)  # [S, E]
    for start in range(0, x.shape[0], CHUNK_POSITIONS):
        h = x[start : start + CHUNK_POSITIONS]
        pos = np.arange(start, start + h.shape[0])
        h = stack(h, w.encoder_layers, enc, pos, cache)
        out[start : start + h.shape[0]] = ops.rms_norm(h, w.encoder_norm, enc.norm_eps)
    return out


def adapter(x: np.ndarray, w: Weights, cfg: ModelConfig) -> np.ndarray:
    """[S, E] → [S/4, D]: concatenate 4 positions, Linear, GELU, Linear (SPEC §4)."""
    grouped = x.reshape(-1, cfg.adapter_in)  # [S/4, 4E]
    return ops.linear(ops.gelu(ops.linear(grouped, w.adapter_w0)), w.adapter_w2)
