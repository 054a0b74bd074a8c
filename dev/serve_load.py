"""Load test of `voxtral serve` (issue #17): N realtime sessions paced at real time plus a stream of uploads.

    python dev/serve_load.py --model DIR [--device cuda] [--sessions 64] [--seconds 120] [--upload-every 2]

Starts `voxtral serve` on 127.0.0.1 (its own process), then from this process: `--sessions` websocket
clients, each sending `--seconds` of audio in 80 ms PCM16 chunks at real time (a clip tiled from one of 8
offsets, so 8 distinct streams), with `timestamps` on; and one upload of a 15 s clip every
`--upload-every` seconds meanwhile. Afterwards every session's text and every upload's is compared with
the offline transcript of the same audio, made in this process by the same model alone (no lost or
changed text). A text that differs passes only if it first differs where that offline run had a
near-tie (its top-2 logits closer than --near-tie at a step that can have written the first differing
character): batched steps round differently from a lone one, and random weights have many near-ties,
so this is what "equal" can mean on a GPU (the engine's own tests use the same rule). Prints: errors,
texts equal / equal up to a near-tie / different, delta latency percentiles (arrival of the delta − the
moment the audio it is stamped with, plus 80 ms, was sent; of that, delay + 160 ms is waiting for the
audio that decides the delta, so the line below gives the rest: from the moment the chunk completing
that audio was sent), uploads, and /metrics. With a full-size
random checkpoint (`voxtral dev random-checkpoint DIR --size full --eos-unreachable`) the numbers are
the real model's.
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


async def session(url: str, pcm: np.ndarray, t_start: float, lag: int) -> dict:
    """lag: chunks after the one a delta is stamped with until the one that completes the audio deciding
    it (the delay's chunks + 1 for the (k − 1) × 80 ms stamp + 1 for the mel frames' look-ahead)."""
    import websockets

    latencies, after, text, errors = [], [], [], []
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
                    if j + lag < len(sent_at):
                        after.append(now - sent_at[j + lag])
            elif e["type"] == "transcription.done":
                done = e
                break
            else:
                errors.append(e)
        await task
    return {"latencies": latencies, "after": after, "text": done["text"] if done else None, "errors": errors}


def compare_texts(args, audios: list[np.ndarray], texts: list[list[str]]) -> list[tuple]:
    """Per audio: texts checked against its offline transcript by the same model alone, in this process
    → (how many equal, how many equal up to a near-tie, descriptions of the different ones)."""
    import voxtral

    model = voxtral.load(args.model, device=args.device, delay_ms=args.delay_ms)
    out = []
    for audio, got in zip(audios, texts, strict=True):
        ref = model.transcribe(audio, sample_rate=RATE)
        margins = None
        equal, tied, wrong = 0, 0, []
        for text in got:
            if text is None:
                wrong.append("no transcription.done")
                continue
            c = first_difference(text, ref.text)
            if c is None:
                equal += 1
                continue
            if margins is None:
                n = len(ref.tokens)
                logits = model.trace(audio, n, forced_tokens=ref.tokens, sample_rate=RATE).logits  # [n, V]
                top2 = np.sort(logits, axis=1)[:, -2:]
                margins = top2[:, 1] - top2[:, 0]  # [steps]
            lo, hi = steps_writing(model.tokenizer, ref.tokens, c)
            margin = float(margins[lo : hi + 1].min())
            if margin < args.near_tie:
                tied += 1
            else:
                wrong.append(f"char {c} (steps {lo}–{hi}): offline margin {margin:.3f} ≥ {args.near_tie}")
        out.append((equal, tied, wrong))
    return out


def first_difference(a: str, b: str) -> int | None:
    """The first index where a and b differ (the shorter one's length if one is a prefix); None if equal."""
    n = min(len(a), len(b))
    i = next((i for i in range(n) if a[i] != b[i]), n)
    return None if i == n and len(a) == len(b) else i


def steps_writing(tokenizer, tokens, c: int) -> tuple[int, int]:
    """The steps [lo, hi] of `tokens` that can have decided character c of their text (decode, stripped):
    hi wrote character c (or is the last step), lo follows the step that wrote character c − 1. A run that
    agrees up to c − 1 and differs at c chose differently at one of them."""
    text = tokenizer.decode(tokens)
    lead = len(text) - len(text.lstrip())

    def first_writing(char: int) -> int:  # the first step whose decoded prefix is longer than char
        lo, hi = 0, len(tokens) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if len(tokenizer.decode(tokens[: mid + 1])) > char:
                hi = mid
            else:
                lo = mid + 1
        return lo

    hi = first_writing(lead + c)
    lo = 0 if c == 0 else min(hi, first_writing(lead + c - 1) + 1)
    return lo, hi


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
    import soundfile as sf

    from voxtral.audio import load_audio

    up = wav_bytes(load_audio(UPLOAD_CLIP))
    up_audio = sf.read(io.BytesIO(up), dtype="float32")[0]  # what the server decodes: PCM16 / 32768
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=600)
    quiet = await upload(client, up)
    t_start = time.perf_counter() + 1.0
    lag = args.delay_ms // CHUNK_MS + 2
    tasks = [
        asyncio.create_task(session(ws_url, pcms[i % STREAMS], t_start + 0.013 * i, lag))
        for i in range(args.sessions)
    ]
    ups = []
    while not all(t.done() for t in tasks):
        ups.append(asyncio.create_task(upload(client, up)))
        await asyncio.sleep(args.upload_every)
    results = await asyncio.gather(*tasks)
    uploads = await asyncio.gather(*ups)
    metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(base + "/metrics").read().decode())
    lat = np.array([x for r in results for x in r["latencies"]]) * 1000
    errors = [e for r in results for e in r["errors"]]
    errors += [u[1] for u in [quiet, *uploads] if u[0] != 200]
    n = args.sessions
    print(f"sessions {n} × {args.seconds:g} s paced at real time, {len(uploads)} uploads of 15 s meanwhile; "
          f"upload wall s median {np.median([u[2] for u in uploads]):.2f}")  # fmt: skip
    print(f"errors {len(errors)} {errors[:3]}")
    if len(lat):  # before the text checks (an offline run of every stream: minutes)
        p = np.percentile(lat, [50, 90, 99, 100])
        print(f"delta latency ms (audio sent → text received, {len(lat)} deltas): "
              f"p50 {p[0]:.0f}  p90 {p[1]:.0f}  p99 {p[2]:.0f}  max {p[3]:.0f}  "
              f"(delay {args.delay_ms} ms + 200 = {args.delay_ms + 200})")  # fmt: skip
        q = np.percentile([x for r in results for x in r["after"]], [50, 90, 99, 100]) * 1000
        print(f"  of which after the chunk completing the deciding audio was sent ({lag} chunks later): "
              f"p50 {q[0]:.0f}  p90 {q[1]:.0f}  p99 {q[2]:.0f}  max {q[3]:.0f}")  # fmt: skip
    checks = await asyncio.to_thread(
        compare_texts,
        args,
        [p.astype(np.float32) / 32768.0 for p in pcms] + [up_audio],
        [[r["text"] for r in results[i::STREAMS]] for i in range(STREAMS)]
        + [[u[1] for u in [quiet, *uploads] if u[0] == 200]],
    )
    different = 0
    for what, part in (("sessions", checks[:STREAMS]), ("uploads", checks[STREAMS:])):
        eq, ti, wr = sum(c[0] for c in part), sum(c[1] for c in part), [d for c in part for d in c[2]]
        different += len(wr)
        print(f"{what}: texts equal to the offline transcript {eq}, equal up to a near-tie {ti}, different "
              f"{len(wr)} {wr[:3]}")  # fmt: skip
    print(
        "\n".join(
            line for line in metrics.splitlines() if line.startswith("voxtral_") and "_created" not in line
        )
    )
    return 0 if not errors and not different else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sessions", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--upload-every", type=float, default=2.0)
    ap.add_argument("--delay-ms", type=int, default=480)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--near-tie", type=float, default=0.05, help="logit margin below which a choice is a tie")
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
