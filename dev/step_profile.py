"""Where the decoder step's time goes, kernel by kernel (SPEC §5, §8), at batch sizes and positions.

The shipped step (voxtral.gpu.decoder.step on DecoderBuffers + KVCaches, random full-size weights as in
dev/gemv_timing.py) is captured as one graph per batch size B, the path the engine would keep for that
B (fused GEMVs up to gemv.MAX_BATCH rows, else cuBLAS), and replayed under a CUPTI kernel trace. torch's
profiler is the CUPTI front end here, so this script needs torch on the GPU machine (a measuring tool,
not a dependency of voxtral). Reports per B and position: the step's wall time (first kernel start →
last kernel end, median over the traced replays), each kernel family's µs per step beside the bytes it
must move at the copy rate (weights, KV rows, logits), and, for one middle layer, each kernel's start
and end after the layer's first kernel starts (PDL kernels start early and wait: read the ends).

    python dev/step_profile.py [--batch 1,64] [--ctx 500] [--reps 10] [--variants shipped,w2-plain]

--variants: the step again with other GEMV configs per shape (VARIANTS below), each from the same state.
"""

from __future__ import annotations

import argparse
import collections
import functools
import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from dev.gemv_timing import CFG, decoder_state, random_weights, replay_us, weight_bytes  # noqa: E402
from dev.kernel_timing import copy_bandwidth_gbps  # noqa: E402
from voxtral.gpu import decoder, gemv, ops  # noqa: E402
from voxtral.gpu.gemv import MAX_BATCH  # noqa: E402
from voxtral.gpu.graphs import capture  # noqa: E402
from voxtral.gpu.layers import Tables  # noqa: E402


def state(b: int, ctx: int, reps: int, w):
    """decoder_state of b slots at position ctx, rings of ctx + reps + 64 rows rounded up to 64 (an
    offline input's: no wrap while the replays advance)."""
    return decoder_state(b, w, ctx, -(-(ctx + reps + 64) // 64) * 64)


# --variants: name → the step's GEMV configs by rows (decoder.step_configs while that variant runs)
def _with(least: int = 1, **configs):
    """The shipped configs but those named (shape → config) from `least` rows up."""
    return lambda rows: gemv.step_configs(rows) | (configs if rows >= least else {})


FOUR = gemv.Bulk(16, 4, 48, x_regs=True)  # 4 stages of 48 KiB: won per launch, lost for every GEMV at once
VARIANTS = {
    "shipped": gemv.step_configs,
    "w2-plain": _with(2, w2=gemv.DEFAULT),  # before passes (2026-12-03)
    "w2-passes-4x32": _with(2, w2=gemv.Bulk(16, 4, 32, x_regs=True, x_passes=True)),  # shipped to 2026-12-03
    "w2-passes-all": _with(1, w2=gemv.BULK_W2),
    "qkv-4": _with(2, qkv=FOUR),  # qkv at 2–8 rows
    # w2 at 2–8 rows in passes of 6 chunks of 1 536 columns (24 KiB stages), 3 or 4 of them
    "w2-3x24": _with(2, w2=gemv.Bulk(16, 3, 24, x_regs=True, x_passes=True)),
    "w2-4x24": _with(2, w2=gemv.Bulk(16, 4, 24, x_regs=True, x_passes=True)),
    "output-4": _with(1, output=FOUR),
    "wo-w13-output-4": _with(1, wo=FOUR, w13=FOUR, output=FOUR),  # the GEMVs no attention follows, but w2
    # wo at one row in whole 64 KiB tiles (one copy a stage, x staged) instead of 8 row copies of 4 KiB
    "wo-whole-2": lambda rows: gemv.step_configs(rows) | ({"wo": gemv.Bulk(16, 2, 64)} if rows == 1 else {}),
    "wo-whole-3": lambda rows: gemv.step_configs(rows) | ({"wo": gemv.Bulk(16, 3, 64)} if rows == 1 else {}),
}
# --variants that change a constant instead (the shipped configs): name → {(module, name): value}
SETTINGS = {f"warm-{mb}": {(gemv, "BULK_NEXT_BYTES"): mb << 20} for mb in (0, 4, 16, 24)}  # L2 warming
SETTINGS["attn-light"] = {(decoder, "LIGHT_ATTENTION"): True}  # attention_split's light instance
# attention_split's splits per (query, kv head) from 32 queries × 8 kv heads up (shipped SPLIT_WIDE = 8: below
# SPLIT_WIDE_MIN_KEYS keys a window only split 0 of the 8 has keys, the other 7 blocks leave at once)
SETTINGS |= {f"split-{s}": {(ops, "SPLIT_WIDE"): s} for s in (1, 2, 4)}


def family(name: str) -> str:
    """A kernel's family: its function name without template arguments or parameters (cuBLAS: 'gemm')."""
    if "skinny_gemm" in name:
        return "skinny_gemm"
    if any(s in name for s in ("gemm", "Kernel2", "cutlass", "sm90_", "gemv2", "splitK", "nvjet")):
        return "cuBLAS gemm" if "splitKreduce" not in name else "cuBLAS split-K reduce"
    base = name.split("(")[0].split("<")[0]
    return base.replace("void ", "").strip()


def kernels_of(prof) -> list[tuple[str, float, float]]:
    """A torch profiler's CUDA kernels, copies and sets left out: [(name, start µs, end µs)] by start."""
    kernels = [
        (e.name, e.time_range.start, e.time_range.end)
        for e in prof.events()
        if e.device_type.name == "CUDA" and "memcpy" not in e.name.lower() and "memset" not in e.name.lower()
    ]
    return sorted(kernels, key=lambda k: k[1])


def gap_lines(kernels: list[tuple[str, float, float]], top: int, per: int = 1, what: str = "") -> list[str]:
    """The `top` largest sums of the gaps between consecutive kernels, by the families on either side:
    sum and count (each divided by `per`, e.g. the calls traced), median and max, µs."""
    import collections

    import numpy as np

    fams = [family(name) for name, _, _ in kernels]
    gaps: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for i in range(len(kernels) - 1):
        gaps[fams[i], fams[i + 1]].append(kernels[i + 1][1] - kernels[i][2])
    lines = [f"  gaps between kernels (µs{what}: sum; count{what}, median, max), the largest sums:"]
    for (a, b), g in sorted(gaps.items(), key=lambda kv: -sum(kv[1]))[:top]:
        lines.append(f"    {a[:24]:>24} → {b[:24]:<24} {sum(g) / per:9.1f} {len(g) / per:6.1f}"
                     f" {np.median(g):8.2f} {max(g):9.1f}")  # fmt: skip
    return lines


def trace(graph, stream, reps: int) -> list[list[tuple[str, float, float]]]:
    """reps replays under CUPTI → per replay [(kernel name, start µs, end µs)] in start order."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.init()
    graph.launch(stream)
    stream.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            graph.launch(stream)
            stream.synchronize()
    kernels = kernels_of(prof)
    per = len(kernels) // reps
    return [kernels[i * per : (i + 1) * per] for i in range(reps)]


def report(b: int, ctx: int, steps: list, bw: float, w, graph_us: float) -> list[str]:
    import cupy as cp  # noqa: F401

    walls = [s[-1][2] - s[0][1] for s in steps]
    fam: dict[str, list[float]] = collections.defaultdict(list)
    counts: dict[str, int] = collections.Counter()
    for s in steps:
        per: dict[str, float] = collections.defaultdict(float)
        for name, t0, t1 in s:
            per[family(name)] += t1 - t0
        for k, v in per.items():
            fam[k].append(v)
    for name, _, _ in steps[0]:
        counts[family(name)] += 1
    kv_bytes = 2 * CFG.n_layers * b * (ctx + 1) * CFG.n_kv_heads * CFG.head_dim * 2
    wb = weight_bytes(w)
    floor = (wb + kv_bytes) / bw / 1e3
    lines = [
        f"B={b} ctx={ctx}: graph replay {graph_us:.1f} µs (CUDA events), traced wall"
        f" {np.median(walls):.1f} µs;"
        f" floor {floor:.1f} µs (weights {wb / 1e9:.2f} GB + KV {kv_bytes / 1e9:.2f} GB at {bw:.0f} GB/s);"
        f" {len(steps[0])} kernels",
    ]
    for k in sorted(fam, key=lambda k: -np.median(fam[k])):
        t = float(np.median(fam[k]))
        lines.append(f"  {k:<28} {counts[k]:>4} launches {t:9.1f} µs/step  {t / counts[k]:7.2f} µs each")
    # one middle layer: kernels from the 13th qkv-family kernel on, as many as a layer has
    s = steps[len(steps) // 2]
    per_layer = (len(s) - 3) // CFG.n_layers
    first = 1 + per_layer * (CFG.n_layers // 2)
    base = s[first][1]
    lines.append(f"  layer {CFG.n_layers // 2} (µs after its first kernel starts: start → end, duration):")
    for name, t0, t1 in s[first : first + per_layer + 1]:
        lines.append(f"    {family(name)[:40]:<40} {t0 - base:8.2f} → {t1 - base:8.2f}  {t1 - t0:7.2f}")
    return lines


def main(argv: list[str] | None = None) -> None:
    import cupy as cp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="1,64", help="batch sizes, comma-separated")
    ap.add_argument("--ctx", default="500", help="positions, comma-separated")
    ap.add_argument("--reps", type=int, default=10)
    paths = "fused, persistent, cuBLAS, skinny, skinny-w13 (comma-separated); auto: fused up to 8 rows, else "
    paths += "the others"
    ap.add_argument("--path", default="auto", help=paths)
    ap.add_argument(
        "--variants", default="shipped", help=f"comma-separated, of {', '.join([*VARIANTS, *SETTINGS])}"
    )
    args = ap.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS) - set(SETTINGS)
    if unknown:
        ap.error(f"unknown variants: {', '.join(sorted(unknown))}")
    shipped = decoder.step_configs
    bw = copy_bandwidth_gbps()
    w = random_weights()
    for b in [int(x) for x in args.batch.split(",")]:
        for ctx in [int(x) for x in args.ctx.split(",")]:
            buf, kv = state(b, ctx, 6 * args.reps + 90, w)
            saved = [a.copy() for a in (buf.tokens, buf.pos, buf.history)]  # each variant from here
            stream = cp.cuda.Stream(non_blocking=True)
            cp.cuda.Device().synchronize()
            paths = args.path.split(",") if args.path != "auto" else (
                ["fused"] if b <= MAX_BATCH else ["cuBLAS", *decoder.SKINNY_PATHS])  # fmt: skip
            for path, variant in itertools.product(paths, args.variants.split(",")):
                decoder.step_configs = VARIANTS.get(variant, shipped)
                kept = {key: getattr(*key) for key in SETTINGS.get(variant, {})}
                for (module, name), value in SETTINGS.get(variant, {}).items():
                    setattr(module, name, value)
                # a workspace of the splits this variant's attention takes (SPLIT_WIDE may differ), zeroed
                buf.workspace = ops.attention_workspace(b, CFG.n_heads, CFG.n_kv_heads, CFG.head_dim)
                names = decoder.SKINNY_PATHS.get(path, frozenset())
                tables = Tables(w, CFG) if path == "persistent" else None
                run = functools.partial(decoder.step, w, CFG, buf, pdl=True,
                                        fused=path in ("fused", "persistent"), skinny=names,
                                        persistent=tables)  # fmt: skip
                with stream:
                    graph = capture(stream, run, (buf.tokens, buf.pos, buf.history))
                stream.synchronize()
                us = replay_us(graph, stream, 50)
                steps = trace(graph, stream, args.reps)
                print(f"[{path} {variant}] " + "\n".join(report(b, ctx, steps, bw, w, us)), flush=True)
                del graph
                decoder.step_configs = shipped
                for (module, name), value in kept.items():
                    setattr(module, name, value)
                for a, v in zip((buf.tokens, buf.pos, buf.history), saved, strict=True):
                    a[...] = v
            del buf, kv
            cp.get_default_memory_pool().free_all_blocks()


if __name__ == "__main__":
    main()
