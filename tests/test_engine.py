"""One engine behind every request pattern, on the CPU (tests/engine_checks.py; the GPU runs the same
checks in tests/gpu/test_gpu_engine.py): identical tokens and text to the single offline run."""

import contextlib
import time

import numpy as np
import pytest
from engine_checks import (
    PATTERNS,
    alone,
    check_abandoned_sessions_free_their_slots,
    check_bad_input_among_good,
    check_confidence_everywhere,
    check_mixed_threads,
    check_pattern,
    check_stream_open_during_transcription,
    clips,
    with_early_stops,
)

import voxtral
from voxtral.config import MAX_CAPACITY
from voxtral.errors import OptionError, SessionError
from voxtral.server import StreamServer


@pytest.fixture(scope="module")
def model(tiny_dir):
    return voxtral.load(tiny_dir, device="cpu")


@pytest.fixture(scope="module")
def audios(clip5, clip15):
    return clips(clip5, clip15)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_pattern_gives_the_offline_tokens(model, audios, pattern):
    check_pattern(model, pattern, audios)


@pytest.mark.parametrize("pattern", ["batched", "streaming", "server"])
def test_early_stops_in_every_pattern(tiny_dir, audios, pattern):
    m = voxtral.load(tiny_dir, device="cpu")
    with_early_stops(m, audios, alone(m, audios))
    check_pattern(m, pattern, audios)


def test_mixed_requests_from_threads(model, audios):
    check_mixed_threads(model, audios)


def test_stream_open_during_transcription(model, audios):
    check_stream_open_during_transcription(model, audios)


def test_abandoned_sessions_free_their_slots(model, audios, monkeypatch):
    check_abandoned_sessions_free_their_slots(model, audios, monkeypatch)


def test_confidence_with_batches_and_streams(model, audios):
    check_confidence_everywhere(model, audios)


def test_a_model_that_is_not_a_path_is_an_option_error():
    """Not a TypeError from deep in the checkpoint loader (new-user pass)."""
    for bad in (None, 3, ["model"]):
        with pytest.raises(OptionError, match="model must be a local directory or a Hub id"):
            voxtral.load(bad, device="cpu")


def test_capacities_are_option_errors(model, tiny_dir):
    for bad in (0, -1, 2.5, True, "4"):
        with pytest.raises(OptionError, match="capacity"):
            StreamServer(model, capacity=bad)
        with pytest.raises(OptionError, match="capacity"):
            voxtral.load(tiny_dir, device="cpu", capacity=bad)
    for huge in (MAX_CAPACITY + 1, 10**20):  # a traceback before (OverflowError, MemoryError)
        with pytest.raises(OptionError, match=f"capacity must be a whole number from 1 to {MAX_CAPACITY}"):
            voxtral.load(tiny_dir, device="cpu", capacity=huge)
    with pytest.raises(OptionError, match="load it with"):
        StreamServer(model, capacity=model.capacity + 1)
    with pytest.raises(OptionError, match="idle_timeout"):
        StreamServer(model, capacity=1, idle_timeout=0)


def test_alternatives_of_the_wrong_type_are_option_errors(model, audios):
    for bad in ("0.2", True, 0, 1.5, [0.2]):
        with pytest.raises(OptionError, match="alternatives"):
            model.transcribe(audios[0], sample_rate=16000, alternatives=bad)
        with pytest.raises(OptionError, match="alternatives"):
            model.stream(alternatives=bad)


def test_confidence_idle_timeout_and_score_of_the_wrong_type_are_option_errors(model, audios):
    """confidence="yes" was taken as true; idle_timeout="5" and score(None, …) were TypeErrors (new-user
    pass)."""
    from voxtral.evaluate import score

    for bad in ("yes", 1, None):
        with pytest.raises(OptionError, match="confidence must be True or False"):
            model.transcribe(audios[0], sample_rate=16000, confidence=bad)
        with pytest.raises(OptionError, match="confidence must be True or False"):
            model.stream(confidence=bad)
    for bad in ("5", True, [5]):
        with pytest.raises(OptionError, match="idle_timeout"):
            model.stream(idle_timeout=bad)
        with pytest.raises(OptionError, match="idle_timeout"):  # a TypeError, or True taken until open()
            StreamServer(model, capacity=1, idle_timeout=bad)
    with pytest.raises(OptionError, match="cancelled must be a function"):  # 'int' object is not callable
        model.transcribe(audios[0], sample_rate=16000, cancelled=5)
    with pytest.raises(OptionError, match="reference must be a str"):
        score(None, "x")
    with pytest.raises(OptionError, match="hypothesis must be a str"):
        score("x", b"x")


def test_a_closed_server_session_frees_its_place_at_once(model, audios):
    server = StreamServer(model, capacity=1)
    a = server.open()
    a.feed(audios[0][:8000])
    a.close()
    b = server.open()  # a no longer counts, though its slot is freed only at the next tick
    with pytest.raises(OptionError, match=r"after close\(\); start a new session with server\.open\(\)"):
        a.feed(audios[0][:100])
    b.close()
    server.pump()


def test_a_full_model_makes_jobs_wait(tiny_dir, audios):
    """capacity 1: a transcription waits for a live session to finish, then runs."""
    import threading

    m = voxtral.load(tiny_dir, device="cpu", capacity=1)
    want = alone(m, audios[3:])[0].tokens
    session = m.stream()
    session.feed(audios[1][:16000])
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("t", m.transcribe(audios[3], sample_rate=16000)))
    t.start()
    t.join(timeout=1.0)
    assert t.is_alive()  # waiting for the slot
    session.finish()
    t.join(timeout=60)
    assert out["t"].tokens == want


def test_a_closed_session_is_finished(model, audios):
    with model.stream() as s:
        s.feed(audios[1][:5000])
    with pytest.raises(OptionError, match=r"after close\(\); start a new session with model\.stream\(\)"):
        s.feed(audios[1][:10])
    for other_work in (True, False):  # expired at the next tick, or at its own next feed
        s2 = model.stream(idle_timeout=0.05)
        s2.feed(audios[1][:5000])
        time.sleep(0.1)
        if other_work:
            model.transcribe(audios[3], sample_rate=16000)  # its ticks retire the idle session
        with pytest.raises(SessionError, match="idle"):
            s2.feed(audios[1][:10])


def test_bad_input_among_good(model, clip5, tmp_path):
    check_bad_input_among_good(model, clip5, tmp_path)


def test_bad_batch_size(model, clip5):
    for bad in (0, -1, 2.5, True, MAX_CAPACITY + 1, 10**20):
        with pytest.raises(OptionError, match="batch_size"):
            model.transcribe_batch([clip5], batch_size=bad)


def test_one_input_where_a_list_is_expected(model, clip5):
    for one in (str(clip5), clip5, np.zeros(16000, np.float32), b"audio"):
        with pytest.raises(OptionError, match="list of paths or arrays"):
            model.transcribe_batch(one)


def test_an_empty_path_is_named_as_such(model):
    with pytest.raises(voxtral.AudioError, match="audio path is empty"):
        model.transcribe("")


def _signal_after_claim(engine, monkeypatch) -> None:
    """Ctrl-C (a real SIGINT to this process) the moment the engine's next claim to drive succeeds: its
    KeyboardInterrupt surfaces as the claim returns, before the caller can note that it holds it
    (../shared/cases/rel-46-sigint-stream.py hung 1 time in 43 there)."""
    import os
    import signal

    claim, shots = engine._claim, [1]

    def claim_then_signal() -> bool:
        got = claim()
        if got and shots.pop():
            os.kill(os.getpid(), signal.SIGINT)  # its handler runs before this call returns
        return got

    monkeypatch.setattr(engine, "_claim", claim_then_signal)


@pytest.mark.parametrize("driver", ["feed", "server"])
def test_ctrl_c_as_a_thread_claims_the_engine_leaves_it_drivable(tiny_dir, audios, driver, monkeypatch):
    """Ctrl-C the instant a thread claims the engine (a session's feed, a server's step) surfaces as
    KeyboardInterrupt, and the session still finishes with the text it gives uninterrupted: a lock left
    taken there made finish() wait forever for a driver that was gone."""
    m = voxtral.load(tiny_dir, device="cpu")
    engine, x = m.engine, audios[0]
    h = len(x) // 2
    server = StreamServer(m, capacity=1) if driver == "server" else None

    def texts(interrupt: bool) -> str:
        session = server.open() if server else m.stream()
        out = [session.feed(x[:h])]
        if server:
            out.append(server.pump().get(session, []))
            session.feed(x[h:])
        if interrupt:
            _signal_after_claim(engine, monkeypatch)
        with pytest.raises(KeyboardInterrupt) if interrupt else contextlib.nullcontext():
            out.append(server.step().get(session, []) if server else session.feed(x[h:]))
        monkeypatch.undo()
        assert engine._claim()  # this thread can drive (else finish() below would wait forever)
        engine._unclaim()
        out.append(session.finish())
        if server:
            while not session.done:
                out.append(server.step().get(session, []))
        return "".join(p.text for pieces in out for p in pieces)

    clean = texts(False)
    assert clean and texts(True) == clean


def test_a_stand_in_handler_left_behind_passes_the_signal_on():
    """A signal that cuts the restore of the handlers after a tick leaves the engine's stand-in installed:
    from then on it raises as the real handler would, never swallows Ctrl-C."""
    import signal

    from voxtral.scheduler import _deferred_interrupt

    with pytest.raises(KeyboardInterrupt):
        with _deferred_interrupt():
            stand_in = signal.getsignal(signal.SIGINT)
            stand_in(signal.SIGINT, None)  # held: raised as the block ends
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        stand_in(signal.SIGINT, None)


def test_an_idle_drive_sleeps(model):
    """A thread driving an engine with nothing to run sleeps until something moves (an idle server's
    engine thread, a feed waiting on another thread's drive), instead of ticking in a loop."""
    import threading

    engine, ticks, stop = model.engine, [0], threading.Event()
    tick = engine.tick

    def counted() -> bool:
        ticks[0] += 1
        return tick()

    engine.tick = counted
    try:
        threading.Timer(1.0, stop.set).start()
        engine.run_until(stop.is_set)
    finally:
        del engine.tick
    assert ticks[0] <= 10, ticks  # one tick per idle wait (0.25 s) at most, and the wake-up's


def test_a_request_from_a_callback_of_the_drive_runs(model, audios):
    """A transcription asked for from inside another's on_segment callback (the thread that drives the
    engine) runs between the outer drive's ticks; it used to wait forever for the drive it was called from."""
    import threading

    inner: list = []

    def on_segment(i, segment) -> None:
        if not inner:
            inner.append(model.transcribe(audios[0], sample_rate=16000).text)

    def outer() -> None:
        inner.append(list(model.transcribe_each([audios[1]], sample_rate=16000, on_segment=on_segment)))

    t = threading.Thread(target=outer, daemon=True)
    t.start()
    t.join(120)
    assert not t.is_alive(), "the nested request never finished"
    assert inner[0] == alone(model, audios[:1])[0].text
    assert inner[1][0][1].text == alone(model, audios[1:2])[0].text


def _cohort_run(engine, audios, first_block_delay: float, slow: int = 1) -> tuple[list[int], list[list[int]]]:
    """audios as offline jobs submitted together, the first `slow` ones' sources holding their first block
    back for first_block_delay seconds → (the jobs stepped by each decoder call, each job's tokens)."""
    from voxtral.scheduler import Job

    def late(x):
        time.sleep(first_block_delay)
        yield x

    jobs = [Job(late(a)) for a in audios[:slow]] + [Job(iter([a])) for a in audios[slow:]]
    groups: list[int] = []
    step_group = engine._step_group

    def counted(group, most):
        groups.append(len(group))
        return step_group(group, most)

    engine._step_group = counted
    try:
        with engine._lock:  # admitted in one tick: one cohort
            for job in jobs:
                engine.submit(job)
        engine.run_until(lambda: all(j.finished for j in jobs))
    finally:
        del engine._step_group
    return groups, [list(j.tokens) for j in jobs]


def test_a_batch_takes_its_first_step_together(model, audios, monkeypatch):
    """Offline jobs admitted together wait for the last one's first audio, then step as one batch from
    their first step (the first files read no longer run ahead at a smaller batch size); tokens as alone.
    (The late input's read counts as a slow one only after SLOW_READ_S, here longer than it takes.)"""
    from voxtral import scheduler

    monkeypatch.setattr(scheduler, "SLOW_READ_S", 5.0)
    groups, tokens = _cohort_run(model.engine, audios[:3], first_block_delay=0.5)
    assert groups[0] == 3, groups
    from voxtral.scheduler import Job

    assert tokens == [list(model.engine.run(Job(iter([a]))).tokens) for a in audios[:3]]


@pytest.mark.parametrize(
    "slow, slow_read_s, cohort_wait_s", [(1, None, 60.0), (1, 60.0, 0.3), (3, None, 60.0)]
)
def test_a_slow_input_holds_its_batch_only_briefly(
    model, audios, monkeypatch, slow, slow_read_s, cohort_wait_s
):
    """A batch does not wait for inputs whose first read runs long (SLOW_READ_S: a pipe, a slow mount; more
    of them than reads at once, scheduler.READERS, too), nor longer than COHORT_WAIT_S for any: the others
    step without them, with the tokens they give alone."""
    from voxtral import scheduler

    if slow_read_s is not None:
        monkeypatch.setattr(scheduler, "SLOW_READ_S", slow_read_s)
    monkeypatch.setattr(scheduler, "COHORT_WAIT_S", cohort_wait_s)
    n = 3 if slow == 1 else 4
    groups, tokens = _cohort_run(model.engine, audios[:n], first_block_delay=1.5, slow=slow)
    assert groups[0] == n - slow, groups
    assert tokens[slow:] == [t.tokens for t in alone(model, audios[slow:n])]


def test_a_cancelled_transcription_raises_and_leaves(model, audios):
    """transcribe(cancelled=…) (the server stops an upload whose client left): asked between ticks; once
    true the job is dropped at the next tick and SessionError raised; the engine then serves others."""
    ticks = []

    def cancelled() -> bool:
        ticks.append(1)
        return len(ticks) > 3

    with pytest.raises(SessionError, match="cancelled"):
        model.transcribe(audios[1], sample_rate=16000, cancelled=cancelled)
    assert not model.engine.active and not model.engine.queue
    want = model.transcribe(audios[0], sample_rate=16000).tokens
    assert model.transcribe(audios[0], sample_rate=16000, cancelled=lambda: False).tokens == want


def test_an_abandoned_batch_leaves_the_engine(model, audios):
    """transcribe_each stopped early (a callback raising, the iterator closed) closes the inputs still
    running, as a cancelled transcribe() does: they used to go on holding their slots, and the next caller
    decoded them (new-user pass: a 5 s clip took 10 s behind two abandoned 20-minute inputs)."""
    long = np.tile(audios[0], 8)

    def stop(i, segment):
        raise RuntimeError("enough")

    with pytest.raises(RuntimeError, match="enough"):
        list(model.transcribe_each([long, long], batch_size=2, sample_rate=16000, on_segment=stop))
    assert model.engine.active and all(j.closed for j in model.engine.active)
    each = model.transcribe_each([long, long, long], batch_size=2, sample_rate=16000)
    each.close()  # before the first result: nothing ran yet
    it = model.transcribe_each([audios[0], long, long], batch_size=3, sample_rate=16000)
    next(it)  # the short one; the two long ones still run
    it.close()
    assert all(j.closed for j in [*model.engine.active, *model.engine.queue])
    t = model.transcribe(audios[0], sample_rate=16000)
    assert t.tokens and not model.engine.active and not model.engine.queue
