"""Audio encoder and adapter on the GPU (SPEC §3, §4): mel [M, T] → audio embeddings [T/8, D] f32.

Same chunked schedule as the CPU encoder: time chunks of CHUNK_POSITIONS, every layer per chunk,
each layer's keys and values in a ring of window + chunk − 1 slots, so memory is bounded for any
length. Within a chunk a layer is batched GEMMs over all positions plus the tiled (tensor-core)
sliding-window attention kernel. Shapes: T mel frames, M mel bins, S positions, E encoder dim.
"""

from __future__ import annotations

import numpy as np

from ..config import ModelConfig
from . import ops
from .gemm import gemm
from .weights import GpuLayer, GpuWeights

CHUNK_POSITIONS = 1024  # encoder positions per chunk: GEMMs with M = 1024 run near peak


def bf16_to_f32(x):
    """BF16 bit patterns (uint16) → float32, exactly."""
    import cupy

    return (x.astype(cupy.uint32) << 16).view(cupy.float32)


def conv_stem(mel, w: GpuWeights):
    """mel [M, T] f32 → [ceil(T/2), E] f32: causal conv k3 s1 + GELU, conv k3 s2 + GELU."""
    cols = ops.im2col_causal(mel, 3, 1, 2, time_axis=1)  # [T, M·3] bf16
    x = bf16_to_f32(ops.bias_gelu(gemm(cols, w.conv0_weight), w.conv0_bias))  # [T, E]
    cols = ops.im2col_causal(x, 3, 2, 1, time_axis=0)  # [T/2, E·3] bf16
    return bf16_to_f32(ops.bias_gelu(gemm(cols, w.conv1_weight), w.conv1_bias))  # [T/2, E]


class EncoderRunner:
    """Holds the per-layer KV rings and runs chunks of positions through all layers."""

    def __init__(self, w: GpuWeights, cfg: ModelConfig, chunk: int = CHUNK_POSITIONS):
        import cupy

        enc = cfg.encoder
        self.w, self.cfg, self.chunk = w, enc, chunk
        ring = enc.sliding_window + chunk - 1
        shape = (enc.n_layers, 1, ring, enc.n_kv_heads, enc.head_dim)
        self.k = cupy.empty(shape, np.uint16)  # [L, 1, R, Hkv, Dh] bf16
        self.v = cupy.empty(shape, np.uint16)
        self.stream_ids = cupy.zeros(chunk, np.int32)  # [T] every position belongs to stream 0

    def _layer(self, h, i: int, lw: GpuLayer, prev_bias, pos, p0: int):
        """h [T, E] f32 in place (+ the previous layer's pending w2 bias); returns this layer's w2 bias."""
        c = self.cfg
        t = h.shape[0]
        x = ops.rms_norm(h, lw.attention_norm, c.norm_eps, bias=prev_bias)  # [T, E] bf16
        qkv = gemm(x, lw.wqkv)  # [T, (H + 2Hkv)·Dh] f32
        q = ops.rope_qkv(qkv, pos, self.stream_ids[:t], self.k[i], self.v[i], c.rope_theta, bias=lw.qkv_bias)
        o = ops.attention(q, self.k[i], self.v[i], c.sliding_window, p0=p0, b=0, tiled=True)  # [T, H, Dh]
        gemm(o.reshape(t, c.q_dim), lw.wo, out=h, beta=1.0)
        x = ops.rms_norm(h, lw.ffn_norm, c.norm_eps, bias=lw.wo_bias)
        u = ops.silu_mul(gemm(x, lw.w13))  # [T, F] bf16
        gemm(u, lw.w2, out=h, beta=1.0)
        return lw.w2_bias

    def run(self, x):
        """x [S, E] f32 (conv stem output) → [S, E] bf16 after the final norm."""
        import cupy

        s = x.shape[0]
        out = cupy.empty((s, self.cfg.dim), np.uint16)  # [S, E] bf16
        for p0 in range(0, s, self.chunk):
            h = cupy.ascontiguousarray(x[p0 : p0 + self.chunk])  # [T, E] f32, updated in place
            pos = cupy.arange(p0, p0 + h.shape[0], dtype=cupy.int32)
            bias = None
            for i, lw in enumerate(self.w.encoder_layers):
                bias = self._layer(h, i, lw, bias, pos, p0)
            ops.rms_norm(h, self.w.encoder_norm, self.cfg.norm_eps, bias=bias, out=out[p0 : p0 + h.shape[0]])
        return out


def adapter(x, w: GpuWeights, cfg: ModelConfig):
    """[S, E] bf16 → [S/4, D] f32: 4 positions concatenated, Linear, GELU, Linear."""
    grouped = x.reshape(-1, cfg.adapter_in)  # [S/4, 4E] bf16, a view
    return gemm(ops.bias_gelu(gemm(grouped, w.adapter_w0)), w.adapter_w2)  # [N, D] f32


def encode(mel: np.ndarray, runner: EncoderRunner, w: GpuWeights, cfg: ModelConfig):
    """mel [M, T] (host) → audio embeddings [N, D] f32 on the device."""
    import cupy

    x = conv_stem(cupy.asarray(mel, np.float32), w)  # [T/2, E] f32
    x = x[x.shape[0] % cfg.audio.downsample_factor :]  # streaming edge case only
    return adapter(runner.run(x), w, cfg)
