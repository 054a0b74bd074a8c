"""cuBLAS GEMM: out [M, N] (f32 or bf16) = x [M, K] bf16 · w [N, K]ᵀ bf16 (+ beta · out).

BF16 inputs (or x, w and out all f32: the log-mel's DFT and filter bank), float32 accumulation
(CUBLAS_COMPUTE_32F, no TF32); beta = 1 folds a residual add into the
GEMM (h += x · wᵀ). cublasGemmEx is called through ctypes on our own handle with our own
workspace: CuPy's wrapper refuses calls during stream capture, and a fixed workspace keeps cuBLAS
from allocating while a CUDA graph is being captured; the call keeps the GIL (a GEMM only queues
kernels; voxtral/gpu/launch.py says why that matters). Runs on CuPy's current stream.

tune=True (the encoder's captured passes): the first call of a shape (M, N, K, out dtype, beta) outside
a stream capture times cuBLASLt's heuristic candidates that need no workspace (no split-K: the same
accumulation order) and whose output equals cublasGemmEx's bit for bit, against cublasGemmEx itself, and
keeps the fastest; later calls of that shape, captured or not, run it. So tuning changes speed only,
never a result. cublasGemmEx's default algorithm picks poorly for some shapes on Hopper: H200, 8 192 rows
× (N 10 240, K 1 280) 319 µs against 279 for another of its own kernels (dev/lt_gemm.py).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import numpy as np

from .copy import clone, copy  # memcpy: no CuPy kernel to compile (a fresh process compiles nothing)

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


# cublasLt.h (CUDA 12 and 13)
LT_DESC_TRANSA, LT_DESC_TRANSB = 3, 4  # cublasLtMatmulDescAttributes_t
LT_PREF_MAX_WORKSPACE_BYTES = 1  # cublasLtMatmulPreferenceAttributes_t
# cublasLtMatmulHeuristicResult_t: algo (64 bytes), workspaceSize, state, wavesCount, 4 reserved ints
LT_RESULT_BYTES = 96
LT_CANDIDATES = 8  # heuristic candidates timed per shape
LT_REPS = 3  # timed launches of each (after one untimed)


class _Plan:
    """One shape's cuBLASLt matmul: its descriptors and algorithm (ctypes objects kept alive here)."""

    def __init__(self, desc, layouts, algo: bytes):
        self.desc, self.layouts = desc, layouts
        self.algo = (ctypes.c_ubyte * 64).from_buffer_copy(algo)


class _Lt:
    """A cuBLASLt handle and the algorithm tuned for each shape (None: cublasGemmEx's default)."""

    def __init__(self):
        lib_dir = Path(_library_path()).parent
        names = sorted(lib_dir.glob("libcublasLt.so*"))
        self.lib = ctypes.PyDLL(str(names[0]) if names else "libcublasLt.so")
        self.handle = ctypes.c_void_p()
        _Cublas._check(self.lib.cublasLtCreate(ctypes.byref(self.handle)), "cublasLtCreate")
        self.lib.cublasLtMatmul.argtypes = [ctypes.c_void_p] * 14 + [ctypes.c_size_t, ctypes.c_void_p]
        self.plans: dict[tuple, _Plan | None] = {}

    def candidates(self, m: int, n: int, k: int, out_type: int) -> list[_Plan]:
        """The heuristic's candidates without workspace for out [M, N] = x [M, K] · w [N, K]ᵀ laid out as
        gemm() lays it out (column-major outᵀ [N, M] = op_T(w: [K, N]) · (x: [K, M]))."""
        lib, ok = self.lib, _Cublas._check
        desc = ctypes.c_void_p()
        status = lib.cublasLtMatmulDescCreate(ctypes.byref(desc), CUBLAS_COMPUTE_32F, CUDA_R_32F)
        ok(status, "MatmulDescCreate")
        for attr, op in ((LT_DESC_TRANSA, CUBLAS_OP_T), (LT_DESC_TRANSB, CUBLAS_OP_N)):
            v = ctypes.c_int32(op)
            ok(lib.cublasLtMatmulDescSetAttribute(desc, attr, ctypes.byref(v), 4), "MatmulDescSetAttribute")
        layouts = []
        for dtype, rows, cols in ((CUDA_R_16BF, k, n), (CUDA_R_16BF, k, m), (out_type, n, m)):
            lay = ctypes.c_void_p()
            status = lib.cublasLtMatrixLayoutCreate(
                ctypes.byref(lay), dtype, ctypes.c_uint64(rows), ctypes.c_uint64(cols), ctypes.c_int64(rows)
            )
            ok(status, "MatrixLayoutCreate")
            layouts.append(lay)
        pref = ctypes.c_void_p()
        ok(lib.cublasLtMatmulPreferenceCreate(ctypes.byref(pref)), "MatmulPreferenceCreate")
        none = ctypes.c_uint64(0)
        status = lib.cublasLtMatmulPreferenceSetAttribute(
            pref, LT_PREF_MAX_WORKSPACE_BYTES, ctypes.byref(none), 8
        )
        ok(status, "MatmulPreferenceSetAttribute")
        results = (ctypes.c_ubyte * (LT_RESULT_BYTES * LT_CANDIDATES))()
        count = ctypes.c_int()
        a, b, c = layouts
        status = lib.cublasLtMatmulAlgoGetHeuristic(
            self.handle, desc, a, b, c, c, pref, LT_CANDIDATES, results, ctypes.byref(count)
        )
        lib.cublasLtMatmulPreferenceDestroy(pref)
        ok(status, "MatmulAlgoGetHeuristic")
        plans = []
        for i in range(count.value):
            raw = bytes(results[i * LT_RESULT_BYTES : (i + 1) * LT_RESULT_BYTES])
            workspace = int.from_bytes(raw[64:72], "little")
            state = int.from_bytes(raw[72:76], "little", signed=True)
            if state == 0 and workspace == 0:
                plans.append(_Plan(desc, layouts, raw[:64]))
        return plans

    def run(self, plan: _Plan, x, w, out, beta: float, stream_ptr: int) -> None:
        a, b, c = plan.layouts
        status = self.lib.cublasLtMatmul(
            self.handle, plan.desc, ctypes.addressof(_SCALARS[1.0]), w.data.ptr, a, x.data.ptr, b,
            ctypes.addressof(_SCALARS[float(beta)]), out.data.ptr, c, out.data.ptr, c,
            ctypes.addressof(plan.algo), None, 0, stream_ptr,
        )  # fmt: skip
        _Cublas._check(status, "cublasLtMatmul")


@functools.cache
def _lt() -> _Lt:
    return _Lt()


def _tuned(x, w, out, beta: float) -> _Plan | None:
    """The plan tuned for this shape (tuning it now, outside a capture), or None: cublasGemmEx. Every
    candidate is timed (LT_REPS launches after one); the fastest that beats the default and gives
    bitwise its output wins (checked on the device, fastest first). ~10–30 ms a shape."""
    import cupy

    m, k, n = x.shape[0], x.shape[1], w.shape[0]
    key = (m, n, k, out.dtype.str, float(beta))
    lt = _lt()
    if key in lt.plans:
        return lt.plans[key]
    stream = cupy.cuda.get_current_stream()
    if stream.is_capturing():
        return None  # tuned in the capture's eager run (graphs.capture), else the default
    try:
        plans = lt.candidates(m, n, k, OUT_TYPES[out.dtype])
    except RuntimeError:
        plans = []
    trial = cupy.empty_like(out)
    begin, end = cupy.cuda.Event(), cupy.cuda.Event()

    def timed(launch) -> float:
        launch()
        begin.record(stream)
        for _ in range(LT_REPS):
            launch()
        end.record(stream)
        end.synchronize()
        return cupy.cuda.get_elapsed_time(begin, end)

    base = timed(lambda: _gemm_ex(x, w, trial, 0.0))
    times = []
    for plan in plans:
        try:
            times.append((timed(lambda p=plan: lt.run(p, x, w, trial, 0.0, stream.ptr)), id(plan), plan))
        except RuntimeError:
            continue
    best = None
    faster = sorted(t for t in times if t[0] < base)
    if faster:
        ref = clone(out)  # out's own values: beta = 1 adds them
        _gemm_ex(x, w, ref, beta)
        for _, _, plan in faster:
            copy(trial, out)
            lt.run(plan, x, w, trial, beta, stream.ptr)
            if _same_bits(trial, ref):  # else another accumulation order: never a different result
                best = plan
                break
    lt.plans[key] = best
    return best


def _same_bits(a, b) -> bool:
    """Whether two device arrays of one shape and dtype (a multiple of 4 bytes) are bitwise equal
    (cuda/check.cu, one 4-byte read back)."""
    import cupy

    from . import kernels
    from .launch import launch

    flag = cupy.zeros(1, np.uint32)
    words = a.nbytes // 4
    blocks = max(1, min(1024, -(-words // 1024)))
    args = (a.reshape(-1).view(np.uint32), b.reshape(-1).view(np.uint32), np.uint64(words), flag)
    launch(kernels.function("check.cu", "flag_differs"), (blocks,), (256,), args)
    return not bool(flag.get()[0])


def gemm(x, w, out=None, beta: float = 0.0, tune: bool = False):
    """out = x · wᵀ + beta · out; x [M, K] bf16, w [N, K] bf16, out [M, N] f32 (default) or bf16; or
    x, w and out all f32. tune: bf16 x and w run the shape's tuned cuBLASLt algorithm (the module's
    docstring: bitwise the same result). AssertionError on wrong shapes, dtypes or layouts."""
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
    if tune and not f32 and out.nbytes % 4 == 0:
        plan = _tuned(x, w, out, beta)
        if plan is not None:
            _lt().run(plan, x, w, out, beta, cupy.cuda.get_current_stream().ptr)
            return out
    return _gemm_ex(x, w, out, beta)


def _gemm_ex(x, w, out, beta: float):
    """gemm() through cublasGemmEx's default algorithm (checked arguments)."""
    import cupy

    m, k = x.shape
    n = w.shape[0]
    in_type = CUDA_R_32F if x.dtype == np.float32 else CUDA_R_16BF
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
