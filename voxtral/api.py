"""The public API: load() a checkpoint onto a device; Model.transcribe(), Model.stream(), Model.trace()."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import audio as audio_io
from .audio_blocks import file_blocks
from .batched import Job, decode_batched
from .checkpoint import DEFAULT_MODEL, Checkpoint, load_checkpoint
from .confidence import score
from .errors import DeviceError, OptionError, VoxtralError
from .schedule import Schedule, delay_tokens, greedy
from .stream import Session
from .transcript import Transcript, align_words, segments_from_words

log = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda")
LONG_AUDIO_S = 3600  # files longer than this are transcribed through the streaming path by default
POSITION_MARGIN = 2  # decoder positions of slack over an input's length read from its header


@dataclass(frozen=True)
class Trace:
    """Intermediate results of the offline schedule, for conformance checks (all NumPy float32)."""

    mel: np.ndarray  # [M, T]
    audio_embeds: np.ndarray  # [N, D]
    logits: np.ndarray  # [n_steps, V]
    tokens: np.ndarray  # [n_steps] the backend's own argmax at each step


class Model:
    def __init__(self, checkpoint: Checkpoint, backend, schedule: Schedule, load_seconds: float):
        self.checkpoint = checkpoint
        self.backend = backend
        self.schedule = schedule
        self.load_seconds = load_seconds

    @property
    def config(self):
        return self.checkpoint.config

    @property
    def tokenizer(self):
        return self.checkpoint.tokenizer

    @property
    def device(self) -> str:
        return self.backend.name

    def _features(self, source, sample_rate, timings: dict) -> tuple[np.ndarray, float]:
        """Audio → offline-padded log-mel [M, T] and the audio's duration in seconds."""
        t0 = time.perf_counter()
        cfg = self.config.audio
        samples = audio_io.load_audio(source, sample_rate, target_rate=cfg.sampling_rate)
        padded = audio_io.pad_offline(
            samples, self.schedule.n_left, self.schedule.n_right, cfg.samples_per_token
        )
        t1 = time.perf_counter()
        mel = audio_io.log_mel(padded, cfg)
        timings["audio"] = t1 - t0
        timings["mel"] = time.perf_counter() - t1
        return mel, len(samples) / cfg.sampling_rate

    def _encode(self, mel: np.ndarray, timings: dict):
        t0 = time.perf_counter()
        embeds = self.backend.encode(mel)
        self.backend.synchronize()
        timings["encoder"] = time.perf_counter() - t0
        return embeds

    def transcribe(
        self,
        audio,
        sample_rate: int | None = None,
        confidence: bool = False,
        alternatives: float | None = None,
        streaming: bool | None = None,
    ) -> Transcript:
        """Transcribe a file path or an array (with its sample_rate) with the offline schedule.

        confidence: give every token its probability (Transcript.scores); alternatives=P also lists
        the rival tokens whose probability is within P of the chosen one (implies confidence).
        streaming: run a file through the streaming schedule, read in blocks, in bounded memory (same
        tokens); None: for files longer than LONG_AUDIO_S when no confidence is asked for.
        """
        if alternatives is not None and not 0 < alternatives <= 1:
            raise OptionError(f"alternatives must be a probability margin in (0, 1], got {alternatives}")
        scored = confidence or alternatives is not None
        if streaming is None:
            n = None if isinstance(audio, np.ndarray) else audio_io.audio_length(audio, None)
            streaming = not scored and n is not None and n > LONG_AUDIO_S * self.config.audio.sampling_rate
        if streaming:
            if scored or isinstance(audio, np.ndarray):
                raise OptionError("streaming transcription takes a file path and no confidence")
            return self._transcribe_streaming(audio)
        timings: dict[str, float] = {}
        mel, duration = self._features(audio, sample_rate, timings)
        embeds = self._encode(mel, timings)
        n_positions = mel.shape[1] // self.config.audio.frames_per_token
        state = self.backend.start(embeds, n_positions)
        scores: list | None = [] if confidence or alternatives is not None else None

        def on_logits(kept, logits):
            scores.extend(score(logits, kept, self.tokenizer, alternatives))

        tokens = greedy(
            self.backend, state, self.schedule, n_positions, timings=timings,
            on_logits=None if scores is None else on_logits,
        )  # fmt: skip
        return self._transcript(tokens, duration, timings, scores)

    def _transcribe_streaming(self, path) -> Transcript:
        """A file through the streaming schedule in blocks: memory bounded for any length."""
        tokens: list[int] = []
        t0 = time.perf_counter()
        session = self.stream(on_tokens=lambda t: tokens.extend(int(i) for i in t))
        for block in file_blocks(path, self.config.audio.sampling_rate):
            session.feed(block)
        session.finish()
        timings = {"stream": time.perf_counter() - t0}
        return self._transcript(tokens, session.duration, timings, streaming=True)

    def _transcript(
        self, tokens: list[int], duration: float, timings: dict, scores=None, **info
    ) -> Transcript:
        words = align_words(tokens, self.tokenizer, duration)
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
            segments=segments_from_words(words),
            duration=duration,
            timings=timings,
            info=info,
            scores=scores,
        )

    def transcribe_each(
        self, inputs, batch_size: int = 8, sample_rate: int | None = None
    ) -> Iterator[tuple[int, Transcript | VoxtralError]]:
        """Transcribe many inputs with continuous batching; yields (index, Transcript or the input's
        error) as each finishes. Up to batch_size inputs decode together, one step for all of them;
        each gives exactly the tokens it gives alone (the offline schedule, per input). Inputs are
        paths or arrays; sample_rate applies to the arrays."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise OptionError(f"batch_size must be a whole number ≥ 1, got {batch_size!r}")
        inputs = list(inputs)
        if not inputs:
            return
        cfg, s = self.config.audio, self.schedule
        rates = [sample_rate if isinstance(x, np.ndarray) else None for x in inputs]
        lengths = [audio_io.audio_length(x, r, cfg.sampling_rate) for x, r in zip(inputs, rates, strict=True)]
        longest = max((n for n in lengths if n is not None), default=0)
        positions = s.n_left + -(-longest // cfg.samples_per_token) + s.n_right + POSITION_MARGIN
        engine = self.backend.engine(min(batch_size, len(inputs)), max_positions=positions)

        def jobs() -> Iterator[Job]:
            for i, (x, rate) in enumerate(zip(inputs, rates, strict=True)):
                timings: dict[str, float] = {}
                try:
                    mel, duration = self._features(x, rate, timings)
                    embeds = self._encode(mel, timings)
                except VoxtralError as e:
                    yield Job(key=i, error=e)
                    continue
                n = mel.shape[1] // cfg.frames_per_token
                yield Job(key=(i, duration, timings), audio=embeds, n_positions=n)

        for job in decode_batched(engine, s, jobs()):
            if job.error is not None:
                yield job.key, job.error
            else:
                i, duration, timings = job.key
                yield i, self._transcript(job.tokens, duration, timings | job.timings, batch_size=batch_size)

    def transcribe_batch(
        self, inputs, batch_size: int = 8, sample_rate: int | None = None
    ) -> list[Transcript]:
        """transcribe_each, collected in input order; the first failed input's error is raised."""
        results = dict(self.transcribe_each(inputs, batch_size, sample_rate))
        ordered = [results[i] for i in range(len(results))]
        for r in ordered:
            if isinstance(r, VoxtralError):
                raise r
        return ordered

    def stream(self, delay_ms: int | None = None, on_tokens=None) -> Session:
        """A streaming session: feed() 16 kHz float32 chunks, get text pieces as they are decided.

        delay_ms must be the model's (fixed at load: the decoder is conditioned on it). on_tokens,
        if given, receives every generated id in order.
        """
        if delay_ms is not None and delay_tokens(delay_ms) != self.schedule.n_delay:
            raise OptionError(
                f"this model was loaded for delay_ms={self.schedule.delay_ms}; to stream with "
                f"{delay_ms} ms load it with voxtral.load(..., delay_ms={delay_ms})"
            )
        return Session(self.backend, self.schedule, self.tokenizer, self.config.audio, on_tokens)

    def trace(self, audio, n_steps: int, forced_tokens=None, sample_rate: int | None = None) -> Trace:
        """mel, audio embeddings, logits and argmax of the first n_steps greedy steps.

        With forced_tokens, step k ≥ 1 takes forced_tokens[k − 1] as its input instead of the
        argmax of step k − 1 (teacher forcing), so two backends can be compared step by step.
        """
        timings: dict[str, float] = {}
        mel, _ = self._features(audio, sample_rate, timings)
        embeds = self._encode(mel, timings)
        n_positions = mel.shape[1] // self.config.audio.frames_per_token
        if not 1 <= n_steps <= self.schedule.n_generated(n_positions):
            raise OptionError(f"n_steps must be 1 … {self.schedule.n_generated(n_positions)} for this audio")
        state = self.backend.start(embeds, n_positions)
        self.backend.prefill(state, self.schedule.prompt)
        inputs = None
        if forced_tokens is not None:
            forced = np.asarray(forced_tokens, np.int64)
            if len(forced) < n_steps - 1:
                raise OptionError(f"forced_tokens needs at least {n_steps - 1} tokens")
            inputs = np.concatenate([self.schedule.prompt[-1:], forced[: n_steps - 1]])
        tokens, logits = self.backend.step(state, n_steps, inputs=inputs, want_logits=True)
        return Trace(mel=mel, audio_embeds=self.backend.to_numpy(embeds), logits=logits, tokens=tokens)


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
        log.warning("no usable GPU (%s); running on the CPU", reason)
    from .cpu.backend import CpuBackend

    return CpuBackend(checkpoint, n_delay, dtype)


def load(
    model: str | Path = DEFAULT_MODEL,
    device: str = "auto",
    delay_ms: int | None = None,
    dtype: str = "float32",
) -> Model:
    """Load a checkpoint (local directory or Hub id) onto "cpu", "cuda" or the best "auto" device.

    dtype applies to the CPU path only ("float32", or "float64" for precision checks).
    """
    t0 = time.perf_counter()
    if dtype not in ("float32", "float64"):
        raise OptionError(f"dtype must be float32 or float64, got {dtype!r}")
    checkpoint = load_checkpoint(model)
    schedule = Schedule.create(checkpoint.tokenizer, delay_ms)
    backend = _backend(device, checkpoint, schedule.n_delay, np.dtype(dtype))
    return Model(checkpoint, backend, schedule, time.perf_counter() - t0)
