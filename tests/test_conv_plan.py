"""The batched conv stem's row layout (voxtral/gpu/conv.py `plan`), checked on the host: streams fed in
random pieces, random subsets per call, gathered by the plan's rows, equal their one-shot causal convs."""

import numpy as np
import pytest

from voxtral.gpu.conv import CONV0_KEEP, plan


def causal_conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """x [T, C] → [T_out, O] with w [O, C·3] (element c·3 + k), zeros left of the start, no right padding."""
    xp = np.concatenate([np.zeros((pad, x.shape[1])), x])
    n = (len(xp) - 3) // stride + 1
    cols = np.stack([xp[j * stride : j * stride + 3].T.reshape(-1) for j in range(n)]) if n > 0 else None
    return cols @ w.T if n > 0 else np.zeros((0, w.shape[0]))


def gather(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The NumPy twin of ops.im2col_rows: [R, C·K], element c·K + k = x[rows[r, k], c]."""
    return x[rows].transpose(0, 2, 1).reshape(len(rows), -1)


@pytest.mark.parametrize("seed", range(4))
def test_plan_gives_each_stream_its_one_shot_convs(seed):
    rng = np.random.default_rng(seed)
    cap, m, e = 5, 3, 4
    w0, w1 = rng.standard_normal((e, m * 3)), rng.standard_normal((e, e * 3))
    streams = {s: rng.standard_normal((int(rng.integers(0, 60)), m)) for s in (0, 2, 4)}
    fed = dict.fromkeys(streams, 0)
    frames = rng.standard_normal((CONV0_KEEP * cap, m))  # conv0's carried frames, 2 per slot
    frames[[CONV0_KEEP * s + k for s in streams for k in range(CONV0_KEEP)]] = 0  # the streams' start
    rows, carried = np.zeros((2 * cap, e)), [1] * cap  # conv1's carried rows (zeros at the start)
    out = {s: [] for s in streams}
    while any(fed[s] < len(x) for s, x in streams.items()):
        slots = [s for s in streams if rng.random() < 0.7]
        pieces = {s: streams[s][fed[s] : fed[s] + int(rng.choice([0, 1, 2, 3, 8, 13]))] for s in slots}
        p = plan(slots, [carried[s] for s in slots], [len(pieces[s]) for s in slots], cap)
        x = np.concatenate([frames, *(pieces[s] for s in slots)])
        y0 = gather(x, p.rows0) @ w0.T if len(p.rows0) else np.zeros((0, e))
        src = np.concatenate([rows, y0])
        z = gather(src, p.rows1) @ w1.T if len(p.rows1) else np.zeros((0, e))
        rows, frames = src[p.carry[:, 0]], x[p.carry0[:, 0]]
        start = 0
        for s, n, c in zip(slots, p.outputs, p.carried, strict=True):
            out[s].append(z[start : start + n])
            start += n
            carried[s] = c
            fed[s] += len(pieces[s])
        assert start == len(z)
    for s, x in streams.items():
        ref = causal_conv(causal_conv(x, w0, 1, 2), w1, 2, 1)
        got = np.concatenate(out[s])
        assert got.shape == ref.shape, (s, got.shape, ref.shape)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_a_slot_twice_in_one_call_is_refused():
    with pytest.raises(AssertionError):
        plan([1, 1], [1, 1], [2, 2], 4)


def test_a_repeated_call_gets_the_same_read_only_plan():
    """A live tick repeats its last call (slots, carried rows, frames): plan gives that call's plan again,
    its tables read-only (shared by both calls); another call gets its own."""
    p = plan([3, 0], [1, 2], [8, 8], 4)
    assert plan([3, 0], [1, 2], [8, 8], 4) is p
    assert plan([3, 0], [2, 2], [8, 8], 4) is not p
    for table in (p.rows0, p.rows1, p.carry0, p.carry):
        with pytest.raises(ValueError):
            table[0] = 0
