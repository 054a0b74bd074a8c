"""Many live sessions on one model: every tick, one batched decoder step for all that have audio waiting.

    server = StreamServer(model, capacity=32)
    a, b = server.open(), server.open()
    a.feed(chunk_a); b.feed(chunk_b)           # mel + encoder now; no decoding yet
    for session, pieces in server.step().items():   # one batched step (call it every 80 ms)
        ...
    a.finish()                                  # a leaves once its last position has run

A session is a stream.Session (same mel, encoder and online schedule, SPEC §7) whose decoder state
is a slot of the model's engine; the server steps the slots together, so per session the tokens
are exactly those it gives alone. Pieces come from server.step() / server.pump(), not from feed().
"""

from __future__ import annotations

import time

import numpy as np

from .errors import OptionError
from .stream import Piece, Session


class _SlotBackend:
    """The backend operations a Session uses, with its decoder state as a slot of a shared engine."""

    burst = 1

    def __init__(self, backend, engine):
        self.backend, self.engine = backend, engine

    def start_encoder(self):
        return self.backend.start_encoder()

    def encode_frames(self, enc, mel: np.ndarray):
        return self.backend.encode_frames(enc, mel)

    def start_stream(self) -> int:
        return self.engine.join()

    def append_audio(self, slot: int, embeds) -> None:
        self.engine.append_audio(slot, embeds)

    def prefill(self, slot: int, tokens: np.ndarray) -> None:
        self.engine.prefill(slot, tokens)


class ServerSession(Session):
    """A live session of a StreamServer: feed() and finish() take audio; the server decodes it."""

    def __init__(self, server: StreamServer, on_tokens=None):
        self.server = server
        self.done = False  # finished and every position run: the session has left the server
        self._end: float | None = None
        m = server.model
        super().__init__(server.slots, m.schedule, m.tokenizer, m.config.audio, on_tokens)

    @property
    def slot(self) -> int:
        return self._dec

    def _decode(self) -> list[tuple[int, str]]:
        self._prefill_when_ready()  # the steps are the server's
        return []

    def finish(self) -> list[Piece]:
        """Append the right padding; the session leaves the server once its last position has run."""
        self._end = time.perf_counter()
        return super().finish()  # []: the rest comes from the server's steps

    def _tail(self) -> list[tuple[int, str]]:
        return []  # the text decoder is flushed when the last position has run (_leave)

    def _leave(self) -> list[Piece]:
        self.done = True
        return self._pieces(Session._tail(self), end=self._end)


class StreamServer:
    """Up to `capacity` live sessions stepped together on one model's engine."""

    def __init__(self, model, capacity: int = 32):
        self.model = model
        self.engine = model.backend.engine(capacity)  # unbounded streams: KV rings of the window
        self.slots = _SlotBackend(model.backend, self.engine)
        self.sessions: list[ServerSession] = []

    def open(self, on_tokens=None) -> ServerSession:
        """A new session in a free slot (OptionError when all capacity slots are taken)."""
        if not self.engine.free():
            raise OptionError(f"the stream server is full ({self.engine.capacity} sessions)")
        session = ServerSession(self, on_tokens)
        self.sessions.append(session)
        return session

    def step(self) -> dict[ServerSession, list[Piece]]:
        """One decoder step of every session with audio waiting, all in one batched step; the pieces
        each decided. Finished sessions whose positions have all run leave (their last pieces here)."""
        out: dict[ServerSession, list[Piece]] = {}
        ready = [s for s in self.sessions if s.ready() > 0]
        if ready:
            tokens = self.engine.step([s.slot for s in ready], 1)  # [k, 1]
            for s, row in zip(ready, tokens, strict=True):
                out[s] = s._pieces(s._take(row), end=s._end)
        for s in [s for s in self.sessions if s.finished and s.ready() <= 0]:
            out[s] = out.get(s, []) + s._leave()
            self.engine.leave(s.slot)
            self.sessions.remove(s)
        return out

    def pump(self) -> dict[ServerSession, list[Piece]]:
        """step() until no session has audio waiting; every piece decided, per session."""
        out: dict[ServerSession, list[Piece]] = {}
        while True:
            pieces = self.step()
            for s, p in pieces.items():
                out.setdefault(s, []).extend(p)
            if not any(s.ready() > 0 for s in self.sessions):
                return out
