"""The CuPy backend: the encoder and decoder factories of voxtral/backend.py on an NVIDIA GPU.

Weights are uploaded once (BF16) at construction. All device work goes on one CUDA stream of the
backend, so an encoder pass and the decoder steps that read its embeddings are ordered without syncs.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..checkpoint import Checkpoint
from . import decoder, encoder
from .weights import GpuWeights

log = logging.getLogger(__name__)


class GpuBackend:
    name = "cuda"
    live_chunk = encoder.LIVE_CHUNK_POSITIONS

    def __init__(self, checkpoint: Checkpoint, delay_tokens: int):
        import cupy

        self.cfg = checkpoint.config
        t0 = time.perf_counter()
        self.cuda_stream = cupy.cuda.Stream(non_blocking=True)
        with self.cuda_stream:
            self.weights = GpuWeights.upload(checkpoint.weights, self.cfg, delay_tokens)
        self.cuda_stream.synchronize()
        self.upload_seconds = time.perf_counter() - t0
        log.info("weights on the GPU in %.1f s", self.upload_seconds)

    def encoder(self, capacity: int, chunk: int = encoder.CHUNK_POSITIONS) -> encoder.Encoder:
        """Incremental encoders of up to `capacity` slots; a pass gives a slot ≤ chunk positions."""
        return encoder.Encoder(self.weights, self.cfg, self.cuda_stream, capacity, chunk)

    def decoder(self, capacity: int) -> decoder.Decoder:
        """Up to `capacity` decoder slots stepped together, a CUDA graph per bucket."""
        return decoder.Decoder(self.weights, self.cfg.decoder, self.cuda_stream, capacity)

    def to_numpy(self, x) -> np.ndarray:
        import cupy

        return cupy.asnumpy(x, stream=self.cuda_stream).astype(np.float32)

    def synchronize(self) -> None:
        self.cuda_stream.synchronize()

    def memory_bytes(self) -> dict[str, int]:
        import cupy

        pool = cupy.get_default_memory_pool()
        return {"pool_total": pool.total_bytes(), "pool_used": pool.used_bytes()}
