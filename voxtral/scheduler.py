"""The one engine loop (SPEC §6, §7): every request is a Job, and one Scheduler runs them all.

A Job is audio in and tokens out: a file or an array pulled in blocks as the engine needs it, or a live
stream whose samples are pushed as they come; both get the offline padding (PaddedMel), so a finished
live stream and an offline file give the same tokens. Each tick of the scheduler

    admit  queued jobs into free encoder and decoder slots, first come first served;
    encode every job's new frames in one log-mel call and one encoder pass (offline: ≤ backend.lookahead
           ahead; an offline job's left padding waits for its first block, to share its pass);
    prefill each job whose prompt positions have audio (the rules are schedule.Schedule's);
    step   every job with audio waiting, all in one batched decoder call (then live jobs still holding
           positions again, up to the burst: a live job behind catches up within the tick); offline
           jobs admitted in one tick (a cohort: a batch) take their first step together once each has
           audio, unless its read is a slow one (_held_cohorts);
    retire jobs at EOS, at their step limit, or at the end of their audio, freeing their slots.

Transcriptions, batches, live sessions, servers and traces are request patterns for it (api.py,
stream.py, server.py): any mix of them, from any number of threads, shares one decoder step. A thread
waiting for its job drives the loop (run_until) while nobody else does; the rest wait to be woken.
Memory is bounded for any audio length: a job holds a few blocks of samples and frames, at most the
backend's lookahead of embeddings ahead of its decoder, and KV rings of the window. An offline job's
audio is decoded and cut into frames' windows by reader threads (one block in flight per job), so the
engine thread runs only the model; the new windows of every job of a tick, live or offline, become mel
frames in one backend.log_mel call (on the GPU: on the device, SPEC §2.3).
A tick that finds nothing to do wakes nobody: an idle engine sleeps until an input arrives.
"""

from __future__ import annotations

import functools
import signal
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from .audio import PaddedMel
from .backend import Backend
from .config import AudioConfig
from .errors import AudioError, SessionError, VoxtralError
from .schedule import Schedule

IDLE_WAIT_S = 0.25  # longest a waiting thread sleeps before it looks again (idle-session expiry)
QUEUED, ACTIVE, DONE = "queued", "active", "done"
STAGES = ("audio", "mel", "encoder", "prefill", "decode")
# Offline jobs admitted in one tick wait for each other's first audio before any of them steps: a batch
# then decodes in step from its first position at its full batch size. Stepping the first files read
# while the rest were still being read and encoded left the GPU waiting for the host between small
# rounds, and ended the batch with a tail at a falling batch size (H200, 64 files of 60 s, one process,
# 2026-12-02: 825× and 828× real time stepping at once, 873× and 853× together). A job whose first read
# has run for SLOW_READ_S (a pipe, a slow mount) holds nobody; no cohort waits longer than COHORT_WAIT_S.
SLOW_READ_S = 0.25  # a 60 s WAV reads in ~20 ms
COHORT_WAIT_S = 2.0
WARM_ROWS_PER_SLOT = 8  # live encoder rows per slot warm_up prepares: two 80 ms chunks of every session


class Job:
    """One request: audio in, generated tokens out (token k belongs to audio frame k, SPEC §6).

    source: blocks of 16 kHz mono float32 samples, pulled as needed; None for a live job, whose
    samples come through Scheduler.push and whose end is Scheduler.end. on_logits(tokens [n], logits
    [n, V]) gets every kept step's logits (a copy per step on the GPU: asked for only when given).
    forced: teacher forcing, the input token of
    generated step k ≥ 1 is forced[k − 1]. max_steps: stop after this many tokens (EOS then ends
    nothing). record: keep the mel frames and audio embeddings (NumPy) for checks. positions: a guess
    of the decoder positions (sizes the KV ring; it grows if the guess is short).
    """

    def __init__(
        self,
        source: Iterable[np.ndarray] | None,
        *,
        on_logits: Callable[[np.ndarray, np.ndarray], None] | None = None,
        forced: np.ndarray | None = None,
        max_steps: int | None = None,
        record: bool = False,
        positions: int | None = None,
        idle_timeout: float | None = None,
    ):
        self.source: Iterator[np.ndarray] | None = None if source is None else iter(source)
        self.live = source is None
        self.on_logits = on_logits
        self.forced = None if forced is None else np.asarray(forced, np.int64)
        self.max_steps, self.record, self.positions = max_steps, record, positions
        self.idle_timeout = idle_timeout
        self.state = QUEUED
        self.error: VoxtralError | None = None
        self.tokens = array("i")  # generated ids (EOS included) not yet taken: 4 bytes each (take_tokens)
        self._tokens_lock = threading.Lock()  # the driving thread appends while the job's owner takes
        self.n_steps = 0  # tokens generated so far
        self.eos = False
        self.timings = dict.fromkeys(STAGES, 0.0)
        self.mel: list[np.ndarray] = []  # recorded frames [M, T] (record)
        self.embeds: list[np.ndarray] = []  # recorded embeddings [k, D] (record)
        self.n_embeds = 0  # audio embeddings appended to the decoder (padding included)
        self.closed = False  # abandoned: retire at the next tick, silently
        self._prompt_len = 0  # set by the scheduler at submit
        self._pushed: deque[np.ndarray] = deque()  # live samples not yet turned into frames
        self._ended = False  # no more samples will come
        self._front: PaddedMel | None = None
        self._windows: list[np.ndarray] = []  # frames' samples [T, n_fft] not yet encoded (PaddedMel)
        self._reading: Future | None = None  # an offline job's next windows, cut by a reader thread
        self._enc: int | None = None
        self._dec: int | None = None
        self._prefilled = False
        self._last_fed = time.monotonic()
        self._cohort = 0  # the admission (Scheduler._admit call) that made it active
        self._admitted = 0.0  # when (time.monotonic())
        self._first_read_began: float | None = None  # when a reader thread began its first read

    # --- what the outside reads ------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        """Audio samples taken in so far (padding not counted)."""
        return 0 if self._front is None else self._front.n_samples

    @property
    def finished(self) -> bool:
        return self.state == DONE

    def settled(self) -> bool:
        """Nothing of what was pushed so far is left to run (a live feed may return)."""
        if self.state == DONE:
            return True
        if self._ended:  # the end still has to run (right padding, last steps)
            return False
        return self.state == ACTIVE and not self._pushed and not self._windows and self.ready() == 0

    # --- bookkeeping the scheduler uses ----------------------------------------------------------
    def ready(self) -> int:
        """Positions with audio that have not run (0 before the prefill)."""
        return self.n_embeds - self._consumed() if self._prefilled and not self._stopped() else 0

    def take_tokens(self) -> list[int]:
        """The tokens generated since the last call (a live session takes them as they come, so a
        stream of any length holds none for long; an offline job's are all there at the end)."""
        with self._tokens_lock:
            taken, self.tokens = self.tokens.tolist(), array("i")
        return taken

    def has_tokens(self) -> bool:
        """Tokens wait to be taken."""
        return len(self.tokens) > 0

    def _consumed(self) -> int:
        return self._prompt_len - 1 + self.n_steps if self._prefilled else 0

    def _stopped(self) -> bool:
        return self.eos or (self.max_steps is not None and self.n_steps >= self.max_steps)

    def _audio_done(self) -> bool:
        """Every frame of the audio (padding included) has gone through the encoder."""
        front = self._front
        return front is not None and front.finished and not self._windows and self._reading is None

    def _complete(self) -> bool:
        if self.error is not None or self.closed:
            return True
        if self._stopped():
            return not self.record or self._audio_done()
        return self._audio_done() and self._enc is None and self._prefilled and self.ready() == 0


class Scheduler:
    """Admits, encodes, prefills, steps and retires Jobs on one backend (see the module docstring)."""

    def __init__(self, backend: Backend, schedule: Schedule, audio: AudioConfig, capacity: int):
        self.backend, self.schedule, self.audio, self.capacity = backend, schedule, audio, capacity
        self._encoder = self._decoder = None  # made on first use
        self.queue: deque[Job] = deque()
        self.active: list[Job] = []
        self._stage_marks: deque[tuple] = deque()  # (jobs, stage, start, end, share) not yet booked
        # seconds each stage has taken over the engine's life, once per pass (not per job): audio in the
        # reader threads, mel, encoder and prefill on the device's clock, decode as the host waits for it
        self.stage_seconds = dict.fromkeys(STAGES, 0.0)
        self._lock = threading.RLock()  # job lists and device state: a tick, submit, push, end, close
        self._driver: threading.Thread | None = None  # the one thread that ticks now (_claim)
        self._claims = 0  # the claims it holds (nested drives)
        self._woken = threading.Condition()
        self._generation = 0  # ticks and inputs so far: waiting threads wake when it moves
        self._admissions = 0  # _admit calls that admitted a job: cohort numbers

    # --- requests --------------------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        with self._lock:
            job._prompt_len = len(self.schedule.prompt)
            self.queue.append(job)
        self._wake()
        return job

    def push(self, job: Job, samples: np.ndarray) -> None:
        """Live samples [S] (16 kHz mono float32) for a live job.

        Without the engine's lock, so a feed never waits for a tick (a server's event loop feeds here):
        deque appends and pops are atomic, the tick only pops, end() comes after the feeder's last push,
        and a sample that races a job's retirement is dropped with the job."""
        now = time.monotonic()
        self._check_idle(job, now)  # also when nothing else made the engine tick
        if job.error is not None:
            raise job.error
        if job.state == DONE or job._ended:
            raise SessionError("this session is finished or closed; open a new one")
        job._last_fed = now
        job._pushed.append(samples)
        self._wake()

    def end(self, job: Job) -> None:
        """No more samples for a live job: its right padding follows, then it finishes."""
        with self._lock:
            if job.n_samples == 0 and not any(len(x) for x in job._pushed) and job.error is None:
                job.error = AudioError("stream: no audio was fed (0 samples); nothing to transcribe")
            job._ended = True
        self._wake()

    def close(self, job: Job) -> None:
        """Abandon a job: it leaves at the next tick, its slots freed, its output dropped."""
        job.closed = True  # a plain store: safe from a finalizer in any thread
        self._wake()

    def run(self, job: Job, cancelled: Callable[[], bool] | None = None) -> Job:
        """Submit a job and drive the engine until it is done; raises its error. cancelled: asked
        between ticks; once true the job is closed (it leaves at the next tick) and SessionError raised."""
        self.submit(job)
        self.run_until(lambda: job.finished or (cancelled is not None and cancelled()))
        if not job.finished:
            self.close(job)
            self.run_until(lambda: job.finished)
            raise SessionError("the transcription was cancelled")
        if job.error is not None:
            raise job.error
        return job

    def run_until(self, done: Callable[[], bool]) -> None:
        """Drive the engine (or wait while another thread does) until done() holds."""
        while True:
            with self._woken:
                seen = self._generation
            if done():
                return
            with self._driving() as claimed:
                while claimed and not done() and self._tick_once():
                    pass
            if claimed and done():
                self._wake()  # another thread may drive now
                return
            # Nothing to run: sleep until an input, a reader thread or another request moves the
            # generation (a tick without work moves nothing, so an idle engine does not spin), or until
            # the thread that drives lets go
            with self._woken:
                if self._generation == seen and (claimed or self._driver is not None):
                    self._woken.wait(IDLE_WAIT_S)

    def advance(self) -> None:
        """One tick's worth of progress: a tick, or, while another thread drives, its next tick."""
        with self._woken:
            seen = self._generation
        with self._driving() as claimed:
            if claimed:
                self._tick_once()
        if claimed:
            self._wake()
            return
        with self._woken:
            if self._generation == seen and self._driver is not None:
                self._woken.wait(IDLE_WAIT_S)

    @contextmanager
    def _driving(self) -> Iterator[bool]:
        """Whether this thread drives the engine for the block (_claim); a claim is given back however
        the block ends. Signals are held until the claim's answer is stored, so one surfacing there
        still finds it given back."""
        claimed = False
        try:
            with _deferred_interrupt():
                claimed = self._claim()
            yield claimed
        finally:
            if claimed:
                self._unclaim()

    def _claim(self) -> bool:
        """Become the thread that drives the engine, unless another live thread does; again if this one
        does (a request made from a callback of the drive: it ticks between the outer drive's ticks, where
        it used to wait forever for itself). Taken through _driving: Ctrl-C surfacing between a claim and
        its try left the engine claimed with nobody to let go (a Lock then: 1 Ctrl-C in ~40 hung `voxtral
        stream` in finish()). A thread that ended holding a claim loses it."""
        me = threading.current_thread()
        with self._woken:
            if self._driver is not None and self._driver is not me and self._driver.is_alive():
                return False
            self._claims = self._claims + 1 if self._driver is me else 1
            self._driver = me
            return True

    def _unclaim(self) -> None:
        """Give one claim back; the last wakes the threads waiting to drive."""
        with self._woken:
            self._claims -= 1
            if self._claims == 0:
                self._driver = None
                self._woken.notify_all()

    def _tick_once(self) -> bool:
        try:
            with self._lock, _deferred_interrupt():
                try:
                    worked = self.tick()
                except Exception as e:  # the model's failure (damaged weights, the device), or a bug
                    failure = e if isinstance(e, VoxtralError) else VoxtralError(f"internal error: {e!r}")
                    self._fail_active(failure)
                    raise
        except Exception:
            self._wake()  # the threads waiting on the failed jobs
            raise
        if worked:
            self._wake()
        return worked

    def _fail_active(self, error: VoxtralError) -> None:
        """Every active job gets `error` and leaves: a tick raised it, so no job of the tick can go on.
        The thread that drives gets the exception itself; every other thread finds the error on its job
        (run raises it; a session hands it on). A server's engine thread, which drives for live
        sessions and streamed uploads, used to die here and leave them waiting forever."""
        for job in self.active:
            if job.error is None:
                job.error = error
        try:
            self._retire()
        except Exception:  # noqa: BLE001 — the device may refuse the slots' release too: they leave anyway
            for job in self.active:
                job._enc = job._dec = None
                self._finish(job)
            self.active.clear()

    def _wake(self) -> None:
        with self._woken:
            self._generation += 1
            self._woken.notify_all()

    # --- the loop --------------------------------------------------------------------------------
    def warm_up(self, streams: int | None = None) -> None:
        """Prepare now what the first ticks of each size would on first use (the GPU backend's CUDA graphs
        of every decoder batch size and live and offline encoder pass: ~0.1 s each), so that no request
        stalls the others for it; a server calls this once before it takes requests. streams: only what
        that many live streams alone use (model.stream(): one; ~0.5 s once, instead of stalls of
        40–360 ms in a first session's first feeds)."""
        with self._lock:
            self._make()
            if streams is None:
                self._encoder.warm_up(WARM_ROWS_PER_SLOT * self.capacity)
                self._decoder.warm_up()
            else:
                self._encoder.warm_up(WARM_ROWS_PER_SLOT * streams, streams_only=True)
                self._decoder.warm_up(streams)

    def _make(self) -> None:
        if self._decoder is None:
            self._encoder = self.backend.encoder(self.capacity)
            self._decoder = self.backend.decoder(self.capacity)

    def tick(self) -> bool:
        """One round of admit → encode → prefill → step → retire; whether anything happened."""
        self._make()
        worked = self._expire()
        worked |= self._admit()
        worked |= self._encode()
        worked |= self._prefill()
        self._settle_timings()  # while the device runs this tick's encoder: the host would wait after it
        worked |= self._step()
        return self._retire() or worked

    def _expire(self) -> bool:
        """Live jobs not fed for their idle_timeout get an error and leave."""
        now = time.monotonic()
        return any([self._check_idle(job, now) for job in self.active])

    def _check_idle(self, job: Job, now: float) -> bool:
        """Give a live job idle for longer than its idle_timeout (nothing of it left to run) its error."""
        t = job.idle_timeout
        waiting = job.live and not job._ended and job.error is None and job.settled()  # nothing to run
        if waiting and t is not None and now - job._last_fed > t:
            job.error = SessionError(f"session closed after {t:g} s without audio (idle_timeout)")
            return True
        return False

    def _admit(self) -> bool:
        admitted = False
        cohort, now = self._admissions + 1, time.monotonic()
        while self.queue and len(self.active) < self.capacity:
            job = self.queue.popleft()
            if job.closed or job.error is not None:
                self._finish(job)
                continue
            chunk = self.backend.live_chunk if job.live else None
            job._enc = self._encoder.join(chunk)
            job._dec = self._decoder.join(job.positions)
            job._front = PaddedMel(self.audio, self.schedule.n_left, self.schedule.n_right)
            self._windows_of(job, np.zeros(0, np.float32))  # the left padding's frames
            job.state = ACTIVE
            job._cohort, job._admitted = cohort, now
            self.active.append(job)
            admitted = True
        self._admissions += admitted
        return admitted

    def _encode(self) -> bool:
        """New samples → windows → one log-mel and one encoder pass over every job that has frames (live
        and offline alike) → the decoders."""
        todo = [j for j in self.active if j._enc is not None and not j._complete()]
        todo = [j for j in todo if self._take_audio(j) and j._windows and not self._padding_only(j)]
        if todo:
            t0 = self.backend.mark()
            mels = self.backend.log_mel([j._windows for j in todo])  # [M, T] each, the backend's arrays
            for j in todo:
                j._windows = []
            t1 = self._timed(todo, "mel", t0, share=True)
            items = [(j._enc, m) for j, m in zip(todo, mels, strict=True)]
            embeds = self._encoder.encode(items)
            for j, e, (_, mel) in zip(todo, embeds, items, strict=True):
                self._decoder.append_audio(j._dec, e)
                j.n_embeds += len(e)
                if j.record:
                    j.mel.append(self.backend.to_numpy(mel))
                    j.embeds.append(self.backend.to_numpy(e))
            self._timed(todo, "encoder", t1)
        left = False
        for j in self.active:
            if j._enc is not None and j._audio_done():
                self._encoder.leave(j._enc)
                j._enc, left = None, True
        return bool(todo) or left

    @staticmethod
    def _padding_only(job: Job) -> bool:
        """An offline job whose first block is still being read: its left padding's frames wait to go
        through the encoder with that block, in one pass instead of two (a pass of 128 positions costs
        the host nearly what one of 1000 does: the same few hundred launches, ~20–50 ms under a
        server's load, which every live session of that tick waits for)."""
        return not job.live and job.n_embeds == 0 and job._reading is not None

    def _take_audio(self, job: Job) -> bool:
        """Move a job's new samples into windows (pulling an offline source while its lookahead allows);
        False if its source failed (the job then carries the error)."""
        if not job.live:
            return self._read(job)
        front = job._front
        try:
            if not job._ended and not front.finished:  # end() waits for the tick: stable
                n = len(job._pushed)  # the feeder may append meanwhile: those wait for the next tick
                if n:  # (_windows_of books its time as the job's mel)
                    parts = [job._pushed.popleft() for _ in range(n)]
                    self._windows_of(job, parts[0] if n == 1 else np.concatenate(parts))
                return True
            while not front.finished:
                if not job._pushed:
                    if job._ended:
                        self._windows_of(job, None)
                    break
                self._windows_of(job, job._pushed.popleft())
        except VoxtralError as e:
            job.error = e
            return False
        return True

    def _read(self, job: Job) -> bool:
        """An offline job's audio: a reader thread (_readers) decodes its next block and cuts its frames'
        windows while the engine runs; each tick takes what came and asks for the next block while the
        job's lookahead allows (one block in flight per job, so its frames come in order). False if its
        source failed (the job then carries the error)."""
        reading = job._reading
        if reading is not None:
            if not reading.done():
                return True
            job._reading = None
            windows, audio_s, mel_s, error = reading.result()  # a bug in the worker is raised here
            job.timings["audio"] += audio_s
            self.stage_seconds["audio"] += audio_s
            job.timings["mel"] += mel_s
            if error is not None:
                job.error = error
                return False
            job._windows += windows
        ahead = self._ahead(job)
        if job._front.finished or (ahead >= self.backend.lookahead and not (job.record or job._stopped())):
            return True
        room = max(1, self.backend.lookahead - ahead) * self.audio.samples_per_token
        job._reading = _readers().submit(_read_for, job, job.source, job._front, room)
        job._reading.add_done_callback(lambda _: self._wake())  # after the result is in place
        return True

    def _windows_of(self, job: Job, samples: np.ndarray | None) -> None:
        """Samples (None: the end of the audio) → frames' windows waiting for the log-mel and encoder."""
        t0 = time.perf_counter()
        windows = job._front.finish_windows() if samples is None else job._front.windows(samples)
        if len(windows):
            job._windows.append(windows)
        job.timings["mel"] += time.perf_counter() - t0

    def _ahead(self, job: Job) -> int:
        """Audio embeddings of the job (encoded or as frames) its decoder has not run yet."""
        pending = sum(len(w) for w in job._windows) // self.audio.frames_per_token
        return job.n_embeds + pending - job._consumed()

    def _prefill(self) -> bool:
        """The prompt positions of every job whose prompt has audio now, in one decoder call."""
        prompt = self.schedule.prompt
        jobs = [j for j in self.active if not j._prefilled and j.n_embeds >= len(prompt)]
        jobs = [j for j in jobs if j.error is None and not j.closed]
        if jobs:
            t0 = self.backend.mark()
            self._decoder.prefill([j._dec for j in jobs], prompt)
            self._timed(jobs, "prefill", t0, share=True)
            for job in jobs:
                job._prefilled = True
        return bool(jobs)

    def _step(self) -> bool:
        """One batched decoder call for the jobs with audio waiting (teacher-forced jobs alone), then more
        for the live jobs that still have positions waiting, up to the decoder's burst of steps a tick:
        a call steps every job of it as often as the one with the fewest positions waiting allows, and
        after a stall (a long tick) a live job may hold several, which one call a tick would leave
        behind for as many ticks (its text that much later)."""
        held = self._held_cohorts()
        ready = [j for j in self.active if self._can_step(j) and not (_batched(j) and j._cohort in held)]
        groups = [[j] for j in ready if j.forced is not None] + [[j for j in ready if j.forced is None]]
        burst = self._decoder.burst
        for group in (g for g in groups if g):
            steps = 0
            while group and steps < burst:
                steps += self._step_group(group, burst - steps)
                group = [j for j in group if j.live and self._can_step(j)]
        return bool(ready)

    def _held_cohorts(self) -> set[int]:
        """Cohorts (admitted less than COHORT_WAIT_S ago) with a batched job (_batched) still waiting for
        its first audio whose first read has not yet run for SLOW_READ_S: their jobs do not step yet."""
        now = time.monotonic()
        return {
            j._cohort
            for j in self.active
            if _batched(j) and j.n_embeds == 0 and j.error is None and not j.closed
            and now - j._admitted < COHORT_WAIT_S
            and (j._first_read_began is None or now - j._first_read_began < SLOW_READ_S)
        }  # fmt: skip

    @staticmethod
    def _can_step(job: Job) -> bool:
        return job.ready() > 0 and job.error is None and not job.closed

    def _step_group(self, group: list[Job], most: int) -> int:
        """Every job of the group stepped together, as often as all of them can (≤ most); returns how
        often."""
        n = min(most, *(j.ready() for j in group))
        n = min([n] + [j.max_steps - j.n_steps for j in group if j.max_steps is not None])
        inputs = None if group[0].forced is None else self._forced_inputs(group[0], n)
        t0 = time.perf_counter()
        tokens, logits = self._decoder.step(
            [j._dec for j in group], n, inputs=inputs, logits=any(j.on_logits for j in group)
        )
        elapsed = time.perf_counter() - t0
        self.stage_seconds["decode"] += elapsed
        for r, job in enumerate(group):
            self._take(job, tokens[r], None if logits is None else logits[r])
            job.timings["decode"] += elapsed
        return n

    def _forced_inputs(self, job: Job, n: int) -> np.ndarray:
        """[1, n] inputs of the next n steps of a teacher-forced job (its first input is the prompt's)."""
        k = job.n_steps
        seq = np.concatenate([self.schedule.prompt[-1:], job.forced])
        if len(seq) < k + n:
            raise ValueError(f"forced tokens run out at step {len(seq)}")
        return seq[k : k + n][None]

    def _take(self, job: Job, row: np.ndarray, logits: np.ndarray | None) -> None:
        """A job's tokens of the last steps; at EOS the rest of the burst is void (unless max_steps)."""
        keep, ended = (row, False) if job.max_steps is not None else self.schedule.cut_at_eos(row)
        with job._tokens_lock:  # scores and tokens appear together to a thread taking them
            if logits is not None and job.on_logits is not None:
                job.on_logits(keep, logits[: len(keep)])
            job.tokens.extend(np.asarray(keep, np.int32).tolist())
        job.n_steps += len(keep)
        job.eos = ended

    def _retire(self) -> bool:
        for job in [j for j in self.queue if j.closed]:
            self.queue.remove(job)
            self._finish(job)
        done = [j for j in self.active if j._complete()]
        for job in done:
            self._decoder.leave(job._dec)
            if job._enc is not None:
                self._encoder.leave(job._enc)
            job._enc = job._dec = None
            self.active.remove(job)
            self._finish(job)
        return bool(done)

    def _timed(self, jobs: list[Job], stage: str, start, share: bool = False):
        """Add the time from `start` (backend.mark) to now to the jobs' `stage` once it is known (device
        work: when it has run; no wait now); share: split it between them. Returns the end mark."""
        end = self.backend.mark()
        self._stage_marks.append((jobs, stage, start, end, share))
        return end

    def _settle_timings(self, wait: bool = False) -> None:
        """Book the stage times whose work has run (wait: all of them, waiting for the device)."""
        while self._stage_marks:
            jobs, stage, start, end, share = self._stage_marks[0]
            seconds = self.backend.elapsed(start, end, wait)
            if seconds is None:
                return
            self._stage_marks.popleft()
            self.stage_seconds[stage] += seconds
            for job in jobs:
                job.timings[stage] += seconds / len(jobs) if share else seconds

    def _finish(self, job: Job) -> None:
        self._settle_timings(wait=True)  # its stage times are whole when it is done
        job.state = DONE
        job.source = None
        job._pushed.clear()
        job._windows = []

    # --- reports ---------------------------------------------------------------------------------
    def memory_bytes(self) -> dict[str, int]:
        """Bytes the engine holds per kind: decoder buffers + KV caches, encoder KV caches."""
        if self._decoder is None:
            return {}
        return {"decoder": self._decoder.nbytes(), "encoder": self._encoder.nbytes()}


_busy = [0]  # reads begun or waiting for their turn (readers_busy)
_busy_lock = threading.Lock()


def readers_busy() -> bool:
    """Whether a reader thread has a read to do: inside a source now (a pipe or FIFO may keep it there until
    its writer is done: a process stopped by a signal exits without waiting for it, see entry.main) or
    waiting for its turn to begin one."""
    return _busy[0] > 0


class _Turns:
    """READERS reads at a time, not counting one whose source has kept it waiting for a block SLOW_READ_S:
    that one waits on its source, not on the GIL, and holds up nobody. Waiting readers look again when a
    read ends and every SLOW_READ_S / 2 (no thread of its own)."""

    def __init__(self):
        self._changed = threading.Condition()
        self._block_began: dict[int, float | None] = {}  # reading thread → its block's start, or None

    def _fresh(self, now: float) -> int:
        return sum(1 for t in list(self._block_began.values()) if t is None or now - t < SLOW_READ_S)

    def take(self) -> None:
        with self._changed:
            while self._fresh(time.monotonic()) >= READERS:
                self._changed.wait(SLOW_READ_S / 2)
            self._block_began[threading.get_ident()] = None

    def give(self) -> None:
        with self._changed:
            self._block_began.pop(threading.get_ident(), None)
            self._changed.notify()

    def block(self, began: float | None) -> None:
        """The calling reader waits on its source from `began` on (time.monotonic()), or no more (None)."""
        if threading.get_ident() in self._block_began:  # a read that took its turn (not a test's own call)
            self._block_began[threading.get_ident()] = began


_turns = _Turns()


def _batched(job: Job) -> bool:
    """An offline job that steps with its cohort (not a live one, nor a trace or teacher-forced run)."""
    return not job.live and not job.record and job.forced is None


def _read_for(job: Job, source: Iterator[np.ndarray], front: PaddedMel, room: int) -> tuple:
    """In a reader thread: _read_block for the job in its turn (_Turns), the time it begins noted for
    _held_cohorts; nothing for a job that has left meanwhile (closed, or done)."""
    with _busy_lock:
        _busy[0] += 1
    try:
        _turns.take()
        try:
            if job.closed or job.state == DONE:
                return [], 0.0, 0.0, None
            if job._first_read_began is None:
                job._first_read_began = time.monotonic()
            return _read_block(source, front, room)
        finally:
            _turns.give()
    finally:
        with _busy_lock:
            _busy[0] -= 1


def _read_block(source: Iterator[np.ndarray], front: PaddedMel, room: int) -> tuple:
    """In a reader thread: the next blocks of an offline source, up to `room` samples (at least one
    block) → (their frames' windows: pieces [T', n_fft], seconds decoding, seconds cutting windows, the
    source's VoxtralError or None); the end of the source → the last windows. Everything the lookahead
    has room for comes in one read, so a short file is one encoder pass, not one per block."""
    decode_s = mel_s = 0.0
    parts, taken = [], 0
    try:
        while True:
            t0 = time.perf_counter()
            _turns.block(time.monotonic())
            try:
                block = next(source, None)
            finally:
                _turns.block(None)
            t1 = time.perf_counter()
            parts.append(front.finish_windows() if block is None else front.windows(block))
            decode_s, mel_s = decode_s + t1 - t0, mel_s + time.perf_counter() - t1
            if block is None:
                break
            taken += len(block)
            if taken >= room:
                break
    except VoxtralError as e:
        return None, decode_s, mel_s, e
    return [w for w in parts if len(w)], decode_s, mel_s, None


# Reads of offline audio running at once, not counting those past SLOW_READ_S (a pipe or FIFO waiting
# for its writer, a slow mount: each holds only its own thread, so it holds up no other input). Decoding
# a WAV is mostly Python-level work that holds the GIL (PyAV's packet loop, NumPy on 64 KB blocks): with
# one read per core at once (16 on the H200's host) the readers kept the engine thread from the GIL and
# each other. 64 files of 60 s end to end, one process, 2026-12-02: 16 at once 766× real time (a read
# took 255 ms for 12 ms of CPU), 4: 836×, 2: 873×, 1: 848×. Compressed audio decodes with the GIL
# released (FFmpeg) and resamples in soxr; a 60 s file took MP3 23 ms, FLAC 18, Opus at 48 kHz 80: two
# at once still bring more files a second than the GPU takes.
READERS = 2
READER_THREADS = 32  # threads for reads in flight: as many sources may block (FIFOs) before others wait


@functools.cache
def _readers() -> ThreadPoolExecutor:
    """The threads that decode offline audio and cut its frames' windows ahead of the engine (made as
    needed), READERS of them reading at a time (_Turns)."""
    return ThreadPoolExecutor(READER_THREADS, thread_name_prefix="voxtral-reader")


HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def _deferred_interrupt():
    """Hold Ctrl-C (SIGINT) and SIGTERM that arrive during a tick until the tick is over, then hand them
    to their Python handlers (KeyboardInterrupt, or the CLI's Terminated): they surface only between
    ticks, where every job's state is whole (an interrupted session can still finish), and never inside a
    callback from C (audio decoding), which would swallow them. Main thread, Python handlers only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = {s: h for s in HELD_SIGNALS if callable(h := signal.getsignal(s))}
    holding = [True]

    def hold(signum, frame) -> None:  # a stand-in left installed (a signal cut the restore) passes on
        if holding[0]:
            caught.append(signum)
        else:
            held[signum](signum, frame)

    try:
        for s in held:
            signal.signal(s, hold)
        yield
    finally:
        holding[0] = False
        for s, h in held.items():
            signal.signal(s, h)
        if caught:
            held[caught[0]](caught[0], None)
