"""The realtime websocket of `voxtral serve`, compatible with vLLM's `/v1/realtime` (SPEC §7).

Client → server (JSON text frames):
    {"type": "session.update", "model": …}                     optional; extensions below
    {"type": "input_audio_buffer.append", "audio": base64}     PCM16 little-endian, 16 kHz, mono
    {"type": "input_audio_buffer.commit"}                      start transcribing (appends may come before)
    {"type": "input_audio_buffer.commit", "final": true}       the audio ended: finish the text
Server → client:
    {"type": "session.created", "id", "created"}               on connect
    {"type": "transcription.delta", "delta"}                   text as soon as it is decided
    {"type": "transcription.done", "text", "usage"}            after the final commit; a new commit starts
                                                               the next utterance on the same connection
    {"type": "error", "error", "code"}                         a bad event or a failed session
A final commit with no audio since the utterance began is done with empty text (a client that started and
stopped recording without a sound keeps its connection). Audio beyond --max-audio-s in one utterance is
refused with one error event; its further appends are dropped quietly until the next utterance.
Extensions (ignored by vLLM clients, never required): session.update may carry `"timestamps": true`
(each delta gets `start`, seconds into the utterance) and `"confidence": true` (each delta gets `prob`,
the probability of the token that completed it); `"delay_ms"` must equal the server's (--delay-ms: the
decoder is conditioned on it at load). A connection that finds the server full or draining gets an
error event and close code 1013; one not fed for --idle-timeout seconds gets an error and is closed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
import uuid

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..errors import AudioError, SessionError, VoxtralError
from .deltas import Deltas
from .http import authorized
from .options import MAX_BACKLOG_S
from .state import Full, ServerState

TRY_AGAIN_LATER = 1013  # websocket close code: the server is full or shutting down
POLICY = 1008  # websocket close code: bad key
GOING_AWAY = 1001


class Connection:
    """One websocket: its current utterance (a live Session of the engine) and its settings."""

    def __init__(self, ws: WebSocket, state: ServerState):
        self.ws, self.state = ws, state
        self.session = None  # the utterance taking audio now (None after its final commit)
        self.buffered: list[np.ndarray] = []  # audio appended before the first commit
        self.buffered_samples = 0
        self.buffered_over = False  # that audio passed --max-audio-s (said once; the rest dropped)
        self.timestamps = self.confidence = False
        self.queue: asyncio.Queue | None = None  # the current utterance's (pieces, ended) from the engine
        self.over = False  # the current utterance passed --max-audio-s (said once)
        self.ending = None  # the utterance after its final commit whose text is still being sent
        self.sender: asyncio.Task | None = None  # sends the current or ending utterance's events
        self.place = False  # holds one of the server's places
        self.closed = False  # the server closed the websocket

    # --- client events ---------------------------------------------------------------------------
    async def handle(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "session.update":
            await self._update(event)
        elif kind == "input_audio_buffer.append":
            await self._append(event)
        elif kind == "input_audio_buffer.commit":
            final = event.get("final", False)
            if not isinstance(final, bool):
                message = f"input_audio_buffer.commit: final must be true or false, got {final!r}"
                return await self.error(message, "invalid_event")
            await self._commit(final)
        else:
            await self.error(f"unknown event type {kind!r}", "unknown_event")

    async def _update(self, event: dict) -> None:
        delay = event.get("delay_ms")
        if delay is not None and (not isinstance(delay, int) or isinstance(delay, bool)):
            message = f"session.update: delay_ms must be a whole number of milliseconds, got {delay!r}"
            return await self.error(message, "invalid_event")
        if delay is not None and delay != self.state.model.schedule.delay_ms:
            return await self.error(
                f"delay_ms {delay} differs from this server's {self.state.model.schedule.delay_ms} "
                "(start it with --delay-ms)", "invalid_delay"
            )  # fmt: skip
        for name in ("timestamps", "confidence"):
            value = event.get(name, getattr(self, name))
            if not isinstance(value, bool):
                message = f"session.update: {name} must be true or false, got {value!r}"
                return await self.error(message, "invalid_event")
        self.timestamps = event.get("timestamps", self.timestamps)
        self.confidence = event.get("confidence", self.confidence)

    async def _append(self, event: dict) -> None:
        try:
            raw = base64.b64decode(event.get("audio", ""), validate=True)
        except (binascii.Error, TypeError, ValueError):
            return await self.error("input_audio_buffer.append: audio is not base64", "invalid_audio")
        if len(raw) == 0 or len(raw) % 2:
            return await self.error(
                "input_audio_buffer.append: audio must be PCM16 (an even, non-zero byte count)",
                "invalid_audio",
            )
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
        if self.session is None:  # held for the utterance's commit, within --max-audio-s as its audio is
            limit, rate = self.state.options.max_audio_s, self.state.model.config.audio.sampling_rate
            if not self.buffered_over and (self.buffered_samples + len(x)) / rate > limit:
                self.buffered_over = True
                await self.error(f"the session passed {limit:g} s of audio (--max-audio-s)", "audio_too_long")
            if not self.buffered_over:
                self.buffered.append(x)
                self.buffered_samples += len(x)
            return
        await self._feed(self.session, x)

    async def _commit(self, final: bool) -> None:
        if self.session is None and not await self._start():
            return
        if final and self.session is not None:  # (a drain may have ended it while its audio went in)
            await self._end()

    async def _end(self) -> None:
        """The current utterance's audio is complete: its text and done follow (an utterance without audio:
        done with empty text, the connection stays). Events from now on belong to the next utterance."""
        s, self.session = self.session, None
        self.ending = s
        if s.n_samples == 0:
            self.state.pump.close(s)
            self.queue.put_nowait(([], True))
        else:
            await asyncio.to_thread(self.state.pump.finish, s)

    # --- the utterance ---------------------------------------------------------------------------
    async def _start(self) -> bool:
        """Open a session for the next utterance once the one before is sent whole: a connection runs
        one engine job at a time, whatever its client sends ahead (this waits, so its events wait unread).
        False, and the connection closed, when the server is full or shutting down."""
        if self.sender is not None and not self.sender.done():
            await asyncio.wait([self.sender])
        if self.closed:
            return False
        if self.state.pump.failure is not None:  # the model's weights are damaged: every session would fail
            await self.error(str(self.state.pump.failure), "model_error")
            await self.close(GOING_AWAY, "model failed")
            return False
        if self.state.draining or not self.place:
            try:
                await self.state.admit_session()  # raises Full while draining, even holding a place
            except Full as e:
                await self.error(str(e), "server_busy")
                reason = "server shutting down" if self.state.draining else "server full"
                await self.close(TRY_AGAIN_LATER, reason)
                return False
            self.place = True
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        deliver = lambda pieces, ended: loop.call_soon_threadsafe(queue.put_nowait, (pieces, ended))
        self.session = self.state.pump.open(deliver, confidence=self.confidence)
        self.queue, self.over = queue, False
        self.sender = asyncio.create_task(self._send_pieces(self.session, queue))
        buffered, self.buffered, self.buffered_samples, s = self.buffered, [], 0, self.session
        for x in buffered:
            await self._feed(s, x)
        self.over, self.buffered_over = self.over or self.buffered_over, False  # said: the rest is dropped
        return True

    async def _feed(self, s, x: np.ndarray) -> None:
        """Queue x [S] for utterance s, unless s has ended (a drain while this waited)."""
        limit = self.state.options.max_audio_s
        if self.over or s.duration + len(x) / s.cfg.sampling_rate > limit:
            if not self.over:  # said once; the rest of the utterance's audio is dropped
                self.over = True
                await self.error(f"the session passed {limit:g} s of audio (--max-audio-s)", "audio_too_long")
            return
        while s.backlog > MAX_BACKLOG_S and s.error is None:  # backpressure: stop reading this client
            await asyncio.sleep(0.02)
        if self.session is not s:
            return
        try:
            self.state.pump.feed(s, x)  # queues the samples without waiting for the engine (Scheduler.push)
        except VoxtralError as e:
            await self.error(str(e), "session_error")

    async def _send_pieces(self, session, queue: asyncio.Queue) -> None:
        """Deltas as the engine decides them; transcription.done when the utterance has run through (the
        one before has been sent whole: _start waits for it)."""
        text = Deltas()  # the utterance's text as sent
        while True:
            pieces, ended = await queue.get()
            for p in pieces:
                delta_text = text.feed(p.text)
                if not delta_text:
                    continue
                delta = {"type": "transcription.delta", "delta": delta_text}
                if self.timestamps:
                    delta["start"] = p.time
                if self.confidence and p.prob is not None:
                    delta["prob"] = round(p.prob, 6)
                await self.send(delta)
            if ended:
                break
        if session.error is not None:
            self.state.pump.note(session.error)
            failed = isinstance(session.error, (AudioError, SessionError))  # the session's, not the model's
            await self.error(str(session.error), "session_error" if failed else "model_error")
            await self.close(GOING_AWAY, "session ended")
            return
        heard = session.n_samples > 0
        steps, prompt = (session.n_steps, session.n_embeds) if heard else (0, 0)
        usage = {"prompt_tokens": prompt, "completion_tokens": steps, "total_tokens": prompt + steps}
        await self.send({"type": "transcription.done", "text": text.final, "usage": usage})
        self.ending = None
        self.state.metrics.tokens.inc(steps)
        self.state.metrics.audio.inc(session.duration)

    # --- output ----------------------------------------------------------------------------------
    async def send(self, event: dict) -> None:
        await self.ws.send_text(json.dumps(event))

    async def close(self, code: int, reason: str) -> None:
        """Close the websocket once (a drain and a failed utterance may both try)."""
        if not self.closed:
            self.closed = True
            await self.ws.close(code, reason)

    async def error(self, message: str, code: str) -> None:
        self.state.metrics.errors.labels(code).inc()
        await self.send({"type": "error", "error": message, "code": code})

    async def drain(self) -> None:
        """Shutdown: end the utterance (its remaining text and done are sent), then close."""
        if self.session is not None:
            await self._end()
        if self.sender is not None:  # the utterances before it are sent (_start)
            await asyncio.wait([self.sender], timeout=30)
        await self.close(GOING_AWAY, "server shutting down")

    async def cleanup(self) -> None:
        for s in (self.session, self.ending):
            if s is not None and not s.done:
                self.state.pump.close(s)
        if self.sender is not None:
            self.sender.cancel()
        if self.place:
            self.state.release()


async def realtime(ws: WebSocket) -> None:
    state: ServerState = ws.app.state.voxtral
    if not authorized(state, ws.headers):
        state.metrics.requests.labels("/v1/realtime", "401").inc()
        await ws.close(POLICY, "missing or wrong API key")  # before accept: the handshake gets 403
        return
    await ws.accept()
    state.metrics.requests.labels("/v1/realtime", "101").inc()
    conn = Connection(ws, state)
    state.connections.add(conn)
    try:
        await conn.send(
            {"type": "session.created", "id": f"sess-{uuid.uuid4().hex}", "created": int(time.time())}
        )
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("text") is None:
                await conn.error("events are JSON text frames, not binary", "invalid_event")
                continue
            try:
                event = json.loads(message["text"])
            except json.JSONDecodeError:
                await conn.error("the event is not JSON", "invalid_json")
                continue
            if not isinstance(event, dict):
                await conn.error("an event is a JSON object with a `type`", "invalid_event")
                continue
            await conn.handle(event)
    except (WebSocketDisconnect, RuntimeError):  # the client left (RuntimeError: closed under us)
        pass
    finally:
        state.connections.discard(conn)
        await conn.cleanup()
