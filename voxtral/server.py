"""Many live sessions on one model: every tick, one batched decoder step for all that have audio waiting.

    server = StreamServer(model, capacity=32)
    a, b = server.open(), server.open()
    a.feed(chunk_a); b.feed(chunk_b)           # mel now; encoder and decoder in the server's step
    for session, pieces in server.step().items():   # one batched step (call it every 80 ms)
        ...
    a.finish()                                  # a leaves once its last position has run

A session is a stream.Session (same mel, encoder and online schedule, SPEC §7) whose encoder is a
slot of an encoder pool and whose decoder state is a slot of the model's engine. Each server step
encodes the mel every session queued in one pass (on the GPU: the layers over all sessions' new
positions in the same GEMMs) and then steps the decoders together, so per session the tokens are
exactly those it gives alone. Pieces come from server.step() / server.pump(), not from feed().
"""

from __future__ import annotations

import time

import numpy as np

from .errors import OptionError
from .stream import Piece, Session


class _SlotBackend:
    """The backend operations a Session uses, with its encoder a slot of a shared encoder pool and its
    decoder state a slot of a shared engine (the server, not the session, runs the steps)."""

    def __init__(self, backend, engine, encoders):
        self.backend, self.engine, self.encoders = backend, engine, encoders

    def start_encoder(self) -> int:
        return self.encoders.join()

    def start_stream(self) -> int:
        return self.engine.join()

    def append_audio(self, slot: int, embeds) -> None:
        self.engine.append_audio(slot, embeds)

    def prefill(self, slot: int, tokens: np.ndarray) -> None:
        self.engine.prefill(slot, tokens)


class ServerSession(Session):
    """A live session of a StreamServer: feed() and finish() take audio; the server decodes it."""

    def __init__(self, server: StreamServer, on_tokens=None):
        self.done = False  # finished and every position run: the session has left the server
        self._end: float | None = None
        self._queued: list[np.ndarray] = []  # mel frames [M, T] waiting for the server's encoder pass
        m = server.model
        super().__init__(server.slots, m.schedule, m.tokenizer, m.config.audio, on_tokens)

    @property
    def slot(self) -> int:
        return self._dec

    def _encode(self, mel: np.ndarray) -> None:
        if mel.shape[1]:
            self._queued.append(mel)  # encoded by the server's next step, with every other session's

    def _take_mel(self) -> np.ndarray | None:
        """The mel frames queued since the last server step [M, T], or None."""
        if not self._queued:
            return None
        mel = np.concatenate(self._queued, axis=1)
        self._queued.clear()
        return mel

    def _append(self, embeds) -> None:
        if len(embeds):
            self.backend.append_audio(self._dec, embeds)
            self.n_embeds += len(embeds)
        self._prefill_when_ready()

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
        self.encoders = model.backend.encoder_pool(capacity)
        self.slots = _SlotBackend(model.backend, self.engine, self.encoders)
        self.sessions: list[ServerSession] = []

    def open(self, on_tokens=None) -> ServerSession:
        """A new session in a free slot (OptionError when all capacity slots are taken)."""
        if not self.engine.free():
            raise OptionError(f"the stream server is full ({self.engine.capacity} sessions)")
        session = ServerSession(self, on_tokens)
        self.sessions.append(session)
        return session

    def step(self) -> dict[ServerSession, list[Piece]]:
        """Encode every session's queued mel in one pass, then one decoder step of every session with
        audio waiting, all in one batched step; the pieces each decided. Finished sessions whose
        positions have all run leave (their last pieces here)."""
        out: dict[ServerSession, list[Piece]] = {}
        queued = [(s, mel) for s in self.sessions if (mel := s._take_mel()) is not None]
        if queued:
            embeds = self.model.backend.encode_pool(self.encoders, [(s._enc, mel) for s, mel in queued])
            for (s, _), e in zip(queued, embeds, strict=True):
                s._append(e)
        ready = [s for s in self.sessions if s.ready() > 0]
        if ready:
            tokens = self.engine.step([s.slot for s in ready], 1)  # [k, 1]
            for s, row in zip(ready, tokens, strict=True):
                out[s] = s._pieces(s._take(row), end=s._end)
        for s in [s for s in self.sessions if s.finished and s.ready() <= 0]:
            out[s] = out.get(s, []) + s._leave()
            self.engine.leave(s.slot)
            self.encoders.leave(s._enc)
            self.sessions.remove(s)
        return out

    def pump(self) -> dict[ServerSession, list[Piece]]:
        """step() until no session has audio waiting; every piece decided, per session."""
        out: dict[ServerSession, list[Piece]] = {}
        while True:
            pieces = self.step()
            for s, p in pieces.items():
                out.setdefault(s, []).extend(p)
            if not any(s.ready() > 0 or s._queued for s in self.sessions):
                return out
