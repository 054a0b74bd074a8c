"""The host side of the decode GEMVs (voxtral/gpu/gemv.py) that needs no GPU: how a Bulk config cuts K
into stages, the shared memory it asks for, the configs the decoder step ships and the instances prebuilt
for them. The kernels themselves: tests/gpu/test_gemv.py."""

import itertools

import pytest

from voxtral.gpu import gemv
from voxtral.gpu.gemv import BULK_ONE_ROW, BULK_STEP, DEFAULT, ONE_ROW, Bulk, shared_bytes, step_configs

H200_SHARED = 227 * 1024  # opt-in shared memory per block (sm_90)


@pytest.mark.parametrize("k", [8, 64, 200, 3072, 3080, 4096, 9216, 12345 // 8 * 8])
@pytest.mark.parametrize(
    "cfg", [Bulk(), BULK_ONE_ROW, Bulk(8, 2, 1), Bulk(4, 3, 96), Bulk(8, 4, 16, 2)], ids=str
)
def test_a_stage_is_whole_tiles_or_one_tile_in_equal_chunks(cfg, k):
    kc, tps = cfg.layout(k)
    aim, tile = cfg.stage_kb * 1024, 2 * gemv.TILE_ROWS * k
    if tile <= aim:  # whole tiles, as many as the stage holds, one copy each
        assert kc == k and tps == aim // tile >= 1
        assert cfg.stage_bytes(k) == tps * tile <= aim
    else:  # one tile, K in chunks that are multiples of 32 and cover it in as few as the stage allows
        assert tps == 1 and kc % 32 == 0 and 32 <= kc < k
        chunks = -(-k // kc)
        assert (chunks - 1) * kc < k <= chunks * kc
        assert cfg.stage_bytes(k) == gemv.TILE_ROWS * (2 * kc + 64)


def test_the_step_config_streams_whole_tiles_of_the_real_shapes_and_fits_an_sm():
    for k in (3072, 4096):  # qkv, w13, output (K = D) and wo (K = H·Dh): 48 and 64 KiB tiles
        kc, _ = BULK_STEP.layout(k)
        assert kc == (k if k == 3072 else 2048)
    assert BULK_STEP.layout(9216) == (3072, 1)  # w2: 8 row copies of 6 KiB per stage
    for rows in (1, 8):  # x in registers: the same shared memory at any row count
        for k, x_bf16 in ((3072, False), (4096, True)):
            assert shared_bytes(rows, k, x_bf16, BULK_STEP) <= H200_SHARED
    assert shared_bytes(1, 9216, True, BULK_STEP) <= H200_SHARED  # w2's one row of x, staged
    assert shared_bytes(8, 9216, True, BULK_STEP) > H200_SHARED  # … not at 8 rows: w2 takes passes
    assert gemv.BULK_W2.layout(9216) == (1856, 1)  # 5 chunks of 4 fragments a lane
    assert shared_bytes(8, 9216, True, gemv.BULK_W2) <= H200_SHARED


def test_the_step_ships_the_bulk_kernel_and_passes_for_w2_above_one_row():
    assert set(step_configs(1).values()) == {BULK_STEP}
    for rows in (2, 8):
        assert step_configs(rows) == {
            "qkv": BULK_STEP,
            "wo": BULK_STEP,
            "w13": BULK_STEP,
            "w2": gemv.BULK_W2,
            "output": BULK_STEP,
        }
    # what gemv() runs instead of a Bulk config on GPUs before sm_90
    assert ONE_ROW in gemv.SHIPPED and DEFAULT in gemv.SHIPPED


def test_every_shipped_instance_is_prebuilt_with_the_rope_epilogue_for_bulk():
    names = gemv.TEMPLATES["gemv.cu"]
    for cfg in gemv.SHIPPED:
        assert set(gemv.templates(cfg)) <= set(names)
    assert gemv.name(gemv.ROPE, True, False, BULK_ONE_ROW) == "gemv_bulk<4, true, false, 16, 3, 0, 1>"
    rope = gemv.name(gemv.ROPE, True, False, BULK_STEP, 3072)  # x in registers: 6 fragments, 1 chunk
    assert rope == "gemv_bulk<4, true, false, 16, 3, 6, 1>" and rope in names
    assert gemv.name(gemv.ROPE, True, False, BULK_STEP) == "gemv_bulk<4, true, false, 16, 3, 0, 1>" in names
    for k in (64, 200, 1000, 3072, 4096, 9216, 12000):  # any model's K: an instance that is prebuilt
        for epi, norm, x_bf16 in ((0, True, False), (1, False, True), (3, True, False), (4, True, False)):
            assert gemv.name(epi, norm, x_bf16, BULK_STEP, k) in names
    assert not any(n.startswith("gemv<4,") for n in names)  # the plain kernel has no rope epilogue


@pytest.mark.parametrize("warps", [2, 4, 8, 15, 16])
@pytest.mark.parametrize("k", [64, 3072, 3080, 4096, 9216])
@pytest.mark.parametrize("x_bf16", [False, True])
def test_x_fragments_cover_a_chunk_and_fit_the_registers(warps, k, x_bf16):
    """With x_regs a lane holds the config's capacity of XU fragments of each of XC chunks (one instance
    per x dtype, whatever K): where K's chunks need no more, XU·warps 32-column steps cover a chunk and
    the fragments leave X_REGISTERS_SPARE of the registers a lane of that block can have. Else bf16 x
    whose chunks each fit X_PASS_CAPACITY fragments takes passes (XC = 0: one chunk's fragments and the
    next one's, the tiles' sums in shared memory); otherwise (or without x_regs) x is staged in shared
    memory, which then holds its rows."""
    for stage_kb, passes in itertools.product((4, 24, 48, 96), (False, True)):
        cfg = Bulk(warps, 3, stage_kb, x_regs=True, x_passes=passes)
        xu, xc = cfg.x_fragments(k, x_bf16)
        kc, _ = cfg.layout(k)
        lane_regs = 65536 // (-(-(warps + 1) // 4) * 4 * 32) // 8 * 8
        if xu and xc == 0:
            cap = cfg.x_capacity(x_bf16)
            assert passes and x_bf16 and xu == gemv.X_PASS_CAPACITY
            assert -(-k // kc) > cap[1] or -(-kc // 32) > cap[0] * warps  # the whole of K does not fit
            assert xu * warps * 32 >= kc and 2 * xu * 4 + gemv.X_REGISTERS_SPARE <= min(255, lane_regs)
            head = shared_bytes(8, k, x_bf16, cfg) - cfg.stages * cfg.stage_bytes(k)
            room = gemv.PASS_TILES * warps * 256  # the tiles' sums
            assert head == -(-(gemv.BULK_HEADER + 2 * warps * 256 + 8 * warps * 4 + room) // 128) * 128
        elif xu:
            assert (xu, xc) == cfg.x_capacity(x_bf16)
            assert -(-k // kc) <= xc and xu * warps * 32 >= kc
            assert xu * xc * (4 if x_bf16 else 8) + gemv.X_REGISTERS_SPARE <= min(255, lane_regs)
            g_copy = 0 if x_bf16 else 4 * k  # the norm weight's copy (f32 x may come with a norm)
            head = shared_bytes(8, k, x_bf16, cfg) - cfg.stages * cfg.stage_bytes(k)  # no rows of x in it
            assert head == -(-(gemv.BULK_HEADER + 2 * warps * 256 + 8 * warps * 4 + g_copy) // 128) * 128
            assert shared_bytes(8, k, x_bf16, cfg) < shared_bytes(8, k, x_bf16, Bulk(warps, 3, stage_kb))
        else:
            assert xc == 1 and shared_bytes(8, k, x_bf16, cfg) == shared_bytes(
                8, k, x_bf16, Bulk(warps, 3, stage_kb)
            )
        assert Bulk(warps, 3, stage_kb).x_fragments(k, x_bf16) == (0, 1)


def test_the_official_shapes_hold_x_in_registers_but_w2():
    """K = 3072 (f32 x: qkv, w13, output) and 4096 (bf16 x: wo) in registers; w2's 9216 (18 fragments of
    bf16 x a lane at 16 warps) would not leave the spare registers: staged (chunks of 3072 columns, 6
    fragments each), or in passes with BULK_W2's chunks of 1856 columns (4 fragments each)."""
    assert BULK_STEP.x_fragments(3072, False) == (6, 1)
    assert BULK_STEP.x_fragments(4096, True) == (4, 2)
    assert BULK_STEP.x_fragments(9216, True) == (0, 1)
    assert gemv.BULK_W2.x_fragments(9216, True) == (gemv.X_PASS_CAPACITY, 0) == (4, 0)
