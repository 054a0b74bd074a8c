"""Launcher of cuda/gemv.cu: the decoder step's matrix-vector products with their neighbours fused.

out = epilogue(prologue(x) · wᵀ) for x [B, K] (B ≤ 8 streams) and w [N, K] bf16 (SPEC §5, §8):
prologue none or RMSNorm (x f32; norm_weight g [K] f32), epilogue "store" (out f32 [B, N] = y),
"add" (out f32 [B, N] += y, the residual) or "swiglu" (w = [w1; w3] with 2F rows; out [B, F] f32 or
bf16 = silu(y[:, :F]) ⊙ y[:, F:]). No allocation and no host sync: the launch goes on CuPy's current
stream and can be captured in a CUDA graph. BF16 tensors are uint16 arrays of bit patterns.
pdl=True launches it as a programmatic dependent launch (voxtral/gpu/launch.py): its first weight loads
overlap the end of the previous kernel, and the next PDL kernel may start as soon as it has begun.
A Bulk config runs gemv_bulk (sm_90+: weights streamed into shared memory by the TMA unit, tiles taken
from a per-launch-site counter `schedule`); on older GPUs the plain kernel runs in its place.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from dataclasses import dataclass

import numpy as np

from voxtral.gpu import kernels
from voxtral.gpu.launch import launch

BF16 = np.uint16
MAX_BATCH = 8  # rows of x: the mma's m16 side holds their bf16 high and low halves
TILE_ROWS = 8  # weight rows per tile (SWIGLU: 4 gate + 4 up rows)
SMEM_RESERVED = 1024  # shared memory the driver keeps per block
BULK_HEADER = 256  # gemv_bulk's shared memory before its partial sums: mbarriers, then stage work slots
NEXT_BYTES = 12 << 20  # of the next launch's weights warmed in L2 as a launch runs out of loads (L2: 50 MB)
# The same for gemv_bulk, once a block's producer has issued its last copy: whole B = 1 step on an H200
# (2026-12-01, interleaved replays) −5 … −16 µs at position 500, −9 … −13 at 5000; 16 MB was slower.
BULK_NEXT_BYTES = 8 << 20


@dataclass(frozen=True, order=True)
class Config:
    """Kernel shape: warps per block, k steps per chunk, L2 prefetch-size hint of the weight loads (bytes),
    tile combine (0: a block barrier per tile; 1: per-slot counters, the last warp to arrive writes).

    The default was the fastest whole decoder step timed on an H100 (dev/gemv_timing.py --sweep).
    """

    warps: int = 16
    unroll: int = 6  # = 96 k steps of K = 3072 / 16 warps: one full chunk per tile
    prefetch: int = 256
    sync: int = 1

    def __post_init__(self):
        ok = (
            16 % self.warps == 0
            and self.unroll >= 1
            and self.prefetch in (0, 128, 256)
            and self.sync in (0, 1)
        )
        assert ok, self

    @property
    def slots(self) -> int:
        """Partial-sum slots per block (GemvSlots in gemv.cu)."""
        return 4 if self.sync else 2


DEFAULT = Config()
WO = Config(unroll=4)  # K = 4096: 4 k steps per chunk timed 13.5 µs against 14.6 for the default 6 (H100)
# One row of x (B = 1) and K = 3072: two 8-warp blocks per SM beat one of 16 warps on an H200
# (dev/gemv_timing.py --sweep, 2026-11-30: qkv 15.3 vs 16.7 µs, w13 36.1 vs 38.9, output 217 vs 231);
# at B = 8 they lose by 20–50 %, and on wo and w2 at B = 1 too.
ONE_ROW = Config(warps=8)


X_REGISTERS_SPARE = 32  # registers a gemv_bulk lane keeps beside its x fragments (Bulk.x_regs): else spills
# (x fragments a lane holds per chunk, chunks) at most, f32 x / bf16 x: the decoder's K = 3072 (f32 h) in
# one chunk over 16 warps, K = 4096 (bf16 attention output) in two; larger ones spill (ptxas at 96
# registers: bf16 (6, 2) spilled 124 bytes, (4, 2) 12).
X_CAPACITY = {False: (6, 1), True: (4, 2)}
# Passes (Bulk.x_passes: bf16 x whose K a lane's registers do not hold, w2's 9216 at 2–8 rows): a lane
# holds X_PASS_CAPACITY fragments of one chunk in registers and loads the next chunk's into as many more
# during the pass (ptxas at 96 registers: 4 no spills, 5 24 bytes, 6 64); each block walks at most
# PASS_TILES tiles (= GEMV_PASS_TILES in gemv.cu), chunk-major, their sums in shared memory.
X_PASS_CAPACITY = 4
PASS_TILES = 4


@dataclass(frozen=True, order=True)
class Bulk:
    """Shape of the bulk-copy kernel (gemv_bulk in gemv.cu, sm_90+): consumer warps, shared-memory stages
    in the ring, bytes a stage aims at (8 weight rows × kc columns), blocks per SM in the grid, and
    whether each lane holds its x fragments in registers (x_regs: loaded once per launch from global
    memory) instead of reading them from a staged copy of x in shared memory at every mma step, and,
    for bf16 x whose whole K the registers do not hold, one chunk of it at a time (x_passes: the tiles
    walked chunk-major, statically shared out, their sums in shared memory) instead of staging x."""

    warps: int = 8
    stages: int = 4
    stage_kb: int = 24
    per_sm: int = 1
    x_regs: bool = False
    x_passes: bool = False

    def __post_init__(self):
        assert 1 <= self.warps <= 16 and 2 <= self.stages <= 8 and self.stage_kb >= 1, self
        assert self.per_sm in (1, 2), self

    def x_capacity(self, x_bf16: bool) -> tuple[int, int]:
        """(XU, XC) of this config's x-in-registers instance for an x dtype: X_CAPACITY, fewer fragments
        where they would not leave a lane X_REGISTERS_SPARE registers (f32: hi and lo, 8 registers a
        fragment; bf16: 4); (0, 1) without x_regs. One instance per dtype serves every K it covers (the
        unused fragments stay zero), so none depends on the model's sizes."""
        if not self.x_regs:
            return 0, 1
        (most, xc), per = X_CAPACITY[x_bf16], 4 if x_bf16 else 8
        xu = min(most, (self.lane_registers - X_REGISTERS_SPARE) // (per * xc))
        return (xu, xc) if xu > 0 else (0, 1)

    @property
    def lane_registers(self) -> int:
        """Registers a lane of this block may have: 64 K per SM over the block's warps (with the
        producer), allocated in groups of 4 warps, 8 at a time."""
        return min(255, 65536 // (-(-(self.warps + 1) // 4) * 4 * 32) // 8 * 8)

    def passes(self) -> bool:
        """Whether this config has passes instances: x_passes, and twice X_PASS_CAPACITY bf16 fragments
        (this chunk's and the next one's) leave a lane X_REGISTERS_SPARE registers."""
        fits = 2 * 4 * X_PASS_CAPACITY + X_REGISTERS_SPARE <= self.lane_registers
        return self.x_regs and self.x_passes and fits

    def x_fragments(self, k: int, x_bf16: bool) -> tuple[int, int]:
        """(XU, XC) of the gemv_bulk instance for K: x_capacity where a lane's fragments of K (its mma
        steps of each chunk) fit it; else, where passes() and x is bf16 whose chunks' fragments fit
        X_PASS_CAPACITY, (X_PASS_CAPACITY, 0): passes; else (0, 1): x is staged in shared memory."""
        cap = self.x_capacity(x_bf16)
        kc, _ = self.layout(k)
        steps = -(-kc // 32)  # 32-column mma steps of a chunk
        xc, xu = -(-k // kc), -(-steps // self.warps)  # chunks, a lane's steps of one
        if cap[0] and xu <= cap[0] and xc <= cap[1]:
            return cap
        if x_bf16 and xu <= X_PASS_CAPACITY and self.passes():
            return X_PASS_CAPACITY, 0
        return 0, 1

    def layout(self, k: int) -> tuple[int, int]:
        """(kc, tps): columns and tiles per stage. Whole tiles (kc = K, as many as fit the stage) when
        one does, copied in one piece; else one tile × kc columns, K split in equal multiples of 32."""
        aim = self.stage_kb * 1024
        tile = 2 * TILE_ROWS * k
        if tile <= aim:
            return k, aim // tile
        most = max(32, aim // (2 * TILE_ROWS) // 32 * 32)
        per_part = -(-k // -(-k // most))
        return -(-per_part // 32) * 32, 1

    def stage_bytes(self, k: int) -> int:
        kc, tps = self.layout(k)
        return tps * 2 * TILE_ROWS * k if kc == k else TILE_ROWS * (2 * kc + 64)


# One row of x on sm_90+: the bulk-copy kernel, three stages of one whole 8-row tile each (K = 3072: 48
# KiB, one copy; w2's K = 9216: 8 row copies of 3072 columns). dev/gemv_timing.py on an H200 (2026-11-30),
# B = 1, µs vs cuBLAS in the same run: qkv 11.3/13.3, wo 8.9/12.1, w13 29.5/31.8, w2 17.7/20.8, output
# 191/199; the step's GEMVs 1960 µs (ONE_ROW 2298), the decoder step 2207 µs (2448). At B = 8 it loses
# to the 16-warp plain kernel and to cuBLAS (x is read from shared memory by every lane).
BULK_ONE_ROW = Bulk(warps=16, stages=3, stage_kb=48)
# The decoder step on sm_90+ (1–8 rows): the same with x in registers (no x reads from shared memory per
# step). H200, 2026-12-03, µs per launch, cuBLAS / plain DEFAULT / this (`dev/gemv_rows.py`, one run),
# B = 8: qkv 12.23 / 18.93 / 12.85, wo 11.31 / 13.72 / 9.87, w13 31.36 / 40.20 / 29.69, output 192.8 /
# 226.3 / 186.2 (w2 takes BULK_W2 there); B = 1 equal to BULK_ONE_ROW within 0.2
# (qkv 10.80 / 11.01). 4 stages (x no longer takes the room) won per launch (B = 1 qkv 10.31, w13 26.80;
# B = 8 qkv 12.07) but lost in the whole step: B = 8 2.737 ms against 2.578, B = 1 2.033–2.044 against
# 2.036 (`voxtral bench`; a 213 KiB block leaves no room for the next kernel's block to start beside it).
BULK_STEP = Bulk(warps=16, stages=3, stage_kb=48, x_regs=True)
# w2 (K = 9216, bf16 x) at 2–8 rows: x in registers one chunk at a time (passes: 5 chunks of 1856 columns,
# 4 fragments a lane), 3 stages of 30 KB. H200, 2026-12-03, B = 8: 21.1–21.8 µs a launch against the
# plain kernel's 23.4 and cuBLAS's 19.0 (`dev/gemv_rows.py`), the whole step 2.446 ms against 2.586
# (`dev/step_profile.py`, 4 stages against w2-plain); 3 stages −20 and −26 µs on the step against 4 (two
# runs); with a stage's row copies issued together 20.0 µs a launch (cuBLAS 18.6–19.4); at B = 1 passes
# lose (18.7–20.3 against 16.4–16.7 staged).
# 3 chunks of 3072 (6 fragments, the next chunk's by cp.async into shared memory: a 223 KB block) lost:
# 24.4 µs a launch, the step 2.563 ms.
BULK_W2 = Bulk(warps=16, stages=3, stage_kb=32, x_regs=True, x_passes=True)
SHIPPED = (
    DEFAULT,
    WO,
    ONE_ROW,
    BULK_STEP,
    BULK_W2,
)  # the configs the decoder uses: prebuilt (cuda/bin), compiled together otherwise


def step_configs(rows: int) -> dict:
    """The kernel shape of each decoder-step GEMV ("qkv", "wo", "w13", "w2", "output") at `rows` rows of x."""
    if rows == 1:  # on GPUs before sm_90 gemv() runs ONE_ROW instead
        return dict.fromkeys(("qkv", "wo", "w13", "w2", "output"), BULK_STEP)
    # w2's K = 9216 at 2–8 rows: its x fits neither a lane's registers nor, staged at 8 rows, beside the
    # 48 KiB stages: passes (BULK_W2; GPUs before sm_90 run DEFAULT for both Bulk configs).
    return {"qkv": BULK_STEP, "wo": BULK_STEP, "w13": BULK_STEP, "w2": BULK_W2, "output": BULK_STEP}


EPILOGUES = {"store": 0, "add": 1, "swiglu": 2, "rope": 4}  # swiglu with a bf16 out is 3 (GEMV_SWIGLU_BF16)
ROPE = 4  # GEMV_ROPE: Bulk configs only, RMSNorm prologue on f32 x
# (norm, x bf16) prologue/input pairs that exist: the RMSNorm prologue takes f32 x.
INPUTS = ((False, False), (False, True), (True, False))


def name(epi: int, norm: bool, x_bf16: bool, cfg, k: int = 0) -> str:
    """The template name expression of one kernel instance (a Bulk config with x_regs: at that K)."""
    b = lambda v: "true" if v else "false"
    if isinstance(cfg, Bulk):
        return _bulk_name(epi, norm, x_bf16, cfg, cfg.x_fragments(k, x_bf16) if k else (0, 1))
    return f"gemv<{epi}, {b(norm)}, {b(x_bf16)}, {cfg.warps}, {cfg.unroll}, {cfg.prefetch}, {cfg.sync}>"


def _bulk_name(epi: int, norm: bool, x_bf16: bool, cfg, fragments: tuple[int, int]) -> str:
    b = lambda v: "true" if v else "false"  # noqa: E731
    xu, xc = fragments
    return f"gemv_bulk<{epi}, {b(norm)}, {b(x_bf16)}, {cfg.warps}, {cfg.stages}, {xu}, {xc}>"


def templates(cfg=DEFAULT) -> tuple[str, ...]:
    """Every instance of one config: 4 epilogues × 3 inputs (Bulk: + the ROPE epilogue after a norm;
    with x_regs: x in registers and, for the K it does not cover, staged)."""
    combos = [(e, n, xb) for e, (n, xb) in itertools.product(range(4), INPUTS)]
    if not isinstance(cfg, Bulk):
        return tuple(name(e, n, xb, cfg) for e, n, xb in combos)
    combos += [(ROPE, True, False)]
    staged = tuple(name(e, n, xb, cfg) for e, n, xb in combos)
    held = [_bulk_name(e, n, xb, cfg, cfg.x_capacity(xb)) for e, n, xb in combos]
    if cfg.passes():  # bf16 x (no norm)
        held += [_bulk_name(e, n, xb, cfg, (X_PASS_CAPACITY, 0)) for e, n, xb in combos if xb]
    return tuple(dict.fromkeys(held) | dict.fromkeys(staged))


@dataclass(frozen=True)
class Rope:
    """The tables of the "rope" epilogue, as ops.rope_qkv takes them (SPEC §3.4, §5): pos [B] int32,
    slot [B] int32 or None (tables per row), cache [C, 2] uint64 K/V ring addresses, ring [C] int32."""

    pos: object
    slot: object
    cache: object
    ring: object
    theta: float
    n_kv_heads: int
    head_dim: int


def fuses_rope(x, w, config) -> bool:
    """Whether gemv(x, w, q, epilogue="rope", config=config) runs (the bulk kernel on this device);
    otherwise the caller projects with epilogue="store" and runs ops.rope_qkv."""
    ok_x = x.dtype == np.dtype(np.float32) and 1 <= x.shape[0] <= MAX_BATCH
    return ok_x and _bulk_shared_bytes(x.shape[0], False, w, config) is not None


def _bulk_shared_bytes(b: int, x_bf16: bool, w, config) -> int | None:
    """The shared memory of a Bulk launch that this device runs, or None: not a Bulk config, a GPU before
    sm_90, K not a multiple of 8, w not 16-byte aligned, or more shared memory than a block may have."""
    import cupy

    device, k = cupy.cuda.Device().id, w.shape[1]
    if not (isinstance(config, Bulk) and has_bulk_copy(device) and k % 8 == 0 and w.data.ptr % 16 == 0):
        return None
    smem = shared_bytes(b, k, x_bf16, config)
    return smem if smem <= device_limits(device)[2] else None


TEMPLATES = {"gemv.cu": tuple(dict.fromkeys(n for cfg in SHIPPED for n in templates(cfg)))}


@functools.cache
def device_limits(device_id: int) -> tuple[int, int, int]:
    """(SMs, shared memory per SM, opt-in shared memory per block) of a device."""
    import cupy

    attrs = cupy.cuda.Device(device_id).attributes
    return (
        attrs["MultiProcessorCount"],
        attrs["MaxSharedMemoryPerMultiprocessor"],
        attrs["MaxSharedMemoryPerBlockOptin"],
    )


@functools.cache
def has_bulk_copy(device_id: int) -> bool:
    """Whether a device runs gemv_bulk: cp.async.bulk and mbarrier transaction counts need sm_90+."""
    import cupy

    return int(cupy.cuda.Device(device_id).compute_capability) >= 90


@functools.cache
def _kernel(expr: str, module_names: tuple[str, ...], device_id: int):
    """The RawKernel of one instance, its dynamic shared-memory limit raised to the device's opt-in."""
    fn = kernels.function("gemv.cu", expr, module_names)
    fn.max_dynamic_shared_size_bytes = device_limits(device_id)[2] - fn.shared_size_bytes
    return fn


def x_stride(k: int) -> int:
    """= gemv_x_stride in gemv.cu: staged row length of x (bank-conflict-free 16-byte reads)."""
    return (k + 63) // 64 * 64 + 32


def shared_bytes(b: int, k: int, x_bf16: bool, cfg=DEFAULT) -> int:
    """Dynamic shared memory of one launch: partial sums, slot counters, sums of squares, x (hi | lo)
    (Bulk: mbarriers first, the stage ring last; with x in registers a copy of the norm weight in place
    of x, reserved for every f32 x)."""
    if isinstance(cfg, Bulk):
        xu, xc = cfg.x_fragments(k, x_bf16)
        if xu == 0:  # x staged
            x_room = b * x_stride(k) * 2 * (1 if x_bf16 else 2)
        elif xc == 0:  # passes: the tiles' sums
            x_room = PASS_TILES * cfg.warps * 256
        else:  # x in registers: g's copy (an f32 x may have a norm)
            x_room = 4 * k * (not x_bf16)
        head = BULK_HEADER + 2 * cfg.warps * 256 + MAX_BATCH * cfg.warps * 4 + x_room
        return -(-head // 128) * 128 + cfg.stages * cfg.stage_bytes(k)
    partials = cfg.slots * cfg.warps * 32 * 8
    return partials + 64 + MAX_BATCH * cfg.warps * 4 + b * x_stride(k) * 2 * (1 if x_bf16 else 2)


def _check(a, what: str, dtypes: tuple, shape: tuple) -> None:
    import cupy

    assert isinstance(a, cupy.ndarray), f"{what} must be a cupy.ndarray, got {type(a).__name__}"
    assert a.dtype in [np.dtype(d) for d in dtypes], f"{what} must be {dtypes}, got {a.dtype}"
    assert a.flags.c_contiguous, f"{what} must be C-contiguous"
    assert a.shape == shape, f"{what} must have shape {shape}, got {a.shape}"


def gemv(
    x, w, out, *, norm_weight=None, eps: float = 1e-5, epilogue: str = "store", prefetch=None,
    config: Config = DEFAULT, pdl: bool = False, schedule=None, rope: Rope | None = None,
):  # fmt: skip
    """out (=, +=, swiglu) [rms_norm](x) · wᵀ for x [B ≤ 8, K] f32/bf16, w [N, K] bf16; returns out.

    prefetch: the next launch's weights (a device array starting on a 16-byte boundary); the first
    NEXT_BYTES of it (a Bulk config: BULK_NEXT_BYTES; none where a Bulk config falls back to the plain
    kernel) are pulled into L2 as this launch runs out of its own loads, so the next one starts from L2.
    pdl: launch it as a programmatic dependent launch (the kernels before and after it on the stream may
    overlap it).
    schedule: an int32 [2] device array of zeros (left zero) that a Bulk config's blocks take their tiles
    from as they go (a block that starts late takes fewer); one array per launch site of a stream, as
    launches may overlap. None (or a launch in passes, which ignores it): each block streams a fixed
    contiguous share.
    epilogue="rope" (rope: the tables; only where fuses_rope): w is the fused wq | wk | wv and y the q | k | v
    row; q and k are turned as ops.rope_qkv does, out = q bf16 [B, H, Dh], k and v go into the caches.
    """
    import cupy

    assert epilogue in EPILOGUES, f"epilogue must be one of {list(EPILOGUES)}, got {epilogue!r}"
    assert isinstance(w, cupy.ndarray) and w.ndim == 2, "w must be a 2-D cupy.ndarray [N, K]"
    n, k = w.shape
    _check(w, "w", (BF16,), (n, k))
    assert isinstance(x, cupy.ndarray) and x.ndim == 2, "x must be a 2-D cupy.ndarray [B, K]"
    b = x.shape[0]
    _check(x, "x", (np.float32, BF16), (b, k))
    assert 1 <= b <= MAX_BATCH, f"x must have 1 … {MAX_BATCH} rows, got {b}"
    x_bf16 = x.dtype == np.dtype(BF16)
    norm = norm_weight is not None
    if norm:
        assert not x_bf16, "the RMSNorm prologue takes f32 x"
        _check(norm_weight, "norm_weight", (np.float32,), (k,))
    epi = EPILOGUES[epilogue]
    if epilogue == "rope":
        assert isinstance(rope, Rope) and fuses_rope(x, w, config), "rope: a Rope, where fuses_rope holds"
        assert norm, "the rope epilogue follows the RMSNorm prologue"
        hkv, dh = rope.n_kv_heads, rope.head_dim
        h = n // dh - 2 * hkv
        assert dh % 2 == 0 and n % dh == 0 and h > 0, f"qkv width {n} does not split into heads of {dh}"
        _check(out, "out", (BF16,), (b, h, dh))
        _check(rope.pos, "pos", (np.int32,), (b,))
        if rope.slot is not None:
            _check(rope.slot, "slot", (np.int32,), (b,))
        assert rope.cache.dtype == np.uint64 and rope.cache.ndim == 2 and rope.cache.shape[1] == 2, (
            "cache: [C, 2] uint64"
        )
        _check(rope.ring, "ring", (np.int32,), (rope.cache.shape[0],))
        assert rope.slot is not None or rope.cache.shape[0] >= b, "slot=None needs a table row per row of x"
        tiles = -(-n // TILE_ROWS)
    elif epilogue == "swiglu":
        assert n % 2 == 0, f"swiglu needs w = [w1; w3] with an even number of rows, got {n}"
        _check(out, "out", (np.float32, BF16), (b, n // 2))
        epi += out.dtype == np.dtype(BF16)
        tiles = -(-(n // 2) // (TILE_ROWS // 2))
    else:
        _check(out, "out", (np.float32,), (b, n))
        tiles = -(-n // TILE_ROWS)
    if n == 0:
        return out
    device = cupy.cuda.Device().id
    sms, smem_sm, smem_block = device_limits(device)
    if prefetch is not None:
        assert isinstance(prefetch, cupy.ndarray), "prefetch must be a cupy.ndarray (the next weights)"
        assert prefetch.data.ptr % 16 == 0, "prefetch must start on a 16-byte boundary (bulk prefetch)"
    if isinstance(config, Bulk):
        if config.x_regs and (x.data.ptr % 16 or (norm and norm_weight.data.ptr % 16)):
            config = dataclasses.replace(config, x_regs=False)  # the fragments are 16-byte loads
        elif config.x_regs and config.x_fragments(k, x_bf16)[1] == 0 and tiles > PASS_TILES * sms:
            config = dataclasses.replace(config, x_regs=False)  # passes: more tiles a block than it sums
        smem = _bulk_shared_bytes(b, x_bf16, w, config)
        if smem is not None:
            return _bulk(x, w, out, norm_weight, eps, epi, config, tiles, smem, pdl, schedule, rope, prefetch)
        config = ONE_ROW if b == 1 else DEFAULT  # an older GPU, an odd K or a misaligned view
        prefetch = None  # the plain kernel's warming (NEXT_BYTES) was never timed in place of the bulk one's
    smem = shared_bytes(b, k, x_bf16, config)
    assert smem <= smem_block, (
        f"x [{b}, {k}] {'bf16' if x_bf16 else 'f32'} needs {smem} B of shared memory, over the "
        f"{smem_block} B a block may have: use fewer rows or a shorter K"
    )
    expr = name(epi, norm, x_bf16, config)
    fn = _kernel(expr, TEMPLATES["gemv.cu"] if config in SHIPPED else (expr,), device)
    per_sm = max(1, min(16 // config.warps, smem_sm // (smem + SMEM_RESERVED)))
    grid = min(tiles, sms * per_sm)
    g = norm_weight if norm else np.uint64(0)
    next_bytes = 0 if prefetch is None else min(NEXT_BYTES, prefetch.nbytes) // 128 * 128
    nxt = np.uint64(0) if prefetch is None else prefetch
    args = (x, g, w, out, np.int32(b), np.int32(n), np.int32(k), np.float32(eps), nxt, np.uint64(next_bytes))
    launch(fn, (grid,), (32 * config.warps,), args, shared_mem=smem, pdl=pdl)
    return out


def _bulk(
    x, w, out, norm_weight, eps, epi, config: Bulk, tiles: int, smem: int, pdl: bool, schedule, rope, prefetch
):  # fmt: skip
    import cupy

    n, k = w.shape
    b, norm, x_bf16 = x.shape[0], norm_weight is not None, x.dtype == np.dtype(BF16)
    device = cupy.cuda.Device().id
    sms, smem_sm, _ = device_limits(device)
    expr = name(epi, norm, x_bf16, config, k)
    fn = _kernel(expr, TEMPLATES["gemv.cu"] if expr in TEMPLATES["gemv.cu"] else (expr,), device)
    per_sm = max(1, min(config.per_sm, smem_sm // (smem + SMEM_RESERVED)))
    kc, tps = config.layout(k)
    g = norm_weight if norm else np.uint64(0)
    if schedule is None or config.x_fragments(k, x_bf16)[1] == 0:  # passes share the tiles out statically
        grid, sched = min(tiles, sms * per_sm), np.uint64(0)
    else:
        _check(schedule, "schedule", (np.int32,), (2,))
        grid, sched = min(-(-tiles // tps), sms * per_sm), schedule
    args = (x, g, w, out, np.int32(b), np.int32(n), np.int32(k), np.float32(eps), np.int32(kc), np.int32(tps),
            sched)  # fmt: skip
    if rope is None:
        args += (np.uint64(0),) * 5 + (np.int32(0),) * 3 + (np.float32(0),)
    else:
        hkv, dh = rope.n_kv_heads, rope.head_dim
        slot = np.uint64(0) if rope.slot is None else rope.slot
        args += (rope.pos, slot, out, rope.cache, rope.ring, np.int32(n // dh - 2 * hkv), np.int32(hkv),
                 np.int32(dh), np.float32(rope.theta))  # fmt: skip
    next_bytes = 0 if prefetch is None else min(BULK_NEXT_BYTES, prefetch.nbytes) // 128 * 128
    args += (np.uint64(0) if prefetch is None else prefetch, np.uint64(next_bytes))
    launch(fn, (grid,), (32 * (config.warps + 1),), args, shared_mem=smem, pdl=pdl)
    return out


__all__ = [
    "Bulk",
    "Rope",
    "fuses_rope",
    "DEFAULT",
    "EPILOGUES",
    "BULK_ONE_ROW",
    "BULK_STEP",
    "ONE_ROW",
    "SHIPPED",
    "WO",
    "MAX_BATCH",
    "Config",
    "gemv",
    "shared_bytes",
]
