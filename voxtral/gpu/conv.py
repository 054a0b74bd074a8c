"""The encoder's conv stem on the GPU for many streams at once (SPEC §3.1): mel frames → conv stem rows.

conv0 (kernel 3, stride 1) and conv1 (kernel 3, stride 2), both causal, each GELU'd. A stream is fed
mel frames in pieces of any size (on the device as the backend's log_mel gives them, or host arrays);
its state between pieces is, on the device, conv0's last 2 input frames (zeros at the start: the causal
left padding) and conv1's unconsumed conv0 outputs (1 or 2 rows; one zero row at the start). A call
serves every stream that has frames with one launch per stage, whatever their number: the host lays
out which input rows each output reads (`plan`, NumPy), one gather kernel builds the columns
(ops.im2col_rows), one GEMM per conv; two gathers keep the carried rows. A live tick of 128 streams is
~12 launches and one copy of its frames, or (StemBuffers, `into`) part of the captured graph of its
encoder pass (voxtral/gpu/encoder.py), its inputs uploaded into fixed buffers.
Shapes: M mel bins, T frames, E encoder dim, C slots, n conv stem outputs (positions).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from . import ops
from .copy import concat_rows, copy, device_array, upload, zero
from .gemm import gemm

KERNEL = 3
CONV0_KEEP = KERNEL - 1  # conv0 input frames carried to the next piece
CONV_ROWS = 16384  # mel frames per launch group: bounds a call's activations (~0.1 GB at full size)
PLANS_KEPT = 32  # recent calls' plans kept (plan): a live tick repeats its last one; ≤ ~0.5 MB each


@dataclass(eq=False)
class StemPlan:
    """Row indices of one batched call (all int32). conv0's input rows number [carried frames of all
    slots (2 per slot) | the items' new frames, item after item]; conv1's [carried rows of all slots (2
    per slot) | conv0 outputs]."""

    rows0: np.ndarray  # [ΣT, 3] conv0 input rows of each conv0 output
    rows1: np.ndarray  # [Σn, 3] conv1 input rows of each conv1 output
    carry0: np.ndarray  # [2C, 1] each slot's carried conv0 input rows (frames) after the call
    carry: np.ndarray  # [2C, 1] each slot's carried conv1 rows after the call (unused rows: any)
    carried: tuple[int, ...]  # carried conv1 rows per item after the call (1 or 2)
    outputs: tuple[int, ...]  # conv1 outputs per item
    tables: dict = field(default_factory=dict)  # (frames, rows) of a StemBuffers → its index table (load)


def plan(slots: list[int], carried: list[int], lengths: list[int], capacity: int) -> StemPlan:
    """The layout of a call over items (slot, conv1 rows it carries (1 or 2), new mel frames T ≥ 0).

    A stream's conv0 input is x = its 2 carried frames then its T new ones; output t reads x[t … t+2],
    and x[-2:] is carried on. Its conv1 input is y = its carried rows then its T conv0 outputs; output j
    reads y[2j … 2j+2], so n = (len(y) − 1) // 2 outputs and y[2n:] (1 or 2 rows) is carried on. Slots
    not in the call keep their rows. A call like a recent one (every live tick: the same slots, carried
    rows and frames) gets that call's plan again, read-only, without the ~30 NumPy calls."""
    return _plan(tuple(slots), tuple(carried), tuple(lengths), capacity)


@functools.lru_cache(maxsize=PLANS_KEPT)
def _plan(slots: tuple, carried: tuple, lengths: tuple, capacity: int) -> StemPlan:
    assert len(set(slots)) == len(slots), "a slot appears twice in one call"
    s, c, t = (np.asarray(v, np.int64).reshape(-1) for v in (slots, carried, lengths))
    assert ((c == 1) | (c == 2)).all() and (t >= 0).all(), (carried, lengths)  # np.isin: 70 µs
    new = 2 * capacity + np.cumsum(t) - t  # row of each item's first new frame = first conv0 output
    x, x_start = _sequences(s, np.full_like(c, CONV0_KEEP), t, new)
    y, y_start = _sequences(s, c, t, new)
    n = (c + t - 1) // 2  # conv1 outputs per item
    rest = c + t - 2 * n  # conv1 rows carried on (1 or 2)
    rows0 = x[ranges(x_start, t)[:, None] + np.arange(KERNEL)]  # output j of an item reads x[j … j+2]
    rows1 = y[ranges(y_start, n, step=2)[:, None] + np.arange(KERNEL)]  # output j reads y[2j … 2j+2]
    carry0 = np.arange(2 * capacity, dtype=np.int64)
    last = x_start + CONV0_KEEP + t  # end of each item's x
    carry0[2 * s], carry0[2 * s + 1] = x[last - 2], x[last - 1]
    carry = np.arange(2 * capacity, dtype=np.int64)
    first = y_start + 2 * n  # y[2n:] is carried on
    carry[2 * s] = y[first]
    two = rest == 2
    carry[2 * s[two] + 1] = y[first[two] + 1]
    tables = (rows0.astype(np.int32).reshape(-1, KERNEL), rows1.astype(np.int32).reshape(-1, KERNEL),
              carry0.astype(np.int32)[:, None], carry.astype(np.int32)[:, None])  # fmt: skip
    for a in tables:
        a.flags.writeable = False  # shared by every call that gets this plan
    return StemPlan(*tables, tuple(rest.tolist()), tuple(n.tolist()))


def _sequences(s: np.ndarray, c: np.ndarray, t: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each item's input rows one after another: its c carried rows (2s, 2s + 1, …) then its t new rows
    (new, new + 1, …) → (the rows [Σ(c + t)], where each item's start)."""
    length = c + t
    start = np.cumsum(length) - length
    k = ranges(np.zeros_like(length), length)  # index within the item
    carried = k < np.repeat(c, length)
    rows = np.where(carried, np.repeat(2 * s, length) + k, np.repeat(new - c, length) + k)
    return rows, start


def ranges(start: np.ndarray, count: np.ndarray, step: int = 1) -> np.ndarray:
    """start[i] + step·j for j < count[i], one run after another [Σcount]: the per-item index runs of a
    batched call (here and encoder.group_rows) without a Python loop over the items."""
    if len(count) == 1:  # one item (a session's live tick): no repeat
        return start[0] + step * np.arange(count[0], dtype=np.int64)
    first = np.cumsum(count) - count  # start[i] + step·(k − first[i]) for the k-th index overall
    total = first[-1] + count[-1] if len(count) else 0
    return np.repeat(start - step * first, count) + step * np.arange(total)


class ConvStem:
    """The conv stems of up to `capacity` streams (slots), fed together."""

    def __init__(self, w, n_mel: int, dim: int, capacity: int):
        import cupy

        assert CONV0_KEEP == 2, "the carried rows are laid out 2 per slot"
        self.w, self.capacity = w, capacity
        self.frames = cupy.zeros((2 * capacity, n_mel), np.float32)  # conv0's carried input rows, 2 per slot
        self.rows = cupy.zeros((2 * capacity, dim), ops.BF16)  # conv1's carried rows, 2 per slot
        self.carried = [1] * capacity  # rows of `rows` each slot carries
        self.pos = [0] * capacity  # encoder position of each slot's next output

    def reset(self, slot: int) -> None:
        """A new stream in slot: zeros carried (the causal left padding), position 0."""
        zero(self.frames[2 * slot : 2 * slot + 2])
        upload(self.rows[2 * slot : 2 * slot + 2], np.zeros((2, self.rows.shape[1]), ops.BF16))
        self.carried[slot], self.pos[slot] = 1, 0

    def feed(self, items: list[tuple[int, object]]) -> list[tuple[int, object]]:
        """(slot, its next mel frames [M, T] f32, any T ≥ 0: host, or device as GpuMel.many gives them)
        → per item (first position p, conv stem outputs [n, E] f32 of positions p … p+n−1, device)."""
        out: list[tuple[int, object]] = []
        group: list[tuple[int, np.ndarray]] = []
        frames = 0
        for item in items:
            if group and frames + item[1].shape[1] > CONV_ROWS:
                out += self._call(group)
                group, frames = [], 0
            group.append(item)
            frames += item[1].shape[1]
        return out + self._call(group) if group else out

    def _call(self, items: list[tuple[int, np.ndarray]]) -> list[tuple[int, object]]:
        import cupy

        w, cap = self.w, self.capacity
        slots = [s for s, _ in items]
        p = plan(slots, [self.carried[s] for s in slots], [m.shape[1] for _, m in items], cap)
        n0, n1 = len(p.rows0), len(p.rows1)
        idx = [p.rows0.ravel(), p.rows1.ravel(), p.carry.ravel(), p.carry0.ravel()]
        rows = device_array(np.concatenate(idx))
        if n0:
            new = [_time_major(m) for _, m in items if m.shape[1]]  # one copy when they are GpuMel's
            x = concat_rows([self.frames, *new])  # [2C + ΣT, M] f32
            cols = ops.im2col_rows(x, rows[: 3 * n0].reshape(n0, 3))  # [ΣT, M·3] bf16
            carry0 = rows[3 * (n0 + n1) + 2 * cap :].reshape(2 * cap, 1)
            ops.widen_bf16(ops.im2col_rows(x, carry0), out=self.frames)  # conv0 reads bf16: nothing lost
            y = ops.bias_gelu(gemm(cols, w.conv0_weight), w.conv0_bias)  # [ΣT, E] bf16
            src = concat_rows([self.rows, y])  # [2C + ΣT, E] bf16
        else:
            src = self.rows
        if n1:
            cols = ops.im2col_rows(src, rows[3 * n0 : 3 * (n0 + n1)].reshape(n1, 3))  # [Σn, E·3] bf16
            z = ops.widen_bf16(ops.bias_gelu(gemm(cols, w.conv1_weight), w.conv1_bias))  # [Σn, E] f32
        else:
            z = cupy.zeros((0, self.rows.shape[1]), np.float32)
        if n0:  # n0 = 0: nothing carried changed
            carry = rows[3 * (n0 + n1) : 3 * (n0 + n1) + 2 * cap].reshape(2 * cap, 1)
            ops.im2col_rows(src, carry, out=self.rows)  # [2C, E]; src is a copy
        return [(first, z[start : start + n]) for first, start, n in self.advance(slots, p)]

    def advance(self, slots: list[int], p: StemPlan) -> list[tuple[int, int, int]]:
        """The host's side of a call planned as p: each item's (first position, first output row, outputs
        n); the slots' positions and carried counts move on."""
        out, start = [], 0
        for s, n, c in zip(slots, p.outputs, p.carried, strict=True):
            out.append((self.pos[s], start, n))
            self.pos[s] += n
            self.carried[s] = c
            start += n
        return out

    def load(self, sb: StemBuffers, items: list, p: StemPlan) -> None:
        """A call's inputs into the buffers of a captured stem (`into`): the items' new frames after the
        carried ones, the plan's rows (spare rows read row 0; spare outputs are not used)."""
        new = [_time_major(m) for _, m in items if m.shape[1]]
        n0, n1 = len(p.rows0), len(p.rows1)
        if new:
            concat_rows(new, out=sb.x[2 * self.capacity : 2 * self.capacity + n0])
        f, r = len(sb.cols0), len(sb.cols1)
        idx = p.tables.get((f, r))
        if idx is None:
            idx = np.zeros(3 * (f + r) + 4 * self.capacity, np.int32)
            idx[: 3 * n0] = p.rows0.ravel()
            idx[3 * f : 3 * f + 3 * n1] = p.rows1.ravel()
            idx[3 * (f + r) :] = np.concatenate([p.carry.ravel(), p.carry0.ravel()])
            p.tables[f, r] = idx
        upload(sb.idx, idx)

    def into(self, sb: StemBuffers, out) -> None:
        """The stem over sb's inputs (load) → out [r, E] f32 (a pass's rows), the carried state updated
        in place: fixed shapes and buffers only, so that a CUDA graph may capture it. With sb.reset() the
        state stays as it is (every carry row its own)."""
        w, cap = self.w, self.capacity
        copy(sb.x[: 2 * cap], self.frames)
        ops.im2col_rows(sb.x, sb.rows0, out=sb.cols0)
        ops.widen_bf16(ops.im2col_rows(sb.x, sb.carry0, out=sb.frames_bf16), out=self.frames)
        gemm(sb.cols0, w.conv0_weight, out=sb.y)
        copy(sb.src[: 2 * cap], self.rows)
        ops.bias_gelu(sb.y, w.conv0_bias, out=sb.src[2 * cap :])
        ops.im2col_rows(sb.src, sb.rows1, out=sb.cols1)
        gemm(sb.cols1, w.conv1_weight, out=sb.z)
        ops.widen_bf16(ops.bias_gelu(sb.z, w.conv1_bias, out=sb.z_bf16), out=out)
        ops.im2col_rows(sb.src, sb.carry, out=self.rows)


class StemBuffers:
    """The fixed inputs and activations of a captured stem call (ConvStem.load / into) of at most f new
    frames and r outputs, for a pool of `capacity` slots; idx holds rows0 [f, 3] | rows1 [r, 3] | carry
    [2C, 1] | carry0 [2C, 1] (int32). room: larger StemBuffers whose first rows these take (all but idx)."""

    def __init__(self, n_mel: int, dim: int, capacity: int, f: int, r: int, room: StemBuffers | None = None):
        import cupy

        c2, bf16 = 2 * capacity, ops.BF16

        def rows(name: str, n: int, width: int, dtype):
            if room is None:
                return cupy.zeros((n, width), dtype)
            held = getattr(room, name)
            assert len(held) >= n and held.shape[1] == width, f"stem room {name} {held.shape} for {n} rows"
            return held[:n]

        self.x = rows("x", c2 + f, n_mel, np.float32)  # carried frames | new frames
        self.idx = cupy.zeros(3 * (f + r) + 2 * c2, np.int32)
        self.rows0 = self.idx[: 3 * f].reshape(f, KERNEL)
        self.rows1 = self.idx[3 * f : 3 * (f + r)].reshape(r, KERNEL)
        self.carry = self.idx[3 * (f + r) : 3 * (f + r) + c2].reshape(c2, 1)
        self.carry0 = self.idx[3 * (f + r) + c2 :].reshape(c2, 1)
        self.cols0 = rows("cols0", f, KERNEL * n_mel, bf16)
        self.frames_bf16 = rows("frames_bf16", c2, n_mel, bf16)
        self.y = rows("y", f, dim, np.float32)
        self.src = rows("src", c2 + f, dim, bf16)  # carried rows | conv0 outputs
        self.cols1 = rows("cols1", r, KERNEL * dim, bf16)
        self.z = rows("z", r, dim, np.float32)
        self.z_bf16 = rows("z_bf16", r, dim, bf16)

    def nbytes(self) -> int:
        """Device bytes these buffers own (not the views of idx or of a room)."""
        return sum(a.nbytes for a in vars(self).values() if a.base is None)

    def reset(self) -> None:
        """Inputs that change nothing: every carry row its own, every conv row row 0."""
        c2 = len(self.carry)
        idx = np.zeros(len(self.idx), np.int32)
        idx[-2 * c2 :] = np.tile(np.arange(c2, dtype=np.int32), 2)
        upload(self.idx, idx)


def _time_major(mel):
    """Mel frames [M, T] f32 → [T, M] C-contiguous on the device: GpuMel.many's are transposed views of
    rows (free); a host array is uploaded; another device layout goes through the host (rare)."""
    import cupy

    if isinstance(mel, cupy.ndarray):
        if mel.T.flags.c_contiguous and mel.dtype == np.float32:
            return mel.T
        mel = cupy.asnumpy(mel)
    return device_array(np.ascontiguousarray(np.asarray(mel, np.float32).T))
