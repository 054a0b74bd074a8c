"""Audio encoder and adapter on the CPU (SPEC §3, §4, §7): mel frames of many slots → audio embeddings.

`Encoder` is the backend's encoder (voxtral/backend.py): C slots, each an `EncoderStream` fed mel
frames in pieces of any size, which keeps the conv stem's last inputs, a ring KV cache of the last
`window` positions (+ a chunk), its position and a partial adapter group, so memory stays bounded for
any length. `encode` is the same computation over a whole mel at once: the reference the tests hold
the slots to. Shapes: T mel frames, M mel bins, S encoder positions, E encoder dim, D decoder dim.
"""

from __future__ import annotations

import numpy as np

from ..checkpoint import Weights
from ..config import ModelConfig
from . import ops
from .linear import blas_in_pool
from .transformer import KVCache, stack

CHUNK_POSITIONS = 512  # encoder positions per chunk of an offline input; a multiple of the downsample factor
# A live stream gets few positions per call: a smaller chunk keeps the ring (window + chunk − 1), which
# every query scans, short.
LIVE_CHUNK_POSITIONS = 64
CONV0_KEEP = 2  # conv0 (k3 s1) input frames carried to the next piece: its left padding
CONV1_KEEP = 1  # conv1 (k3 s2) input frames carried: its left padding (plus an unpaired frame)


def conv1d(xp: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """Unpadded conv over time: xp [T, C], weight [O, C, K] → [(T − K) // stride + 1, O]."""
    t, c = xp.shape
    o, _, k = weight.shape
    t_out = max(0, (t - k) // stride + 1)
    taps = [xp[j : j + (t_out - 1) * stride + 1 : stride] for j in range(k)]  # K × [T_out, C]
    cols = np.stack(taps, axis=-1).reshape(t_out, c * k)  # [T_out, C·K], column c·K + j
    return ops.linear(cols, weight.reshape(o, c * k), bias)


def conv1d_causal(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """Causal conv over time: x [T, C], weight [O, C, K] → [ceil(T/stride), O], left pad K − stride."""
    t = x.shape[0]
    k = weight.shape[2]
    t_out = -(-t // stride)
    pad_left = k - stride
    pad_right = max(0, (t_out - 1) * stride + k - (t + pad_left))
    return conv1d(np.pad(x, ((pad_left, pad_right), (0, 0))), weight, bias, stride)


def conv_stem(mel: np.ndarray, w: Weights, dtype=np.float32) -> np.ndarray:
    """mel [M, T] → [ceil(T/2), E]: conv k3 s1, GELU, conv k3 s2, GELU (SPEC §3.1)."""
    x = np.ascontiguousarray(mel.T, dtype=dtype)  # [T, M]
    x = ops.gelu(conv1d_causal(x, w.conv0_weight, w.conv0_bias, stride=1))  # [T, E]
    return ops.gelu(conv1d_causal(x, w.conv1_weight, w.conv1_bias, stride=2))  # [T/2, E]


class EncoderLayers:
    """The encoder layers and final norm over consecutive positions from 0, in chunks, with a ring KV."""

    def __init__(self, w: Weights, cfg: ModelConfig, dtype=np.float32, chunk: int | None = None):
        self.w, self.cfg = w, cfg.encoder
        self.chunk = CHUNK_POSITIONS if chunk is None else chunk
        self.cache = KVCache(cfg.encoder, ring=cfg.encoder.sliding_window + self.chunk - 1, dtype=dtype)
        self.pos = 0  # position of the next row

    def run(self, x: np.ndarray) -> np.ndarray:
        """The next positions' conv stem output [S, E] → encoder output [S, E]."""
        out = np.empty_like(x)  # [S, E]
        for start in range(0, x.shape[0], self.chunk):
            h = x[start : start + self.chunk]
            pos = np.arange(self.pos, self.pos + h.shape[0])
            h = stack(h, self.w.encoder_layers, self.cfg, pos, self.cache)
            out[start : start + h.shape[0]] = ops.rms_norm(h, self.w.encoder_norm, self.cfg.norm_eps)
            self.pos += h.shape[0]
        return out


def encode(mel: np.ndarray, w: Weights, cfg: ModelConfig, dtype=np.float32) -> np.ndarray:
    """mel [M, T] → encoder output [S, E] after the final norm, S a multiple of 4 (SPEC §3)."""
    x = conv_stem(mel, w, dtype)  # [T/2, E]
    x = x[x.shape[0] % cfg.audio.downsample_factor :]  # streaming edge case only: drop the first few
    return EncoderLayers(w, cfg, dtype).run(x)


def audio_embeddings(mel: np.ndarray, w: Weights, cfg: ModelConfig, dtype=np.float32) -> np.ndarray:
    """mel [M, T] → audio embeddings [T/8, D] in one pass: encode, then the adapter (SPEC §3, §4)."""
    return adapter(encode(mel, w, cfg, dtype), w, cfg)


def adapter(x: np.ndarray, w: Weights, cfg: ModelConfig) -> np.ndarray:
    """[S, E] → [S/4, D]: concatenate 4 positions, Linear, GELU, Linear (SPEC §4)."""
    grouped = x.reshape(-1, cfg.adapter_in)  # [S/4, 4E]
    return ops.linear(ops.gelu(ops.linear(grouped, w.adapter_w0)), w.adapter_w2)


class EncoderStream:
    """Incremental encoder + adapter (SPEC §7): mel frames in any pieces → audio embeddings as completed.

    State: conv0's last 2 input frames, conv1's unconsumed conv0 outputs (its last one, or two when
    a stride pair is open), the layers' KV ring and position, and up to 3 encoder outputs waiting
    for a full adapter group. Fed all frames of a padded stream (T a multiple of 8), the output
    equals adapter(encode(mel)) row for row, up to float rounding.
    """

    def __init__(self, w: Weights, cfg: ModelConfig, dtype=np.float32, chunk: int = LIVE_CHUNK_POSITIONS):
        self.w, self.cfg, self.dtype = w, cfg, np.dtype(dtype)
        e = cfg.encoder.dim
        self.conv0_in = np.zeros((CONV0_KEEP, cfg.audio.num_mel_bins), self.dtype)  # [2, M]
        self.conv1_in = np.zeros((CONV1_KEEP, e), self.dtype)  # [1 or 2, E]
        self.layers = EncoderLayers(w, cfg, self.dtype, chunk)
        self.group = np.zeros((0, e), self.dtype)  # [< 4, E] outputs of an unfinished group

    def feed(self, mel: np.ndarray) -> np.ndarray:
        """The next mel frames [M, T] → the audio embeddings [k, D] they complete (k ≥ 0)."""
        w = self.w
        x = np.concatenate([self.conv0_in, np.asarray(mel.T, self.dtype)])  # [2 + T, M]
        self.conv0_in = x[len(x) - CONV0_KEEP :].copy()  # copies: a view would keep the whole piece
        y = np.concatenate([self.conv1_in, ops.gelu(conv1d(x, w.conv0_weight, w.conv0_bias, 1))])  # [., E]
        n_out = (len(y) - 1) // 2  # conv1 output j needs its inputs 2j − 1 … 2j + 1
        self.conv1_in = y[2 * n_out :].copy()
        z = ops.gelu(conv1d(y[: 2 * n_out + 1], w.conv1_weight, w.conv1_bias, 2))  # [n_out, E]
        h = np.concatenate([self.group, self.layers.run(z)])  # [S, E]
        n_groups = len(h) // self.cfg.audio.downsample_factor
        self.group = h[n_groups * self.cfg.audio.downsample_factor :].copy()
        return adapter(h[: len(h) - len(self.group)], w, self.cfg)  # [k, D]


class Encoder:
    """Incremental encoders of up to `capacity` slots (the backend's Encoder, voxtral/backend.py); on the
    CPU each slot's stream simply runs in turn."""

    def __init__(self, w: Weights, cfg: ModelConfig, capacity: int, chunk: int, dtype=np.float32):
        self.w, self.cfg, self.capacity, self.chunk, self.dtype = w, cfg, capacity, chunk, dtype
        self.slots: list[EncoderStream | None] = [None] * capacity

    def free(self) -> int:
        return self.slots.count(None)

    def warm_up(self, rows: int, streams_only: bool = False) -> None:
        """Nothing to prepare on the CPU."""

    def join(self, chunk: int | None = None) -> int:
        """A free slot for a new input; chunk: the most positions its layers run at once."""
        slot = self.slots.index(None)
        self.slots[slot] = EncoderStream(self.w, self.cfg, self.dtype, self.chunk if chunk is None else chunk)
        return slot

    def leave(self, slot: int) -> None:
        self.slots[slot] = None

    @blas_in_pool
    def encode(self, items: list[tuple[int, np.ndarray]]) -> list[np.ndarray]:
        """(slot, its next mel frames [M, T], any T ≥ 0) → each slot's new audio embeddings [k, D]."""
        return [self.slots[slot].feed(mel) for slot, mel in items]

    def nbytes(self) -> int:
        caches = [s.layers.cache for s in self.slots if s is not None]
        return sum(c.k.nbytes + c.v.nbytes for c in caches)
