"""The CuPy backend: same operations as the NumPy one, on an NVIDIA GPU.

Weights are uploaded once (BF16) at construction. The decoder step is captured as one CUDA graph
on first use and replayed for every step; the host looks at the tokens once per burst of steps.
The backend holds one set of decoder buffers: one decoder state (offline or stream) runs at a time,
and start() / start_stream() take the buffers over. Many concurrent streams go through engine()
(voxtral/gpu/engine.py), which steps them together.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..checkpoint import Checkpoint
from . import decoder, encoder
from .state import GpuState
from .weights import GpuWeights

log = logging.getLogger(__name__)
BURST = 16  # greedy steps launched between two host reads of the token history


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
        self._owner: GpuState | None = None
        log.info("weights on the GPU in %.1f s", self.upload_seconds)

    # --- encoder -------------------------------------------------------------------------------
    def encode(self, mel: np.ndarray):
        with self.stream:
            return encoder.encode(mel, self.encoder, self.weights, self.cfg)

    def start_encoder(self) -> encoder.EncoderStream:
        with self.stream:
            return encoder.EncoderStream(self.weights, self.cfg)

    def encode_frames(self, enc: encoder.EncoderStream, mel: np.ndarray):
        with self.stream:
            return enc.feed(mel)  # [k, D] f32 on the device

    def encoder_pool(self, capacity: int) -> encoder.EncoderPool:
        with self.stream:
            return encoder.EncoderPool(self.weights, self.cfg, capacity)

    def encode_pool(self, pool: encoder.EncoderPool, items: list) -> list:
        with self.stream:
            return pool.encode(items)

    # --- decoder -------------------------------------------------------------------------------
    def start(self, audio, n_positions: int | None = None) -> GpuState:
        state = GpuState(n_positions=len(audio) if n_positions is None else n_positions)
        state.append(audio)
        self._owner = state
        return state

    def start_stream(self) -> GpuState:
        state = GpuState(n_positions=None)  # the KV cache is a ring of the window: positions roll on
        self._owner = state
        return state

    def append_audio(self, state: GpuState, embeds) -> None:
        state.append(embeds)

    def _check_owner(self, state: GpuState) -> None:
        if state is not self._owner:
            raise RuntimeError("this decoder state was replaced by a later start(): one runs at a time")

    def _feed(self, state: GpuState, upto: int) -> None:
        state.feed(self.buffers.audio[0], upto)

    def prefill(self, state: GpuState, tokens: np.ndarray) -> None:
        import cupy

        self._check_owner(state)
        tokens = np.asarray(tokens)
        n = len(tokens) - 1
        assert n + BURST <= decoder.AUDIO_RING, "prompt too long for the audio ring"
        if state.available < n + 1:
            raise ValueError(
                f"prefill of {n + 1} positions with audio for {state.available} (append_audio first)"
            )
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
        self._check_owner(state)
        if state.n_positions is None and state.pos + n > state.available:
            raise ValueError(f"position {state.pos + n - 1} has no audio embedding yet (append_audio first)")
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

    def engine(self, capacity: int, max_positions: int | None = None):
        """capacity decoder streams stepped together, a CUDA graph per bucket (voxtral/gpu/engine.py)."""
        from .engine import GpuEngine

        return GpuEngine(self, capacity, max_positions)

    def to_numpy(self, x) -> np.ndarray:
        import cupy

        return cupy.asnumpy(x, stream=self.stream).astype(np.float32)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def memory_bytes(self) -> dict[str, int]:
        import cupy

        pool = cupy.get_default_memory_pool()
        return {"pool_total": pool.total_bytes(), "pool_used": pool.used_bytes()}
