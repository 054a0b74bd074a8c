"""The seam between the schedule and a device: the few operations both backends implement.

The schedule (schedule.py, stream.py) decides what each position gets and when to stop; a backend
only runs the model. Arrays it returns for audio embeddings stay on its device; tokens and logits
come back as NumPy.

Offline: encode(mel) → start(audio) → prefill → step. Streaming (SPEC §7): start_encoder() and
encode_frames() per piece of mel; start_stream() → append_audio() as embeddings arrive → prefill
once the prompt's positions have audio → step one position per new embedding, forever.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Backend(Protocol):
    name: str  # "cpu" or "cuda"
    burst: int  # greedy steps worth running between two host looks at the tokens (EOS check)

    def encode(self, mel: np.ndarray) -> Any:
        """mel [M, T] → audio embeddings [N, D], one per 80 ms, on the backend's device."""

    def start_encoder(self) -> Any:
        """A fresh incremental encoder: zero conv-stem history, empty KV ring at position 0."""

    def encode_frames(self, enc: Any, mel: np.ndarray) -> Any:
        """The stream's next mel frames [M, T] (any T ≥ 0) → the audio embeddings [k, D] they complete.

        k ≥ 0: each complete group of 4 encoder positions (8 frames) yields one row; the rest waits
        in enc. After all frames of a stream whose length is a multiple of 8, the rows returned so
        far equal encode(all frames), up to float rounding.
        """

    def encoder_pool(self, capacity: int) -> Any:
        """Incremental encoders of up to `capacity` live streams: join() → slot, leave(slot)."""

    def encode_pool(self, pool: Any, items: list[tuple[int, np.ndarray]]) -> list[Any]:
        """(slot, next mel frames [M, T]) per stream → each one's new embeddings [k, D], as encode_frames
        would give them, computed together (on the GPU: one pass of the layers for all streams)."""

    def start(self, audio: Any, n_positions: int | None = None) -> Any:
        """A fresh decoder state (KV cache, position 0) reading the given audio embeddings."""

    def start_stream(self) -> Any:
        """A fresh decoder state for an unbounded stream: no audio yet, KV a rolling window of positions."""

    def append_audio(self, state: Any, embeds: Any) -> None:
        """Append audio embeddings [k, D] (from encode_frames) for the next positions; consumed ones may go.

        prefill / step may only run positions whose embedding has been appended.
        """

    def prefill(self, state: Any, tokens: np.ndarray) -> None:
        """Run positions 0 … len−2 with a[p] + E[tokens[p]]; tokens[−1] is the first step's input."""

    def step(
        self, state: Any, n: int, inputs: np.ndarray | None = None, want_logits: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """n greedy steps: input a[p] + E[previous argmax] (or inputs[i] when given, teacher forcing).

        Returns the argmax tokens [n] and, if asked, the logits [n, V] as float32.
        """

    def engine(self, capacity: int, max_positions: int | None = None) -> Any:
        """An engine stepping up to `capacity` decoder streams together (one GEMM per weight for all).

        Its slots: join(audio, n_positions) or join() for a live stream, append_audio(slot, embeds),
        available(slot), prefill(slot, tokens), step(slots, n) → tokens [len(slots), n], leave(slot),
        free(). max_positions bounds every stream (offline inputs; None: unbounded live streams).
        """

    def to_numpy(self, x: Any) -> np.ndarray:
        """A backend array as a NumPy float32 array."""

    def synchronize(self) -> None:
        """Wait for queued device work (timings)."""
