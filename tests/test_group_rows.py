"""The encoder's adapter grouping on the host (voxtral/gpu/encoder.py `group_rows`, what Groups.regroup
gathers by): vectorised over the slots of a call, equal to the plain per-slot recipe on random calls."""

import numpy as np
import pytest

from voxtral.gpu.encoder import group_rows


def reference(slots, waiting, pieces, base, keep, factor, n_rows):
    """Per slot: its waiting rows then its new rows; whole groups of `factor` go, the rest waits."""
    grouped, carry, left, counts = [], np.arange(n_rows), [], []
    for s, w, ps in zip(slots, waiting, pieces, strict=True):
        new = [base[p] + first + np.arange(n) for p, first, n in ps]
        idx = np.concatenate([s * keep + np.arange(w), *new])
        n = len(idx) // factor * factor
        grouped.append(idx[:n])
        carry[s * keep : s * keep + len(idx) - n] = idx[n:]
        left.append(len(idx) - n)
        counts.append(n // factor)
    return np.concatenate(grouped or [np.zeros(0, np.int64)]), carry, left, counts


@pytest.mark.parametrize("seed", range(8))
def test_group_rows_equals_the_per_slot_recipe(seed):
    rng = np.random.default_rng(seed)
    for _ in range(50):
        capacity, keep, factor = int(rng.integers(1, 12)), 3, 4
        slots = [int(s) for s in rng.permutation(capacity)[: int(rng.integers(0, capacity + 1))]]
        waiting = [int(rng.integers(0, keep + 1)) for _ in slots]
        lengths = [int(n) for n in rng.integers(5, 40, int(rng.integers(1, 3)))]  # passes' outputs
        base = np.cumsum([capacity * keep, *lengths])[:-1]
        pieces = []
        for _ in slots:  # 0, 1 or 2 pieces, from passes in order
            passes = sorted(rng.choice(len(lengths), int(rng.integers(0, len(lengths) + 1)), replace=False))
            firsts = [int(rng.integers(lengths[p])) for p in passes]
            pieces.append(
                [
                    (int(p), f, int(rng.integers(0, lengths[p] - f + 1)))
                    for p, f in zip(passes, firsts, strict=True)
                ]
            )
        args = (slots, waiting, pieces, base, keep, factor, capacity * keep)
        got, want = group_rows(*args), reference(*args)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert got[2:] == want[2:]
