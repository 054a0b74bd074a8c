"""Persistent decoder step vs the fused GEMV chain on full-size random weights: one eager step each from
the same state, at a few batch sizes and positions; prints relative L2 of h, logits and KV writes."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from dev.gemv_timing import CFG, decoder_state, random_weights  # noqa: E402
from voxtral.gpu import decoder  # noqa: E402
from voxtral.gpu.layers import Tables  # noqa: E402


def main() -> None:
    import cupy as cp

    w = random_weights()
    tables = Tables(w, CFG)
    for b, ctx in ((1, 500), (1, 5000), (3, 200), (8, 500)):
        buf, kv = decoder_state(b, w, ctx, -(-(ctx + 64) // 64) * 64)
        names = ("h", "logits", "tokens", "pos", "q", "o", "u")
        start = {n: getattr(buf, n).copy() for n in names}
        caches = [a.copy() for c in kv.arrays for a in c]
        out = {}
        for path in ("fused", "persistent"):
            for n in names:
                getattr(buf, n)[...] = start[n]
            for a, s in zip([a for c in kv.arrays for a in c], caches, strict=True):
                a[...] = s
            chosen = tables if path == "persistent" else None
            decoder.step(w, CFG, buf, pdl=True, fused=True, persistent=chosen)
            cp.cuda.Device().synchronize()
            out[path] = {
                "h": cp.asnumpy(buf.h).astype(np.float64),
                "logits": cp.asnumpy(buf.logits).astype(np.float64),
                "tokens": cp.asnumpy(buf.tokens),
                "kv": np.concatenate([cp.asnumpy(a).view(np.uint16).ravel() for c in kv.arrays for a in c]),
            }
        f, p = out["fused"], out["persistent"]
        rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))  # noqa: E731
        kv_diff = int((f["kv"] != p["kv"]).sum())
        print(f"B={b} ctx={ctx}: h rel {rel(p['h'], f['h']):.2e} logits rel "
              f"{rel(p['logits'], f['logits']):.2e} tokens {f['tokens'].tolist()} vs {p['tokens'].tolist()} "
              f"kv bf16 values differing {kv_diff}",
              flush=True)  # fmt: skip
        del buf, kv
        cp.get_default_memory_pool().free_all_blocks()


if __name__ == "__main__":
    main()
