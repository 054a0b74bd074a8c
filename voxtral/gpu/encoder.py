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


def layer(h, w: GpuWeights, c, i: int, lw: GpuLayer, prev_bias, pos, stream, k, v, p0: int | None = None):
    """Encoder layer i over h [T, E] f32 in place (+ the previous layer's pending w2 bias); returns this
    layer's w2 bias. Row t is position pos[t] of stream stream[t], its keys in the rings k, v
    [L, B, R, Hkv, Dh]. p0: the rows are positions p0 … of one stream (tiled tensor-core attention);
    None: any rows of any streams (the split attention kernel of the decoder step).
    """
    t = h.shape[0]
    x = ops.rms_norm(h, lw.attention_norm, c.norm_eps, bias=prev_bias)  # [T, E] bf16
    qkv = gemm(x, lw.wqkv)  # [T, (H + 2Hkv)·Dh] f32
    q = ops.rope_qkv(qkv, pos, stream, k[i], v[i], c.rope_theta, bias=lw.qkv_bias)
    if p0 is None:
        o = ops.attention(q, k[i], v[i], c.sliding_window, pos=pos, stream=stream)  # [T, H, Dh]
    else:
        o = ops.attention(q, k[i], v[i], c.sliding_window, p0=p0, b=0, tiled=True)
    gemm(o.reshape(t, c.q_dim), lw.wo, out=h, beta=1.0)
    x = ops.rms_norm(h, lw.ffn_norm, c.norm_eps, bias=lw.wo_bias)
    u = ops.silu_mul(gemm(x, lw.w13))  # [T, F] bf16
    gemm(u, lw.w2, out=h, beta=1.0)
    return lw.w2_bias


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
        """One layer over consecutive positions p0 … of stream 0 (tiled attention)."""
        return layer(
            h, self.w, self.cfg, i, lw, prev_bias, pos, self.stream_ids[: h.shape[0]], self.k, self.v, p0
        )

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


class ConvStream:
    """The conv stem of one stream, incremental: mel frames in any pieces → conv stem output rows.

    State: conv0's last 2 input frames (host mel) and conv1's unconsumed conv0 outputs (its last
    one, or two when a stride pair is open); zeros at the start are the causal left padding.
    """

    def __init__(self, w: GpuWeights, cfg: ModelConfig):
        import cupy

        self.w = w
        self.conv0_in = np.zeros((cfg.audio.num_mel_bins, CONV0_KEEP), np.float32)  # [M, 2] host
        self.conv1_in = cupy.zeros((1, cfg.encoder.dim), np.float32)  # [1 or 2, E]
        self.pos = 0  # encoder position of the next output row

    def feed(self, mel: np.ndarray):
        """The next mel frames [M, T] (host) → (p, conv stem outputs [n, E] f32 of positions p … p+n−1)."""
        import cupy

        w, t, first = self.w, mel.shape[1], self.pos
        x = np.concatenate([self.conv0_in, np.asarray(mel, np.float32)], axis=1)  # [M, 2 + T]
        self.conv0_in = x[:, x.shape[1] - CONV0_KEEP :]
        if t:
            cols = ops.im2col_causal(cupy.asarray(x), 3, 1, 0, time_axis=1, t_out=t)  # [T, M·3] bf16
            y = bf16_to_f32(ops.bias_gelu(gemm(cols, w.conv0_weight), w.conv0_bias))  # [T, E]
            y = cupy.concatenate([self.conv1_in, y])  # [., E]
        else:
            y = self.conv1_in
        n = (len(y) - 1) // 2  # conv1 output j needs its inputs 2j − 1 … 2j + 1
        self.conv1_in = y[2 * n :].copy()
        self.pos += n
        if not n:
            return first, cupy.zeros((0, y.shape[1]), np.float32)
        cols = ops.im2col_causal(cupy.ascontiguousarray(y[: 2 * n + 1]), 3, 2, 0, time_axis=0, t_out=n)
        return first, bf16_to_f32(ops.bias_gelu(gemm(cols, w.conv1_weight), w.conv1_bias))  # [n, E]


class Groups:
    """Encoder outputs of one stream waiting for a full adapter group of 4 positions."""

    def __init__(self, cfg: ModelConfig):
        import cupy

        self.factor = cfg.audio.downsample_factor
        self.rows = cupy.zeros((0, cfg.encoder.dim), np.uint16)  # [< 4, E] bf16

    def add(self, h):
        """New encoder outputs [S, E] bf16 → the complete groups' rows [4g, E]; the rest waits."""
        import cupy

        h = cupy.concatenate([self.rows, h])
        n = len(h) // self.factor * self.factor
        self.rows = h[n:].copy()
        return h[:n]


class EncoderStream:
    """Incremental conv stem + encoder + adapter (SPEC §7) on the GPU, as cpu.encoder.EncoderStream:
    the conv stem's state, the layers' KV rings and up to 3 outputs waiting for an adapter group."""

    def __init__(self, w: GpuWeights, cfg: ModelConfig):
        self.w, self.cfg = w, cfg
        self.conv = ConvStream(w, cfg)
        self.runner = EncoderRunner(w, cfg, STREAM_CHUNK_POSITIONS)
        self.groups = Groups(cfg)

    def feed(self, mel: np.ndarray):
        """The next mel frames [M, T] (host) → the audio embeddings [k, D] f32 they complete (k ≥ 0)."""
        import cupy

        first, z = self.conv.feed(mel)  # [n, E] f32
        h = self.groups.add(self.runner.run(z, first)) if len(z) else self.groups.rows[:0]  # [4k, E] bf16
        if not len(h):
            return cupy.zeros((0, self.cfg.decoder.dim), np.float32)  # [0, D]
        return adapter(cupy.ascontiguousarray(h), self.w, self.cfg)  # [k, D] f32


class EncoderPool:
    """Incremental encoders of up to `capacity` live streams: each tick, one pass of the layers over
    the new positions of every stream (rows of all streams in the same GEMMs), each stream's keys in
    its slot of shared KV rings. Conv stems and adapter groups stay per stream."""

    def __init__(self, w: GpuWeights, cfg: ModelConfig, capacity: int):
        import cupy

        enc = cfg.encoder
        self.w, self.cfg, self.capacity = w, cfg, capacity
        ring = enc.sliding_window + STREAM_CHUNK_POSITIONS - 1
        shape = (enc.n_layers, capacity, ring, enc.n_kv_heads, enc.head_dim)
        self.k = cupy.empty(shape, np.uint16)  # [L, C, R, Hkv, Dh] bf16
        self.v = cupy.empty(shape, np.uint16)
        self.streams: list[tuple[ConvStream, Groups] | None] = [None] * capacity

    def join(self) -> int:
        slot = self.streams.index(None)
        self.streams[slot] = (ConvStream(self.w, self.cfg), Groups(self.cfg))
        return slot

    def leave(self, slot: int) -> None:
        self.streams[slot] = None

    def encode(self, items: list[tuple[int, np.ndarray]]) -> list:
        """(slot, next mel frames [M, T]) per stream → each stream's new audio embeddings [k, D] f32."""
        import cupy

        conv = [self.streams[slot][0].feed(mel) for slot, mel in items]  # (first position, [n, E] f32)
        done = [0] * len(items)
        complete = [[] for _ in items]  # per stream: encoder outputs [4g, E] bf16 of complete groups
        while any(d < len(z) for d, (_, z) in zip(done, conv, strict=True)):  # ≤ a chunk per stream per pass
            parts = [
                (i, first + done[i], z[done[i] : done[i] + STREAM_CHUNK_POSITIONS])
                for i, (first, z) in enumerate(conv)
                if done[i] < len(z)
            ]
            pos = np.concatenate([p0 + np.arange(len(z)) for _, p0, z in parts])  # [T]
            stream = np.concatenate([np.full(len(z), items[i][0]) for i, _, z in parts])  # [T] slots
            h = self._layers(cupy.concatenate([z for _, _, z in parts]), pos, stream)  # [T, E] bf16
            start = 0
            for i, _, z in parts:
                complete[i].append(self.streams[items[i][0]][1].add(h[start : start + len(z)]))
                start += len(z)
                done[i] += len(z)
        counts = [sum(len(g) for g in c) // self.cfg.audio.downsample_factor for c in complete]  # embeds
        if not sum(counts):
            return [cupy.zeros((0, self.cfg.decoder.dim), np.float32) for _ in items]
        grouped = cupy.ascontiguousarray(cupy.concatenate([g for c in complete for g in c]))  # [4Σk, E]
        embeds = adapter(grouped, self.w, self.cfg)  # [Σk, D] f32, one adapter pass for all streams
        offsets = np.cumsum([0, *counts])
        return [embeds[offsets[i] : offsets[i + 1]] for i in range(len(items))]

    def _layers(self, h, pos: np.ndarray, stream: np.ndarray):
        """All layers and the final norm over rows h [T, E] f32 at (pos, stream) [T] → [T, E] bf16."""
        import cupy

        pos, stream = cupy.asarray(pos, np.int32), cupy.asarray(stream, np.int32)
        bias = None
        for i, lw in enumerate(self.w.encoder_layers):
            bias = layer(h, self.w, self.cfg.encoder, i, lw, bias, pos, stream, self.k, self.v)
        return ops.rms_norm(h, self.w.encoder_norm, self.cfg.encoder.norm_eps, bias=bias)
