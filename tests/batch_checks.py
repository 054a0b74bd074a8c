"""Checks shared by the CPU and GPU batching tests: each stream of a batch gives exactly its tokens alone."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np

from voxtral.audio import load_audio
from voxtral.errors import AudioError
from voxtral.server import StreamServer

RATE = 16000


def mixed_inputs(clip5, clip15, n: int) -> list:
    """n inputs of different lengths (0.5 … 15 s): the two clips and slices of them, as paths and arrays."""
    a, b = load_audio(clip15), load_audio(clip5)
    inputs: list = [clip5, clip15]
    rng = np.random.default_rng(0)
    while len(inputs) < n:
        src = a if len(inputs) % 2 else b
        start = int(rng.integers(0, len(src) - RATE))
        length = int(rng.integers(RATE // 2, 10 * RATE))
        inputs.append(src[start : start + length])
    return inputs


def alone(model, inputs) -> list[list[int]]:
    return [model.transcribe(x, sample_rate=None if _is_path(x) else RATE).tokens for x in inputs]


def _is_path(x) -> bool:
    return not isinstance(x, np.ndarray)


def stopping_schedule(model, inputs):
    """The model's schedule with EOS replaced by a token its runs emit, so that streams stop early
    at different steps (the tiny checkpoints' real EOS is too rare to test the stop rule with)."""
    runs = alone(model, inputs)
    counts = Counter(t for run in runs for t in set(run[1:]) if t != model.schedule.pad)
    eos = counts.most_common(1)[0][0]
    schedule = dataclasses.replace(model.schedule, eos=eos)
    stops = [run.index(eos) + 1 if eos in run else len(run) for run in runs]
    assert sum(n < len(run) for n, run in zip(stops, runs, strict=True)) >= 2, "too few early stops"
    return schedule


def check_batch_equals_alone(model, inputs, batch_size: int) -> None:
    """More inputs than slots: streams join as others leave; every one matches its solo run."""
    assert len(inputs) > batch_size
    ref = alone(model, inputs)
    got = {i: t.tokens for i, t in model.transcribe_each(inputs, batch_size=batch_size, sample_rate=RATE)}
    assert sorted(got) == list(range(len(inputs)))
    for i, tokens in got.items():
        assert tokens == ref[i], f"input {i}: batched tokens differ from its solo run"
    texts = model.transcribe_batch(inputs, batch_size=batch_size, sample_rate=RATE)
    assert [t.tokens for t in texts] == ref


def check_bad_input_among_good(model, clip5, tmp_path) -> None:
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF not really a wav")
    inputs = [clip5, bad, load_audio(clip5)[: 3 * RATE]]
    results = dict(model.transcribe_each(inputs, batch_size=2, sample_rate=RATE))
    assert isinstance(results[1], AudioError)
    assert results[0].tokens == alone(model, [clip5])[0]
    assert results[2].tokens == alone(model, inputs[2:])[0]


def check_server_sessions_join_and_leave(model, clip5, clip15, capacity: int) -> None:
    """Live sessions opened, fed and finished at different times give the offline tokens of their audio."""
    audios = [load_audio(clip15), load_audio(clip5), load_audio(clip15)[5 * RATE :], load_audio(clip5)[RATE:]]
    ref = [model.transcribe(a, sample_rate=RATE).tokens for a in audios]
    ref_text = [model.transcribe(a, sample_rate=RATE).text for a in audios]
    opens = [0, 10, 25, 40]  # earliest tick at which each session opens (when a slot is free)
    server = StreamServer(model, capacity=capacity)
    sessions: dict[int, object] = {}
    tokens: dict[int, list[int]] = {i: [] for i in range(len(audios))}
    texts: dict[int, list[str]] = {i: [] for i in range(len(audios))}
    fed = dict.fromkeys(range(len(audios)), 0)
    tick = 0
    while any(not (i in sessions and sessions[i].finished) for i in range(len(audios))):
        for i, a in enumerate(audios):
            if i not in sessions and tick >= opens[i] and server.engine.free():
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
    for i in range(len(audios)):
        assert tokens[i] == ref[i], f"session {i}: tokens differ from the offline run"
        assert "".join(texts[i]).strip() == ref_text[i]
