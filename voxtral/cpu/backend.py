"""The NumPy backend: the encoder and decoder factories of voxtral/backend.py, the readable reference."""

from __future__ import annotations

import ctypes
import functools
import platform
import time

import numpy as np

from ..audio import windows_log_mel_many
from ..checkpoint import Checkpoint, non_finite_error
from . import decoder, encoder

MMAP_THRESHOLD = 32 << 20  # bytes: glibc's ceiling for its own dynamic mmap threshold (64-bit)
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # bytes of free heap kept: what glibc pairs with it
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)


@functools.cache
def keep_freed_memory() -> None:
    """Fix glibc malloc's thresholds at the values its own dynamic rule tops out at: blocks under 32 MB
    come from the heap, and up to 64 MB of it is kept when freed. Each 10 s block's mel and encoder
    temporaries (~10 MB) then reuse the same pages; left dynamic, the thresholds stay at the largest
    block freed so far (~3 MB) and the heap is given back and faulted in again at every block (10 min of
    audio, tiny model: 360 000 page faults, ~10 % more CPU time). Only memory once in use is kept, so the
    peak stays about the same. Once per process; nothing off glibc."""
    if platform.libc_ver()[0] != "glibc":
        return
    mallopt = ctypes.CDLL(None).mallopt
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)


class CpuBackend:
    name = "cpu"
    live_chunk = encoder.LIVE_CHUNK_POSITIONS
    # audio embeddings (10 s) an offline job's encoder may run ahead of its decoder: a tick steps once,
    # and a refill reads what this leaves room for, so more would only hold memory (a job's first pull
    # of frames, and [lookahead, D] embeddings in its decoder slot)
    lookahead = 128

    def __init__(self, checkpoint: Checkpoint, delay_tokens: int, dtype=np.float32):
        keep_freed_memory()
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

    def log_mel(self, windows: list[list[np.ndarray]]) -> list[np.ndarray]:
        """Each input's frames' samples (pieces [T_j, n_fft]) → its log-mel [M, ΣT_j] float32 (SPEC §2.3),
        every input in one FFT and one matmul."""
        joined = [w[0] if len(w) == 1 else np.concatenate(w) for w in windows]
        return windows_log_mel_many(joined, self.cfg.audio)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x, np.float32)

    def synchronize(self) -> None:
        pass

    def mark(self) -> float:
        return time.perf_counter()

    def elapsed(self, start: float, end: float, wait: bool = False) -> float:
        return end - start

    def memory_bytes(self) -> dict[str, int]:
        return {}
