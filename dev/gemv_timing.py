"""Timings of gemv (cuda/gemv.cu) at the decoder step's shapes (SPEC §5, §8), against cuBLAS.

Sizes are the official full-size model's (voxtral.testing.checkpoint.params("full")), and the weights
random BF16 of those shapes, made on the device in the layout of voxtral.gpu.weights.GpuWeights.
The whole step's GEMVs first: 26 × (qkv + wo + w13 + w2) + output projection (6.86 GB of weights)
captured as one graph, fused gemv (each launch warming the next one's first weights in L2, or not;
programmatic dependent launch (PDL), or not) against rms_norm + cuBLAS + silu_mul, over the floor at
the copy bandwidth. Then the whole decoder step as shipped, voxtral.gpu.decoder.step (embed, 26 ×
(gemv qkv, rope_qkv, attention_split, gemv wo, gemv w13, gemv w2), gemv output, argmax_advance) on
DecoderBuffers and KVCaches, captured with voxtral.gpu.graphs.capture like the decoder's own graphs,
PDL off and on, and a check that one replay of the PDL graph leaves every buffer and KV cache bitwise
equal to one replay of the plain graph from the same state.
Last, per shape and B ∈ {1, 8}: µs per call (median over REPS replays of a captured graph of launches
that rotate over ≥ MIN_COPIES weight copies, ≥ ROTATE_BYTES together, so L2 does not serve them), GB/s
of the fewest bytes the fused call must move (weights, x, norm weight, out) and % of the device-to-
device copy bandwidth measured in the same run. The cuBLAS column is cublasGemmEx alone (bf16 x; its
RMSNorm and SiLU·mul kernels come on top), its GB/s over the same bytes, so the columns compare times.
`--sweep` times other kernel shapes too and shows the per-shape table for the fastest whole step.
Run `python dev/gemv_timing.py [--sweep]` from the repository root on a GPU machine (dev/README.md).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # voxtral and dev/ from this checkout, installed or not

import numpy as np  # noqa: E402

from dev.kernel_timing import COPY_BYTES, copy_bandwidth_gbps, time_graph_us  # noqa: E402
from voxtral.config import ModelConfig  # noqa: E402
from voxtral.gpu import decoder, ops  # noqa: E402
from voxtral.gpu.gemm import gemm  # noqa: E402
from voxtral.gpu.gemv import (  # noqa: E402
    BULK_ONE_ROW,
    DEFAULT,
    ONE_ROW,
    WO,
    Bulk,
    Config,
    gemv,
    shared_bytes,
    step_configs,
)
from voxtral.gpu.graphs import capture  # noqa: E402
from voxtral.gpu.kv import KVCaches  # noqa: E402
from voxtral.gpu.weights import GpuLayer, GpuWeights  # noqa: E402
from voxtral.testing.checkpoint import params  # noqa: E402

ROTATE_BYTES = 200 << 20  # > 4× an H100's 50 MB L2
MIN_COPIES = 4
MIN_LAUNCHES = 16  # per captured graph
REPS = 50
STEP_REPS = 20
CFG = ModelConfig.from_dict(params("full")).decoder  # the official decoder
EPS = CFG.norm_eps
D, Q_DIM, QKV = CFG.dim, CFG.q_dim, CFG.q_dim + 2 * CFG.kv_dim
F, V, LAYERS = CFG.hidden_dim, CFG.vocab_size, CFG.n_layers
RING = decoder.LIVE_RING  # KV ring rows of each slot in the whole step: a live stream's first ring
CTX = 500  # position of the first timed step (each replay advances it by one)
# name, N, K, x bf16, RMSNorm prologue, epilogue (swiglu writes bf16 [B, F])
SHAPES = [
    ("qkv +norm", QKV, D, False, True, "store"),
    ("wo +=", D, Q_DIM, True, False, "add"),
    ("w13 +norm swiglu", 2 * F, D, False, True, "swiglu"),
    ("w2 +=", D, F, True, False, "add"),
    ("output +norm", V, D, False, True, "store"),
]
BATCHES = (1, 8)
# (kernel shape, warm the next weights in L2, programmatic dependent launch)
VARIANTS = [(DEFAULT, False, False), (DEFAULT, True, False), (DEFAULT, False, True), (DEFAULT, True, True),
            (ONE_ROW, False, True), (BULK_ONE_ROW, True, True)]  # fmt: skip
OTHERS = [
    Config(16, 8, 256, 1),
    Config(16, 4, 256, 1),
    Config(8, 8, 256, 1),
    Config(16, 8, 256, 0),
    Config(8, 8, 256, 0),
    Config(8, 12, 256, 1),
    Config(8, 6, 256, 1),
    Config(4, 12, 256, 1),
    Config(16, 3, 256, 1),
    Config(16, 6, 128, 1),
    Config(16, 6, 0, 1),
]
SWEEP = VARIANTS + [(c, False, False) for c in OTHERS]
ENC = ModelConfig.from_dict(params("full")).encoder  # the official encoder: a live tick's 4–8 rows
# the encoder layer's projections: x is the bf16 rms_norm output (its pending bias rules out the prologue)
ENCODER_SHAPES = [
    ("enc qkv", ENC.q_dim + 2 * ENC.kv_dim, ENC.dim, True, False, "store"),
    ("enc wo +=", ENC.dim, ENC.q_dim, True, False, "add"),
    ("enc w13 swiglu", 2 * ENC.hidden_dim, ENC.dim, True, False, "swiglu"),
    ("enc w2 +=", ENC.dim, ENC.hidden_dim, True, False, "add"),
]
ENCODER_BATCHES = (1, 4, 8)
# the plain kernels (other warp/unroll shapes did no better: 8w u4 qkv 8.7, 4w u6 9.9 µs at B = 4), then
# bulk-copy shapes with fixed shares and with tiles from a counter
# Bulk(8, 3, 20, 2) ran the encoder's projections of passes of ≤ 4 rows from 6dd3489 until a whole tick graph
# with it measured slower than with cuBLAS (voxtral/gpu/encoder.py, CHAIN_ROWS)
ENCODER_BULK = (BULK_ONE_ROW, Bulk(8, 4, 24), Bulk(16, 4, 32), Bulk(16, 3, 48, 2), Bulk(8, 3, 20, 2))
ENCODER_VARIANTS = [(c, False, True) for c in (DEFAULT, WO, ONE_ROW)] + [
    (c, dyn, True) for c in ENCODER_BULK for dyn in (False, True)
]


def label(variant) -> str:
    cfg, warm, pdl = variant
    if isinstance(cfg, Bulk):  # warm: tiles from a counter (schedule=)
        dyn = " dyn" if warm else ""
        return f"bulk {cfg.warps}w s{cfg.stages} {cfg.stage_kb}K x{cfg.per_sm}{dyn}{' +PDL' if pdl else ''}"
    return f"{cfg.warps}w u{cfg.unroll} s{cfg.sync}{' +L2' if warm else ''}{' +PDL' if pdl else ''}"


def rand_bf16(shape, scale: float = 1.0):
    """BF16 bit patterns of N(0, scale²) values, generated in slices to bound the f32 temporaries."""
    import cupy as cp

    out = cp.empty(shape, np.uint16)
    flat, step = out.reshape(-1), 1 << 26
    for i in range(0, flat.size, step):
        v = cp.random.standard_normal(min(step, flat.size - i), dtype=np.float32) * np.float32(scale)
        flat[i : i + v.size] = (v.view(np.uint32) >> 16).astype(np.uint16)
    return out


class Case:
    """Inputs of one shape at batch B: `copies` weight matrices, x, norm weight, out (+ cuBLAS buffers)."""

    def __init__(self, n: int, k: int, x_bf16: bool, norm: bool, epilogue: str, b: int):
        import cupy as cp

        self.n, self.k, self.b, self.norm, self.epilogue = n, k, b, norm, epilogue
        self.copies = max(MIN_COPIES, -(-ROTATE_BYTES // (2 * n * k)))
        self.ws = [rand_bf16((n, k), k**-0.5) for _ in range(self.copies)]
        xf = cp.random.standard_normal((b, k), dtype=np.float32)
        self.x = rand_bf16((b, k)) if x_bf16 else xf
        self.g = cp.random.standard_normal(k, dtype=np.float32) if norm else None
        swiglu = epilogue == "swiglu"
        self.out = (
            cp.empty((b, n // 2), np.uint16) if swiglu else cp.random.standard_normal((b, n), np.float32)
        )
        self.x_blas = self.x if x_bf16 else rand_bf16((b, k))
        self.out_blas = cp.zeros((b, n), np.float32)
        out_bytes = 2 * b * (n // 2) if swiglu else 4 * b * n * (2 if epilogue == "add" else 1)
        self.nbytes = 2 * n * k + self.x.nbytes + (4 * k if norm else 0) + out_bytes

    def ours(self, variant=VARIANTS[0]):
        (cfg, warm, pdl), x, ws, out, g, epi = variant, self.x, self.ws, self.out, self.g, self.epilogue
        bulk = isinstance(cfg, Bulk)
        nxt = (lambda i: ws[(i + 1) % len(ws)]) if warm else (lambda i: None)
        sched = (lambda i: schedules(len(ws))[i]) if warm and bulk else (lambda i: None)
        return lambda i: gemv(
            x, ws[i], out, norm_weight=g, eps=EPS, epilogue=epi, prefetch=nxt(i), config=cfg, pdl=pdl,
            schedule=sched(i),
        )  # fmt: skip

    def cublas(self):
        beta = 1.0 if self.epilogue == "add" else 0.0
        return lambda i: gemm(self.x_blas, self.ws[i], out=self.out_blas, beta=beta)

    def time(self, launch) -> float:
        launches = -(-MIN_LAUNCHES // self.copies) * self.copies
        return time_graph_us(launch, self.copies, launches, REPS)


def kernel_resources(cfg: Config) -> str:
    """Registers / local memory of the 4 instances the step uses (qkv, wo and w2, w13, output)."""
    import cupy as cp

    from voxtral.gpu import gemv as gv

    used = []
    for _name, _n, _k, x_bf16, norm, epi in SHAPES:
        expr = gv.name(gv.EPILOGUES[epi] + (epi == "swiglu"), norm, x_bf16, cfg)
        fn = gv._kernel(expr, gv.TEMPLATES["gemv.cu"] if cfg == DEFAULT else (expr,), cp.cuda.Device().id)
        used.append(f"{fn.num_regs}/{fn.local_size_bytes}")
    return f"{label((cfg, False, False)):<12} registers/local bytes per step instance: {' '.join(used)}"


def shared_memory() -> str:
    """Dynamic shared memory per block of each step shape at B = 1 and 8 (DEFAULT)."""
    cells = [
        f"{name} {shared_bytes(1, k, xb) / 1024:.1f}/{shared_bytes(8, k, xb) / 1024:.1f}"
        for name, _n, k, xb, _norm, _epi in SHAPES
    ]
    return "dynamic shared memory KiB (B=1/B=8): " + ", ".join(cells)


def shape_table(bw: float, variant=None) -> list[str]:
    """Per shape and B: ours against cuBLAS. variant None: the configs the decoder ships
    (voxtral.gpu.gemv.step_configs; a Bulk config with its tile counter), with PDL."""
    head = f"{'gemv µs':>8} {'GB/s':>6} {'%bw':>5} | {'cuBLAS µs':>9} {'GB/s':>6} {'%bw':>5} | {'speedup':>7}"
    lines = [f"gemv = {'as shipped (step_configs)' if variant is None else label(variant)}",
             f"{'shape':<18} {'B':>2} {'MB':>7} | {head} | config"]  # fmt: skip
    keys = ("qkv", "wo", "w13", "w2", "output")
    for (name, n, k, x_bf16, norm, epi), key in zip(SHAPES, keys, strict=True):
        for b in BATCHES:
            v = variant
            if v is None:
                cfg = step_configs(b)[key]
                v = (cfg, isinstance(cfg, Bulk), True)
            case = Case(n, k, x_bf16, norm, epi, b)
            ours, blas = case.time(case.ours(v)), case.time(case.cublas())
            gb_o, gb_b = case.nbytes / ours / 1e3, case.nbytes / blas / 1e3
            lines.append(
                f"{name:<18} {b:>2} {case.nbytes / 1e6:7.1f} | {ours:8.2f} {gb_o:6.0f} "
                f"{100 * gb_o / bw:5.1f} | {blas:9.2f} {gb_b:6.0f} {100 * gb_b / bw:5.1f} | "
                f"{blas / ours:6.2f}x | {label(v)}"
            )
            del case
    return lines


def sweep_table(bw: float, variants) -> list[str]:
    """µs (and % of copy bandwidth) of each variant on each case; ! = output differs from DEFAULT's."""
    import cupy as cp

    lines = [f"{'shape':<18} {'B':>2} " + " ".join(f"{label(v):>17}" for v in variants)]
    for name, n, k, x_bf16, norm, epi in SHAPES:
        for b in BATCHES:
            case = Case(n, k, x_bf16, norm, epi, b)
            cells = []
            for v in variants:
                diff = 0.0
                if epi != "add":  # the same inputs through DEFAULT and v must agree
                    case.ours()(0)
                    want = case.out.copy()
                    case.ours(v)(0)
                    got = case.out
                    if got.dtype == np.uint16:
                        want, got = ((a.astype(np.uint32) << 16).view(np.float32) for a in (want, got))
                    diff = float(cp.abs(got - want).max() / max(float(cp.abs(want).max()), 1e-30))
                us = case.time(case.ours(v))
                flag = "" if diff < 1e-2 else "!"
                cells.append(f"{us:8.2f} {100 * case.nbytes / us / 1e3 / bw:5.1f}%{flag}")
            lines.append(f"{name:<18} {b:>2} " + " ".join(f"{c:>17}" for c in cells))
            del case
    return lines


def encoder_table(bw: float, variants) -> list[str]:
    """µs per call (% of copy bandwidth) of the encoder's projections at a live tick's row counts, each
    variant (+PDL) against cuBLAS in the same run (cuBLAS: the GEMM alone; w13's silu_mul comes on top)."""
    lines = [f"{'shape':<16} {'B':>2} {'cuBLAS':>14} " + " ".join(f"{label(v):>17}" for v in variants)]
    for name, n, k, x_bf16, norm, epi in ENCODER_SHAPES:
        for b in ENCODER_BATCHES:
            case = Case(n, k, x_bf16, norm, epi, b)
            times = [case.time(case.cublas())] + [case.time(case.ours(v)) for v in variants]
            cells = [f"{us:7.2f} {100 * case.nbytes / us / 1e3 / bw:5.1f}%" for us in times]
            lines.append(f"{name:<16} {b:>2} {cells[0]:>14} " + " ".join(f"{c:>17}" for c in cells[1:]))
            del case
    return lines


def random_weights(cfg=CFG) -> GpuWeights:
    """Random decoder weights of cfg's shapes, made on the device, as GpuWeights.upload lays them out
    (fused wq|wk|wv and w1|w3, f32 norm weights; 6.86 GB at full size). The encoder's are left out."""
    import cupy as cp

    d, f = cfg.dim, cfg.hidden_dim

    def norm_w():
        return (1 + 0.1 * cp.random.standard_normal(d, dtype=np.float32)).astype(np.float32)

    layers = [
        GpuLayer(attention_norm=norm_w(), wqkv=rand_bf16((cfg.q_dim + 2 * cfg.kv_dim, d), d**-0.5),
                 qkv_bias=None, wo=rand_bf16((d, cfg.q_dim), cfg.q_dim**-0.5), wo_bias=None,
                 ffn_norm=norm_w(), w13=rand_bf16((2 * f, d), d**-0.5), w2=rand_bf16((d, f), f**-0.5),
                 w2_bias=None)
        for _ in range(cfg.n_layers)
    ]  # fmt: skip
    none = dict.fromkeys(("conv0_weight", "conv0_bias", "conv1_weight", "conv1_bias", "encoder_norm",
                          "adapter_w0", "adapter_w2"))  # fmt: skip
    return GpuWeights(**none, encoder_layers=[], tok_embeddings=rand_bf16((cfg.vocab_size, d), 0.5 * d**-0.5),
                      decoder_layers=layers, norm=norm_w())  # fmt: skip


def weight_bytes(w: GpuWeights) -> int:
    """Bytes of the decoder's weights: what one step must read at least."""
    arrays = [a for lw in w.decoder_layers for a in vars(lw).values()] + [w.tok_embeddings, w.norm]
    return sum(a.nbytes for a in arrays if a is not None)


class StepBuffers:
    def __init__(self, b: int):
        import cupy as cp

        self.h = cp.random.standard_normal((b, D), dtype=np.float32)
        self.o = rand_bf16((b, Q_DIM))  # stands in for the attention output
        self.qkv = cp.empty((b, QKV), np.float32)
        self.u = cp.empty((b, F), np.uint16)
        self.logits = cp.empty((b, V), np.float32)
        self.xb = cp.empty((b, D), np.uint16)  # cuBLAS path: normed x as bf16
        self.gu = cp.empty((b, 2 * F), np.float32)


def step_calls(w: GpuWeights, s: StepBuffers) -> list[tuple]:
    """The step's GEMV launches in order: (x, w, out, keyword arguments)."""
    calls = []
    for lw in w.decoder_layers:
        calls += [
            (s.h, lw.wqkv, s.qkv, dict(norm_weight=lw.attention_norm)),
            (s.o, lw.wo, s.h, dict(epilogue="add")),
            (s.h, lw.w13, s.u, dict(norm_weight=lw.ffn_norm, epilogue="swiglu")),
            (s.u, lw.w2, s.h, dict(epilogue="add")),
        ]
    return calls + [(s.h, w.tok_embeddings, s.logits, dict(norm_weight=w.norm))]


@functools.cache
def schedules(n: int):
    """Tile counters of n launch sites (Bulk variants with warm set take their tiles from them)."""
    import cupy as cp

    return cp.zeros((n, 2), np.int32)


def step_gemv(calls: list[tuple], variant) -> None:
    """Every launch warms the next one's weights (the last: the next step's first) when asked to
    (a Bulk config also takes its tiles from a counter, as the step does)."""
    cfg, warm, pdl = variant
    bulk = isinstance(cfg, Bulk)
    for i, (x, wt, out, kw) in enumerate(calls):
        nxt = calls[(i + 1) % len(calls)][1] if warm else None
        sched = schedules(len(calls))[i] if warm and bulk else None
        gemv(x, wt, out, eps=EPS, prefetch=nxt, config=cfg, pdl=pdl, schedule=sched, **kw)


def step_cublas(w: GpuWeights, s: StepBuffers) -> None:
    for lw in w.decoder_layers:
        gemm(ops.rms_norm(s.h, lw.attention_norm, EPS, out=s.xb), lw.wqkv, out=s.qkv)
        gemm(s.o, lw.wo, out=s.h, beta=1.0)
        ops.silu_mul(gemm(ops.rms_norm(s.h, lw.ffn_norm, EPS, out=s.xb), lw.w13, out=s.gu), out=s.u)
        gemm(s.u, lw.w2, out=s.h, beta=1.0)
    gemm(ops.rms_norm(s.h, w.norm, EPS, out=s.xb), w.tok_embeddings, out=s.logits)


def step_table(bw: float, variants, w: GpuWeights) -> tuple[list[str], dict]:
    """Lines, and {variant: µs at B=1 + µs at B=8} of the GEMVs of the whole step."""
    nbytes = weight_bytes(w)
    floor_us = nbytes / bw / 1e3
    lines = [f"whole step GEMVs ({LAYERS} layers + output projection, {nbytes / 1e9:.3f} GB of weights; "
             f"floor at the copy bandwidth {floor_us:.0f} µs), one graph:"]  # fmt: skip
    totals = dict.fromkeys(variants, 0.0)
    for b in BATCHES:
        s = StepBuffers(b)
        calls = step_calls(w, s)
        runs = [(f"gemv {label(v)}", v, lambda i, v=v, c=calls: step_gemv(c, v)) for v in variants]
        runs.append(("rms_norm+cuBLAS+silu_mul", None, lambda i, s=s: step_cublas(w, s)))
        for name, v, fn in runs:
            try:
                us = time_graph_us(fn, 1, 1, STEP_REPS)
            except Exception as e:  # the cuBLAS path needs ops.py, owned elsewhere; keep our numbers
                lines.append(f"  B={b} {name:<26} FAILED {type(e).__name__}: {str(e)[:120]}")
                if v is not None:
                    totals[v] = float("inf")
                continue
            if v is not None:
                totals[v] += us
            lines.append(f"  B={b} {name:<26} {us:9.1f} µs  {nbytes / us / 1e3:6.0f} GB/s  "
                         f"{100 * floor_us / us:5.1f}% of the floor")  # fmt: skip
    return lines, totals


def decoder_state(b: int, w: GpuWeights, ctx: int = CTX, rows: int = RING):
    """DecoderBuffers and KVCaches of b slots, every row serving its own open slot at position ctx
    (rings of `rows` rows, random keys), random tokens and audio embeddings: the state of a live step."""
    import cupy as cp

    buf = decoder.DecoderBuffers(CFG, b)
    kv = KVCaches(CFG.n_layers, b, CFG.n_kv_heads, CFG.head_dim)
    for c in range(b):
        kv.open(c, rows)
        for a in kv.arrays[c]:
            a[...] = rand_bf16(a.shape)
    buf.audio[...] = cp.random.standard_normal(buf.audio.shape, dtype=np.float32)
    buf.tokens[...] = cp.random.randint(0, CFG.vocab_size, b).astype(np.int32)
    buf.pos.fill(ctx)
    table, ring = kv.per_row(list(range(b)))  # row r serves slot r: the tables laid out per row
    buf.cache[:, :b] = cp.asarray(table)
    buf.ring[:b] = cp.asarray(ring)
    return buf, kv


def written(buf, kv: KVCaches) -> dict:
    """Every device buffer the step writes (or reads from the previous step), by name."""
    out = {name: getattr(buf, name) for name in decoder.ROW_ARRAYS}
    return out | {
        f"{kind}{c}": a for c, kv_c in enumerate(kv.arrays) for kind, a in zip("kv", kv_c, strict=True)
    }


def replay_us(graph, stream, reps: int = STEP_REPS) -> float:
    import cupy as cp

    start, stop, times = cp.cuda.Event(), cp.cuda.Event(), []
    graph.launch(stream)
    for _ in range(reps):
        start.record(stream)
        graph.launch(stream)
        stop.record(stream)
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop) * 1e3)
    return float(np.median(times))


def same_bits(a, b) -> bool:
    import cupy as cp

    return bool(cp.array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8)))


def rope_apart(step) -> None:
    """Run (capture) a step with rope_qkv as its own launch even where the qkv GEMV could do it."""
    real = decoder.fuses_rope
    decoder.fuses_rope = lambda *args: False
    try:
        step()
    finally:
        decoder.fuses_rope = real


def decoder_step_table(bw: float, w: GpuWeights) -> list[str]:
    """The shipped step (voxtral.gpu.decoder.step) µs, PDL off and on, and whether one replay of each
    leaves the same bits."""
    import cupy as cp

    floor_us = weight_bytes(w) / bw / 1e3
    lines = [f"whole decoder step as shipped (voxtral.gpu.decoder.step: embed, {LAYERS} × (qkv, rope_qkv, "
             f"attention_split from ctx {CTX}, wo, w13, w2), output, argmax_advance), one graph; "
             f"floor {floor_us:.0f} µs:"]  # fmt: skip
    for b in BATCHES:
        buf, kv = decoder_state(b, w)
        stream = cp.cuda.Stream(non_blocking=True)
        cp.cuda.Device().synchronize()  # state made on the legacy stream, which `stream` does not wait for
        state = (buf.tokens, buf.pos, buf.history)  # put back after the eager run, as Decoder._graph does
        runs = [functools.partial(decoder.step, w, CFG, buf, pdl=pdl) for pdl in (False, True)]
        runs.append(functools.partial(decoder.step, w, CFG, buf, pdl=True, fused=False))
        runs.append(functools.partial(rope_apart, functools.partial(decoder.step, w, CFG, buf, pdl=True)))
        with stream:
            made = [capture(stream, run, state) for run in runs]
        stream.synchronize()
        start = {n: a.copy() for n, a in written(buf, kv).items()}
        after = []
        for g in made:  # one replay of each from the same state
            for n, a in written(buf, kv).items():
                a[...] = start[n]
            cp.cuda.Device().synchronize()
            g.launch(stream)
            stream.synchronize()
            after.append({n: a.copy() for n, a in written(buf, kv).items()})
        differ = [n for n in after[0] if not same_bits(after[0][n], after[1][n])]
        check = "bitwise equal" if not differ else f"DIFFER: {', '.join(differ)}"
        tokens_equal = all(
            same_bits(after[0][n], after[2][n]) for n in ("tokens", "history") if n in after[0]
        )
        times = [replay_us(g, stream) for g in made]
        for name, us in zip(("plain", "PDL", "cuBLAS", "PDL, rope_qkv apart"), times, strict=True):
            lines.append(f"  B={b} {name:<6} {us:8.1f} µs  {100 * floor_us / us:5.1f}% of the floor")
        if b == 1:  # the rope epilogue of the bulk qkv GEMV against a separate rope_qkv launch
            rope_same = all(
                same_bits(after[1][n], after[3][n]) for n in ("tokens", "history") if n in after[1]
            )
            lines.append(
                f"  B={b} rope in the qkv GEMV saves {times[3] - times[1]:.1f} µs; tokens equal {rope_same}"
            )
        lines.append(
            f"  B={b} cuBLAS path (rms_norm + GEMMs + silu_mul, PDL elsewhere): tokens equal {tokens_equal}"
        )
        lines.append(f"  B={b} PDL saves {times[0] - times[1]:.1f} µs; PDL vs plain graph: {check}")
        del runs, made, start, after, buf, kv
    return lines


def main(argv: list[str] | None = None) -> None:
    import cupy as cp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", action="store_true", help="also time other kernel shapes")
    ap.add_argument("--encoder", action="store_true", help="only the encoder's projections at 1–8 rows")
    args = ap.parse_args(argv)
    variants = SWEEP if args.sweep else VARIANTS
    bw = copy_bandwidth_gbps()
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    print(f"{props['name'].decode()}: copy bandwidth {bw:.0f} GB/s (read + write, {COPY_BYTES >> 20} MiB)")
    if args.encoder:
        print("\n".join(encoder_table(bw, ENCODER_VARIANTS)))
        return
    for cfg in sorted({v[0] for v in variants}, key=str):
        print(kernel_resources(cfg))
    print(shared_memory())
    print()
    w = random_weights()
    lines, totals = step_table(bw, variants, w)
    print("\n".join(lines))
    print()
    print("\n".join(decoder_step_table(bw, w)))
    best = min(totals, key=totals.get)
    if args.sweep:
        print("\nper shape (µs, % of copy bandwidth):")
        print("\n".join(sweep_table(bw, variants)))
    print()
    print("\n".join(shape_table(bw, best if args.sweep else None)))


if __name__ == "__main__":
    main()
