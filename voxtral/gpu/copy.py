"""Copies into and between device arrays through the copy engine, never through a compiled kernel.

CuPy copies into slices (`a[i:j] = b`), concatenates and clones with elementwise kernels that NVRTC
compiles on first use: 0.1–0.2 s each on a new machine (an empty kernel cache), before the first
token. These helpers issue cudaMemcpyAsync / cudaMemcpy2DAsync on CuPy's current stream instead.
An array qualifies when it is C-contiguous, or when its rows (a[i]) are each C-contiguous and equally
spaced (a slice along a later axis of a C-contiguous array, e.g. table[:, slot]).
"""

from __future__ import annotations

import numpy as np

H2D, D2D = 1, 3  # cudaMemcpyKind


def _layout(a, ptr: int) -> tuple[int, int, int, int]:
    """(pointer, row pitch, row bytes, rows) of an array whose rows are contiguous."""
    if a.flags.c_contiguous or a.size == 0:
        return ptr, a.nbytes, a.nbytes, 1
    row = a.nbytes // a.shape[0] if a.ndim > 1 else 0
    if a.ndim < 2 or not a[0].flags.c_contiguous or a.strides[0] < row:
        raise ValueError(f"array of shape {a.shape} and strides {a.strides}: rows are not contiguous")
    return ptr, a.strides[0], row, a.shape[0]


def _copy(dst, dst_ptr: int, src, src_ptr: int, kind: int) -> None:
    from cupy.cuda import get_current_stream, runtime

    if dst.shape != src.shape or dst.dtype != src.dtype:
        raise ValueError(f"copy of {src.dtype}{src.shape} into {dst.dtype}{dst.shape}")
    if dst.size == 0:
        return
    d, dpitch, width, height = _layout(dst, dst_ptr)
    s, spitch, swidth, sheight = _layout(src, src_ptr)
    stream = get_current_stream().ptr
    if height == 1 and sheight == 1:
        runtime.memcpyAsync(d, s, width, kind, stream)
        return
    if height == 1:  # contiguous destination, pitched source: its rows are the source's
        dpitch, width, height = swidth, swidth, sheight
    elif sheight == 1:
        spitch = width
    runtime.memcpy2DAsync(d, dpitch, s, spitch, width, height, kind, stream)


def copy(dst, src) -> None:
    """dst[...] = src for device arrays of one shape and dtype (cupy.ndarray)."""
    _copy(dst, dst.data.ptr, src, src.data.ptr, D2D)


def upload(dst, host: np.ndarray) -> None:
    """dst[...] = host: a host array (any layout; made contiguous first) into a device array."""
    host = np.ascontiguousarray(host, dtype=dst.dtype)
    _copy(dst, dst.data.ptr, host, host.ctypes.data, H2D)


def clone(a):
    """A new C-contiguous device array equal to a."""
    import cupy

    out = cupy.empty(a.shape, a.dtype)
    copy(out, a)
    return out


def concat_rows(parts: list, out=None):
    """The device arrays [n_i, …] (at least one) one after another along axis 0, as a new C-contiguous
    array (or into out, C-contiguous, of the total shape)."""
    import cupy

    first = parts[0]
    shape = (sum(len(p) for p in parts), *first.shape[1:])
    if out is None:
        out = cupy.empty(shape, first.dtype)
    if out.shape != shape or out.dtype != first.dtype or not out.flags.c_contiguous:
        raise ValueError(f"concat of {first.dtype}{shape} into {out.dtype}{out.shape}")
    row = 0
    for run in _runs(parts):  # parts that follow each other in memory go in one copy
        n = sum(len(p) for p in run)
        if len(run) == 1:
            copy(out[row : row + n], run[0])
        else:  # contiguous bytes from the first part's start
            from cupy.cuda import get_current_stream, runtime

            dst = out[row : row + n]
            runtime.memcpyAsync(dst.data.ptr, run[0].data.ptr, dst.nbytes, D2D, get_current_stream().ptr)
        row += n
    return out


def _runs(parts: list) -> list[list]:
    """parts grouped into runs of C-contiguous views of one allocation, each starting where the previous
    one ends (one copy may not span two allocations, even adjacent ones: cudaErrorInvalidValue)."""
    runs: list[list] = []
    end, mem = None, None
    for p in parts:
        if not len(p):
            continue
        whole = p.flags.c_contiguous
        if runs and whole and end == p.data.ptr and mem is p.data.mem:
            runs[-1].append(p)
        else:
            runs.append([p])
        end, mem = (p.data.ptr + p.nbytes, p.data.mem) if whole else (None, None)
    return runs


def zero(a) -> None:
    """a[...] = 0 for a C-contiguous device array (cudaMemsetAsync on the current stream)."""
    from cupy.cuda import get_current_stream, runtime

    if not a.flags.c_contiguous:
        raise ValueError(f"array of shape {a.shape} and strides {a.strides} is not contiguous")
    if a.nbytes:
        runtime.memsetAsync(a.data.ptr, 0, a.nbytes, get_current_stream().ptr)


def device_array(host: np.ndarray):
    """A new device array holding host (cupy.asarray: a plain upload, no kernel)."""
    import cupy

    return cupy.asarray(np.ascontiguousarray(host))
