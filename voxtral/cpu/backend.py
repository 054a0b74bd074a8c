"""The NumPy backend: the readable reference, same operations as the GPU backend."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..checkpoint import Checkpoint
from . import decoder, encoder
from .transformer import KVCache


@dataclass
class CpuState:
    audio: np.ndarray  # [N, D] audio embeddings of positions audio_start … audio_start + N − 1
    cache: KVCache
    pos: int = 0  # next position to run
    pending: int = -1  # input token of the next step
    audio_start: int = 0  # position of audio[0]: a stream drops the embeddings it has consumed


PREFILL_CHUNK = 64  # positions per decoder call in prefill; the ring holds window + chunk − 1


class CpuBackend:
    name = "cpu"
    burst = 1  # tokens are on the host already: look at each one

    def __init__(self, checkpoint: Checkpoint, delay_tokens: int, dtype=np.float32):
        self.weights = checkpoint.weights
        self.cfg = checkpoint.config
        self.dtype = np.dtype(dtype)
        self.ada = decoder.ada_scales(self.weights, self.cfg.decoder, delay_tokens, self.dtype)  # [L, D]

    def encode(self, mel: np.ndarray) -> np.ndarray:
        x = encoder.encode(mel, self.weights, self.cfg, self.dtype)  # [S, E]
        return encoder.adapter(x, self.weights, self.cfg)  # [N, D]

    def start_encoder(self) -> encoder.EncoderStream:
        return encoder.EncoderStream(self.weights, self.cfg, self.dtype)

    def encode_frames(self, enc: encoder.EncoderStream, mel: np.ndarray) -> np.ndarray:
        return enc.feed(mel)  # [k, D]

    def encoder_pool(self, capacity: int) -> encoder.EncoderPool:
        return encoder.EncoderPool(self.weights, self.cfg, capacity, self.dtype)

    def encode_pool(self, pool: encoder.EncoderPool, items: list) -> list[np.ndarray]:
        return pool.encode(items)

    def start(self, audio: np.ndarray, n_positions: int | None = None) -> CpuState:
        n = len(audio) if n_positions is None else n_positions
        cache = decoder.new_cache(self.cfg.decoder, max(n, 1), max_new=PREFILL_CHUNK, dtype=self.dtype)
        return CpuState(audio=np.asarray(audio, self.dtype), cache=cache)

    def start_stream(self) -> CpuState:
        dec = self.cfg.decoder
        cache = KVCache(dec, ring=dec.sliding_window + PREFILL_CHUNK - 1, dtype=self.dtype)  # rolls forever
        return CpuState(audio=np.zeros((0, dec.dim), self.dtype), cache=cache)

    def append_audio(self, state: CpuState, embeds: np.ndarray) -> None:
        consumed = state.pos - state.audio_start
        state.audio = np.concatenate([state.audio[consumed:], np.asarray(embeds, self.dtype)])
        state.audio_start = state.pos

    def _run(self, state: CpuState, tokens: np.ndarray) -> np.ndarray:
        pos = np.arange(state.pos, state.pos + len(tokens))
        if pos[-1] >= state.audio_start + len(state.audio):
            raise ValueError(f"position {pos[-1]} has no audio embedding yet (append_audio first)")
        h = decoder.embed(state.audio[pos - state.audio_start], np.asarray(tokens), self.weights)  # [T, D]
        state.pos += len(tokens)
        return decoder.forward(h, pos, self.weights, self.cfg.decoder, state.cache, self.ada)

    def prefill(self, state: CpuState, tokens: np.ndarray) -> None:
        tokens = np.asarray(tokens)
        for start in range(0, len(tokens) - 1, PREFILL_CHUNK):
            self._run(state, tokens[start : min(start + PREFILL_CHUNK, len(tokens) - 1)])
        state.pending = int(tokens[-1])

    def step(self, state: CpuState, n: int, inputs=None, want_logits: bool = False):
        tokens = np.empty(n, np.int64)
        logits = np.empty((n, self.cfg.decoder.vocab_size), np.float32) if want_logits else None
        for i in range(n):
            token_in = state.pending if inputs is None else int(inputs[i])
            row = decoder.logits(self._run(state, np.array([token_in])), self.weights, self.cfg.decoder)[0]
            state.pending = tokens[i] = int(np.argmax(row))
            if want_logits:
                logits[i] = row
        return tokens, logits

    def step_times(self, state: CpuState, n: int) -> np.ndarray:
        """Milliseconds of each of n greedy steps."""
        times = np.empty(n)
        for i in range(n):
            t0 = time.perf_counter()
            self.step(state, 1)
            times[i] = 1000 * (time.perf_counter() - t0)
        return times

    def engine(self, capacity: int, max_positions: int | None = None):
        """capacity decoder streams stepped together (voxtral/cpu/engine.py)."""
        from .engine import CpuEngine

        return CpuEngine(self, capacity, max_positions)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x, np.float32)

    def synchronize(self) -> None:
        pass
