"""The schedule against a scripted backend: prompt, step count, EOS stop, burst overshoot."""

import numpy as np
import pytest

from voxtral.errors import OptionError
from voxtral.schedule import Schedule, delay_tokens, greedy

EOS = 2


class ScriptedBackend:
    """Emits a fixed token sequence; records what the schedule asked for."""

    name = "scripted"

    def __init__(self, script, burst):
        self.script, self.burst = list(script), burst
        self.prefilled, self.steps_run = None, 0

    def prefill(self, state, tokens):
        self.prefilled = list(tokens)

    def step(self, state, n, inputs=None, want_logits=False):
        out = np.array(self.script[self.steps_run : self.steps_run + n])
        self.steps_run += n
        return out, None

    def synchronize(self):
        pass


SCHED = Schedule(n_delay=6, n_left=32, bos=1, pad=32, eos=EOS)


def test_prompt_and_lengths():
    assert SCHED.prompt.tolist() == [1] + [32] * 38
    assert SCHED.n_right == 17
    assert SCHED.n_generated(100) == 100 - 39 + 1


@pytest.mark.parametrize("burst", [1, 4, 7, 64])
def test_stops_at_eos_and_drops_overshoot(burst):
    script = [40, 41, 42, EOS, 50, 51, 52, 53, 54, 55, 56]
    b = ScriptedBackend(script, burst)
    out = greedy(b, None, SCHED, n_positions=39 + 20)
    assert out == [40, 41, 42, EOS]
    assert b.prefilled == SCHED.prompt.tolist()


@pytest.mark.parametrize("burst", [1, 5, 64])
def test_runs_exactly_the_positions_the_audio_has(burst):
    b = ScriptedBackend([100] * 200, burst)
    out = greedy(b, None, SCHED, n_positions=50)
    assert len(out) == 12 and b.steps_run == 12


@pytest.mark.parametrize("ms, n", [(80, 1), (480, 6), (2400, 30)])
def test_delay_tokens(ms, n):
    assert delay_tokens(ms) == n


@pytest.mark.parametrize("ms", [0, 40, 100, 2480, -80, 480.0, "480"])
def test_bad_delay_is_refused(ms):
    with pytest.raises(OptionError, match="delay_ms"):
        delay_tokens(ms)
