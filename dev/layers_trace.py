"""Timeline of one persistent decoder step (cuda/layers.cu) on full-size random weights: per grid barrier
the spread of the blocks' arrivals and the time it was passed, the consumers' compute between
barriers, the producer's progress through the weights and how long it waited on a full ring.

    python dev/layers_trace.py [--batch 1] [--ctx 500] [--stages N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from dev.gemv_timing import CFG, decoder_state, random_weights  # noqa: E402
from voxtral.gpu import decoder, layers  # noqa: E402

PHASES = ("qkv", "attention", "wo", "w13", "w2")


def main(argv: list[str] | None = None) -> None:
    import cupy as cp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--ctx", type=int, default=500)
    ap.add_argument("--stages", type=int, default=0, help="ring stages (0: as many as fit)")
    ap.add_argument("--flags", type=int, default=0, help="1 no products, 2 no epilogues, 4 no grid sync")
    args = ap.parse_args(argv)
    if args.stages:
        layers.stages = lambda b, cfg, limit: args.stages  # noqa: E731
    w = random_weights()
    tables = layers.Tables(w, CFG)
    buf, kv = decoder_state(args.batch, w, args.ctx, -(-(args.ctx + 64) // 64) * 64)
    sms = cp.cuda.Device().attributes["MultiProcessorCount"]
    words = layers.trace_words(CFG.n_layers)
    trace = cp.zeros((sms, words), np.uint64)
    for _ in range(3):  # warm
        decoder.step(w, CFG, buf, pdl=True, fused=True, persistent=tables)
    cp.cuda.Device().synchronize()
    layers.decoder_layers(tables, CFG, buf, pdl=False, trace=trace, flags=args.flags)
    cp.cuda.Device().synchronize()
    t = cp.asnumpy(trace).astype(np.int64)
    t0 = t[:, 0].min()
    nb = 5 * CFG.n_layers - 1
    arrive = t[:, 2 : 2 * (nb + 1) : 2] - t0  # [blocks, barriers]
    passed = t[:, 3 : 2 * (nb + 1) + 1 : 2] - t0
    end = t[:, 1] - t0
    tb = 2 * layers.TRACE_BARRIERS
    first_copy = t[:, tb : tb + 4 * CFG.n_layers] - t0
    prod_wait, cons_wait = t[:, tb + 4 * CFG.n_layers], t[:, tb + 4 * CFG.n_layers + 1]
    total = end.max()
    wb = sum(a.nbytes for lw in w.decoder_layers for a in (lw.wqkv, lw.wo, lw.w13, lw.w2))
    print(
        f"B={args.batch} ctx={args.ctx} flags={args.flags}: consumers {total / 1e3:.1f} µs for "
        f"{wb / 1e9:.2f} GB of layer weights = {wb / total:.0f} GB/s; producer waits on a full ring "
        f"{np.median(prod_wait) / 1e3:.1f} µs "
        f"(median block, max {prod_wait.max() / 1e3:.1f}); consumer warp 0 waits on data "
        f"{np.median(cons_wait) / 1e3:.1f} µs (median, min {cons_wait.min() / 1e3:.1f})"
    )
    # per phase, summed over layers: the median block's compute (arrival − previous passing), the last
    # arrival's lag behind the median, and the barrier itself (passing − last arrival)
    prev = np.zeros(arrive.shape[0], np.int64)
    compute, skew, barrier = (dict.fromkeys(PHASES, 0.0) for _ in range(3))
    for k in range(nb):
        name = PHASES[k % 5]  # barrier k ends phase k % 5 (layer 0 has none before its qkv)
        last = arrive[:, k].max()
        compute[name] += np.median(arrive[:, k] - prev) / 1e3
        skew[name] += (last - np.median(arrive[:, k])) / 1e3
        barrier[name] += (passed[:, k].max() - last) / 1e3
        prev = passed[:, k]
    print("phase       median compute   arrival skew   barrier (last arrival → passed), µs per step")
    for p in PHASES:
        print(f"  {p:<10} {compute[p]:12.1f} {skew[p]:14.1f} {barrier[p]:12.1f}")
    print("producer: first copy of each weight of layers 0, 1, 13, 25 (µs, median / max over blocks):")
    for layer in (0, 1, 13, 25):
        cols = first_copy[:, 4 * layer : 4 * layer + 4]
        copies = "  ".join(f"{np.median(c) / 1e3:8.1f}/{c.max() / 1e3:8.1f}" for c in cols.T)
        qkv = np.median(passed[:, 5 * layer - 1]) / 1e3 if layer else 0.0
        print(f"  layer {layer:2d}: {copies}   consumers passed its qkv barrier at {qkv:8.1f}")


if __name__ == "__main__":
    main()
