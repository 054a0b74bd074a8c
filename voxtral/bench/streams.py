"""`voxtral bench --stream` and `--batch`: live streaming latency and batched decode throughput.

stream: the audio fed in chunks through a streaming session, twice. Unpaced (as fast as it goes):
compute seconds per audio second (the real-time factor) and the time of each feed() call. Paced
(each chunk handed over when its last sample would have arrived from a live source): the latency
of every piece, from the arrival of the audio frame it belongs to until feed() returns it. That
latency includes the model's transcription delay (delay_ms) and the mel look-ahead by design.

server: for each B, B live sessions on a StreamServer fed 80 ms each per tick: the tick's wall time.

batch: for each B, B streams joined at a given position and stepped together: ms per batched step,
streams × steps per second, real-time factor per stream (80 ms of audio per step), memory, and
throughput relative to B = 1.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from .. import audio as audio_io
from ..config import FRAME_MS


def _summary(ms) -> dict:
    ms = np.asarray(ms, np.float64)
    if not ms.size:
        return {"median": 0.0, "p90": 0.0, "max": 0.0, "n": 0}
    return {
        "median": float(np.median(ms)),
        "p90": float(np.percentile(ms, 90)),
        "max": float(ms.max()),
        "n": int(ms.size),
    }


def stream_report(model, samples: np.ndarray, chunk_ms: int, paced_s: float) -> dict:
    """Unpaced pass over all of samples, then a paced pass over its first paced_s seconds."""
    rate = model.config.audio.sampling_rate
    chunk = rate * chunk_ms // 1000
    session = model.stream()
    session.feed(samples[:chunk])  # warm-up: compiles, captures, allocates
    session.finish()

    session, feed_ms = model.stream(), []
    t0 = time.perf_counter()
    for start in range(0, len(samples), chunk):
        t = time.perf_counter()
        session.feed(samples[start : start + chunk])
        feed_ms.append(1000 * (time.perf_counter() - t))
    session.finish()
    compute_s = time.perf_counter() - t0
    audio_s = len(samples) / rate

    paced = samples[: int(paced_s * rate)]
    session, latencies, paced_feed_ms = model.stream(), [], []
    t0 = time.perf_counter()
    for start in range(0, len(paced), chunk):
        part = paced[start : start + chunk]
        arrival = t0 + (start + len(part)) / rate
        time.sleep(max(0.0, arrival - time.perf_counter()))
        t = time.perf_counter()
        latencies += [p.latency * 1000 for p in session.feed(part)]
        paced_feed_ms.append(1000 * (time.perf_counter() - t))
    latencies += [p.latency * 1000 for p in session.finish()]
    return {
        "chunk_ms": chunk_ms,
        "delay_ms": model.schedule.delay_ms,
        "audio_s": audio_s,
        "compute_s": compute_s,
        "rtf": compute_s / audio_s,
        "realtime_x": audio_s / compute_s,
        "feed_ms": _summary(feed_ms),
        "paced_audio_s": len(paced) / rate,
        "paced_feed_ms": _summary(paced_feed_ms),
        "latency_ms": _summary(latencies),
    }


def batch_report(model, samples: np.ndarray, sizes, position: int, steps: int) -> list[dict]:
    """Per B: a decoder of B slots at `position` (real audio embeddings, prompt then pad inputs), steps
    timed in calls of the decoder's burst (the shipped decoder, as the scheduler calls it)."""
    from .run import step_ms

    cfg, backend, schedule = model.config, model.backend, model.schedule
    spt = cfg.audio.samples_per_token
    need = position + steps + 3
    long = np.tile(samples, -(-(need * spt) // len(samples)))
    mel = audio_io.log_mel(audio_io.pad_offline(long, schedule.n_left, 0, spt), cfg.audio)
    encoder = backend.encoder(1)
    embeds = encoder.encode([(encoder.join(), mel)])[0]  # [N ≥ need, D]
    del encoder
    inputs = np.concatenate([schedule.prompt, np.full(position + 1 - len(schedule.prompt), schedule.pad)])
    rows = []
    for b in sizes:
        decoder = backend.decoder(b)
        slots = [decoder.join(need) for _ in range(b)]
        for s in slots:
            decoder.append_audio(s, embeds)
            decoder.prefill([s], inputs)  # positions 0 … position − 1
        decoder.step(slots, 2)  # warm-up: compiles and captures this bucket
        ms = step_ms(backend, decoder, slots, steps, decoder.burst)
        median = float(np.median(ms))
        rows.append(
            {
                "batch": b,
                "position": position + 2,
                "median_ms": median,
                "p90_ms": float(np.percentile(ms, 90)),
                "stream_steps_per_s": b * 1000 / median,
                "realtime_x_per_stream": FRAME_MS / median,
                "engine_bytes": decoder.nbytes(),
                "kv_bytes_per_stream": decoder.kv_bytes(slots[0]),
                "kv_bytes_per_live_stream": window_kv_bytes(cfg.decoder),
                "path": getattr(decoder, "paths", {}).get(b, ""),  # GPU: the step path timed fastest
            }
        )
        del decoder, slots
        _release(backend)
    for row in rows:
        row["throughput_x"] = row["stream_steps_per_s"] / rows[0]["stream_steps_per_s"]
        row["step_over_b1"] = row["median_ms"] / rows[0]["median_ms"]
    return rows


@contextmanager
def gpu_timer(backend):
    """CUDA events around the block on the backend's stream; yields a function → elapsed milliseconds."""
    import cupy

    begin, end = cupy.cuda.Event(), cupy.cuda.Event()
    begin.record(backend.cuda_stream)
    result: list[float] = []
    yield lambda: result[0]
    end.record(backend.cuda_stream)
    end.synchronize()
    result.append(cupy.cuda.get_elapsed_time(begin, end))


def server_report(model, samples: np.ndarray, sizes, ticks: int, chunk_ms: int = FRAME_MS) -> list[dict]:
    """Per B: B live sessions on a StreamServer, each fed chunk_ms of audio per tick, then one
    server.step(); the wall time of a tick (median, p90) against the chunk_ms it must keep up with."""
    from ..server import StreamServer

    rate = model.config.audio.sampling_rate
    chunk = rate * chunk_ms // 1000
    rows = []
    for b in sizes:
        server = StreamServer(model, capacity=b)
        sessions = [server.open() for _ in range(b)]
        offsets = [(i * 7919 * chunk) % max(1, len(samples) - chunk) for i in range(b)]  # different audio
        ms = []
        for t in range(ticks + 10):  # the first 10 ticks warm up (prompt, prefill, graphs)
            t0 = time.perf_counter()
            for s, off in zip(sessions, offsets, strict=True):
                start = (off + t * chunk) % (len(samples) - chunk)
                s.feed(samples[start : start + chunk])
            server.step()
            model.backend.synchronize()
            if t >= 10:
                ms.append(1000 * (time.perf_counter() - t0))
        median = float(np.median(ms))
        rows.append(
            {
                "sessions": b,
                "tick_ms": median,
                "tick_p90_ms": float(np.percentile(ms, 90)),
                "tick_p99_ms": float(np.percentile(ms, 99)),
                "realtime_x": chunk_ms / median,
                "chunk_ms": chunk_ms,
            }
        )
        for s in sessions:
            s.close()
        server.step()  # the closed sessions leave and free their memory
        del server, sessions
        _release(model.backend)
    return rows


def window_kv_bytes(dec) -> int:
    """KV cache bytes of one live stream (a ring of the full window), BF16 keys and values."""
    return 2 * 2 * dec.n_layers * dec.sliding_window * dec.kv_dim


def _release(backend) -> None:
    if backend.name == "cuda":
        import cupy

        backend.synchronize()
        cupy.get_default_memory_pool().free_all_blocks()


def times(x: float) -> str:
    """A real-time factor as `31x`, or `0.16x` below 10 (never a bare `0x`)."""
    return f"{x:.0f}x" if x >= 10 else f"{x:.2g}x"


def stream_lines(r: dict) -> list[str]:
    f, lat = r["feed_ms"], r["latency_ms"]
    return [
        f"       stream ({r['chunk_ms']} ms chunks, delay {r['delay_ms']} ms): {r['audio_s']:.1f} s audio in "
        f"{r['compute_s']:.2f} s = RTF {r['rtf']:.3f} ({times(r['realtime_x'])} real time), feed median "
        f"{f['median']:.1f} ms, p90 {f['p90']:.1f} ms, max {f['max']:.1f} ms",
        f"       paced {r['paced_audio_s']:.0f} s: piece latency median {lat['median']:.0f} ms, p90 "
        f"{lat['p90']:.0f} ms, max {lat['max']:.0f} ms over {lat['n']} pieces (includes the delay); feed "
        f"median {r['paced_feed_ms']['median']:.1f} ms, p90 {r['paced_feed_ms']['p90']:.1f} ms",
    ]


def live_capacity(rows: list[dict]) -> int | None:
    """The most sessions tried whose ticks all kept up: p99 tick within the audio it carries (80 ms)."""
    ok = [r["sessions"] for r in rows if r.get("tick_p99_ms", float("inf")) <= r.get("chunk_ms", FRAME_MS)]
    return max(ok) if ok else None


def server_lines(rows: list[dict]) -> list[str]:
    lines = [
        f"       live sessions {r['sessions']:>3}: tick (feed 80 ms each + one batched step) median "
        f"{r['tick_ms']:.1f} ms, p90 {r['tick_p90_ms']:.1f} ms, p99 {r.get('tick_p99_ms', 0):.1f} ms = "
        f"{r['realtime_x']:.1f}x real time"
        for r in rows
    ]
    cap = live_capacity(rows)
    tried = ", ".join(str(r["sessions"]) for r in rows)
    lines.append(
        f"       live capacity: {f'{cap} sessions' if cap is not None else 'none'} (the most of {tried} "
        "whose p99 tick stays within the 80 ms of audio it carries)"
    )
    return lines


def batch_lines(rows: list[dict]) -> list[str]:
    lines = [
        "       batch  ms/step  (x B=1)  stream-steps/s  realtime/stream  throughput  engine GB  KV MB/stream"
        "         path"
    ]
    for r in rows:
        kv, live = r["kv_bytes_per_stream"] / 1e6, r["kv_bytes_per_live_stream"] / 1e6
        lines.append(
            f"       {r['batch']:>5}  {r['median_ms']:7.3f}  {r['step_over_b1']:6.2f}x"
            f"  {r['stream_steps_per_s']:14.0f}  {r['realtime_x_per_stream']:14.1f}x"
            f"  {r['throughput_x']:9.1f}x  {r['engine_bytes'] / 1e9:9.2f}  {kv:8.1f} ({live:.0f} live)"
            f"  {r.get('path', '')}"
        )
    return lines
