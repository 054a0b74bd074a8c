"""Every decoder layer of a step in one persistent launch: cuda/layers.cu's decoder_layers (SPEC §5).

For steps of up to MAX_BATCH rows on a GPU with TMA (compute capability ≥ 9.0), for models whose K (dim,
q_dim, hidden_dim) are multiples of 64 and whose head dim and GQA group have an instance (`fits`). One
block per SM streams its share of every weight of every layer through a ring of shared-memory stages
while its consumer warps run the layers' phases (qkv + RoPE, attention, wo, w13 + SwiGLU, w2) with grid
barriers between them: the weights keep streaming across what are otherwise ~130 kernel boundaries of
a step. It computes what decoder.layers computes with the fused GEMVs (the same products, partial sums
combined in a different order). The embedding before it and the output head after it stay launches of
their own (decoder.step). `Tables` holds the device tables a model's launches read: a tensor map per
weight (4 per layer) and the addresses of the RMSNorm weights.
"""

from __future__ import annotations

import functools

import numpy as np

from . import kernels
from .copy import device_array
from .gemv import BULK_NEXT_BYTES, MAX_BATCH, device_limits, x_stride
from .launch import launch
from .tma import tensor_map

WARPS = 4  # consumer warps of a block (= WARPS of the instances); a producer warp follows. 4 leave each
# thread 255 registers (9 warps: 168, and spills); 8 measured no faster (H200, dev/layers_trace.py)
STAGE_CHUNKS = 16  # 64-column chunks of a stage (= LAYERS_CHUNKS)
STAGE_BYTES = 8 * 64 * STAGE_CHUNKS * 2  # 8 weight rows × 1 024 columns, bf16 (= LAYERS_STAGE)
MAX_STAGES = 16  # = LAYERS_MAX_STAGES (mbarriers in the header)
RING_STAGES = 6  # stages used where they fit: 6 measured 2–4 % faster than 12 and 8 (H200, B = 1)
MIN_STAGES = 4  # fewer leave too few bytes in flight per SM to stream at the copy rate
GROUPS = {128: 4, 64: 2}  # instances: head dim → query heads per kv head
TEMPLATES = {"layers.cu": tuple(f"decoder_layers<{dh}, {g}, {WARPS}>" for dh, g in GROUPS.items())}
HEADER = 16 * MAX_STAGES + 2 * WARPS * 32 * 8 + MAX_BATCH * WARPS * 4 + 16  # = LayersHeader::SCRATCH


TRACE_BARRIERS = 160  # = TRACE_BARRIERS in cuda/layers.cu


def trace_words(n_layers: int) -> int:
    """uint64 words per block of a traced launch: barrier arrival / passing times, the producer's first
    copy of each weight, its and the consumers' total waits."""
    return 2 * TRACE_BARRIERS + 4 * n_layers + 2


def fits(cfg) -> bool:
    """Whether decoder_layers runs this model: an instance for its head dim and GQA group, every K (dim,
    q_dim, hidden_dim) a multiple of 64 (whole 128-byte lines of the tensor maps)."""
    group = cfg.n_heads // cfg.n_kv_heads
    ks = (cfg.dim, cfg.q_dim, cfg.hidden_dim)
    return GROUPS.get(cfg.head_dim) == group and all(k % 64 == 0 for k in ks)


def scratch_bytes(b: int, cfg) -> int:
    """Shared memory for the staged x (h as bf16 hi and lo rows; o, u as bf16) or the attention merge."""
    x = max(b * x_stride(cfg.dim) * 4, b * x_stride(cfg.q_dim) * 2, b * x_stride(cfg.hidden_dim) * 2)
    merge = WARPS * (cfg.n_heads // cfg.n_kv_heads) * (cfg.head_dim + 2) * 4
    return -(-max(x, merge) // 16) * 16


def shared_bytes(b: int, cfg, stages: int) -> int:
    """Dynamic shared memory of a launch of b rows with `stages` stages (1 024 bytes of alignment slack)."""
    return 1024 + HEADER + scratch_bytes(b, cfg) + stages * STAGE_BYTES


def stages(b: int, cfg, limit: int) -> int:
    """Stages of the ring: RING_STAGES, or as many as the opt-in shared memory per block leaves."""
    return min(RING_STAGES, (limit - shared_bytes(b, cfg, 0)) // STAGE_BYTES)


@functools.cache
def available(device_id: int) -> bool:
    """Whether this GPU runs decoder_layers: TMA and mbarrier transaction counts (sm_90+)."""
    import cupy

    return int(cupy.cuda.Device(device_id).compute_capability) >= 90


@functools.cache
def _kernel(expr: str, device_id: int):
    fn = kernels.function("layers.cu", expr, TEMPLATES["layers.cu"])
    fn.max_dynamic_shared_size_bytes = device_limits(device_id)[2] - fn.shared_size_bytes
    return fn


def _weight_map(w, swiglu: bool) -> np.void:
    """The 4-D tensor map of a bf16 weight [N, K] the stages are loaded through (cuda/layers.cu): {64
    columns, N/2 row pairs, 2 parities, K/64 chunks}; SwiGLU's [w1; w3]: {64, F features, 2 halves, K/64}."""
    n, k = w.shape
    if swiglu:
        f = n // 2
        dims, strides = (64, f, 2, k // 64), (2 * k, 2 * k * f, 128)
    else:
        dims, strides = (64, n // 2, 2, k // 64), (4 * k, 2 * k, 128)
    return tensor_map(w.data.ptr, dims, strides, (64, 4, 2, STAGE_CHUNKS))


class Tables:
    """A model's device tables for decoder_layers: maps [L, 4] tensor maps (qkv, wo, w13, w2) as bytes,
    norms [L, 2] uint64 addresses of the attention and ffn RMSNorm weights (f32 [D])."""

    def __init__(self, weights, cfg):
        maps = []
        for lw in weights.decoder_layers:
            for w, swiglu in ((lw.wqkv, False), (lw.wo, False), (lw.w13, True), (lw.w2, False)):
                assert w.dtype == np.uint16 and w.flags.c_contiguous and w.data.ptr % 16 == 0, "bf16 weights"
                maps.append(_weight_map(w, swiglu))
        self.maps = device_array(np.frombuffer(b"".join(m.tobytes() for m in maps), np.uint8))
        assert self.maps.data.ptr % 64 == 0, "tensor maps must be 64-byte aligned"
        addr = [[lw.attention_norm.data.ptr, lw.ffn_norm.data.ptr] for lw in weights.decoder_layers]
        self.norms = device_array(np.array(addr, np.uint64))
        self.n_layers = len(weights.decoder_layers)


def decoder_layers(
    tables: Tables, cfg, buf, pdl: bool = False, prefetch=None, trace=None, flags: int = 0
) -> None:
    """All decoder layers of a step over buf (decoder.DecoderBuffers of b ≤ MAX_BATCH rows, laid out per
    row): h [b, D] f32 in place, at positions pos [b], KV caches through the per-row tables cache [L, C, 2]
    / ring [C]; q, o, u, workspace and barrier are its scratch. pdl: a programmatic dependent launch (its
    weights load while the kernel before it ends). prefetch: the output head's weights, whose first
    BULK_NEXT_BYTES the blocks warm in L2 once their own loads are out. Only where `available` and `fits`
    hold; AssertionError otherwise. trace: None, or a zeroed uint64 device array [SMs, trace_words(L)]
    that a launch fills with its timeline (dev/layers_trace.py)."""
    import cupy

    from . import ops

    b = buf.batch
    assert 1 <= b <= MAX_BATCH, f"decoder_layers takes 1 … {MAX_BATCH} rows, got {b}"
    assert fits(cfg), "no decoder_layers instance for this model's shapes"
    assert tables.n_layers == cfg.n_layers and buf.cache.shape[0] == cfg.n_layers
    device = cupy.cuda.Device().id
    sms, _, limit = device_limits(device)
    n_stages = stages(b, cfg, limit)
    assert n_stages >= MIN_STAGES, f"{b} rows leave {n_stages} stages of shared memory"
    splits = ops.attention_splits(b, cfg.n_kv_heads)
    group = cfg.n_heads // cfg.n_kv_heads
    row = ops.split_row(splits, group, cfg.head_dim)
    assert buf.workspace.shape == (b, cfg.n_kv_heads, row), "workspace: ops.attention_workspace(b, …)"
    fn = _kernel(f"decoder_layers<{cfg.head_dim}, {group}, {WARPS}>", device)
    next_bytes = 0 if prefetch is None else min(BULK_NEXT_BYTES, prefetch.nbytes) // 128 * 128
    args = (
        tables.maps, tables.norms, buf.cache, np.int32(buf.cache.shape[1]), buf.ring, buf.pos,
        buf.h, buf.q, buf.o, buf.u, buf.workspace, buf.barrier,
        np.int32(b), np.int32(cfg.n_layers), np.int32(cfg.dim), np.int32(cfg.n_kv_heads),
        np.int32(cfg.hidden_dim), np.int32(cfg.sliding_window), np.int32(splits), np.float32(cfg.norm_eps),
        np.float32(cfg.rope_theta), np.int32(n_stages),
        np.uint64(0) if prefetch is None else prefetch, np.uint64(next_bytes), trace, np.int32(flags),
    )  # fmt: skip
    smem = shared_bytes(b, cfg, n_stages)
    launch(fn, (sms,), ((WARPS + 1) * 32,), args, shared_mem=smem, pdl=pdl, cooperative=True)


__all__ = ["TEMPLATES", "Tables", "available", "decoder_layers", "fits", "shared_bytes", "stages"]
