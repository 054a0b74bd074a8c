"""The engine's request patterns against the single offline run, shared by the CPU and GPU tests.

Every pattern — offline, batched with early stops, streaming in random chunks, server sessions
joining and leaving, trace — must give identical tokens and text to model.transcribe() of the same
audio alone; and any mix of them at once, from several threads, must too.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter

import numpy as np
from stream_checks import chunk_sizes, run_stream

from voxtral.audio import load_audio
from voxtral.errors import AudioError, SessionError
from voxtral.server import StreamServer

RATE = 16000
PATTERNS = ("offline", "batched", "streaming", "server", "trace")
# On the GPU, patterns run the same positions through different kernels (tiled or split attention,
# GEMV or GEMM, per batch size), identical up to bf16 rounding: where the offline run's top-2 logits
# are closer than this (random weights make such near-ties, SPEC §9) either token is right, and the
# rest of the run follows from it. Everywhere else, and always on the CPU, tokens must be identical.
NEAR_TIE = 0.05


def clips(clip5, clip15) -> list[np.ndarray]:
    """Four inputs of 1.3 … 15 s (arrays at 16 kHz): the two clips and pieces of them."""
    a, b = load_audio(clip15), load_audio(clip5)
    return [a, b, a[5 * RATE : 12 * RATE], b[RATE : RATE + 21000]]


def alone(model, audios) -> list:
    return [model.transcribe(a, sample_rate=RATE) for a in audios]


def with_early_stops(model, audios, reference):
    """A copy of model whose EOS is a token its runs emit, so that inputs stop at different steps,
    and the reference runs of that model (the tiny checkpoints' real EOS is too rare to test with)."""
    counts = Counter(t for r in reference for t in set(r.tokens[1:]) if t != model.schedule.pad)
    eos = counts.most_common(1)[0][0]
    stopped = dataclasses.replace(model.schedule, eos=eos)
    model.schedule = model.engine.schedule = stopped
    runs = alone(model, audios)
    assert sum(len(r.tokens) < len(ref.tokens) for r, ref in zip(runs, reference, strict=True)) >= 2
    return runs


def run_pattern(model, pattern: str, audios) -> list[tuple[list[int], str]]:
    """(tokens, text) of every input through one request pattern."""
    if pattern == "offline":
        return [(t.tokens, t.text) for t in alone(model, audios)]
    if pattern == "batched":
        got = dict(model.transcribe_each(audios, batch_size=3, sample_rate=RATE))
        return [(got[i].tokens, got[i].text) for i in range(len(audios))]
    if pattern == "streaming":
        out = []
        for i, a in enumerate(audios):
            tokens, pieces = run_stream(model, a, chunk_sizes(len(a), "random", seed=i))
            out.append((tokens, "".join(p.text for p in pieces).strip()))
        return out
    if pattern == "server":
        return server_sessions(model, audios, capacity=3)
    if pattern == "trace":
        ref = alone(model, audios)
        out = []
        for a, r in zip(audios, ref, strict=True):
            tr = model.trace(a, len(r.tokens), sample_rate=RATE)
            out.append((tr.tokens.tolist(), model.tokenizer.decode(tr.tokens.tolist()).strip()))
        return out
    raise ValueError(pattern)


def check_pattern(model, pattern: str, audios) -> None:
    want = [(t.tokens, t.text) for t in alone(model, audios)]
    got = run_pattern(model, pattern, audios)
    same = 0
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g[0] != w[0]:
            assert_near_tie(model, audios[i], g[0], w[0], f"{pattern}: input {i}")
            continue
        assert g[1] == w[1], f"{pattern}: input {i} text differs from its offline run"
        same += 1
    print(f"{pattern} on {model.device}: {same} of {len(audios)} inputs identical to their offline run")


def assert_near_tie(model, audio, got: list[int], want: list[int], what: str) -> None:
    """Tokens that differ from the offline run's are right only on the GPU, and only if they first
    differ at a step where the offline run had a near-tie (its top-2 logits closer than NEAR_TIE)."""
    k = _first_difference(got, want, what)
    assert model.device == "cuda", (
        f"{what}: tokens differ from its offline run at step {k} (CPU: must be exact)"
    )
    margin = _margin_at(model, audio, want, k)
    print(f"{what}: first differs at step {k} of {len(want)}, offline top-2 margin there {margin:.4f}")
    assert margin < NEAR_TIE, f"{what}: differs at step {k} where the offline margin was {margin:.3f}"


def assert_equal_or_reference_near_tie(reference, audio, got: list[int], want: list[int], what: str) -> None:
    """GPU tokens `got` against the CPU's `want` for the same audio (a path, or an array at RATE): equal,
    or first different at a step where the CPU's own top-2 logits (reference: the CPU model, teacher-forced
    on its tokens) are closer than NEAR_TIE. There the GPU's bf16 rounding may take either token, and the
    rest of the run follows from it (tiny random checkpoint, 15 s clip: step 184's margin is 0.0004)."""
    if got == want:
        return
    k = _first_difference(got, want, what)
    margin = _margin_at(reference, audio, want, k)
    print(f"{what}: GPU first differs from the CPU at step {k} of {len(want)}, CPU top-2 margin {margin:.4f}")
    assert margin < NEAR_TIE, f"{what}: GPU differs from the CPU at step {k}, CPU margin {margin:.3f}"


def _first_difference(got: list[int], want: list[int], what: str) -> int:
    """The first step where two token lists differ (AssertionError for equal tokens of unequal length)."""
    k = next((j for j, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
    assert k < min(len(got), len(want)), f"{what}: same tokens, different lengths {len(got)} vs {len(want)}"
    return k


def _margin_at(model, audio, want: list[int], k: int) -> float:
    """model's top-2 logit gap at step k, teacher-forced on `want` (audio: a path, or an array at RATE)."""
    rate = {"sample_rate": RATE} if isinstance(audio, np.ndarray) else {}
    top2 = np.sort(model.trace(audio, k + 1, forced_tokens=want, **rate).logits[k])[-2:]
    return float(top2[1] - top2[0])


def server_sessions(model, audios, capacity: int) -> list[tuple[list[int], str]]:
    """Sessions opened at different ticks (the 4th when one of the first 3 leaves), fed in different
    chunk sizes, finished at different ticks."""
    server = StreamServer(model, capacity=capacity)
    opens = [0, 10, 25, 40]
    sessions: dict[int, object] = {}
    tokens: dict[int, list[int]] = {i: [] for i in range(len(audios))}
    texts: dict[int, list[str]] = {i: [] for i in range(len(audios))}
    fed = dict.fromkeys(range(len(audios)), 0)
    tick = 0
    while any(not (i in sessions and sessions[i].finished) for i in range(len(audios))):
        for i, a in enumerate(audios):
            if i not in sessions and tick >= opens[i % len(opens)] and len(server.sessions) < capacity:
                sessions[i] = server.open(on_tokens=lambda t, i=i: tokens[i].extend(int(x) for x in t))
            s = sessions.get(i)
            if s is not None and not s.finished:
                n = 3000 if i % 2 else 4321
                s.feed(a[fed[i] : fed[i] + n])
                fed[i] += n
                if fed[i] >= len(a):
                    s.finish()
        for s, pieces in server.step().items():
            texts[next(i for i, x in sessions.items() if x is s)] += [p.text for p in pieces]
        tick += 1
        assert len(server.sessions) <= capacity
    for s, pieces in server.pump().items():
        texts[next(i for i, x in sessions.items() if x is s)] += [p.text for p in pieces]
    assert all(s.done for s in sessions.values()) and not server.sessions
    return [(tokens[i], "".join(texts[i]).strip()) for i in range(len(audios))]


def check_mixed_threads(model, audios) -> None:
    """8 threads transcribing at once, a live stream fed during them, and a server session beside a
    transcribe_batch: every result is the one it gives alone (on the GPU: or differs first at a near-tie,
    its steps sharing buckets with other threads' rows)."""
    want_t = alone(model, audios)
    want = [t.tokens for t in want_t]
    results: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def guarded(name, fn):
        def run():
            try:
                results[name] = fn()
            except BaseException as e:  # reported below with the thread's name
                errors.append(e)

        return threading.Thread(target=run, name=name)

    threads = [
        guarded(f"transcribe{k}", lambda k=k: alone(model, [audios[k % 4]])[0].tokens) for k in range(8)
    ]
    threads.append(
        guarded("stream", lambda: run_stream(model, audios[1], chunk_sizes(len(audios[1]), 4000))[0])
    )
    threads.append(
        guarded("batch", lambda: [t.tokens for t in model.transcribe_batch(audios[:3], 2, sample_rate=RATE)])
    )
    threads.append(guarded("server", lambda: server_sessions(model, audios[2:], capacity=2)[0]))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert all(not t.is_alive() for t in threads)
    for k in range(8):  # the GPU: a thread's steps run in buckets shared with other threads' rows, whose
        # kernels differ by bucket (fused GEMVs at 1, plain at 2–4, cuBLAS at 8: rounding)
        if results[f"transcribe{k}"] != want[k % 4]:
            assert_near_tie(model, audios[k % 4], results[f"transcribe{k}"], want[k % 4], f"thread {k}")
    for i, got in enumerate(results["batch"]):
        if got != want[i]:  # the same
            assert_near_tie(model, audios[i], got, want[i], f"mixed threads: batch input {i}")
    assert len(results["batch"]) == 3
    if results["stream"] != want[1]:  # the GPU: its passes batched with other threads' rows (rounding)
        assert_near_tie(model, audios[1], results["stream"], want[1], "mixed threads: the stream")
    # the server's text comes only from step()/pump(), while other threads run the engine too; on the
    # GPU its rows share steps with other threads' rows (rounding), as the stream's do
    tokens, text = results["server"]
    if tokens != want_t[2].tokens:
        assert_near_tie(model, audios[2], tokens, want_t[2].tokens, "mixed threads: the server")
    else:
        assert text == want_t[2].text


def check_stream_open_during_transcription(model, audios) -> None:
    """A live session fed before, during (between) and after transcriptions on the same model."""
    want = alone(model, audios)
    session, pieces, tokens = model.stream(on_tokens=lambda t: got.extend(int(x) for x in t)), [], None
    got: list[int] = []
    a = audios[0]
    third = len(a) // 3
    pieces += session.feed(a[:third])
    assert model.transcribe(audios[1], sample_rate=RATE).tokens == want[1].tokens
    pieces += session.feed(a[third : 2 * third])
    tokens = [t.tokens for t in model.transcribe_batch(audios[2:], 2, sample_rate=RATE)]
    pieces += session.feed(a[2 * third :]) + session.finish()
    assert tokens == [w.tokens for w in want[2:]]
    if got != want[0].tokens:  # the GPU: the session's steps shared buckets with the batch (rounding)
        assert_near_tie(model, a, got, want[0].tokens, "stream during transcriptions")
    else:
        assert "".join(p.text for p in pieces).strip() == want[0].text


class FakeClock:
    """time.monotonic for the scheduler, advanced by hand: idle expiry tested without sleeping or racing."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return time.perf_counter()


def check_abandoned_sessions_free_their_slots(model, audios, monkeypatch) -> None:
    """Clients that open, feed and vanish: dropped sessions leave at once, idle ones after idle_timeout;
    the server keeps admitting (../shared/cases/rel-30-server-abandoned.py)."""
    import voxtral.scheduler

    clock = FakeClock()
    monkeypatch.setattr(voxtral.scheduler, "time", clock)
    server = StreamServer(model, capacity=2, idle_timeout=30)
    for _ in range(2):  # dropped without finish() or close(): garbage-collected
        s = server.open()
        s.feed(audios[1][:RATE])
        server.pump()
    del s
    assert len(server.sessions) == 0
    kept = [server.open(), server.open()]  # both slots free again
    for s in kept:
        s.feed(audios[1][:RATE])
    server.pump()
    try:
        server.open()
        raise AssertionError("a third session fitted a server of capacity 2")
    except SessionError as e:
        assert "full" in str(e)
    clock.now += 29
    server.step()
    assert len(server.sessions) == 2  # not yet idle for idle_timeout
    clock.now += 2  # now they are: the engine closes them at its next tick
    server.step()
    assert len(server.sessions) == 0
    for s in kept:
        try:
            s.feed(audios[1][:100])
            raise AssertionError("an expired session took more audio")
        except SessionError as e:
            assert "idle" in str(e)
    fresh = server.open()
    fresh.feed(audios[3])
    fresh.finish()
    pieces = server.pump()
    assert fresh.done and "".join(p.text for p in pieces[fresh]).strip() == alone(model, audios[3:])[0].text


def check_confidence_everywhere(model, audios) -> None:
    """Token probabilities with a batch of 8 and from a live stream equal those of each input alone."""
    inputs = [audios[k % 4] for k in range(8)]
    want = [model.transcribe(a, sample_rate=RATE, alternatives=0.5) for a in audios]
    batch = model.transcribe_batch(inputs, batch_size=8, sample_rate=RATE, alternatives=0.5)
    # CPU: the same arithmetic, so the same probabilities to float rounding. GPU: a batch of 8 splits
    # attention differently from one input (bf16 outputs), so logits agree to ~1e-2 (SPEC §9).
    rtol = 1e-5 if model.device == "cpu" else 3e-2
    for k, t in enumerate(batch):
        ref = want[k % 4]
        n = _steps_alike(t.tokens, ref.tokens, model, inputs[k])
        got, exp = t.scores[:n], ref.scores[:n]
        assert [s.text for s in got] == [s.text for s in exp]
        np.testing.assert_allclose([s.prob for s in got], [s.prob for s in exp], rtol=rtol, atol=1e-7)
        if model.device == "cpu":
            assert [[a.id for a in s.alternatives] for s in got] == [
                [a.id for a in s.alternatives] for s in exp
            ]
    a, ref = audios[0], want[0]
    stream_tokens: list[int] = []
    session = model.stream(confidence=True, on_tokens=lambda t: stream_tokens.extend(int(x) for x in t))
    pieces = []
    for n in chunk_sizes(len(a), "random", seed=7):
        pieces += session.feed(a[:n])
        a = a[n:]
    pieces += session.finish()
    assert pieces and all(p.prob is not None for p in pieces)
    n = _steps_alike(stream_tokens, ref.tokens, model, audios[0])  # the CPU: all of them
    pieces = [p for p in pieces if p.step < n]
    np.testing.assert_allclose([p.prob for p in pieces], [ref.scores[p.step].prob for p in pieces], rtol=rtol)


def check_bad_input_among_good(model, clip5, tmp_path) -> None:
    """A corrupt file among good inputs of a batch fails alone; the others give their solo tokens."""
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF not really a wav")
    inputs = [clip5, bad, load_audio(clip5)[: 3 * RATE]]
    results = dict(model.transcribe_each(inputs, batch_size=2, sample_rate=RATE))
    assert isinstance(results[1], AudioError)
    assert results[0].tokens == model.transcribe(clip5).tokens
    assert results[2].tokens == alone(model, inputs[2:])[0].tokens


def _steps_alike(got: list[int], want: list[int], model, audio) -> int:
    """The step where got first leaves want (len(want) if never); allowed only at a near-tie."""
    if got == want:
        return len(want)
    assert_near_tie(model, audio, got, want, "confidence run")
    return next(j for j, (a, b) in enumerate(zip(got, want, strict=False)) if a != b)
