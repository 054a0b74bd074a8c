"""Text decoder on the GPU (SPEC §5): preallocated buffers, prefill, and the graphed greedy step.

Everything a step touches lives in fixed device buffers with a batch dimension B (streams), so a
step is captured once as a CUDA graph and replayed unchanged: the input token, the position and
the audio ring slot are read from device memory, and argmax_advance writes the next token,
advances the position and records the token in a history ring that the host reads once per burst.
Shapes: B streams, T positions, D dim, H/Hkv heads, Dh head dim, F ffn, V vocab, R ring slots.
"""

from __future__ import annotations

import copy

import numpy as np

from ..config import DecoderConfig
from . import ops
from .gemm import gemm
from .gemv import MAX_BATCH, Config, gemv
from .weights import GpuWeights

WO_CONFIG = Config(unroll=4)  # K = 4096: 4 k steps per chunk timed 13.5 µs against 14.6 for the default 6
AUDIO_RING = 256  # audio embedding slots per stream; the host feeds them ahead of each burst
HISTORY = 64  # token history slots per stream; a burst must not exceed it


ROW_ARRAYS = ("tokens", "pos", "stream", "history", "h", "x", "qkv", "q", "o", "gu", "u", "logits")


class DecoderBuffers:
    """All device memory a decoder step uses, for B streams.

    ring: KV slots per stream, the window by default. A shorter ring serves only streams whose
    positions stay below it (offline inputs of known length): attention then looks back at most
    ring − 1 positions, which is all of them.
    """

    def __init__(self, cfg: DecoderConfig, batch: int = 1, ring: int | None = None):
        import cupy

        b, d = batch, cfg.dim
        self.batch = batch
        self.ring = cfg.sliding_window if ring is None else min(ring, cfg.sliding_window)
        cache = (cfg.n_layers, b, self.ring, cfg.n_kv_heads, cfg.head_dim)
        self.k = cupy.empty(cache, np.uint16)  # [L, B, R, Hkv, Dh] bf16
        self.v = cupy.empty(cache, np.uint16)
        self.audio = cupy.zeros((b, AUDIO_RING, d), np.float32)  # [B, Ra, D]
        self.tokens = cupy.zeros(b, np.int32)  # [B] input token of the next step
        self.pos = cupy.zeros(b, np.int32)  # [B] position of the next step
        self.stream = cupy.arange(b, dtype=np.int32)  # [B]
        self.history = cupy.zeros((b, HISTORY), np.int32)  # [B, K] token chosen at position p in slot p % K
        self.h = cupy.empty((b, d), np.float32)  # [B, D] residual stream
        self.x = cupy.empty((b, d), np.uint16)  # [B, D] normed input of a GEMM, bf16
        self.qkv = cupy.empty((b, cfg.q_dim + 2 * cfg.kv_dim), np.float32)
        self.q = cupy.empty((b, cfg.n_heads, cfg.head_dim), np.uint16)
        self.o = cupy.empty((b, cfg.n_heads, cfg.head_dim), np.uint16)
        self.workspace = ops.attention_workspace(b, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim)
        self.gu = cupy.empty((b, 2 * cfg.hidden_dim), np.float32)  # [B, 2F] gate | up
        self.u = cupy.empty((b, cfg.hidden_dim), np.uint16)  # [B, F] bf16
        self.logits = cupy.empty((b, cfg.vocab_size), np.float32)  # [B, V]

    def nbytes(self) -> int:
        return sum(getattr(self, n).nbytes for n in vars(self) if hasattr(getattr(self, n), "nbytes"))

    def rows(self, b: int) -> DecoderBuffers:
        """The first b rows as buffers of batch b (views; caches and audio rings shared; own workspace)."""
        view = copy.copy(self)
        for name in ROW_ARRAYS:
            setattr(view, name, getattr(self, name)[:b])
        view.batch = b
        n_heads, hkv, dh = self.q.shape[1], self.k.shape[3], self.k.shape[4]
        view.workspace = ops.attention_workspace(b, n_heads, hkv, dh)
        return view


def layers(
    w: GpuWeights, cfg: DecoderConfig, buf: DecoderBuffers, h, pos, stream, scratch, pdl=False
) -> None:
    """All decoder layers over h [T, D] f32 (in place) at positions pos [T] of streams stream [T].

    scratch holds the per-position buffers (x, qkv, q, o, workspace, gu, u) sized for T. Up to
    gemv.MAX_BATCH positions (a step) the fused GEMVs carry each RMSNorm, the SwiGLU and the residual
    adds; more (prefill, big batches) take cuBLAS GEMMs. pdl chains the step's launches with
    programmatic dependent launch, so each kernel streams its weights while the previous one ends.
    """
    t, eps = h.shape[0], cfg.norm_eps
    window = min(cfg.sliding_window, buf.k.shape[2])  # a short ring holds every position (see DecoderBuffers)
    fused = t <= MAX_BATCH
    for i, lw in enumerate(w.decoder_layers):
        if fused:
            qkv = gemv(h, lw.wqkv, scratch.qkv, norm_weight=lw.attention_norm, eps=eps, pdl=pdl)
        else:
            qkv = gemm(ops.rms_norm(h, lw.attention_norm, eps, out=scratch.x), lw.wqkv, out=scratch.qkv)
        q = ops.rope_qkv(qkv, pos, stream, buf.k[i], buf.v[i], cfg.rope_theta, out=scratch.q, pdl=pdl)
        o = ops.attention(
            q, buf.k[i], buf.v[i], window, pos=pos, stream=stream, out=scratch.o,
            workspace=scratch.workspace, pdl=pdl,
        )  # fmt: skip
        if fused:
            gemv(o.reshape(t, cfg.q_dim), lw.wo, h, epilogue="add", pdl=pdl, config=WO_CONFIG)
            gemv(h, lw.w13, scratch.u, norm_weight=lw.ffn_norm, eps=eps, epilogue="swiglu", pdl=pdl)
            gemv(scratch.u, lw.w2, h, epilogue="add", pdl=pdl)
        else:
            gemm(o.reshape(t, cfg.q_dim), lw.wo, out=h, beta=1.0)
            x = ops.rms_norm(h, lw.ffn_norm, eps, out=scratch.x)
            ops.silu_mul(gemm(x, lw.w13, out=scratch.gu), out=scratch.u)
            gemm(scratch.u, lw.w2, out=h, beta=1.0)


def step(w: GpuWeights, cfg: DecoderConfig, buf: DecoderBuffers, pdl: bool = True) -> None:
    """One greedy step for every stream; only device buffers in and out (capturable)."""
    ops.embed(buf.tokens, w.tok_embeddings, buf.audio, buf.pos, buf.stream, out=buf.h, pdl=pdl)
    layers(w, cfg, buf, buf.h, buf.pos, buf.stream, buf, pdl=pdl)
    if buf.batch <= MAX_BATCH:
        gemv(buf.h, w.tok_embeddings, buf.logits, norm_weight=w.norm, eps=cfg.norm_eps, pdl=pdl)
    else:
        gemm(ops.rms_norm(buf.h, w.norm, cfg.norm_eps, out=buf.x), w.tok_embeddings, out=buf.logits)
    ops.argmax_advance(buf.logits, buf.tokens, buf.pos, buf.history, pdl=pdl)


class PrefillScratch:
    """Per-position buffers for a prefill of T positions (allocated per call, not graphed)."""

    def __init__(self, cfg: DecoderConfig, t: int):
        import cupy

        self.x = cupy.empty((t, cfg.dim), np.uint16)
        self.qkv = cupy.empty((t, cfg.q_dim + 2 * cfg.kv_dim), np.float32)
        self.q = cupy.empty((t, cfg.n_heads, cfg.head_dim), np.uint16)
        self.o = cupy.empty((t, cfg.n_heads, cfg.head_dim), np.uint16)
        self.workspace = ops.attention_workspace(t, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim)
        self.gu = cupy.empty((t, 2 * cfg.hidden_dim), np.float32)
        self.u = cupy.empty((t, cfg.hidden_dim), np.uint16)


def prefill(
    w: GpuWeights, cfg: DecoderConfig, buf: DecoderBuffers, b: int, tokens: np.ndarray, p0: int
) -> None:
    """Positions p0 … p0+T−1 of stream b with inputs tokens [T], all in one pass per layer."""
    import cupy

    t = len(tokens)
    pos = cupy.arange(p0, p0 + t, dtype=np.int32)
    stream = cupy.full(t, b, dtype=np.int32)
    h = ops.embed(cupy.asarray(tokens, np.int32), w.tok_embeddings, buf.audio, pos, stream)  # [T, D]
    layers(w, cfg, buf, h, pos, stream, PrefillScratch(cfg, t))
