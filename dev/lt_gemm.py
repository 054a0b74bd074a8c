"""cuBLASLt's candidate algorithms against the cublasGemmEx default (voxtral/gpu/gemm.py), per GEMM shape.

The encoder's GEMMs at a 1 024-row pass run at 435–619 TFLOP/s where the same kernels reach 590–766 at
8 192 rows (dev/encoder_profile.py, H200, 2026-12-03): does another algorithm do better at the rows a
single file's passes have? For each shape (row-major out [M, N] f32 = x [M, K] bf16 · w [N, K]ᵀ, as
gemm() computes it), cublasLtMatmulAlgoGetHeuristic's candidates (up to --algos) are each timed (CUDA
events over a captured graph of --reps launches, gemv_timing.replay_us) beside gemm()'s default, and the
largest relative difference of each candidate's output from the default's is checked (accumulation order
only: ≤ 1e-5). A measuring tool for the GPU machine: whether gemm() should pick its algorithm per shape.

    python dev/lt_gemm.py [--rows 1024,1088,3128,8192] [--algos 16] [--reps 20] [--decoder]
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

# cublasLt.h (CUDA 12/13)
COMPUTE_32F, R_32F, R_16BF = 68, 0, 14
OP_N, OP_T = 0, 1
DESC_TRANSA, DESC_TRANSB = 3, 4  # cublasLtMatmulDescAttributes_t
PREF_MAX_WORKSPACE_BYTES = 1  # cublasLtMatmulPreferenceAttributes_t
WORKSPACE = 32 << 20
RESULT_BYTES = 96  # cublasLtMatmulHeuristicResult_t: algo (64), workspaceSize, state, wavesCount, reserved[4]

ENCODER = {"qkv": (3840, 1280), "wo": (1280, 1280), "w13": (10240, 1280), "w2": (1280, 5120)}  # N, K
DECODER = {
    "qkv": (6144, 3072),
    "wo": (3072, 4096),
    "w13": (18432, 3072),
    "w2": (3072, 9216),
    "output": (131072, 3072),
}


def _lib():
    """libcublasLt from the directory of the libcublas CuPy loaded."""
    from voxtral.gpu.gemm import _library_path

    here = Path(_library_path()).parent
    for name in sorted(here.glob("libcublasLt.so*")):
        return ctypes.CDLL(str(name))
    return ctypes.CDLL("libcublasLt.so")


class Lt:
    def __init__(self):
        import cupy

        self.lib = _lib()
        self.handle = ctypes.c_void_p()
        self._ok(self.lib.cublasLtCreate(ctypes.byref(self.handle)), "cublasLtCreate")
        self.workspace = cupy.empty(WORKSPACE, np.uint8)

    @staticmethod
    def _ok(status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"{what}: cuBLASLt status {status}")

    def plan(self, m: int, n: int, k: int, most: int):
        """(desc, layouts, [(algo bytes, workspace, waves)]) for out [M, N] f32 = x [M, K] · w [N, K]ᵀ, as
        gemm() lays it out: column-major outᵀ [N, M] = op_T(w: [K, N]) · (x: [K, M])."""
        desc = ctypes.c_void_p()
        self._ok(
            self.lib.cublasLtMatmulDescCreate(ctypes.byref(desc), COMPUTE_32F, R_32F), "MatmulDescCreate"
        )
        for attr, op in ((DESC_TRANSA, OP_T), (DESC_TRANSB, OP_N)):
            v = ctypes.c_int32(op)
            self._ok(
                self.lib.cublasLtMatmulDescSetAttribute(desc, attr, ctypes.byref(v), 4), "DescSetAttribute"
            )
        layouts = []
        for dtype, rows, cols, ld in ((R_16BF, k, n, k), (R_16BF, k, m, k), (R_32F, n, m, n)):
            lay = ctypes.c_void_p()
            status = self.lib.cublasLtMatrixLayoutCreate(
                ctypes.byref(lay), dtype, ctypes.c_uint64(rows), ctypes.c_uint64(cols), ctypes.c_int64(ld)
            )
            self._ok(status, "MatrixLayoutCreate")
            layouts.append(lay)
        pref = ctypes.c_void_p()
        self._ok(self.lib.cublasLtMatmulPreferenceCreate(ctypes.byref(pref)), "PreferenceCreate")
        ws = ctypes.c_uint64(WORKSPACE)
        status = self.lib.cublasLtMatmulPreferenceSetAttribute(
            pref, PREF_MAX_WORKSPACE_BYTES, ctypes.byref(ws), 8
        )
        self._ok(status, "PreferenceSetAttribute")
        results = (ctypes.c_ubyte * (RESULT_BYTES * most))()
        count = ctypes.c_int()
        a, b, c = layouts
        status = self.lib.cublasLtMatmulAlgoGetHeuristic(
            self.handle, desc, a, b, c, c, pref, most, results, ctypes.byref(count)
        )
        self._ok(status, "AlgoGetHeuristic")
        algos = []
        for i in range(count.value):
            raw = bytes(results[i * RESULT_BYTES : (i + 1) * RESULT_BYTES])
            workspace, state = np.frombuffer(raw[64:72], np.uint64)[0], np.frombuffer(raw[72:76], np.int32)[0]
            waves = float(np.frombuffer(raw[76:80], np.float32)[0])
            if state == 0 and workspace <= WORKSPACE:
                algos.append((raw[:64], int(workspace), waves))
        return desc, layouts, algos

    def matmul(self, desc, layouts, algo: bytes, x, w, out, beta: float = 0.0) -> None:
        import cupy

        a, b, c = layouts
        one, zero = ctypes.c_float(1.0), ctypes.c_float(beta)
        algo_buf = (ctypes.c_ubyte * 64).from_buffer_copy(algo)
        status = self.lib.cublasLtMatmul(
            self.handle, desc, ctypes.byref(one), ctypes.c_void_p(w.data.ptr), a,
            ctypes.c_void_p(x.data.ptr), b, ctypes.byref(zero), ctypes.c_void_p(out.data.ptr), c,
            ctypes.c_void_p(out.data.ptr), c, ctypes.byref(algo_buf),
            ctypes.c_void_p(self.workspace.data.ptr), ctypes.c_size_t(WORKSPACE),
            ctypes.c_void_p(cupy.cuda.get_current_stream().ptr),
        )  # fmt: skip
        self._ok(status, "cublasLtMatmul")


def _time_us(run, reps: int) -> float:
    """µs per call: a captured graph of reps calls, timed as dev/gemv_timing.py times graphs."""
    import cupy

    from dev.gemv_timing import replay_us
    from voxtral.gpu.graphs import capture

    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        graph = capture(stream, lambda: [run() for _ in range(reps)], ())
    return replay_us(graph, stream, 5) / reps


def main(argv: list[str] | None = None) -> None:
    import cupy

    from voxtral.gpu.gemm import gemm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", help="M values, comma-separated (1024,1088,3128,8192; --decoder: 16,32,64)")
    ap.add_argument("--algos", type=int, default=16, help="heuristic candidates asked for")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--decoder", action="store_true", help="the decoder's shapes (rows 16–64) instead")
    args = ap.parse_args(argv)
    shapes = DECODER if args.decoder else ENCODER
    rows = args.rows or ("16,32,64" if args.decoder else "1024,1088,3128,8192")
    lt = Lt()
    rng = cupy.random.default_rng(0)
    for m in (int(v) for v in rows.split(",")):
        for name, (n, k) in shapes.items():
            x = (rng.standard_normal((m, k), dtype=np.float32)).astype(np.float32).view(np.uint32)
            x = (x >> 16).astype(np.uint16)  # bf16 bit patterns (truncated)
            w = ((rng.standard_normal((n, k), dtype=np.float32) * 0.05).view(np.uint32) >> 16).astype(
                np.uint16
            )
            ref, out = cupy.empty((m, n), np.float32), cupy.empty((m, n), np.float32)
            base = _time_us(lambda: gemm(x, w, out=ref), args.reps)  # noqa: B023
            flops = 2 * m * n * k
            desc, layouts, algos = lt.plan(m, n, k, args.algos)
            rows = []
            for i, (algo, workspace, waves) in enumerate(algos):
                try:
                    us = _time_us(lambda: lt.matmul(desc, layouts, algo, x, w, out), args.reps)  # noqa: B023
                except RuntimeError as e:
                    rows.append(f"      #{i}: {e}")
                    continue
                err = float(cupy.abs(out - ref).max() / cupy.abs(ref).max())
                rows.append(f"      #{i}: {us:8.2f} µs {flops / us / 1e6:6.0f} TFLOP/s  waves {waves:5.2f}"
                            f"  workspace {workspace >> 10} KiB  max rel diff {err:.1e}")  # fmt: skip
            rate = flops / base / 1e6
            print(f"M={m} {name} (N={n}, K={k}): gemm() default {base:8.2f} µs {rate:6.0f} TFLOP/s;"
                  f" {len(algos)} cuBLASLt candidates")  # fmt: skip
            print("\n".join(rows), flush=True)


if __name__ == "__main__":
    main()
