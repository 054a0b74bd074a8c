"""Audio encoder and adapter on the GPU (SPEC §3, §4, §7): mel frames of many slots → audio embeddings.

One pool of C slots serves every request: an offline input and a live stream alike are a slot fed
mel frames in pieces of any size. A slot keeps its conv stem state, its encoder position, up to 3
outputs waiting for an adapter group, and its own ring KV caches of window + chunk − 1 rows per layer
(voxtral/gpu/kv.py), so a pass may give it up to `chunk` new positions. Each pass runs the layers
once over the new positions of every slot in it (rows of all slots in the same GEMMs); attention is
the tiled tensor-core kernel for a slot's long run of consecutive positions and one split-kernel
launch for all the short runs (a live tick's 4 positions per slot). Then one adapter pass for all.
Shapes: T mel frames, M mel bins, S positions, E encoder dim, D decoder dim, C slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import ModelConfig
from . import ops
from .copy import clone, concat_rows, device_array
from .gemm import gemm
from .kv import KVCaches
from .weights import GpuWeights

CHUNK_POSITIONS = 1024  # positions per slot and pass of an offline input: GEMMs with M = 1024 run near peak
# A live stream gets few positions per call (4 per 80 ms): a short chunk keeps its rings (window +
# chunk − 1 rows per layer, 213 MB at full size) small.
LIVE_CHUNK_POSITIONS = 64
PASS_ROWS = 8192  # positions of all slots in one pass: bounds the pass's activations (~0.7 GB at full size)
TILED_MIN_ROWS = 64  # a slot's run of at least this many positions takes the tiled attention kernel
CONV0_KEEP = 2  # conv0 (k3 s1) input frames carried to the next piece: its left padding


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
            y = ops.widen_bf16(ops.bias_gelu(gemm(cols, w.conv0_weight), w.conv0_bias))  # [T, E]
            y = concat_rows([self.conv1_in, y])  # [., E]
        else:
            y = self.conv1_in
        n = (len(y) - 1) // 2  # conv1 output j needs its inputs 2j − 1 … 2j + 1
        self.conv1_in = clone(y[2 * n :])
        self.pos += n
        if not n:
            return first, cupy.zeros((0, y.shape[1]), np.float32)
        cols = ops.im2col_causal(cupy.ascontiguousarray(y[: 2 * n + 1]), 3, 2, 0, time_axis=0, t_out=n)
        return first, ops.widen_bf16(ops.bias_gelu(gemm(cols, w.conv1_weight), w.conv1_bias))  # [n, E]


class Groups:
    """Encoder outputs of one stream waiting for a full adapter group of 4 positions."""

    def __init__(self, cfg: ModelConfig):
        import cupy

        self.factor = cfg.audio.downsample_factor
        self.rows = cupy.zeros((0, cfg.encoder.dim), np.uint16)  # [< 4, E] bf16

    def add(self, h):
        """New encoder outputs [S, E] bf16 → the complete groups' rows [4g, E]; the rest waits."""

        h = concat_rows([self.rows, h])
        n = len(h) // self.factor * self.factor
        self.rows = clone(h[n:])
        return h[:n]


@dataclass
class _Slot:
    conv: ConvStream
    groups: Groups
    chunk: int  # most positions per pass


def layer(
    h, c, i: int, lw, prev_bias, pos, slot, kv: KVCaches, runs: list[tuple[int, int, int, int]], split: int
):
    """Encoder layer i over rows h [T, E] f32 in place (+ the previous layer's pending w2 bias); returns
    this layer's w2 bias. Row t is position pos[t] of slot slot[t]. Rows [0, split) are short runs (split
    attention); each (start, end, slot, p0) of `runs` is one slot's consecutive positions p0 … (tiled).
    """
    import cupy

    t = h.shape[0]
    x = ops.rms_norm(h, lw.attention_norm, c.norm_eps, bias=prev_bias)  # [T, E] bf16
    qkv = gemm(x, lw.wqkv)  # [T, (H + 2Hkv)·Dh] f32
    cache, ring = kv.layer(i)
    dims = {"n_kv_heads": c.n_kv_heads, "head_dim": c.head_dim}
    q = ops.rope_qkv(qkv, pos, slot, cache, ring, c.rope_theta, **dims, bias=lw.qkv_bias)
    if not runs:  # a live tick: every row through one split-attention launch
        o = ops.attention_split(q, cache, ring, pos, slot, c.sliding_window, n_kv_heads=c.n_kv_heads)
    else:
        o = cupy.empty(q.shape, np.uint16)  # [T, H, Dh] bf16
    if runs and split:
        w, hkv = c.sliding_window, c.n_kv_heads
        ops.attention_split(
            q[:split], cache, ring, pos[:split], slot[:split], w, n_kv_heads=hkv, out=o[:split]
        )
    for start, end, s, p0 in runs:
        k, v = kv.arrays[s]
        ops.attention_tiled(q[start:end], k[i], v[i], c.sliding_window, p0, out=o[start:end])
    gemm(o.reshape(t, c.q_dim), lw.wo, out=h, beta=1.0)
    x = ops.rms_norm(h, lw.ffn_norm, c.norm_eps, bias=lw.wo_bias)
    u = ops.silu_mul(gemm(x, lw.w13))  # [T, F] bf16
    gemm(u, lw.w2, out=h, beta=1.0)
    return lw.w2_bias


def adapter(x, w: GpuWeights, cfg: ModelConfig):
    """[S, E] bf16 → [S/4, D] f32: 4 positions concatenated, Linear, GELU, Linear."""
    grouped = x.reshape(-1, cfg.adapter_in)  # [S/4, 4E] bf16, a view
    return gemm(ops.bias_gelu(gemm(grouped, w.adapter_w0)), w.adapter_w2)  # [N, D] f32


class Encoder:
    """Incremental encoders of up to `capacity` slots (the backend's Encoder, voxtral/backend.py)."""

    def __init__(self, w: GpuWeights, cfg: ModelConfig, cuda_stream, capacity: int, chunk: int):
        enc = cfg.encoder
        self.w, self.cfg, self.cuda_stream, self.capacity, self.chunk = w, cfg, cuda_stream, capacity, chunk
        with cuda_stream:
            self.kv = KVCaches(enc.n_layers, capacity, enc.n_kv_heads, enc.head_dim)
        self.slots: list[_Slot | None] = [None] * capacity

    def free(self) -> int:
        return self.slots.count(None)

    def join(self, chunk: int | None = None) -> int:
        """A free slot for a new input; chunk: the most positions a pass gives it (default the pool's)."""
        import cupy

        chunk = self.chunk if chunk is None else chunk
        slot = self.slots.index(None)
        try:
            with self.cuda_stream:
                self.kv.open(slot, self.cfg.encoder.sliding_window + chunk - 1)
                self.slots[slot] = _Slot(ConvStream(self.w, self.cfg), Groups(self.cfg), chunk)
        except cupy.cuda.memory.OutOfMemoryError as e:
            from ..errors import DeviceError

            raise DeviceError(
                f"not enough GPU memory for one more encoder slot ({e}); use fewer inputs"
            ) from None
        return slot

    def leave(self, slot: int) -> None:
        with self.cuda_stream:
            self.kv.close(slot)
        self.slots[slot] = None

    def encode(self, items: list[tuple[int, np.ndarray]]) -> list:
        """(slot, its next mel frames [M, T], any T ≥ 0) → each slot's new audio embeddings [k, D] f32."""
        import cupy

        with self.cuda_stream:
            conv = [self.slots[slot].conv.feed(mel) for slot, mel in items]  # (first position, [n, E] f32)
            done = [0] * len(items)
            complete = [[] for _ in items]  # per item: encoder outputs [4g, E] bf16 of complete groups
            while any(d < len(z) for d, (_, z) in zip(done, conv, strict=True)):
                parts = self._pass(items, conv, done)
                h = self._layers(parts)  # [T, E] bf16
                start = 0
                for i, slot, _, z in parts:
                    complete[i].append(self.slots[slot].groups.add(h[start : start + len(z)]))
                    start += len(z)
                    done[i] += len(z)
            counts = [sum(len(g) for g in c) // self.cfg.audio.downsample_factor for c in complete]
            if not sum(counts):
                return [cupy.zeros((0, self.cfg.decoder.dim), np.float32) for _ in items]
            grouped = concat_rows([g for c in complete for g in c])  # [4Σk, E]
            embeds = adapter(grouped, self.w, self.cfg)  # [Σk, D] f32, one adapter pass for all
        offsets = np.cumsum([0, *counts])
        return [embeds[offsets[i] : offsets[i + 1]] for i in range(len(items))]

    def _pass(self, items, conv, done) -> list[tuple[int, int, int, object]]:
        """The rows of the next pass: (item, slot, first position, conv rows [n, E]), ≤ the slot's chunk per
        slot and ≤ PASS_ROWS in all; short runs first (they share one split-attention launch)."""
        parts, total = [], 0
        for i, (first, z) in enumerate(conv):
            slot = items[i][0]
            n = min(len(z) - done[i], self.slots[slot].chunk, PASS_ROWS - total)
            if n > 0:
                parts.append((i, slot, first + done[i], z[done[i] : done[i] + n]))
                total += n
        return sorted(parts, key=lambda p: len(p[3]) >= TILED_MIN_ROWS)

    def _layers(self, parts):
        """All layers and the final norm over the pass's rows → [T, E] bf16."""

        pos = np.concatenate([p0 + np.arange(len(z)) for _, _, p0, z in parts])  # [T]
        slot = np.concatenate([np.full(len(z), s) for _, s, _, z in parts])  # [T]
        runs, start, split = [], 0, 0
        for _, s, p0, z in parts:
            if len(z) >= TILED_MIN_ROWS:
                runs.append((start, start + len(z), s, p0))
            else:
                split = start + len(z)
            start += len(z)
        h = concat_rows([z for *_, z in parts])  # [T, E] f32
        pos, slot = device_array(pos.astype(np.int32)), device_array(slot.astype(np.int32))
        bias, enc = None, self.cfg.encoder
        for i, lw in enumerate(self.w.encoder_layers):
            bias = layer(h, enc, i, lw, bias, pos, slot, self.kv, runs, split)
        return ops.rms_norm(h, self.w.encoder_norm, enc.norm_eps, bias=bias)

    def nbytes(self) -> int:
        return self.kv.nbytes()
