"""The CuPy backend: same operations as the NumPy one, on an NVIDIA GPU.

Weights are uploaded once (BF16) at construction. The decoder step is captured as one CUDA graph
on first use and replayed for every step; the host looks at the tokens once per burst of steps.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from ..checkpoint import Checkpoint
from . import decoder, encoder
from .weights import GpuWeights

log = logging.getLogger(__name__)
BURST = 16  # greedy steps launched between two host reads of the token history


@dataclass
class GpuState:
    audio: object  # [N, D] f32 audio embeddings on the device
    n_positions: int
    pos: int = 0  # next position (host mirror of the device counter)
    fed: int = 0  # audio positions copied into the ring so far


class GpuBackend:
    name = "cuda"
    burst = BURST

    def __init__(self, checkpoint: Checkpoint, delay_tokens: int):
        import cupy

        self.cfg = checkpoint.config
        t0 = time.perf_counter()
        self.weights = GpuWeights.upload(checkpoint.weights, self.cfg, delay_tokens)
        self.stream = cupy.cuda.Stream(non_blocking=True)
        with self.stream:
            self.buffers = decoder.DecoderBuffers(self.cfg.decoder, batch=1)
            self.encoder = encoder.EncoderRunner(self.weights, self.cfg)
        self.stream.synchronize()
        self.upload_seconds = time.perf_counter() - t0
        self.graph = None
        log.info("weights on the GPU in %.1f s", self.upload_seconds)

    # --- encoder -------------------------------------------------------------------------------
    def encode(self, mel: np.ndarray):
        with self.stream:
            return encoder.encode(mel, self.encoder, self.weights, self.cfg)

    # --- decoder -------------------------------------------------------------------------------
    def start(self, audio, n_positions: int | None = None) -> GpuState:
        return GpuState(audio=audio, n_positions=len(audio) if n_positions is None else n_positions)

    def _feed(self, state: GpuState, upto: int) -> None:
        """Copy audio embeddings of positions [fed, upto) into their ring slots (stream-ordered)."""
        ring = decoder.AUDIO_RING
        upto = min(upto, len(state.audio))
        while state.fed < upto:
            slot = state.fed % ring
            n = min(upto - state.fed, ring - slot)
            self.buffers.audio[0, slot : slot + n] = state.audio[state.fed : state.fed + n]
            state.fed += n

    def prefill(self, state: GpuState, tokens: np.ndarray) -> None:
        import cupy

        tokens = np.asarray(tokens)
        n = len(tokens) - 1
        assert n + BURST <= decoder.AUDIO_RING, "prompt too long for the audio ring"
        with self.stream:
            self._feed(state, n + 1)
            if n:
                decoder.prefill(self.weights, self.cfg.decoder, self.buffers, 0, tokens[:-1], 0)
            self.buffers.tokens[0:1] = cupy.asarray(tokens[-1:], np.int32)
            self.buffers.pos[0:1] = n
        state.pos = n

    def _capture(self) -> None:
        """Capture one decoder step as a CUDA graph (after one eager warm-up run of the same step)."""
        buf = self.buffers
        saved = (buf.tokens.copy(), buf.pos.copy(), buf.history.copy())
        decoder.step(self.weights, self.cfg.decoder, buf)  # warm-up: compiles kernels, sets up cuBLAS
        buf.tokens[...], buf.pos[...], buf.history[...] = saved
        self.stream.begin_capture()
        decoder.step(self.weights, self.cfg.decoder, buf)
        self.graph = self.stream.end_capture()

    def step(self, state: GpuState, n: int, inputs=None, want_logits: bool = False):
        tokens = np.empty(n, np.int64)
        logits = np.empty((n, self.cfg.decoder.vocab_size), np.float32) if want_logits else None
        with self.stream:
            if self.graph is None:
                self._capture()
            for start in range(0, n, decoder.HISTORY):  # the history ring holds HISTORY steps
                count = min(decoder.HISTORY, n - start)
                part = None if inputs is None else inputs[start : start + count]
                out = None if logits is None else logits[start : start + count]
                tokens[start : start + count] = self._launch(state, count, part, out)
        return tokens, logits

    def _launch(self, state: GpuState, n: int, inputs, logits) -> np.ndarray:
        """n graph replays, then one read of the history ring: the tokens chosen at those positions."""
        import cupy

        buf = self.buffers
        self._feed(state, state.pos + n)
        for i in range(n):
            if inputs is not None:
                buf.tokens[0:1] = cupy.asarray(inputs[i : i + 1], np.int32)
            self.graph.launch(self.stream)
            if logits is not None:
                logits[i] = cupy.asnumpy(buf.logits[0], stream=self.stream)
        slots = (state.pos + np.arange(n)) % decoder.HISTORY
        state.pos += n
        return cupy.asnumpy(buf.history[0], stream=self.stream)[slots]

    def step_times(self, state: GpuState, n: int) -> np.ndarray:
        """Milliseconds of each of n greedy steps (a CUDA event pair around every graph replay)."""
        import cupy

        times = []
        with self.stream:
            if self.graph is None:
                self._capture()
            for start in range(0, n, decoder.HISTORY):
                count = min(decoder.HISTORY, n - start)
                self._feed(state, state.pos + count)
                pairs = [(cupy.cuda.Event(), cupy.cuda.Event()) for _ in range(count)]
                for begin, end in pairs:
                    begin.record(self.stream)
                    self.graph.launch(self.stream)
                    end.record(self.stream)
                pairs[-1][1].synchronize()
                times += [cupy.cuda.get_elapsed_time(begin, end) for begin, end in pairs]
                state.pos += count
        return np.array(times)

    def to_numpy(self, x) -> np.ndarray:
        import cupy

        return cupy.asnumpy(x, stream=self.stream).astype(np.float32)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def memory_bytes(self) -> dict[str, int]:
        import cupy

        pool = cupy.get_default_memory_pool()
        return {"pool_total": pool.total_bytes(), "pool_used": pool.used_bytes()}
