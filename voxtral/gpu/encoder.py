"""Audio encoder and adapter on the GPU (SPEC §3, §4, §7): mel frames of many slots → audio embeddings.

One pool of C slots serves every request: an offline input and a live stream alike are a slot fed
mel frames in pieces of any size. The conv stems of all slots run together (gpu/conv.py: one launch
per stage for any number of slots); a slot keeps its encoder position, up to 3 outputs waiting for an
adapter group, and its own ring KV caches of window + chunk − 1 rows per layer
(voxtral/gpu/kv.py), so a pass may give it up to `chunk` new positions. Each pass runs the layers
once over the new positions of every slot in it (rows of all slots in the same GEMMs). Two kinds of
pass are replays of CUDA graphs captured per bucket of rows, their inputs uploaded into the bucket's
buffers and their spare rows serving a scratch slot that no input owns: a pass of short runs only (every
live tick, LIVE_BUCKETS; attention_runs over one-warp tiles, or attention_split for a few live streams
alone) and a pass of long runs only (offline inputs, OFFLINE_BUCKETS; attention_runs with tiles of 128
rows). Their attention finds each run through a device tile table (first row, rows, slot, first
position), so one graph serves any mix of slots. A pass mixing both (a server's live sessions beside an
upload) runs eagerly: attention_runs over one-warp tiles for the short runs, attention_tiled per long
run. An offline input's run is attended by a kernel chosen by its length alone (≥ TILED_MIN_ROWS: tiles
of 128 rows, else one-warp tiles), so its numerics never depend on what shares its pass. A call
that is one pass of short runs (a live tick) replays a graph of its bucket that runs the conv stem
before the layers (_tick). Then one adapter pass for all.
Shapes: T mel frames, M mel bins, S positions, E encoder dim, D decoder dim, C slots.
"""

from __future__ import annotations

import functools

import numpy as np

from ..config import ModelConfig
from . import ops
from .conv import CONV_ROWS, ConvStem, StemBuffers, plan, ranges
from .copy import clone, concat_rows, device_array, upload, zero
from .gemm import gemm
from .graphs import capture
from .kv import KVCaches
from .launch import launch_graph
from .weights import GpuWeights

CHUNK_POSITIONS = 1024  # positions per slot and pass of an offline input: GEMMs with M = 1024 run near peak
# A live stream gets few positions per call (4 per 80 ms): a short chunk keeps its rings (window +
# chunk − 1 rows per layer, 213 MB at full size) small.
LIVE_CHUNK_POSITIONS = 64
PASS_ROWS = 8192  # positions of all slots in one pass: bounds the pass's activations (~0.7 GB at full size)
TILED_MIN_ROWS = 64  # a slot's run of at least this many positions takes the tiled attention kernel
LIVE_BUCKETS = (4, 8, 16, 32, 64, 128, 256, 512)  # rows of a live pass replayed as a CUDA graph
# A pass of short runs attends through attention_runs with one-warp tiles of LIVE_TILE_ROWS rows (each
# slot's new positions read its window's keys once), except a pass of live streams alone of fewer than
# LIVE_TILED_MIN_ROWS rows: there attention_split spreads a few queries' keys over more blocks. H200, full
# size: at 128 sessions the split kernel read every key once per query (4 a tick): 478 µs a layer, 15.3
# of the tick's 22 ms of GPU time; tiles 228 µs. Tick median split / tiled: 1 session 5.0 / 5.5 ms, 2:
# 5.8 / 6.1, 4: 6.1 / 6.1, 8: 7.5 / 6.5, 16: 7.8 / 7.2. An offline input's short run (its last < 64
# positions) always takes tiles: the same kernel in any pass (batch invariance), and a 60 s file's last
# 40 positions no longer read the window once per query (split: 51 µs a layer, 1.6 ms of the file).
LIVE_TILED_MIN_ROWS = 32
LIVE_TILE_ROWS = 16
# attention_split's blocks per (query, head) in such a split pass, each taking ≥ LIVE_SPLIT_KEYS of its
# query's window (None: ops.attention_splits / split_min_keys, tuned for the decoder step: 2 splits of
# 375 keys at one stream's 4 queries × 32 heads, one block walking all 750 keys at two streams').
LIVE_SPLITS: int | None = None
LIVE_SPLIT_KEYS = 64
# An offline slot's pass also takes the last positions of the call when fewer than TAIL_ROWS would be
# left after its chunk: a 60 s file's 3 184 positions ran as 3 × 1 024 + a pass of 112 (every layer's
# weights read again and ~330 kernels for 112 rows); now 1 024, 1 024, 1 136. Its ring holds
# TAIL_ROWS − 1 rows more (window + chunk + TAIL_ROWS − 2: +14 % at full size); live slots' stay.
TAIL_ROWS = 256
# Rows of an offline pass (runs of ≥ TILED_MIN_ROWS positions only) replayed as a CUDA graph: ~330
# launches become one, so the GPU no longer waits for the host between them (nor for reader threads
# holding the GIL). A pass is padded to its bucket; the buckets share one set of buffers. Those between
# 1 024 and 1 280 hold a chunk and its tail (a file's last pass, alone) with ≤ 63 rows of padding.
TAILED = range(CHUNK_POSITIONS, CHUNK_POSITIONS + TAIL_ROWS + 1, 64)
OFFLINE_BUCKETS = (128, 256, 512, *TAILED, *range(2048, PASS_ROWS + 1, 1024))
# The offline buffers hold at least a chunk and its tail from the start (~0.12 GB at full size), so that
# a file's passes never grow them: a 60 s file after a shorter first pass recaptured its graphs (~50 ms).
OFFLINE_MIN_ROWS = TAILED[-1]
# A call whose rows all fit one pass of short runs (every live tick) replays one graph of its bucket that
# runs the conv stem too (conv.StemBuffers): the ~15 launches of the stem cost the host ~0.5 ms a tick,
# which the GPU waited for. Its new mel frames are at most TICK_FRAMES per row of the bucket (a slot's n
# outputs come from ≤ 2n + 1 frames).
TICK_FRAMES = 3
# Any other call's conv stem (offline inputs, many streams at once) replays a graph captured per
# STEM_FRAMES mel frames (a group of ≤ conv.CONV_ROWS frames each), its buffers the first rows of one
# shared set grown to the largest group: eager, its ~11 launches left the GPU waiting on the host
# (H200, 60 s file: ~0.6 ms among them and ~1 ms before the first pass, of 19).
STEM_FRAMES = 1024
# Passes of at most CHAIN_ROWS rows (a live tick of one or two streams) launch rms_norm, rope_qkv and
# attention_split as programmatic dependent launches (PDL: each starts while the one before ends). H200,
# tick graph of one stream (bucket 4) in one process, 2026-12-01: 1382 µs unchained, 1338 chained. The
# same run timed the bulk-copy gemv (TMA-fed, SwiGLU epilogue) for the projections of passes of ≤ 4 rows,
# which 6dd3489 had chosen on each GEMV's time alone (qkv 6.3 vs cuBLAS 6.9 µs): 1408 µs chained, so
# the projections are cuBLAS GEMMs at every row count again.
CHAIN_ROWS = 8
# Every pass chained as a live tick's (rms_norm, rope_qkv, attention, silu_mul as PDL launches), not only
# those of ≤ CHAIN_ROWS rows. Off: H200, dev/encoder_profile.py, one input of 60 s 21.42 ms against 21.49
# unchained, 8 inputs 136.36 against 136.28 (the launches between a pass's kernels cost ~0.1 µs already).
CHAIN_ALL = False
# The qkv and w1|w3 GEMMs write bf16 (f32 accumulation, one rounding), which rope_qkv and silu_mul read:
# half the bytes of the f32 outputs they wrote and read before (a 60 s file's passes move ~6.6 GB less).
# The bias add, the turn and SwiGLU stay f32; q, k, v and the SwiGLU output were bf16 already.
BF16_ACTIVATIONS = True
# A pass's graph (live tick, live pass, offline pass) is captured as a chain of graphs that begin at
# these layers (graphs.capture's cuts): the GPU starts the first layer while the host still launches
# the rest (cuGraphLaunch of a tick's ~400 nodes: ~0.3 ms of the host's). H200, dev/encoder_variants.py,
# chains vs one graph a pass: 128 live sessions' tick 15.5–16.1 vs 18.6–20.4 ms, one session's 4.0–4.2
# vs 4.2–4.4, feed 4.3–4.5 vs 4.4–4.6, a 60 s file's encoder equal.
GRAPH_CUTS: tuple[int, ...] = (1, 4, 12)
# GEMMs of captured passes (offline buckets, live buckets) of at least this many rows run the fastest
# of cuBLASLt's candidate algorithms that give bitwise the default's output (gemm.py: timed once per
# shape, in the capture's eager run); None: cublasGemmEx's default everywhere. H200, dev/lt_gemm.py,
# µs default → best: 1 024 rows qkv 18.2 → 16.5, w13 43.7 → 39.6; 8 192 rows qkv 122.2 → 108.4, wo
# 43.0 → 39.7, w13 319.3 → 278.8.
TUNED_MIN_ROWS: int | None = 256


class Groups:
    """Encoder outputs of every slot waiting for a full adapter group (factor = 4 positions): fewer than
    4 rows per slot, kept on the device. One gather per call regroups the new rows of all slots."""

    def __init__(self, factor: int, dim: int, capacity: int):
        import cupy

        self.factor, self.keep = factor, factor - 1
        self.rows = cupy.zeros((capacity * self.keep, dim), np.uint16)  # slot s's waiting rows from s·keep
        self.waiting = [0] * capacity

    def reset(self, slot: int) -> None:
        self.waiting[slot] = 0

    def regroup(self, outputs: list, pieces: list[list[tuple[int, int, int]]], slots: list[int]):
        """outputs: passes' encoder outputs [T_p, E] bf16; pieces[i]: item i's new rows in order as
        (pass, first row, rows); slots[i]: its slot → (the complete groups' rows of all items, item after
        item [4Σk, E] bf16, or None; k per item). Each slot's rows left over wait for its next call."""
        base = np.cumsum([len(self.rows), *(len(h) for h in outputs)])[:-1]  # first row of each pass in src
        waiting = [self.waiting[s] for s in slots]
        n_rows = len(self.rows)
        g, carry, left, counts = group_rows(slots, waiting, pieces, base, self.keep, self.factor, n_rows)
        for s, w in zip(slots, left, strict=True):
            self.waiting[s] = w
        src = concat_rows([self.rows, *outputs])  # [keep·C + ΣT_p, E]
        idx = device_array(np.concatenate([g, carry]).astype(np.int32))
        out = ops.im2col_rows(src, idx[: len(g)].reshape(-1, 1)) if len(g) else None
        self.rows = ops.im2col_rows(src, idx[len(g) :].reshape(-1, 1))
        return out, counts


def group_rows(slots, waiting, pieces, base, keep: int, factor: int, n_rows: int):
    """The row indices of Groups.regroup, on the host: item i (slot s, waiting[i] rows waiting at s·keep,
    its new rows pieces[i] as (pass, first row, rows), pass p from row base[p]) has its rows in that order;
    their first multiple of `factor` forms groups, the rest waits → (the grouped rows, item after item;
    every waiting row after the call [n_rows] (slots not in the call keep theirs); rows left waiting per
    item; groups per item). Vectorised: a live tick of 128 slots costs about what one does."""
    starts, lengths, per_item = [], [], []
    for s, w, ps in zip(slots, waiting, pieces, strict=True):
        starts += [s * keep, *(base[p] + first for p, first, _ in ps)]
        lengths += [w, *(n for *_, n in ps)]
        per_item.append(w + sum(n for *_, n in ps))
    rows = ranges(np.asarray(starts, np.int64), np.asarray(lengths, np.int64))  # every item's rows in order
    total = np.asarray(per_item, np.int64)
    whole = total // factor * factor
    k = ranges(np.zeros(len(total), np.int64), total)  # index within the item
    grouped = k < np.repeat(whole, total)
    carry = np.arange(n_rows)
    target = np.repeat(np.asarray(slots, np.int64) * keep - whole, total) + k
    carry[target[~grouped]] = rows[~grouped]
    return rows[grouped], carry, (total - whole).tolist(), (whole // factor).tolist()


class PassBuffers:
    """Every activation of a captured pass of T rows: its CUDA graph reads its inputs (h, pos, slot; a
    tile table kept beside them) from here and writes only here and to the KV rings. `split`: with the
    split-attention workspace (live passes of few rows; the others attend through tiles only)."""

    def __init__(self, c, t: int, scratch_slot: int, split: bool = True):
        import cupy

        f32, bf16 = np.float32, np.uint16
        act = activation_dtype()
        self.h = cupy.zeros((t, c.dim), f32)  # the residual stream, in place
        # pos and slot: the rows of one array [2, T], so that one upload sets both (_positions)
        self.ids = device_array(np.stack([np.zeros(t, np.int32), np.full(t, scratch_slot, np.int32)]))
        self.pos, self.slot = self.ids[0], self.ids[1]
        self.x = cupy.empty((t, c.dim), bf16)
        self.qkv = cupy.empty((t, c.q_dim + 2 * c.kv_dim), act)
        self.q = cupy.empty((t, c.n_heads, c.head_dim), bf16)
        self.o = cupy.zeros((t, c.n_heads, c.head_dim), bf16)
        if split:
            self.workspace = split_workspace(c, t)
        self.gu = cupy.empty((t, 2 * c.hidden_dim), act)
        self.u = cupy.empty((t, c.hidden_dim), bf16)
        self.out = cupy.empty((t, c.dim), bf16)  # the final norm

    def head(self, t: int) -> PassBuffers:
        """The same buffers cut to their first t rows (views): passes of any size up to this one's share
        one allocation (they run one after another on one stream)."""
        view = object.__new__(PassBuffers)
        view.__dict__.update({name: a[:t] for name, a in vars(self).items() if name != "ids"})
        view.ids = None  # pos and slot cut to t rows are no longer one block
        return view


def split_workspace(c, t: int):
    """attention_split's workspace for a live split pass of t rows (LIVE_SPLITS)."""
    return ops.attention_workspace(t, c.n_heads, c.n_kv_heads, c.head_dim, LIVE_SPLITS)


def split_attention(c, pos, slot, workspace=None):
    """Every row through one attention_split launch (a live pass's short runs; LIVE_SPLITS)."""
    keys = None if LIVE_SPLITS is None else LIVE_SPLIT_KEYS

    def attend(q, cache, ring, i, out):
        w, hkv, pdl = c.sliding_window, c.n_kv_heads, chained(q.shape[0])  # as layer() does
        return ops.attention_split(
            q, cache, ring, pos, slot, w, n_kv_heads=hkv, out=out, workspace=workspace, pdl=pdl,
            splits=LIVE_SPLITS, min_keys=keys,
        )  # fmt: skip

    return attend


def tiled_attention(c, tiles, block_rows: int):
    """Every row in one attention_runs launch over the device tile table `tiles` (an offline pass)."""

    def attend(q, cache, ring, i, out):
        w, hkv, rows, pdl = c.sliding_window, c.n_kv_heads, block_rows, chained(q.shape[0])
        return ops.attention_runs(q, cache, ring, tiles, w, n_kv_heads=hkv, out=out, block_rows=rows, pdl=pdl)

    return attend


def mixed_attention(c, short_tiles, kv: KVCaches, runs: list[tuple[int, int, int, int]]):
    """The short runs through one attention_runs launch over the device table short_tiles (one-warp
    tiles, or None: no short run); each (start, end, slot, p0) of `runs` is one slot's consecutive
    positions p0 … (attention_tiled). Eager only (host-side slices)."""

    def attend(q, cache, ring, i, out):
        import cupy

        o = cupy.empty(q.shape, np.uint16) if out is None else out  # [T, H, Dh] bf16
        if short_tiles is not None:
            w, hkv, rows = c.sliding_window, c.n_kv_heads, LIVE_TILE_ROWS
            ops.attention_runs(q, cache, ring, short_tiles, w, n_kv_heads=hkv, out=o, block_rows=rows)
        for start, end, s, p0 in runs:
            k, v = kv.arrays[s]
            ops.attention_tiled(q[start:end], k[i], v[i], c.sliding_window, p0, out=o[start:end])
        return o

    return attend


def chained(rows: int) -> bool:
    """Whether a pass of `rows` rows launches its own kernels as programmatic dependent launches."""
    return CHAIN_ALL or rows <= CHAIN_ROWS


def activation_dtype():
    """The dtype of the qkv and w1|w3 GEMM outputs (BF16_ACTIVATIONS): bf16 (uint16 bit patterns) or f32."""
    return np.uint16 if BF16_ACTIVATIONS else np.float32


def layer(h, c, i: int, lw, prev_bias, pos, slot, kv: KVCaches, attend, buf: PassBuffers | None = None):
    """Encoder layer i over rows h [T, E] f32 in place (+ the previous layer's pending w2 bias); returns
    this layer's w2 bias. Row t is position pos[t] of slot slot[t]; attend(q, cache, ring, i, out) is the
    pass's attention (split_attention, tiled_attention, mixed_attention). buf: write every activation
    there (a captured pass; its GEMMs tuned from TUNED_MIN_ROWS rows)."""
    import cupy

    t = h.shape[0]
    b = (lambda name: None) if buf is None else (lambda name: getattr(buf, name))  # noqa: E731
    tune = buf is not None and TUNED_MIN_ROWS is not None and t >= TUNED_MIN_ROWS
    act = activation_dtype()
    pdl = chained(t)  # a live tick: every launch of the layer but cuBLAS's chained
    x = ops.rms_norm(h, lw.attention_norm, c.norm_eps, bias=prev_bias, out=b("x"), pdl=pdl)  # [T, E] bf16
    qkv = b("qkv") if buf is not None else cupy.empty((t, lw.wqkv.shape[0]), act)
    linear(x, lw.wqkv, out=qkv, tune=tune)  # [T, (H + 2Hkv)·Dh] bf16 (or f32)
    cache, ring = kv.layer(i)
    dims = {"n_kv_heads": c.n_kv_heads, "head_dim": c.head_dim}
    q = ops.rope_qkv(qkv, pos, slot, cache, ring, c.rope_theta, **dims, bias=lw.qkv_bias, out=b("q"), pdl=pdl)
    o = attend(q, cache, ring, i, b("o"))  # [T, H, Dh] bf16
    linear(o.reshape(t, c.q_dim), lw.wo, out=h, add=True, tune=tune)
    x = ops.rms_norm(h, lw.ffn_norm, c.norm_eps, bias=lw.wo_bias, out=b("x"), pdl=pdl)
    gu = b("gu") if buf is not None else cupy.empty((t, lw.w13.shape[0]), act)
    u = swiglu(x, lw.w13, gu=gu, out=b("u"), pdl=pdl, tune=tune)  # [T, F] bf16
    linear(u, lw.w2, out=h, add=True, tune=tune)
    return lw.w2_bias


def linear(x, w, out=None, add: bool = False, tune: bool = False):
    """out (=, or += with add) x · wᵀ for x [T, K] bf16, w [N, K] bf16, out [T, N] f32 (made when None)
    or bf16: a cuBLAS GEMM (tune: gemm.py's tuned algorithm)."""
    return gemm(x, w, out=out, beta=1.0 if add else 0.0, tune=tune)


def swiglu(x, w13, gu=None, out=None, pdl: bool = False, tune: bool = False):
    """silu(x · w1ᵀ) ⊙ (x · w3ᵀ) as bf16 [T, F] for x [T, E] bf16, w13 = [w1; w3] [2F, E] bf16: a cuBLAS
    GEMM into gu [T, 2F] f32 (made when None) or bf16, then silu_mul into out (made when None; pdl:
    chained)."""
    return ops.silu_mul(gemm(x, w13, out=gu, tune=tune), out=out, pdl=pdl)


def adapter(x, w: GpuWeights, cfg: ModelConfig):
    """[S, E] bf16 → [S/4, D] f32: 4 positions concatenated, Linear, GELU, Linear."""
    grouped = x.reshape(-1, cfg.adapter_in)  # [S/4, 4E] bf16, a view
    return gemm(ops.bias_gelu(gemm(grouped, w.adapter_w0)), w.adapter_w2)  # [N, D] f32


class Encoder:
    """Incremental encoders of up to `capacity` slots (the backend's Encoder, voxtral/backend.py)."""

    def __init__(self, w: GpuWeights, cfg: ModelConfig, cuda_stream, capacity: int, chunk: int):
        enc = cfg.encoder
        self.w, self.cfg, self.cuda_stream, self.capacity, self.chunk = w, cfg, cuda_stream, capacity, chunk
        self._graphs: dict[tuple[int, bool], object] = {}  # live pass (bucket rows, tiled) → its CUDA graph
        self._buffers: dict[int, PassBuffers] = {}  # live pass bucket → its buffers (both graphs)
        self._live_tiles: dict[int, object] = {}  # live pass bucket → its tile table (the tiled graph)
        self._offline: dict[int, tuple] = {}  # offline pass bucket (rows) → (graph, buffers, tile table)
        self._offline_buffers: PassBuffers | None = None  # of the largest bucket used so far
        self._ticks: dict[tuple[int, bool], object] = {}  # live bucket, tiled → graph of stem + layers
        self._stem_buffers: dict[int, StemBuffers] = {}  # live bucket → the stem's fixed buffers
        self._stems: dict[int, tuple] = {}  # frames bucket → (graph, buffers, outputs) of a stem group
        self._stem_room: StemBuffers | None = None  # their shared buffers, of the largest group so far
        self._stem_out = None  # and outputs [rows, E] f32
        self._tile_rows = next(iter(ops.TILED_ROWS[enc.head_dim]))  # query rows per attention block
        self._tiles = None  # device tile table of the offline passes, sized with _offline_buffers
        self.slots: list[int | None] = [None] * capacity  # an open slot's chunk: most positions per pass
        with cuda_stream:  # one KV slot more than the pool: `capacity`, never opened, for graphs' spare rows
            self.kv = KVCaches(enc.n_layers, capacity + 1, enc.n_kv_heads, enc.head_dim)
            self.stem = ConvStem(w, cfg.audio.num_mel_bins, enc.dim, capacity)
            self.groups = Groups(cfg.audio.downsample_factor, enc.dim, capacity)

    def free(self) -> int:
        return self.slots.count(None)

    def join(self, chunk: int | None = None) -> int:
        """A free slot for a new input; chunk: the most positions a pass gives it (default the pool's)."""
        import cupy

        chunk = self.chunk if chunk is None else chunk
        slot = self.slots.index(None)
        try:
            with self.cuda_stream:
                self.kv.open(slot, self.cfg.encoder.sliding_window + self._reach(chunk) - 1)
                self.stem.reset(slot)
                self.groups.reset(slot)
                self.slots[slot] = chunk
        except cupy.cuda.memory.OutOfMemoryError as e:
            from ..errors import DeviceError

            raise DeviceError(
                f"not enough GPU memory for one more encoder slot ({e}); use fewer inputs"
            ) from None
        return slot

    @staticmethod
    def _reach(chunk: int) -> int:
        """The most positions a pass gives a slot of this chunk: an offline slot's chunk and a last tail
        shorter than TAIL_ROWS (_pass); a live slot's chunk."""
        return chunk + TAIL_ROWS - 1 if chunk > LIVE_CHUNK_POSITIONS else chunk

    def leave(self, slot: int) -> None:
        with self.cuda_stream:
            self.kv.close(slot)
        self.slots[slot] = None

    def warm_up(self, rows: int, streams_only: bool = False) -> None:
        """Capture the live-pass graphs of every bucket up to the one holding `rows` rows now (the tiled
        one, and the split one below LIVE_TILED_MIN_ROWS) and every offline-pass graph (their rows all
        serve the scratch slot), so that no tick waits for a capture. streams_only: only what live
        streams alone take (split below LIVE_TILED_MIN_ROWS, and the offline bucket of a stream's left
        padding, which runs in passes of its chunk)."""
        with self.cuda_stream:
            for b in LIVE_BUCKETS:
                for tiled in (False, True) if b < LIVE_TILED_MIN_ROWS else (True,):
                    if not (streams_only and tiled and b < LIVE_TILED_MIN_ROWS):
                        self._live_graph(b, tiled)
                        self._tick_graph(b, tiled)
                if b >= rows:
                    break
            last = next(i for i, b in enumerate(OFFLINE_BUCKETS) if b >= LIVE_CHUNK_POSITIONS)
            buckets = OFFLINE_BUCKETS[: last + 1] if streams_only else OFFLINE_BUCKETS
            self._offline_room(buckets[-1])
            for b in buckets:
                self._offline_graph(b)

    def encode(self, items: list[tuple[int, np.ndarray]]) -> list:
        """(slot, its next mel frames [M, T], any T ≥ 0) → each slot's new audio embeddings [k, D] f32."""
        import cupy

        with self.cuda_stream:
            outputs, pieces = self._tick(items) or self._passes(items)
            grouped, counts = (
                self.groups.regroup(outputs, pieces, [slot for slot, _ in items]) if outputs else (None, [])
            )
            if grouped is None:
                return [cupy.zeros((0, self.cfg.decoder.dim), np.float32) for _ in items]
            embeds = adapter(grouped, self.w, self.cfg)  # [Σk, D] f32, one adapter pass for all
        offsets = np.cumsum([0, *counts])
        return [embeds[offsets[i] : offsets[i + 1]] for i in range(len(items))]

    def _passes(self, items) -> tuple[list, list[list]]:
        """The conv stem for all items, then passes of the layers over its rows → (per pass: encoder
        outputs [T, E] bf16; per item: (pass, first row, rows) of its outputs)."""
        conv, stem = self._stem(items)  # per item (first position, [n, E] f32); the stem's launch if due
        done = [0] * len(items)
        pieces: list[list] = [[] for _ in items]
        outputs = []
        while any(d < len(z) for d, (_, z) in zip(done, conv, strict=True)):
            parts = self._pass(items, conv, done)
            h = self._layers(parts, stem)  # [T, E] bf16
            stem = None
            start = 0
            for i, _, _, z in parts:
                pieces[i].append((len(outputs), start, len(z)))
                start += len(z)
                done[i] += len(z)
            outputs.append(h)
        if stem is not None:  # no output, but the slots' carried rows move on
            stem()
        return outputs, pieces

    def _stem(self, items) -> tuple[list[tuple[int, object]], object]:
        """The conv stem of a call that is not a live tick → (as ConvStem.feed, the launch still due or
        None). Items go in groups of ≤ CONV_ROWS mel frames, each one replay of its frames bucket's
        captured stem (STEM_FRAMES). A call of one group returns its launch undone: the first pass
        uploads its inputs, then launches the stem and at once its own graph (the GPU waited ~0.8 ms for
        the host between them); its outputs are views of the replay's buffers. With more groups, each is
        launched and its outputs copied (the next replay rewrites the buffers)."""
        groups, frames = [[]], 0
        for item in items:
            if groups[-1] and frames + item[1].shape[1] > CONV_ROWS:
                groups.append([])
                frames = 0
            groups[-1].append(item)
            frames += item[1].shape[1]
        out = []
        for group in groups:
            slots, lengths = [s for s, _ in group], [m.shape[1] for _, m in group]
            if not 0 < sum(lengths) <= CONV_ROWS:  # no new frame (one longer item: eager, its own groups)
                out += self.stem.feed(group)
                continue
            graph, sb, z = self._stem_graph(-(-sum(lengths) // STEM_FRAMES) * STEM_FRAMES)
            p = plan(slots, [self.stem.carried[s] for s in slots], lengths, self.capacity)
            self.stem.load(sb, group, p)
            launch = functools.partial(launch_graph, graph, self.cuda_stream)
            if len(groups) > 1:
                launch()
                z = clone(z[: sum(p.outputs)])
            out += [(first, z[start : start + n]) for first, start, n in self.stem.advance(slots, p)]
            if len(groups) == 1:
                return out, launch
        return out, None

    def _stem_graph(self, f: int) -> tuple:
        """(graph, stem buffers, outputs [r, E] f32) of a stem group of ≤ f new mel frames, captured on
        first use; its buffers are the first rows of one shared set, which grows with the largest f used
        (growing drops the graphs captured on the smaller set)."""
        import cupy

        if f not in self._stems:
            c, cap = self.cfg, self.capacity
            r = f // 2 + cap  # a slot's n outputs: (c + t − 1) // 2 ≤ t/2 + 1 for c ∈ {1, 2} carried rows
            dims = (c.audio.num_mel_bins, c.encoder.dim, cap)
            if self._stem_room is None or len(self._stem_room.y) < f:
                self.cuda_stream.synchronize()  # no replay of a dropped graph still running
                self._stems.clear()
                self._stem_room = self._stem_out = None  # freed before the larger set is allocated
                self._stem_room = StemBuffers(*dims, f, r)
                self._stem_out = cupy.empty((r, c.encoder.dim), np.float32)
            sb, z = StemBuffers(*dims, f, r, room=self._stem_room), self._stem_out[:r]
            sb.reset()  # the capture's eager run leaves every slot's carried rows as they are
            self._stems[f] = (capture(self.cuda_stream, functools.partial(self.stem.into, sb, z)), sb, z)
        return self._stems[f]

    def _tick(self, items) -> tuple[list, list[list]] | None:
        """A call whose rows fit one pass of short runs (a live tick) as one replay of its bucket's graph
        of the conv stem and the layers → as _passes; None when it does not fit one (an offline input's
        long piece, more rows than the largest bucket): then the stem and the passes run on their own.
        The pass attends as _live_pass's does."""
        slots, lengths = [s for s, _ in items], [m.shape[1] for _, m in items]
        if max(lengths, default=0) >= 2 * TILED_MIN_ROWS or sum(lengths) > TICK_FRAMES * LIVE_BUCKETS[-1]:
            return None  # a run of ≥ T // 2 positions, or too many frames: no need to plan (64 files: ~25 ms)
        p = plan(slots, [self.stem.carried[s] for s in slots], lengths, self.capacity)
        n, total = p.outputs, sum(p.outputs)
        fits = 0 < total <= LIVE_BUCKETS[-1] and max(n) < TILED_MIN_ROWS
        if not fits or any(k > self.slots[s] for s, k in zip(slots, n, strict=True)):
            return None
        b = next(b for b in LIVE_BUCKETS if b >= total)
        if len(p.rows0) > TICK_FRAMES * b:
            return None
        streams_only = all(self.slots[s] <= LIVE_CHUNK_POSITIONS for s, k in zip(slots, n, strict=True) if k)
        tiled = not streams_only or b >= LIVE_TILED_MIN_ROWS
        graph, buf, sb = self._tick_graph(b, tiled)
        self.stem.load(sb, items, p)
        placed = self.stem.advance(slots, p)  # per item (first position, first row, rows)
        spans = [(row, k, s, first) for s, (first, row, k) in zip(slots, placed, strict=True) if k]
        lengths = np.array([k for _, k, _, _ in spans], np.int64)
        pos = ranges(np.array([first for *_, first in spans], np.int64), lengths)
        self._positions(buf, pos, np.repeat(np.array([s for _, _, s, _ in spans], np.int64), lengths))
        if tiled:
            tiles = self._live_tiles[b]
            upload(tiles, ops.tiles_of(spans, LIVE_TILE_ROWS, len(tiles)))
        launch_graph(graph, self.cuda_stream)
        return [clone(buf.out[:total])], [[(0, row, k)] if k else [] for _, row, k in placed]

    def _tick_graph(self, b: int, tiled: bool) -> tuple:
        """(graph, pass buffers, stem buffers) of live bucket b's graph of the conv stem and the layers
        (tiled: attention_runs over the bucket's tile table; else attention_split), captured on first
        use; the buffers are the bucket's (_live_graph's)."""
        buf = self._live_buffers(b, tiled)
        if b not in self._stem_buffers:
            c = self.cfg
            args = (c.audio.num_mel_bins, c.encoder.dim, self.capacity, TICK_FRAMES * b, b)
            self._stem_buffers[b] = StemBuffers(*args)
        sb = self._stem_buffers[b]
        if (b, tiled) not in self._ticks:
            attend, tiles = self._live_attention(b, tiled, buf)
            sb.reset()  # the capture's eager run leaves every slot's carried rows as they are

            def run(cut=None):
                self.stem.into(sb, buf.h)
                self._run_layers(buf.h, buf.pos, buf.slot, attend, buf, cut)

            self._ticks[b, tiled] = self._capture(buf, attend, tiles, run)
        return self._ticks[b, tiled], buf, sb

    def _pass(self, items, conv, done) -> list[tuple[int, int, int, object]]:
        """The rows of the next pass: (item, slot, first position, conv rows [n, E]), ≤ the slot's chunk per
        slot (an offline slot's last rows of the call too when fewer than TAIL_ROWS would be left: no
        pass of a short tail) and ≤ PASS_ROWS in all; short runs first."""
        parts, total = [], 0
        for i, (first, z) in enumerate(conv):
            slot, left = items[i][0], len(z) - done[i]
            n = min(left, self.slots[slot], PASS_ROWS - total)
            room = min(self._reach(self.slots[slot]), PASS_ROWS - total)
            if n < left < n + TAIL_ROWS and left <= room:  # a short tail would be left: take it too
                n = left
            if n > 0:
                parts.append((i, slot, first + done[i], z[done[i] : done[i] + n]))
                total += n
        return sorted(parts, key=lambda p: len(p[3]) >= TILED_MIN_ROWS)

    def _layers(self, parts, before=None):
        """All layers and the final norm over the pass's rows → [T, E] bf16. before: launched once the
        pass's other inputs are uploaded, before its rows are read (the conv stem that makes them)."""

        lengths = np.array([len(z) for *_, z in parts], np.int64)
        pos = ranges(np.array([p0 for _, _, p0, _ in parts], np.int64), lengths)  # [T]
        slot = np.repeat(np.array([s for _, s, _, _ in parts], np.int64), lengths)  # [T]
        firsts = np.cumsum([0, *lengths[:-1]])
        spans = [(int(f), len(z), s, p0) for f, (_, s, p0, z) in zip(firsts, parts, strict=True)]
        runs = [(f, f + n, s, p0) for f, n, s, p0 in spans if n >= TILED_MIN_ROWS]
        short = [span for span in spans if span[1] < TILED_MIN_ROWS]
        if not runs and len(pos) <= LIVE_BUCKETS[-1]:
            streams_only = all(self.slots[s] <= LIVE_CHUNK_POSITIONS for _, s, _, _ in parts)
            return self._live_pass([z for *_, z in parts], pos, slot, spans, streams_only, before)
        if runs and not short and len(pos) <= OFFLINE_BUCKETS[-1]:
            return self._offline_pass([z for *_, z in parts], pos, slot, spans, before)
        if before is not None:
            before()
        h = concat_rows([z for *_, z in parts])  # [T, E] f32
        pos, slot = device_array(pos.astype(np.int32)), device_array(slot.astype(np.int32))
        tiles = device_array(ops.tiles_of(short, LIVE_TILE_ROWS)) if short else None
        attend = mixed_attention(self.cfg.encoder, tiles, self.kv, runs)
        return self._run_layers(h, pos, slot, attend)

    def _run_layers(self, h, pos, slot, attend, buf: PassBuffers | None = None, cut=None):
        """Every layer and the final norm over h [T, E] f32 → [T, E] bf16 (buf.out when buf is given).
        cut: called with i before layer i > 0 (a capture's cut points, GRAPH_CUTS)."""
        bias, enc = None, self.cfg.encoder
        for i, lw in enumerate(self.w.encoder_layers):
            if cut is not None and i:
                cut(i)
            bias = layer(h, enc, i, lw, bias, pos, slot, self.kv, attend, buf)
        out = None if buf is None else buf.out
        return ops.rms_norm(h, self.w.encoder_norm, enc.norm_eps, bias=bias, out=out)

    def _load(self, buf: PassBuffers, rows: list, pos: np.ndarray, slot: np.ndarray, before=None) -> int:
        """A captured pass's inputs into its buffers: the rows' positions and slots, spare rows (zero,
        position 0 of the scratch slot), then (after launching `before`, if given) the rows. Returns the
        real rows T."""
        t = len(pos)
        zero(buf.h[t:])
        self._positions(buf, pos, slot)
        if before is not None:
            before()
        if rows:
            concat_rows(rows, out=buf.h[:t])
        return t

    def _positions(self, buf: PassBuffers, pos: np.ndarray, slot: np.ndarray) -> None:
        """The rows' positions and slots into a captured pass's buffers, spare rows at position 0 of the
        scratch slot."""
        t, b = len(pos), len(buf.pos)
        ids = np.zeros((2, b), np.int32)
        ids[0, :t], ids[1, :t], ids[1, t:] = pos, slot, self.capacity
        if buf.ids is not None:  # one upload (a live tick waits for each on the host: ~25 µs)
            upload(buf.ids, ids)
        else:
            upload(buf.pos, ids[0])
            upload(buf.slot, ids[1])

    def _live_pass(self, rows: list, pos: np.ndarray, slot: np.ndarray, table: list, streams_only: bool,
                   before=None):  # fmt: skip
        """A pass of short runs only (a live tick) as one replay of its bucket's CUDA graph: the rows,
        positions and slots go into the bucket's buffers (spare rows serve the scratch slot), the runs
        (first row, rows, slot, first position) into its tile table if it takes tiles: every pass but
        one of live streams alone below LIVE_TILED_MIN_ROWS rows (attention_split). A pass holding an
        offline input's short run (its last positions) takes tiles at any size, so that an input's
        numerics never depend on what shares its pass (one-by-one runs and batches give the same tokens)."""
        b = next(b for b in LIVE_BUCKETS if b >= len(pos))
        tiled = not streams_only or b >= LIVE_TILED_MIN_ROWS
        buf = self._live_graph(b, tiled)
        if tiled:
            tiles = self._live_tiles[b]
            upload(tiles, ops.tiles_of(table, LIVE_TILE_ROWS, len(tiles)))
        t = self._load(buf, rows, pos, slot, before)
        launch_graph(self._graphs[b, tiled], self.cuda_stream)
        return clone(buf.out[:t])

    def _live_graph(self, b: int, tiled: bool = False) -> PassBuffers:
        """The buffers of bucket b, its graph of either attention (tiled: attention_runs over the
        bucket's tile table; else attention_split) captured on first use. Before a capture the buffers
        are reset (every row on the scratch slot, no tile): they may hold the last pass's inputs."""
        buf = self._live_buffers(b, tiled)
        if (b, tiled) not in self._graphs:
            attend, tiles = self._live_attention(b, tiled, buf)
            self._graphs[b, tiled] = self._capture(buf, attend, tiles)
        return buf

    def _live_buffers(self, b: int, tiled: bool) -> PassBuffers:
        """Live bucket b's pass buffers (with the split-attention workspace unless tiled, added when a
        split graph first needs it)."""
        enc = self.cfg.encoder
        if b not in self._buffers:
            self._buffers[b] = PassBuffers(enc, b, self.capacity, split=not tiled)
        buf = self._buffers[b]
        if not tiled and not hasattr(buf, "workspace"):
            buf.workspace = split_workspace(enc, b)
        return buf

    def _live_attention(self, b: int, tiled: bool, buf: PassBuffers) -> tuple:
        """(attention, tile table or None) of a live pass of bucket b: attention_runs over the bucket's
        one-warp tile table (made on first use), or attention_split over buf's rows."""
        enc = self.cfg.encoder
        if not tiled:
            return split_attention(enc, buf.pos, buf.slot, buf.workspace), None
        if b not in self._live_tiles:
            most = ops.tiles_needed(b, min(self.capacity, b), LIVE_TILE_ROWS)
            self._live_tiles[b] = device_array(np.zeros((most, 4), np.int32))
        tiles = self._live_tiles[b]
        return tiled_attention(enc, tiles, LIVE_TILE_ROWS), tiles

    def _capture(self, buf: PassBuffers, attend, tiles=None, run=None):
        """The CUDA graph of a pass over buf with this attention (run: what to capture, by default the
        layers over buf.h). Its inputs are reset first (every row on the scratch slot, no tile): buf may
        hold the last pass's, and the capture's eager run must write no open slot's ring."""
        self._load(buf, [], np.zeros(0, np.int64), np.zeros(0, np.int64))
        if tiles is not None:
            zero(tiles)
        if run is None:
            run = functools.partial(self._run_layers, buf.h, buf.pos, buf.slot, attend, buf)
        return capture(self.cuda_stream, run, (buf.h,), cuts=GRAPH_CUTS)

    def _offline_pass(self, rows: list, pos: np.ndarray, slot: np.ndarray, table: list, before) -> object:
        """A pass of long runs only (offline inputs) as one replay of its bucket's CUDA graph: the runs
        (first row, rows, slot, first position) into its tile table, rows, positions and slots into the
        bucket's buffers (`before` as _load)."""
        b = next(b for b in OFFLINE_BUCKETS if b >= len(pos))
        graph, buf, tiles = self._offline_graph(b)
        upload(tiles, ops.tiles_of(table, self._tile_rows, len(tiles)))
        t = self._load(buf, rows, pos, slot, before)
        launch_graph(graph, self.cuda_stream)
        return clone(buf.out[:t])

    def _offline_graph(self, b: int) -> tuple:
        """(graph, buffers, tile table) of offline bucket b, captured on first use; its buffers are the
        first b rows of one shared set (_offline_room)."""
        if b not in self._offline:
            self._offline_room(b)
            buf = self._offline_buffers.head(b)
            runs = min(self.capacity, b // TILED_MIN_ROWS)  # each run holds ≥ TILED_MIN_ROWS rows
            tiles = self._tiles[: ops.tiles_needed(b, runs, self._tile_rows)]
            attend = tiled_attention(self.cfg.encoder, tiles, self._tile_rows)
            self._offline[b] = (self._capture(buf, attend, tiles), buf, tiles)
        return self._offline[b]

    def _offline_room(self, b: int) -> None:
        """Shared offline-pass buffers (and tile table) of at least b rows and OFFLINE_MIN_ROWS: they grow
        with the largest bucket used (64 files: 8192 rows, ~0.75 GB at full size); growing drops the
        graphs captured on the smaller set (recaptured on their next use)."""
        if self._offline_buffers is None or len(self._offline_buffers.pos) < b:
            b = max(b, OFFLINE_MIN_ROWS)
            self.cuda_stream.synchronize()  # no replay of a dropped graph still running
            self._offline.clear()
            self._offline_buffers = None  # freed before the larger set is allocated
            self._offline_buffers = PassBuffers(self.cfg.encoder, b, self.capacity, split=False)
            most = ops.tiles_needed(b, self.capacity, self._tile_rows)
            self._tiles = device_array(np.zeros((most, 4), np.int32))

    def nbytes(self) -> int:
        """Device bytes of the KV rings and the captured passes' buffers."""
        bufs = [*self._buffers.values(), *([self._offline_buffers] if self._offline_buffers else [])]
        held = [*(a for buf in bufs for a in vars(buf).values()), *self._live_tiles.values()]
        return (
            self.kv.nbytes()
            + sum(a.nbytes for a in held)
            + (self._tiles.nbytes if self._tiles is not None else 0)
            + sum(sb.nbytes() for sb in [*self._stem_buffers.values(), *self._stems_held()])
            + (self._stem_out.nbytes if self._stem_out is not None else 0)
        )

    def _stems_held(self) -> list[StemBuffers]:
        """The stem groups' shared buffers and each group's own index table."""
        room = [] if self._stem_room is None else [self._stem_room]
        return [*room, *(sb for _, sb, _ in self._stems.values())]
