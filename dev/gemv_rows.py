"""Decode GEMVs at 1 and 8 rows of x: candidate kernel shapes against cuBLAS, on a loaded checkpoint.

Per shape (qkv with its RMSNorm, wo +=, w13 with its SwiGLU, w2 +=, the output head with the final norm)
and batch B: µs per launch of cuBLAS and of each candidate gemv config, timed as `voxtral bench --gemv`
times them (voxtral/bench/gemvs.py: one graph of one launch per layer over the model's own weights, tile
counters, PDL and L2 warming as in the step, the median of its replays). The candidates are the shipped
ones (gemv.step_configs) and the bulk-copy shapes with x in registers or staged in shared memory.

    python dev/gemv_rows.py CHECKPOINT [--batch 1,8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import voxtral  # noqa: E402
from voxtral.bench.gemvs import SHAPES, _calls, _cublas, _ours, _replay_us  # noqa: E402
from voxtral.gpu import gemv  # noqa: E402
from voxtral.gpu.gemv import BULK_ONE_ROW, DEFAULT, Bulk  # noqa: E402

W2_PASSES = [  # x in registers a chunk at a time
    gemv.BULK_W2,
    Bulk(16, 4, 32, x_regs=True, x_passes=True),
    Bulk(16, 3, 24, x_regs=True, x_passes=True),  # 6 chunks of 1 536
    Bulk(16, 4, 24, x_regs=True, x_passes=True),
]
# wo (K = 4096) in whole 64 KiB tiles, one copy a stage instead of 8 row copies of 4 KiB (x staged: 8
# fragments a lane; at 8 rows Bulk(16, 3, 64) falls back to the plain kernel). In the whole B = 1 step
# they lost (2101–2130 µs against 2018–2088, cuda/README.md)
WO_WHOLE = [Bulk(16, 2, 64, x_regs=True), Bulk(16, 3, 64, x_regs=True)]
CANDIDATES = {
    1: [BULK_ONE_ROW, Bulk(16, 3, 48, x_regs=True), *W2_PASSES, *WO_WHOLE],
    8: [
        DEFAULT,
        Bulk(16, 3, 48, x_regs=True),
        Bulk(16, 4, 48, x_regs=True),
        *W2_PASSES,
        *WO_WHOLE,
        "skinny",  # skinny_gemm (bf16 x, no norm: wo and w2 only)
    ],
}
# candidates for some shapes only
ONLY = {"skinny": ("wo", "w2")} | dict.fromkeys(W2_PASSES, ("w2",)) | dict.fromkeys(WO_WHOLE, ("wo",))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--batch", default="1,8")
    args = ap.parse_args(argv)
    model = voxtral.load(args.checkpoint, device="cuda")
    backend, cfg = model.backend, model.config.decoder
    w, eps = backend.weights, cfg.norm_eps
    for b in (int(v) for v in args.batch.split(",")):
        calls = _calls(w, cfg, b)
        print(f"B={b} (µs per launch; shipped = gemv.step_configs)")
        for name in SHAPES:
            c = calls[name]
            blas = _replay_us(backend, _cublas(c)) / len(c)
            cells = [f"cuBLAS {blas:6.2f}"]
            shipped = gemv.step_configs(b)[name]
            for cfg_ in dict.fromkeys([shipped, *CANDIDATES.get(b, [])]):
                if name not in ONLY.get(cfg_, (name,)):
                    continue
                try:
                    run = _skinny(c) if cfg_ == "skinny" else _ours(c, [cfg_] * len(c), eps)
                    us = _replay_us(backend, run) / len(c)
                except Exception as e:  # a shape this config cannot take (shared memory): say so
                    cells.append(f"{cfg_}: {type(e).__name__}")
                    continue
                mark = "*" if cfg_ == shipped else ""
                cells.append(f"{mark}{_short(cfg_)} {us:6.2f}")
            print(f"  {name:6s} " + " | ".join(cells))


def _skinny(calls: list):
    """The calls as skinny_gemm launches chained by PDL (bf16 x, store or +=)."""
    from voxtral.gpu.skinny import skinny_gemm

    def run():
        for x, wt, out, _, epi in calls:
            skinny_gemm(x, wt, out, epilogue=epi, pdl=True)

    return run


def _short(c) -> str:
    if isinstance(c, str):
        return c
    if isinstance(c, Bulk):
        return f"bulk{c.warps}x{c.stages}x{c.stage_kb}{'r' if c.x_regs else ''}{'p' if c.x_passes else ''}"
    return f"plain{c.warps}u{c.unroll}"


if __name__ == "__main__":
    main()
