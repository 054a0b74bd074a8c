"""The tile table of attention_runs (voxtral/gpu/ops.py tiles_of, tiles_needed), on the host: every
run's rows covered once, in order, by tiles of one slot's consecutive positions."""

import numpy as np
import pytest

from voxtral.gpu.ops import tiles_needed, tiles_of


def test_tiles_cover_every_run_once_in_order():
    rng = np.random.default_rng(0)
    for _ in range(300):
        block = int(rng.choice([64, 128]))
        lengths = rng.integers(1, 700, rng.integers(1, 9))
        firsts = np.cumsum([0, *lengths])[:-1]
        runs = [
            (int(f), int(n), int(rng.integers(0, 64)), int(rng.integers(0, 10_000)))
            for f, n in zip(firsts, lengths, strict=True)
        ]
        most = tiles_needed(int(lengths.sum()), len(runs), block)
        table = tiles_of(runs, block, most)
        assert table.dtype == np.int32 and table.shape == (most, 4)
        used = table[table[:, 1] > 0]
        assert (table[len(used) :] == 0).all()  # spare tiles: 0 rows
        assert (used[:, 1] <= block).all()
        rows = np.concatenate([np.arange(f, f + n) for f, n, *_ in used])
        np.testing.assert_array_equal(rows, np.arange(lengths.sum()))  # each row once, in order
        for first, n, slot, p in runs:  # a run's tiles: its slot, positions p + (row − first)
            mine = used[(used[:, 0] >= first) & (used[:, 0] < first + n)]
            assert (mine[:, 2] == slot).all()
            np.testing.assert_array_equal(mine[:, 3], p + mine[:, 0] - first)


def test_a_table_too_small_is_refused():
    with pytest.raises(AssertionError, match="3 tiles for a table of 2"):
        tiles_of([(0, 300, 1, 0)], 128, 2)
    assert tiles_needed(300, 1, 128) == 4 and tiles_needed(256, 2, 128) == 4 and tiles_needed(5, 9, 64) == 6
