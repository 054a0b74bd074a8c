"""Kernels ship compiled (cuda/bin, voxtral/gpu/kernels.py): every module loads from its fatbin here,
NVRTC (the fallback) gives the same tokens, and a fresh process with an empty kernel cache compiles
nothing at all — ours nor CuPy's — in any request pattern: no compile wait on first use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import voxtral
from voxtral.gpu import kernels, ops
from voxtral.gpu.copy import clone, concat_rows, copy, upload

cp = pytest.importorskip("cupy", reason="CuPy is not importable")
TESTS = Path(__file__).resolve().parents[1]

# Runs in a child process: every request pattern of the engine checks plus confidence, then reports the
# NVRTC compilations it waited for (voxtral.bench.cold watches CuPy's compiler).
PATTERNS_CHILD = r"""
import json, sys
from voxtral.bench.cold import _watch_nvrtc
compiles = []
_watch_nvrtc(compiles)
import voxtral
from engine_checks import PATTERNS, check_confidence_everywhere, check_pattern, clips
model = voxtral.load(sys.argv[1], device="cuda")
audios = clips(sys.argv[2], sys.argv[3])
for pattern in PATTERNS:
    check_pattern(model, pattern, audios)
check_confidence_everywhere(model, audios)
print(json.dumps({"compiles": compiles, "origins": model.backend.kernel_origins}))
"""


def child(code: str, *args, env: dict) -> dict:
    run_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=run_env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_kernel_module_loads_prebuilt():
    assert kernels.stale(ops.TEMPLATES) == []
    origins = kernels.load_all(ops.TEMPLATES, cp.cuda.Device().id)
    assert set(origins) == set(kernels.kernel_files())
    # "prebuilt + nvrtc (…)" where an earlier test launched an instance the runtime never uses
    assert all(o.startswith("prebuilt") for o in origins.values()), origins
    for filename in kernels.kernel_files():
        module, symbols = kernels._prebuilt(filename)
        assert module is not None, (filename, symbols)


def test_a_fresh_process_compiles_nothing_in_any_pattern(tiny_dir, clip5, clip15, tmp_path):
    env = {"CUPY_CACHE_DIR": str(tmp_path / "cupy"), "CUDA_CACHE_PATH": str(tmp_path / "nv")}
    report = child(PATTERNS_CHILD, tiny_dir, clip5, clip15, env=env)
    assert report["compiles"] == [], report["compiles"]
    assert set(report["origins"].values()) == {"prebuilt"}, report["origins"]


def test_nvrtc_fallback_gives_the_same_tokens(tiny_dir, clip5):
    code = (
        "import json, sys, voxtral\n"
        "m = voxtral.load(sys.argv[1], device='cuda')\n"
        "t = m.transcribe(sys.argv[2])\n"
        "print(json.dumps({'tokens': [int(x) for x in t.tokens], 'origins': m.backend.kernel_origins}))\n"
    )
    report = child(code, tiny_dir, clip5, env={kernels.FORCE_ENV: "nvrtc"})
    assert set(report["origins"].values()) == {f"nvrtc ({kernels.FORCE_ENV}=nvrtc)"}, report["origins"]
    prebuilt = voxtral.load(tiny_dir, device="cuda").transcribe(clip5)
    assert report["tokens"] == [int(x) for x in prebuilt.tokens]


def test_copies_through_the_copy_engine():
    rng = np.random.default_rng(0)
    host = rng.standard_normal((5, 7, 3)).astype(np.float32)
    a = cp.asarray(host)
    b = cp.zeros((5, 9, 3), np.float32)
    copy(b[:, 1:8], a)  # pitched destination, contiguous source
    np.testing.assert_array_equal(cp.asnumpy(b[:, 1:8]), host)
    assert not cp.asnumpy(b[:, 0]).any() and not cp.asnumpy(b[:, 8]).any()
    c = cp.empty((5, 2, 3), np.float32)
    copy(c, b[:, 3:5])  # pitched source, contiguous destination
    np.testing.assert_array_equal(cp.asnumpy(c), host[:, 2:4])
    table = cp.zeros((4, 6, 2), np.uint64)
    upload(table[:, 2], np.arange(8, dtype=np.uint64).reshape(4, 2))  # a slot's column of a table
    expected = np.zeros((4, 6, 2), np.uint64)
    expected[:, 2] = np.arange(8).reshape(4, 2)
    np.testing.assert_array_equal(cp.asnumpy(table), expected)
    parts = [a[i] for i in range(5)] + [cp.zeros((0, 3), np.float32)]
    np.testing.assert_array_equal(cp.asnumpy(concat_rows(parts)), host.reshape(35, 3))
    np.testing.assert_array_equal(cp.asnumpy(clone(a[1:3])), host[1:3])
    with pytest.raises(ValueError, match="rows are not contiguous"):
        copy(cp.empty((5, 7), np.float32), a[:, :, 0])
    with pytest.raises(ValueError, match="copy of"):
        copy(cp.empty((5, 7), np.float32), a[:, :, :2])
