"""Many live sessions on one model: each step() advances the model's engine once for all of them.

    server = StreamServer(model, capacity=32)
    a, b = server.open(), server.open()
    a.feed(chunk_a); b.feed(chunk_b)           # queued; the model runs in the server's step()
    for session, pieces in server.step().items():   # call it every 80 ms
        ...
    a.finish()                                  # a leaves once its last position has run

A server session is a stream.Session that does not drive the engine: the server's step() runs one
tick of the model's scheduler, which encodes every session's new audio in one pass and steps all
their decoders in one batched step, together with anything else the model is doing (transcriptions,
other sessions). Per session the tokens are exactly those it gives alone. Sessions that are closed,
dropped or idle for longer than idle_timeout leave and free their slots.
"""

from __future__ import annotations

import weakref

from .errors import OptionError, SessionError
from .stream import Piece, Session, check_idle_timeout

IDLE_TIMEOUT_S = 60.0  # a session not fed for this long is closed (its client is gone)


class StreamServer:
    """Up to `capacity` live sessions stepped together on one model."""

    def __init__(self, model, capacity: int = 32, idle_timeout: float | None = IDLE_TIMEOUT_S):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise OptionError(f"capacity must be a whole number ≥ 1, got {capacity!r}")
        if capacity > model.capacity:
            raise OptionError(
                f"capacity {capacity} exceeds the model's {model.capacity} slots; "
                f"load it with voxtral.load(..., capacity={capacity})"
            )
        check_idle_timeout(idle_timeout)
        self.model, self.capacity, self.idle_timeout = model, capacity, idle_timeout
        model.engine.warm_up()  # the GPU's graphs of every batch size now, not in the first sessions' ticks
        self._refs: list[weakref.ref] = []  # sessions opened and not yet done (weak: a dropped one closes)

    @property
    def sessions(self) -> list[Session]:
        """The open sessions (not done and still referenced)."""
        return [s for r in self._refs if (s := r()) is not None and not s.done and not s.closed]

    def open(self, on_tokens=None) -> Session:
        """A new session (SessionError when `capacity` sessions are open)."""
        self._refs = [weakref.ref(s) for s in self.sessions]
        if len(self._refs) >= self.capacity:
            raise SessionError(
                f"the stream server is full ({self.capacity} sessions); finish or close one first"
            )
        m = self.model
        s = Session(m.engine, m.tokenizer, m.config.audio, on_tokens, self.idle_timeout, drive=False)
        self._refs.append(weakref.ref(s))
        return s

    def step(self) -> dict[Session, list[Piece]]:
        """One tick of the engine: every session's queued audio encoded in one pass, one batched decoder
        step; the pieces each session decided. Finished sessions whose positions have all run leave
        (their last pieces here)."""
        self.model.engine.advance()
        out: dict[Session, list[Piece]] = {}
        for s in [s for r in self._refs if (s := r()) is not None]:
            pieces = s.collect()
            if pieces:
                out[s] = pieces
        self._refs = [weakref.ref(s) for s in self.sessions]
        return out

    def pump(self) -> dict[Session, list[Piece]]:
        """step() until no session has audio waiting; every piece decided, per session."""
        out: dict[Session, list[Piece]] = {}
        while True:
            for s, p in self.step().items():
                out.setdefault(s, []).extend(p)
            if all(s.settled for s in self.sessions):
                return out
