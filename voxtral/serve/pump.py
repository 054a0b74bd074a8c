"""The server's engine thread: drives the model's one scheduler and hands live sessions' text to their owners.

Every request of `voxtral serve` is a job of the model's scheduler (scheduler.py): an upload is an offline
job whose request thread waits for it, a realtime connection is a live Session that does not drive. This
thread drives the loop for all of them (scheduler.run_until: it ticks while there is work and sleeps until
a feed or a new job wakes it) and, after each tick that decided text, collects every live session's new
pieces and passes them to that session's `deliver` callback (from this thread: the callback hands them to
the connection's event loop). Only this thread collects (a non-driving session's feed() and finish() hand
out nothing), so each session's pieces come out once and in order.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable

import numpy as np

from ..errors import CheckpointError, VoxtralError
from ..stream import Piece, Session

Deliver = Callable[[list[Piece], bool], None]  # (new pieces, the session ended: done or failed)


class Pump:
    """Drives `model`'s scheduler in a daemon thread; live sessions opened here get their pieces pushed."""

    def __init__(self, model, idle_timeout: float | None):
        self.model, self.idle_timeout = model, idle_timeout
        self._sessions: dict[Session, Deliver] = {}
        self._open: tuple[Session, ...] = ()  # a snapshot of the keys, read without the lock
        self._lock = threading.Lock()  # the sessions and every collect()
        self._stop = threading.Event()
        self.failure: CheckpointError | None = None  # the model's weights failed a request (note): for good
        self._thread = threading.Thread(target=self._run, name="voxtral-engine", daemon=True)
        self._thread.start()

    def open(self, deliver: Deliver, confidence: bool = False) -> Session:
        """A live session of the model, driven here; its pieces go to deliver(pieces, ended)."""
        m = self.model
        s = Session(
            m.engine, m.tokenizer, m.config.audio, None, self.idle_timeout, drive=False, confidence=confidence
        )
        with self._lock:
            self._sessions[s] = deliver
            self._open = tuple(self._sessions)
        return s

    def feed(self, s: Session, samples: np.ndarray) -> None:
        """Queue samples [S] (16 kHz float32) for s without waiting for the engine; raises its error
        (e.g. idle expiry)."""
        s.feed(samples)

    def finish(self, s: Session) -> None:
        """No more audio for s: its remaining text follows, then deliver(…, ended=True)."""
        if not s.finished:
            s.finish()

    def close(self, s: Session) -> None:
        """Abandon s (its client left): its slot is freed, nothing more is delivered."""
        with self._lock:
            self._sessions.pop(s, None)
            self._open = tuple(self._sessions)
        s.close()

    @property
    def sessions(self) -> tuple[Session, ...]:
        """The live sessions not yet ended."""
        return self._open

    def stop(self) -> None:
        """End the thread (within the scheduler's idle wait, a quarter second)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def note(self, error: Exception) -> None:
        """A request's or tick's failure: a damaged checkpoint (CheckpointError: NaN or Inf logits blamed
        on named tensors) fails every later request too, so it is kept for /health and new requests."""
        if isinstance(error, CheckpointError):
            self.failure = error

    def _run(self) -> None:
        engine = self.model.engine
        while not self._stop.is_set():
            try:
                engine.run_until(self._ready)
            except VoxtralError as e:  # the tick's jobs carry it (Scheduler._fail_active): handed on below
                self.note(e)
            except Exception:  # a bug: its jobs got an internal error; this thread goes on
                traceback.print_exc()
            with self._lock:
                for s in self._open:
                    if _has_news(s):
                        self._pass(s, s.collect())

    def _ready(self) -> bool:
        """Stop asked, or a session has text, an end or an error to hand on."""
        return self._stop.is_set() or any(_has_news(s) for s in self._open)

    def _pass(self, s: Session, pieces: list[Piece]) -> None:
        """Hand pieces on; a session that ended (done or failed) leaves after its last delivery."""
        ended = s.done or s.error is not None
        deliver = self._sessions.pop(s, None) if ended else self._sessions.get(s)
        if ended:
            self._open = tuple(self._sessions)
        if deliver is not None and (pieces or ended):
            deliver(pieces, ended)


def _has_news(s: Session) -> bool:
    return s.pending or s.done or s.error is not None
