"""The seam between the scheduler and a device: two factories and the few operations they give.

The scheduler (scheduler.py) decides what each position gets and when to stop; a backend only runs
the model. `encoder(capacity, chunk)` gives an Encoder of `capacity` slots, `decoder(capacity)` a
Decoder of `capacity` slots; every request (an offline input, a live stream, a trace) holds one slot
of each while it needs it. Audio embeddings stay on the backend's device; tokens and logits come back
as NumPy. Both backends implement the same Protocols; the CPU one is the readable reference.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Encoder(Protocol):
    """Incremental audio encoders (SPEC §3, §4, §7): conv stem, layers and adapter of many slots."""

    capacity: int

    def free(self) -> int:
        """Slots not in use."""

    def join(self, chunk: int | None = None) -> int:
        """A free slot: zero conv-stem history, empty KV ring at position 0; chunk bounds the positions
        one pass gives it (its ring holds window + chunk − 1 positions)."""

    def leave(self, slot: int) -> None:
        """Free the slot and its memory."""

    def warm_up(self, rows: int, streams_only: bool = False) -> None:
        """Do now what the first live passes of up to `rows` rows would do on first use (on the GPU:
        capture their CUDA graphs; streams_only: only those of live streams alone), and the offline
        passes, so that no request waits for it; nothing on the CPU."""

    def encode(self, items: list[tuple[int, Any]]) -> list[Any]:
        """(slot, its next mel frames [M, T], any T ≥ 0: host, or the backend's log_mel) per slot → its
        new audio embeddings [k, D].

        Each complete group of 4 encoder positions (8 frames) yields one row; the rest waits in the
        slot. After all frames of an input whose length is a multiple of 8, a slot's rows equal the
        one-pass encoding of all its frames, up to float rounding. The slots' new positions run
        together (on the GPU: one pass of the layers over all of them).
        """


class Decoder(Protocol):
    """Text decoder slots (SPEC §5) stepped together: one read of the weights per step for all."""

    capacity: int
    burst: int  # greedy steps worth running between two host looks at the tokens (EOS check)

    def free(self) -> int:
        """Slots not in use."""

    def join(self, positions: int | None = None) -> int:
        """A free slot at position 0 with no audio; positions: how many it will likely run, or None
        (unknown, e.g. a live stream). Its KV cache grows as needed up to the sliding window."""

    def leave(self, slot: int) -> None:
        """Free the slot and its KV cache."""

    def warm_up(self, rows: int | None = None) -> None:
        """Do now what the first step of each batch size (up to the one of `rows` rows; None: every one)
        would do on first use (on the GPU: capture and time each bucket's CUDA graph), so that no
        request waits for it; nothing on the CPU."""

    def append_audio(self, slot: int, embeds: Any) -> None:
        """Audio embeddings [k, D] (from Encoder.encode) for the slot's next positions."""

    def available(self, slot: int) -> int:
        """Positions of the slot that have an audio embedding and have not run."""

    def prefill(self, slots: list[int], tokens: np.ndarray) -> None:
        """Run positions 0 … len−2 of each slot with a[p] + E[tokens[p]]; tokens[−1] is their first
        step's input. The slots run together (on the GPU: one pass over all their rows)."""

    def step(
        self, slots: list[int], n: int, inputs: np.ndarray | None = None, logits: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """n greedy steps of every given slot together: input a[p] + E[previous argmax] (or inputs[r, i],
        teacher forcing). Returns the argmax tokens [k, n] and, if asked, the logits [k, n, V] f32."""


class Backend(Protocol):
    name: str  # "cpu" or "cuda"
    live_chunk: int  # encoder positions per pass of a live stream (its slot's chunk)
    lookahead: int  # audio embeddings an offline job's encoder may run ahead of its decoder

    def encoder(self, capacity: int, chunk: int = ...) -> Encoder:
        """Encoders of up to `capacity` slots; chunk: the positions per pass of an offline input."""

    def decoder(self, capacity: int) -> Decoder:
        """Decoders of up to `capacity` slots."""

    def log_mel(self, windows: list[list[np.ndarray]]) -> list[Any]:
        """Each input's frames' samples, pieces [T_j, n_fft] (PaddedMel.windows) → its normalised log-mel
        [M, ΣT_j] float32 (SPEC §2.3), in what encode() takes: every input of a tick in one go."""

    def to_numpy(self, x: Any) -> np.ndarray:
        """A backend array as a NumPy float32 array."""

    def synchronize(self) -> None:
        """Wait for queued device work (timings)."""

    def mark(self) -> Any:
        """A point in the backend's work queue (stage times without waiting): a device event, or now."""

    def elapsed(self, start: Any, end: Any, wait: bool = False) -> float | None:
        """Seconds between two marks, or None while `end` has not been reached (wait: wait for it)."""

    def memory_bytes(self) -> dict[str, int]:
        """Device memory in use (empty on the CPU)."""
