"""The host side of skinny_gemm (voxtral/gpu/skinny.py) that needs no GPU: the (box rows, split-K) plan
for the decoder's shapes and the shared memory it asks for. The kernel itself: tests/gpu/test_skinny.py."""

import pytest

from voxtral.gpu import skinny
from voxtral.gpu.skinny import BOX_ROWS, CLUSTERS, MIN_STEPS, boxes, plan, shared_bytes

H200_SHARED = 227 * 1024  # opt-in shared memory per block (sm_90)
# full-size decoder: qkv, wo, w13 (SwiGLU), w2, output head; and odd sizes
SHAPES = [(6144, 3072, "store"), (3072, 4096, "add"), (18432, 3072, "swiglu"), (3072, 9216, "add"),
          (131072, 3072, "store"), (37, 72, "store"), (1000, 9216, "store"), (2, 8, "swiglu")]  # fmt: skip


@pytest.mark.parametrize("n,k,epilogue", SHAPES)
@pytest.mark.parametrize("sms", [132, 108, 16])
def test_the_plan_is_an_instance_that_splits_k_into_whole_stages(n, k, epilogue, sms):
    nb, s = plan(n, k, epilogue, sms, True)
    assert nb in BOX_ROWS and s in CLUSTERS
    assert s == 1 or -(-k // skinny.STAGE_COLUMNS) >= s * MIN_STEPS  # every block streams ≥ MIN_STEPS stages
    assert plan(n, k, epilogue, sms, False)[1] == 1  # no clusters (before sm_90): no split


@pytest.mark.parametrize("n,k,epilogue", SHAPES[:5])
def test_the_decoder_shapes_fill_an_h200_about_once(n, k, epilogue):
    """Full-size shapes on 132 SMs: the grid is ≥ 80 % of one wave or ≥ 90 % full in its last."""
    nb, s = plan(n, k, epilogue, 132, True)
    blocks = boxes(n, nb, epilogue) * s
    waves = -(-blocks // 132)
    assert blocks / (132 * waves) >= (0.8 if waves == 1 else 0.9), (nb, s, blocks)


def test_every_instance_fits_a_block_of_shared_memory():
    for nb in BOX_ROWS:
        for split in CLUSTERS:
            n = skinny.stages(nb, split)
            assert 2 <= n <= 8 and shared_bytes(nb, n) <= H200_SHARED
            assert 64 * nb * 4 <= shared_bytes(nb, n) - 1024 - 128  # the [64, NB] f32 partials fit the stages


def test_swiglu_boxes_cover_every_feature():
    for nb in BOX_ROWS:
        for f in (1, 71, 72, 9216):
            assert boxes(2 * f, nb, "swiglu") * (nb // 2) >= f > (boxes(2 * f, nb, "swiglu") - 1) * (nb // 2)
