"""Text decoder on the CPU (SPEC §5): input a[p] + E[token] at position p → logits [V].

`Decoder` is the backend's decoder (voxtral/backend.py): C slots, each with its own KV cache (a ring
that grows to the window), audio embeddings and position; a step embeds one position of every given
slot, runs the layers with the projections as one GEMM over all of them (attention per slot, over
its own cache) and takes each slot's argmax.
Shapes: T positions, k slots in a step, D decoder dim, V vocab, L layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..checkpoint import Weights
from ..config import DecoderConfig
from . import ops
from .linear import blas_in_pool
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


def output_logits(h: np.ndarray, w: Weights, cfg: DecoderConfig) -> np.ndarray:
    """Hidden [T, D] → logits [T, V] through the tied output projection."""
    return ops.linear(ops.rms_norm(h, w.norm, cfg.norm_eps), w.tok_embeddings)


PREFILL_CHUNK = 64  # positions per decoder call in prefill; the ring holds window + chunk − 1
LIVE_RING = 1024  # first KV ring of a slot whose length is unknown; it doubles up to its maximum


@dataclass
class Slot:
    cache: KVCache
    audio: np.ndarray  # [N, D] audio embeddings of positions audio_start … audio_start + N − 1
    audio_start: int = 0  # position of audio[0]: embeddings already consumed are dropped
    pos: int = 0  # next position to run
    pending: int = 0  # input token of the next step


class Decoder:
    """Up to `capacity` decoder slots on the CPU, stepped together."""

    burst = 1  # tokens are on the host already: look at each one

    def __init__(self, w: Weights, cfg: DecoderConfig, ada: np.ndarray | None, capacity: int, dtype,
                 on_non_finite=None):  # fmt: skip
        self.w, self.cfg, self.ada, self.capacity, self.dtype = w, cfg, ada, capacity, np.dtype(dtype)
        self.slots: list[Slot | None] = [None] * capacity
        self.on_non_finite = on_non_finite  # called (to raise) when a step's logits hold NaN or Inf

    def free(self) -> int:
        return self.slots.count(None)

    def warm_up(self, rows: int | None = None) -> None:
        """Nothing to prepare on the CPU."""

    def join(self, positions: int | None = None) -> int:
        """A free slot for a new stream; positions: how many it will likely run (sizes its KV ring)."""
        slot = self.slots.index(None)
        most = self.cfg.sliding_window + PREFILL_CHUNK - 1
        ring = min(most, max(PREFILL_CHUNK, LIVE_RING if positions is None else positions))
        cache = KVCache(self.cfg, ring=ring, dtype=self.dtype, max_ring=most)
        self.slots[slot] = Slot(cache=cache, audio=np.zeros((0, self.cfg.dim), self.dtype))
        return slot

    def leave(self, slot: int) -> None:
        self.slots[slot] = None

    def append_audio(self, slot: int, embeds: np.ndarray) -> None:
        """Audio embeddings [k, D] for the slot's next positions (the consumed ones are dropped)."""
        s = self.slots[slot]
        s.audio = np.concatenate([s.audio[s.pos - s.audio_start :], np.asarray(embeds, self.dtype)])
        s.audio_start = s.pos

    def available(self, slot: int) -> int:
        s = self.slots[slot]
        return s.audio_start + len(s.audio) - s.pos

    def _run(self, slots: list[Slot], tokens: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Inputs tokens [T] at positions pos [T] → hidden [T, D]: T positions of one slot, or one
        position of each of T slots."""
        audio = np.stack([s.audio[p - s.audio_start] for s, p in zip(slots, pos, strict=True)])  # [T, D]
        h = embed(audio, tokens, self.w)
        caches = slots[0].cache if len(set(map(id, slots))) == 1 else [s.cache for s in slots]
        return forward(h, pos, self.w, self.cfg, caches, self.ada)

    @blas_in_pool
    def prefill(self, slots: list[int], tokens: np.ndarray) -> None:
        """Positions 0 … len−2 of each slot with the given inputs; tokens[−1] is their first step's input
        (slot after slot: a CPU pass is as fast per row alone)."""
        tokens = np.asarray(tokens)
        for slot in slots:
            if self.available(slot) < len(tokens):
                raise ValueError(
                    f"slot {slot}: prefill of {len(tokens)} positions with audio for {self.available(slot)}"
                )
        for slot in slots:
            s = self.slots[slot]
            for start in range(0, len(tokens) - 1, PREFILL_CHUNK):
                part = tokens[start : min(start + PREFILL_CHUNK, len(tokens) - 1)]
                self._run([s] * len(part), part, np.arange(s.pos, s.pos + len(part)))
                s.pos += len(part)
            s.pending = int(tokens[-1])

    @blas_in_pool
    def step(self, slots: list[int], n: int, inputs=None, logits: bool = False):
        """n greedy steps of every given slot together → (tokens [k, n], logits [k, n, V] or None).

        inputs [k, n]: the input token of each step (teacher forcing) instead of the previous argmax.
        """
        states = [self.slots[i] for i in slots]
        for i, s in zip(slots, states, strict=True):
            if s is None:
                raise ValueError(f"slot {i} is not in use")
            if self.available(i) < n:
                raise ValueError(f"slot {i}: position {s.pos + n - 1} has no audio embedding yet")
        out = np.empty((len(slots), n), np.int64)  # [k, n]
        all_logits = np.empty((len(slots), n, self.cfg.vocab_size), np.float32) if logits else None
        for j in range(n):
            tokens_in = np.array([s.pending for s in states]) if inputs is None else np.asarray(inputs)[:, j]
            h = self._run(states, tokens_in, np.array([s.pos for s in states]))
            lg = output_logits(h, self.w, self.cfg)  # [k, V]
            if self.on_non_finite is not None and not np.isfinite(lg).all():  # ~0.1 ms of a 0.3 s step
                self.on_non_finite()
            out[:, j] = np.argmax(lg, axis=1)
            if logits:
                all_logits[:, j] = lg
            for s, t in zip(states, out[:, j], strict=True):  # after the step: an interrupted one reruns
                s.pos, s.pending = s.pos + 1, int(t)
        return out, all_logits

    def nbytes(self) -> int:
        return sum(self.kv_bytes(i) + s.audio.nbytes for i, s in enumerate(self.slots) if s is not None)

    def kv_bytes(self, slot: int) -> int:
        c = self.slots[slot].cache
        return c.k.nbytes + c.v.nbytes
