"""What every route of `voxtral serve` shares: the model, its engine thread, the limits and the metrics.

Admission: an upload and a realtime session each hold one of `max_sessions` places (the model is loaded
with that many decoder slots) while they run. An upload that finds every place taken waits, up to
`max_queue` uploads at once; beyond that, or when it arrives while the server drains, the answer is 503 at
once (an upload whose request came before the drain is still received and answered). A
realtime connection that finds no free place is told so (an `error` event) and closed (1013, try again
later): a live stream cannot wait.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Counter, Gauge

from .options import ServeOptions
from .pump import Pump


class Metrics:
    """Prometheus metrics of one server (its own registry: several servers in a process stay apart)."""

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "voxtral_requests", "HTTP requests and websocket connections", ["route", "status"], registry=r
        )
        self.errors = Counter("voxtral_errors", "Failed requests and sessions by kind", ["kind"], registry=r)
        self.sessions = Gauge("voxtral_realtime_sessions", "Realtime sessions open", registry=r)
        self.uploads = Gauge("voxtral_uploads_running", "Uploads being transcribed", registry=r)
        self.queue = Gauge("voxtral_queue_depth", "Uploads waiting for a place", registry=r)
        self.audio = Counter("voxtral_audio_seconds", "Seconds of audio transcribed", registry=r)
        self.busy = Counter(
            "voxtral_processing_seconds", "Wall seconds spent on uploads (summed)", registry=r
        )
        self.tokens = Counter("voxtral_tokens", "Tokens generated", registry=r)
        self.rtf = Gauge(
            "voxtral_realtime_factor", "Audio seconds per processing second, uploads so far", registry=r
        )
        self._audio_s = self._busy_s = 0.0

    def upload_done(self, audio_s: float, wall_s: float, tokens: int) -> None:
        self.audio.inc(audio_s)
        self.busy.inc(wall_s)
        self.tokens.inc(tokens)
        self._audio_s, self._busy_s = self._audio_s + audio_s, self._busy_s + wall_s
        if self._busy_s > 0:
            self.rtf.set(self._audio_s / self._busy_s)


class Full(Exception):
    """No place for this request now (503 / close 1013)."""


class ServerState:
    """The model, its engine thread and the admission of requests; one per app."""

    def __init__(self, model, options: ServeOptions):
        self.model, self.options = model, options
        self.pump = Pump(model, options.idle_timeout)
        self.metrics = Metrics()
        self.started = time.time()
        self.draining = False
        self._places: asyncio.Semaphore | None = None  # made in the event loop
        self._waiting = 0
        self.connections: set = set()  # realtime connections open (drained at shutdown)
        self.uploads = 0
        self.receiving = 0  # upload requests reading their bodies (a drain waits for them too)

    def _semaphore(self) -> asyncio.Semaphore:
        if self._places is None:
            self._places = asyncio.Semaphore(self.options.max_sessions)
        return self._places

    async def admit_upload(self) -> None:
        """Wait for a place (raises Full when max_queue uploads already wait). A request that arrives
        while the server drains is refused before its body is read (http.transcriptions); one that came
        before is admitted as usual."""
        places = self._semaphore()
        if places.locked() and self._waiting >= self.options.max_queue:
            raise Full(f"the server is busy ({self.options.max_queue} uploads waiting); retry later")
        self._waiting += 1
        self.metrics.queue.set(self._waiting)
        try:
            await places.acquire()
        finally:
            self._waiting -= 1
            self.metrics.queue.set(self._waiting)

    async def admit_session(self) -> None:
        """Take a place for a realtime session now (raises Full: a live stream cannot wait)."""
        if self.draining:
            raise Full("the server is shutting down")
        places = self._semaphore()
        if places.locked():
            raise Full(f"the server is full ({self.options.max_sessions} sessions and uploads); retry later")
        await places.acquire()  # a free place: returns without suspending

    def release(self) -> None:
        self._semaphore().release()
