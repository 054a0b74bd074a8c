"""Where the offline encoder's time goes (SPEC §3, §4, §8): conv stem + 32 layers + adapter, kernel by kernel.

N inputs of S seconds of random audio (log-mel of noise, offline padding, on the device time-major as
the engine's GpuMel gives it; --host-mel: a host array, uploaded by the conv stem) go through the shipped
GPU encoder (`backend.encoder(N, chunk)`, its captured offline passes) of a checkpoint, as a
transcription's encode does. Reports per (N, chunk, variant): the wall time of one `encode` call (CUDA
events, median over reps, after a warm-up call that captures the graphs), then a CUPTI kernel trace of
one call (torch's profiler: a measuring tool on the GPU machine, not a dependency of voxtral): each
kernel family's ms an input, the GEMMs by projection (qkv, wo, w13, w2, others) with their TFLOP/s, the
sum of kernel times against the wall (the rest is gaps: host work, uploads, launches between passes),
and the largest gaps between kernels by the pair of kernels around them.

    python dev/encoder_profile.py CHECKPOINT [--files 1,8] [--seconds 60] [--chunk 1024] [--reps 5]
        [--variants shipped,chain] [--host-mel] [--host-profile]

--variants: chain = every pass's own kernels as programmatic dependent launches (encoder.CHAIN_ALL); f32 =
f32 qkv and w1|w3 outputs (encoder.BF16_ACTIVATIONS off); untuned = no cuBLASLt tuning (TUNED_MIN_ROWS).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import functools
import io
import pstats
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from dev.step_profile import family, gap_lines, kernels_of  # noqa: E402


def projection(kernels: list[str], i: int) -> str:
    """Which projection the cuBLAS GEMM kernels[i] is, from the families around it (encoder.layer's order:
    rms_norm, qkv, rope_qkv, attention, wo, rms_norm, w13, silu_mul, w2)."""
    gemm = ("cuBLAS gemm", "cuBLAS split-K reduce")
    before = next((k for k in reversed(kernels[:i]) if k not in gemm), "")
    after = next((k for k in kernels[i + 1 :] if k not in gemm), "")
    if before.startswith("attention"):
        return "wo"
    before, after = before.removesuffix("_bf16"), after.removesuffix("_bf16")  # bf16-input kernels
    if before == "silu_mul":
        return "w2"
    if before == "rms_norm" and after == "rope_qkv":
        return "qkv"
    if before == "rms_norm" and after == "silu_mul":
        return "w13"
    return "other"


VARIANTS = {  # name → constants of voxtral.gpu.encoder
    "shipped": {},
    "chain": {"CHAIN_ALL": True},
    "f32": {"BF16_ACTIVATIONS": False},  # qkv and w1|w3 GEMMs write f32
    "untuned": {"TUNED_MIN_ROWS": None},  # cublasGemmEx's default algorithm at every shape
    "f32-untuned": {"BF16_ACTIVATIONS": False, "TUNED_MIN_ROWS": None},  # as before 2026-12-03
    "uncut": {"GRAPH_CUTS": ()},  # each pass one graph (as before the chains of GRAPH_CUTS)
    "cuts-fine": {"GRAPH_CUTS": (1, 2, 4, 8, 16)},  # a geometric chain from one layer (not yet timed)
    "cuts-layer": {"GRAPH_CUTS": tuple(range(1, 32))},  # a graph a layer (not yet timed)
    # a live split pass's attention_split blocks per (query, head) (shipped: the decoder's policy)
    **{f"live-split-{s}": {"LIVE_SPLITS": s} for s in (4, 8, 12)},
    "live-split-auto": {"LIVE_SPLITS": None},  # the decoder's rule (shipped before 2026-12-03, sixth session)
    "live-split-6x128": {"LIVE_SPLITS": 6, "LIVE_SPLIT_KEYS": 128},
    "tuned-4": {"TUNED_MIN_ROWS": 4},  # live ticks' GEMMs tuned too (bitwise the default's output)
}


def encode(enc, n: int, mel: np.ndarray) -> list:
    """n new slots of `enc` each encode all of mel [M, T], then leave: one offline call."""
    slots = [enc.join() for _ in range(n)]
    out = enc.encode([(s, mel) for s in slots])
    for s in slots:
        enc.leave(s)
    return out


def main(argv: list[str] | None = None) -> None:
    import cupy as cp
    import torch
    from torch.profiler import ProfilerActivity, profile

    import voxtral
    from voxtral import audio as audio_io

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--files", default="1,8", help="inputs encoded together, comma-separated")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--chunk", default="1024", help="positions per slot and pass, comma-separated")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--host-mel", action="store_true", help="feed host log-mel (uploaded per call)")
    ap.add_argument("--host-profile", action="store_true", help="also cProfile one call's host side")
    ap.add_argument("--variants", default="shipped", help=f"comma-separated, of {', '.join(VARIANTS)}")
    args = ap.parse_args(argv)
    model = voxtral.load(args.checkpoint, device="cuda")
    cfg, backend, schedule = model.config, model.backend, model.schedule
    e = cfg.encoder
    rng = np.random.default_rng(0)
    samples = (0.1 * rng.standard_normal(int(args.seconds * 16000))).astype(np.float32)
    spt = cfg.audio.samples_per_token
    mel = audio_io.log_mel(audio_io.pad_offline(samples, schedule.n_left, 0, spt), cfg.audio)
    positions = mel.shape[1] // 2
    if not args.host_mel:  # [M, T] view of a time-major device array, as GpuMel.many returns
        mel = cp.asarray(np.ascontiguousarray(mel.T)).T
    # FLOPs per position of each projection (2 per multiply-add)
    per_pos = {"qkv": 2 * e.dim * (e.q_dim + 2 * e.kv_dim), "wo": 2 * e.q_dim * e.dim,
               "w13": 2 * e.dim * 2 * e.hidden_dim, "w2": 2 * e.hidden_dim * e.dim}  # fmt: skip
    torch.cuda.init()
    from voxtral.gpu import encoder as encoder_module

    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants: {', '.join(sorted(unknown))}")
    runs = [(int(n), int(c), v) for n in args.files.split(",") for c in args.chunk.split(",")
            for v in args.variants.split(",")]  # fmt: skip
    for n, chunk, variant in runs:
        kept = {name: getattr(encoder_module, name) for name in VARIANTS[variant]}
        for name, value in VARIANTS[variant].items():
            setattr(encoder_module, name, value)
        enc = backend.encoder(n, chunk=chunk)
        stream = enc.cuda_stream

        call = functools.partial(encode, enc, n, mel)
        call()
        stream.synchronize()
        walls = []
        for _ in range(args.reps):
            t0, t1 = cp.cuda.Event(), cp.cuda.Event()
            t0.record(stream)
            call()
            t1.record(stream)
            t1.synchronize()
            walls.append(cp.cuda.get_elapsed_time(t0, t1))
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            call()
            stream.synchronize()
        if args.host_profile:  # where the host's time goes in one call (the GPU waits for it at the start)
            host = cProfile.Profile()
            host.enable()
            call()
            host.disable()
            stream.synchronize()
            text = io.StringIO()
            pstats.Stats(host, stream=text).sort_stats("cumulative").print_stats(25)
            print(text.getvalue())
        ks = kernels_of(prof)
        fams = [family(name) for name, _, _ in ks]
        per: dict[str, float] = collections.defaultdict(float)
        count: dict[str, int] = collections.Counter()
        proj: dict[str, float] = collections.defaultdict(float)
        for i, (f, (_, a, b)) in enumerate(zip(fams, ks, strict=True)):
            per[f] += b - a
            count[f] += 1
            if f.startswith("cuBLAS"):
                proj[projection(fams, i)] += b - a
        span = (ks[-1][2] - ks[0][1]) / 1000
        busy = sum(per.values()) / 1000
        wall = float(np.median(walls))
        print(
            f"[{variant}] N={n} x {args.seconds:g} s ({positions} positions), chunk {chunk}:"
            f" encode {wall:.2f}"
            f" ms ({wall / n:.2f} ms an input; min {min(walls):.2f}); traced call: first kernel → last"
            f" {span:.2f} ms, kernels busy {busy:.2f} ms, {len(ks)} kernels",
            flush=True,
        )
        for f in sorted(per, key=lambda f: -per[f]):
            print(f"  {f:<32} {count[f]:>5} launches {per[f] / 1000 / n:8.3f} ms an input"
                  f" {per[f] / count[f]:8.1f} µs each")  # fmt: skip
        for p in ("qkv", "wo", "w13", "w2", "other"):
            if proj.get(p):
                flops = per_pos.get(p, 0) * positions * n * e.n_layers
                rate = f"{flops / (proj[p] * 1e-6) / 1e12:6.0f} TFLOP/s" if flops else ""
                print(f"  gemm {p:<5} {proj[p] / 1000 / n:8.3f} ms an input {rate}")
        print("\n".join(gap_lines(ks, 8)))
        del enc
        cp.get_default_memory_pool().free_all_blocks()
        for name, value in kept.items():
            setattr(encoder_module, name, value)


if __name__ == "__main__":
    main()
