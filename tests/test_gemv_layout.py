"""The host side of the decode GEMVs (voxtral/gpu/gemv.py) that needs no GPU: how a Bulk config cuts K
into stages, the shared memory it asks for, the configs the decoder step ships and the instances prebuilt
for them. The kernels themselves: tests/gpu/test_gemv.py."""

import pytest

from voxtral.gpu import gemv
from voxtral.gpu.gemv import BULK_ONE_ROW, DEFAULT, ONE_ROW, WO, Bulk, shared_bytes, step_configs

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


def test_the_shipped_one_row_config_streams_whole_tiles_of_the_real_shapes_and_fits_an_sm():
    for k in (3072, 4096):  # qkv, w13, output (K = D) and wo (K = H·Dh): 48 and 64 KiB tiles
        kc, _ = BULK_ONE_ROW.layout(k)
        assert kc == (k if k == 3072 else 2048)
    assert BULK_ONE_ROW.layout(9216) == (3072, 1)  # w2: 8 row copies of 6 KiB per stage
    for k, x_bf16 in ((3072, False), (4096, True), (9216, True)):
        assert shared_bytes(1, k, x_bf16, BULK_ONE_ROW) <= H200_SHARED


def test_the_step_ships_the_bulk_kernel_at_one_row_and_the_plain_one_above():
    assert set(step_configs(1).values()) == {BULK_ONE_ROW}
    for rows in (2, 8):
        assert step_configs(rows) == {
            "qkv": DEFAULT,
            "wo": WO,
            "w13": DEFAULT,
            "w2": DEFAULT,
            "output": DEFAULT,
        }
    assert ONE_ROW in gemv.SHIPPED  # what gemv() runs instead of a Bulk config on GPUs before sm_90


def test_every_shipped_instance_is_prebuilt_with_the_rope_epilogue_for_bulk():
    names = gemv.TEMPLATES["gemv.cu"]
    for cfg in gemv.SHIPPED:
        assert set(gemv.templates(cfg)) <= set(names)
    rope = gemv.name(gemv.ROPE, True, False, BULK_ONE_ROW)
    assert rope == "gemv_bulk<4, true, false, 16, 3>" and rope in names
    assert not any(n.startswith("gemv<4,") for n in names)  # the plain kernel has no rope epilogue
