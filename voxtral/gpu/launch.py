"""Kernel launches with programmatic dependent launch (PDL), and graph replays: the driver's
cuLaunchKernelEx and cuGraphLaunch through ctypes, holding the GIL.

launch(kernel, grid, block, args, shared_mem, pdl) launches a cupy.RawKernel on CuPy's current stream.
pdl=False is CuPy's own launch, unchanged (its Cython path is the cheapest per call). pdl=True (Hopper,
sm_90+) adds the launch attribute CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION: the kernel may
start once every block of the previous kernel on the stream has run griddepcontrol.launch_dependents (or
exited), and must call griddepcontrol.wait (pdl_wait in cuda/common.cuh) before it reads anything an
earlier kernel writes. Stream capture records the pair as a programmatic edge of the CUDA graph (CUDA ≥
12.3). On older GPUs pdl=True falls back to the plain launch. launch_graph(graph, stream) replays a
captured cupy.cuda.Graph. Arguments are marshalled as CuPy does: arrays → device pointers, NumPy scalars
→ their own C type, Python int → int64, float → double; None → a null pointer.

The driver (and cuBLAS, gpu/gemm.py) is called through ctypes.PyDLL, which keeps the GIL: a launch only
queues work (µs), and a ctypes.CDLL call gives the GIL up, after which another thread (a reader decoding
audio, a server's event loop) may keep it for up to the interpreter's switch interval (5 ms) before the
engine thread can queue its next kernel. Measured on an H200 (64 files of 60 s, one host, one run each):
CDLL and CuPy launches everywhere 353× real time, encoder 4.7 s on the device's clock; every launch
through PyDLL 368×, 1.9 s; PyDLL with CuPy's launch for the plain kernels (this module) 409×, 1.8 s, and
the lowest single-file encoder and live-tick times of the three.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

CU_LAUNCH_ATTRIBUTE_COOPERATIVE = 2  # cuda.h, CUlaunchAttributeID
CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION = 4  # cuda.h, CUlaunchAttributeID
CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6
PDL_MIN_CAPABILITY = 90  # compute capability (10·major + minor) with griddepcontrol


class Dim3(ctypes.Structure):
    _fields_ = [("x", ctypes.c_uint), ("y", ctypes.c_uint), ("z", ctypes.c_uint)]


class LaunchAttributeValue(ctypes.Union):
    _fields_ = [
        ("programmatic_stream_serialization_allowed", ctypes.c_int),
        ("cluster_dim", Dim3),
        ("cooperative", ctypes.c_int),
        ("pad", ctypes.c_char * 64),
    ]


class LaunchAttribute(ctypes.Structure):  # CUlaunchAttribute: id, 4 bytes of padding, 64-byte value
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", LaunchAttributeValue)]


class LaunchConfig(ctypes.Structure):  # CUlaunchConfig
    _fields_ = [
        *((f, ctypes.c_uint) for f in ("grid_x", "grid_y", "grid_z", "block_x", "block_y", "block_z")),
        ("shared_mem_bytes", ctypes.c_uint),
        ("stream", ctypes.c_void_p),
        ("attrs", ctypes.POINTER(LaunchAttribute)),
        ("num_attrs", ctypes.c_uint),
    ]


@functools.cache
def libcuda() -> ctypes.PyDLL:
    lib = ctypes.PyDLL("libcuda.so.1")  # PyDLL: the GIL stays held through every call (module doc)
    lib.cuLaunchKernelEx.argtypes = [ctypes.POINTER(LaunchConfig), ctypes.c_void_p] + [
        ctypes.POINTER(ctypes.c_void_p)
    ] * 2
    lib.cuLaunchKernelEx.restype = ctypes.c_int
    lib.cuGraphLaunch.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.cuGraphLaunch.restype = ctypes.c_int
    lib.cuGetErrorName.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
    return lib


@functools.cache
def _pdl_attribute() -> LaunchAttribute:
    attr = LaunchAttribute(id=CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION)
    attr.value.programmatic_stream_serialization_allowed = 1
    return attr


@functools.cache
def pdl_supported(device_id: int) -> bool:
    """Whether the device runs griddepcontrol (Hopper and later)."""
    import cupy

    return int(cupy.cuda.Device(device_id).compute_capability) >= PDL_MIN_CAPABILITY


def kernel_arg(a):
    """One kernel argument as a ctypes value holding the bytes the kernel parameter receives."""
    if a is None:
        return ctypes.c_void_p(0)
    ptr = getattr(getattr(a, "data", None), "ptr", None)  # a cupy.ndarray: its device pointer
    if ptr is not None:
        return ctypes.c_void_p(ptr)
    if isinstance(a, int):
        a = np.int64(a)
    elif isinstance(a, float):
        a = np.float64(a)
    if not isinstance(a, np.generic):
        raise TypeError(f"kernel argument of type {type(a).__name__}: pass a CuPy array or a NumPy scalar")
    return (ctypes.c_char * a.itemsize).from_buffer_copy(a.tobytes())


def kernel_params(values) -> ctypes.Array:
    """The void** array of cuLaunchKernelEx: one pointer to each argument's bytes."""
    return (ctypes.c_void_p * len(values))(*(ctypes.addressof(v) for v in values))


def _dims(d) -> tuple[int, int, int]:
    d = (tuple(d) + (1, 1))[:3]
    return tuple(max(1, int(v)) for v in d)  # type: ignore[return-value]


def launch(
    kernel,
    grid,
    block,
    args,
    shared_mem: int = 0,
    pdl: bool = False,
    cluster: int = 1,
    driver: bool = False,
    cooperative: bool = False,
) -> None:
    """kernel<<<grid, block, shared_mem, current stream>>>(*args), as a PDL launch when pdl is set, in
    thread-block clusters of `cluster` blocks along x when it is > 1 (sm_90+: the caller checks; grid x
    a multiple of it). driver: through cuLaunchKernelEx even when neither is asked for (arguments CuPy
    cannot pass: a NumPy void scalar is passed as its bytes, e.g. a 128-byte CUtensorMap).
    cooperative: every block resident at once, or the launch fails (a grid that synchronises itself)."""
    import cupy

    pdl = pdl and pdl_supported(cupy.cuda.Device().id)
    if not (pdl or driver or cooperative) and cluster == 1:
        kernel(tuple(grid), tuple(block), tuple(args), shared_mem=shared_mem)
        return
    assert _dims(grid)[0] % cluster == 0, f"grid {grid} is not a whole number of clusters of {cluster}"
    stream = cupy.cuda.get_current_stream().ptr
    chosen = [_pdl_attribute()] if pdl else []
    if cluster > 1:
        attr = LaunchAttribute(id=CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION)
        attr.value.cluster_dim = Dim3(cluster, 1, 1)
        chosen.append(attr)
    if cooperative:
        attr = LaunchAttribute(id=CU_LAUNCH_ATTRIBUTE_COOPERATIVE)
        attr.value.cooperative = 1
        chosen.append(attr)
    attrs = (LaunchAttribute * len(chosen))(*chosen)
    first = ctypes.cast(attrs, ctypes.POINTER(LaunchAttribute))  # attrs stays alive until the launch
    config = LaunchConfig(*_dims(grid), *_dims(block), shared_mem, stream, first, len(chosen))
    values = [kernel_arg(a) for a in args]  # kept alive until the driver has copied them
    lib = libcuda()
    status = lib.cuLaunchKernelEx(ctypes.byref(config), kernel.kernel.ptr, kernel_params(values), None)
    _check(lib, status, "cuLaunchKernelEx")


def launch_graph(graph, cuda_stream) -> None:
    """One replay of a captured cupy.cuda.Graph on cuda_stream (its first launch instantiates it; anything
    else with a launch(stream) method is launched by it)."""
    graph_exec = getattr(graph, "graphExec", 0)
    if not graph_exec:
        graph.launch(cuda_stream)
        return
    lib = libcuda()
    status = lib.cuGraphLaunch(ctypes.c_void_p(graph_exec), ctypes.c_void_p(cuda_stream.ptr))
    _check(lib, status, "cuGraphLaunch")


def _check(lib, status: int, what: str) -> None:
    if status != 0:
        name = ctypes.c_char_p()
        lib.cuGetErrorName(status, ctypes.byref(name))
        raise RuntimeError(f"{what} failed: {(name.value or b'?').decode()} ({status})")


__all__ = ["launch", "launch_graph", "pdl_supported"]
