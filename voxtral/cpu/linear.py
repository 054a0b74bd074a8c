"""y = x · wᵀ with BF16 weights on the CPU at memory speed (SPEC §8): compiled loops on every core.

BF16 is the top half of a float32, so widening is a 16-bit shift. NumPy alone needs a pass that writes
the widened weights before BLAS reads them again; that tops out near 12 GB/s of BF16 on one core here
and does not scale. So the two loops that matter are compiled with Numba (LLVM, vectorised, GIL released):

- Few rows of x (a decode step, T ≤ GEMV_ROWS): `gemv` reads each weight row once, as BF16, fused with
  the arithmetic. One row of x: each value is widened in registers (an LLVM zext/shl/bitcast intrinsic,
  vectorised) straight into the dot product; more rows: the row is widened into a buffer that stays in
  L1 and dotted with every row of x. Float32 accumulation (vector lanes, reassociated). One Numba
  parallel region per GEMV: handing each thread a task from Python costs ~20 µs, which at 183 GEMVs a
  step on 16 cores was 0.2 s a step.
- Many rows (prefill, encoder chunks): a pool of Python threads, one per core, each widens blocks of its
  rows (`widen`) into its own float32 buffer and multiplies them by all of x with BLAS.

One layer of threads at a time: BLAS runs one thread per call inside the backend's calls (`blas_in_pool`),
the pool's threads sleep when idle, and Numba's threads work only inside a decode GEMV. Two pools spinning
side by side (Numba's and BLAS's own) cut a 2-core machine's GEMM rate from ~140 to ~25 GFLOP/s.

The kernels compile on first use (about 1 s) and are cached on disk next to this module (Numba's
`cache=True`); later processes load them in ~0.3 s. Weights under COMPILED_MIN_VALUES (a tiny test
model's) take plain NumPy. No float32 copy of the model is ever held.
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import ml_dtypes
import numpy as np

BF16 = np.dtype(ml_dtypes.bfloat16)
GEMV_ROWS = 16  # up to this many rows of x: the fused decode GEMV
BLOCK_BYTES = 16 << 20  # float32 bytes of one widened block on the GEMM path (per thread)
COMPILED_MIN_VALUES = 1 << 20  # smaller weights (a tiny test model's) take NumPy: loading Numba costs 0.4 s
CHUNKS_PER_THREAD = 2  # row ranges per thread in a decode GEMV (evens out the threads' finishing times)


def cores() -> int:
    """CPUs this process may run on (its affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _Pool:
    """The worker threads (one per core, made on first use) and each thread's widening buffer."""

    def __init__(self):
        self.n = cores()
        self.lock = threading.Lock()
        self.executor: ThreadPoolExecutor | None = None
        self.local = threading.local()
        self.controller = None

    def map(self, fn, parts) -> None:
        if len(parts) == 1:
            fn(parts[0])
            return
        with self.lock:
            if self.executor is None:
                self.executor = ThreadPoolExecutor(self.n, thread_name_prefix="voxtral-cpu")
        list(self.executor.map(fn, parts))

    def buffer(self, n_values: int) -> np.ndarray:
        """This thread's uint32 buffer of at least n_values."""
        buf = getattr(self.local, "buf", None)
        if buf is None or buf.size < n_values:
            buf = self.local.buf = np.empty(n_values, np.uint32)
        return buf[:n_values]


POOL = _Pool()


def blas_in_pool(method):
    """Decorator for the backend's calls: BLAS one thread per call (threadpoolctl; the pool is the
    parallelism) and no NumPy floating-point warnings on stderr (damaged weights give NaN/Inf; the
    decoder's non-finite check reports them once, by tensor)."""

    def wrapped(*args, **kwargs):
        if POOL.controller is None:
            from threadpoolctl import ThreadpoolController

            POOL.controller = ThreadpoolController()
        with POOL.controller.limit(limits=1, user_api="blas"), np.errstate(all="ignore"):
            return method(*args, **kwargs)

    wrapped.__name__, wrapped.__doc__ = method.__name__, method.__doc__
    return wrapped


@functools.cache
def kernels():
    """The compiled (gemv, widen, read) loops of cpu/loops.py: Numba is imported, and the loops compiled
    or loaded from its disk cache, on first use only."""
    from . import loops

    return loops.gemv, loops.widen, loops.read


def linear_bf16(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x [T, K] float32 · w [N, K] BF16 ᵀ → [T, N] float32 (float32 accumulation)."""
    t, k = x.shape
    n = w.shape[0]
    y = np.empty((t, n), np.float32)
    if n == 0 or t == 0:
        return y
    gemv, widen, _ = kernels()
    bits = np.asarray(w).view(np.uint16)
    x = np.ascontiguousarray(x)
    if t <= GEMV_ROWS:  # one Numba parallel region: Python hands out no per-thread tasks (183 GEMVs a step)
        gemv(bits, x, y, max(1, min(n, POOL.n * CHUNKS_PER_THREAD)))
        return y
    step = -(-n // POOL.n)
    parts = [(r, min(r + step, n)) for r in range(0, n, step)]
    rows = max(1, BLOCK_BYTES // (4 * k))

    def run(part):
        r0, r1 = part
        buf = POOL.buffer(min(rows, r1 - r0) * k)
        for r in range(r0, r1, rows):
            m = min(rows, r1 - r)
            block = buf[: m * k].reshape(m, k)
            widen(bits, r, block)
            np.matmul(x, block.view(np.float32).T, out=y[:, r : r + m])

    POOL.map(run, parts)
    return y


READ_BUFFERS = 3  # fresh buffers the read probe measures; their median counts


def read_bandwidth(n_bytes: int, repeats: int, buffers: int = READ_BUFFERS) -> float:
    """Bytes per second at which this machine reads memory on all cores: for each of `buffers` fresh
    buffers of n_bytes, the best of `repeats` reads by the faster of two probes (the compiled loops of
    the decode GEMV, row sums, and NumPy sums of each core's share); the median over the buffers. On a
    virtual machine the same probe reads one buffer at ~50 GB/s and another at ~80 (how the host backs
    it: seen on the 2-core development VM, alike with huge pages or not): the median is what most memory,
    the weights' included, gives."""
    _, _, read = kernels()
    rates = [_best_read(read, n_bytes, repeats, start) for start in range(buffers)]
    return float(np.median(rates))


def _best_read(read, n_bytes: int, repeats: int, start: int) -> float:
    """Bytes per second of the best read of one fresh buffer (distinct values on every page)."""
    import time

    data = np.arange(start, start + n_bytes // 4, dtype=np.float32).reshape(-1, 4096)
    sums = np.empty(len(data), np.float32)
    parts = np.array_split(data.reshape(-1), POOL.n)
    best = float("inf")
    for probe in (lambda: read(data, sums), lambda: POOL.map(lambda part: float(part.sum()), parts)):
        probe()  # compiles, makes the threads, touches every page
        for _ in range(repeats):
            t0 = time.perf_counter()
            probe()
            best = min(best, time.perf_counter() - t0)
    return data.nbytes / best


def fast_path(x: np.ndarray, w: np.ndarray) -> bool:
    """True when linear_bf16 applies: float32 x [T, K] and a BF16 w of at least COMPILED_MIN_VALUES."""
    return x.dtype == np.float32 and w.dtype == BF16 and x.ndim == 2 and w.size >= COMPILED_MIN_VALUES
