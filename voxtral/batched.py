"""Continuous batching of the offline schedule (SPEC §6): many inputs, one decoder step for all of them.

Up to `engine.capacity` inputs decode at once. Each joins with its prompt prefilled; a batched step
advances every joined input by one position; an input that ends (EOS, or its audio runs out) leaves
at once and the next one takes its slot, so the batch stays full. Per input this is exactly the
offline schedule of greedy() (schedule.py): the same prompt, the same steps, the same stop rule.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .schedule import Schedule


@dataclass
class Job:
    """One input: its audio embeddings (on the engine's device) and positions, or why it has none."""

    key: object
    audio: object = None  # [N, D]
    n_positions: int = 0
    error: Exception | None = None  # set instead of audio when the input could not be prepared
    tokens: list[int] = field(default_factory=list)
    total: int = 0  # greedy steps the audio allows
    timings: dict[str, float] = field(default_factory=dict)  # prefill, decode (wall, shared with the batch)


def decode_batched(engine, schedule: Schedule, jobs: Iterable[Job]) -> Iterator[Job]:
    """Decode every job with continuous batching; yields each job when it is done (or failed), in that order.

    jobs is consumed lazily, one job per free slot, so inputs are prepared (mel, encoder) only
    when a slot is there to take them.
    """
    pending = iter(jobs)
    active: dict[int, Job] = {}  # slot → job
    started: dict[int, float] = {}  # slot → when its job's first step could run
    exhausted = False
    while True:
        while not exhausted and engine.free():
            job = next(pending, None)
            if job is None:
                exhausted = True
            elif job.error is not None:
                yield job
            else:
                job.total = schedule.n_generated(job.n_positions)
                if job.total < 1:
                    raise ValueError(f"{job.n_positions} audio positions cannot hold the prompt")
                t0 = time.perf_counter()
                slot = engine.join(job.audio, job.n_positions)
                engine.prefill(slot, schedule.prompt)
                job.audio = None  # the engine holds it now
                started[slot] = time.perf_counter()
                job.timings["prefill"] = started[slot] - t0
                active[slot] = job
        if not active:
            return
        slots = list(active)
        n = min(engine.burst, *(j.total - len(j.tokens) for j in active.values()))
        tokens = engine.step(slots, n)  # [k, n]
        for slot, row in zip(slots, tokens, strict=True):
            job = active[slot]
            keep, ended = schedule.cut_at_eos(row)
            job.tokens.extend(int(t) for t in keep)
            if ended or len(job.tokens) >= job.total:
                job.timings["decode"] = time.perf_counter() - started.pop(slot)
                engine.leave(slot)
                del active[slot]
                yield job
