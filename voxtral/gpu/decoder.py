"""Text decoder on the GPU (SPEC §5): up to C slots stepped together, each step one CUDA graph replay.

A slot is one decoder stream: its own ring KV caches (voxtral/gpu/kv.py, sized for what it serves and
grown as it goes), a ring of audio embeddings the host fills ahead of each burst, its position and
next input token. A row is a place in the batched step. A step over k slots replays the graph of the
smallest bucket B ≥ k, which runs rows 0 … B−1; row r serves slot slot[r]. Everything a step touches
is a fixed device buffer: the input token, the position, the slot and the row's KV cache addresses
(the slot tables laid out per row, so the kernels need no dependent load) are read from device
memory, and argmax_advance writes the next token, advances the position and records the token in a
history ring that the host reads once per round, so a graph is captured once per bucket and replayed
unchanged. Changing which slots the rows serve is a few small uploads before the launch; spare rows
write and read a one-row scratch cache (never an open slot's ring, which they would run ahead of).
Batch size 1 is the smallest bucket.
Shapes: C slots, B rows, T positions, D dim, H/Hkv heads, Dh head dim, F ffn, V vocab, Ra audio ring.
"""

from __future__ import annotations

import copy as shallow
import functools
import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..config import DecoderConfig
from . import ops
from .conv import ranges
from .copy import copy, device_array, upload
from .gemm import gemm
from .gemv import MAX_BATCH, Bulk, Rope, fuses_rope, gemv, step_configs
from .graphs import capture, fastest
from .kv import KVCaches
from .launch import launch_graph
from .layers import Tables, decoder_layers
from .layers import available as layers_available
from .layers import fits as layers_fit
from .skinny import MAX_ROWS as SKINNY_ROWS
from .skinny import available as skinny_available
from .skinny import skinny_gemm
from .weights import GpuWeights

log = logging.getLogger(__name__)
AUDIO_RING = 256  # audio embedding rows per slot; the host fills them ahead of the rounds that need them
HISTORY = 64  # token history rows per slot: the steps of one round
PREFILL_CHUNK = AUDIO_RING // 2  # positions of a slot per prefill pass: their audio fits the ring
PREFILL_ROWS = 4096  # rows (slots × positions) of one prefill pass: its scratch is ~75 KB a row
BUCKETS = (1, 2, 4, 8, 16, 32, 64)  # batch sizes with a graph; the capacity itself is the last
# Steps a bucket of ≤ 64 rows may take with skinny_gemm (timed against the fused GEMVs and cuBLAS): every
# projection, or only w13 (its SwiGLU fused: the one shape where it beats cuBLAS at 64 rows on an H200,
# 35.4 µs against 34.5 + silu_mul's 2.6; qkv 14.2 / 12.9, wo 14.5 / 10.1, w2 26.8 / 21.5: cuda/README.md).
SKINNY_PATHS = {
    "skinny": frozenset({"qkv", "wo", "w13", "w2", "output"}),
    "skinny-w13": frozenset({"w13"}),
}
# The fused step's attention as attention_split_light (≤ 104 registers a thread, 13 K a block, so its
# blocks fit beside the qkv and wo GEMV blocks on an SM and start before they leave). Prepared 2026-12-03
# without device time left to time it: dev/step_profile.py --variants shipped,attn-light decides.
LIGHT_ATTENTION = False
# A bucket under attention_split's wide rule (≥ ops.SPLIT_BLOCKS (row, kv head) pairs: ops.SPLIT_WIDE
# splits of ≥ ops.SPLIT_WIDE_MIN_KEYS keys each) whose rows' windows all fit one split steps through a
# second graph of one split per pair: the same keys in the same order (bitwise the wide graph's output)
# without the SPLIT_WIDE − 1 blocks per pair that find no keys and leave. H200, full size, B = 64, ctx
# 400 (dev/step_profile.py variants split-1 / shipped, cuBLAS path): step 3379 against 3420 µs,
# attention_split 36.7 against 42.2 µs a layer; at ctx 5000 one split loses (12078 against 11203).
NARROW_SPLITS = True
RING_ALIGN = 64  # KV ring lengths are multiples of this (or the window)
LIVE_RING = 1024  # first KV ring of a slot whose length is unknown; it doubles up to the window
ROW_ARRAYS = ("tokens", "pos", "slot", "history", "h", "x", "qkv", "q", "o", "gu", "u", "logits")


class DecoderBuffers:
    """The device memory of a batched step for up to C rows, and the audio rings of C slots."""

    def __init__(self, cfg: DecoderConfig, capacity: int):
        import cupy

        c, d = capacity, cfg.dim
        self.batch = capacity
        self.audio = cupy.zeros((c, AUDIO_RING, d), np.float32)  # [C, Ra, D] per slot
        self.tokens = cupy.zeros(c, np.int32)  # [B] input token of the next step
        self.pos = cupy.zeros(c, np.int32)  # [B] position of the next step
        self.slot = device_array(np.arange(c, dtype=np.int32))  # [B] the slot each row serves
        self.history = cupy.zeros((c, HISTORY), np.int32)  # [B, K] token chosen at position p in row p % K
        self.h = cupy.empty((c, d), np.float32)  # [B, D] residual stream
        self.x = cupy.empty((c, d), np.uint16)  # [B, D] normed input of a GEMM, bf16
        self.qkv = cupy.empty((c, cfg.q_dim + 2 * cfg.kv_dim), np.float32)
        self.q = cupy.empty((c, cfg.n_heads, cfg.head_dim), np.uint16)
        self.o = cupy.empty((c, cfg.n_heads, cfg.head_dim), np.uint16)
        self.workspace = ops.attention_workspace(c, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim)
        self.gu = cupy.empty((c, 2 * cfg.hidden_dim), np.float32)  # [B, 2F] gate | up
        self.u = cupy.empty((c, cfg.hidden_dim), np.uint16)  # [B, F] bf16
        self.logits = cupy.empty((c, cfg.vocab_size), np.float32)  # [B, V]
        self.cache = cupy.zeros((cfg.n_layers, c, 2), np.uint64)  # [L, B, 2] K, V addresses per row
        self.ring = device_array(np.ones(c, np.int32))  # [B] KV ring length per row
        self.schedule = cupy.zeros((4 * cfg.n_layers + 1, 2), np.int32)  # tile counters per GEMV launch site
        self.barrier = cupy.zeros(2, np.uint32)  # decoder_layers' grid-barrier counts (left zero)
        self.splits = None  # attention_split's splits per (row, kv head): ops.attention_splits

    def layer(self, i: int) -> tuple:
        """(cache [B, 2], ring [B]) of layer i, laid out per row (the kernels' tables, slot=None)."""
        return self.cache[i], self.ring

    def nbytes(self) -> int:
        return sum(getattr(self, n).nbytes for n in vars(self) if hasattr(getattr(self, n), "nbytes"))

    def rows(self, b: int, splits: int | None = None) -> DecoderBuffers:
        """The first b rows as buffers of batch b (views; audio rings shared; own attention workspace and
        GEMV tile counters). splits: attention_split's splits per (row, kv head) in a step over them
        (None: ops.attention_splits)."""
        import cupy

        view = shallow.copy(self)
        for name in ROW_ARRAYS:
            setattr(view, name, getattr(self, name)[:b])
        view.batch, view.splits = b, splits
        n_heads, dh = self.q.shape[1], self.q.shape[2]
        view.workspace = ops.attention_workspace(b, n_heads, self.workspace.shape[1], dh, splits)
        view.schedule = cupy.zeros((len(self.schedule), 2), np.int32)
        view.barrier = cupy.zeros(2, np.uint32)
        return view


def layers(
    w: GpuWeights, cfg: DecoderConfig, kv, h, pos, slot, scratch, pdl=False, fused=True, skinny=frozenset()
) -> None:
    """All decoder layers over h [T, D] f32 (in place) at positions pos [T] of slots slot [T].

    kv.layer(i) gives layer i's cache tables: KVCaches' per slot, or DecoderBuffers' laid out per row
    (then slot is None).

    scratch holds the per-position buffers (x, qkv, q, o, workspace, gu, u) sized for T. Up to
    gemv.MAX_BATCH positions (a step) the fused GEMVs carry each RMSNorm, the SwiGLU and the residual
    adds; more (prefill, big batches) take cuBLAS GEMMs. pdl chains the step's launches with
    programmatic dependent launch, so each kernel streams its weights while the previous one ends.
    fused=False takes the cuBLAS path at any T (which is faster depends on the GPU: Decoder times both);
    skinny names the projections ("qkv", "wo", "w13", "w2") that take skinny_gemm instead, up to
    skinny.MAX_ROWS positions: w13's SwiGLU in its epilogue, each launch chained by PDL.
    """
    t, eps = h.shape[0], cfg.norm_eps
    fused = fused and t <= MAX_BATCH
    skinny = frozenset() if fused or t > SKINNY_ROWS else frozenset(skinny)

    def project(x, wt, out, epilogue, name):
        if name in skinny:
            return skinny_gemm(x, wt, out, epilogue=epilogue, pdl=pdl)
        if epilogue == "swiglu":
            return ops.silu_mul(gemm(x, wt, out=scratch.gu), out=out)
        return gemm(x, wt, out=out, beta=1.0 if epilogue == "add" else 0.0)

    cfgs = step_configs(t)
    sched = getattr(scratch, "schedule", None)  # [4·layers + 1, 2] tile counters (DecoderBuffers)
    site = (lambda i, j: sched[4 * i + j]) if sched is not None else (lambda i, j: None)
    dims = {"n_kv_heads": cfg.n_kv_heads}
    step = pdl and slot is None  # a step: each row one slot at one position, written before but its own
    ws = w.decoder_layers
    for i, lw in enumerate(ws):
        cache, ring = kv.layer(i)
        # the weights read next, warmed in L2 as a bulk GEMV of a step runs out of copies to issue
        after = ws[i + 1].wqkv if i + 1 < len(ws) else w.tok_embeddings
        warm = {n: (a if step and isinstance(cfgs[n], Bulk) else None)
                for n, a in (("qkv", lw.wo), ("wo", lw.w13), ("w13", lw.w2), ("w2", after))}  # fmt: skip
        if fused and fuses_rope(h, lw.wqkv, cfgs["qkv"]):  # q, k, v turned and stored by the GEMV itself
            rope = Rope(pos, slot, cache, ring, cfg.rope_theta, cfg.n_kv_heads, cfg.head_dim)
            q = gemv(h, lw.wqkv, scratch.q, norm_weight=lw.attention_norm, eps=eps, epilogue="rope",
                     rope=rope, pdl=pdl, config=cfgs["qkv"], schedule=site(i, 0),
                     prefetch=warm["qkv"])  # fmt: skip
        else:
            if fused:
                qkv = gemv(h, lw.wqkv, scratch.qkv, norm_weight=lw.attention_norm, eps=eps, pdl=pdl,
                           config=cfgs["qkv"], schedule=site(i, 0))  # fmt: skip
            else:
                x = ops.rms_norm(h, lw.attention_norm, eps, out=scratch.x, pdl=pdl and "qkv" in skinny)
                qkv = project(x, lw.wqkv, scratch.qkv, "store", "qkv")
            q = ops.rope_qkv(qkv, pos, slot, cache, ring, cfg.rope_theta, **dims, head_dim=cfg.head_dim,
                             out=scratch.q, pdl=pdl)  # fmt: skip
        o = ops.attention_split(
            q, cache, ring, pos, slot, cfg.sliding_window, **dims, out=scratch.o,
            workspace=scratch.workspace, pdl=pdl, early=step, light=fused and LIGHT_ATTENTION,
            splits=getattr(scratch, "splits", None),
        )  # fmt: skip
        if fused:
            gemv(o.reshape(t, cfg.q_dim), lw.wo, h, epilogue="add", pdl=pdl, config=cfgs["wo"],
                 schedule=site(i, 1), prefetch=warm["wo"])  # fmt: skip
            gemv(
                h,
                lw.w13,
                scratch.u,
                norm_weight=lw.ffn_norm,
                eps=eps,
                epilogue="swiglu",
                pdl=pdl,
                config=cfgs["w13"],
                schedule=site(i, 2),
                prefetch=warm["w13"],
            )
            gemv(scratch.u, lw.w2, h, epilogue="add", pdl=pdl, config=cfgs["w2"], schedule=site(i, 3),
                 prefetch=warm["w2"])  # fmt: skip
        else:
            project(o.reshape(t, cfg.q_dim), lw.wo, h, "add", "wo")
            x = ops.rms_norm(h, lw.ffn_norm, eps, out=scratch.x, pdl=pdl and "w13" in skinny)
            project(x, lw.w13, scratch.u, "swiglu", "w13")
            project(scratch.u, lw.w2, h, "add", "w2")


def skinny_fits(cfg: DecoderConfig) -> bool:
    """Whether skinny_gemm takes the decoder's projections: every K (dim, q_dim, hidden_dim) a multiple
    of its 16-byte copies."""
    return cfg.dim % 8 == 0 and cfg.q_dim % 8 == 0 and cfg.hidden_dim % 8 == 0


def step(
    w: GpuWeights,
    cfg: DecoderConfig,
    buf: DecoderBuffers,
    pdl: bool = True,
    fused: bool = True,
    skinny: frozenset = frozenset(),
    persistent: Tables | None = None,
) -> None:
    """One greedy step of every row; only device buffers in and out (capturable). fused: the fused
    GEMVs up to MAX_BATCH rows (else GEMMs with separate norm kernels: cuBLAS, or skinny_gemm up to
    SKINNY_ROWS rows for the projections named in skinny: "qkv", "wo", "w13", "w2", "output").
    persistent: the model's decoder_layers tables: every layer in one persistent launch (up to
    MAX_BATCH rows, where layers.available and layers.fits hold), then the fused output head."""
    ops.embed(buf.tokens, w.tok_embeddings, buf.audio, buf.pos, buf.slot, out=buf.h, pdl=pdl)
    if persistent is not None:
        decoder_layers(persistent, cfg, buf, pdl=pdl, prefetch=w.tok_embeddings if pdl else None)
    else:
        layers(w, cfg, buf, buf.h, buf.pos, None, buf, pdl=pdl, fused=fused, skinny=skinny)
    if fused and buf.batch <= MAX_BATCH:
        out = step_configs(buf.batch)["output"]
        gemv(
            buf.h,
            w.tok_embeddings,
            buf.logits,
            norm_weight=w.norm,
            eps=cfg.norm_eps,
            pdl=pdl,
            config=out,
            schedule=buf.schedule[-1],
            prefetch=w.decoder_layers[0].wqkv if pdl and isinstance(out, Bulk) else None,  # the next step's
        )
    elif "output" in skinny and buf.batch <= SKINNY_ROWS:
        x = ops.rms_norm(buf.h, w.norm, cfg.norm_eps, out=buf.x, pdl=pdl)
        skinny_gemm(x, w.tok_embeddings, buf.logits, pdl=pdl)
    else:
        gemm(ops.rms_norm(buf.h, w.norm, cfg.norm_eps, out=buf.x), w.tok_embeddings, out=buf.logits)
    ops.argmax_advance(buf.logits, buf.tokens, buf.pos, buf.history, pdl=pdl)


class PrefillScratch:
    """Per-position buffers for a prefill of T positions (allocated per call, not graphed)."""

    def __init__(self, cfg: DecoderConfig, t: int):
        import cupy

        self.x = cupy.empty((t, cfg.dim), np.uint16)
        self.qkv = cupy.empty((t, cfg.q_dim + 2 * cfg.kv_dim), np.float32)
        self.q = cupy.empty((t, cfg.n_heads, cfg.head_dim), np.uint16)
        self.o = cupy.empty((t, cfg.n_heads, cfg.head_dim), np.uint16)
        self.workspace = ops.attention_workspace(t, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim)
        self.gu = cupy.empty((t, 2 * cfg.hidden_dim), np.float32)
        self.u = cupy.empty((t, cfg.hidden_dim), np.uint16)


def prefill(
    w: GpuWeights, cfg: DecoderConfig, kv: KVCaches, buf: DecoderBuffers, slots: list[int], tokens, p0: int
) -> None:
    """Positions p0 … p0+T−1 of each of k slots with inputs tokens [T] (the same for every slot), all
    k·T rows in one pass per layer (a row's attention reads its own slot's cache)."""

    t, k = len(tokens), len(slots)
    rows = np.empty((3, k * t), np.int32)  # position, slot, input token of each row: one upload
    rows[0] = np.tile(np.arange(p0, p0 + t, dtype=np.int32), k)
    rows[1] = np.repeat(np.asarray(slots, np.int32), t)
    rows[2] = np.tile(np.asarray(tokens, np.int32), k)
    pos, slot, ids = device_array(rows)
    h = ops.embed(ids, w.tok_embeddings, buf.audio, pos, slot)  # [k·T, D]
    layers(w, cfg, kv, h, pos, slot, PrefillScratch(cfg, k * t))


@dataclass
class SlotState:
    """A slot's host side: its position, next input, and audio embeddings not yet in its ring."""

    chunks: deque = field(default_factory=deque)  # (first position, [k, D] f32 device embeddings) not fed
    available: int = 0  # positions with an audio embedding so far
    pos: int = 0  # next position (host mirror of the device counter)
    fed: int = 0  # audio positions copied into the ring so far
    token: int = 0  # input token of the next step

    def append(self, embeds) -> None:
        if len(embeds):
            self.chunks.append((self.available, embeds))
            self.available += len(embeds)

    def take(self, upto: int) -> list[tuple]:
        """The embeddings of positions [fed, upto) not yet in the ring, counted as fed: pieces (rows
        [n, D] f32 device, first ring row), which the caller copies (stream-ordered) before any step."""
        upto = min(upto, self.available)
        assert upto - self.pos <= AUDIO_RING, "audio fed further ahead than the ring holds"
        pieces = []
        while self.fed < upto:
            first, chunk = self.chunks[0]
            row, i = self.fed % AUDIO_RING, self.fed - first
            n = min(upto - self.fed, AUDIO_RING - row, len(chunk) - i)
            pieces.append((chunk[i : i + n], row))
            self.fed += n
            if self.fed == first + len(chunk):
                self.chunks.popleft()  # the ring will hold it
        return pieces


def buckets(capacity: int) -> tuple[int, ...]:
    return tuple(b for b in BUCKETS if b < capacity) + (capacity,)


class Decoder:
    """Up to `capacity` decoder slots on the GPU (the backend's Decoder, voxtral/backend.py)."""

    burst = HISTORY // 4  # steps between two host looks at the tokens

    def __init__(self, weights: GpuWeights, cfg: DecoderConfig, cuda_stream, capacity: int):
        import cupy

        self.weights, self.cfg, self.cuda_stream, self.capacity = weights, cfg, cuda_stream, capacity
        try:
            with cuda_stream:
                self.buf = DecoderBuffers(cfg, capacity)
                self.kv = KVCaches(cfg.n_layers, capacity, cfg.n_kv_heads, cfg.head_dim)
        except cupy.cuda.memory.OutOfMemoryError as e:
            raise _out_of_memory(f"decoder buffers for {capacity} slots", e) from None
        self.slots: list[SlotState | None] = [None] * capacity
        self.buckets = buckets(capacity)
        self._graphs: dict[int, object] = {}
        self._views: dict[int, DecoderBuffers] = {}
        self._narrow: dict[int, object] = {}  # bucket → its graph of one attention split (NARROW_SPLITS)
        self.paths: dict[int, str] = {}  # bucket → the step path its graph takes ("fused" or "cuBLAS")
        self.path_ms: dict[int, dict] = {}  # bucket → {path: median ms of the timed replays}
        self._layout: tuple | None = None  # (slots the device rows serve, KV table version) now

    # --- slots ---------------------------------------------------------------------------------
    def free(self) -> int:
        return self.slots.count(None)

    def join(self, positions: int | None = None) -> int:
        """A free slot for a new stream; positions: how many it will likely run (sizes its KV ring)."""
        import cupy

        slot = self.slots.index(None)
        rows = self._ring_rows(LIVE_RING if positions is None else positions)
        try:
            with self.cuda_stream:
                self.kv.open(slot, rows)
        except cupy.cuda.memory.OutOfMemoryError as e:
            raise _out_of_memory(f"the KV cache of one more stream ({rows} positions)", e) from None
        self.slots[slot] = SlotState()
        self._layout = None
        return slot

    def leave(self, slot: int) -> None:
        with self.cuda_stream:
            self.kv.close(slot)
        self.slots[slot] = None
        self._layout = None

    def warm_up(self, rows: int | None = None) -> None:
        """Capture (and time) every bucket's graph now (rows: those up to the one holding `rows`), its rows
        all spare (scratch cache, position 0), so that a server's first steps at each batch size do not
        stall its other streams for the capture."""
        with self.cuda_stream:
            for b in self.buckets:
                if b not in self._graphs or (self._splits_wide(b) and b not in self._narrow):
                    self._lay_out([], b)
                    self._graph(b)
                    if self._splits_wide(b):
                        self._narrow_graph(b)
                    self._layout = None  # the rows served the scratch cache: the next step lays them out
                if rows is not None and b >= rows:
                    break

    def _ring_rows(self, positions: int) -> int:
        """A ring for `positions` positions: a multiple of RING_ALIGN, at most the window."""
        return min(self.cfg.sliding_window, max(RING_ALIGN, -(-positions // RING_ALIGN) * RING_ALIGN))

    def _fit(self, slot: int, upto: int) -> None:
        """Grow the slot's ring (doubling, up to the window) so that positions < upto never wrap early."""
        rows = self.kv.rows(slot)
        if rows < self.cfg.sliding_window and upto > rows:
            self.kv.grow(slot, self._ring_rows(max(2 * rows, upto)), keep=self.slots[slot].pos)

    def append_audio(self, slot: int, embeds) -> None:
        """Audio embeddings [k, D] f32 (device) for the slot's next positions."""
        self.slots[slot].append(embeds)

    def available(self, slot: int) -> int:
        """Positions of the slot with audio that have not run yet."""
        s = self.slots[slot]
        return s.available - s.pos

    def prefill(self, slots: list[int], tokens: np.ndarray) -> None:
        """Positions 0 … len−2 of each slot with the given inputs; tokens[−1] is their first step's input.

        The slots run together, PREFILL_ROWS rows a pass, in pieces of PREFILL_CHUNK positions so that
        the audio ring holds each piece's embeddings.
        """
        tokens = np.asarray(tokens)
        n = len(tokens) - 1
        states = [self.slots[i] for i in slots]
        for i, s in zip(slots, states, strict=True):
            if s.available < n + 1:
                raise ValueError(
                    f"slot {i}: prefill of {n + 1} positions with audio for {s.available}: append_audio first"
                )
        with self.cuda_stream:
            for i in slots:
                self._fit(i, n + 1)
            for p0 in range(0, n, PREFILL_CHUNK):
                part = tokens[p0 : min(p0 + PREFILL_CHUNK, n)]
                self._feed(slots, states, p0 + len(part) + 1)  # + the first step's position
                per_pass = max(1, PREFILL_ROWS // len(part))
                for g in range(0, len(slots), per_pass):
                    prefill(self.weights, self.cfg, self.kv, self.buf, slots[g : g + per_pass], part, p0)
                for s in states:
                    s.pos = p0 + len(part)
            self._feed(slots, states, n + 1)
        for s in states:
            s.pos, s.token = n, int(tokens[-1])
        self._layout = None

    # --- steps ---------------------------------------------------------------------------------
    def step(self, slots: list[int], n: int, inputs=None, logits: bool = False):
        """n greedy steps of every given slot together → (tokens [k, n], logits [k, n, V] f32 or None).

        inputs [k, n]: the input token of each step (teacher forcing) instead of the previous argmax.
        Rounds of at most HISTORY graph replays, one read of the history ring per round; logits cost
        a copy to the host per step.
        """
        self._check(slots, n)
        k = len(slots)
        tokens = np.empty((k, n), np.int64)
        out = np.empty((k, n, self.cfg.vocab_size), np.float32) if logits else None
        with self.cuda_stream:
            try:
                for start in range(0, n, HISTORY):
                    count = min(HISTORY, n - start)
                    part = None if inputs is None else np.asarray(inputs)[:, start : start + count]
                    lg = None if out is None else out[:, start : start + count]
                    tokens[:, start : start + count] = self._round(slots, count, part, lg)
            except BaseException:
                self._layout = None  # the device rows may be ahead of the host: lay them out again
                raise
        return tokens, out

    def _round(self, slots: list[int], count: int, inputs, logits) -> np.ndarray:
        """count graph replays of the bucket that holds slots → the tokens chosen [k, count]."""
        import cupy

        pieces = []
        for i in slots:
            s = self.slots[i]
            self._fit(i, s.pos + count)
            if s.fed < s.pos + count:  # fill the ring as far ahead as it holds: once per ~15 rounds
                pieces += [(i, rows, row) for rows, row in s.take(s.pos + AUDIO_RING)]
        self._fill_rings(pieces)
        b = self._lay_out(slots)
        longest = min(self.cfg.sliding_window, max(self.slots[i].pos for i in slots) + count)  # keys
        narrow = self._splits_wide(b) and longest <= ops.split_min_keys(b, self.cfg.n_kv_heads)
        graph = self._narrow_graph(b) if narrow else self._graph(b)
        k, buf = len(slots), self.buf
        for j in range(count):
            if inputs is not None:
                buf.tokens[:k].set(np.ascontiguousarray(inputs[:, j], np.int32), stream=self.cuda_stream)
            launch_graph(graph, self.cuda_stream)
            if logits is not None:
                logits[:, j] = cupy.asnumpy(buf.logits[:k], stream=self.cuda_stream)
        history = cupy.asnumpy(buf.history[:k], stream=self.cuda_stream)  # [k, K], syncs
        states = [self.slots[i] for i in slots]
        pos = np.array([s.pos for s in states])  # [k]
        out = history[np.arange(k)[:, None], (pos[:, None] + np.arange(count)) % HISTORY].astype(np.int64)
        for s, last in zip(states, out[:, -1].tolist(), strict=True):
            s.pos += count
            s.token = last
        return out

    def _feed(self, slots: list[int], states: list[SlotState], upto: int) -> None:
        """Each slot's embeddings of positions below upto not yet in its ring → the ring (one launch)."""
        self._fill_rings(
            [(i, rows, row) for i, s in zip(slots, states, strict=True) for rows, row in s.take(upto)]
        )

    def _fill_rings(self, pieces: list[tuple]) -> None:
        """(slot, rows [n, D] f32, first ring row) → the slots' audio rings: a copy for one piece, else one
        scatter_rows launch for all (a live tick of 128 sessions brings 128 pieces of a row each)."""
        if len(pieces) <= 1:
            for slot, rows, row in pieces:
                copy(self.buf.audio[slot, row : row + len(rows)], rows)
            return
        for _, rows, _ in pieces:
            assert rows.dtype == np.float32 and rows.flags.c_contiguous, "embeddings must be f32 rows"
        counts = np.array([len(rows) for _, rows, _ in pieces], np.int64)
        addr = np.array([rows.data.ptr for _, rows, _ in pieces], np.int64)
        first = np.array([slot * AUDIO_RING + row for slot, _, row in pieces], np.int64)
        step = self.cfg.dim * 4
        table = np.stack([ranges(addr, counts, step), ranges(first, counts)])  # [2, R]: source, ring row
        src, dst = device_array(table)
        ops.scatter_rows(src, dst, self.buf.audio)

    def _check(self, slots: list[int], n: int) -> None:
        ok = 1 <= len(slots) <= self.capacity and len(set(slots)) == len(slots)
        assert ok and n >= 1, f"bad slots {slots} or step count {n}"
        for i in slots:
            s = self.slots[i]
            if s is None:
                raise ValueError(f"slot {i} is not in use")
            if s.pos + n > s.available:
                raise ValueError(f"slot {i}: position {s.pos + n - 1} has no audio embedding yet")

    def _lay_out(self, slots: list[int], b: int | None = None) -> int:
        """Rows 0 … k−1 serve `slots`, the rest of bucket b (default: the smallest that holds them) the
        scratch cache; returns the bucket B."""

        b = next(c for c in self.buckets if c >= len(slots)) if b is None else b
        spare = b - len(slots)
        layout = (list(slots), b, self.kv.version)
        if layout != self._layout:
            states = [self.slots[i] for i in slots]
            buf = self.buf
            # a spare row reads slot 0's audio ring (any slot's: only read) at position 0, token 0
            upload(buf.slot[:b], np.array(list(slots) + [0] * spare, np.int32))
            upload(buf.pos[:b], np.array([s.pos for s in states] + [0] * spare, np.int32))
            upload(buf.tokens[:b], np.array([s.token for s in states] + [0] * spare, np.int32))
            table, ring = self.kv.per_row(slots, spare)
            upload(buf.cache[:, :b], table)
            upload(buf.ring[:b], ring)
            self._layout = layout
        return b

    def _graph(self, b: int):
        """The step of bucket b as a CUDA graph. Up to MAX_BATCH rows the step can take the fused GEMVs,
        up to SKINNY_ROWS skinny_gemm, at any size cuBLAS GEMMs (and up to MAX_BATCH rows, where
        layers.available and layers.fits hold, the persistent decoder_layers step): each is captured,
        timed on the rows' real state, and the fastest kept (on an H200 the fused GEMVs win at B = 1 and
        lose at B = 8: which wins depends on the GPU and B); the fused path (f32 activations into the
        GEMVs), else cuBLAS, unless another is more than 5 % faster."""
        if b not in self._graphs:
            view = self._views[b] = self.buf.rows(b)
            state = (view.tokens, view.pos, view.history)
            paths = {"fused": frozenset()} if b <= MAX_BATCH else {}
            tables = self._tables if b <= MAX_BATCH else None
            if tables is not None:
                paths["persistent"] = frozenset()
            if b <= SKINNY_ROWS and self._skinny():
                paths |= SKINNY_PATHS
            paths["cuBLAS"] = frozenset()
            runs = {p: self._run(view, p, names, tables) for p, names in paths.items()}
            made = {}
            for p, run in runs.items():
                try:
                    made[p] = capture(self.cuda_stream, run, state)
                except RuntimeError as e:  # a cluster or cooperative launch refused (MPS, a partitioned GPU)
                    if p not in SKINNY_PATHS and p != "persistent":
                        raise
                    log.warning("decoder bucket %d: %s path not captured (%s)", b, p, e)
            prefer = "fused" if "fused" in made else "cuBLAS"
            self._graphs[b], self.path_ms[b] = fastest(self.cuda_stream, made, state, prefer=prefer)
            self.paths[b] = next(p for p, g in made.items() if g is self._graphs[b])
            log.info("decoder bucket %d: %s path %s", b, self.paths[b], self.path_ms[b] or "")
        return self._graphs[b]

    def _run(self, view: DecoderBuffers, path: str, names: frozenset, tables):
        """A step of `path` over view's rows (what a bucket's graph captures)."""
        fused, persistent = path in ("fused", "persistent"), tables if path == "persistent" else None
        return functools.partial(step, self.weights, self.cfg, view, fused=fused, skinny=names,
                                 persistent=persistent)  # fmt: skip

    def _splits_wide(self, b: int) -> bool:
        """Whether bucket b's attention takes the wide rule, so that it has a narrow graph (NARROW_SPLITS)."""
        wide = b * self.cfg.n_kv_heads >= ops.SPLIT_BLOCKS and ops.SPLIT_WIDE > 1
        return NARROW_SPLITS and wide

    def _narrow_graph(self, b: int):
        """Bucket b's step on the path its graph takes, with one attention split per (row, kv head): for
        rows whose windows all fit one split of the wide rule, where it computes what that graph does."""
        if b not in self._narrow:
            self._graph(b)
            path = self.paths[b]
            view = self.buf.rows(b, splits=1)
            tables = self._tables if path == "persistent" else None
            run = self._run(view, path, SKINNY_PATHS.get(path, frozenset()), tables)
            self._narrow[b] = capture(self.cuda_stream, run, (view.tokens, view.pos, view.history))
        return self._narrow[b]

    @functools.cached_property
    def _tables(self) -> Tables | None:
        """The model's decoder_layers tables, made on first use, or None where it does not run (not a
        Hopper or later GPU, shapes without an instance)."""
        import cupy

        ok = layers_fit(self.cfg) and layers_available(cupy.cuda.Device().id)
        return Tables(self.weights, self.cfg) if ok else None

    def _skinny(self) -> bool:
        """Whether a step may take skinny_gemm: a Hopper GPU that runs it, and the model's K fit."""
        import cupy

        return skinny_fits(self.cfg) and skinny_available(cupy.cuda.Device().id)

    def nbytes(self) -> int:
        """Device bytes of the step buffers and every open slot's KV cache."""
        return self.buf.nbytes() + self.kv.nbytes()

    def kv_bytes(self, slot: int) -> int:
        return self.kv.nbytes(slot)


def _out_of_memory(what: str, e: Exception):
    from ..errors import DeviceError

    return DeviceError(f"not enough GPU memory for {what} ({e}); use a smaller batch or fewer sessions")
