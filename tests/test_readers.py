"""Offline audio is decoded and turned into mel frames by reader threads ahead of the engine
(scheduler._read): the engine thread never runs a source, and a slow source holds up no other job."""

import threading
import time

import numpy as np
import pytest

import voxtral
from voxtral.audio import PaddedMel
from voxtral.scheduler import Job

RATE = 16000


@pytest.fixture(scope="module")
def model(tiny_dir):
    return voxtral.load(tiny_dir, device="cpu")


def blocks_of(audio, seconds: float, pause: float = 0.0, threads: list | None = None):
    step = int(seconds * RATE)
    for i in range(0, len(audio), step):
        if threads is not None:
            threads.append(threading.current_thread().name)
        time.sleep(pause)
        yield audio[i : i + step]


def test_offline_audio_is_read_off_the_engine_thread(model, audio5):
    threads: list[str] = []
    job = model.engine.run(Job(blocks_of(audio5, 1.0, threads=threads)))
    assert len(threads) == -(-len(audio5) // RATE), threads  # one per block
    assert all(name.startswith("voxtral-reader") for name in threads), threads
    assert job.take_tokens() == model.transcribe(audio5, sample_rate=RATE).tokens


def test_a_slow_source_holds_up_no_other_job(model, audio5):
    """A source that takes 0.4 s per block (2 s in all) beside an array: the array's job finishes long
    before the slow one, and both give the tokens they give alone."""
    want = model.transcribe(audio5, sample_rate=RATE).tokens
    slow = model.engine.submit(Job(blocks_of(audio5, 1.0, pause=0.4)))
    t0 = time.perf_counter()
    fast = model.engine.run(Job(blocks_of(audio5, 5.0)))
    fast_s = time.perf_counter() - t0
    assert not slow.finished and fast_s < 1.2, f"the array's job took {fast_s:.2f} s beside a 2 s source"
    model.engine.run_until(lambda: slow.finished)
    assert fast.take_tokens() == want and slow.take_tokens() == want
    assert slow.error is None and np.isclose(slow.timings["audio"], 2.0, atol=0.5)


def test_more_slow_sources_than_reads_at_once_hold_up_no_other_job(model, audio5):
    """Sources that block (a FIFO or pipe waiting for its writer), more of them than reads run at once
    (scheduler.READERS), beside an array: each blocked read holds only its own thread, so the array's job
    finishes while they still wait, with the tokens it gives alone."""
    from voxtral import scheduler

    want = model.transcribe(audio5, sample_rate=RATE).tokens
    blocked = [Job(blocks_of(audio5, 5.0, pause=2.5)) for _ in range(scheduler.READERS + 1)]
    stuck = [model.engine.submit(j) for j in blocked]
    t0 = time.perf_counter()
    fast = model.engine.run(Job(blocks_of(audio5, 5.0)))
    fast_s = time.perf_counter() - t0
    assert not any(j.finished for j in stuck) and fast_s < 2.0, f"{fast_s:.2f} s beside blocked sources"
    model.engine.run_until(lambda: all(j.finished for j in stuck))
    assert fast.take_tokens() == want and all(j.take_tokens() == want for j in stuck)


def test_a_file_within_the_lookahead_is_read_in_one_go(model, audio5, monkeypatch):
    """A reader takes every block the job's lookahead has room for in one task: 5 s in 1 s blocks, within
    the CPU backend's 10 s, are one read and one encoder pass of the file's frames, the left padding's
    with them (it waits for the first read instead of making a pass of its own), not five."""
    from voxtral import scheduler

    assert model.engine.backend.lookahead * 0.08 > len(audio5) / RATE
    want = model.transcribe(audio5, sample_rate=RATE).tokens
    reads, passes = [], []
    real_read, enc = scheduler._read_block, model.engine._encoder
    real_encode = enc.encode

    def read(source, front, room):
        out = real_read(source, front, room)
        reads.append(sum(len(w) for w in out[0]))  # frames' windows
        return out

    def encode(items):
        passes.append(items[0][1].shape[1])
        return real_encode(items)

    monkeypatch.setattr(scheduler, "_read_block", read)
    monkeypatch.setattr(enc, "encode", encode)
    job = model.engine.run(Job(blocks_of(audio5, 1.0)))
    assert len(reads) == 1 and reads[0] >= len(audio5) // 160, reads  # every block's frames at once
    s = model.schedule
    padding = len(PaddedMel(model.config.audio, s.n_left, s.n_right).windows(np.zeros(0, np.float32)))
    assert padding > 0 and passes == [padding + reads[0]], (passes, reads, padding)
    assert job.take_tokens() == want
