"""CUDA graph capture, in one place: every graph of the GPU backend is made by `capture`; `fastest`
times graphs that compute the same thing and keeps the quickest."""

from __future__ import annotations

import gc
import statistics
from collections.abc import Callable, Sequence

from .copy import clone, copy
from .launch import launch_graph


def capture(cuda_stream, run: Callable[..., None], state: Sequence = (), cuts: Sequence[int] = ()):
    """Run `run` once eagerly (compiles kernels, sets cuBLAS up, allocates lazily made workspaces),
    put back the device arrays in `state` that the run changed, then capture `run` as a CUDA graph
    on cuda_stream (the cyclic garbage collector held off meanwhile); returns the graph. The caller
    makes cuda_stream current.

    cuts: run takes `cut`, a callback it calls with increasing numbers at the points where a new graph
    may begin (the encoder: before each layer but the first); the capture ends there at each number in
    cuts and begins the next graph, and returns a GraphChain of them. The eager run's cut does nothing."""
    saved = [clone(a) for a in state]
    run(cut=_no_cut) if cuts else run()
    for a, s in zip(state, saved, strict=True):
        copy(a, s)
    graphs = []

    def cut(point: int) -> None:
        if point in cuts:
            graphs.append(cuda_stream.end_capture())
            cuda_stream.begin_capture()

    # No cyclic garbage collection while capturing: a collected object's finalizer (an earlier model's
    # stream, event or graph) would make a CUDA call that invalidates the capture.
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        cuda_stream.begin_capture()
        try:
            run(cut=cut) if cuts else run()
        finally:
            graphs.append(cuda_stream.end_capture())
    finally:
        if was_enabled:
            gc.enable()
    return GraphChain(graphs) if cuts else graphs[0]


def _no_cut(point: int) -> None:
    pass


class GraphChain:
    """Graphs replayed one after another on one stream (capture with cuts): the first, a few kernels
    long, starts on the GPU while the host still launches the next ones. cuGraphLaunch costs the host
    ~0.8 µs a kernel node (~0.3 ms for an encoder tick of ~400); H200, 128 live sessions: ticks of
    15.5–16.1 ms median with the encoder's chains against 18.6–20.4 with one graph a pass."""

    def __init__(self, graphs: list):
        self.graphs = graphs

    def launch(self, cuda_stream) -> None:
        for graph in self.graphs:
            launch_graph(graph, cuda_stream)


TIMED_REPLAYS = 5  # of each candidate, alternating; the median decides


def fastest(
    cuda_stream, graphs: dict, state: Sequence = (), prefer: str | None = None, margin: float = 0.05
) -> tuple[object, dict]:
    """(the graph of `graphs` {name: graph} with the smallest median replay time, {name: median ms}).

    Each replay starts from the same `state` (put back after every one, as `capture` does), so a
    replay only rewrites what the next real replay writes again. The caller makes cuda_stream current.
    prefer: a name kept unless another graph is faster by more than `margin` (a share of its time), so
    that timing noise between two near-equal graphs does not decide which numerics a bucket gets.
    """
    import cupy

    if len(graphs) == 1:
        return next(iter(graphs.values())), {}
    saved = [clone(a) for a in state]
    times: dict = {name: [] for name in graphs}
    begin, end = cupy.cuda.Event(), cupy.cuda.Event()
    for _ in range(TIMED_REPLAYS):
        for name, graph in graphs.items():
            begin.record(cuda_stream)
            launch_graph(graph, cuda_stream)
            end.record(cuda_stream)
            end.synchronize()
            times[name].append(cupy.cuda.get_elapsed_time(begin, end))
            for a, s in zip(state, saved, strict=True):
                copy(a, s)
    medians = {name: statistics.median(t) for name, t in times.items()}
    best = min(medians, key=medians.get)
    if prefer in medians and medians[best] > (1 - margin) * medians[prefer]:
        best = prefer
    return graphs[best], medians
