"""gemv (cuda/gemv.cu) against voxtral.cpu.ops (rms_norm, linear, silu) in float64, at awkward sizes.

Fresh random inputs per test, BF16 weights widened exactly for the reference. Outputs are poisoned
(NaN) first and must come back fully written (for "add", the residual is random and the check is
elementwise). Tolerances: rel L2 < 5e-3 (f32 out) or < 1e-2 (bf16 out), and every element within
1e-2 (f32) or 2e-2 (bf16) of max |ref|.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from voxtral.cpu import ops as ref
from voxtral.gpu import gemv as gemv_module
from voxtral.gpu import ops
from voxtral.gpu.gemv import BULK_ONE_ROW, BULK_STEP, Bulk, Config, gemv
from voxtral.gpu.kv import KVCaches

cp = pytest.importorskip("cupy", reason="CuPy is not importable")

EPS = 1e-5
BF16_NAN = 0x7FC0
# (B, N, K): N = 1, odd, not a multiple of the 8-row tile; K = 64, 3072 + 8, 4096, and K % 8 ≠ 0 (the
# scalar fallback); B = 1, 3 and the maximum 8.
SIZES = [(1, 1, 64), (3, 37, 3080), (8, 1000, 4096), (2, 37, 45), (1, 1000, 3072), (5, 8, 4096)]


@pytest.fixture
def rng():
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"seed {seed}")  # shown by pytest when the test fails
    return np.random.default_rng(seed)


def bf16(a: np.ndarray):
    """(device uint16 bit patterns, the same values widened to float64)."""
    bits = np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)
    return cp.asarray(bits), widen(bits)


def widen(bits) -> np.ndarray:
    bits = cp.asnumpy(bits) if isinstance(bits, cp.ndarray) else bits
    return np.asarray(bits, np.uint16).view(ml_dtypes.bfloat16).astype(np.float64)


def rel_l2(x: np.ndarray, r: np.ndarray) -> float:
    return float(np.linalg.norm(x - r) / max(np.linalg.norm(r), 1e-30))


def assert_close(out: np.ndarray, expected: np.ndarray, tol: float, elem_tol: float) -> None:
    assert out.shape == expected.shape
    assert np.isfinite(out).all(), f"{out.size - np.isfinite(out).sum()} elements unwritten or not finite"
    assert rel_l2(out, expected) < tol, f"rel L2 {rel_l2(out, expected):.2e} ≥ {tol}"
    err = np.abs(out - expected).max()
    assert err <= elem_tol * np.abs(expected).max(), (
        f"max error {err:.3e}, max |ref| {np.abs(expected).max():.3e}"
    )


def make_inputs(rng, b: int, n: int, k: int, x_bf16: bool, norm: bool):
    """x (device, reference), w (device, reference), g (device, reference) or (None, None)."""
    x = rng.standard_normal((b, k)).astype(np.float32) * 3
    if x_bf16:
        x_dev, x_ref = bf16(x)
    else:
        x_dev, x_ref = cp.asarray(x), x.astype(np.float64)
    w_dev, w_ref = bf16(rng.standard_normal((n, k)) / np.sqrt(k))
    g = rng.standard_normal(k).astype(np.float32) if norm else None
    return x_dev, x_ref, w_dev, w_ref, (cp.asarray(g) if norm else None), g


def reference_y(x_ref, w_ref, g) -> np.ndarray:
    xn = ref.rms_norm(x_ref, g.astype(np.float64), EPS) if g is not None else x_ref
    return ref.linear(xn, w_ref)


@pytest.mark.parametrize("b,n,k", SIZES)
@pytest.mark.parametrize("x_bf16,norm", [(False, False), (True, False), (False, True)])
def test_gemv_store_vs_numpy(rng, b, n, k, x_bf16, norm):
    x, x_ref, w, w_ref, g, g_ref = make_inputs(rng, b, n, k, x_bf16, norm)
    out = cp.full((b, n), np.nan, np.float32)
    gemv(x, w, out, norm_weight=g, eps=EPS)
    assert_close(cp.asnumpy(out).astype(np.float64), reference_y(x_ref, w_ref, g_ref), 5e-3, 1e-2)


@pytest.mark.parametrize("b,n,k", SIZES)
@pytest.mark.parametrize("x_bf16,norm", [(True, False), (False, True)])
def test_gemv_add_vs_numpy(rng, b, n, k, x_bf16, norm):
    x, x_ref, w, w_ref, g, g_ref = make_inputs(rng, b, n, k, x_bf16, norm)
    h = rng.standard_normal((b, n)).astype(np.float32)
    out = cp.asarray(h)
    gemv(x, w, out, norm_weight=g, eps=EPS, epilogue="add")
    y = reference_y(x_ref, w_ref, g_ref)
    got = cp.asnumpy(out).astype(np.float64)
    assert_close(got - h, y, 5e-3, 1e-2)  # every y landed (h alone would miss it by |y|)


@pytest.mark.parametrize("b,f,k", [(1, 1, 64), (3, 37, 3080), (8, 1000, 3072), (2, 9, 45), (4, 4, 4096)])
@pytest.mark.parametrize(
    "x_bf16,norm,out_bf16",
    [(False, True, True), (False, True, False), (True, False, True), (False, False, False)],
)
def test_gemv_swiglu_vs_numpy(rng, b, f, k, x_bf16, norm, out_bf16):
    x, x_ref, w, w_ref, g, g_ref = make_inputs(rng, b, 2 * f, k, x_bf16, norm)
    y = reference_y(x_ref, w_ref, g_ref)
    expected = ref.silu(y[:, :f]) * y[:, f:]
    if out_bf16:
        out = cp.full((b, f), BF16_NAN, np.uint16)
        gemv(x, w, out, norm_weight=g, eps=EPS, epilogue="swiglu")
        assert_close(widen(out), expected, 1e-2, 2e-2)
    else:
        out = cp.full((b, f), np.nan, np.float32)
        gemv(x, w, out, norm_weight=g, eps=EPS, epilogue="swiglu")
        assert_close(cp.asnumpy(out).astype(np.float64), expected, 5e-3, 1e-2)


# (B, N, K): 6000 rows = 750 tiles, more than 4 per block on any GPU of ≤ 187 SMs, so slots are reused.
SLOT_SIZES = [(3, 6000, 64), (8, 37, 3080), (1, 1000, 45)]
BARRIER = Config(16, 8, 256, 0)  # the block-barrier combine


@pytest.mark.parametrize("b,n,k", SLOT_SIZES)
@pytest.mark.parametrize("epilogue,x_bf16,norm", [("store", False, False), ("store", True, False),
    ("store", False, True), ("add", True, False), ("add", False, True), ("add", False, False)])  # fmt: skip
def test_gemv_slots_vs_numpy(rng, b, n, k, epilogue, x_bf16, norm):
    """Many tiles per block: partial-sum slots are reused (and counted) correctly."""
    x, x_ref, w, w_ref, g, g_ref = make_inputs(rng, b, n, k, x_bf16, norm)
    h = rng.standard_normal((b, n)).astype(np.float32) if epilogue == "add" else np.zeros((b, n), np.float32)
    out = cp.asarray(h) if epilogue == "add" else cp.full((b, n), np.nan, np.float32)
    gemv(x, w, out, norm_weight=g, eps=EPS, epilogue=epilogue)
    assert_close(cp.asnumpy(out).astype(np.float64) - h, reference_y(x_ref, w_ref, g_ref), 5e-3, 1e-2)


@pytest.mark.parametrize("b,f,k", [(3, 3000, 64), (8, 37, 3080)])
@pytest.mark.parametrize("x_bf16,norm", [(False, True), (True, False), (False, False)])
@pytest.mark.parametrize("out_bf16", [True, False])
def test_gemv_slots_swiglu_vs_numpy(rng, b, f, k, x_bf16, norm, out_bf16):
    x, x_ref, w, w_ref, g, g_ref = make_inputs(rng, b, 2 * f, k, x_bf16, norm)
    out = cp.full((b, f), BF16_NAN, np.uint16) if out_bf16 else cp.full((b, f), np.nan, np.float32)
    gemv(x, w, out, norm_weight=g, eps=EPS, epilogue="swiglu")
    y = reference_y(x_ref, w_ref, g_ref)
    got = widen(out) if out_bf16 else cp.asnumpy(out).astype(np.float64)
    assert_close(got, ref.silu(y[:, :f]) * y[:, f:], 1e-2 if out_bf16 else 5e-3, 2e-2 if out_bf16 else 1e-2)


CONFIGS = [BARRIER, Config(16, 8, 256, 1), Config(16, 4, 256, 1), Config(8, 8, 256, 1), Config(8, 8, 256, 0),
           Config(8, 4, 0, 0), Config(4, 2, 128, 1)]  # fmt: skip


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_gemv_configs_vs_numpy(rng, config):
    """Other kernel shapes (the timing sweep's) compute the same function, with slots reused."""
    b, f, k = 3, 3000, 200
    x, x_ref, w, w_ref, g, g_ref = make_inputs(rng, b, 2 * f, k, False, True)
    out = cp.full((b, f), BF16_NAN, np.uint16)
    gemv(x, w, out, norm_weight=g, eps=EPS, epilogue="swiglu", config=config)
    y = reference_y(x_ref, w_ref, g_ref)
    assert_close(widen(out), ref.silu(y[:, :f]) * y[:, f:], 1e-2, 2e-2)


EPILOGUE_INPUTS = [("store", False, True), ("store", True, False), ("add", True, False),
                   ("add", False, False), ("swiglu", False, True), ("swiglu_bf16", True, False)]  # fmt: skip
# Bulk shapes: whole tiles, several per stage at small K (a short last group); several chunks per tile
# with a short last one (stage_kb=1: kc = 64); fewer stages than chunks per block; two blocks per SM;
# 2 and 16 consumer warps; x in registers (x_regs) over one chunk, two (K = 4096, 3080: a short last
# chunk), where the fragments fit the config's capacity (else x is staged).
BULKS = [Bulk(), Bulk(8, 2, 1), Bulk(4, 3, 2, 2), Bulk(16, 8, 24, 2), Bulk(2, 4, 4), Bulk(8, 2, 96),
         BULK_STEP, Bulk(16, 3, 24, x_regs=True), Bulk(8, 2, 96, x_regs=True)]  # fmt: skip
# (B, N, K): many tiles per block (6000 rows), a last tile of 5 rows, K = 3080 (not a multiple of 32),
# K = 45 (K % 8 ≠ 0: the plain kernel takes it), B = 1 and 8.
BULK_SIZES = [(3, 6000, 64), (8, 37, 3080), (1, 1000, 4096), (2, 13, 45), (1, 3, 200)]


@pytest.mark.parametrize("config", BULKS, ids=str)
@pytest.mark.parametrize("b,n,k", BULK_SIZES)
@pytest.mark.parametrize("epilogue,x_bf16,norm", EPILOGUE_INPUTS)
@pytest.mark.parametrize("dynamic", [False, True], ids=["fixed", "dynamic"])
def test_gemv_bulk_vs_numpy(rng, config, b, n, k, epilogue, x_bf16, norm, dynamic):
    """The bulk-copy kernel computes the same function as the reference in every epilogue, with fixed
    shares or tiles taken from a counter (launched twice: the counters must be back at zero)."""
    check_bulk(rng, config, b, n, k, epilogue, x_bf16, norm, dynamic)


def check_bulk(rng, config, b, n, k, epilogue, x_bf16, norm, dynamic):
    """gemv with a Bulk config against the reference, launched twice (tile counters back at zero)."""
    n += epilogue.startswith("swiglu") and n % 2
    x, x_ref, w, w_ref, g, g_ref = make_inputs(rng, b, n, k, x_bf16, norm)
    y = reference_y(x_ref, w_ref, g_ref)
    sched = cp.zeros(2, np.int32) if dynamic else None
    swiglu = epilogue.startswith("swiglu")
    expected = ref.silu(y[:, : n // 2]) * y[:, n // 2 :] if swiglu else y
    for _ in range(2):
        if swiglu:
            f = n // 2
            bf = epilogue.endswith("bf16")
            out = cp.full((b, f), BF16_NAN, np.uint16) if bf else cp.full((b, f), np.nan, np.float32)
            gemv(x, w, out, norm_weight=g, eps=EPS, epilogue="swiglu", config=config, schedule=sched)
            got = widen(out) if bf else cp.asnumpy(out).astype(np.float64)
            assert_close(got, expected, *((1e-2, 2e-2) if bf else (5e-3, 1e-2)))
        else:
            h = (
                rng.standard_normal((b, n)).astype(np.float32)
                if epilogue == "add"
                else np.zeros((b, n), np.float32)
            )
            out = cp.asarray(h) if epilogue == "add" else cp.full((b, n), np.nan, np.float32)
            gemv(x, w, out, norm_weight=g, eps=EPS, epilogue=epilogue, config=config, schedule=sched)
            assert_close(cp.asnumpy(out).astype(np.float64) - h, expected, 5e-3, 1e-2)
        if dynamic:
            assert cp.asnumpy(sched).tolist() == [0, 0]


@pytest.mark.parametrize("b,k,x_bf16", [(8, 3072, False), (1, 3072, False), (5, 4096, True), (3, 3080, True)])
def test_gemv_x_in_registers_equals_x_staged(rng, b, k, x_bf16):
    """x fragments held in registers feed the mma steps the very operands a staged x does (same stage
    layout: K in one chunk or two, a short last one at 3080): without the norm the bits are equal; with
    it only the order of the sum of squares differs (the scale within rounding)."""
    regs, staged = Bulk(16, 2, 48, x_regs=True), Bulk(16, 2, 48)
    assert regs.x_fragments(k, x_bf16)[0] > 0 and staged.x_fragments(k, x_bf16) == (0, 1)
    assert gemv_module.shared_bytes(b, k, x_bf16, staged) <= 227 * 1024  # no fallback to the plain kernel
    n = 1000
    x, _, w, _, _, _ = make_inputs(rng, b, n, k, x_bf16, False)
    got, want = cp.full((b, n), np.nan, np.float32), cp.full((b, n), np.nan, np.float32)
    gemv(x, w, got, config=regs)
    gemv(x, w, want, config=staged)
    np.testing.assert_array_equal(cp.asnumpy(got), cp.asnumpy(want))
    if not x_bf16:
        g = cp.asarray(rng.standard_normal(k).astype(np.float32))
        gemv(x, w, got, norm_weight=g, eps=EPS, config=regs)
        gemv(x, w, want, norm_weight=g, eps=EPS, config=staged)
        np.testing.assert_allclose(cp.asnumpy(got), cp.asnumpy(want), rtol=1e-5, atol=1e-5)


# Passes (bf16 x whose K a lane's registers do not hold): the decoder's w2 at 2–8 rows (K = 9216 in 5
# chunks of 1856), and 2 warps with 64-column chunks (K = 3080: 49 chunks, the last short; K = 200: 4).
PASSES = [(gemv_module.BULK_W2, b, n, k) for b, n, k in [(8, 3000, 9216), (1, 1000, 9216), (3, 37, 9216)]]
TWO_WARPS = Bulk(2, 3, 1, x_regs=True, x_passes=True)
PASSES += [(TWO_WARPS, b, n, k) for b, n, k in [(3, 37, 3080), (5, 11, 200), (8, 40, 512)]]


@pytest.mark.parametrize("config,b,n,k", PASSES)
@pytest.mark.parametrize("epilogue", ["store", "add", "swiglu_bf16"])
@pytest.mark.parametrize("dynamic", [False, True], ids=["fixed", "dynamic"])
def test_gemv_bulk_passes_vs_numpy(rng, config, b, n, k, epilogue, dynamic):
    """x in registers one chunk at a time, the tiles walked chunk-major and their sums kept in shared
    memory, computes the reference's function; a tile counter given is left alone (static shares)."""
    assert config.x_fragments(k, True)[1] == 0  # passes
    check_bulk(rng, config, b, n, k, epilogue, True, False, dynamic)


def test_gemv_bulk_passes_fall_back_past_their_tiles(rng):
    """More tiles than PASS_TILES a block on this GPU: x is staged instead, same function."""
    config, k = TWO_WARPS, 512
    assert config.x_fragments(k, True)[1] == 0
    sms = gemv_module.device_limits(cp.cuda.Device().id)[0]
    n = gemv_module.TILE_ROWS * (gemv_module.PASS_TILES * sms + 3)
    x, x_ref, w, w_ref, _, _ = make_inputs(rng, 1, n, k, True, False)
    out = cp.full((1, n), np.nan, np.float32)
    gemv(x, w, out, config=config)
    assert_close(cp.asnumpy(out).astype(np.float64), reference_y(x_ref, w_ref, None), 5e-3, 1e-2)


def test_gemv_bulk_dynamic_in_a_graph_replays(rng):
    """Captured with its tile counter, the launch replays to the same bits every time (counter reset)."""
    x, _, w, _, g, _ = make_inputs(rng, 1, 6000, 3072, False, True)
    out, sched = cp.empty((1, 6000), np.float32), cp.zeros(2, np.int32)
    gemv(x, w, out, norm_weight=g, eps=EPS, config=Bulk(), schedule=sched)
    first = cp.asnumpy(out)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        gemv(x, w, out, norm_weight=g, eps=EPS, config=Bulk(), schedule=sched, pdl=True)
        graph = stream.end_capture()
        for _ in range(5):
            out.fill(np.nan)
            graph.launch(stream)
            stream.synchronize()
            np.testing.assert_array_equal(cp.asnumpy(out), first)
    assert cp.asnumpy(sched).tolist() == [0, 0]


def test_gemv_bulk_equals_the_plain_kernel_bitwise(rng):
    """Same k order per warp (8 warps, K in one chunk), same combine: bulk and plain SYNC 0 sums are equal."""
    x, _, w, _, g, _ = make_inputs(rng, 1, 3072, 3072, False, True)
    a, c = cp.empty((1, 3072), np.float32), cp.empty((1, 3072), np.float32)
    gemv(x, w, a, norm_weight=g, eps=EPS, config=Bulk(8, 4, 48))
    gemv(x, w, c, norm_weight=g, eps=EPS, config=Config(8, 12, 256, 0))
    np.testing.assert_array_equal(cp.asnumpy(a), cp.asnumpy(c))


@pytest.mark.parametrize("config", [Config(), BARRIER, BULK_ONE_ROW, BULK_STEP], ids=str)
def test_gemv_prefetch_next(rng, config):
    """Warming the next weights in L2 changes nothing in the result: the same bits as without."""
    b, n, k = 2, 1000, 3072
    x, x_ref, w, w_ref, g, g_ref = make_inputs(rng, b, n, k, False, True)
    nxt = cp.zeros((5000, 3072), np.uint16)  # 30 MB: more than the NEXT_BYTES it reads
    out, plain = cp.full((b, n), np.nan, np.float32), cp.full((b, n), np.nan, np.float32)
    gemv(x, w, out, norm_weight=g, eps=EPS, prefetch=nxt, config=config, schedule=cp.zeros(2, np.int32))
    assert_close(cp.asnumpy(out).astype(np.float64), reference_y(x_ref, w_ref, g_ref), 5e-3, 1e-2)
    gemv(x, w, plain, norm_weight=g, eps=EPS, config=config)  # (a Bulk schedule: which block, not sums)
    np.testing.assert_array_equal(cp.asnumpy(out), cp.asnumpy(plain))


def test_gemv_f32_precision(rng):
    """f32 x is split into bf16 hi + lo halves: the product keeps ~16 bits of x, far better than bf16 x."""
    b, n, k = 2, 64, 3072
    x, x_ref, w, w_ref, _, _ = make_inputs(rng, b, n, k, False, False)
    out = gemv(x, w, cp.full((b, n), np.nan, np.float32))
    assert rel_l2(cp.asnumpy(out).astype(np.float64), ref.linear(x_ref, w_ref)) < 1e-4


def test_gemv_in_cuda_graph(rng):
    """The launch allocates nothing and syncs nothing: it captures and replays in a CUDA graph."""
    b, n, k = 2, 300, 1024
    x, x_ref, w, w_ref, g, g_ref = make_inputs(rng, b, n, k, False, True)
    out = cp.full((b, n), np.nan, np.float32)
    gemv(x, w, out, norm_weight=g, eps=EPS)  # compile and load outside the capture
    out.fill(np.nan)
    cp.cuda.Device().synchronize()
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        gemv(x, w, out, norm_weight=g, eps=EPS)
        graph = stream.end_capture()
        graph.launch(stream)
        stream.synchronize()
    assert_close(cp.asnumpy(out).astype(np.float64), reference_y(x_ref, w_ref, g_ref), 5e-3, 1e-2)


class MiniStep:
    """A decoder step in miniature at awkward sizes: embed, per layer gemv qkv (+norm), rope_qkv,
    attention_split, gemv wo (+=), rms_norm + gemv w13 (swiglu), gemv w2 (+=); then gemv output (+norm)
    and argmax_advance, which feeds the next step's token and position. Rows serve slots in a shuffled
    order; each slot's ring KV caches (KVCaches) hold R = window rows, wrapped."""

    B, D, H, HKV, DH, F, V, R, LAYERS = 3, 384, 4, 2, 64, 601, 3000, 16, 2  # F odd: scalar w2 loads

    def __init__(self, rng):
        b, d, q_dim, kv = self.B, self.D, self.H * self.DH, self.HKV * self.DH
        self.layers = [
            dict(wqkv=bf16(rng.standard_normal((q_dim + 2 * kv, d)) / np.sqrt(d))[0],
                 wo=bf16(rng.standard_normal((d, q_dim)) / np.sqrt(q_dim))[0],
                 w13=bf16(rng.standard_normal((2 * self.F, d)) / np.sqrt(d))[0],
                 w2=bf16(rng.standard_normal((d, self.F)) / np.sqrt(self.F))[0],
                 g1=cp.asarray(rng.standard_normal(d).astype(np.float32)),
                 g2=cp.asarray(rng.standard_normal(d).astype(np.float32)))
            for _ in range(self.LAYERS)
        ]  # fmt: skip
        self.E = bf16(rng.standard_normal((self.V, d)))[0]
        self.g = cp.asarray(rng.standard_normal(d).astype(np.float32))
        self.kv = KVCaches(self.LAYERS, b + 1, self.HKV, self.DH)  # slot b stays closed (scratch)
        for c in range(b):
            self.kv.open(c, self.R)
            for a in self.kv.arrays[c]:  # [L, R, Hkv, Dh]
                a[...] = bf16(rng.standard_normal(a.shape))[0]
        self.audio = cp.asarray(rng.standard_normal((b, 5, d)).astype(np.float32))
        self.tokens = cp.asarray(rng.integers(0, self.V, b).astype(np.int32))
        self.pos = cp.asarray(rng.integers(0, 100, b).astype(np.int32))
        self.slot = cp.asarray(rng.permutation(b).astype(np.int32))  # row r serves slot slot[r]
        self.history = cp.zeros((b, 8), np.int32)
        self.h, self.qkv = cp.empty((b, d), np.float32), cp.empty((b, q_dim + 2 * kv), np.float32)
        self.q, self.o = cp.empty((b, self.H, self.DH), np.uint16), cp.empty((b, self.H, self.DH), np.uint16)
        self.x, self.u = cp.empty((b, d), np.uint16), cp.empty((b, self.F), np.uint16)
        self.logits = cp.empty((b, self.V), np.float32)
        self.ws = ops.attention_workspace(b, self.H, self.HKV, self.DH)
        self.argmax_ws = ops.argmax_workspace(b, ops.argmax_blocks(self.V))

    def __call__(self, pdl: bool) -> None:
        ops.embed(self.tokens, self.E, self.audio, self.pos, self.slot, out=self.h, pdl=pdl)
        dims = dict(n_kv_heads=self.HKV)
        for i, lw in enumerate(self.layers):
            cache, ring = self.kv.layer(i)
            gemv(self.h, lw["wqkv"], self.qkv, norm_weight=lw["g1"], eps=EPS, pdl=pdl)
            ops.rope_qkv(self.qkv, self.pos, self.slot, cache, ring, 1e6, **dims, head_dim=self.DH,
                         out=self.q, pdl=pdl)  # fmt: skip
            ops.attention_split(self.q, cache, ring, self.pos, self.slot, self.R, **dims, out=self.o,
                                workspace=self.ws, pdl=pdl, early=pdl)  # fmt: skip
            gemv(self.o.reshape(self.B, -1), lw["wo"], self.h, epilogue="add", pdl=pdl)
            ops.rms_norm(self.h, lw["g2"], EPS, out=self.x, pdl=pdl)
            gemv(self.x, lw["w13"], self.u, epilogue="swiglu", pdl=pdl)
            gemv(self.u, lw["w2"], self.h, epilogue="add", pdl=pdl)
        gemv(self.h, self.E, self.logits, norm_weight=self.g, eps=EPS, pdl=pdl)
        ops.argmax_advance(
            self.logits, self.tokens, self.pos, self.history, workspace=self.argmax_ws, pdl=pdl
        )

    def state(self) -> dict:
        """Host copies of everything the step writes (and of what it reads from the last step)."""
        names = ("tokens", "pos", "history", "h", "qkv", "q", "o", "x", "u", "logits")
        out = {n: cp.asnumpy(getattr(self, n)) for n in names}
        return out | {f"kv{c}": cp.asnumpy(cp.stack(self.kv.arrays[c])) for c in range(self.B)}

    def restore(self, s: dict) -> None:
        """Back to state s; the intermediate buffers poisoned (NaN) so that unwritten ones show."""
        for n in ("tokens", "pos", "history"):
            getattr(self, n).set(s[n])
        for c in range(self.B):
            for a, saved in zip(self.kv.arrays[c], s[f"kv{c}"], strict=True):
                a.set(saved)
        for a in (self.h, self.qkv, self.logits):
            a.fill(np.nan)
        for a in (self.q, self.o, self.x, self.u):
            a.fill(BF16_NAN)


def run_steps(step: MiniStep, pdl: bool, graph: bool, n: int) -> list[dict]:
    """n steps from the current state, eagerly or as replays of one captured graph; states after each."""
    cp.cuda.Device().synchronize()
    stream = cp.cuda.Stream(non_blocking=True)
    states = []
    with stream:
        if graph:
            stream.begin_capture()
            step(pdl)
            g = stream.end_capture()
        for _ in range(n):
            if graph:
                g.launch(stream)
            else:
                step(pdl)
            stream.synchronize()
            states.append(step.state())
    return states


def test_gemv_pdl_graph_matches_plain(rng):
    """The step chain launched with PDL, in a graph and eagerly, is bitwise the plain graph's, step
    after step (each step's argmax feeds the next one's embed)."""
    step = MiniStep(rng)
    step(False)  # compile and load everything outside the captures
    step(True)
    cp.cuda.Device().synchronize()
    start = step.state()
    runs = {}
    for pdl, graph in ((False, True), (True, True), (True, False)):
        step.restore(start)
        runs[pdl, graph] = run_steps(step, pdl, graph, n=3)
    want = runs[False, True]
    assert all(np.isfinite(s["logits"]).all() and np.isfinite(s["h"]).all() for s in want)
    for key in ((True, True), (True, False)):
        for i, (a, b) in enumerate(zip(want, runs[key], strict=True)):
            for n in a:
                assert a[n].tobytes() == b[n].tobytes(), f"pdl, graph = {key}: step {i}, {n} differs"


def test_gemv_rejects_bad_shapes():
    w = cp.zeros((16, 64), np.uint16)
    with pytest.raises(AssertionError, match="rows"):
        gemv(cp.zeros((9, 64), np.float32), w, cp.zeros((9, 16), np.float32))
    with pytest.raises(AssertionError, match="RMSNorm"):
        gemv(
            cp.zeros((1, 64), np.uint16),
            w,
            cp.zeros((1, 16), np.float32),
            norm_weight=cp.ones(64, np.float32),
        )
    with pytest.raises(AssertionError, match="shape"):
        gemv(cp.zeros((1, 64), np.float32), w, cp.zeros((1, 16), np.float32), epilogue="swiglu")


def ring_tables(rings, hkv, dh):
    """Poisoned bf16 K, V rings [R_c, Hkv, Dh] per slot and their tables (cache [C, 2] uint64, ring [C])."""
    caches = [tuple(cp.full((r, hkv, dh), BF16_NAN, np.uint16) for _ in range(2)) for r in rings]
    table = cp.asarray(np.array([[k.data.ptr, v.data.ptr] for k, v in caches], np.uint64))
    return caches, table, cp.asarray(np.array(rings, np.int32))


def assert_bf16_bits_match(got, want):
    """Equal bits but for ≤ 0.1 % of the elements one bf16 ulp apart (FMA contraction may differ)."""
    got, want = (np.asarray(cp.asnumpy(a), np.uint16).astype(np.int32) for a in (got, want))
    apart = np.abs(got - want)
    assert apart.max() <= 1 and (apart > 0).mean() <= 1e-3, (
        f"{(apart > 0).sum()} differ, most by {apart.max()}"
    )


@pytest.mark.parametrize("b,h,hkv,dh,k,rings,per_row", [
    (1, 32, 8, 128, 3072, (9,), True), (3, 32, 8, 128, 3072, (5, 8192, 2), False),
    (2, 3, 1, 64, 200, (7, 7), True), (8, 4, 2, 64, 64, (3, 4, 5, 6, 7, 8, 9, 10), False)])  # fmt: skip
def test_gemv_rope_epilogue_equals_store_then_rope_qkv(rng, b, h, hkv, dh, k, rings, per_row):
    """The fused rope epilogue writes what gemv(store) + ops.rope_qkv write: q, and k, v in the rings."""
    from voxtral.gpu import ops
    from voxtral.gpu.gemv import Rope, fuses_rope

    n = (h + 2 * hkv) * dh
    x, _, w, _, g, _ = make_inputs(rng, b, n, k, False, True)
    if per_row:
        slot, slot_dev = np.arange(b), None
    else:
        slot = rng.permutation(len(rings))[:b].astype(np.int32)
        slot_dev = cp.asarray(slot)
    pos = np.array([rng.integers(0, 1_000_000) for _ in range(b)], np.int32)
    pos_dev, theta = cp.asarray(pos), 1e6
    cfg = Bulk(16, 3, 48)
    assert fuses_rope(x, w, cfg)
    fused, table_f, ring_f = ring_tables(rings, hkv, dh)
    q_f = cp.full((b, h, dh), BF16_NAN, np.uint16)
    rope = Rope(pos_dev, slot_dev, table_f, ring_f, theta, hkv, dh)
    gemv(x, w, q_f, norm_weight=g, eps=EPS, epilogue="rope", rope=rope, config=cfg)
    plain, table_p, ring_p = ring_tables(rings, hkv, dh)
    qkv, q_p = cp.empty((b, n), np.float32), cp.full((b, h, dh), BF16_NAN, np.uint16)
    gemv(x, w, qkv, norm_weight=g, eps=EPS, config=cfg)
    ops.rope_qkv(qkv, pos_dev, slot_dev, table_p, ring_p, theta, n_kv_heads=hkv, head_dim=dh, out=q_p)
    assert_bf16_bits_match(q_f, q_p)
    for (kf, vf), (kp, vp) in zip(fused, plain, strict=True):  # the rows written and the NaN rows alike
        assert_bf16_bits_match(kf, kp)
        assert_bf16_bits_match(vf, vp)
    assert any((cp.asnumpy(kf) != BF16_NAN).any() for kf, _ in fused), "no K row was written"
