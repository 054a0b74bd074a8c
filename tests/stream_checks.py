"""Helpers shared by the CPU and GPU streaming tests: chunkings of a signal and a session run over one."""

from __future__ import annotations

import numpy as np


def chunk_sizes(n: int, chunk, seed: int = 0) -> list[int]:
    """Sizes that add up to n: fixed `chunk`, or "random" (empty and 1-sample chunks included)."""
    if chunk != "random":
        return [min(chunk, n - i) for i in range(0, n, chunk)]
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.choice([0, 1, 2, 159, 161, 1279, 1281, int(rng.integers(0, 30000))])))
    sizes[-1] -= sum(sizes) - n
    return sizes


def run_stream(model, samples, sizes) -> tuple[list[int], list]:
    """Feed samples in chunks of the given sizes, then finish: (every token, every piece)."""
    tokens: list[int] = []
    session = model.stream(on_tokens=lambda t: tokens.extend(int(i) for i in t))
    pieces, start = [], 0
    for n in sizes:
        pieces += session.feed(samples[start : start + n])
        start += n
    return tokens, pieces + session.finish()
