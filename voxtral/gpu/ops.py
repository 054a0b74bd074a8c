"""CuPy launchers of the kernels in cuda/: one function per kernel, with the kernel's name.

Arrays are CuPy arrays; BF16 tensors are uint16 arrays holding the bit patterns. Each launcher checks
dtypes, shapes and contiguity, launches on the current stream and allocates only the outputs (or the
attention workspace) that the caller did not pass: a decoder step passes preallocated buffers so
that it can be captured as a CUDA graph. Positions and slot indices are device int32 arrays.
rms_norm, rope_qkv, attention_split, attention_tiled / attention_runs, silu_mul, embed and argmax_advance
take pdl=True to be launched as programmatic dependent launches (voxtral/gpu/launch.py; their kernels
wait for the previous one before reading its output).
"""

from __future__ import annotations

import numpy as np

from voxtral.gpu import gemv, kernels, layers, skinny
from voxtral.gpu.launch import launch

BF16 = np.uint16  # BF16 storage dtype on the device (raw bit patterns)
ELEMENTWISE_THREADS = 256
ELEMENTWISE_MAX_BLOCKS = 4096  # grid-stride beyond this: 132 SMs × ~31 blocks is plenty
ROPE_THREADS = 256
ROPE_MAX_ROWS = 8  # as cuda/rope.cu
EMBED_THREADS = 256
ARGMAX_THREADS = 256
ARGMAX_SLICE = 4096  # logits per argmax block: V = 131072 is spread over 32 blocks per stream
ARGMAX_MAX_BLOCKS = 32
SPLIT_THREADS = 128  # = SPLIT_THREADS in attention.cu: 4 warps, 16 keys per warp and step
SPLIT_GROUPS = (1, 2, 4, 8)  # query heads per kv head served by attention_split (≤ 8: mma n = 8)
# attention_split blocks per launch aimed at, ~2 per SM of a 132-SM H100 (148 registers allow 3), with
# at most SPLIT_MAX splits per (query, kv head): B = 1 gets 32 splits × 8 kv heads, B = 16 gets 2. On an
# H100 at ctx 5000: B = 1 S = 16/32/48/64 ran 14.6/14.3/14.9/19.1 µs, B = 16 S = 1/2/4/8/16 ran
# 141/119/128/121/126 µs.
SPLIT_BLOCKS = 256
SPLIT_MAX = 32
SPLIT_MIN_KEYS = 64  # fewest keys given to one split: more splits merge, fewer serialize the steps
# From SPLIT_BLOCKS (query, kv head) pairs up (B ≥ 32 at 8 kv heads) one split per pair fills the GPU
# until the window is long: SPLIT_WIDE splits of ≥ SPLIT_WIDE_MIN_KEYS keys. H200, double-buffered
# kernel, B = 64: ctx 500 S = 1/2 ran 38.6/45.3 µs; ctx 5000 S = 1/4/8 ran 359/338/324 µs.
SPLIT_WIDE = 8
SPLIT_WIDE_MIN_KEYS = 1024
# attention_tiled variants by head dim: query rows per block (16 per warp and m-tile) → (warps, m-tiles
# per warp, keys per tile, least blocks per SM: __launch_bounds__). The first is the default: 128 rows (4
# warps of 2 m-tiles) share each K/V fragment read for Dh = 64 (cuda/README.md: the shapes timed). 16
# rows (one warp) serve runs of a few positions (a live pass: 4 per slot and 80 ms), which then read each
# key of their slot's window once for all of them, not once per query as attention_split.
TILED_ROWS = {
    64: {128: (4, 2, 64, 1), 64: (4, 1, 64, 1), 16: (1, 1, 64, 1)},
    128: {64: (4, 1, 32, 1), 16: (1, 1, 32, 1)},
}


def attention_splits(queries: int, n_kv_heads: int) -> int:
    """Blocks per (query, kv head) of attention_split: about SPLIT_BLOCKS in all, 1 … SPLIT_MAX; SPLIT_WIDE
    from SPLIT_BLOCKS pairs up (used only by windows longer than split_min_keys each)."""
    pairs = max(1, queries * n_kv_heads)
    return SPLIT_WIDE if pairs >= SPLIT_BLOCKS else max(1, min(SPLIT_MAX, SPLIT_BLOCKS // pairs))


def split_min_keys(queries: int, n_kv_heads: int) -> int:
    """Fewest keys per split of attention_split: a query's n keys use min(splits, ⌈n / this⌉) splits."""
    return SPLIT_WIDE_MIN_KEYS if queries * n_kv_heads >= SPLIT_BLOCKS else SPLIT_MIN_KEYS


def split_row(splits: int, group: int, head_dim: int) -> int:
    """Floats per (query, kv head) of the workspace: acc [S, G, Dh] | (max, sum) [S, G] | counter, pad."""
    return (splits * group * (head_dim + 2) + 4) // 4 * 4


def attention_workspace(
    queries: int, n_heads: int, n_kv_heads: int, head_dim: int, splits: int | None = None
):
    """Zeroed f32 [T, Hkv, split_row] scratch of attention_split; each launch leaves its counters at zero."""
    import cupy

    splits = attention_splits(queries, n_kv_heads) if splits is None else splits
    row = split_row(splits, n_heads // n_kv_heads, head_dim)
    return cupy.zeros((queries, n_kv_heads, row), dtype=np.float32)


# Every template instance the runtime launches, by file: what dev/build_kernels.py prebuilds and what
# NVRTC compiles together when it has to (extern "C" kernels need no entry).
TEMPLATES = {
    **gemv.TEMPLATES,
    **skinny.TEMPLATES,
    **layers.TEMPLATES,
    "attention.cu": tuple(
        [
            f"attention_split{kind}<{dh}, {g}>"
            for kind in ("", "_light")
            for dh in (64, 128)
            for g in SPLIT_GROUPS
        ]
        + [
            f"attention_tiled<{dh}, {warps}, {mt}, {bn}, {minb}>"
            for dh, rows in TILED_ROWS.items()
            for warps, mt, bn, minb in rows.values()
        ]
    ),
}


def _fn(filename: str, name: str):
    return kernels.function(filename, name, TEMPLATES.get(filename, ()))


def _check(a, name: str, dtype, shape: tuple | None = None) -> None:
    import cupy

    assert isinstance(a, cupy.ndarray), f"{name} must be a cupy.ndarray, got {type(a).__name__}"
    dtypes = [np.dtype(d) for d in (dtype if isinstance(dtype, tuple) else (dtype,))]
    assert a.dtype in dtypes, f"{name} must be {' or '.join(map(str, dtypes))}, got {a.dtype}"
    assert a.flags.c_contiguous, f"{name} must be C-contiguous"
    if shape is not None:
        ok = len(shape) == a.ndim and all(s is None or s == d for s, d in zip(shape, a.shape, strict=False))
        assert ok, f"{name} must have shape {shape} (None = any), got {a.shape}"


def _out(out, name: str, dtype, shape: tuple):
    import cupy

    if out is None:
        return cupy.empty(shape, dtype=dtype)
    _check(out, name, dtype, shape)
    return out


def _null_or(a):
    return np.uint64(0) if a is None else a


def _blocks(n: int, per_block: int = ELEMENTWISE_THREADS) -> int:
    return max(1, min(ELEMENTWISE_MAX_BLOCKS, -(-n // per_block)))


def rms_norm(x, w, eps: float, *, bias=None, out=None, pdl: bool = False):
    """out = x·rsqrt(mean(x²)+eps)·w as bf16 [T, D]; with `bias`, x += bias first (written back to x)."""
    _check(x, "x", np.float32)
    assert x.ndim == 2, f"x must be [T, D], got {x.shape}"
    t, d = x.shape
    _check(w, "w", np.float32, (d,))
    if bias is not None:
        _check(bias, "bias", np.float32, (d,))
    out = _out(out, "out", BF16, (t, d))
    per_thread = 4 if d % 4 == 0 else 1
    threads = min(1024, max(32, 32 * -(-d // (32 * per_thread))))
    if t:
        args = (x, _null_or(bias), w, out, np.int32(d), np.float32(eps))
        launch(_fn("rms_norm.cu", "rms_norm"), (t,), (threads,), args, pdl=pdl)
    return out


def _check_table(cache, ring, name: str = "cache") -> int:
    """A slot table: cache [C, 2] uint64 (K, V addresses per slot), ring [C] int32; returns C."""
    _check(cache, name, np.uint64)
    assert cache.ndim == 2 and cache.shape[1] == 2, f"{name} must be [C, 2] (K, V), got {cache.shape}"
    _check(ring, "ring", np.int32, (cache.shape[0],))
    return cache.shape[0]


def _check_slot(slot, t: int, n_slots: int) -> None:
    """slot [T] int32, or None when the tables are laid out per row (then they need ≥ T rows)."""
    if slot is None:
        assert n_slots >= t, f"per-row tables of {n_slots} rows for {t} rows"
    else:
        _check(slot, "slot", np.int32, (t,))


def rope_rows(t: int) -> int:
    """Rows per block of rope_qkv for t rows: one up to 255 (few positions spread over many blocks), then
    up to ROPE_MAX_ROWS (cuda/rope.cu) so that a block forms its frequencies for several rows. H200, full
    encoder (3 072 pairs a row): 4 rows 3.2 µs, 1 024 rows: 1 a block 31 µs, one block per row 20 µs."""
    return min(ROPE_MAX_ROWS, max(1, t // 128))


def rope_qkv(qkv, pos, slot, cache, ring, theta: float, *, n_kv_heads: int, head_dim: int, bias=None,
             out=None, pdl: bool = False):  # fmt: skip
    """Bias + interleaved RoPE on qkv [T, (H+2Hkv)·Dh] f32 or bf16 → q bf16 [T, H, Dh]; k, v → row pos % R_c
    of slot c = slot[t]'s ring caches, found through the table cache [C, 2] / ring [C] (voxtral/gpu/kv.py).
    slot=None: the tables are laid out per position (c = t). The bias add and the turn are f32 either way
    (SPEC §3.4, §5)."""
    n_slots = _check_table(cache, ring)
    hkv, dh = n_kv_heads, head_dim
    _check(qkv, "qkv", (np.float32, BF16))
    assert qkv.ndim == 2 and qkv.shape[1] % dh == 0, f"qkv must be [T, (H+2Hkv)·Dh], got {qkv.shape}"
    assert dh % 2 == 0 and dh <= 2 * ROPE_THREADS, f"head dim must be even, ≤ {2 * ROPE_THREADS}: {dh}"
    t, h = qkv.shape[0], qkv.shape[1] // dh - 2 * hkv
    assert h > 0, f"qkv width {qkv.shape[1]} leaves no query heads beside {hkv} kv heads of {dh}"
    _check(pos, "pos", np.int32, (t,))
    _check_slot(slot, t, n_slots)
    if bias is not None:
        _check(bias, "bias", np.float32, (qkv.shape[1],))
    out = _out(out, "out", BF16, (t, h, dh))
    if t:
        args = (qkv, _null_or(bias), pos, _null_or(slot), out, cache, ring)
        args += (np.int32(h), np.int32(hkv), np.int32(dh), np.float32(theta))
        rows = rope_rows(t)
        args = (*args[:7], np.int32(t), np.int32(rows), *args[7:])
        chunks = -(-(h + 2 * hkv) * dh // 2 // ROPE_THREADS)  # blocks per row group: one pair per thread
        grid = (-(-t // rows), chunks)
        name = "rope_qkv" if qkv.dtype == np.float32 else "rope_qkv_bf16"
        launch(_fn("rope.cu", name), grid, (ROPE_THREADS,), args, shared_mem=4 * dh * rows, pdl=pdl)
    return out


def attention_split(
    q, cache, ring, pos, slot, window: int, *, n_kv_heads: int, out=None, workspace=None,
    splits: int | None = None, min_keys: int | None = None, pdl: bool = False, early: bool = False,
    light: bool = False,
):  # fmt: skip
    """Sliding-window GQA attention of few queries (the decoder step) q bf16 [T, H, Dh] → bf16 [T, H, Dh].

    Query t is at position pos[t] of slot slot[t] (device int32 arrays), whose ring caches the table
    cache [C, 2] / ring [C] points at (voxtral/gpu/kv.py); slot=None: the tables are laid out per query
    (slot t), which spares the kernels a dependent load. workspace is attention_workspace(T, H, Hkv,
    Dh, splits), zeroed once and reusable by any later launch of the same shape (allocated if not
    given); splits defaults to attention_splits(T, Hkv), min_keys (the fewest keys a split takes: a
    query's n keys use min(splits, ⌈n / min_keys⌉) splits) to split_min_keys(T, Hkv). pdl: a
    programmatic dependent launch.
    early: pos and every key but each query's own position were written before the previous kernel on
    the stream (the decoder step), so the first keys load before the PDL wait (same result).
    light: attention_split_light (8 keys a warp step in one register set, ≤ 104 registers, so that its
    blocks fit an SM beside a bulk GEMV block; the same result up to the order of summation).
    """
    n_slots = _check_table(cache, ring)
    _check(q, "q", BF16)
    assert q.ndim == 3, f"q must be [T, H, Dh], got {q.shape}"
    dh, hkv = q.shape[2], n_kv_heads
    assert dh in (64, 128), f"head dim {dh} not compiled (64, 128)"
    assert window >= 1, f"window must be ≥ 1, got {window}"
    t, h = q.shape[:2]
    out = _out(out, "out", BF16, (t, h, dh))
    for name, a in (("q", q), ("out", out)):
        assert a.data.ptr % 16 == 0, f"{name} must start on a 16-byte boundary (16-byte loads)"
    if t == 0:
        return out
    _check(pos, "pos", np.int32, (t,))
    _check_slot(slot, t, n_slots)
    assert h % hkv == 0, f"{h} query heads are not a multiple of {hkv} kv heads"
    group = h // hkv
    assert group in SPLIT_GROUPS, f"{group} query heads per kv head not compiled {SPLIT_GROUPS}"
    splits = attention_splits(t, hkv) if splits is None else splits
    assert 1 <= splits <= 65535, f"splits must be in 1 … 65535, got {splits}"
    if workspace is None:
        workspace = attention_workspace(t, h, hkv, dh, splits)
    _check(workspace, "workspace", np.float32, (t, hkv, split_row(splits, group, dh)))
    args = (q, cache, ring, pos, _null_or(slot), workspace, out, np.int32(hkv), np.int32(window))
    min_keys = split_min_keys(t, hkv) if min_keys is None else min_keys
    assert min_keys >= 1, f"min_keys must be ≥ 1, got {min_keys}"
    args += (np.int32(min_keys), np.int32(early))
    kernel = _fn("attention.cu", f"attention_split{'_light' if light else ''}<{dh}, {group}>")
    launch(kernel, (splits, hkv, t), (SPLIT_THREADS,), args, pdl=pdl)
    return out


def attention_tiled(
    q, k_cache, v_cache, window: int, p0: int, *, out=None, block_rows: int | None = None, pdl: bool = False
):  # fmt: skip
    """Sliding-window attention of T consecutive queries (the encoder) q bf16 [T, H, Dh] → bf16 [T, H, Dh].

    The queries are positions p0 … p0+T−1 of one slot whose ring caches are k_cache, v_cache [R, Hkv, Dh]
    bf16 (R ≥ window + T − 1); block_rows picks the query rows per block (TILED_ROWS; default the first
    listed for the head dim). Tensor cores, mma.sync. pdl: a programmatic dependent launch.
    """
    _check(k_cache, "k_cache", BF16)
    assert k_cache.ndim == 3, f"k_cache must be [R, Hkv, Dh], got {k_cache.shape}"
    r, hkv, dh = k_cache.shape
    _check(v_cache, "v_cache", BF16, k_cache.shape)
    _check(q, "q", BF16)
    assert q.ndim == 3 and q.shape[2] == dh, f"q must be [T, H, {dh}], got {q.shape}"
    t, h = q.shape[:2]
    assert h % hkv == 0, f"{h} query heads are not a multiple of {hkv} kv heads"
    assert dh in TILED_ROWS, f"head dim {dh} not compiled {tuple(TILED_ROWS)}"
    assert window >= 1, f"window must be ≥ 1, got {window}"
    out = _out(out, "out", BF16, (t, h, dh))
    for name, a in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache), ("out", out)):
        assert a.data.ptr % 16 == 0, f"{name} must start on a 16-byte boundary (16-byte loads)"
    if t == 0:
        return out
    assert p0 >= 0, "tiled attention needs the first position p0 ≥ 0"
    assert r >= window + t - 1, f"ring of {r} rows cannot hold window {window} + {t} new positions"
    rows = _tiled_rows(dh, block_rows)
    args = (q, k_cache, v_cache, out, np.int32(t), np.int32(h), np.int32(hkv), np.int32(r))
    args += (np.int32(window), np.int32(p0), np.int32(0), np.uint64(0), np.uint64(0), np.uint64(0))
    _launch_tiled(dh, rows, (-(-t // rows), h), args, pdl)
    return out


def _tiled_rows(dh: int, block_rows: int | None) -> int:
    """The query rows per block of an attention_tiled launch: block_rows, or the head dim's default."""
    rows = next(iter(TILED_ROWS[dh])) if block_rows is None else block_rows
    assert rows in TILED_ROWS[dh], f"block_rows={rows} not compiled for Dh={dh}: {list(TILED_ROWS[dh])}"
    return rows


def _launch_tiled(dh: int, rows: int, grid: tuple, args: tuple, pdl: bool) -> None:
    warps, mt, bn, minb = TILED_ROWS[dh][rows]
    kernel = _fn("attention.cu", f"attention_tiled<{dh}, {warps}, {mt}, {bn}, {minb}>")
    launch(kernel, grid, (32 * warps,), args, pdl=pdl)


def tiles_of(runs, block_rows: int, capacity: int | None = None) -> np.ndarray:
    """The tile table of attention_runs for runs (first row, rows, slot, position of the first row): each
    run cut into tiles of ≤ block_rows rows from its first → int32 [n, 4] rows (first row, rows, slot,
    position); capacity: padded with empty tiles (0 rows) to that many."""
    table = [
        (first + k, min(block_rows, rows - k), slot, p + k)
        for first, rows, slot, p in runs
        for k in range(0, rows, block_rows)
    ]
    n = len(table) if capacity is None else capacity
    assert len(table) <= n, f"{len(table)} tiles for a table of {n}"
    out = np.zeros((n, 4), np.int32)
    out[: len(table)] = np.asarray(table, np.int32).reshape(-1, 4)
    return out


def tiles_needed(rows: int, runs: int, block_rows: int) -> int:
    """Most tiles of runs of `runs` runs holding `rows` rows in all: one partial tile per run at most."""
    return -(-rows // block_rows) + min(runs, rows)


def attention_runs(
    q, cache, ring, tiles, window: int, *, n_kv_heads: int, out=None, block_rows: int | None = None,
    pdl: bool = False,
):  # fmt: skip
    """attention_tiled for the runs of many slots in one launch: q bf16 [T, H, Dh] → bf16 [T, H, Dh].

    tiles: device int32 [n, 4] (tiles_of: first row, rows ≤ block_rows, slot, position of the first
    row): tile x's rows are consecutive positions of its slot, whose ring caches the table cache [C, 2]
    / ring [C] points at (voxtral/gpu/kv.py; R_c ≥ window + rows of its run − 1). Tiles of 0 rows do
    nothing, so a captured graph replays any runs that fit its table. Rows in no tile are not written.
    pdl: a programmatic dependent launch.
    """
    _check_table(cache, ring)
    _check(q, "q", BF16)
    assert q.ndim == 3, f"q must be [T, H, Dh], got {q.shape}"
    t, h, dh = q.shape
    hkv = n_kv_heads
    assert dh in TILED_ROWS, f"head dim {dh} not compiled {tuple(TILED_ROWS)}"
    assert h % hkv == 0, f"{h} query heads are not a multiple of {hkv} kv heads"
    assert window >= 1, f"window must be ≥ 1, got {window}"
    _check(tiles, "tiles", np.int32, (None, 4))
    rows = _tiled_rows(dh, block_rows)
    out = _out(out, "out", BF16, (t, h, dh))
    for name, a in (("q", q), ("out", out)):
        assert a.data.ptr % 16 == 0, f"{name} must start on a 16-byte boundary (16-byte loads)"
    if not len(tiles) or t == 0:
        return out
    null = np.uint64(0)
    args = (q, null, null, out, np.int32(t), np.int32(h), np.int32(hkv), np.int32(1))
    args += (np.int32(window), np.int32(0), np.int32(0), tiles, cache, ring)
    _launch_tiled(dh, rows, (len(tiles), h), args, pdl)
    return out


def bias_gelu(x, bias=None, *, out=None):
    """Exact (erf) GELU of x [T, N] f32 (+ bias [N]) → bf16 [T, N]."""
    _check(x, "x", np.float32)
    assert x.ndim == 2, f"x must be [T, N], got {x.shape}"
    t, n = x.shape
    if bias is not None:
        _check(bias, "bias", np.float32, (n,))
    out = _out(out, "out", BF16, (t, n))
    if x.size:
        grid = _blocks(x.size // 4 if n % 4 == 0 else x.size)
        args = (x, _null_or(bias), out, np.int32(t), np.int32(n))
        launch(_fn("activations.cu", "bias_gelu"), (grid,), (ELEMENTWISE_THREADS,), args)
    return out


def widen_bf16(x, *, out=None):
    """bf16 [...] → f32 of the same shape, exactly (the bits shifted into the high half)."""
    _check(x, "x", BF16)
    out = _out(out, "out", np.float32, x.shape)
    if x.size:
        args = (x, out, np.uint64(x.size))
        launch(_fn("activations.cu", "widen_bf16"), (_blocks(-(-x.size // 4)),), (ELEMENTWISE_THREADS,), args)
    return out


def silu_mul(gu, *, out=None, pdl: bool = False):
    """SwiGLU: gu [T, 2F] f32 or bf16 = gate | up → silu(gate)·up as bf16 [T, F], computed in f32 (SPEC
    §3.3, §5). pdl: a programmatic dependent launch."""
    _check(gu, "gu", (np.float32, BF16))
    assert gu.ndim == 2 and gu.shape[1] % 2 == 0, f"gu must be [T, 2F], got {gu.shape}"
    t, f = gu.shape[0], gu.shape[1] // 2
    out = _out(out, "out", BF16, (t, f))
    if out.size:
        grid = _blocks(out.size // 4 if f % 4 == 0 else out.size)
        args = (gu, out, np.int32(t), np.int32(f))
        name = "silu_mul" if gu.dtype == np.float32 else "silu_mul_bf16"
        launch(_fn("activations.cu", name), (grid,), (ELEMENTWISE_THREADS,), args, pdl=pdl)
    return out


def power_spectrum(x, *, out=None):
    """|X|² per frequency: x [T, 2F] f32 (real parts | imaginary parts) → [T, F] f32 (SPEC §2.3)."""
    _check(x, "x", np.float32)
    assert x.ndim == 2 and x.shape[1] % 2 == 0, f"x must be [T, 2F], got {x.shape}"
    t, f = x.shape[0], x.shape[1] // 2
    out = _out(out, "out", np.float32, (t, f))
    if out.size:
        args = (x, out, np.int32(t), np.int32(f))
        launch(_fn("mel.cu", "power_spectrum"), (_blocks(out.size),), (ELEMENTWISE_THREADS,), args)
    return out


def log_mel_normalize(mel, floor: float, low: float, shift: float, scale: float):
    """In place: mel ← (max(log10(max(mel, floor)), low) + shift) / scale, f32 of any shape (SPEC §2.3)."""
    _check(mel, "mel", np.float32)
    if mel.size:
        args = (
            mel,
            np.int64(mel.size),
            np.float32(floor),
            np.float32(low),
            np.float32(shift),
            np.float32(scale),
        )
        launch(_fn("mel.cu", "log_mel_normalize"), (_blocks(mel.size),), (ELEMENTWISE_THREADS,), args)
    return mel


def im2col_rows(x, rows, *, out=None):
    """Columns bf16 [R, C·K] gathered by row: cols[r, c·K + k] = x[rows[r, k], c].

    x [N, C] f32 or bf16 (rows of any streams, carried state included); rows int32 [R, K], each in
    [0, N). The conv stem of many streams in one launch (gpu/conv.py); with K = 1 a row gather."""
    _check(rows, "rows", np.int32)
    assert rows.ndim == 2, f"rows must be [R, K], got {rows.shape}"
    assert x.ndim == 2 and x.dtype in (np.float32, np.dtype(BF16)), "x must be [N, C] f32 or bf16"
    _check(x, "x", x.dtype)
    r, k = rows.shape
    c = x.shape[1]
    out = _out(out, "out", BF16, (r, c * k))
    if out.size:
        name = "im2col_rows_f32" if x.dtype == np.float32 else "im2col_rows_bf16"
        args = (x, np.int32(c), rows, out, np.int32(r), np.int32(k))
        launch(_fn("conv.cu", name), (_blocks(out.size),), (ELEMENTWISE_THREADS,), args)
    return out


def embed(tokens, E, audio, pos, slot, *, out=None, pdl: bool = False):
    """Decoder input h [T, D] f32 = audio[slot, pos % Ra] + E[token]; E bf16 [V, D], audio [C, Ra, D]."""
    _check(E, "E", BF16)
    assert E.ndim == 2, f"E must be [V, D], got {E.shape}"
    d = E.shape[1]
    _check(audio, "audio", np.float32, (None, None, d))
    _check(tokens, "tokens", np.int32)
    assert tokens.ndim == 1, f"tokens must be [T], got {tokens.shape}"
    t = tokens.shape[0]
    _check(pos, "pos", np.int32, (t,))
    _check(slot, "slot", np.int32, (t,))
    out = _out(out, "out", np.float32, (t, d))
    if t:
        args = (tokens, E, audio, pos, slot, out, np.int32(d), np.int32(audio.shape[1]))
        launch(_fn("embed.cu", "embed"), (t,), (EMBED_THREADS,), args, pdl=pdl)
    return out


def scatter_rows(src, dst, rings):
    """rings[dst[r]] = the n floats at device address src[r], for every r: src, dst int64 [R] (device),
    rings f32 [C, Ra, n] (rows numbered across slots: slot · Ra + ring row). One launch for any R."""
    _check(src, "src", np.int64)
    assert src.ndim == 1, f"src must be [R], got {src.shape}"
    _check(dst, "dst", np.int64, src.shape)
    _check(rings, "rings", np.float32)
    assert rings.ndim == 3, f"rings must be [C, Ra, n], got {rings.shape}"
    if len(src):
        args = (src, dst, rings, np.int32(rings.shape[2]))
        launch(_fn("embed.cu", "scatter_rows"), (len(src),), (EMBED_THREADS,), args)
    return rings


def argmax_blocks(vocab: int) -> int:
    """Blocks per stream of argmax_advance: one per ARGMAX_SLICE logits, at most ARGMAX_MAX_BLOCKS."""
    return max(1, min(ARGMAX_MAX_BLOCKS, -(-vocab // ARGMAX_SLICE)))


def argmax_workspace(n_streams: int, blocks: int):
    """Zeroed int32 [B, 2·blocks + 1] scratch of argmax_advance (it leaves it zeroed after each launch)."""
    import cupy

    return cupy.zeros((n_streams, 2 * blocks + 1), dtype=np.int32)


_ARGMAX_WORKSPACES: dict = {}


def argmax_advance(
    logits, tokens, pos, history, *, blocks: int | None = None, workspace=None, pdl: bool = False
) -> None:
    """Per stream b: tokens[b] = argmax(logits[b]); history[b, pos[b] % K] = tokens[b]; pos[b] += 1.

    Without `workspace`, one per (device, B, blocks) is made on first use and kept: make that first
    call outside graph capture, and launch no two of them concurrently on different streams.
    """
    _check(logits, "logits", np.float32)
    assert logits.ndim == 2, f"logits must be [B, V], got {logits.shape}"
    nb, v = logits.shape
    _check(tokens, "tokens", np.int32, (nb,))
    _check(pos, "pos", np.int32, (nb,))
    _check(history, "history", np.int32, (nb, None))
    blocks = argmax_blocks(v) if blocks is None else blocks
    if workspace is None:
        import cupy

        key = (cupy.cuda.Device().id, nb, blocks)
        workspace = _ARGMAX_WORKSPACES.get(key)
        if workspace is None:
            workspace = _ARGMAX_WORKSPACES[key] = argmax_workspace(nb, blocks)
    _check(workspace, "workspace", np.int32, (nb, 2 * blocks + 1))
    if nb:
        args = (logits, np.int32(v), tokens, pos, history, np.int32(history.shape[1]), workspace)
        launch(_fn("argmax.cu", "argmax_advance"), (blocks, nb), (ARGMAX_THREADS,), args, pdl=pdl)


def tiled_flops(t: int, p0: int, window: int, n_heads: int, head_dim: int) -> int:
    """Useful (unmasked) FLOPs of attention_tiled: 4·Dh per visible (query, key) pair and head."""
    visible = sum(min(p + 1, window) for p in range(p0, p0 + t))
    return 4 * head_dim * n_heads * visible


__all__ = [
    "argmax_advance", "argmax_blocks", "argmax_workspace", "attention_runs", "attention_split",
    "attention_splits", "attention_tiled", "attention_workspace", "bias_gelu", "embed", "im2col_rows",
    "rms_norm", "rope_qkv", "silu_mul", "split_min_keys", "split_row", "tiled_flops", "tiles_needed",
    "tiles_of", "widen_bf16",
]  # fmt: skip
