"""Timings of skinny_gemm (cuda/skinny.cu) at the decoder step's shapes for 16–64 rows, against cuBLAS.

Per shape (the official full-size decoder's qkv, wo, w13 with its SwiGLU, w2, output head) and rows M:
µs per call of cuBLAS (gemm; w13 also its silu_mul launch) and of skinny_gemm with the shape
skinny.plan picks, then (at M = 64, or with --all at every M) every (box rows, split-K factor, stages)
the kernel has, each as the median over replays of a graph of launches rotating over weight copies of
≥ 200 MB together (L2 serves none), with the weights' GB/s and % of the copy bandwidth of the same run.

    python dev/skinny_timing.py [--rows 16,32,64] [--all]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from dev.gemv_timing import CFG, rand_bf16  # noqa: E402
from dev.kernel_timing import copy_bandwidth_gbps, time_graph_us  # noqa: E402
from voxtral.gpu import ops, skinny  # noqa: E402
from voxtral.gpu.gemm import gemm  # noqa: E402

D, F, V = CFG.dim, CFG.hidden_dim, CFG.vocab_size
SHAPES = [  # name, N, K, epilogue
    ("qkv", CFG.q_dim + 2 * CFG.kv_dim, D, "store"),
    ("wo +=", D, CFG.q_dim, "add"),
    ("w13 swiglu", 2 * F, D, "swiglu"),
    ("w2 +=", D, F, "add"),
    ("output", V, D, "store"),
]
ROTATE_BYTES = 200 << 20
STAGES = (3, 4, 6, 8)  # ring lengths tried beside each box shape


def main(argv: list[str] | None = None) -> None:
    import cupy as cp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="16,32,64")
    ap.add_argument("--all", action="store_true", help="every kernel shape at every row count")
    ap.add_argument("--top", type=int, default=12, help="lines per shape and row count")
    args = ap.parse_args(argv)
    bw = copy_bandwidth_gbps()
    sms = cp.cuda.Device().attributes["MultiProcessorCount"]
    print(f"copy bandwidth {bw:.0f} GB/s, {sms} SMs; µs per call (GB/s of the weights, % of copy bw)")
    for name, n, k, epi in SHAPES:
        copies = max(2, -(-ROTATE_BYTES // (2 * n * k)))
        ws = [rand_bf16((n, k), k**-0.5) for _ in range(copies)]
        floor = 2 * n * k / bw / 1e3
        for m in [int(r) for r in args.rows.split(",")]:
            x = rand_bf16((m, k))
            out = cp.zeros((m, n // 2), np.uint16) if epi == "swiglu" else cp.zeros((m, n), np.float32)
            gu = cp.zeros((m, n), np.float32)

            def cublas(i, x=x, out=out, gu=gu, epi=epi, ws=ws):
                if epi == "swiglu":
                    ops.silu_mul(gemm(x, ws[i], out=gu), out=out)
                else:
                    gemm(x, ws[i], out=out, beta=1.0 if epi == "add" else 0.0)

            runs = [("cuBLAS", cublas)]
            planned = skinny.plan(n, k, epi, sms, True)
            shapes = [planned]
            if args.all or m == 64:
                steps = -(-k // skinny.STAGE_COLUMNS)
                shapes += [(nb, s, st) for nb in skinny.BOX_ROWS for s in skinny.CLUSTERS for st in STAGES
                           if (s == 1 or steps >= s * skinny.MIN_STEPS)
                           and skinny.shared_bytes(nb, st) <= 227 * 1024]  # fmt: skip
            for shape in shapes:

                def run(i, x=x, out=out, epi=epi, ws=ws, shape=shape):
                    skinny.skinny_gemm(x, ws[i], out, epilogue=epi, pdl=True, shape=shape)

                label = "skinny " + "×".join(map(str, shape)) + (" (plan)" if shape == planned else "")
                runs.append((label, run))
            cells = []
            for label, fn in runs:
                us = time_graph_us(fn, copies, 2 * copies, 30)
                cells.append((us, label))
            base = cells[0][0]
            print(f"{name} [{n}×{k}] M={m}: floor {floor:.1f} µs")
            for us, label in sorted(cells)[: args.top]:
                gbs = 2 * n * k / us / 1e3
                pct = 100 * gbs / bw
                print(f"   {label:<22} {us:8.2f} µs  {gbs:6.0f} GB/s {pct:5.1f}%  ×{base / us:.2f} vs cuBLAS")
        del ws
        cp.get_default_memory_pool().free_all_blocks()


if __name__ == "__main__":
    main()
