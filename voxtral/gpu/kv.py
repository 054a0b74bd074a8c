"""Ring KV caches owned slot by slot, and the device tables the kernels find them through (SPEC §5, §7).

Slot c of a pool owns K and V [L, R_c, Hkv, Dh] bf16: position j lives in row j % R_c. Each slot's
ring is sized for what it serves (an offline input: its positions; a live stream: the window) and can
grow while no position has wrapped, so memory follows the work, not the pool's capacity. The kernels
read table [L, C, 2] (layer l's K and V addresses of slot c) and ring [C] (R_c) from device memory:
the host rewrites a slot's entries when it opens, grows or closes, and a captured CUDA graph keeps
replaying unchanged. A closed slot, and every spare row of a graph bucket (per_row), points at a one-row
scratch cache, so spare rows write and read only there (one visible key: nearly free), never in the ring
of an open slot that is not stepping (they run ahead of it and would overwrite keys in its window).
Shapes: L layers, C slots, R_c ring rows of slot c, Hkv kv heads, Dh head dim.
"""

from __future__ import annotations

import numpy as np

from .copy import copy, device_array, upload

BF16 = np.uint16


class KVCaches:
    def __init__(self, n_layers: int, capacity: int, n_kv_heads: int, head_dim: int):

        self.n_layers, self.capacity = n_layers, capacity
        self.row_shape = (n_kv_heads, head_dim)
        self._scratch = self._alloc(1)  # (K, V) [L, 1, Hkv, Dh] of every closed slot
        self.arrays: list[tuple | None] = [None] * capacity  # slot → (K, V) [L, R_c, Hkv, Dh]
        self._table = np.zeros((n_layers, capacity, 2), np.uint64)  # host mirror
        self._ring = np.ones(capacity, np.int32)
        self.table = device_array(self._table)  # [L, C, 2] uint64
        self.ring = device_array(self._ring)  # [C] int32
        self._layers = [(self.table[i], self.ring) for i in range(n_layers)]  # views, made once
        self.version = 0  # counts changes of the tables (a copy laid out per row must follow them)
        for c in range(capacity):
            self._point(c, self._scratch)

    def _alloc(self, rows: int) -> tuple:
        import cupy

        shape = (self.n_layers, rows, *self.row_shape)
        return cupy.empty(shape, BF16), cupy.empty(shape, BF16)

    def _point(self, slot: int, kv: tuple) -> None:
        """Point slot's table entries at kv and upload them (on the current CUDA stream)."""
        k, v = kv
        layers = np.arange(self.n_layers, dtype=np.uint64)
        self._table[:, slot, 0] = k.data.ptr + k.strides[0] * layers
        self._table[:, slot, 1] = v.data.ptr + v.strides[0] * layers
        self._ring[slot] = k.shape[1]
        upload(self.table[:, slot], self._table[:, slot])
        upload(self.ring[slot : slot + 1], self._ring[slot : slot + 1])
        self.version += 1

    def open(self, slot: int, rows: int) -> None:
        """Give slot a fresh ring of `rows` positions."""
        assert self.arrays[slot] is None, f"KV slot {slot} is open"
        self.arrays[slot] = self._alloc(rows)
        self._point(slot, self.arrays[slot])

    def rows(self, slot: int) -> int:
        """R_c: the ring length of an open slot."""
        return self.arrays[slot][0].shape[1]

    def grow(self, slot: int, rows: int, keep: int) -> None:
        """A longer ring for slot, its first `keep` rows (positions 0 … keep − 1, not wrapped) copied over."""
        old = self.arrays[slot]
        assert keep <= old[0].shape[1] <= rows, (keep, old[0].shape, rows)
        new = self._alloc(rows)
        for a, b in zip(old, new, strict=True):
            copy(b[:, :keep], a[:, :keep])  # one 2-D copy: L rows of keep·Hkv·Dh values
        self.arrays[slot] = new
        self._point(slot, new)

    def close(self, slot: int) -> None:
        """Free slot's ring; its table entries point at the scratch cache again."""
        self.arrays[slot] = None
        self._point(slot, self._scratch)

    def per_row(self, slots: list[int], spare: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The tables laid out per row for rows serving `slots`, then `spare` rows on the scratch cache (a
        bucket's rows beyond its slots: they must never write into an open slot's ring): (table
        [L, k + spare, 2] uint64, ring [k + spare] int32)."""
        k, v = self._scratch
        layers = np.arange(self.n_layers, dtype=np.uint64)
        scratch = np.stack([k.data.ptr + k.strides[0] * layers, v.data.ptr + v.strides[0] * layers], axis=1)
        table = np.concatenate([self._table[:, slots], np.repeat(scratch[:, None], spare, axis=1)], axis=1)
        return table, np.concatenate([self._ring[slots], np.ones(spare, np.int32)])

    def layer(self, i: int) -> tuple:
        """(table [C, 2] uint64, ring [C] int32) of layer i: the kernels' cache arguments."""
        return self._layers[i]

    def nbytes(self, slot: int | None = None) -> int:
        """Bytes of one slot's K and V, or of every open slot's."""
        slots = range(self.capacity) if slot is None else [slot]
        return sum(2 * self.arrays[c][0].nbytes for c in slots if self.arrays[c] is not None)
