"""Streaming sessions (SPEC §7) on tiny random checkpoints: any chunking gives the offline tokens,
one decoder step per audio embedding, the stop rule, errors, and memory that stays flat."""

import gc
import time
import tracemalloc

import numpy as np
import pytest
from scripted import ScriptedBackend
from stream_checks import chunk_sizes, run_stream

import voxtral
from voxtral.audio import load_audio
from voxtral.errors import AudioError, OptionError
from voxtral.scheduler import Scheduler
from voxtral.stream import Session

SPT = 1280  # samples per token
TEN_SECONDS = 160_000


@pytest.fixture(scope="module")
def model(tiny_dir):
    return voxtral.load(tiny_dir, device="cpu")


@pytest.fixture(scope="module")
def offline5(model, audio5):
    return model.transcribe(audio5, sample_rate=16000)


@pytest.mark.parametrize("chunk", [1, 37, 160, 1280, 12345, "random"])
def test_any_chunking_gives_the_offline_tokens(model, audio5, offline5, chunk):
    tokens, pieces = run_stream(model, audio5, chunk_sizes(len(audio5), chunk))
    assert tokens == offline5.tokens
    assert "".join(p.text for p in pieces) == model.tokenizer.decode(tokens)
    assert [p.step for p in pieces] == sorted(p.step for p in pieces)
    assert all(p.time == round(min(max(0.0, (p.step - 1) * 0.08), len(audio5) / 16000), 3) for p in pieces)
    assert all(0 <= p.latency < 60 for p in pieces)


def test_ten_second_chunks_and_random_splits_of_a_longer_clip(model, clip15):
    audio = load_audio(clip15)
    offline = model.transcribe(audio, sample_rate=16000).tokens
    assert run_stream(model, audio, chunk_sizes(len(audio), TEN_SECONDS))[0] == offline
    assert run_stream(model, audio, chunk_sizes(len(audio), "random", seed=1))[0] == offline


def test_iterator_form_equals_feed_and_finish(model, audio5):
    chunks = [audio5[i : i + 4000] for i in range(0, len(audio5), 4000)]
    pieces = list(model.stream().run(chunks))
    _, expected = run_stream(model, audio5, [len(c) for c in chunks])
    assert [(p.text, p.step, p.time) for p in pieces] == [(p.text, p.step, p.time) for p in expected]


def test_one_decoder_step_per_embedding_after_the_prompt(model, audio5):
    """After n samples: frames need 200 samples of look-ahead, 8 frames make an embedding, and the
    decoder has run every position that has one (prefill once the prompt's L positions do)."""
    session = model.stream()
    n_left, L = model.schedule.n_left, len(model.schedule.prompt)
    fed = 0
    for n in [0, 1, 5000, 1280 * 3, 199, 1, 1280 * 7 - 201, 1, 1280 * 20]:
        session.feed(audio5[fed : fed + n])
        fed += n
        total = n_left * SPT + fed
        frames = min(total // 160, (total - 200) // 160 + 1)
        assert session.n_embeds == frames // 8
        assert session.n_steps == (session.n_embeds - L + 1 if session.n_embeds >= L else 0)


def test_latency_counts_from_the_arrival_of_the_audio(model, audio5):
    """Pieces decided by a later feed carry the wait since their frame's audio came in."""
    session = model.stream()
    session.feed(audio5[: 3 * 16000])  # 3 s: frames up to ≈ 2.5 s decided
    time.sleep(0.2)
    later = session.feed(audio5[3 * 16000 :]) + session.finish()
    early_frames = [p for p in later if (p.step + 1) * SPT <= 3 * 16000]  # audio all in the first feed
    assert early_frames and all(p.latency >= 0.2 for p in early_frames)


PROMPT = [1] + [32] * 38


def scripted_session(model, script, tokens, burst=4):
    backend = ScriptedBackend(script, burst)
    engine = Scheduler(backend, model.schedule, model.config.audio, capacity=1)
    session = Session(engine, model.tokenizer, model.config.audio, tokens.extend)
    return backend, session


def test_a_live_session_behind_catches_up_in_the_same_tick(model):
    """After a stall one session holds 3 positions to run and another 1: the tick steps both once together,
    then the first twice more (not one position a tick, which left its text ticks behind)."""
    backend = ScriptedBackend([1200] * 8, burst=4)
    engine = Scheduler(backend, model.schedule, model.config.audio, capacity=2)
    a, b = (Session(engine, model.tokenizer, model.config.audio, None, drive=False) for _ in range(2))
    for s in (a, b):
        s.feed(np.zeros(10 * SPT, np.float32))
    while engine.tick():
        pass
    assert a._job.ready() == b._job.ready() == 0 and a.n_steps == b.n_steps > 0
    before, calls = a.n_steps, len(backend.dec.calls)
    a.feed(np.zeros(3 * SPT, np.float32))
    b.feed(np.zeros(SPT, np.float32))
    engine.tick()
    assert backend.dec.calls[calls:] == [(2, 1), (1, 2)]
    assert a.n_steps == before + 3 and b.n_steps == before + 1 and a._job.ready() == b._job.ready() == 0
    a.feed(np.zeros(9 * SPT, np.float32))  # more than a burst: the rest waits for the next tick
    engine.tick()
    assert backend.dec.calls[calls + 2 :] == [(1, 4)] and a._job.ready() == 5


def test_eos_stops_the_stream_and_drops_the_rest_of_its_burst(model):
    tokens: list = []
    backend, session = scripted_session(model, [1200, 33, 1201, 1202, 1203, 2, 1204, 1205], tokens)
    pieces = [p for _ in range(8) for p in session.feed(np.zeros(SPT, np.float32))]
    assert (
        backend.dec.prefills[0][0] == len(PROMPT) and backend.dec.steps_run == 1
    )  # once the prompt had audio
    pieces += session.feed(np.zeros(10 * SPT, np.float32))  # 10 steps in bursts of 4: EOS in the 2nd
    assert [int(t) for t in tokens] == [1200, 33, 1201, 1202, 1203, 2]  # 1204, 1205, 1200 dropped
    assert session.eos and backend.dec.steps_run == 9
    assert session.feed(np.zeros(10 * SPT, np.float32)) == []
    pieces += session.finish()
    assert "".join(p.text for p in pieces) == model.tokenizer.decode(tokens)
    assert all(p.step <= 5 for p in pieces) and backend.dec.steps_run == 9


def test_a_finished_stream_runs_every_offline_position(model):
    tokens: list = []
    backend, session = scripted_session(model, [32], tokens)
    session.feed(np.zeros(5 * SPT + 17, np.float32))
    session.finish()
    n_positions = model.schedule.n_left + 6 + model.schedule.n_right  # 5 tokens + 17 samples → 6
    assert len(tokens) == model.schedule.n_generated(n_positions) == backend.dec.steps_run


def test_misuse_and_bad_samples_are_clear_errors(model):
    session = model.stream()
    for bad, needle in [
        (np.zeros((10, 2), np.float32), "1-D"),
        (np.zeros(10, np.int16), "float"),
        (np.array([0.0, np.nan], np.float32), "non-finite"),
        (np.array([0.0, 1e39]), "float32's range"),
        ("abc", "got str"),
    ]:
        with pytest.raises(AudioError, match=needle):
            session.feed(bad)
    with pytest.raises(AudioError, match="no audio was fed"):  # nothing good came: as an empty file
        session.finish()
    with pytest.raises(OptionError, match="after finish"):
        session.feed(np.zeros(10, np.float32))
    with pytest.raises(OptionError, match="twice"):
        session.finish()
    with pytest.raises(OptionError, match="delay_ms=480"):
        model.stream(delay_ms=800)
    assert isinstance(model.stream(delay_ms=480), Session)
    done = model.stream()
    done.feed(np.zeros(16000, np.float32))
    done.finish()
    with pytest.raises(OptionError, match=r"feed\(\) after finish\(\)"):  # not "after close()"
        done.feed(np.zeros(10, np.float32))
    closed = model.stream()
    closed.feed(np.zeros(1600, np.float32))
    closed.close()
    with pytest.raises(OptionError, match=r"finish\(\) after close\(\)"):  # was "finish() called twice"
        closed.finish()


def _feed_minutes(session, minutes: float, chunk: np.ndarray) -> None:
    for _ in range(round(minutes * 60 * 16000 / len(chunk))):
        session.feed(chunk)


def test_memory_stays_flat_over_a_long_stream(model):
    """Once the rings have filled (tiny config: decoder ring ≤ 103 positions, encoder ring 87), more audio
    leaves nothing behind. Measured as the growth of traced memory over six successive 90 s windows
    (1125 decoder steps each): a leak grows every window, a one-off allocation only one, so the median
    growth must stay under 8 bytes per step — a leak of 10 bytes a step fails, a few one-offs cannot.
    NumPy's and threadpoolctl's own caches move the traced total by a few kB either way in any window
    (measured: −8.7 … +8.5 kB), hence windows long enough for 8 B a step (9 kB) to stand above that.
    (tracemalloc sees NumPy's buffers too; it slows the run 3×, hence minutes of audio, not hours.)"""
    chunk = (np.random.default_rng(0).standard_normal(TEN_SECONDS) * 0.1).astype(np.float32)
    session = model.stream()
    _feed_minutes(session, 3, chunk)  # past the rings' filling and the interpreter's own warm-up
    tracemalloc.start()
    try:
        _feed_minutes(session, 1, chunk)  # tracemalloc's own tables settle
        growth, steps = [], []
        for _ in range(6):
            gc.collect()
            before, n0 = tracemalloc.get_traced_memory()[0], session.n_steps
            _feed_minutes(session, 1.5, chunk)
            gc.collect()
            growth.append(tracemalloc.get_traced_memory()[0] - before)
            steps.append(session.n_steps - n0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"traced memory growth per 90 s window: {growth} B over {steps} steps, peak {peak} B")
    assert steps == [1125] * 6
    assert float(np.median(growth)) < 8 * 1125  # < 8 bytes per decoder step in the median window
    assert peak < 16 * 2**20
