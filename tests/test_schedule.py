"""The scheduler's rules against a scripted backend: prompt, step count, EOS stop, burst overshoot,
admission when slots are full, and the decoder shared by every job of a tick."""

import numpy as np
import pytest
from scripted import ScriptedBackend

from voxtral.audio import blocks
from voxtral.config import AudioConfig
from voxtral.errors import OptionError
from voxtral.schedule import Schedule, delay_tokens
from voxtral.scheduler import Job, Scheduler

EOS = 2
SCHED = Schedule(n_delay=6, n_left=32, bos=1, pad=32, eos=EOS)
AUDIO = AudioConfig(16000, 12.5, 128, 160, 400, 1.5, 4)
SPT = 1280


def positions(n_samples: int) -> int:
    return SCHED.n_left + -(-n_samples // SPT) + SCHED.n_right


def job(n_samples: int, **kw) -> Job:
    x = np.zeros(n_samples, np.float32)
    return Job(blocks(x, 16000), **kw)


def test_prompt_and_lengths():
    assert SCHED.prompt.tolist() == [1] + [32] * 38
    assert SCHED.n_right == 17
    assert SCHED.n_generated(100) == 100 - 39 + 1


@pytest.mark.parametrize("burst", [1, 4, 7, 64])
def test_stops_at_eos_and_drops_overshoot(burst):
    b = ScriptedBackend([40, 41, 42, EOS, 50, 51, 52, 53, 54, 55, 56], burst)
    engine = Scheduler(b, SCHED, AUDIO, capacity=2)
    j = engine.run(job(20 * SPT))
    assert list(j.tokens) == [40, 41, 42, EOS] and j.eos
    # one prefill of the prompt, once its positions had audio (the rest comes as reader threads make it)
    assert [p for _, p in b.dec.prefills] == [SCHED.prompt.tolist()]
    assert len(SCHED.prompt) <= b.dec.prefills[0][0] <= positions(20 * SPT)
    assert b.dec.free() == 2  # it left


@pytest.mark.parametrize("burst", [1, 5, 64])
def test_runs_exactly_the_positions_the_audio_has(burst):
    b = ScriptedBackend([100], burst)
    engine = Scheduler(b, SCHED, AUDIO, capacity=1)
    j = engine.run(job(SPT * 3 - 7))  # 3 tokens of audio → 32 + 3 + 17 = 52 positions
    assert len(j.tokens) == SCHED.n_generated(52) == 14 and b.dec.steps_run == 14


def test_max_steps_ignores_eos_and_stops_there():
    b = ScriptedBackend([EOS, 7], 4)
    j = Scheduler(b, SCHED, AUDIO, capacity=1).run(job(10 * SPT, max_steps=5))
    assert list(j.tokens) == [EOS, 7, EOS, 7, EOS]


def test_jobs_beyond_capacity_wait_and_all_share_each_step():
    b = ScriptedBackend([100], 4)
    engine = Scheduler(b, SCHED, AUDIO, capacity=2)
    jobs = [engine.submit(job(n * SPT)) for n in (5, 9, 2)]
    engine.run_until(lambda: all(j.finished for j in jobs))
    assert [len(j.tokens) for j in jobs] == [SCHED.n_generated(positions(n * SPT)) for n in (5, 9, 2)]
    assert max(rows for rows, _ in b.dec.calls) <= 2  # never more than the capacity at once
    assert b.dec.left_out == []  # every job with audio to run was in each step call


def test_a_failing_source_fails_only_its_job():
    def broken():
        yield np.zeros(SPT, np.float32)
        raise OptionError("the source broke")

    b = ScriptedBackend([100], 4)
    engine = Scheduler(b, SCHED, AUDIO, capacity=2)
    bad, good = engine.submit(Job(broken())), engine.submit(job(4 * SPT))
    engine.run_until(lambda: bad.finished and good.finished)
    assert isinstance(bad.error, OptionError) and good.error is None and good.tokens
    assert b.dec.free() == 2


@pytest.mark.parametrize("ms, n", [(80, 1), (480, 6), (2400, 30)])
def test_delay_tokens(ms, n):
    assert delay_tokens(ms) == n


@pytest.mark.parametrize("ms", [0, 40, 100, 2480, -80, 480.0, "480"])
def test_bad_delay_is_refused(ms):
    with pytest.raises(OptionError, match="delay_ms"):
        delay_tokens(ms)
