"""Prototype timing (issue #14): the B = 1 decoder step's 105 GEMVs as one persistent launch
(dev/gemv_chain.cu) against the shipped chain of separate bulk GEMV launches (PDL, tile counters, L2 tail
warming) in one CUDA graph, on random full-size weights. Attention, RoPE, embed and argmax are left out
of both: wo reads a fixed attention output. Prints µs per chain (interleaved replays), the floor at the
copy bandwidth, and whether both leave the same bits in h, u and the logits.

    python dev/chain_timing.py [--stages 3]

Measured on an H200 (2026-12-01; floor 1641 µs at the 4179 GB/s copy rate): separate launches 1831 µs
(89.6 %), the persistent chain 2132 (static tile shares; 2162 with tile counters, 2126 polling with
__nanosleep), and the chain with its waits removed (wrong results, timing only) 1858. All three leave
the same bits. So the launch boundaries of the PDL chain cost nothing that a persistent kernel would
save: its grid barrier (last block done → last block released) took 1.9–3.0 µs per op, x staging
0.7–1.2. What stays over the floor is inside the ops: per layer, from the last block's release to its
end, qkv 10.1 µs (9.0 at the copy rate), wo 9.7 (6.0), w13 27.5 (27.0), w2 16.3 (13.5): the two ops
whose stages are 8 row copies (kc < K: wo, w2) lose most, the whole-tile ones are near the floor.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OP = np.dtype([("x", "<u8"), ("g", "<u8"), ("w", "<u8"), ("out", "<u8"), ("N", "<i4"), ("K", "<i4"),
               ("epi", "<i4"), ("x_bf16", "<i4"), ("kc", "<i4"), ("tps", "<i4"), ("p0", "<i4"),
               ("p1", "<i4")])  # fmt: skip
STORE, ADD, SWIGLU_BF16 = 0, 1, 3


def source() -> str:
    from voxtral.gpu import kernels

    return kernels.source("gemv.cu") + (ROOT / "dev/gemv_chain.cu").read_text()


def main(argv=None) -> None:
    import cupy as cp

    import dev.gemv_timing as gt
    from voxtral.gpu import gemv as gv
    from voxtral.gpu.graphs import capture

    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", type=int, default=3)
    args = ap.parse_args(argv)
    cfg, bulk = gt.CFG, gv.BULK_ONE_ROW
    w = gt.random_weights()
    rng = np.random.default_rng(0)
    h0 = cp.asarray(rng.standard_normal((1, cfg.dim)).astype(np.float32))
    h = h0.copy()
    qkv = cp.zeros((1, cfg.q_dim + 2 * cfg.kv_dim), np.float32)
    o = gt.rand_bf16((1, cfg.q_dim))
    u = cp.zeros((1, cfg.hidden_dim), np.uint16)
    logits = cp.zeros((1, cfg.vocab_size), np.float32)

    # (x, norm weight, w, out, epilogue, x bf16) in step order
    ops = []
    for lw in w.decoder_layers:
        ops += [(h, lw.attention_norm, lw.wqkv, qkv, STORE, 0), (o, None, lw.wo, h, ADD, 1),
                (h, lw.ffn_norm, lw.w13, u, SWIGLU_BF16, 0), (u, None, lw.w2, h, ADD, 1)]  # fmt: skip
    ops.append((h, w.norm, w.tok_embeddings, logits, STORE, 0))
    table = np.zeros(len(ops), OP)
    stage_stride, max_s = 0, 0
    for i, (x, g, wt, out, epi, xb) in enumerate(ops):
        n, k = wt.shape
        kc, tps = bulk.layout(k)
        table[i] = (x.data.ptr, 0 if g is None else g.data.ptr, wt.data.ptr, out.data.ptr, n, k, epi, xb, kc,
                    tps, 0, 0)  # fmt: skip
        stage_stride = max(stage_stride, bulk.stage_bytes(k))
        max_s = max(max_s, (k + 63) // 64 * 64 + 32)
    stage_stride = -(-stage_stride // 128) * 128
    table_dev = cp.asarray(table.view(np.uint8))
    warps, stages = bulk.warps, args.stages
    x_bytes = 2 * 1 * max_s * 2
    head = 256 + 2 * warps * 256 + 32 * warps
    smem = -(-(head + x_bytes) // 128) * 128 + stages * stage_stride
    names = {dyn: f"gemv_chain<{warps}, {stages}, {'true' if dyn else 'false'}>" for dyn in (False, True)}
    mod = cp.RawModule(code=source(), options=("-std=c++17",), name_expressions=list(names.values()))
    fns = {dyn: mod.get_function(n) for dyn, n in names.items()}
    for fn in fns.values():
        fn.max_dynamic_shared_size_bytes = smem
    sms = cp.cuda.Device().attributes["MultiProcessorCount"]
    done, chain_sched = cp.zeros(len(ops) + 1, np.uint32), cp.zeros(len(ops), np.int32)
    print(f"chain: {len(ops)} ops, grid {sms} × {(warps + 1) * 32} threads, {smem} B shared memory, "
          f"stage stride {stage_stride} B × {stages}")  # fmt: skip

    def chain(dynamic: bool, mode: int = 0, stamps=None):
        stamps = np.uint64(0) if stamps is None else stamps
        a = (table_dev, np.int32(len(ops)), np.int32(1), np.float32(gt.EPS), done, chain_sched,
             np.int32(x_bytes), np.int32(stage_stride), np.int32(mode), stamps)  # fmt: skip
        fns[dynamic]((sms,), ((warps + 1) * 32,), a, shared_mem=smem)

    runs = {"separate": None, "chain": lambda: chain(False), "chain dyn": lambda: chain(True),
            "chain sleep": lambda: chain(False, 1), "chain NO WAIT": lambda: chain(False, 2)}  # fmt: skip

    sched = cp.zeros((len(ops), 2), np.int32)

    def separate():
        for i, (x, g, wt, out, epi, _) in enumerate(ops):
            nxt = ops[i + 1][2] if i + 1 < len(ops) else None
            kind = {STORE: "store", ADD: "add", SWIGLU_BF16: "swiglu"}[epi]
            gv.gemv(x, wt, out, norm_weight=g, eps=gt.EPS, epilogue=kind, config=bulk, pdl=True,
                    schedule=sched[i], prefetch=nxt)  # fmt: skip

    runs["separate"] = separate
    results = {}
    for label, run in runs.items():
        h[...] = h0
        cp.cuda.Device().synchronize()
        run()
        cp.cuda.Device().synchronize()
        results[label] = [cp.asnumpy(a) for a in (h, u, logits)]
        left = int(cp.count_nonzero(done)) + int(cp.count_nonzero(chain_sched))
        assert left == 0, f"{label}: {left} counters left set"
    for label in ("chain", "chain dyn", "chain sleep"):
        pairs = list(zip(results["separate"], results[label], strict=True))
        same = [np.array_equal(a.view(np.uint8), b.view(np.uint8)) for a, b in pairs]
        print(f"{label}: same bits as separate in h, u, logits: {same}; "
              f"finite {np.isfinite(results[label][2]).all()}")  # fmt: skip

    stamps = cp.zeros((sms, len(ops), 3), np.uint64)
    for _ in range(3):  # the last of 3 eager runs, timestamped per block and op
        chain(False, 0, stamps)
    cp.cuda.Device().synchronize()
    st = cp.asnumpy(stamps).astype(np.int64)
    st -= st[:, 0, 0].min()
    kinds = ["qkv", "wo", "w13", "w2"] * len(w.decoder_layers) + ["output"]
    per = {}
    for d, kind in enumerate(kinds):
        rel, staged, fin = st[:, d, 0], st[:, d, 1], st[:, d, 2]
        prev_end = st[:, d - 1, 2].max() if d else 0
        per.setdefault(kind, []).append((rel.max() - prev_end, (staged - rel).mean(), fin.max() - rel.max(),
                                         fin.max() - fin.min()))  # fmt: skip
    print("per op, µs (median over layers): last block done → last released | x staging | last released → "
          "last done | spread of done")  # fmt: skip
    for kind, rows in per.items():
        a = np.median(np.array(rows, float), axis=0) / 1e3
        print(f"  {kind:7s} {a[0]:6.2f} | {a[1]:6.2f} | {a[2]:7.2f} | {a[3]:6.2f}")
    print(f"  whole chain {(st[:, -1, 2].max()) / 1e3:.1f} µs from the first release")
    stream = cp.cuda.Stream(non_blocking=True)
    state = (h,)
    graphs = {}
    with stream:
        for label, run in runs.items():
            graphs[label] = capture(stream, run, state)
    stream.synchronize()
    nbytes = sum(wt.nbytes for _, _, wt, _, _, _ in ops)
    copy_gbps = gt.copy_bandwidth_gbps()
    floor = nbytes / copy_gbps / 1e3
    times = {k: [] for k in graphs}
    for _ in range(4):
        for label, g in graphs.items():
            h[...] = h0
            times[label].append(gt.replay_us(g, stream, 30))
    print(f"{nbytes / 1e9:.3f} GB of weights, floor {floor:.0f} µs at {copy_gbps:.0f} GB/s")
    for label, ts in times.items():
        med = float(np.median(ts))
        print(f"  {label:9s} {med:8.1f} µs  {100 * floor / med:5.1f}% of the floor   rounds "
              + " ".join(f"{t:.1f}" for t in ts))  # fmt: skip


if __name__ == "__main__":
    main()
