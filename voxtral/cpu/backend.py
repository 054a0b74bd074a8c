"""The NumPy backend: the encoder and decoder factories of voxtral/backend.py, the readable reference."""

from __future__ import annotations

import numpy as np

from ..checkpoint import Checkpoint, non_finite_error
from . import decoder, encoder


class CpuBackend:
    name = "cpu"
    live_chunk = encoder.LIVE_CHUNK_POSITIONS

    def __init__(self, checkpoint: Checkpoint, delay_tokens: int, dtype=np.float32):
        self.weights = checkpoint.weights
        self.cfg = checkpoint.config
        self.directory = checkpoint.directory
        self.dtype = np.dtype(dtype)
        self.ada = decoder.ada_scales(self.weights, self.cfg.decoder, delay_tokens, self.dtype)  # [L, D]

    def encoder(self, capacity: int, chunk: int = encoder.CHUNK_POSITIONS) -> encoder.Encoder:
        """Incremental encoders of up to `capacity` slots; a slot's layers run ≤ chunk positions at once."""
        return encoder.Encoder(self.weights, self.cfg, capacity, chunk, self.dtype)

    def decoder(self, capacity: int) -> decoder.Decoder:
        """Up to `capacity` decoder slots stepped together."""
        return decoder.Decoder(
            self.weights, self.cfg.decoder, self.ada, capacity, self.dtype, on_non_finite=self._non_finite
        )

    def _non_finite(self) -> None:
        """Logits came out NaN or Inf: name the tensors to blame (a scan of the weights file)."""
        raise non_finite_error(self.directory, self.cfg, "the logits")

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x, np.float32)

    def synchronize(self) -> None:
        pass

    def memory_bytes(self) -> dict[str, int]:
        return {}
