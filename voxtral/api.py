"""The public API: load() a checkpoint onto a device; Model.transcribe(), .stream(), .trace() and friends.

A Model owns one engine (scheduler.py: one encoder pool, one decoder, one loop): every method here
is a request pattern for it. transcribe() is one job, transcribe_each()/transcribe_batch() many at
once, stream() a live job, trace() a job with forced inputs and logits kept. Any mix of them may run
at once, from any number of threads; their decoder steps are shared.
"""

from __future__ import annotations

import logging
import os
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import audio as audio_io
from .checkpoint import DEFAULT_MODEL, Checkpoint, load_checkpoint
from .confidence import check_options, score
from .config import FRAME_MS, MAX_CAPACITY
from .errors import DeviceError, OptionError, VoxtralError
from .schedule import Schedule, delay_tokens
from .scheduler import Job, Scheduler
from .stream import Session
from .transcript import LiveSegments, Segment, Transcript, aligned_words, build_segments

log = logging.getLogger(__name__)


@dataclass
class _Running:
    """An input of transcribe_each in the engine: its index, token scores, live segments, tokens taken."""

    index: int
    scores: list | None
    live: LiveSegments | None
    tokens: array = field(default_factory=lambda: array("i"))  # 4 bytes a token, however long the input


DEVICES = ("auto", "cpu", "cuda")
DEFAULT_CAPACITY = 32  # requests the engine runs at once (decoder and encoder slots); more wait in line


@dataclass(frozen=True)
class Trace:
    """Intermediate results of the offline schedule, for conformance checks (all NumPy float32)."""

    mel: np.ndarray  # [M, T]
    audio_embeds: np.ndarray  # [N, D]
    logits: np.ndarray  # [n_steps, V]
    tokens: np.ndarray  # [n_steps] the backend's own argmax at each step


class Model:
    def __init__(
        self, checkpoint: Checkpoint, backend, schedule: Schedule, load_seconds: float, capacity: int
    ):
        self.checkpoint = checkpoint
        self.backend = backend
        self.schedule = schedule
        self.load_seconds = load_seconds
        self.capacity = capacity
        self.engine = Scheduler(backend, schedule, checkpoint.config.audio, capacity)

    @property
    def config(self):
        return self.checkpoint.config

    @property
    def tokenizer(self):
        return self.checkpoint.tokenizer

    @property
    def device(self) -> str:
        return self.backend.name

    def transcribe(
        self,
        audio,
        sample_rate: int | None = None,
        confidence: bool = False,
        alternatives: float | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Transcript:
        """Transcribe a file path or an array ([S] or [S, C], with its sample_rate) (SPEC §6).

        confidence: give every token its probability (Transcript.scores); alternatives=P also lists
        the rival tokens whose probability is within P of the chosen one (implies confidence). The
        audio is read in blocks: memory stays flat for any length. cancelled: asked between engine ticks
        (from any thread); once it returns True the job is abandoned (its slots freed at the next tick)
        and SessionError raised. Raises AudioError for audio that cannot be read, OptionError for bad
        options.
        """
        if cancelled is not None and not callable(cancelled):
            raise OptionError(
                f"cancelled must be a function of no arguments returning bool, got {cancelled!r}"
            )
        job, scores = self._job(audio, sample_rate, confidence, alternatives)
        return self._transcript(self.engine.run(job, cancelled), scores)

    def transcribe_each(
        self,
        inputs,
        batch_size: int = 8,
        sample_rate: int | None = None,
        confidence: bool = False,
        alternatives: float | None = None,
        on_progress: Callable[[int, float], None] | None = None,
        on_segment: Callable[[int, Segment], None] | None = None,
    ) -> Iterator[tuple[int, Transcript | VoxtralError]]:
        """Transcribe many inputs, up to batch_size at once; yields (index, Transcript or that input's
        error) as each finishes. Inputs decode together, one decoder step for all of them (continuous
        batching: one that ends leaves at once and the next one joins); each gives exactly the tokens
        it gives alone. Inputs are paths or arrays; sample_rate applies to the arrays.
        on_progress(index, seconds) gets the audio seconds of each running input decoded so far, and
        on_segment(index, segment) each segment of its transcript as soon as it is final (the same
        segments, in order, as the Transcript's), as the engine goes (in the thread that iterates).
        Stopping early (closing the iterator, an exception in a callback, Ctrl-C) abandons the inputs
        still running: their slots are freed at the next engine tick."""
        whole = isinstance(batch_size, int) and not isinstance(batch_size, bool)
        if not whole or not 1 <= batch_size <= MAX_CAPACITY:
            raise OptionError(f"batch_size must be a whole number, 1 to {MAX_CAPACITY}; got {batch_size!r}")
        if isinstance(inputs, str | bytes | Path) or (isinstance(inputs, np.ndarray) and inputs.ndim < 2):
            raise OptionError(
                "inputs must be a list of paths or arrays (one input: use transcribe), got "
                f"{type(inputs).__name__} {str(inputs)[:60]!r}"
            )
        pending = iter(enumerate(inputs))
        running: dict[Job, _Running] = {}
        rate_out = self.config.audio.sampling_rate
        try:
            while True:
                while len(running) < batch_size and (item := next(pending, None)) is not None:
                    i, x = item
                    try:
                        rate = sample_rate if isinstance(x, np.ndarray) else None
                        job, scores = self._job(x, rate, confidence, alternatives)
                    except VoxtralError as e:
                        yield i, e
                        continue
                    live = None if on_segment is None else LiveSegments(self.tokenizer)
                    running[self.engine.submit(job)] = _Running(i, scores, live)

                def done() -> bool:
                    for job, r in running.items():
                        if on_progress is not None:
                            on_progress(r.index, job.n_steps * FRAME_MS / 1000)
                        if r.live is not None:  # between engine ticks, in this thread: the job is whole
                            new = job.take_tokens()
                            r.tokens.extend(new)
                            for seg in r.live.add(new, job.n_samples / rate_out):
                                on_segment(r.index, seg)
                    return any(j.finished for j in running)

                if not running:
                    return
                self.engine.run_until(done)
                for job in [j for j in running if j.finished]:
                    r = running.pop(job)
                    if job.error is not None:
                        yield r.index, job.error
                        continue
                    new = job.take_tokens()
                    r.tokens.extend(new)
                    if r.live is not None:  # its segments are the transcript's: they are given out first
                        duration = job.n_samples / rate_out
                        for seg in r.live.add(new, duration) + r.live.finish(duration):
                            on_segment(r.index, seg)
                    del new  # ~36 bytes a token: not kept while the caller has the transcript
                    yield r.index, self._transcript(job, r.scores, r.tokens, r.live, batch_size=batch_size)
        finally:  # abandoned (the caller stopped iterating, an exception in a callback, Ctrl-C): what still
            for job in running:  # runs leaves at the next tick, as a cancelled transcribe() does
                self.engine.close(job)

    def transcribe_batch(
        self,
        inputs,
        batch_size: int = 8,
        sample_rate: int | None = None,
        confidence: bool = False,
        alternatives: float | None = None,
    ) -> list[Transcript]:
        """transcribe_each, collected in input order; the first failed input's error is raised."""
        results = dict(self.transcribe_each(inputs, batch_size, sample_rate, confidence, alternatives))
        ordered = [results[i] for i in range(len(results))]
        for r in ordered:
            if isinstance(r, VoxtralError):
                raise r
        return ordered

    def stream(
        self,
        delay_ms: int | None = None,
        on_tokens=None,
        idle_timeout: float | None = None,
        confidence: bool = False,
        alternatives: float | None = None,
    ) -> Session:
        """A live session: feed() 16 kHz float32 chunks, get text pieces as they are decided (SPEC §7).

        delay_ms must be the model's (fixed at load: the decoder is conditioned on it). on_tokens, if
        given, receives every generated id in order. idle_timeout: close the session when it has not
        been fed for this many seconds (None: never). confidence / alternatives: each piece carries
        the probability (and rivals within that margin) of the token that completed it.
        """
        check_options(confidence, alternatives)  # before warm_up's captures (Session checks them again)
        if delay_ms is not None and delay_tokens(delay_ms) != self.schedule.n_delay:
            raise OptionError(
                f"this model was loaded for delay_ms={self.schedule.delay_ms}; to stream with "
                f"{delay_ms} ms load it with voxtral.load(..., delay_ms={delay_ms})"
            )
        self.engine.warm_up(streams=1)  # the graphs of a stream's ticks: captured once per model
        return Session(
            self.engine, self.tokenizer, self.config.audio, on_tokens, idle_timeout,
            confidence=confidence, alternatives=alternatives,
        )  # fmt: skip

    def trace(self, audio, n_steps: int, forced_tokens=None, sample_rate: int | None = None) -> Trace:
        """mel, audio embeddings, logits and argmax of the first n_steps greedy steps.

        With forced_tokens, step k ≥ 1 takes forced_tokens[k − 1] as its input instead of the
        argmax of step k − 1 (teacher forcing), so two backends can be compared step by step.
        """
        if isinstance(n_steps, bool) or not isinstance(n_steps, int | np.integer) or n_steps < 1:
            raise OptionError(f"n_steps must be a whole number ≥ 1, got {n_steps!r}")
        forced = None
        if forced_tokens is not None:
            forced = np.asarray(forced_tokens, np.int64)[: n_steps - 1]
            if len(forced) < n_steps - 1:
                raise OptionError(f"forced_tokens needs at least {n_steps - 1} tokens")
        rows: list[np.ndarray] = []
        job = Job(
            audio_io.blocks(audio, sample_rate, self.config.audio.sampling_rate),
            on_logits=lambda _, logits: rows.extend(logits), forced=forced, max_steps=n_steps, record=True,
            positions=self._positions(audio, sample_rate),
        )  # fmt: skip
        self.engine.run(job)
        if job.n_steps < n_steps:
            raise OptionError(f"n_steps must be 1 … {job.n_steps} for this audio")
        return Trace(
            mel=np.concatenate(job.mel, axis=1),
            audio_embeds=np.concatenate(job.embeds),
            logits=np.stack(rows),
            tokens=np.array(job.tokens, np.int64),
        )

    # --- helpers ---------------------------------------------------------------------------------
    def _job(
        self, audio, sample_rate, confidence: bool, alternatives: float | None
    ) -> tuple[Job, list | None]:
        """A job reading `audio` in blocks; the list its token scores go to (None without confidence)."""
        check_options(confidence, alternatives)
        source = audio_io.blocks(audio, sample_rate, self.config.audio.sampling_rate)
        scores: list | None = [] if confidence or alternatives is not None else None

        def on_logits(tokens, logits) -> None:
            scores.extend(score(logits, tokens, self.tokenizer, alternatives))

        job = Job(
            source,
            on_logits=None if scores is None else on_logits,
            positions=self._positions(audio, sample_rate),
        )
        return job, scores

    def _positions(self, audio, sample_rate) -> int | None:
        """Decoder positions the audio will likely need (its header or shape; sizes the KV ring)."""
        cfg, s = self.config.audio, self.schedule
        n = audio_io.audio_length(audio, sample_rate, cfg.sampling_rate)
        return None if n is None else s.n_left + -(-n // cfg.samples_per_token) + s.n_right

    def _transcript(
        self, job: Job, scores: list | None = None, tokens=None, live: LiveSegments | None = None, **info
    ) -> Transcript:
        """The Transcript of a finished job; tokens: those taken already (else the job's); live: the
        LiveSegments that gave its segments out as they came (finished), reused instead of aligning again."""
        duration = job.n_samples / self.config.audio.sampling_rate
        tokens = job.take_tokens() if tokens is None else list(tokens)
        segments = live.segments if live is not None else build_segments(
            aligned_words(tokens, self.tokenizer, duration)
        )  # fmt: skip
        info = {
            "device": self.device,
            "delay_ms": self.schedule.delay_ms,
            "steps": len(tokens),
            "model": str(self.checkpoint.directory),
            **info,
        }
        return Transcript(
            text=self.tokenizer.decode(tokens).strip(),
            tokens=tokens,
            segments=segments,
            duration=duration,
            timings=dict(job.timings),
            info=info,
            scores=scores,
        )


def _backend(device: str, checkpoint: Checkpoint, n_delay: int, dtype):
    if device not in DEVICES:
        raise OptionError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device != "cpu":
        from .gpu.device import unavailable_reason

        reason = unavailable_reason()
        if reason is None:
            from .gpu.backend import GpuBackend

            return GpuBackend(checkpoint, n_delay)
        if device == "cuda":
            raise DeviceError(f"cannot use the GPU: {reason}; use --device cpu")
        from .gpu.device import cupy_missing

        # a CPU-only install is no news (said with -v); CuPy present but no usable GPU is
        (log.info if cupy_missing() else log.warning)("no usable GPU (%s); running on the CPU", reason)
    from .cpu.backend import CpuBackend

    return CpuBackend(checkpoint, n_delay, dtype)


def load(
    model: str | Path = DEFAULT_MODEL,
    device: str = "auto",
    delay_ms: int | None = None,
    dtype: str = "float32",
    capacity: int = DEFAULT_CAPACITY,
) -> Model:
    """Load a checkpoint (local directory or Hub id) onto "cpu", "cuda" or the best "auto" device.

    dtype applies to the CPU path only ("float32", or "float64" for precision checks). capacity: how
    many requests (transcriptions, live sessions) run at once; more wait for a free slot. Memory is
    taken per running request (its KV caches), not per slot.
    """
    t0 = time.perf_counter()
    if dtype not in ("float32", "float64"):
        raise OptionError(f"dtype must be float32 or float64, got {dtype!r}")
    if isinstance(capacity, bool) or not isinstance(capacity, int) or not 1 <= capacity <= MAX_CAPACITY:
        raise OptionError(f"capacity must be a whole number from 1 to {MAX_CAPACITY}, got {capacity!r}")
    if not isinstance(model, str | os.PathLike):
        raise OptionError(f"model must be a local directory or a Hub id (str or path), got {model!r}")
    checkpoint = load_checkpoint(model)
    schedule = Schedule.create(checkpoint.tokenizer, delay_ms)
    backend = _backend(device, checkpoint, schedule.n_delay, np.dtype(dtype))
    return Model(checkpoint, backend, schedule, time.perf_counter() - t0, capacity)
