"""Each CUDA kernel against its NumPy twin in voxtral.cpu.ops, on fresh random inputs at awkward sizes.

References run in float64 on the BF16-widened inputs. Outputs are poisoned (NaN) before each launch and
must come back fully written. Tolerances: bf16 outputs rel L2 < 1e-2 and max error < 2e-2·max|ref|
(bf16 keeps 8 bits); f32 outputs rel L2 < 1e-5; argmax and index bookkeeping exact.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from voxtral.cpu import ops as ref
from voxtral.gpu import ops
from voxtral.gpu.kv import KVCaches

cp = pytest.importorskip("cupy", reason="CuPy is not importable")

BF16_NAN = 0x7FC0


@pytest.fixture
def rng():
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"seed {seed}")  # shown by pytest when the test fails
    return np.random.default_rng(seed)


def to_bf16(x: np.ndarray):
    """(device uint16 bit patterns, the same values widened to float64 on the host)."""
    bits = np.asarray(x, dtype=np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)
    return cp.asarray(bits), widen(bits)


def widen(bits) -> np.ndarray:
    bits = cp.asnumpy(bits) if isinstance(bits, cp.ndarray) else bits
    return np.asarray(bits, dtype=np.uint16).view(ml_dtypes.bfloat16).astype(np.float64)


def rel_l2(x: np.ndarray, r: np.ndarray) -> float:
    return float(np.linalg.norm(x - r) / max(np.linalg.norm(r), 1e-30))


def assert_bf16_close(out_bits, expected: np.ndarray, tol: float = 1e-2) -> None:
    out = widen(out_bits)
    assert out.shape == expected.shape
    assert np.isfinite(out).all(), f"{np.size(out) - np.isfinite(out).sum()} elements unwritten or not finite"
    assert rel_l2(out, expected) < tol, f"rel L2 {rel_l2(out, expected):.2e} ≥ {tol}"
    err = np.abs(out - expected).max()
    assert err <= 2e-2 * np.abs(expected).max(), (
        f"max error {err:.3e} vs max |ref| {np.abs(expected).max():.3e}"
    )


def poison_bf16(shape):
    return cp.full(shape, BF16_NAN, dtype=np.uint16)


@pytest.mark.parametrize("t,d,with_bias", [(1, 3072, False), (5, 37, True), (3, 1283, True), (7, 1280, False),
                                           (2, 2, True), (3, 4100, True), (1029, 1280, True)])  # fmt: skip
def test_rms_norm_vs_numpy(rng, t, d, with_bias):
    x = rng.standard_normal((t, d)).astype(np.float32) * 3
    w = rng.standard_normal(d).astype(np.float32)
    bias = rng.standard_normal(d).astype(np.float32) if with_bias else None
    x_dev = cp.asarray(x)
    out = poison_bf16((t, d))
    ops.rms_norm(x_dev, cp.asarray(w), 1e-5, bias=None if bias is None else cp.asarray(bias), out=out)
    x_new = x + bias if with_bias else x
    np.testing.assert_array_equal(cp.asnumpy(x_dev), x_new)  # bias folded into x exactly in f32
    assert_bf16_close(out, ref.rms_norm(x_new.astype(np.float64), w, 1e-5))


def slot_table(caches):
    """(table [C, 2] uint64: each slot's K, V addresses, ring [C] int32: R_c) of caches [R_c, Hkv, Dh].

    The caller keeps `caches` alive while the table is used: it holds raw pointers.
    """
    table = np.array([[k.data.ptr, v.data.ptr] for k, v in caches], dtype=np.uint64)
    return cp.asarray(table), cp.asarray(np.array([k.shape[0] for k, _ in caches], dtype=np.int32))


def assign_slots(rng, t, rings):
    """slot [T] and pos [T] int32: each position in a random slot, no two of a slot in the same ring row
    (as within one step); positions up to 10^6."""
    room = list(rings)
    slot = np.empty(t, dtype=np.int32)
    for i in range(t):
        slot[i] = rng.choice([c for c in range(len(rings)) if room[c] > 0])
        room[slot[i]] -= 1
    pos = np.empty(t, dtype=np.int64)
    for c, r in enumerate(rings):
        idx = np.flatnonzero(slot == c)
        pos[idx] = rng.choice(r, size=len(idx), replace=False) + r * rng.integers(0, 1_000_000 // r, len(idx))
    pos[0] %= rings[slot[0]]  # and one small one
    return slot, pos.astype(np.int32)


def rope_ref(qkv, bias, pos, h, hkv, dh, theta):
    """(q, k, v) float64 references of rope_qkv: [T, H, Dh], [T, Hkv, Dh], [T, Hkv, Dh]."""
    t = len(pos)
    x = qkv.astype(np.float64) + (0 if bias is None else bias)
    cos, sin = ref.rope_angles(pos, dh, theta, dtype=np.float64)
    q = ref.rope(x[:, : h * dh].reshape(t, h, dh), cos, sin)
    k = ref.rope(x[:, h * dh : (h + hkv) * dh].reshape(t, hkv, dh), cos, sin)
    return q, k, x[:, (h + hkv) * dh :].reshape(t, hkv, dh)


# rings: R_c of each slot, different lengths in one launch (a 1-row ring too, like the scratch cache).
@pytest.mark.parametrize("t,h,hkv,dh,rings,with_bias,theta", [
    (1, 32, 8, 128, (9, 9), False, 1e6), (5, 3, 1, 64, (7, 3, 12), True, 1e6),
    (4, 2, 2, 6, (5, 2), True, 1e4), (6, 32, 32, 64, (11,), True, 1e6),
    (9, 32, 8, 128, (8192, 1, 64, 5, 1024), True, 1e6),
    (300, 4, 2, 64, (1024, 700), True, 1e6),  # 2 rows a block (ops.rope_rows)
    (1030, 2, 2, 6, (2048,), True, 1e4)])  # 8 rows a block, 3 frequencies (not a divisor of it)  # fmt: skip
@pytest.mark.parametrize("bf16_in", [False, True], ids=["f32", "bf16"])  # the decoder's, the encoder's qkv
def test_rope_qkv_vs_numpy(rng, t, h, hkv, dh, rings, with_bias, theta, bf16_in):
    width = (h + 2 * hkv) * dh
    qkv = rng.standard_normal((t, width)).astype(np.float32)
    qkv_dev = cp.asarray(qkv)
    if bf16_in:  # the reference turns the same bf16 values
        qkv_dev, qkv = to_bf16(qkv)
    bias = rng.standard_normal(width).astype(np.float32) if with_bias else None
    slot, pos = assign_slots(rng, t, rings)
    caches = [(poison_bf16((r, hkv, dh)), poison_bf16((r, hkv, dh))) for r in rings]  # own allocations
    table, ring = slot_table(caches)
    q = poison_bf16((t, h, dh))
    ops.rope_qkv(qkv_dev, cp.asarray(pos), cp.asarray(slot), table, ring, theta, n_kv_heads=hkv,
                 head_dim=dh, bias=None if bias is None else cp.asarray(bias), out=q)  # fmt: skip
    q_ref, k_ref, v_ref = rope_ref(qkv, bias, pos, h, hkv, dh, theta)
    assert_bf16_close(q, q_ref)
    for c, (r, (k_dev, v_dev)) in enumerate(zip(rings, caches, strict=True)):
        mine = np.flatnonzero(slot == c)
        kc, vc = cp.asnumpy(k_dev), cp.asnumpy(v_dev)
        if len(mine):
            assert_bf16_close(kc[pos[mine] % r], k_ref[mine])
            assert_bf16_close(vc[pos[mine] % r], v_ref[mine])
        untouched = np.ones(r, dtype=bool)
        untouched[pos[mine] % r] = False
        assert (kc[untouched] == BF16_NAN).all() and (vc[untouched] == BF16_NAN).all(), f"slot {c} stray"


def make_rings(rng, hkv, dh, rings, spans):
    """Per-slot K/V ring caches [R_c, Hkv, Dh] (own allocations) poisoned with NaN except positions
    [lo, hi] of each slot in `spans`, and their float64 host copies (NaN where unwritten)."""
    caches, host = [], []
    for c, r in enumerate(rings):
        k = np.full((r, hkv, dh), np.nan, dtype=np.float32)
        v = np.full((r, hkv, dh), np.nan, dtype=np.float32)
        if c in spans:
            lo, hi = spans[c]
            assert hi - lo + 1 <= r, f"slot {c}: positions {lo} … {hi} overlap in a ring of {r}"
            js = np.arange(lo, hi + 1) % r
            k[js] = rng.standard_normal((len(js), hkv, dh))
            v[js] = rng.standard_normal((len(js), hkv, dh))
        (k_dev, k64), (v_dev, v64) = to_bf16(k), to_bf16(v)
        caches.append((k_dev, v_dev))
        host.append((k64, v64))
    return caches, host


def attention_ref(q64, k64, v64, q_pos, window):
    """Queries q64 [T, H, Dh] at positions q_pos of one slot whose ring is k64, v64 [R, Hkv, Dh]: each
    sees its last min(window, R) keys."""
    r = k64.shape[0]
    w = min(window, r)
    lo, hi = max(0, int(q_pos.min()) - w + 1), int(q_pos.max())
    js = np.arange(lo, hi + 1)
    return ref.attention(q64, k64[js % r], v64[js % r], q_pos, js, w)


def split_case(rng, hkv, dh, window, rings, queries):
    """Ring caches holding every key the (slot, position) queries see, their table, pos and slot arrays."""
    spans = {}
    for c in sorted({c for c, _ in queries}):
        ps = [p for c2, p in queries if c2 == c]
        spans[c] = (max(0, min(ps) - min(window, rings[c]) + 1), max(ps))
    caches, host = make_rings(rng, hkv, dh, rings, spans)
    slot = np.array([c for c, _ in queries], dtype=np.int32)
    pos = np.array([p for _, p in queries], dtype=np.int32)
    return caches, host, pos, slot


def split_ref(q64, host, pos, slot, window):
    return np.concatenate(
        [attention_ref(q64[i : i + 1], *host[slot[i]], pos[i : i + 1], window) for i in range(len(pos))]
    )


def split_counters(ws, splits, group, dh) -> np.ndarray:
    return cp.asnumpy(ws[..., splits * group * (dh + 2)]).view(np.int32)


# splits None = the launcher's choice (attention_splits); windows of 1 … 8192 keys, ring wrap-around,
# one split looping over a long window (splits=1), odd split counts, several queries of one slot. Slots of
# different ring lengths in one launch: rings shorter than the window hold positions < R_c (the decoder
# grows a ring before it would wrap), rings of the window wrap; the last case wraps a short ring, which
# then shows only its last R_c keys (the kernel's contract, never the decoder's use).
@pytest.mark.parametrize("h,hkv,dh,window,rings,queries,splits", [
    (32, 8, 128, 300, (310,) * 5, [(0, 0), (1, 5), (2, 299), (3, 1234), (3, 1235), (4, 777)], None),
    (32, 8, 128, 8192, (8192,) * 3, [(0, 4999), (1, 499), (2, 12_000)], None),
    (3, 3, 64, 37, (40,) * 3, [(0, 36), (1, 100), (2, 1), (0, 37)], None),
    (16, 2, 128, 200, (200, 200), [(0, 100_003), (1, 64), (1, 63)], 7),
    (16, 2, 128, 2000, (2048, 2048), [(0, 1999), (1, 3000), (1, 2990)], 1),
    (4, 2, 64, 8192, (8200,) * 3, [(0, 5000), (1, 8191), (2, 9000)], None),
    (4, 4, 64, 8192, (8200,), [(0, 8190)], 64),
    (8, 1, 64, 65, (70,), [(0, 64), (0, 65), (0, 66), (0, 67)], 3),
    (32, 8, 128, 8192, (8192, 1024, 64, 8192, 1),
     [(0, 4999), (1, 1000), (2, 63), (3, 12_000), (1, 17), (4, 0)], None),
    (16, 2, 128, 2000, (64, 2000, 128, 640), [(0, 40), (1, 2500), (2, 127), (0, 63), (3, 639)], 7),
    (32, 8, 128, 1024, (1100, 256, 512), [(0, 5000), (1, 255), (2, 100), (0, 4990)], 1),
    (8, 1, 64, 250, (100, 250), [(0, 1234), (1, 1234)], None),
    # 32 queries × 8 kv heads: the wide rule (SPLIT_WIDE splits of ≥ SPLIT_WIDE_MIN_KEYS keys each)
    (32, 8, 128, 8192, (5000, 2048, 1025, 501, *(3 * i + 1 for i in range(28))),
     [(0, 4999), (1, 2047), (2, 1024), (3, 500), *((4 + i, 3 * i) for i in range(28))], None)])  # fmt: skip
@pytest.mark.parametrize("light", [False, True], ids=["default", "light"])  # attention_split_light too
def test_attention_split_vs_numpy(rng, h, hkv, dh, window, rings, queries, splits, light):
    caches, host, pos, slot = split_case(rng, hkv, dh, window, rings, queries)
    table, ring = slot_table(caches)
    t, group = len(queries), h // hkv
    ws = ops.attention_workspace(t, h, hkv, dh, splits)
    s = ops.attention_splits(t, hkv) if splits is None else splits
    for _ in range(2):  # the second launch, on fresh queries, checks that the first left the counters at 0
        q_dev, q64 = to_bf16(rng.standard_normal((t, h, dh)) * 2)
        out = poison_bf16((t, h, dh))
        ops.attention_split(q_dev, table, ring, cp.asarray(pos), cp.asarray(slot), window, n_kv_heads=hkv,
                            out=out, workspace=ws, splits=splits, light=light)  # fmt: skip
        assert_bf16_close(out, split_ref(q64, host, pos, slot, window))
        assert (split_counters(ws, s, group, dh) == 0).all(), "attention_split left a counter set"
        # early (the decoder step's loads before the PDL wait) reorders loads only: the same bits
        early = poison_bf16((t, h, dh))
        ops.attention_split(q_dev, table, ring, cp.asarray(pos), cp.asarray(slot), window, n_kv_heads=hkv,
                            out=early, workspace=ws, splits=splits, early=True, light=light)  # fmt: skip
        np.testing.assert_array_equal(cp.asnumpy(early), cp.asnumpy(out))
        assert (split_counters(ws, s, group, dh) == 0).all(), "attention_split left a counter set"


# min_keys (the encoder's live split passes, encoder.LIVE_SPLIT_KEYS): a live tick's 4 queries of one slot
# over a 750-key window (ring 813), 32 queries of 8 slots (the wide rule's grid with short splits), and
# fewer keys than one split's minimum (one split holds them all)
@pytest.mark.parametrize("queries,splits,min_keys", [
    ([(0, 900 + i) for i in range(4)], 8, 64),
    ([(0, 900 + i) for i in range(4)], 12, 16),
    ([(c, 800 + 37 * c + i) for c in range(8) for i in range(4)], 4, 128),
    ([(0, 10 + i) for i in range(4)], 8, 64)])  # fmt: skip
def test_attention_split_min_keys_vs_numpy(rng, queries, splits, min_keys):
    h = hkv = 4
    dh, window = 64, 750
    n_slots = 1 + max(c for c, _ in queries)
    caches, host, pos, slot = split_case(rng, hkv, dh, window, (813,) * n_slots, queries)
    table, ring = slot_table(caches)
    t = len(queries)
    ws = ops.attention_workspace(t, h, hkv, dh, splits)
    for _ in range(2):  # the second launch checks that the first left the counters at 0
        q_dev, q64 = to_bf16(rng.standard_normal((t, h, dh)) * 2)
        out = poison_bf16((t, h, dh))
        ops.attention_split(q_dev, table, ring, cp.asarray(pos), cp.asarray(slot), window, n_kv_heads=hkv,
                            out=out, workspace=ws, splits=splits, min_keys=min_keys)  # fmt: skip
        assert_bf16_close(out, split_ref(q64, host, pos, slot, window))
        assert (split_counters(ws, splits, 1, dh) == 0).all(), "attention_split left a counter set"


def test_decoder_layer_on_kv_caches(rng):
    """rope_qkv then attention_split on layer 1 of KVCaches, as a decoder step runs them: open slots of
    different ring lengths (shorter than the window with positions < R_c, and = the window, wrapped),
    and spare rows on closed slots, which share the one-row scratch cache (their attention outputs are
    ignored; they must not crash or touch an open slot). Only layer 1's row pos % R_c of each open slot
    is written."""
    h, hkv, dh, window, n_layers, theta = 16, 4, 128, 256, 3, 1e6
    rings = {0: 64, 2: 256, 4: 128}  # slots 1, 3 closed
    kv = KVCaches(n_layers, 5, hkv, dh)
    for c, r in rings.items():
        kv.open(c, r)
    slot = np.array([2, 1, 0, 3, 4, 1], dtype=np.int32)
    pos = np.array([1000, 0, 40, 77, 127, 5000], dtype=np.int32)
    real = [i for i in range(len(slot)) if slot[i] in rings]
    before = {}
    for c, r in rings.items():  # layer 1 holds the keys before each open slot's position; all else NaN
        k, v = kv.arrays[c]
        k.fill(BF16_NAN)
        v.fill(BF16_NAN)
        p = int(pos[slot == c][0])
        js = np.arange(max(0, p - min(window, r) + 1), p) % r
        for a in (k, v):
            a[1, cp.asarray(js)] = to_bf16(rng.standard_normal((len(js), hkv, dh)))[0]
        before[c] = (cp.asnumpy(k), cp.asnumpy(v))
    t, width = len(slot), (h + 2 * hkv) * dh
    qkv = rng.standard_normal((t, width)).astype(np.float32)
    pos_dev, slot_dev = cp.asarray(pos), cp.asarray(slot)
    cache, ring = kv.layer(1)
    q, out = poison_bf16((t, h, dh)), poison_bf16((t, h, dh))
    ops.rope_qkv(cp.asarray(qkv), pos_dev, slot_dev, cache, ring, theta, n_kv_heads=hkv, head_dim=dh, out=q)
    ws = ops.attention_workspace(t, h, hkv, dh)
    ops.attention_split(q, cache, ring, pos_dev, slot_dev, window, n_kv_heads=hkv, out=out, workspace=ws)
    q_ref, k_ref, v_ref = rope_ref(qkv, None, pos, h, hkv, dh, theta)
    assert_bf16_close(q, q_ref)  # every row's q, closed slots' too
    host = {}
    for c, r in rings.items():
        i = int(np.flatnonzero(slot == c)[0])
        k, v = (cp.asnumpy(a) for a in kv.arrays[c])
        assert_bf16_close(k[1, pos[i] % r][None], k_ref[i][None])
        assert_bf16_close(v[1, pos[i] % r][None], v_ref[i][None])
        for a, b in ((k, before[c][0]), (v, before[c][1])):
            a_rest, b_rest = a.copy(), b.copy()
            a_rest[1, pos[i] % r] = b_rest[1, pos[i] % r] = 0
            np.testing.assert_array_equal(a_rest, b_rest, err_msg=f"slot {c}: written outside its row")
        host[c] = (widen(k[1]), widen(v[1]))
    q64, got = widen(q), cp.asnumpy(out)
    for i in real:  # the rows of closed slots are not checked
        want = attention_ref(q64[i : i + 1], *host[slot[i]], pos[i : i + 1], window)
        assert_bf16_close(got[i : i + 1], want)
    s = ops.attention_splits(t, hkv)
    assert (split_counters(ws, s, h // hkv, dh) == 0).all(), "attention_split left a counter set"


def test_attention_split_graph_replay(rng):
    """One captured launch replayed while the host rewrites what it reads (the decoder step): new
    positions, rows reassigned to other slots, a slot's ring grown into a new allocation (KVCaches.grow:
    the table now points there, the old one is poisoned) and a slot closed (its row on the scratch cache,
    output ignored)."""
    h, hkv, dh, window, t = 32, 8, 128, 300, 3
    kv = KVCaches(1, 3, hkv, dh)
    kv.open(0, 1024)
    kv.open(1, 256)  # shorter than the window: positions < 256 until it grows; slot 2 stays closed
    cache, ring = kv.layer(0)
    # per replay: the slot and position of each row, and what the host does first
    steps = [
        ([0, 1, 2], [1500, 200, 0], None),
        ([0, 1, 2], [2000, 255, 9], None),
        ([0, 1, 2], [1301, 700, 3], "grow"),
        ([1, 0, 2], [900, 5, 0], None),
        ([1, 2, 0], [1000, 1, 17], "close"),
    ]
    q_dev, q64 = to_bf16(rng.standard_normal((t, h, dh)) * 2)
    pos_dev, slot_dev = cp.zeros(t, np.int32), cp.asarray(np.array(steps[0][0], np.int32))
    out, ws = poison_bf16((t, h, dh)), ops.attention_workspace(t, h, hkv, dh)
    cp.cuda.Device().synchronize()
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        launch = lambda: ops.attention_split(  # noqa: E731
            q_dev, cache, ring, pos_dev, slot_dev, window, n_kv_heads=hkv, out=out, workspace=ws
        )
        launch()  # compiled and loaded outside the capture
        s.begin_capture()
        launch()
        graph = s.end_capture()
        old = None
        for slots, positions, action in steps:
            if action == "grow":
                old = kv.arrays[1]
                kv.grow(1, 1024, keep=256)
                for a, b in zip(old, kv.arrays[1], strict=True):
                    np.testing.assert_array_equal(cp.asnumpy(b[:, :256]), cp.asnumpy(a))  # kept rows copied
                    a.fill(BF16_NAN)
            elif action == "close":
                kv.close(0)
            host = {}
            for c, p in zip(slots, positions, strict=True):
                if kv.arrays[c] is None:
                    continue
                r = kv.rows(c)
                assert p < r or r >= window, "the decoder never wraps a ring shorter than the window"
                js = np.arange(max(0, p - min(window, r) + 1), p + 1)
                host[c] = [np.full((r, hkv, dh), np.nan), np.full((r, hkv, dh), np.nan)]
                for a, a64 in zip(kv.arrays[c], host[c], strict=True):
                    a.fill(BF16_NAN)
                    bits, vals = to_bf16(rng.standard_normal((len(js), hkv, dh)))
                    a[0, cp.asarray(js % r)] = bits
                    a64[js % r] = vals
            slot_dev.set(np.array(slots, np.int32), stream=s)
            pos_dev.set(np.array(positions, np.int32), stream=s)
            out.fill(BF16_NAN)
            graph.launch(s)
            s.synchronize()
            got = cp.asnumpy(out)
            for i, (c, p) in enumerate(zip(slots, positions, strict=True)):
                if c in host:  # a closed slot's row is not checked
                    want = attention_ref(q64[i : i + 1], *host[c], np.array([p]), window)
                    assert_bf16_close(got[i : i + 1], want)
            assert (split_counters(ws, ops.attention_splits(t, hkv), h // hkv, dh) == 0).all()
        assert old is not None


@pytest.mark.parametrize("t,p0,window,h,hkv,dh,r,rows", [
    (200, 1000, 750, 4, 4, 64, 1000, 64), (77, 0, 37, 3, 3, 64, 128, 64), (1, 5, 750, 2, 2, 64, 751, 64),
    (130, 3, 37, 4, 2, 128, 200, 64), (300, 40, 750, 2, 2, 64, 1100, 128), (65, 7000, 99, 2, 1, 128, 170, 64),
    (129, 2000, 750, 3, 3, 64, 900, 128), (77, 0, 37, 3, 3, 64, 128, 128), (1, 5, 750, 2, 2, 64, 751, 128),
    (200, 1000, 750, 4, 2, 64, 1000, 128), (257, 260, 20, 2, 2, 64, 300, 128),
    (33, 100, 750, 2, 2, 64, 800, 16), (5, 0, 37, 2, 1, 128, 64, 16)])  # fmt: skip
def test_attention_tiled_vs_numpy(rng, t, p0, window, h, hkv, dh, r, rows):
    # Layer 1 of a slot's [L, R, Hkv, Dh] caches (as the encoder passes them): not at an allocation's start.
    span = {0: (max(0, p0 - window + 1), p0 + t - 1)}
    ((k_ring, v_ring),), ((k64, v64),) = make_rings(rng, hkv, dh, (r,), span)
    k_dev, v_dev = (cp.stack([poison_bf16(a.shape), a]) for a in (k_ring, v_ring))
    q_dev, q64 = to_bf16(rng.standard_normal((t, h, dh)) * 2)
    out = poison_bf16((t, h, dh))
    ops.attention_tiled(q_dev, k_dev[1], v_dev[1], window, p0, out=out, block_rows=rows)
    assert_bf16_close(out, attention_ref(q64, k64, v64, p0 + np.arange(t), window))


# Runs of several slots in one launch: (slot, first position, rows) each, laid out one after another in
# q; rings of different lengths (≥ window + rows − 1, wrapping), runs of 1 … 300 rows (partial tiles),
# a slot with two runs, and spare tiles of 0 rows at the end of the table.
@pytest.mark.parametrize("h,hkv,dh,window,rings,runs,rows", [
    (4, 2, 64, 37, (100, 300, 64), [(0, 0, 64), (1, 1000, 257), (2, 5, 1), (0, 64, 30)], 128),
    (4, 4, 64, 750, (1773, 1773), [(0, 0, 1024), (1, 2048, 952)], 128),
    (2, 1, 64, 99, (200, 170), [(1, 7000, 65), (0, 3, 100)], 64),
    (4, 2, 128, 37, (128, 200), [(0, 10, 77), (1, 3, 130)], 64),
    # one-warp tiles of 16 rows (a live pass: a few positions per slot)
    (4, 4, 64, 750, (813, 813, 813), [(0, 1000, 4), (1, 5, 4), (2, 3000, 8), (0, 1004, 20)], 16),
    (4, 2, 128, 37, (60, 60), [(0, 50, 5), (1, 0, 17)], 16)])  # fmt: skip
def test_attention_runs_vs_numpy_and_the_per_run_kernel(rng, h, hkv, dh, window, rings, runs, rows):
    spans: dict[int, tuple[int, int]] = {}
    for c, p, n in runs:
        lo, hi = max(0, p - window + 1), p + n - 1
        spans[c] = (min(lo, spans.get(c, (lo, hi))[0]), max(hi, spans.get(c, (lo, hi))[1]))
    caches, host = make_rings(rng, hkv, dh, rings, spans)
    table, ring = slot_table(caches)
    t = sum(n for *_, n in runs)
    q_dev, q64 = to_bf16(rng.standard_normal((t, h, dh)) * 2)
    firsts = np.cumsum([0, *(n for *_, n in runs)])[:-1]
    layout = [(int(f), n, c, p) for f, (c, p, n) in zip(firsts, runs, strict=True)]
    tiles_host = ops.tiles_of(layout, rows, ops.tiles_needed(t, len(runs), rows) + 2)
    assert (tiles_host[:, 1] <= rows).all() and tiles_host[:, 1].sum() == t
    out = poison_bf16((t, h, dh))
    ops.attention_runs(
        q_dev, table, ring, cp.asarray(tiles_host), window, n_kv_heads=hkv, out=out, block_rows=rows
    )
    want = np.concatenate([
        attention_ref(q64[f : f + n], *host[c], p + np.arange(n), window) for f, n, c, p in layout
    ])  # fmt: skip
    assert_bf16_close(out, want)
    each = poison_bf16((t, h, dh))  # the per-run launches: the same tiles, so the same bits
    for f, n, c, p in layout:
        k, v = caches[c]
        ops.attention_tiled(q_dev[f : f + n], k, v, window, p, out=each[f : f + n], block_rows=rows)
    np.testing.assert_array_equal(cp.asnumpy(out), cp.asnumpy(each))


@pytest.mark.parametrize("t,n,with_bias", [(1, 1280, True), (3, 37, True), (5, 1283, False), (2, 4, False)])
def test_bias_gelu_vs_numpy(rng, t, n, with_bias):
    x = (rng.standard_normal((t, n)) * 3).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    out = poison_bf16((t, n))
    ops.bias_gelu(cp.asarray(x), None if bias is None else cp.asarray(bias), out=out)
    assert_bf16_close(out, ref.gelu(x.astype(np.float64) + (bias if with_bias else 0)))


@pytest.mark.parametrize("n,offset", [(1280 * 3, 0), (1, 0), (4, 1), (37, 0), (1283, 3)])
def test_widen_bf16_vs_numpy(rng, n, offset):
    bits = rng.integers(0, 1 << 16, n + offset, dtype=np.uint16)  # every pattern: NaN, Inf, subnormals
    x = cp.asarray(bits)[offset:]  # an odd offset takes the scalar path
    out = ops.widen_bf16(x)
    expected = bits[offset:].astype(np.uint32) << 16
    np.testing.assert_array_equal(cp.asnumpy(out).view(np.uint32), expected)
    assert out.dtype == np.float32 and out.shape == x.shape


@pytest.mark.parametrize("t,f", [(1, 9216), (3, 37), (4, 1283), (7, 4), (2, 1)])
@pytest.mark.parametrize("bf16_in", [False, True], ids=["f32", "bf16"])  # the decoder's, the encoder's gu
def test_silu_mul_vs_numpy(rng, t, f, bf16_in):
    gu = (rng.standard_normal((t, 2 * f)) * 3).astype(np.float32)
    gu_dev = cp.asarray(gu)
    if bf16_in:
        gu_dev, gu = to_bf16(gu)
    out = poison_bf16((t, f))
    ops.silu_mul(gu_dev, out=out)
    g, u = gu[:, :f].astype(np.float64), gu[:, f:].astype(np.float64)
    assert_bf16_close(out, ref.silu(g) * u)


@pytest.mark.parametrize("n,c,r,k,dtype", [
    (7, 5, 12, 3, np.float32), (9, 1280, 30, 3, "bf16"), (4, 128, 6, 3, np.float32), (64, 33, 64, 1, "bf16"),
    (1, 3, 1, 3, "bf16")])  # fmt: skip
def test_im2col_rows_vs_numpy(rng, n, c, r, k, dtype):
    x = rng.standard_normal((n, c))
    rows = rng.integers(0, n, (r, k)).astype(np.int32)
    if dtype == "bf16":
        x_dev, x = to_bf16(x)
    else:
        x = x.astype(np.float32)
        x_dev = cp.asarray(x)
    out = poison_bf16((r, c * k))
    ops.im2col_rows(x_dev, cp.asarray(rows), out=out)
    expected = x[rows].transpose(0, 2, 1).reshape(r, c * k)  # [R, C·K], element c·K + k
    np.testing.assert_array_equal(widen(out), widen(to_bf16(expected)[0]))  # exact: a gather + one rounding
    # The flattening matches a conv weight [O, C, K] reshaped to [O, C·K]:
    w = rng.standard_normal((4, c, k))
    conv = np.array([[sum(w[o, ci, kk] * x[rows[ri, kk], ci] for ci in range(c) for kk in range(k))
                      for o in range(4)] for ri in range(min(r, 3))])  # fmt: skip
    np.testing.assert_allclose(expected[: len(conv)] @ w.reshape(4, -1).T, conv, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d", [3072, 37, 4])
def test_embed_vs_numpy(rng, d):
    v, b, ra, t = 50, 3, 5, 4
    e_dev, e64 = to_bf16(rng.standard_normal((v, d)))
    audio = rng.standard_normal((b, ra, d)).astype(np.float32)
    tokens = rng.integers(0, v, t).astype(np.int32)
    pos = rng.integers(0, 1000, t).astype(np.int32)
    slot = rng.integers(0, b, t).astype(np.int32)
    out = cp.full((t, d), np.nan, dtype=np.float32)
    ops.embed(cp.asarray(tokens), e_dev, cp.asarray(audio), cp.asarray(pos), cp.asarray(slot), out=out)
    expected = audio[slot, pos % ra].astype(np.float64) + e64[tokens]
    np.testing.assert_allclose(cp.asnumpy(out), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n", [64, 3072, 5])  # 5: not a multiple of 4 (scalar path)
def test_scatter_rows_vs_numpy(rng, n):
    """Rows from three separate device arrays (any addresses, an odd offset too) into their ring rows;
    every other ring row untouched."""
    c, ra = 3, 7
    rings = rng.standard_normal((c, ra, n)).astype(np.float32)
    parts = [rng.standard_normal((k, n)).astype(np.float32) for k in (2, 1, 4)]
    devs = [cp.asarray(p) for p in parts]
    srcs = [(devs[0], 0), (devs[0], 1), (devs[1], 0), (devs[2], 1), (devs[2], 3)]  # (array, row)
    dst = np.array([0 * ra + 6, 2 * ra + 0, 1 * ra + 3, 2 * ra + 4, 0 * ra + 2], np.int64)
    addr = np.array([a.data.ptr + r * n * 4 for a, r in srcs], np.int64)
    out = cp.asarray(rings)
    ops.scatter_rows(cp.asarray(addr), cp.asarray(dst), out)
    expected = rings.reshape(c * ra, n).copy()
    expected[dst] = [cp.asnumpy(a)[r] for a, r in srcs]
    np.testing.assert_array_equal(cp.asnumpy(out).reshape(c * ra, n), expected)


@pytest.mark.parametrize("v,blocks", [(131072, None), (131072, 1), (1001, None), (1001, 3), (1, None), (1, 5),
                                      (40000, 32)])  # fmt: skip
def test_argmax_advance_vs_numpy(rng, v, blocks):
    b, k = 4, 7
    logits = rng.standard_normal((b, v)).astype(np.float32)
    if v > 10:
        logits[1, [v // 3, 5, v - 1]] = 10.0  # a tie: the lowest index wins
        logits[2, [3, v // 2]] = np.nan  # numpy: the first NaN wins
        logits[3] = -np.inf
    pos = np.array([0, 6, 13, 100], dtype=np.int32)
    tokens, pos_dev = cp.full(b, -1, dtype=np.int32), cp.asarray(pos)
    history = cp.full((b, k), -1, dtype=np.int32)
    ws = ops.argmax_workspace(b, blocks or ops.argmax_blocks(v))
    expected = np.argmax(logits, axis=1)
    hist = np.full((b, k), -1)
    for step in range(2):  # the second launch checks that the first left the workspace ready
        tokens.fill(-1)
        ops.argmax_advance(cp.asarray(logits), tokens, pos_dev, history, blocks=blocks, workspace=ws)
        np.testing.assert_array_equal(cp.asnumpy(tokens), expected)
        np.testing.assert_array_equal(cp.asnumpy(pos_dev), pos + step + 1)
        hist[np.arange(b), (pos + step) % k] = expected
        np.testing.assert_array_equal(cp.asnumpy(history), hist)
        assert (cp.asnumpy(ws)[:, -1] == 0).all(), "argmax left its block counter set"
