"""`voxtral bench --gemv` (GPU): the decode step's GEMVs against cuBLAS in the same run (issue #14).

Per decode GEMV (qkv with the RMSNorm prologue, wo +=, w13 with the SwiGLU epilogue, w2 +=, the output
head with the final norm) at B = 1 and 8 rows of x: µs per launch of our fused kernel in the config the
step's fused path takes at that B (gemv.step_configs; tile counters, PDL and L2 warming as in the step;
qkv stores f32 here where the B = 1 step turns and stores q, k, v in the same kernel; at B = 8 the
decoder keeps whichever of its fused and cuBLAS paths is faster: graphs.fastest) and of a cuBLAS GEMM
(gemm.gemm: bf16 x, f32 out, += where the step adds; cuBLAS does neither the norm nor the SwiGLU, so its
figures leave them out), over the model's own weights: one CUDA graph of one launch per layer (the
output head: OUTPUT_LAUNCHES launches of its one matrix), inputs random, the median of REPLAYS replays.
Then the step's whole chain of 4·layers + 1 GEMVs at B = 1 in one graph, ours against cuBLAS GEMVs:
what a decode step of plain cuBLAS products costs on this GPU (issue #14's "cuBLAS graph"; the shipped
step adds attention, embed and argmax to its own chain).
"""

from __future__ import annotations

import numpy as np

OUTPUT_LAUNCHES = 4
REPLAYS = 9
BATCHES = (1, 8)
SHAPES = ("qkv", "wo", "w13", "w2", "output")


def _calls(w, cfg, b: int) -> dict[str, list]:
    """Per shape, the step's launches at b rows as (x, weight, out, norm weight, epilogue)."""
    import cupy

    d, q, f = cfg.dim, cfg.q_dim, cfg.hidden_dim
    h = cupy.random.standard_normal((b, d), dtype=np.float32)
    o, u = (_bf16(cupy.random.standard_normal((b, n), dtype=np.float32) * 0.1) for n in (q, f))
    qkv = cupy.empty((b, q + 2 * cfg.kv_dim), np.float32)
    gu, logits = cupy.empty((b, f), np.uint16), cupy.empty((b, cfg.vocab_size), np.float32)
    layers = w.decoder_layers
    return {
        "qkv": [(h, lw.wqkv, qkv, lw.attention_norm, "store") for lw in layers],
        "wo": [(o, lw.wo, h, None, "add") for lw in layers],
        "w13": [(h, lw.w13, gu, lw.ffn_norm, "swiglu") for lw in layers],
        "w2": [(u, lw.w2, h, None, "add") for lw in layers],
        "output": [(h, w.tok_embeddings, logits, w.norm, "store")] * OUTPUT_LAUNCHES,
    }


def _bf16(x):
    """bf16 bit patterns (uint16) of f32 x, truncated."""
    return (x.view(np.uint32) >> 16).astype(np.uint16)


def _ours(calls: list, configs: list, eps: float):
    """Run the calls as the step's fused GEMV launches (configs[i] for call i)."""
    import cupy

    from ..gpu.gemv import Bulk, gemv

    sched = cupy.zeros((len(calls), 2), np.int32)  # one tile counter per launch site

    def run():
        for i, ((x, wt, out, g, epi), cfg) in enumerate(zip(calls, configs, strict=True)):
            nxt = calls[i + 1][1] if i + 1 < len(calls) and isinstance(cfg, Bulk) else None
            gemv(x, wt, out, norm_weight=g, eps=eps, epilogue=epi, config=cfg, pdl=True, schedule=sched[i],
                 prefetch=nxt)  # fmt: skip

    return run


def _cublas(calls: list):
    """Run the calls as cuBLAS GEMMs (bf16 x: f32 inputs are taken as their bf16 view's copy)."""
    import cupy

    from ..gpu.gemm import gemm

    outs, xs = {}, {}
    for x, wt, _, _, _ in calls:  # cuBLAS takes bf16 x; an f32 out of the full width of each weight
        if x.dtype == np.float32 and id(x) not in xs:
            xs[id(x)] = _bf16(x)
        outs.setdefault((x.shape[0], wt.shape[0]), cupy.zeros((x.shape[0], wt.shape[0]), np.float32))

    def run():
        for x, wt, _, _, epi in calls:
            xb = xs.get(id(x), x)
            gemm(xb, wt, out=outs[x.shape[0], wt.shape[0]], beta=1.0 if epi == "add" else 0.0)

    return run


def _replay_us(backend, run) -> float:
    """µs of one replay of `run` captured as a CUDA graph (median of REPLAYS, after one unrecorded)."""
    from ..gpu.graphs import capture
    from ..gpu.launch import launch_graph
    from .streams import gpu_timer

    with backend.cuda_stream:
        graph = capture(backend.cuda_stream, run)
    backend.cuda_stream.synchronize()
    launch_graph(graph, backend.cuda_stream)
    times = []
    for _ in range(REPLAYS):
        with gpu_timer(backend) as elapsed:
            launch_graph(graph, backend.cuda_stream)
        times.append(1000 * elapsed())
    return float(np.median(times))


def gemv_report(model) -> dict:
    """{"shapes": [{shape, batch, config, ours_us, cublas_us}], "chain_us": {ours, cublas}} (module doc)."""
    from ..gpu.gemv import step_configs

    backend, cfg = model.backend, model.config.decoder
    w, eps = backend.weights, cfg.norm_eps
    rows, chains = [], {}
    for b in BATCHES:
        calls, configs = _calls(w, cfg, b), step_configs(b)
        for name in SHAPES:
            c = calls[name]
            ours = _replay_us(backend, _ours(c, [configs[name]] * len(c), eps)) / len(c)
            blas = _replay_us(backend, _cublas(c)) / len(c)
            rows.append({"shape": name, "batch": b, "config": str(configs[name]), "ours_us": ours,
                         "cublas_us": blas})  # fmt: skip
        if b == 1:  # the step's order: per layer qkv, wo, w13, w2; then the output head once
            chain = [calls[n][i] for i in range(cfg.n_layers) for n in SHAPES[:4]] + calls["output"][:1]
            kinds = [n for _ in range(cfg.n_layers) for n in SHAPES[:4]] + ["output"]
            chains["ours"] = _replay_us(backend, _ours(chain, [configs[k] for k in kinds], eps))
            chains["cublas"] = _replay_us(backend, _cublas(chain))
    return {"shapes": rows, "chain_us": chains}


def gemv_lines(report: dict) -> list[str]:
    """Table lines of gemv_report."""
    lines = ["       decode GEMVs, µs per launch, ours (the step's fused kernel) vs cuBLAS, same run:"]
    for b in BATCHES:
        rows = [r for r in report["shapes"] if r["batch"] == b]
        mark = lambda r: "" if r["ours_us"] < r["cublas_us"] else " !"  # noqa: E731
        cells = [f"{r['shape']} {r['ours_us']:.1f}/{r['cublas_us']:.1f}{mark(r)}" for r in rows]
        lines.append(f"         B={b}: " + ", ".join(cells) + "   (! = cuBLAS faster)")
    c = report["chain_us"]
    if c:
        lines.append(
            f"         B=1 whole chain of the step's GEMVs in one graph: ours {c['ours'] / 1000:.3f} ms, "
            f"cuBLAS {c['cublas'] / 1000:.3f} ms"
        )
    return lines
