"""The seam between the schedule and a device: the few operations both backends implement.

The schedule (schedule.py) decides what each position gets and when to stop; a backend only
runs the model. Arrays it returns for audio embeddings stay on its device; tokens and logits
come back as NumPy.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Backend(Protocol):
    name: str  # "cpu" or "cuda"
    burst: int  # greedy steps worth running between two host looks at the tokens (EOS check)

    def encode(self, mel: np.ndarray) -> Any:
        """mel [M, T] → audio embeddings [N, D], one per 80 ms, on the backend's device."""

    def start(self, audio: Any, n_positions: int | None = None) -> Any:
        """A fresh decoder state (KV cache, position 0) reading the given audio embeddings."""

    def prefill(self, state: Any, tokens: np.ndarray) -> None:
        """Run positions 0 … len−2 with a[p] + E[tokens[p]]; tokens[−1] is the first step's input."""

    def step(
        self, state: Any, n: int, inputs: np.ndarray | None = None, want_logits: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """n greedy steps: input a[p] + E[previous argmax] (or inputs[i] when given, teacher forcing).

        Returns the argmax tokens [n] and, if asked, the logits [n, V] as float32.
        """

    def to_numpy(self, x: Any) -> np.ndarray:
        """A backend array as a NumPy float32 array."""

    def synchronize(self) -> None:
        """Wait for queued device work (timings)."""
