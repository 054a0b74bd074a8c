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
# A stream's encoder gets few positions per call (4 per 80 ms): a short chunk keeps its rings (window +
# chunk − 1 slots per layer, 213 MB at full size) small.
STREAM_CHUNK_POSITIONS = 64
CONV0_KEEP = 2  # conv0 (k3 s1) input frames carried to the next piece: its left padding


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

    def run(self, x, first: int = 0):
        """x [S, E] f32 (conv stem output of positions first … first+S−1) → [S, E] bf16, final norm applied.

        Positions must follow on from the previous call with the same rings (streaming) or start at 0.
        """
        import cupy

        s = x.shape[0]
        out = cupy.empty((s, self.cfg.dim), np.uint16)  # [S, E] bf16
        for start in range(0, s, self.chunk):
            h = cupy.ascontiguousarray(x[start : start + self.chunk])  # [T, E] f32, updated in place
            p0 = first + start
            pos = cupy.arange(p0, p0 + h.shape[0], dtype=cupy.int32)
            bias = None
            for i, lw in enumerate(self.w.encoder_layers):
                bias = self._layer(h, i, lw, bias, pos, p0)
            rows = out[start : start + h.shape[0]]
            ops.rms_norm(h, self.w.encoder_norm, self.cfg.norm_eps, bias=bias, out=rows)
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


class EncoderStream:
    """Incremental conv stem + encoder + adapter (SPEC §7) on the GPU, as cpu.encoder.EncoderStream.

    State: conv0's last 2 input frames (host mel), conv1's unconsumed conv0 outputs, the layers' KV
    rings and next position, and up to 3 encoder outputs waiting for a full adapter group.
    """

    def __init__(self, w: GpuWeights, cfg: ModelConfig):
        import cupy

        self.w, self.cfg = w, cfg
        self.conv0_in = np.zeros((cfg.audio.num_mel_bins, CONV0_KEEP), np.float32)  # [M, 2] host
        self.conv1_in = cupy.zeros((1, cfg.encoder.dim), np.float32)  # [1 or 2, E]
        self.runner = EncoderRunner(w, cfg, STREAM_CHUNK_POSITIONS)
        self.pos = 0  # encoder position of the next conv stem output
        self.group = cupy.zeros((0, cfg.encoder.dim), np.uint16)  # [< 4, E] bf16, an unfinished group

    def feed(self, mel: np.ndarray):
        """The next mel frames [M, T] (host) → the audio embeddings [k, D] f32 they complete (k ≥ 0)."""
        import cupy

        w = self.w
        t = mel.shape[1]
        x = np.concatenate([self.conv0_in, np.asarray(mel, np.float32)], axis=1)  # [M, 2 + T]
        self.conv0_in = x[:, x.shape[1] - CONV0_KEEP :]
        if t:
            cols = ops.im2col_causal(cupy.asarray(x), 3, 1, 0, time_axis=1, t_out=t)  # [T, M·3] bf16
            y = bf16_to_f32(ops.bias_gelu(gemm(cols, w.conv0_weight), w.conv0_bias))  # [T, E]
            y = cupy.concatenate([self.conv1_in, y])  # [., E]
        else:
            y = self.conv1_in
        n_out = (len(y) - 1) // 2  # conv1 output j needs its inputs 2j − 1 … 2j + 1
        self.conv1_in = y[2 * n_out :].copy()
        if n_out:
            cols = ops.im2col_causal(
                cupy.ascontiguousarray(y[: 2 * n_out + 1]), 3, 2, 0, time_axis=0, t_out=n_out
            )
            z = bf16_to_f32(ops.bias_gelu(gemm(cols, w.conv1_weight), w.conv1_bias))  # [n_out, E]
            h = cupy.concatenate([self.group, self.runner.run(z, self.pos)])  # [S, E] bf16
            self.pos += n_out
        else:
            h = self.group
        n = len(h) // self.cfg.audio.downsample_factor * self.cfg.audio.downsample_factor
        self.group = h[n:].copy()
        if n == 0:
            return cupy.zeros((0, self.cfg.decoder.dim), np.float32)  # [0, D]
        return adapter(cupy.ascontiguousarray(h[:n]), w, self.cfg)  # [k, D] f32
