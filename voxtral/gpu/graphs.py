"""CUDA graph capture, in one place: every graph of the GPU backend is made by `capture`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .copy import clone, copy


def capture(cuda_stream, run: Callable[[], None], state: Sequence = ()):
    """Run `run` once eagerly (compiles kernels, sets cuBLAS up, allocates lazily made workspaces),
    put back the device arrays in `state` that the run changed, then capture `run` as a CUDA graph
    on cuda_stream; returns the graph. The caller makes cuda_stream current."""
    saved = [clone(a) for a in state]
    run()
    for a, s in zip(state, saved, strict=True):
        copy(a, s)
    cuda_stream.begin_capture()
    try:
        run()
    finally:
        graph = cuda_stream.end_capture()
    return graph
