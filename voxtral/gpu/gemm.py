"""cuBLAS GEMM: out [M, N] (f32 or bf16) = x [M, K] bf16 · w [N, K]ᵀ bf16 (+ beta · out).

BF16 inputs (or x, w and out all f32: the log-mel's DFT and filter bank), float32 accumulation
(CUBLAS_COMPUTE_32F, no TF32); beta = 1 folds a residual add into the
GEMM (h += x · wᵀ). cublasGemmEx is called through ctypes on our own handle with our own
workspace: CuPy's wrapper refuses calls during stream capture, and a fixed workspace keeps cuBLAS
from allocating while a CUDA graph is being captured; the call keeps the GIL (a GEMM only queues
kernels; voxtral/gpu/launch.py says why that matters). Runs on CuPy's current stream.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import numpy as np

CUBLAS_OP_N, CUBLAS_OP_T = 0, 1
CUDA_R_32F, CUDA_R_16BF = 0, 14
CUBLAS_COMPUTE_32F = 68
CUBLAS_GEMM_DEFAULT = -1
WORKSPACE_BYTES = 32 << 20  # cuBLAS's recommended workspace on Hopper
OUT_TYPES = {np.dtype(np.float32): CUDA_R_32F, np.dtype(np.uint16): CUDA_R_16BF}
_SCALARS = {v: ctypes.c_float(v) for v in (0.0, 1.0)}  # host scalars (pointer mode host)


def _library_path() -> str:
    """The libcublas CuPy has loaded into this process (so both use the same library)."""
    import cupy

    cupy.cuda.device.get_cublas_handle()  # makes CuPy load libcublas
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1]
        if "libcublas.so" in path and "Lt" not in Path(path).name:
            return path
    return "libcublas.so"


class _Cublas:
    """One cuBLAS handle with a fixed workspace; the stream is set before every call."""

    def __init__(self):
        import cupy

        self.lib = ctypes.PyDLL(_library_path())  # the GIL held through each call: gpu/launch.py says why
        self.handle = ctypes.c_void_p()
        self._check(self.lib.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate")
        self.workspace = cupy.empty(WORKSPACE_BYTES, np.uint8)
        self.lib.cublasGemmEx.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int] + [
            ctypes.c_int, ctypes.c_int,  # n, k
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,  # alpha, A, Atype, lda
            ctypes.c_void_p, ctypes.c_int, ctypes.c_int,  # B, Btype, ldb
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,  # beta, C, Ctype, ldc
            ctypes.c_int, ctypes.c_int,  # computeType, algo
        ]  # fmt: skip
        self.stream = None

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"{what} failed with cuBLAS status {status}")

    def use_stream(self, stream_ptr: int) -> None:
        if stream_ptr != self.stream:  # setStream resets the workspace: set both, only on change
            self._check(
                self.lib.cublasSetStream_v2(self.handle, ctypes.c_void_p(stream_ptr)), "cublasSetStream"
            )
            ws = ctypes.c_void_p(self.workspace.data.ptr)
            self._check(
                self.lib.cublasSetWorkspace_v2(self.handle, ws, ctypes.c_size_t(WORKSPACE_BYTES)), "workspace"
            )
            self.stream = stream_ptr


@functools.cache
def _cublas() -> _Cublas:
    return _Cublas()


def gemm(x, w, out=None, beta: float = 0.0):
    """out = x · wᵀ + beta · out; x [M, K] bf16, w [N, K] bf16, out [M, N] f32 (default) or bf16; or
    x, w and out all f32."""
    import cupy

    m, k = x.shape
    n = w.shape[0]
    f32 = x.dtype == np.float32 and w.dtype == np.float32
    assert f32 or (x.dtype == np.uint16 and w.dtype == np.uint16), (
        "x and w must be BF16 (uint16 bit patterns), or both float32"
    )
    assert w.shape[1] == k, f"inner sizes differ: x {x.shape}, w {w.shape}"
    assert x.flags.c_contiguous and w.flags.c_contiguous, "x and w must be C-contiguous"
    if out is None:
        assert beta == 0.0, "beta needs an existing out"
        out = cupy.empty((m, n), np.float32)
    assert out.shape == (m, n) and out.flags.c_contiguous, f"out must be [{m}, {n}] contiguous"
    assert not f32 or out.dtype == np.float32, "float32 x and w give a float32 out"
    if m == 0:
        return out
    in_type = CUDA_R_32F if f32 else CUDA_R_16BF
    cb = _cublas()
    cb.use_stream(cupy.cuda.get_current_stream().ptr)
    # Row-major out [M, N] = column-major outᵀ [N, M] = op_T(w: col-major [K, N]) · (x: col-major [K, M]).
    status = cb.lib.cublasGemmEx(
        cb.handle, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k,
        ctypes.addressof(_SCALARS[1.0]), w.data.ptr, in_type, k,
        x.data.ptr, in_type, k,
        ctypes.addressof(_SCALARS[float(beta)]), out.data.ptr, OUT_TYPES[out.dtype], n,
        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT,
    )  # fmt: skip
    cb._check(status, "cublasGemmEx")
    return out
