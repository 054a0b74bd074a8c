"""OpenAI-compatible HTTP routes of `voxtral serve`: transcriptions, models, health, metrics.

POST /v1/audio/transcriptions takes OpenAI's multipart form: `file` (any container the CLI reads), `model`,
`response_format` (json | text | srt | vtt | verbose_json), `timestamp_granularities[]` (segment, word:
verbose_json), `stream` (true, with response_format json or text: server-sent events
`transcript.text.delta` as text is decided, then `transcript.text.done` with the whole text).
`language`, `prompt` and `temperature` are accepted and have no effect (the model detects the language
and decodes greedily). Errors are OpenAI's JSON shape
{"error": {"message", "type", "param", "code"}} with 400 (bad input), 401 (key), 404, 405, 411, 413 (limits),
500 (the model failed, e.g. damaged weights: then every later request gets it and /health says error), 503
(full or shutting down).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from .. import audio as audio_io
from .. import formats
from ..errors import AudioError, VoxtralError
from .deltas import Deltas
from .state import Full, ServerState

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")
FORM_SLACK = 64 << 10  # multipart overhead allowed beyond max_upload_mb
GONE_POLL_S = 0.25  # how often a waiting or running upload looks whether its client has gone


def error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    kinds = {401: "authentication_error", 404: "not_found_error", 500: "server_error", 503: "server_busy"}
    kind = kinds.get(status)
    body = {"message": message, "type": kind or "invalid_request_error", "param": param, "code": code}
    return JSONResponse({"error": body}, status_code=status)


def authorized(state: ServerState, headers) -> bool:
    """No key set, or `Authorization: Bearer KEY` matches it."""
    key = state.options.api_key
    if key is None:
        return True
    given = headers.get("authorization", "")
    return given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), key.encode())


async def health(request: Request) -> Response:
    state: ServerState = request.app.state.voxtral
    if state.pump.failure is not None:
        return JSONResponse({"status": "error", "error": str(state.pump.failure)}, status_code=500)
    if state.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def models(request: Request) -> Response:
    state: ServerState = request.app.state.voxtral
    entry = {
        "id": state.options.model_id,
        "object": "model",
        "created": int(state.started),
        "owned_by": "voxtral",
    }
    return JSONResponse({"object": "list", "data": [entry]})


async def metrics(request: Request) -> Response:
    state: ServerState = request.app.state.voxtral
    state.metrics.sessions.set(len(state.connections))
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def transcriptions(request: Request) -> Response:
    state: ServerState = request.app.state.voxtral
    if state.draining:  # new work is refused; an upload whose body was still coming is answered
        return error(503, "the server is shutting down", code="server_busy")
    state.receiving += 1
    try:
        return await _received(state, request)
    finally:
        state.receiving -= 1


async def _received(state: ServerState, request: Request) -> Response:
    """The upload's form checked and saved, then transcribed (_transcribe)."""
    limit = int(state.options.max_upload_mb * (1 << 20))
    length = request.headers.get("content-length")
    if length is None:
        return error(411, "send the upload with a Content-Length header", code="length_required")
    if not length.isdigit() or int(length) > limit + FORM_SLACK:
        return error(413, f"the upload exceeds {state.options.max_upload_mb:g} MB (--max-upload-mb)", "file")
    try:
        form = await request.form(max_files=1, max_fields=32)
    except Exception as e:  # malformed multipart: Starlette raises its own parse errors
        detail = getattr(e, "detail", None) or str(e)  # Starlette's HTTPException: its text, not "400: …"
        return error(400, f"cannot read the multipart form: {detail}")
    try:
        fields, failure = _fields(form)
        if failure is not None:
            return failure
        tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="voxtral-upload-"))
        response = None
        try:
            path = tmp / "audio"
            await asyncio.to_thread(_save, form["file"], path)
            response = await _transcribe(state, request, path, fields)
            return response
        finally:
            if not isinstance(response, StreamingResponse):  # else its events remove the file at their end
                await asyncio.to_thread(shutil.rmtree, tmp, True)
    finally:
        await form.close()


def _fields(form) -> tuple[dict, Response | None]:
    """The form's options, or a 400 naming the bad one."""
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        return {}, error(400, "the form needs a `file` part with the audio", "file")
    if not form.get("model"):
        return {}, error(400, "the form needs a `model` field (any name: one model is served)", "model")
    fmt = form.get("response_format") or "json"
    if fmt not in FORMATS:
        return {}, error(
            400, f"response_format must be one of {', '.join(FORMATS)}, got {fmt!r}", "response_format"
        )
    grains = form.getlist("timestamp_granularities[]") or form.getlist("timestamp_granularities")
    bad = [g for g in grains if g not in GRANULARITIES]
    if bad:
        return {}, error(
            400,
            f"timestamp_granularities must be segment or word, got {bad[0]!r}",
            "timestamp_granularities[]",
        )
    stream = (form.get("stream") or "false").lower()
    if stream not in ("true", "false"):
        return {}, error(400, f"stream must be true or false, got {stream!r}", "stream")
    if stream == "true" and fmt not in ("json", "text"):  # the events carry text, not a subtitle file
        return {}, error(
            400, f"stream=true sends text events: response_format must be json or text, got {fmt!r}", "stream"
        )
    name = os.path.basename(upload.filename or "") or "upload"
    return {"format": fmt, "grains": grains or ["segment"], "stream": stream == "true", "name": name}, None


def _save(upload, path: Path) -> None:
    upload.file.seek(0)
    with open(path, "wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)


class _TooLong(Exception):
    """The decoded audio passes --max-audio-s."""


def _measure(path: Path, rate: int, limit_s: float) -> None:
    """Decode the upload once, counting its samples (nothing kept): raises the VoxtralError of audio that
    cannot be read, or _TooLong as soon as it passes limit_s. A container's header may have no length
    (a piped WebM or FLAC) or a wrong one (ADTS: a bit-rate guess), so the decoded length is what counts."""
    most, n = int(limit_s * rate), 0
    for block in audio_io.blocks(path, target_rate=rate):
        n += len(block)
        if n > most:
            raise _TooLong


async def _while_connected(request: Request, task: asyncio.Future) -> bool:
    """Wait for task, looking every GONE_POLL_S whether the client has gone; False once it has (the task
    is left running: the caller stops it)."""
    while not task.done():
        await asyncio.wait({task}, timeout=GONE_POLL_S)
        if not task.done() and await request.is_disconnected():
            return False
    return True


async def _admitted(state: ServerState, request: Request) -> bool:
    """A place for the upload (raises Full when the queue is full); False if its client left while it
    waited in the queue (no place is kept)."""
    waiting = asyncio.ensure_future(state.admit_upload())
    if await _while_connected(request, waiting):
        waiting.result()  # Full
        return True
    waiting.cancel()
    try:
        await waiting
    except asyncio.CancelledError:
        return False
    state.release()  # the place came as the client left
    return False


async def _transcribe(state: ServerState, request: Request, path: Path, fields: dict) -> Response:
    if state.pump.failure is not None:  # the model's weights are damaged: every request would fail
        state.metrics.errors.labels("model_error").inc()
        return error(500, str(state.pump.failure), code="model_error")
    rate, limit = state.model.config.audio.sampling_rate, state.options.max_audio_s
    try:  # before a place is taken, and before a stream's 200: bad audio is a 400, too long a 413
        await asyncio.to_thread(_measure, path, rate, limit)
    except _TooLong:
        return error(413, f"the audio is longer than {limit:g} s, the limit (--max-audio-s)", "file")
    except VoxtralError as e:
        state.metrics.errors.labels("audio").inc()
        return error(400, str(e).replace(str(path), fields["name"]), "file")
    try:
        if not await _admitted(state, request):
            state.metrics.errors.labels("client_gone").inc()
            return error(499, "the client closed the connection")  # nobody reads it: for the access log
    except Full as e:
        return error(503, str(e), code="server_busy")
    state.uploads += 1  # until its response is complete (a drain waits for it)
    state.metrics.uploads.set(state.uploads)
    if fields["stream"]:
        return StreamingResponse(_events(state, path, fields), media_type="text/event-stream")
    t0, gone = time.perf_counter(), threading.Event()
    try:  # a client that goes away stops its transcription: its place is free at the next tick
        running = asyncio.ensure_future(
            asyncio.to_thread(state.model.transcribe, str(path), cancelled=gone.is_set)
        )
        if not await _while_connected(request, running):
            gone.set()
        t = await running
    except VoxtralError as e:
        if gone.is_set():
            state.metrics.errors.labels("client_gone").inc()
            return error(499, "the client closed the connection")
        if not isinstance(e, AudioError):  # the model's or the device's failure, not the upload's
            state.pump.note(e)
            state.metrics.errors.labels("model_error").inc()
            return error(500, str(e), code="model_error")
        state.metrics.errors.labels("audio").inc()
        return error(400, str(e).replace(str(path), fields["name"]), "file")
    finally:
        state.release()
        state.uploads -= 1
        state.metrics.uploads.set(state.uploads)
    state.metrics.upload_done(t.duration, time.perf_counter() - t0, len(t.tokens))
    return _response(t, fields, state.options.model_id)


def _usage(duration: float) -> dict:
    return {"type": "duration", "seconds": math.ceil(duration)}


def _response(t, fields: dict, model_id: str) -> Response:
    fmt = fields["format"]
    if fmt == "text":
        return PlainTextResponse(t.text)
    if fmt == "srt":
        return PlainTextResponse(formats.to_srt(t), media_type="application/x-subrip; charset=utf-8")
    if fmt == "vtt":
        return PlainTextResponse(formats.to_vtt(t), media_type="text/vtt")
    if fmt == "json":
        return JSONResponse({"text": t.text, "usage": _usage(t.duration)})
    return JSONResponse(_verbose(t, fields["grains"]))


def _verbose(t, grains: list[str]) -> dict:
    """OpenAI's verbose_json: segments and/or words with times in seconds (fields the model has no
    notion of — language, log-probabilities, no-speech probability — are null)."""
    doc = {"task": "transcribe", "language": None, "duration": t.duration, "text": t.text}
    if "segment" in grains:
        doc["segments"] = [
            {
                "id": i, "seek": 0, "start": s.start, "end": s.end, "text": s.text, "tokens": [],
                "temperature": 0.0, "avg_logprob": None, "compression_ratio": None, "no_speech_prob": None,
            }
            for i, s in enumerate(t.segments)
        ]  # fmt: skip
    if "word" in grains:
        doc["words"] = [{"word": w.text.strip(), "start": w.start, "end": w.end} for w in t.words]
    doc["usage"] = _usage(t.duration)
    return doc


async def _events(state: ServerState, path: Path, fields: dict):
    """Server-sent events of one upload transcribed as a live session: deltas, then the whole text."""
    loop, queue = asyncio.get_running_loop(), asyncio.Queue()
    session = state.pump.open(
        lambda pieces, ended: loop.call_soon_threadsafe(queue.put_nowait, (pieces, ended))
    )
    text, t0, answered = Deltas(), time.perf_counter(), False
    try:
        failure = await asyncio.to_thread(_feed_file, state, session, path)
        if failure is not None:
            answered = True
            yield _sse(_error_event(failure.replace(str(path), fields["name"]), "invalid_request_error"))
            return
        while True:
            pieces, ended = await queue.get()
            for p in pieces:
                if delta := text.feed(p.text):
                    yield _sse({"type": "transcript.text.delta", "delta": delta})
            if ended:
                break
        if session.error is not None:
            state.pump.note(session.error)
            bad_audio = isinstance(session.error, AudioError)
            state.metrics.errors.labels("audio" if bad_audio else "model_error").inc()
            kind, code = ("invalid_request_error", None) if bad_audio else ("server_error", "model_error")
            answered = True
            yield _sse(_error_event(str(session.error), kind, code))
            return
        full = text.final
        state.metrics.upload_done(session.duration, time.perf_counter() - t0, session.n_steps)
        answered = True
        yield _sse({"type": "transcript.text.done", "text": full, "usage": _usage(session.duration)})
    finally:  # a client that left mid-stream: the generator is closed where it waited (its 200 was sent)
        if not answered:
            state.metrics.errors.labels("client_gone").inc()
        if not session.done:
            state.pump.close(session)
        state.release()
        state.uploads -= 1
        state.metrics.uploads.set(state.uploads)
        await asyncio.to_thread(shutil.rmtree, path.parent, True)


def _error_event(message: str, kind: str, code: str | None = None) -> dict:
    """An error event of a streamed upload, its error in OpenAI's shape (the openai client reads
    error.message)."""
    return {"type": "error", "error": {"message": message, "type": kind, "param": None, "code": code}}


def _feed_file(state: ServerState, session, path: Path) -> str | None:
    """Every block of the file into the session, then its end; the error message if the audio is bad."""
    try:
        for block in audio_io.blocks(path):
            state.pump.feed(session, block)
        state.pump.finish(session)
    except VoxtralError as e:
        state.metrics.errors.labels("audio").inc()
        return str(e)
    return None


def _sse(event: dict) -> str:
    return f"data: {json.dumps(event)}\n\n"
