"""The CuPy backend: the encoder and decoder factories of voxtral/backend.py on an NVIDIA GPU.

Weights are uploaded once (BF16) at construction. All device work goes on one CUDA stream of the
backend, so an encoder pass and the decoder steps that read its embeddings are ordered without syncs.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..checkpoint import Checkpoint, non_finite_error
from ..config import ModelConfig
from ..errors import ConfigError
from . import decoder, encoder, gemv, kernels, ops
from .mel import GpuMel
from .weights import GpuWeights, has_non_finite

log = logging.getLogger(__name__)


def check_supported(cfg: ModelConfig, smem_block: int) -> None:
    """ConfigError naming the dimension when the CUDA kernels cannot run this model's shapes (before any
    upload): attention compiled for head dims 64 and 128 and ≤ 8 query heads per kv head; a decoder GEMV's
    input rows (up to MAX_BATCH) must fit a block's shared memory (smem_block bytes)."""
    fix = "run it with --device cpu"
    for part, c in (("encoder", cfg.encoder), ("decoder", cfg.decoder)):
        if c.head_dim not in ops.TILED_ROWS:
            compiled = ", ".join(map(str, ops.TILED_ROWS))
            raise ConfigError(f"params.json: {part} head_dim {c.head_dim} is not one the CUDA kernels are "
                              f"compiled for ({compiled}); {fix}")  # fmt: skip
        if c.group not in ops.SPLIT_GROUPS:
            raise ConfigError(
                f"params.json: {part} n_heads / n_kv_heads = {c.group} query heads per kv head; the CUDA "
                f"attention serves {', '.join(map(str, ops.SPLIT_GROUPS))}; {fix}"
            )
    d = cfg.decoder
    for key, k, x_bf16 in (("dim", d.dim, False), ("n_heads × head_dim", d.q_dim, True),
                           ("hidden_dim", d.hidden_dim, True)):  # fmt: skip
        need = gemv.shared_bytes(gemv.MAX_BATCH, k, x_bf16, gemv.DEFAULT)
        if need > smem_block:
            raise ConfigError(
                f"params.json: decoder {key} = {k} is too wide for the CUDA GEMV ({need} B of shared memory "
                f"for {gemv.MAX_BATCH} rows, the GPU allows {smem_block}); {fix}"
            )


class GpuBackend:
    name = "cuda"
    live_chunk = encoder.LIVE_CHUNK_POSITIONS
    lookahead = 1024  # audio embeddings (82 s) an offline job's encoder may run ahead: 4 full passes

    def __init__(self, checkpoint: Checkpoint, delay_tokens: int):
        import cupy

        self.cfg = checkpoint.config
        check_supported(self.cfg, gemv.device_limits(cupy.cuda.Device().id)[2])
        t0 = time.perf_counter()
        device = cupy.cuda.Device().id
        with ThreadPoolExecutor(1) as pool:  # kernels load (or compile) while the weights upload
            loading = pool.submit(kernels.load_all, ops.TEMPLATES, device)
            self.cuda_stream = cupy.cuda.Stream(non_blocking=True)
            with self.cuda_stream:
                self.weights = GpuWeights.upload(checkpoint.weights, self.cfg, delay_tokens)
            self.kernel_origins = loading.result()
        log.info("kernels: %s", ", ".join(f"{f} {o}" for f, o in sorted(self.kernel_origins.items())))
        with self.cuda_stream:
            if has_non_finite(self.weights):
                raise non_finite_error(checkpoint.directory, self.cfg, "some uploaded weights")
        self.cuda_stream.synchronize()
        self.upload_seconds = time.perf_counter() - t0
        self._mel: GpuMel | None = None
        log.info("weights on the GPU in %.1f s", self.upload_seconds)

    def encoder(self, capacity: int, chunk: int = encoder.CHUNK_POSITIONS) -> encoder.Encoder:
        """Incremental encoders of up to `capacity` slots; a pass gives a slot ≤ chunk positions."""
        return encoder.Encoder(self.weights, self.cfg, self.cuda_stream, capacity, chunk)

    def decoder(self, capacity: int) -> decoder.Decoder:
        """Up to `capacity` decoder slots stepped together, a CUDA graph per bucket."""
        return decoder.Decoder(self.weights, self.cfg.decoder, self.cuda_stream, capacity)

    def log_mel(self, windows: list[list[np.ndarray]]) -> list:
        """Each input's frames' samples (host pieces [T_j, n_fft]) → its log-mel [M, ΣT_j] f32 on the
        device (SPEC §2.3; gpu/mel.py): the host only cuts the windows."""
        if self._mel is None:
            with self.cuda_stream:
                self._mel = GpuMel(self.cfg.audio)
        with self.cuda_stream:
            return self._mel.many(windows)

    def to_numpy(self, x) -> np.ndarray:
        import cupy

        if x.ndim == 2 and not x.flags.c_contiguous and x.T.flags.c_contiguous:  # log_mel's frames:
            return cupy.asnumpy(x.T, stream=self.cuda_stream).astype(np.float32).T  # no copy kernel
        return cupy.asnumpy(x, stream=self.cuda_stream).astype(np.float32)

    def synchronize(self) -> None:
        self.cuda_stream.synchronize()

    def mark(self):
        """An event recorded on the stream now: the device's own clock at this point of its queue."""
        import cupy

        event = cupy.cuda.Event()
        event.record(self.cuda_stream)
        return event

    def elapsed(self, start, end, wait: bool = False) -> float | None:
        import cupy

        if not (wait or end.done):
            return None
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) / 1000

    def memory_bytes(self) -> dict[str, int]:
        import cupy

        pool = cupy.get_default_memory_pool()
        return {"pool_total": pool.total_bytes(), "pool_used": pool.used_bytes()}
