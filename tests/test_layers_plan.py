"""Host side of the persistent decoder step (voxtral/gpu/layers.py): which models it takes and the shared
memory of its launches (no GPU needed)."""

from __future__ import annotations

import pytest

from voxtral.config import ModelConfig
from voxtral.gpu import layers
from voxtral.testing.checkpoint import params

H100_OPT_IN = 227 * 1024  # opt-in shared memory per block of a Hopper GPU


def decoder(size: str):
    return ModelConfig.from_dict(params(size)).decoder


@pytest.mark.parametrize("size,fits", [("full", True), ("small", True), ("tiny", False)])
def test_fits(size, fits):
    # tiny's hidden dim (160) is not a multiple of 64: whole 128-byte lines per tensor-map box
    assert layers.fits(decoder(size)) is fits


@pytest.mark.parametrize("b", range(1, 9))
def test_every_fused_batch_size_gets_a_ring_that_fits(b):
    cfg = decoder("full")
    n = layers.stages(b, cfg, H100_OPT_IN)
    assert layers.MIN_STAGES <= n <= layers.RING_STAGES
    assert layers.shared_bytes(b, cfg, n) <= H100_OPT_IN
    assert layers.shared_bytes(b, cfg, n + 1) > H100_OPT_IN or n == layers.RING_STAGES


def test_scratch_holds_the_largest_staged_x_and_the_attention_merge():
    cfg = decoder("full")
    # 8 rows of w2's x (bf16, K = 9216 padded to 9248) is the largest: 147 968 bytes
    assert layers.scratch_bytes(8, cfg) == 8 * 9248 * 2
    # one row: still w2's x (18 496 bytes), over h's hi | lo rows (12 416) and the attention merge of
    # 4 warps × 4 heads × (128 + 2) floats (8 320)
    assert layers.scratch_bytes(1, cfg) == 9248 * 2
