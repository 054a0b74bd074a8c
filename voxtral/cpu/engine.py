"""Many decoder streams on the CPU, stepped together: the GPU engine's operations in NumPy.

Each slot is a CpuState (its own KV cache and audio); a batched step embeds one position of every
given slot, runs the layers with the projections as one GEMM over all of them (attention per stream,
over its own cache), and picks each stream's argmax.
"""

from __future__ import annotations

import time

import numpy as np

from . import decoder
from .backend import CpuBackend, CpuState


class CpuEngine:
    burst = 1  # tokens are on the host: look at each step

    def __init__(self, backend: CpuBackend, capacity: int, max_positions: int | None = None):
        if capacity < 1:
            raise ValueError(f"capacity must be ≥ 1, got {capacity}")
        self.backend, self.capacity, self.max_positions = backend, capacity, max_positions
        self.slots: list[CpuState | None] = [None] * capacity

    def free(self) -> int:
        return self.slots.count(None)

    def join(self, audio=None, n_positions: int | None = None) -> int:
        """A free slot for a new stream: offline audio [N, D] with its positions, or None (live)."""
        slot = self.slots.index(None)
        if audio is None:
            state = self.backend.start_stream()
        else:
            n = len(audio) if n_positions is None else n_positions
            if self.max_positions is not None and n > self.max_positions:
                raise ValueError(f"{n} positions exceed the engine's {self.max_positions}")
            state = self.backend.start(audio, n)
        self.slots[slot] = state
        return slot

    def append_audio(self, slot: int, embeds) -> None:
        self.backend.append_audio(self.slots[slot], embeds)

    def available(self, slot: int) -> int:
        s = self.slots[slot]
        return s.audio_start + len(s.audio) - s.pos

    def prefill(self, slot: int, tokens: np.ndarray) -> None:
        self.backend.prefill(self.slots[slot], tokens)

    def leave(self, slot: int) -> None:
        self.slots[slot] = None

    def step(self, slots: list[int], n: int) -> np.ndarray:
        """n greedy steps of every given slot together; the tokens chosen, [len(slots), n]."""
        states = [self.slots[i] for i in slots]
        assert states and all(s is not None for s in states), f"bad slots {slots}"
        b, w, cfg = self.backend, self.backend.weights, self.backend.cfg.decoder
        out = np.empty((len(slots), n), np.int64)  # [k, n]
        for j in range(n):
            pos = np.array([s.pos for s in states])  # [k]
            for i, s in zip(slots, states, strict=True):
                if s.pos >= s.audio_start + len(s.audio):
                    raise ValueError(f"slot {i}: position {s.pos} has no audio embedding yet")
            audio = np.stack([s.audio[s.pos - s.audio_start] for s in states])  # [k, D]
            h = decoder.embed(audio, np.array([s.pending for s in states]), w)  # [k, D]
            h = decoder.forward(h, pos, w, cfg, [s.cache for s in states], b.ada)
            out[:, j] = np.argmax(decoder.logits(h, w, cfg), axis=1)  # [k]
            for s, t in zip(states, out[:, j], strict=True):
                s.pos += 1
                s.pending = int(t)
        return out

    def step_times(self, slots: list[int], n: int) -> np.ndarray:
        """Milliseconds of each of n batched steps."""
        times = np.empty(n)
        for i in range(n):
            t0 = time.perf_counter()
            self.step(slots, 1)
            times[i] = 1000 * (time.perf_counter() - t0)
        return times

    def kv_bytes_per_stream(self) -> int:
        caches = [s.cache for s in self.slots if s is not None]
        return max((c.k.nbytes + c.v.nbytes for c in caches), default=0)

    def nbytes(self) -> int:
        return sum(s.cache.k.nbytes + s.cache.v.nbytes + s.audio.nbytes for s in self.slots if s is not None)
