"""`voxtral serve` on 127.0.0.1 with a tiny checkpoint (issue #17): the official `openai` client in every
response format and streaming, a realtime websocket client written as vLLM's example is (chunks of 20 ms
to 1 s), each giving the offline text; auth, limits, malformed events, a vanished client, idle expiry,
SIGTERM draining (a second signal: at once) and the command's own errors."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import srt
import webvtt
from serve_helpers import KEY, Server, from_pcm16, pcm16, realtime, run
from test_model_files import poison

import voxtral
from voxtral import audio as audio_io

pytest.importorskip("openai")


@pytest.fixture(scope="module")
def server(tiny_dir):
    s = Server(tiny_dir, "--max-sessions", "4")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def model(tiny_dir):
    return voxtral.load(tiny_dir, device="cpu")


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def test_openai_client_every_format(client, model, clip5, tmp_path):
    ref = model.transcribe(clip5)
    with open(clip5, "rb") as f:
        assert client.audio.transcriptions.create(model="voxtral", file=f).text == ref.text
    with open(clip5, "rb") as f:
        text = client.audio.transcriptions.create(model="voxtral", file=f, response_format="text")
    assert text.strip() == ref.text
    with open(clip5, "rb") as f:
        subs = client.audio.transcriptions.create(model="voxtral", file=f, response_format="srt")
    cues = list(srt.parse(subs))
    assert [c.content for c in cues] == [s.text.strip() for s in ref.segments]
    with open(clip5, "rb") as f:
        vtt = client.audio.transcriptions.create(model="voxtral", file=f, response_format="vtt")
    (tmp_path / "a.vtt").write_text(vtt)
    assert [c.text for c in webvtt.read(tmp_path / "a.vtt")] == [s.text.strip() for s in ref.segments]
    with open(clip5, "rb") as f:
        v = client.audio.transcriptions.create(
            model="voxtral",
            file=f,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
    assert v.text == ref.text and v.duration == pytest.approx(ref.duration)
    assert [(w.word, w.start, w.end) for w in v.words] == [
        (w.text.strip(), w.start, w.end) for w in ref.words
    ]
    assert [(s.start, s.end, s.text) for s in v.segments] == [(s.start, s.end, s.text) for s in ref.segments]


def test_openai_client_streams(client, model, clip5):
    ref = model.transcribe(clip5)
    with open(clip5, "rb") as f:
        events = list(client.audio.transcriptions.create(model="voxtral", file=f, stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    done = [e for e in events if e.type == "transcript.text.done"]
    assert len(deltas) > 1 and len(done) == 1 and events[-1] is done[0]
    assert "".join(deltas) == done[0].text == ref.text  # the deltas join into exactly the final text


@pytest.mark.parametrize(
    "pieces",
    [[" ", " hello", " world ", " ", "again", "  "], ["\n", " a"], ["  "], [], ["é", "\u00a0x ", "y"]],
)
def test_deltas_join_into_exactly_the_final_text(pieces):
    from voxtral.serve.deltas import Deltas

    d = Deltas()
    sent = [x for p in pieces if (x := d.feed(p))]
    assert "".join(sent) == d.final == "".join(pieces).strip()
    assert all(sent) and (not sent or not sent[0][0].isspace())


@pytest.mark.parametrize("chunk_ms", [20, 100, 1000])
def test_realtime_as_vllm_example_client(server, model, clip5, chunk_ms):
    pcm = pcm16(audio_io.load_audio(clip5))
    deltas, done = run(realtime(server.url, pcm, 2 * 16 * chunk_ms))
    assert done["text"] == model.transcribe(from_pcm16(pcm), sample_rate=16000).text
    assert "".join(d["delta"] for d in deltas) == done["text"]
    assert done["usage"]["completion_tokens"] > 0


def test_realtime_extensions_times_and_confidence(server, model, clip5):
    pcm = pcm16(audio_io.load_audio(clip5))
    deltas, done = run(realtime(server.url, pcm, 3200, extra={"timestamps": True, "confidence": True}))
    assert all("start" in d and 0 < d["prob"] <= 1 for d in deltas)
    starts = [d["start"] for d in deltas]
    assert starts == sorted(starts)


def test_no_route_and_a_wrong_method_are_openai_errors(server):
    """404 and 405 come in OpenAI's error shape like every other status (they were Starlette's plain
    text); 405 keeps its Allow header."""
    import urllib.request

    status, body = server.get("/nope")
    assert status == 404 and json.loads(body)["error"]["message"] == "no route /nope"
    status, body = server.get("/v1/audio/transcriptions")
    error = json.loads(body)["error"]
    assert status == 405 and error["message"] == "GET is not served at /v1/audio/transcriptions"
    auth = {"Authorization": f"Bearer {KEY}"}
    req = urllib.request.Request(server.url + "/v1/models", method="DELETE", headers=auth)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 405 and "GET" in e.value.headers["Allow"] and json.loads(e.value.read())["error"]


def test_auth(server, clip5):
    import openai
    import websockets

    assert server.get("/health", key=None)[0] == 401
    assert server.get("/v1/models", key="wrong")[0] == 401
    status, body = server.get("/v1/models")
    assert status == 200 and json.loads(body)["data"][0]["object"] == "model"
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with open(clip5, "rb") as f, pytest.raises(openai.AuthenticationError):
        bad.audio.transcriptions.create(model="voxtral", file=f)
    with pytest.raises(websockets.exceptions.InvalidStatus):
        run(realtime(server.url, b"\0\0" * 1600, 3200, key="wrong"))


def test_bad_uploads(client, server, tmp_path):
    import openai

    text = tmp_path / "notes.txt"
    text.write_text("not audio at all\n" * 10)
    with open(text, "rb") as f, pytest.raises(openai.BadRequestError, match="notes.txt: cannot decode audio"):
        client.audio.transcriptions.create(model="voxtral", file=f)
    with open(text, "rb") as f, pytest.raises(openai.BadRequestError, match="response_format"):
        client.audio.transcriptions.create(model="voxtral", file=f, response_format="xml")
    assert "voxtral_errors_total" in server.get("/metrics")[1]
    for fmt in ("srt", "vtt", "verbose_json"):  # events carry text: a subtitle file is not streamed
        fields = {"model": "voxtral", "stream": "true", "response_format": fmt}
        status, body = _post_form(server, fields, [("a.wav", b"x")])
        assert status == 400 and "response_format must be json or text" in body["error"]["message"]
    status, body = _post_form(server, {"model": "voxtral"}, [("a.wav", b"x"), ("b.wav", b"y")])
    message = body["error"]["message"]  # Starlette's own text, without its "400: "
    assert status == 400 and message.startswith("cannot read the multipart form: Too many files"), message


BOUNDARY = "voxtral-test-boundary"


def _form(fields: dict, files: list[tuple[str, bytes]]) -> bytes:
    """A multipart form's body: the fields, then a `file` part for each (name, bytes)."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    for name, data in files:
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def _start_post(server, body: bytes, timeout: float = 60):
    """A connection to the transcriptions route with the headers of a POST of `body` sent: the caller
    sends the body (all of it, or part) and reads the answer, or not."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    conn.putrequest("POST", "/v1/audio/transcriptions")
    conn.putheader("Authorization", f"Bearer {KEY}")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    return conn


def _post_form(server, fields: dict, files: list[tuple[str, bytes]]) -> tuple[int, dict]:
    """POST a multipart form (fields, then `file` parts) to the transcriptions route: (status, JSON)."""
    body = _form(fields, files)
    conn = _start_post(server, body)
    conn.send(body)
    r = conn.getresponse()
    try:
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def _append(samples: np.ndarray) -> dict:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm16(samples)).decode()}


async def _events(url: str, events: list, wait_for: int = 0, dones: int = 0) -> list[dict]:
    """Send raw frames (str: as is; dict: JSON); return the server events after created: the first
    `wait_for`, or every one up to the `dones`-th transcription.done."""
    import websockets

    async with websockets.connect(
        url.replace("http", "ws") + "/v1/realtime", additional_headers={"Authorization": f"Bearer {KEY}"}
    ) as ws:
        await ws.recv()
        for e in events:
            await ws.send(e if isinstance(e, str | bytes) else json.dumps(e))
        got: list[dict] = []
        while len(got) < wait_for or sum(e["type"] == "transcription.done" for e in got) < dones:
            got.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        return got


def test_malformed_events_answered_and_connection_kept(server):
    got = run(_events(server.url, [
        "{not json", b"\x00\x01", {"type": "nope"}, {"type": "input_audio_buffer.append", "audio": "%%%"},
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\1\2\3").decode()},
        {"type": "session.update", "delay_ms": 2400}, {"type": "session.update", "timestamps": "yes"},
        {"type": "session.update", "delay_ms": "480"}, {"type": "session.update", "delay_ms": 480.0},
        _append(np.zeros(8000, np.float32)),
        {"type": "input_audio_buffer.commit"}, {"type": "input_audio_buffer.commit", "final": "no"},
        {"type": "input_audio_buffer.commit", "final": True},
    ], 11))  # fmt: skip
    codes = [e.get("code") for e in got[:10]]
    assert codes == [
        "invalid_json",
        "invalid_event",
        "unknown_event",
        "invalid_audio",
        "invalid_audio",
        "invalid_delay",
        "invalid_event",  # timestamps "yes": not a boolean
        "invalid_event",  # delay_ms "480": not a number (was "delay_ms 480 differs from this server's 480")
        "invalid_event",  # delay_ms 480.0: not a whole number (as voxtral.load(delay_ms=480.0))
        "invalid_event",  # final "no": not a boolean (was taken as true)
    ]
    assert "whole number" in got[7]["error"] and "480" in got[7]["error"]
    assert got[10]["type"] in ("transcription.delta", "transcription.done")  # still served afterwards


COMMIT, FINAL = {"type": "input_audio_buffer.commit"}, {"type": "input_audio_buffer.commit", "final": True}


def test_an_utterance_without_audio_is_done_empty_and_the_connection_stays(server, model, clip5):
    """Recording started and stopped without a sound (commit, final commit): transcription.done with empty
    text, and the next utterance on the same connection is transcribed (it used to be an error and the
    connection closed)."""
    x = audio_io.load_audio(clip5)
    got = run(_events(server.url, [COMMIT, FINAL, COMMIT, _append(x), FINAL], dones=2))
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert got[0] == {"type": "transcription.done", "text": "", "usage": usage}, got
    assert [e["type"] for e in got[1:-1]] == ["transcription.delta"] * (len(got) - 2)
    assert got[-1]["text"] == model.transcribe(x, sample_rate=16000).text.strip()


def test_utterances_sent_ahead_are_done_in_order(server, model, clip5):
    """A client that sends several utterances without waiting for their done events gets each one's
    deltas and done in order, each equal to its audio transcribed alone (the connection runs one engine
    job at a time: its place is one of the server's)."""
    x = audio_io.load_audio(clip5)
    parts = [x[: len(x) // 2], x[len(x) // 2 :], x]
    events = [e for p in parts for e in (COMMIT, _append(p), FINAL)]
    got = run(_events(server.url, events, dones=len(parts)))
    texts, current = [], ""
    for e in got:
        if e["type"] == "transcription.delta":
            current += e["delta"]
        else:
            assert e["type"] == "transcription.done" and e["text"] == current.strip(), (e, current)
            texts.append(e["text"])
            current = ""
    assert texts == [model.transcribe(p, sample_rate=16000).text.strip() for p in parts]


@pytest.mark.parametrize("commit_first", [True, False], ids=["commit-first", "appends-first"])
def test_audio_past_the_limit_is_one_error_then_dropped(tiny_dir, clip5, commit_first):
    """--max-audio-s: the append that passes it gets one error event; the utterance's later appends are
    dropped quietly (each used to repeat the error); the utterance is done with the audio before, and the
    next one starts afresh. Also for audio appended before the utterance's first commit (held for it:
    it used to be held without limit, the server's memory growing with whatever a client sent)."""
    x = audio_io.load_audio(clip5)
    s = Server(tiny_dir, "--max-audio-s", "1")
    try:
        chunks = [_append(x[i : i + 1600]) for i in range(0, 48000, 1600)]  # 3 s in 0.1 s appends
        first = [COMMIT, *chunks] if commit_first else [*chunks, COMMIT]
        got = run(_events(s.url, [*first, FINAL, COMMIT, chunks[0], FINAL], dones=2))
    finally:
        s.stop()
    errors = [e for e in got if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["audio_too_long"], errors
    done = [e for e in got if e["type"] == "transcription.done"]
    assert done[0]["usage"]["prompt_tokens"] > 0 and done[1]["usage"]["prompt_tokens"] > 0


def test_audio_held_before_a_commit_is_limited_too(tiny_dir, clip5):
    """Appends before any commit are held for the utterance: past --max-audio-s the client hears it at
    once (one error event, no commit needed) and the rest is not held (it was, without limit)."""
    x = audio_io.load_audio(clip5)
    s = Server(tiny_dir, "--max-audio-s", "1")
    try:
        chunks = [_append(x[i : i + 1600]) for i in range(0, 48000, 1600)]  # 3 s in 0.1 s appends
        got = run(_events(s.url, chunks, wait_for=1))
    finally:
        s.stop()
    assert got[0]["type"] == "error" and got[0]["code"] == "audio_too_long", got


def _flac_without_length(x: np.ndarray, path) -> None:
    """x as a FLAC whose STREAMINFO says its length is unknown (0), as a FLAC written to a pipe is."""
    sf.write(path, x, 16000, format="FLAC")
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first
    info = 8  # its 34 bytes: total samples are the low 36 bits of bytes 10 … 17, then the MD5
    data[info + 13] &= 0xF0
    data[info + 14 : info + 18] = b"\0\0\0\0"
    data[info + 18 : info + 34] = bytes(16)
    path.write_bytes(bytes(data))


def test_the_audio_limit_counts_decoded_audio_not_the_header(tiny_dir, clip5, tmp_path):
    """--max-audio-s holds for uploads whose container states no length (a piped FLAC: it used to pass
    whatever its length) and is measured on the decoded audio (an ADTS header's bit-rate guess refused a
    23 s upload as 80 s); audio that cannot be decoded is a 400 before a stream=true response starts (it
    was a 200 with an error event the openai client could not read), and srt says its charset."""
    import openai

    x = audio_io.load_audio(clip5)
    long, short = tmp_path / "long.flac", tmp_path / "short.flac"
    _flac_without_length(np.concatenate([x, x]), long)  # 10 s
    _flac_without_length(x[: 3 * 16000], short)
    assert audio_io.audio_length(long) is None or audio_io.audio_length(long) != 2 * len(x)
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio at all\n" * 100)
    s = Server(tiny_dir, "--max-audio-s", "4")
    try:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key=KEY, max_retries=0)
        for stream in (False, True):
            with open(long, "rb") as f, pytest.raises(openai.APIStatusError, match="longer than 4 s") as e:
                c.audio.transcriptions.create(model="voxtral", file=f, stream=stream)
            assert e.value.status_code == 413
            with open(bad, "rb") as f, pytest.raises(openai.APIStatusError, match="notes.wav") as e:
                c.audio.transcriptions.create(model="voxtral", file=f, stream=stream)
            assert e.value.status_code == 400 and str(bad) not in str(e.value)
        with open(short, "rb") as f:
            assert c.audio.transcriptions.create(model="voxtral", file=f).text is not None
        with open(short, "rb") as f:
            raw = c.audio.transcriptions.with_raw_response
            r = raw.create(model="voxtral", file=f, response_format="srt")
        assert r.headers["content-type"] == "application/x-subrip; charset=utf-8"
    finally:
        s.stop()


def test_limits_full_server_and_vanished_client(tiny_dir, clip5, tmp_path):
    import openai
    import websockets

    s = Server(
        tiny_dir, "--max-sessions", "1", "--max-queue", "0", "--max-upload-mb", "0.5", "--max-audio-s", "4"
    )
    try:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key=KEY, max_retries=0)
        with open(clip5, "rb") as f, pytest.raises(openai.APIStatusError, match="longer than 4 s") as e:
            c.audio.transcriptions.create(model="voxtral", file=f)
        assert e.value.status_code == 413
        big = tmp_path / "big.wav"
        big.write_bytes(b"RIFF" + b"\0" * (1 << 20))
        with open(big, "rb") as f, pytest.raises(openai.APIStatusError) as e:
            c.audio.transcriptions.create(model="voxtral", file=f)
        assert e.value.status_code == 413

        async def hold_then_vanish():
            headers = {"Authorization": f"Bearer {KEY}"}
            url = s.url.replace("http", "ws") + "/v1/realtime"
            ws = await websockets.connect(url, additional_headers=headers)
            await ws.recv()
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))  # takes the only place
            await asyncio.sleep(0.5)
            async with websockets.connect(url, additional_headers=headers) as second:
                await second.recv()
                await second.send(json.dumps({"type": "input_audio_buffer.commit"}))
                refused = json.loads(await second.recv())
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    await second.recv()
            status = await asyncio.to_thread(_upload_status, c, clip5)
            ws.transport.abort()  # the client vanishes without a close frame
            return refused, closed.value.rcvd.code, status

        refused, code, status = run(hold_then_vanish())
        assert refused["code"] == "server_busy" and code == 1013 and status == 503
        deadline = asyncio.run(_wait_free(s))
        assert deadline, "the vanished client's place was not freed"
    finally:
        s.stop()


def _upload_status(client, clip) -> int:
    import openai

    short = audio_io.load_audio(clip)[:16000]
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, short, 16000, format="WAV")
    buf.name = "short.wav"
    buf.seek(0)
    try:
        client.audio.transcriptions.create(model="voxtral", file=buf)
    except openai.APIStatusError as e:
        return e.status_code
    return 200


async def _wait_free(s: Server) -> bool:
    """A new realtime session is admitted again within 10 s."""
    for _ in range(50):
        try:
            deltas, done = await realtime(s.url, pcm16(np.zeros(4000, np.float32)), 3200)
            return "text" in done
        except AssertionError:
            await asyncio.sleep(0.2)
    return False


def test_idle_session_closed_and_place_freed(tiny_dir):
    s = Server(tiny_dir, "--max-sessions", "1", "--idle-timeout", "1")
    try:
        got = run(_events(s.url, [
            _append(np.zeros(1600, np.float32)), {"type": "input_audio_buffer.commit"}
        ], 1))  # fmt: skip
        assert got[0]["type"] == "error" and "idle" in got[0]["error"]
        assert run(_wait_free(s))
    finally:
        s.stop()


def test_sigterm_drains_open_sessions(tiny_dir, model, clip5):
    """SIGTERM mid-stream: the session gets the text of all it sent and done, new work is refused, exit 0."""
    import websockets

    s = Server(tiny_dir)
    pcm = pcm16(audio_io.load_audio(clip5)[:48000])

    async def go():
        headers = {"Authorization": f"Bearer {KEY}"}
        async with websockets.connect(
            s.url.replace("http", "ws") + "/v1/realtime", additional_headers=headers
        ) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            await ws.send(
                json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
            )
            await asyncio.sleep(1.0)
            s.proc.send_signal(signal.SIGTERM)
            events = []
            try:
                async for message in ws:
                    events.append(json.loads(message))
            except websockets.exceptions.ConnectionClosed:
                pass
            return events, ws.close_code

    events, close_code = run(go())
    code = s.proc.wait(timeout=60)  # the one SIGTERM ends it
    err = s.proc.stderr.read()
    done = [e for e in events if e["type"] == "transcription.done"]
    assert len(done) == 1 and done[0]["text"] == model.transcribe(from_pcm16(pcm), sample_rate=16000).text
    assert close_code == 1001 and code == 0, err
    assert "Traceback" not in err


def test_an_upload_still_sending_its_body_at_the_signal_is_answered(tiny_dir, model, clip5):
    """SIGTERM while an upload's body is still arriving: its request came before the drain, so it is
    received and answered (200, its transcript; it used to get 503 once the rest came), while a request
    that arrives during the drain gets 503 at once; then the one signal ends the server, exit 0."""
    s = Server(tiny_dir)
    body = _form({"model": "voxtral"}, [("a.wav", clip5.read_bytes())])
    conn = _start_post(s, body, timeout=120)
    conn.send(body[: len(body) // 2])
    time.sleep(0.5)  # the server has the headers and half the body
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert s.proc.poll() is None and s.get("/health")[0] == 503  # draining, waiting for the body
    late = _start_post(s, body)
    late.send(body)
    refused = late.getresponse()
    assert refused.status == 503 and json.loads(refused.read())["error"]["code"] == "server_busy"
    conn.send(body[len(body) // 2 :])
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["text"] == model.transcribe(clip5).text
    code = s.proc.wait(timeout=60)  # the one SIGTERM ends it once the upload is answered
    err = s.proc.stderr.read()
    assert code == 0 and "Traceback" not in err, err


def test_a_body_that_stops_arriving_does_not_hold_the_drain_past_its_timeout(tiny_dir, clip5):
    """SIGTERM while an upload's body has stopped arriving (the client keeps the socket open): the drain
    waits --drain-timeout, says what it cut, and the server exits 0 (it waited forever)."""
    s = Server(tiny_dir, "--drain-timeout", "1")
    body = _form({"model": "voxtral"}, [("a.wav", clip5.read_bytes())])
    conn = _start_post(s, body, timeout=60)
    conn.send(body[:1000])  # and no more
    time.sleep(0.5)
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    code = s.proc.wait(timeout=30)
    waited, err = time.monotonic() - t0, s.proc.stderr.read()
    conn.close()
    assert code == 0 and waited < 10, (code, waited, err)
    assert (
        "voxtral: the drain passed --drain-timeout 1 s: 1 open request(s) cut" in err
        and "Traceback" not in err
    )


def test_a_second_signal_stops_at_once(tiny_dir, clip5, tmp_path):
    """SIGTERM drains: a long upload keeps running; a second SIGTERM ends the process at once (143, one
    line), not when the upload is done. The "serving" line comes once the port takes connections."""
    import openai

    s = Server(tiny_dir, "--max-audio-s", "7200")
    long = tmp_path / "long.wav"
    x = audio_io.load_audio(clip5)
    sf.write(long, np.tile(x, int(40 * 60 * 16000 / len(x))), 16000, subtype="PCM_16")  # 40 minutes
    client = openai.OpenAI(base_url=s.url + "/v1", api_key=KEY, max_retries=0, timeout=120)
    result: list = []

    def upload():
        try:
            with open(long, "rb") as f:
                result.append(client.audio.transcriptions.create(model="voxtral", file=f).text)
        except openai.APIError as e:
            result.append(e)

    t = threading.Thread(target=upload)
    t.start()
    time.sleep(1.5)  # the upload is running
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert s.proc.poll() is None and s.get("/health")[0] == 503  # draining, the upload still running
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    code = s.proc.wait(timeout=60)
    waited = time.monotonic() - t0
    t.join(timeout=60)
    err = s.proc.stderr.read()
    lines = err.splitlines()
    assert code == 143 and waited < 2.0, (code, waited, err)
    assert lines[-1] == "voxtral: stopped at once (a second signal): open sessions and uploads were cut"
    assert any(line.startswith("voxtral: serving ") for line in lines) and "Traceback" not in err
    assert result and isinstance(result[0], openai.APIError), result  # cut, not answered


@pytest.mark.parametrize("quiet", [[], ["-q"]], ids=["", "quiet"])
def test_port_0_names_the_port_it_got(tiny_dir, quiet):
    """--port 0 lets the system pick: the serving line names that port (it said :0), and it answers.
    With -q too: the line is neither progress nor a timing (-q used to drop it)."""
    import re
    import urllib.request

    cmd = [sys.executable, "-m", "voxtral", "serve", "-m", str(tiny_dir), "-d", "cpu", "--port", "0", *quiet]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = next(ln for ln in p.stderr if ln.startswith("voxtral: serving "))
        port = int(re.search(r"at http://127\.0\.0\.1:(\d+) ", line)[1])
        assert port > 0, line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
            assert r.status == 200
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
    assert p.returncode == 0


def test_serve_command_errors(tiny_dir):
    def serve(*args):
        cmd = [sys.executable, "-m", "voxtral", "serve", "--model", str(tiny_dir), "--device", "cpu", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    for args, needle, code in [
        (["--max-sessions", "0"], "--max-sessions must be from 1 to 4096", 2),
        (["--max-sessions", "99999999999999999999"], "--max-sessions must be from 1 to 4096", 2),
        (["--idle-timeout", "0"], "--idle-timeout must be a positive number", 2),
        (["--port", "70000"], "--port must be in", 2),
        (["--api-key", " "], "--api-key must not be empty", 2),
        (["--host", "203.0.113.5", "--port", "0"], "pass an address of this machine with --host", 8),
    ]:
        r = serve(*args)
        errors = [line for line in r.stderr.splitlines() if line.startswith("voxtral: error:")]
        assert r.returncode == code and len(errors) == 1 and needle in errors[0], r.stderr
    with __import__("socket").socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        r = serve("--port", str(taken.getsockname()[1]))
    assert r.returncode == 8 and "is in use" in r.stderr and "Traceback" not in r.stderr


def test_readme_serving_examples_run_as_written(tiny_dir, tmp_path):
    """The README's serving block (the serve line with a tiny checkpoint and a free port, then each curl)
    and its Python example, against a server started as written."""
    import re
    import shutil
    from pathlib import Path

    import soundfile as sf

    text = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Serving") :]
    lines = [ln for ln in re.search(r"```bash\n(.*?)```", section, re.S).group(1).splitlines() if ln.strip()]
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    serve_line = next(ln for ln in lines if ln.startswith("voxtral serve"))
    args = re.sub(r"\s+#.*$", "", serve_line).split()[2:]
    args = args[: args.index("--port")] + args[args.index("--port") + 2 :]  # Server picks the port
    args = [str(tiny_dir) if a == "/models/voxtral" else a for a in args]
    key = args[args.index("--api-key") + 1]
    args = args[: args.index("--api-key")] + args[args.index("--api-key") + 2 :]
    args = [a for i, a in enumerate(args) if a != "--model" and (i == 0 or args[i - 1] != "--model")]
    sf.write(
        tmp_path / "a.wav", (0.1 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32), 16000
    )
    s = Server(tiny_dir, *args, key=key)
    try:
        assert shutil.which("curl"), "curl is needed for the README's examples"
        for line in [ln for ln in lines if ln.startswith("curl")]:
            cmd = line.replace("localhost:8000", f"127.0.0.1:{s.port}")
            r = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0 and r.stdout.strip() and '"error"' not in r.stdout, (
                cmd,
                r.stdout,
                r.stderr,
            )
        code = python.replace("localhost:8000", f"127.0.0.1:{s.port}")
        r = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, r.stderr
    finally:
        s.stop()


def _metric(s: Server, name: str) -> float:
    """A metric's value from /metrics (0 when absent)."""
    for line in s.get("/metrics")[1].splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _send_and_vanish(s: Server, wav: bytes, after_s: float) -> None:
    """POST an upload's whole form, then close the connection without reading the answer."""
    body = _form({"model": "voxtral"}, [("long.wav", wav)])
    conn = _start_post(s, body, timeout=30)
    conn.send(body)
    time.sleep(after_s)
    conn.sock.close()


def test_an_upload_whose_client_vanishes_stops_and_frees_its_place(tiny_dir, tmp_path):
    """README: a client that vanishes frees its place at once. An upload of 10 min of audio is stopped
    when its client goes, running (the engine drops the job at its next tick) or waiting in the queue
    (behind one place taken by a live session), and is not counted as transcribed."""
    import io

    noise = (0.05 * np.random.default_rng(3).standard_normal(600 * 16000)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, noise, 16000, format="WAV", subtype="PCM_16")
    s = Server(tiny_dir, "--max-sessions", "1")
    try:
        _send_and_vanish(s, buf.getvalue(), after_s=1.5)  # running when it goes
        for _ in range(100):
            if _metric(s, "voxtral_errors_total") >= 1 and _metric(s, "voxtral_uploads_running") == 0:
                break
            time.sleep(0.1)
        assert _metric(s, "voxtral_uploads_running") == 0, "the upload still runs after its client left"
        assert 'voxtral_errors_total{kind="client_gone"} 1.0' in s.get("/metrics")[1]
        assert _metric(s, "voxtral_audio_seconds_total") < 600  # not transcribed to the end

        async def hold_place_then_queue():  # a live session takes the only place; an upload waits
            headers = {"Authorization": f"Bearer {KEY}"}
            url = s.url.replace("http", "ws") + "/v1/realtime"
            import websockets

            async with websockets.connect(url, additional_headers=headers) as ws:
                await ws.recv()
                await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
                await asyncio.sleep(0.5)
                await asyncio.to_thread(_send_and_vanish, s, buf.getvalue(), 1.0)
                for _ in range(50):
                    if 'voxtral_errors_total{kind="client_gone"} 2.0' in s.get("/metrics")[1]:
                        break
                    await asyncio.sleep(0.1)
                return _metric(s, "voxtral_queue_depth")

        assert run(hold_place_then_queue()) == 0, "the vanished upload still waits in the queue"
        assert 'voxtral_errors_total{kind="client_gone"} 2.0' in s.get("/metrics")[1]
        assert _wait_free_upload(s), "no place was free after both clients left"
        body = _form({"model": "voxtral", "stream": "true"}, [("noise.wav", buf.getvalue())])
        conn = _start_post(s, body)  # a streamed upload whose client leaves once its events begin
        conn.send(body)
        assert conn.getresponse().status == 200
        time.sleep(1.0)
        conn.close()
        for _ in range(100):
            if 'voxtral_errors_total{kind="client_gone"} 3.0' in s.get("/metrics")[1]:
                break
            time.sleep(0.1)
        assert 'voxtral_errors_total{kind="client_gone"} 3.0' in s.get("/metrics")[1]  # it was not counted
        assert _wait_free_upload(s), "no place was free after the streamed upload's client left"
    finally:
        s.stop()


def _wait_free_upload(s: Server) -> bool:
    """A short upload is answered 200 within 20 s."""
    import openai

    c = openai.OpenAI(base_url=s.url + "/v1", api_key=KEY, max_retries=0)
    buf = __import__("io").BytesIO()
    sf.write(buf, np.zeros(16000, np.float32), 16000, format="WAV")
    buf.name = "short.wav"
    for _ in range(100):
        buf.seek(0)
        try:
            c.audio.transcriptions.create(model="voxtral", file=buf)
            return True
        except openai.APIStatusError:
            time.sleep(0.2)
    return False


def _sse_events(server, fields: dict, wav: bytes) -> tuple[int, list[dict]]:
    """POST an upload with stream=true: (status, the server-sent events' JSON)."""
    body = _form(fields, [("a.wav", wav)])
    conn = _start_post(server, body)
    conn.send(body)
    r = conn.getresponse()
    try:
        lines = r.read().decode().splitlines()
        return r.status, [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    finally:
        conn.close()


def test_a_malformed_form_is_a_400_and_no_log_line(tiny_dir):
    """A multipart body that is not one: the client gets the 400; the server's stderr gets no line of the
    parser's own ("voxtral: Expected boundary character 45, got 103 at index 2", any client could add)."""
    s = Server(tiny_dir)
    try:
        conn = _start_post(s, b"garbage")
        conn.send(b"garbage")
        r = conn.getresponse()
        status, doc = r.status, json.loads(r.read())
        conn.close()
    finally:
        _, err = s.stop()
    assert status == 400 and doc["error"]["message"].startswith("cannot read the multipart form"), doc
    own = ("voxtral: loaded", "voxtral: serving")
    assert [line for line in err.splitlines() if not line.startswith(own)] == [], err


def test_damaged_weights_fail_each_request_with_the_tensor_named(tiny_dir, clip5, tmp_path):
    """Weights with NaN (damaged after the header checks): whichever request runs first gets the error
    naming the tensor — a streamed upload as its error event (the engine thread used to die there,
    leaving it and every live session waiting forever), a plain upload a 500 (it was a 400 blaming the
    file) — then every request is refused at once with it (500, a realtime error event), /health says
    error, and the server prints no traceback."""
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_dir, model_dir)
    poison(model_dir, "layers.0.attention.wq.weight", b"\xc0\x7f")
    wav, x = clip5.read_bytes(), audio_io.load_audio(clip5)
    named = "tensor 'layers.0.attention.wq.weight' has NaN or Inf values"
    s = Server(model_dir)
    try:
        status, events = _sse_events(s, {"model": "voxtral", "stream": "true"}, wav)  # the engine thread's
        assert status == 200 and [e["type"] for e in events] == ["error"], events
        assert events[0]["error"]["type"] == "server_error" and events[0]["error"]["code"] == "model_error"
        assert named in events[0]["error"]["message"]
        got = run(_events(s.url, [COMMIT, _append(x), FINAL], wait_for=1))
        assert got[0]["type"] == "error" and got[0]["code"] == "model_error" and named in got[0]["error"]
        for fields in ({"model": "voxtral"}, {"model": "voxtral", "stream": "true"}):
            status, doc = _post_form(s, fields, [("a.wav", wav)])
            assert (
                status == 500 and doc["error"]["code"] == "model_error" and named in doc["error"]["message"]
            )
        status, text = s.get("/health")
        assert status == 500 and json.loads(text) == {"status": "error", "error": doc["error"]["message"]}
        assert 'voxtral_errors_total{kind="model_error"} 4.0' in s.get("/metrics")[1]
    finally:
        _, err = s.stop()
    assert "Traceback" not in err, err
    s = Server(model_dir)
    try:  # a plain upload first: its own request thread runs the engine
        status, doc = _post_form(s, {"model": "voxtral"}, [("a.wav", wav)])
        assert status == 500 and doc["error"]["type"] == "server_error" and named in doc["error"]["message"]
        assert s.get("/health")[0] == 500
    finally:
        _, err = s.stop()
    assert "Traceback" not in err, err
    s = Server(model_dir)
    try:  # a realtime utterance first: the engine thread finds it
        got = run(_events(s.url, [COMMIT, _append(x), FINAL], wait_for=1))
        assert got[0]["type"] == "error" and got[0]["code"] == "model_error" and named in got[0]["error"]
        assert s.get("/health")[0] == 500
    finally:
        _, err = s.stop()
    assert "Traceback" not in err, err
