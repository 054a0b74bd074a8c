"""Kernel launches with programmatic dependent launch (PDL): the driver's cuLaunchKernelEx via ctypes.

launch(kernel, grid, block, args, shared_mem, pdl) launches a cupy.RawKernel on CuPy's current stream.
pdl=False is CuPy's own launch, unchanged. pdl=True (Hopper, sm_90+) adds the launch attribute
CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION: the kernel may start once every block of the
previous kernel on the stream has run griddepcontrol.launch_dependents (or exited), and must call
griddepcontrol.wait (pdl_wait in cuda/common.cuh) before it reads anything an earlier kernel writes.
Stream capture records the pair as a programmatic edge of the CUDA graph (CUDA ≥ 12.3). On older GPUs
pdl=True falls back to the plain launch. Arguments are marshalled as CuPy does: arrays → device
pointers, NumPy scalars → their own C type, Python int → int64, float → double; None → a null pointer.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6  # cuda.h, CUlaunchAttributeID
PDL_MIN_CAPABILITY = 90  # compute capability (10·major + minor) with griddepcontrol


class LaunchAttributeValue(ctypes.Union):
    _fields_ = [("programmatic_stream_serialization_allowed", ctypes.c_int), ("pad", ctypes.c_char * 64)]


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
def _driver() -> ctypes.CDLL:
    lib = ctypes.CDLL("libcuda.so.1")
    lib.cuLaunchKernelEx.argtypes = [ctypes.POINTER(LaunchConfig), ctypes.c_void_p] + [
        ctypes.POINTER(ctypes.c_void_p)
    ] * 2
    lib.cuLaunchKernelEx.restype = ctypes.c_int
    lib.cuGetErrorName.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
    return lib


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


def launch(kernel, grid, block, args, shared_mem: int = 0, pdl: bool = False) -> None:
    """kernel<<<grid, block, shared_mem, current stream>>>(*args), as a PDL launch when pdl is set."""
    import cupy

    if not (pdl and pdl_supported(cupy.cuda.Device().id)):
        kernel(tuple(grid), tuple(block), tuple(args), shared_mem=shared_mem)
        return
    attr = LaunchAttribute(id=CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION)
    attr.value.programmatic_stream_serialization_allowed = 1
    stream = cupy.cuda.get_current_stream().ptr
    config = LaunchConfig(*_dims(grid), *_dims(block), shared_mem, stream, ctypes.pointer(attr), 1)
    values = [kernel_arg(a) for a in args]  # kept alive until the driver has copied them
    lib = _driver()
    status = lib.cuLaunchKernelEx(ctypes.byref(config), kernel.kernel.ptr, kernel_params(values), None)
    if status != 0:
        name = ctypes.c_char_p()
        lib.cuGetErrorName(status, ctypes.byref(name))
        raise RuntimeError(f"cuLaunchKernelEx failed: {(name.value or b'?').decode()} ({status})")


__all__ = ["launch", "pdl_supported"]
