"""The compiled loops of cpu/linear.py (Numba): imported on first use only, as loading Numba takes ~0.4 s.

Everything is defined at module level, so Numba's disk cache (`cache=True`, beside this file) finds each
loop again in a new process: a loop defined inside a function and calling a helper made there gets a new
cache key in every process and is compiled again each time (~1.6 s).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

# reassociation lets LLVM keep several partial sums in vector lanes; no other fast-math flag, so NaN and
# Inf weights still give NaN logits (the decoder's non-finite check relies on it)
FLAGS = {"reassoc", "contract"}


@intrinsic
def bf16_value(typingctx, bits):
    """BF16 bits (uint16) → float32 in registers: zero-extend, shift into the high half, bitcast."""

    def codegen(context, builder, signature, args):
        wide = builder.zext(args[0], ir.IntType(32))
        return builder.bitcast(builder.shl(wide, ir.Constant(ir.IntType(32), 16)), ir.FloatType())

    return types.float32(types.uint16), codegen


@njit(parallel=True, nogil=True, cache=True, fastmath=FLAGS)
def gemv(w, x, y, chunks):  # w [N, K] uint16 (BF16 bits), x [T, K] f32, y [T, N] f32
    n, k = w.shape
    t = x.shape[0]
    step = (n + chunks - 1) // chunks
    for c in prange(chunks):  # Numba's threads, one range of rows each
        if t == 1:  # a decode step: widened in registers, fused with the dot product
            for i in range(c * step, min(n, (c + 1) * step)):
                acc = np.float32(0.0)
                for j in range(k):
                    acc += bf16_value(w[i, j]) * x[0, j]
                y[0, i] = acc
            continue
        bits = np.empty(k, np.uint32)  # more rows: each weight row widened once, into L1
        row = bits.view(np.float32)
        for i in range(c * step, min(n, (c + 1) * step)):
            for j in range(k):
                bits[j] = np.uint32(w[i, j]) << np.uint32(16)
            for r in range(t):
                acc = np.float32(0.0)
                for j in range(k):
                    acc += row[j] * x[r, j]
                y[r, i] = acc


@njit(parallel=True, nogil=True, cache=True, fastmath=FLAGS)
def read(a, y):  # a [R, K] float32 → y [R] its row sums: every value read once, loops as in gemv
    for i in prange(a.shape[0]):
        acc = np.float32(0.0)
        for j in range(a.shape[1]):
            acc += a[i, j]
        y[i] = acc


@njit(nogil=True, cache=True)
def widen(w, r0, out):  # rows r0 … r0 + len(out) − 1 of w [N, K] uint16 → out [m, K] uint32 (f32 bits)
    m, k = out.shape
    for i in range(m):
        for j in range(k):
            out[i, j] = np.uint32(w[r0 + i, j]) << np.uint32(16)
