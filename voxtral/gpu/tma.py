"""Tensor maps for the TMA unit (sm_90+): CUtensorMap descriptors made by the driver's
cuTensorMapEncodeTiled (through ctypes), for bf16 tensors in the 128-byte swizzle with zeros past their
edges. A map is 128 bytes: a NumPy void scalar, passed by value as a kernel argument (skinny_gemm) or
copied into a device table (decoder_layers)."""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from .launch import libcuda

# cuda.h: CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B
TMA_BF16, TMA_SWIZZLE_128B, TMA_L2_256B = 9, 3, 3
TENSOR_MAP_BYTES = 128


@functools.cache
def _encoder():
    f = libcuda().cuTensorMapEncodeTiled
    u32, u64 = ctypes.c_uint32, ctypes.c_uint64
    p32, p64, i = ctypes.POINTER(u32), ctypes.POINTER(u64), ctypes.c_int
    f.argtypes = [ctypes.c_void_p, i, u32, ctypes.c_void_p, p64, p64, p32, p32, i, i, i, i]
    f.restype = ctypes.c_int
    return f


@functools.lru_cache(maxsize=4096)
def tensor_map(ptr: int, dims: tuple[int, ...], strides: tuple[int, ...], box: tuple[int, ...]) -> np.void:
    """The CUtensorMap of a bf16 tensor at device address ptr: dims (elements per dimension, innermost
    first), strides (bytes between consecutive indices of dimensions 1 …, multiples of 16), box (elements
    a load brings per dimension, ≤ 256 each, the innermost 128 bytes at most: the swizzle's span).
    Returns 128 bytes as a NumPy void scalar. RuntimeError if the driver refuses the description. A map
    holds only these values, so one made for an array also serves any later array at the same address."""
    rank = len(dims)
    assert len(strides) == rank - 1 and len(box) == rank, "dims, strides and box disagree on the rank"
    memory = ctypes.create_string_buffer(TENSOR_MAP_BYTES + 64)
    at = (ctypes.addressof(memory) + 63) // 64 * 64  # the driver wants it 64-byte aligned
    c_dims = (ctypes.c_uint64 * rank)(*dims)
    c_strides = (ctypes.c_uint64 * max(1, rank - 1))(*strides)
    c_box = (ctypes.c_uint32 * rank)(*box)
    step = (ctypes.c_uint32 * rank)(*([1] * rank))
    status = _encoder()(at, TMA_BF16, rank, ptr, c_dims, c_strides, c_box, step, 0, TMA_SWIZZLE_128B,
                        TMA_L2_256B, 0)  # fmt: skip
    if status != 0:
        raise RuntimeError(
            f"cuTensorMapEncodeTiled failed ({status}) for dims {dims}, strides {strides}, box {box}"
        )
    return np.frombuffer(ctypes.string_at(at, TENSOR_MAP_BYTES), dtype=f"V{TENSOR_MAP_BYTES}")[0]


__all__ = ["TENSOR_MAP_BYTES", "tensor_map"]
