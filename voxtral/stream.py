"""The online schedule (SPEC §7): audio in chunks of any size → text pieces as soon as they are decided.

    session = model.stream()
    for chunk in chunks:                    # [S] float32 samples at 16 kHz, any S ≥ 0
        for piece in session.feed(chunk):
            print(piece.text, end="", flush=True)
    session.finish()                        # the rest

Per chunk: samples → MelStream (a frame waits for n_fft/2 samples of look-ahead) →
backend.encode_frames (one audio embedding per completed group of 8 frames) → backend.append_audio;
once L = n_left + 1 + n_delay embeddings exist the prompt is prefilled, then one greedy step per new
embedding. The stream starts with offline's n_left tokens of silence and finish() appends offline's
right padding, so a finished stream runs the offline schedule on pad_offline(audio) and yields the
same tokens (its frame count is then a multiple of 8: SPEC §2.3 / §3.2's first-frame drops never
apply). Memory is bounded for any length: MelStream keeps under a token of samples, the encoder
and decoder keep rolling KV windows, consumed embeddings are dropped, long chunks are worked
through in blocks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .audio import MelStream
from .backend import Backend
from .config import FRAME_MS, AudioConfig
from .errors import AudioError, OptionError
from .schedule import Schedule
from .tokenizer import IncrementalDecoder, Tokenizer

FRAME_S = FRAME_MS / 1000
FEED_BLOCK_TOKENS = 64  # a long chunk is worked through 64 tokens (5.12 s) at a time: bounded memory


@dataclass(frozen=True)
class Piece:
    """New text, decided at generated token `step` (k)."""

    text: str  # as the tokens spell it (a word's first piece carries its leading space)
    time: float  # seconds into the audio where it was spoken ≈ (k − 1) × 80 ms (SPEC §6, approximate)
    step: int  # k: the generated token that completed this text (k = 0 is chosen at position L − 1)
    latency: float  # seconds from the arrival of audio frame k (its last sample) to feed()/finish() returning


class Session:
    """One audio stream through the online schedule; feed() chunks, then finish() once."""

    def __init__(
        self,
        backend: Backend,
        schedule: Schedule,
        tokenizer: Tokenizer,
        cfg: AudioConfig,
        on_tokens: Callable[[np.ndarray], None] | None = None,
    ):
        self.backend, self.schedule, self.cfg = backend, schedule, cfg
        self.on_tokens = on_tokens  # gets every generated id (control ids included), in order
        self.n_samples = 0  # audio samples fed (padding not counted)
        self.n_embeds = 0  # audio embeddings appended to the decoder (padding included)
        self.n_steps = 0  # tokens generated
        self.eos = False  # EOS was generated: later audio is not transcribed
        self.finished = False
        self._mel = MelStream(cfg)
        self._enc = backend.start_encoder()
        self._dec = backend.start_stream()
        self._text = IncrementalDecoder(tokenizer)
        self._prefilled = False
        self._arrivals: deque[tuple[int, float]] = deque()  # (frame j, when its last sample came), undecided
        self._advance(np.zeros(schedule.n_left * cfg.samples_per_token, np.float32))

    @property
    def duration(self) -> float:
        """Seconds of audio fed so far."""
        return self.n_samples / self.cfg.sampling_rate

    def feed(self, samples: np.ndarray) -> list[Piece]:
        """Append samples [S] (float, 16 kHz mono, any S ≥ 0); returns the pieces they decided."""
        if self.finished:
            raise OptionError("stream: feed() after finish(); start a new session with model.stream()")
        x = _checked(samples)
        if self.eos:
            self.n_samples += len(x)
            return []
        self._note_arrival(len(x), time.perf_counter())
        self.n_samples += len(x)
        block = FEED_BLOCK_TOKENS * self.cfg.samples_per_token
        decided = [d for start in range(0, len(x), block) for d in self._advance(x[start : start + block])]
        return self._pieces(decided, end=None)

    def finish(self) -> list[Piece]:
        """Append offline's right padding and flush: the remaining pieces. The session is then closed."""
        if self.finished:
            raise OptionError("stream: finish() called twice; start a new session with model.stream()")
        self.finished = True
        end = time.perf_counter()
        spt = self.cfg.samples_per_token
        decided = []
        if not self.eos:
            pad = -self.n_samples % spt + self.schedule.n_right * spt  # to a whole token, then n_right
            self._encode(self._mel.feed(np.zeros(pad, np.float32)))
            self._encode(self._mel.finish())
            decided = self._decode()
        return self._pieces(decided + self._tail(), end=end)

    def _tail(self) -> list[tuple[int, str]]:
        """What the text decoder still holds at the end: an unfinished UTF-8 character, as U+FFFD."""
        tail = self._text.finish()
        return [(max(self.n_steps - 1, 0), tail)] if tail else []

    def run(self, chunks: Iterable[np.ndarray]) -> Iterator[Piece]:
        """feed() every chunk, then finish(): the pieces one by one (the iterator form).

        If the source raises (bad input), the session stays open: finish() flushes what came before.
        """
        for chunk in chunks:
            yield from self.feed(chunk)
        yield from self.finish()

    def _advance(self, samples: np.ndarray) -> list[tuple[int, str]]:
        """Samples → mel frames → embeddings → decoder steps; (k, text) of what got decided."""
        self._encode(self._mel.feed(samples))
        return self._decode()

    def _encode(self, mel: np.ndarray) -> None:
        """Mel frames [M, T] → the audio embeddings they complete, appended to the decoder's audio."""
        if mel.shape[1]:
            embeds = self.backend.encode_frames(self._enc, mel)  # [k, D]
            if len(embeds):
                self.backend.append_audio(self._dec, embeds)
                self.n_embeds += len(embeds)

    def _decode(self) -> list[tuple[int, str]]:
        """Prefill once the prompt's positions have audio, then one greedy step per new embedding."""
        self._prefill_when_ready()
        decided = []
        while (ready := self.ready()) > 0:
            tokens, _ = self.backend.step(self._dec, min(self.backend.burst, ready))
            decided += self._take(tokens)
        return decided

    def _prefill_when_ready(self) -> None:
        prompt = self.schedule.prompt
        if not self._prefilled and self.n_embeds >= len(prompt):
            self.backend.prefill(self._dec, prompt)
            self._prefilled = True

    def ready(self) -> int:
        """Positions with audio that have not run (0 before the prefill and after EOS)."""
        if not self._prefilled or self.eos:
            return 0
        return self.n_embeds - (len(self.schedule.prompt) - 1) - self.n_steps

    def _take(self, tokens: np.ndarray) -> list[tuple[int, str]]:
        """The tokens of the next steps → (k, text) of what they decided; a burst's steps past EOS dropped."""
        keep, ended = self.schedule.cut_at_eos(tokens)
        if self.on_tokens is not None:
            self.on_tokens(keep)
        decided = []
        for t in keep:
            text = self._text.feed(int(t))
            if text:
                decided.append((self.n_steps, text))
            self.n_steps += 1
        self.eos = ended
        return decided

    def _note_arrival(self, n: int, now: float) -> None:
        """Record when each audio frame completed by the next n samples arrived."""
        spt = self.cfg.samples_per_token
        for j in range(self.n_samples // spt, (self.n_samples + n) // spt):
            self._arrivals.append((j, now))

    def _arrival(self, k: int, fallback: float) -> float:
        """When audio frame k had arrived (fallback: frames completed only by finish()'s padding)."""
        while self._arrivals and self._arrivals[0][0] < k:
            self._arrivals.popleft()
        return self._arrivals[0][1] if self._arrivals and self._arrivals[0][0] == k else fallback

    def _pieces(self, decided: list[tuple[int, str]], end: float | None) -> list[Piece]:
        """Pieces, their latency stamped now."""
        now = time.perf_counter()
        return [Piece(text, self._time(k), k, now - self._arrival(k, end or now)) for k, text in decided]

    def _time(self, k: int) -> float:
        """(k − 1) × 80 ms, within the audio fed so far (as Transcript's word ends are)."""
        return round(min(max(0.0, (k - 1) * FRAME_S), self.duration), 3)


def _checked(samples) -> np.ndarray:
    """A 1-D finite float array as float32."""
    x = np.asarray(samples)
    if x.ndim != 1:
        raise AudioError(f"stream: samples must be 1-D [S] (mono, 16 kHz), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise AudioError(f"stream: samples must be float (e.g. float32 in [-1, 1]), got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise AudioError("stream: the samples have non-finite values (NaN or Inf); fix the audio source")
    return x.astype(np.float32, copy=False)
