"""The decoder step's projections for 9–64 rows (batched streams): cuda/skinny.cu's skinny_gemm (SPEC §5).

out (=, +=, SwiGLU) x · wᵀ for x [M ≤ MAX_ROWS, K] bf16 and w [N, K] bf16, f32 accumulation, on Hopper
(sm_90a: TMA and wgmma; `available` says whether this GPU runs it). Against a cuBLAS GEMM at these M:
the SwiGLU is its epilogue (no silu_mul launch, no f32 [M, 2F] round trip), split-K partial sums meet in
a thread-block cluster's shared memory (no reduce kernel), and it is a programmatic dependent launch
whose first weight loads start while the kernel before it ends. Which of the two makes the faster step
is measured per bucket (voxtral/gpu/decoder.py, graphs.fastest). The TMA loads go through tensor maps
(cuTensorMapEncodeTiled: 128-byte swizzle, zeros past the tensor's edges), made once per array and
box shape and passed by value as kernel arguments.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from . import kernels
from .gemv import BF16, _check, device_limits
from .launch import launch
from .tma import tensor_map

log = logging.getLogger(__name__)

MAX_ROWS = 64  # rows of x a block multiplies (one wgmma m-tile; rows past M read as zeros)
THREADS = 160  # one warpgroup of consumers and one producer warp
STAGE_SMEM = 225 * 1024  # shared memory the stages take at most by default
MIN_STEPS = 4  # stages' worth of columns a block of a split-K cluster streams at least
STAGE_COLUMNS = 64  # columns of a stage (128 bytes of a bf16 row: the swizzle's span)
BOX_ROWS = (96, 144, 192, 240)  # weight rows a block (instances; multiples of the 48-column wgmma)
EPILOGUES = {"store": 0, "add": 1, "swiglu": 2}
CLUSTERS = (1, 2, 4, 8)  # split-K factors (blocks of a cluster)
STAGE_OVERHEAD = 4  # stages' worth of a block's time outside its stream (pipeline fill, epilogue): plan
SPLIT_OVERHEAD = 2  # stages' worth of time per halving of K (the cluster's reduction): plan
TEMPLATES = {"skinny.cu": tuple(f"skinny_gemm<{nb}, {e}>" for nb in BOX_ROWS for e in EPILOGUES.values())}


def stages(box_rows: int, split: int = 1) -> int:
    """Shared-memory stages of a block by default: 8 without split-K, 6 for S = 2, 4 for S ≥ 4 (a short
    ring lets the next launch's blocks onto the SM sooner; H200, dev/skinny_timing.py: qkv at 64 rows
    96×2 with 6 stages 14.2 µs, 4 15.3; wo 96×4 with 3 14.5, 4 14.8; w13 144×1 with 8 32.4 at 16 rows),
    at most what STAGE_SMEM holds, at least 2."""
    want = 8 if split == 1 else 6 if split == 2 else 4
    return max(2, min(want, STAGE_SMEM // ((box_rows + MAX_ROWS) * 2 * STAGE_COLUMNS)))


def shared_bytes(box_rows: int, n_stages: int) -> int:
    """Dynamic shared memory of a launch: 1024 bytes of alignment slack, the stages of (weight rows +
    MAX_ROWS rows of x) × 128 bytes, then their mbarriers."""
    return 1024 + n_stages * (box_rows + MAX_ROWS) * 2 * STAGE_COLUMNS + 128


def boxes(n: int, box_rows: int, epilogue: str) -> int:
    """Blocks along N: boxes of box_rows weight rows (swiglu: box_rows / 2 features, gate and up rows)."""
    return -(-(n // 2) // (box_rows // 2)) if epilogue == "swiglu" else -(-n // box_rows)


def plan(n: int, k: int, epilogue: str, sms: int, clusters: bool) -> tuple[int, int]:
    """(box rows, split-K factor S) for an [N, K] weight: the least work on the busiest SM, one block per
    SM: waves · (box rows + half the 64 rows of x, read from L2) · (stages a block + STAGE_OVERHEAD for
    its pipeline fill and epilogue + SPLIT_OVERHEAD · log2 S for the reduction); ties to larger boxes.
    S > 1 needs clusters and leaves each block ≥ MIN_STEPS stages. On an H200 this picks the fastest or
    within 2 % of it for the decoder's shapes at 64 rows (dev/skinny_timing.py, cuda/README.md)."""
    steps = -(-k // STAGE_COLUMNS)
    best = None
    for nb in sorted(BOX_ROWS, reverse=True):
        for s in CLUSTERS if clusters else (1,):
            if s > 1 and steps < s * MIN_STEPS:
                continue
            waves = -(-boxes(n, nb, epilogue) * s // sms)
            stream = -(-steps // s) + STAGE_OVERHEAD + SPLIT_OVERHEAD * (s.bit_length() - 1)
            cost = waves * (nb + MAX_ROWS // 2) * stream
            if best is None or cost < best[0]:
                best = (cost, (nb, s))
    return best[1]


@functools.cache
def _kernel(expr: str, device_id: int):
    fn = kernels.function("skinny.cu", expr, TEMPLATES["skinny.cu"])
    fn.max_dynamic_shared_size_bytes = device_limits(device_id)[2] - fn.shared_size_bytes
    return fn


def _tensor_map(ptr: int, rows: int, k: int, box_rows: int) -> np.void:
    """The tensor map of a bf16 [rows, K] row-major array at ptr, boxes of [box_rows, STAGE_COLUMNS]."""
    return tensor_map(ptr, (k, rows), (2 * k,), (STAGE_COLUMNS, box_rows))


@functools.cache
def available(device_id: int) -> bool:
    """Whether this GPU runs skinny_gemm: compute capability 9.0 and the prebuilt module (its sm_90a code;
    NVRTC compiles the portable target, whose kernel does nothing), checked once on a small product."""
    import cupy

    if int(cupy.cuda.Device(device_id).compute_capability) != 90:
        return False
    try:  # small integers: exact in bf16 and in the f32 sums; no CuPy kernel (none compiles at run time)
        x = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) % 7 - 3
        w = np.arange(96 * 64, dtype=np.float32).reshape(96, 64) % 5 - 2
        bits = lambda a: cupy.asarray((a.view(np.uint32) >> 16).astype(np.uint16))  # noqa: E731
        out = cupy.asarray(np.full((64, 96), np.nan, np.float32))
        skinny_gemm(bits(x), bits(w), out, shape=(96, 1))
        return bool(np.array_equal(cupy.asnumpy(out), x @ w.T))
    except Exception as e:  # a driver without tensor maps, a refused launch
        why = f"{type(e).__name__}: {e}"
        log.warning("voxtral: skinny_gemm unavailable (%s); batched steps use cuBLAS", why)
        return False


def skinny_gemm(x, w, out, epilogue: str = "store", pdl: bool = False, shape: tuple[int, ...] | None = None):
    """out (=, +=, swiglu) x · wᵀ; returns out. Shapes and dtypes (AssertionError otherwise):
    x [M, K] bf16 with 1 ≤ M ≤ MAX_ROWS; w [N, K] bf16 (swiglu: [w1; w3], N = 2F); out [M, N] f32
    ("store", "add": out += x · wᵀ) or [M, F] bf16 ("swiglu": silu(x · w1ᵀ) ⊙ (x · w3ᵀ)). K a multiple of 8,
    x and w on 16-byte boundaries. Only where `available` holds (a GPU of compute capability 9.0).
    pdl: a programmatic dependent launch (its weight loads may start while the previous kernel on the
    stream runs). shape: (box rows, split-K factor[, stages]) instead of plan's (timing scripts)."""
    import cupy

    assert epilogue in EPILOGUES, f"epilogue must be one of {list(EPILOGUES)}, got {epilogue!r}"
    assert isinstance(w, cupy.ndarray) and w.ndim == 2, "w must be a 2-D cupy.ndarray [N, K]"
    n, k = w.shape
    m = x.shape[0]
    _check(w, "w", (BF16,), (n, k))
    _check(x, "x", (BF16,), (m, k))
    assert 1 <= m <= MAX_ROWS, f"x must have 1 … {MAX_ROWS} rows, got {m}"
    assert k > 0 and k % 8 == 0 and x.data.ptr % 16 == 0 and w.data.ptr % 16 == 0, (
        "K must be a positive multiple of 8 and x, w 16-byte aligned (tensor maps)"
    )
    if epilogue == "swiglu":
        assert n % 2 == 0, f"swiglu needs w = [w1; w3] with an even number of rows, got {n}"
        _check(out, "out", (BF16,), (m, n // 2))
    else:
        _check(out, "out", (np.float32,), (m, n))
    if n == 0:
        return out
    device = cupy.cuda.Device().id
    sms, _, smem_limit = device_limits(device)
    nb, s, *rest = shape or plan(n, k, epilogue, sms, True)
    n_stages = rest[0] if rest else stages(nb, s)
    assert nb in BOX_ROWS and s in CLUSTERS and 2 <= n_stages <= 8, f"no instance for shape {shape}"
    assert shared_bytes(nb, n_stages) <= smem_limit, f"shape {shape}: its stages need more shared memory"
    fn = _kernel(f"skinny_gemm<{nb}, {EPILOGUES[epilogue]}>", device)
    w_box = nb // 2 if epilogue == "swiglu" else nb
    wmap = _tensor_map(w.data.ptr, n, k, w_box)
    xmap = _tensor_map(x.data.ptr, m, k, MAX_ROWS)
    args = (wmap, xmap, out, np.int32(m), np.int32(n), np.int32(k), np.int32(n_stages))
    grid, smem = boxes(n, nb, epilogue) * s, shared_bytes(nb, n_stages)
    launch(fn, (grid,), (THREADS,), args, shared_mem=smem, pdl=pdl, cluster=s, driver=True)
    return out


__all__ = ["MAX_ROWS", "TEMPLATES", "available", "plan", "shared_bytes", "skinny_gemm"]
