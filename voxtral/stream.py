"""Live transcription (SPEC §7): audio in chunks of any size → text pieces as soon as they are decided.

    session = model.stream()
    for chunk in chunks:                    # [S] float32 samples at 16 kHz, any S ≥ 0
        for piece in session.feed(chunk):
            print(piece.text, end="", flush=True)
    session.finish()                        # the rest

A Session is one live job of the model's scheduler (scheduler.py): feed() pushes its samples and
drives the engine until they have run through (mel → encoder → one decoder step per new audio
embedding, prefill once the prompt has audio); the text and latency bookkeeping live here. The job
has offline's padding (n_left silent tokens first, the right padding at finish()), so a finished
stream gives the offline tokens. A server's sessions (server.py) do not drive: the server's step()
runs the engine for all of them. Memory is bounded for any length.
"""

from __future__ import annotations

import numbers
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .confidence import check_options, score
from .config import FRAME_MS, AudioConfig
from .errors import AudioError, OptionError
from .scheduler import Job, Scheduler
from .tokenizer import IncrementalDecoder, Tokenizer

FRAME_S = FRAME_MS / 1000


@dataclass(frozen=True)
class Piece:
    """New text, decided at generated token `step` (k)."""

    text: str  # as the tokens spell it (a word's first piece carries its leading space)
    time: float  # seconds into the audio where it was spoken ≈ (k − 1) × 80 ms (SPEC §6, approximate)
    step: int  # k: the generated token that completed this text (k = 0 is chosen at position L − 1)
    latency: float  # seconds from the arrival of audio frame k (its last sample) to the piece's return
    prob: float | None = None  # with confidence: the probability of token k
    alternatives: tuple = ()  # with alternatives: rival tokens of token k (confidence.Alternative)


def check_idle_timeout(idle_timeout) -> None:
    """OptionError unless idle_timeout is None or a positive number of seconds (not a bool: a str compared
    was a TypeError)."""
    bad = isinstance(idle_timeout, bool) or not isinstance(idle_timeout, numbers.Real | None)
    if bad or (idle_timeout is not None and not idle_timeout > 0):
        raise OptionError(f"idle_timeout must be a positive number of seconds or None, got {idle_timeout!r}")


class Session:
    """One live audio stream: feed() chunks, then finish() once (or close() to abandon it).

    A context manager: leaving the block closes the session (call finish() inside it for the rest of
    the text). A session dropped without finish() or close() is closed when it is garbage-collected,
    and one not fed for `idle_timeout` seconds is closed by the engine (its next feed raises
    SessionError), so an abandoned session never keeps its slot.
    """

    def __init__(
        self,
        engine: Scheduler,
        tokenizer: Tokenizer,
        cfg: AudioConfig,
        on_tokens: Callable[[np.ndarray], None] | None = None,
        idle_timeout: float | None = None,
        drive: bool = True,
        confidence: bool = False,
        alternatives: float | None = None,
    ):
        check_idle_timeout(idle_timeout)
        check_options(confidence, alternatives)
        self.cfg, self.on_tokens, self._engine, self._drive = cfg, on_tokens, engine, drive
        self._opener = "model.stream()" if drive else "server.open()"  # where a new session comes from
        self.n_samples = 0  # audio samples fed (padding not counted)
        self.finished = False  # finish() or close() was called
        self.closed = False  # close() was called: the session counts against no server's capacity
        self._scores: deque | None = deque() if confidence or alternatives is not None else None
        # the job must not reference the session (it is closed when garbage-collected): only the deque
        scores, on_logits = self._scores, None
        if scores is not None:

            def on_logits(tokens, logits) -> None:
                scores.extend(score(logits, tokens, tokenizer, alternatives))

        self._job = engine.submit(Job(None, idle_timeout=idle_timeout, on_logits=on_logits))
        self._text = IncrementalDecoder(tokenizer)
        self._seen = 0  # generated tokens turned into pieces so far
        self._flushed = False  # the text decoder's tail was given out
        self._end: float | None = None  # when finish() was called
        self._arrivals: deque[tuple[int, float]] = deque()  # (frame j, when its last sample came), undecided
        weakref.finalize(self, engine.close, self._job)

    # --- state -----------------------------------------------------------------------------------
    @property
    def duration(self) -> float:
        """Seconds of audio fed so far."""
        return self.n_samples / self.cfg.sampling_rate

    @property
    def n_embeds(self) -> int:
        """Audio embeddings the decoder has received (padding included)."""
        return self._job.n_embeds

    @property
    def n_steps(self) -> int:
        """Tokens generated so far."""
        return self._job.n_steps

    @property
    def eos(self) -> bool:
        """EOS was generated: later audio is not transcribed."""
        return self._job.eos

    @property
    def settled(self) -> bool:
        """Everything fed so far (and the end, once finish() was called) has run through the model."""
        return self._job.settled()

    @property
    def done(self) -> bool:
        """Finished or closed, and every piece given out: the session holds no slot any more."""
        return self._job.finished and (self._flushed or self._job.closed or self._job.error is not None)

    @property
    def error(self):
        """The VoxtralError that ended the session (idle expiry, bad audio), or None."""
        return self._job.error

    @property
    def pending(self) -> bool:
        """collect() has something new: tokens generated since the last call, or the end's flush."""
        return self._job.has_tokens() or (self._job.finished and self.finished and not self._flushed)

    @property
    def backlog(self) -> float:
        """Seconds of audio fed but not yet taken in by the front end (a fast feeder's queue)."""
        return (self.n_samples - self._job.n_samples) / self.cfg.sampling_rate

    # --- audio in, text out ----------------------------------------------------------------------
    def feed(self, samples: np.ndarray) -> list[Piece]:
        """Append samples [S] (float, 16 kHz mono, any S ≥ 0); returns the pieces they decided (a
        server's session returns none: every piece comes from the server's step() or pump()).

        Raises AudioError for bad samples, OptionError after finish(), SessionError once the session
        was closed for being idle.
        """
        if self.finished:
            after = "finish()" if self._end is not None else "close()"
            raise OptionError(f"stream: feed() after {after}; start a new session with {self._opener}")
        x = _checked(samples)
        if self._job.error is not None:
            raise self._job.error
        if not self.eos:
            self._note_arrival(len(x), time.perf_counter())
            if len(x):
                self._engine.push(self._job, x)
        self.n_samples += len(x)
        if not self._drive:  # a server's session: its pieces come from the server (step, pump)
            return []
        if not self.eos:
            self._engine.run_until(self._job.settled)
        return self.collect()

    def finish(self) -> list[Piece]:
        """Append offline's right padding and flush: the remaining pieces (a server's session: none, they
        come from the server's step() or pump()). The session is then closed.

        Raises AudioError if no audio was fed at all."""
        if self.finished:
            again = "finish() called twice" if self._end is not None else "finish() after close()"
            raise OptionError(f"stream: {again}; start a new session with {self._opener}")
        self.finished, self._end = True, time.perf_counter()
        self._engine.end(self._job)
        if not self._drive:  # a server's session: the rest comes from the server (step, pump)
            return []
        self._engine.run_until(lambda: self._job.finished)
        if self._job.error is not None:
            raise self._job.error
        return self.collect()

    def close(self) -> None:
        """Abandon the stream: its slots are freed, text not yet returned is dropped."""
        self.finished = self.closed = True
        self._engine.close(self._job)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, chunks: Iterable[np.ndarray]) -> Iterator[Piece]:
        """feed() every chunk, then finish(): the pieces one by one (the iterator form).

        If the source raises (bad input), the session stays open: finish() flushes what came before.
        """
        for chunk in chunks:
            yield from self.feed(chunk)
        yield from self.finish()

    def collect(self) -> list[Piece]:
        """The pieces decided since the last call (a server's step() calls this for its sessions)."""
        new = np.array(self._job.take_tokens(), np.int64)
        k0, self._seen = self._seen, self._seen + len(new)
        if len(new) and self.on_tokens is not None:
            self.on_tokens(new)
        scores = [self._scores.popleft() for _ in new] if self._scores is not None else [None] * len(new)
        decided = [
            (k0 + i, text, sc)
            for i, (t, sc) in enumerate(zip(new, scores, strict=True))
            if (text := self._text.feed(int(t)))
        ]
        if self._job.finished and self.finished and not self._flushed:
            self._flushed = True
            tail = self._text.finish()  # an unfinished UTF-8 character at the end, as U+FFFD
            decided += [(max(self._seen - 1, 0), tail, None)] if tail else []
        return self._pieces(decided)

    # --- latency ---------------------------------------------------------------------------------
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

    def _pieces(self, decided: list[tuple]) -> list[Piece]:
        """(k, text, TokenScore or None) → pieces, their latency stamped now."""
        now = time.perf_counter()
        end = self._end or now
        return [
            Piece(
                text,
                self._time(k),
                k,
                now - self._arrival(k, end),
                *(() if sc is None else (sc.prob, tuple(sc.alternatives))),
            )
            for k, text, sc in decided
        ]

    def _time(self, k: int) -> float:
        """(k − 1) × 80 ms, within the audio fed so far (as Transcript's word ends are)."""
        return round(min(max(0.0, (k - 1) * FRAME_S), self.duration), 3)


def _checked(samples) -> np.ndarray:
    """A 1-D finite float array as float32."""
    if isinstance(samples, str | bytes) or samples is None:
        raise AudioError(
            f"stream: samples must be a 1-D float array [S] (mono, 16 kHz), got {type(samples).__name__}"
        )
    x = np.asarray(samples)
    if x.ndim != 1:
        raise AudioError(f"stream: samples must be 1-D [S] (mono, 16 kHz), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise AudioError(f"stream: samples must be float (e.g. float32 in [-1, 1]), got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise AudioError("stream: the samples have non-finite values (NaN or Inf); fix the audio source")
    if x.dtype == np.float32:  # finite already: nothing to narrow
        return x
    with np.errstate(over="ignore"):
        y = x.astype(np.float32, copy=False)
    if not np.isfinite(y).all():
        raise AudioError("stream: samples beyond float32's range (e.g. 1e39); scale them to [-1, 1]")
    return y
