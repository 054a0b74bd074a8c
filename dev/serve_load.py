"""Load test of `voxtral serve` (issue #17): N realtime sessions paced at real time plus a stream of uploads.

    python dev/serve_load.py --model DIR [--device cuda] [--sessions 64] [--seconds 120] [--upload-every 2]

Starts `voxtral serve` on 127.0.0.1 (its own process), then from this process: `--sessions` websocket
clients, each sending `--seconds` of audio in 80 ms PCM16 chunks at real time (a clip tiled from one of 8
offsets, so 8 distinct streams), with `timestamps` on; and one upload of a 15 s clip every
`--upload-every` seconds meanwhile. Afterwards each distinct stream is uploaded whole and its text
compared with every session that sent it (no lost or changed text), and every concurrent upload's text
with a quiet one's. Prints: errors, sessions whose text differs, delta latency percentiles (arrival of the
delta − the moment the audio it is stamped with, plus 80 ms, was sent), uploads and their text check, and
/metrics. With a full-size random checkpoint (`voxtral dev random-checkpoint DIR --size full
--eos-unreachable`) the numbers are the real model's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "audio" / "night1968" / "60s_i_dont_want_anyones_life_on_my_hands.wav"
UPLOAD_CLIP = ROOT / "audio" / "night1968" / "15s_there_are_two_of_them_out_there.wav"
RATE, CHUNK_MS, STREAMS = 16000, 80, 8


def wav_bytes(x: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, x, RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def streams(seconds: float) -> list[np.ndarray]:
    """STREAMS distinct PCM16-exact signals of `seconds`, the clip tiled from different offsets."""
    from voxtral.audio import load_audio

    clip = load_audio(CLIP)
    n = int(seconds * RATE)
    out = []
    for i in range(STREAMS):
        x = np.roll(np.tile(clip, -(-n // len(clip)) + 1), -i * len(clip) // STREAMS)[:n]
        out.append(np.round(np.clip(x, -1, 1) * 32767).astype(np.int16))
    return out


async def session(url: str, pcm: np.ndarray, t_start: float) -> dict:
    import websockets

    latencies, text, errors = [], [], []
    async with websockets.connect(url, max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(json.dumps({"type": "session.update", "model": "voxtral", "timestamps": True}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        spc = RATE * CHUNK_MS // 1000
        sent_at: list[float] = []  # when chunk j's last sample was sent

        async def sender():
            t0 = max(time.perf_counter(), t_start)
            for j, i in enumerate(range(0, len(pcm), spc)):
                await asyncio.sleep(max(0.0, t0 + j * CHUNK_MS / 1000 - time.perf_counter()))
                chunk = pcm[i : i + spc].tobytes()
                await ws.send(
                    json.dumps(
                        {"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}
                    )
                )
                sent_at.append(time.perf_counter())
            await ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))

        task = asyncio.create_task(sender())
        done = None
        async for message in ws:
            e = json.loads(message)
            now = time.perf_counter()
            if e["type"] == "transcription.delta":
                text.append(e["delta"])
                j = int(round(e["start"] * 1000 / CHUNK_MS))  # the chunk holding the audio it is stamped with
                if j < len(sent_at) and not task.done():
                    latencies.append(now - sent_at[j])
            elif e["type"] == "transcription.done":
                done = e
                break
            else:
                errors.append(e)
        await task
    return {"latencies": latencies, "text": done["text"] if done else None, "errors": errors}


async def upload(client, data: bytes) -> tuple[int, str, float]:
    """One upload through the official openai client: (status, text or error, wall seconds)."""
    import openai

    t0 = time.perf_counter()
    try:
        r = await client.audio.transcriptions.create(model="voxtral", file=("a.wav", data))
        return 200, r.text, time.perf_counter() - t0
    except openai.APIStatusError as e:
        return e.status_code, str(e), time.perf_counter() - t0


async def main_async(args, base: str) -> int:
    import urllib.request

    import openai

    ws_url = base.replace("http", "ws") + "/v1/realtime"
    pcms = streams(args.seconds)
    from voxtral.audio import load_audio

    up = wav_bytes(load_audio(UPLOAD_CLIP))
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=600)
    quiet = await upload(client, up)
    t_start = time.perf_counter() + 1.0
    tasks = [
        asyncio.create_task(session(ws_url, pcms[i % STREAMS], t_start + 0.013 * i))
        for i in range(args.sessions)
    ]
    ups = []
    while not all(t.done() for t in tasks):
        ups.append(asyncio.create_task(upload(client, up)))
        await asyncio.sleep(args.upload_every)
    results = await asyncio.gather(*tasks)
    uploads = await asyncio.gather(*ups)
    refs = [await upload(client, wav_bytes(p.astype(np.float32) / 32768.0)) for p in pcms]
    metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(base + "/metrics").read().decode())
    lat = np.array([x for r in results for x in r["latencies"]]) * 1000
    errors = [e for r in results for e in r["errors"]]
    wrong = [i for i, r in enumerate(results) if r["text"] != refs[i % STREAMS][1]]
    up_ok = sum(1 for u in uploads if u[0] == 200 and u[1] == quiet[1])
    n = args.sessions
    print(f"sessions {n} × {args.seconds:g} s paced at real time, {len(uploads)} uploads of 15 s meanwhile")
    print(f"errors {len(errors)} {errors[:3]}")
    print(f"session texts equal to the offline upload of the same audio: {n - len(wrong)}/{n}")
    print(f"uploads answered 200 with the quiet upload's text: {up_ok}/{len(uploads)}; "
          f"upload wall s median {np.median([u[2] for u in uploads]):.2f}")  # fmt: skip
    if len(lat):
        p = np.percentile(lat, [50, 90, 99, 100])
        print(f"delta latency ms (audio sent → text received, {len(lat)} deltas): "
              f"p50 {p[0]:.0f}  p90 {p[1]:.0f}  p99 {p[2]:.0f}  max {p[3]:.0f}  "
              f"(delay {args.delay_ms} ms + 200 = {args.delay_ms + 200})")  # fmt: skip
    print(
        "\n".join(
            line for line in metrics.splitlines() if line.startswith("voxtral_") and "_created" not in line
        )
    )
    return 0 if not errors and not wrong and up_ok == len(uploads) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sessions", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--upload-every", type=float, default=2.0)
    ap.add_argument("--delay-ms", type=int, default=480)
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args()
    base = f"http://127.0.0.1:{args.port}"
    cmd = [sys.executable, "-m", "voxtral", "serve", "--model", args.model, "--device", args.device,
           "--port", str(args.port), "--max-sessions", str(args.sessions + 16),
           "--delay-ms", str(args.delay_ms)]  # fmt: skip
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    server = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": path})
    try:
        import urllib.request

        while server.poll() is None:
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        if server.poll() is not None:
            print(f"serve_load: voxtral serve exited {server.returncode}", file=sys.stderr)
            return 1
        return asyncio.run(main_async(args, base))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)


if __name__ == "__main__":
    sys.exit(main())
