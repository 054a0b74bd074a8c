"""A backend whose decoder emits a fixed token script: the scheduler's rules tested without a model.

It implements the Encoder/Decoder Protocols of voxtral/backend.py: one (empty) audio embedding per 8
mel frames, and per slot the script's tokens in order; it records what the scheduler asked for.
"""

from __future__ import annotations

import time

import numpy as np


class ScriptedEncoder:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.frames: list[int | None] = [None] * capacity

    def free(self) -> int:
        return self.frames.count(None)

    def join(self, chunk=None) -> int:
        slot = self.frames.index(None)
        self.frames[slot] = 0
        return slot

    def leave(self, slot: int) -> None:
        self.frames[slot] = None

    def warm_up(self, rows: int) -> None:
        pass

    def encode(self, items):
        out = []
        for slot, mel in items:
            before = self.frames[slot] // 8
            self.frames[slot] += mel.shape[1]
            out.append(np.zeros((self.frames[slot] // 8 - before, 1), np.float32))
        return out


class ScriptedDecoder:
    def __init__(self, capacity: int, script, burst: int):
        self.capacity, self.script, self.burst = capacity, list(script), burst
        self.slots: list[dict | None] = [None] * capacity
        self.prefills: list[tuple[int, list[int]]] = []  # (embeddings the slot had, prompt)
        self.steps_run = 0  # steps over all slots
        self.calls: list[tuple[int, int]] = []  # (rows, n) of every step call
        self.left_out: list[int] = []  # slots with audio to run that a step call did not take

    def free(self) -> int:
        return self.slots.count(None)

    def join(self, positions=None) -> int:
        slot = self.slots.index(None)
        self.slots[slot] = {"embeds": 0, "pos": 0, "emitted": 0, "prefilled": False}
        return slot

    def leave(self, slot: int) -> None:
        self.slots[slot] = None

    def warm_up(self) -> None:
        pass

    def append_audio(self, slot: int, embeds) -> None:
        self.slots[slot]["embeds"] += len(embeds)

    def available(self, slot: int) -> int:
        s = self.slots[slot]
        return s["embeds"] - s["pos"]

    def prefill(self, slots: list[int], tokens) -> None:
        for slot in slots:
            s = self.slots[slot]
            assert s["embeds"] >= len(tokens), "prefill ran ahead of its audio"
            self.prefills.append((s["embeds"], list(tokens)))
            s["pos"], s["prefilled"] = len(tokens) - 1, True

    def step(self, slots, n, inputs=None, logits=False):
        waiting = [i for i, s in enumerate(self.slots) if s and s["prefilled"] and s["embeds"] > s["pos"]]
        self.left_out += [i for i in waiting if i not in slots]
        out = np.empty((len(slots), n), np.int64)
        for r, i in enumerate(slots):
            s = self.slots[i]
            assert s["pos"] + n <= s["embeds"], "a step ran ahead of its audio"
            out[r] = [self.script[(s["emitted"] + j) % len(self.script)] for j in range(n)]
            s["emitted"] += n
            s["pos"] += n
        self.steps_run += n * len(slots)
        self.calls.append((len(slots), n))
        return out, (np.zeros((len(slots), n, 4), np.float32) if logits else None)


class ScriptedBackend:
    name, live_chunk, lookahead = "scripted", 64, 1024

    def __init__(self, script, burst: int = 4):
        self.script, self.burst = script, burst
        self.made: list = []

    def encoder(self, capacity: int, chunk: int = 512) -> ScriptedEncoder:
        self.made.append(ScriptedEncoder(capacity))
        return self.made[-1]

    def decoder(self, capacity: int) -> ScriptedDecoder:
        self.made.append(ScriptedDecoder(capacity, self.script, self.burst))
        return self.made[-1]

    @property
    def dec(self) -> ScriptedDecoder:
        return self.made[-1]

    def log_mel(self, windows):
        """Frames of the right count (the scripted encoder counts them; their values do not matter)."""
        return [np.zeros((128, sum(len(w) for w in pieces)), np.float32) for pieces in windows]

    def to_numpy(self, x):
        return np.asarray(x, np.float32)

    def synchronize(self) -> None:
        pass

    def mark(self) -> float:
        return time.perf_counter()

    def elapsed(self, start: float, end: float, wait: bool = False) -> float:
        return end - start
