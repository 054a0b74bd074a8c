"""Many decoder streams on one GPU, stepped together: one CUDA graph per batch-size bucket.

A slot owns one stream's KV cache and audio ring (the `stream` index every decode kernel takes); a
row is a place in the batched step. A step over k active slots replays the graph of the smallest
bucket B ≥ k, which runs rows 0 … B−1; row r serves slot stream[r]. The host keeps each slot's
next position and input token, so changing which slots the rows serve (a stream joins, leaves, or
has no audio yet) is three small uploads before the launch; rows past the k active ones serve free
slots and their work is thrown away. Slots keep their KV caches wherever the rows go.
Shapes: C slots (capacity), B rows of a bucket, R KV ring slots per stream.
"""

from __future__ import annotations

import numpy as np

from . import decoder
from .state import GpuState

BUCKETS = (1, 2, 4, 8, 16, 32, 64)  # batch sizes with a graph; the capacity itself is the last
PREFILL_CHUNK = decoder.AUDIO_RING // 2  # positions per prefill pass: their audio fits the ring


def buckets(capacity: int) -> tuple[int, ...]:
    return tuple(b for b in BUCKETS if b < capacity) + (capacity,)


class GpuEngine:
    burst = decoder.HISTORY // 4  # steps between two host looks at the tokens

    def __init__(self, backend, capacity: int, max_positions: int | None = None):
        """capacity streams at once; max_positions bounds every stream (offline inputs), None: unbounded."""
        import cupy

        if capacity < 1:
            raise ValueError(f"capacity must be ≥ 1, got {capacity}")
        self.weights, self.cfg, self.stream = backend.weights, backend.cfg.decoder, backend.stream
        self.capacity = capacity
        self.max_positions = max_positions
        try:
            with self.stream:
                self.buf = decoder.DecoderBuffers(self.cfg, batch=capacity, ring=max_positions)
        except cupy.cuda.memory.OutOfMemoryError as e:
            from ..errors import DeviceError

            raise DeviceError(
                f"not enough GPU memory for {capacity} streams ({e}); use a smaller batch size"
            ) from None
        self.slots: list[GpuState | None] = [None] * capacity
        self.buckets = buckets(capacity)
        self._views: dict[int, decoder.DecoderBuffers] = {}
        self._graphs: dict[int, object] = {}
        self._layout: list[int] | None = None  # slots the device rows serve now

    # --- slots ---------------------------------------------------------------------------------
    def free(self) -> int:
        return self.slots.count(None)

    def join(self, audio=None, n_positions: int | None = None) -> int:
        """A free slot for a new stream: offline audio [N, D] (device) with its positions, or None (live)."""
        slot = self.slots.index(None)
        if audio is None:
            if self.max_positions is not None:
                raise ValueError("an engine for bounded inputs: live streams need max_positions=None")
            state = GpuState(n_positions=None)
        else:
            n = len(audio) if n_positions is None else n_positions
            if self.max_positions is not None and n > self.max_positions:
                raise ValueError(f"{n} positions exceed the engine's {self.max_positions}")
            state = GpuState(n_positions=n)
            state.append(audio)
        self.slots[slot] = state
        self._layout = None
        return slot

    def append_audio(self, slot: int, embeds) -> None:
        self.slots[slot].append(embeds)

    def available(self, slot: int) -> int:
        """Positions of the slot with audio that have not run yet."""
        s = self.slots[slot]
        return s.available - s.pos

    def prefill(self, slot: int, tokens: np.ndarray) -> None:
        """Positions 0 … len−2 of the slot with the given inputs; tokens[−1] is its first step's input.

        In pieces of PREFILL_CHUNK positions, so that the audio ring holds each piece's embeddings.
        """
        tokens = np.asarray(tokens)
        s = self.slots[slot]
        n = len(tokens) - 1
        if s.available < n + 1:
            raise ValueError(f"prefill of {n + 1} positions with audio for {s.available}: append_audio first")
        with self.stream:
            for p0 in range(0, n, PREFILL_CHUNK):
                part = tokens[p0 : min(p0 + PREFILL_CHUNK, n)]
                s.feed(self.buf.audio[slot], p0 + len(part) + 1)  # + the first step's position
                decoder.prefill(self.weights, self.cfg, self.buf, slot, part, p0)
                s.pos = p0 + len(part)
            s.feed(self.buf.audio[slot], n + 1)
        s.pos, s.token = n, int(tokens[-1])
        self._layout = None

    def leave(self, slot: int) -> None:
        self.slots[slot] = None

    # --- steps ---------------------------------------------------------------------------------
    def _bucket(self, k: int) -> int:
        return next(b for b in self.buckets if b >= k)

    def _lay_out(self, slots: list[int]) -> int:
        """Rows 0 … k−1 serve `slots`, the rest of the bucket free slots; returns the bucket B."""
        import cupy

        b = self._bucket(len(slots))
        taken = set(slots)
        rows = list(slots) + [i for i in range(self.capacity) if i not in taken][: b - len(slots)]
        if rows != self._layout:
            states = [self.slots[i] for i in rows]
            buf = self.buf
            buf.stream[:b] = cupy.asarray(np.array(rows, np.int32))
            buf.pos[:b] = cupy.asarray(np.array([s.pos if s else 0 for s in states], np.int32))
            buf.tokens[:b] = cupy.asarray(np.array([s.token if s else 0 for s in states], np.int32))
            self._layout = rows
        return b

    def _graph(self, b: int):
        """The step of bucket b as a CUDA graph, captured after one eager warm-up run."""
        if b not in self._graphs:
            view = self._views[b] = self.buf.rows(b)
            saved = (view.tokens.copy(), view.pos.copy(), view.history.copy())
            decoder.step(self.weights, self.cfg, view)  # warm-up: compiles kernels, sets up cuBLAS
            view.tokens[...], view.pos[...], view.history[...] = saved
            self.stream.begin_capture()
            decoder.step(self.weights, self.cfg, view)
            self._graphs[b] = self.stream.end_capture()
        return self._graphs[b]

    def _check(self, slots: list[int], n: int) -> None:
        assert 1 <= len(slots) <= self.capacity and len(set(slots)) == len(slots), f"bad slots {slots}"
        for i in slots:
            s = self.slots[i]
            if s is None:
                raise ValueError(f"slot {i} is not in use")
            if s.n_positions is None and s.pos + n > s.available:
                raise ValueError(f"slot {i}: position {s.pos + n - 1} has no audio embedding yet")

    def step(self, slots: list[int], n: int) -> np.ndarray:
        """n greedy steps of every given slot together; the tokens chosen, [len(slots), n]."""
        return self._run(slots, n, None)

    def step_times(self, slots: list[int], n: int) -> np.ndarray:
        """Milliseconds of each of n batched steps (a CUDA event pair around every graph replay)."""
        times: list[float] = []
        self._run(slots, n, times)
        return np.array(times)

    def _run(self, slots: list[int], n: int, times: list | None) -> np.ndarray:
        """n graph replays in rounds of at most HISTORY, one read of the history ring per round."""
        import cupy

        self._check(slots, n)
        out = np.empty((len(slots), n), np.int64)  # [k, n]
        with self.stream:
            for start in range(0, n, decoder.HISTORY):
                count = min(decoder.HISTORY, n - start)
                b = self._lay_out(slots)
                for i in slots:
                    self.slots[i].feed(self.buf.audio[i], self.slots[i].pos + count)
                graph = self._graph(b)
                timed = times is not None
                pairs = [(cupy.cuda.Event(), cupy.cuda.Event()) for _ in range(count)] if timed else []
                for j in range(count):
                    if pairs:
                        pairs[j][0].record(self.stream)
                    graph.launch(self.stream)
                    if pairs:
                        pairs[j][1].record(self.stream)
                history = cupy.asnumpy(self.buf.history[: len(slots)], stream=self.stream)  # [k, K], syncs
                if timed:
                    times.extend(cupy.cuda.get_elapsed_time(a, z) for a, z in pairs)
                for r, i in enumerate(slots):
                    s = self.slots[i]
                    out[r, start : start + count] = history[r, (s.pos + np.arange(count)) % decoder.HISTORY]
                    s.pos += count
                    s.token = int(out[r, start + count - 1])
        return out

    def kv_bytes_per_stream(self) -> int:
        return 2 * self.buf.k[:, 0].nbytes + self.buf.audio[0].nbytes

    def nbytes(self) -> int:
        return self.buf.nbytes()
