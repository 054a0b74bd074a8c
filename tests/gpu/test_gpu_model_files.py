"""Model files on the GPU: non-finite weights found at upload (cuda/check.cu) and named by tensor; the
check kernels against NumPy at every alignment and tail length."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_model_files import poison

import voxtral
from voxtral.errors import CheckpointError


@pytest.mark.parametrize(
    "name, value",
    [
        ("layers.1.feed_forward.w2.weight", b"\xc0\x7f"),  # NaN in a decoder GEMV weight
        ("mm_streams_embeddings.embedding_module.whisper_encoder.transformer.layers.0.attention_norm.weight",
         b"\x80\x7f"),  # +Inf in a norm (float32 on the device)
    ],
)  # fmt: skip
def test_non_finite_weights_are_found_at_upload(tiny_dir, tmp_path, name, value):
    d = tmp_path / "model"
    shutil.copytree(tiny_dir, d)
    poison(d, name, value, count=1)
    with pytest.raises(CheckpointError, match=f"tensor '{name}' has NaN or Inf values"):
        voxtral.load(d, device="cuda")


def test_finite_weights_pass(tiny_dir):
    voxtral.load(tiny_dir, device="cuda")


@pytest.mark.parametrize("n", [1, 3, 4, 5, 1023, 4096 + 3])
@pytest.mark.parametrize("offset", [0, 1, 2, 3])
def test_the_check_kernels_agree_with_numpy(n, offset):
    import cupy

    from voxtral.gpu.weights import CHECK_THREADS, kernels

    base = cupy.zeros(n + offset, np.uint16)
    x = base[offset:]  # every alignment of the 8-byte loads
    for where in sorted({0, n // 2, n - 1}):
        for bits in (0x7F80, 0xFFC1, 0x7F7F):  # +Inf, a NaN, the largest finite value
            x[:] = 0x3F80  # 1.0
            x[where] = bits
            flag = cupy.zeros(1, np.uint32)
            kernels.function("check.cu", "flag_non_finite")((3,), (CHECK_THREADS,), (x, np.uint64(n), flag))
            assert bool(flag.get()[0]) == ((bits & 0x7F80) == 0x7F80), (n, offset, where, hex(bits))
    y = cupy.ones(n, np.float32)
    y[n - 1] = np.nan
    flag = cupy.zeros(1, np.uint32)
    kernels.function("check.cu", "flag_non_finite_f32")(
        (2,), (CHECK_THREADS,), (y.view(np.uint32), np.uint64(n), flag)
    )
    assert flag.get()[0] == 1
