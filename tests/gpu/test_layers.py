"""The persistent decoder step (cuda/layers.cu, voxtral/gpu/layers.py) against the chain of fused GEMVs it
replaces, on the "small" random checkpoint (head dim 128 with GQA 8/2 like the real model, every K a
multiple of 64; a 160-position window, so a 15 s clip's KV rings wrap and its attention takes several
128-key splits): teacher-forced logits close, greedy tokens equal wherever the margin is clear, a
graph replay bit-equal to eager launches, a batch equal to its inputs alone, the engine's bucket
timing offering the path. Full size: tests/gpu/test_full_size_precision.py."""

from __future__ import annotations

import numpy as np
import pytest
from engine_checks import alone, assert_near_tie, clips

import voxtral
from voxtral.gpu import decoder
from voxtral.gpu.layers import available, fits, shared_bytes, stages
from voxtral.testing import write_checkpoint

cupy = pytest.importorskip("cupy", reason="CuPy is not importable")

STEPS = 150  # of the 15 s clip: positions past the window (160) and past one split (128 keys)
LOGITS_TOL = 2e-3  # relative L2 of the persistent step's logits against the fused chain's


@pytest.fixture(scope="module", autouse=True)
def _hopper():
    if not available(cupy.cuda.Device().id):
        pytest.skip("decoder_layers needs compute capability 9.0 or later (TMA)")


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("small"), "small")


def pinned(monkeypatch, path: str):
    """Every bucket takes `path` (the timing would pick either)."""
    monkeypatch.setattr(decoder, "fastest", lambda stream, made, state, **kw: (made[path], {}))


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_small_model_fits_and_real_model_fits(small_dir):
    model = voxtral.load(small_dir, device="cuda")
    assert fits(model.config.decoder)
    from voxtral.config import ModelConfig
    from voxtral.testing.checkpoint import params

    full = ModelConfig.from_dict(params("full")).decoder
    assert fits(full)
    limit = cupy.cuda.Device().attributes["MaxSharedMemoryPerBlockOptin"]
    for b in (1, 8):  # the ring keeps enough stages in flight at every fused batch size
        n = stages(b, full, limit)
        assert n >= 4 and shared_bytes(b, full, n) <= limit, (b, n)


def test_persistent_step_matches_the_fused_chain(small_dir, clip15, monkeypatch):
    pinned(monkeypatch, "fused")
    fused = voxtral.load(small_dir, device="cuda").trace(clip15, STEPS)
    pinned(monkeypatch, "persistent")
    model = voxtral.load(small_dir, device="cuda")
    persistent = model.trace(clip15, STEPS, forced_tokens=fused.tokens)
    assert set(model.engine._decoder.paths.values()) == {"persistent"}
    err = rel_l2(persistent.logits, fused.logits)
    top2 = np.sort(fused.logits, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] >= 2 * np.abs(persistent.logits - fused.logits).max(axis=1)
    same = persistent.tokens == fused.tokens
    print(f"\npersistent vs fused, {STEPS} steps: logits rel L2 {err:.2e}, tokens equal {same.sum()}/{STEPS}")
    assert err <= LOGITS_TOL
    assert same[clear].all(), np.flatnonzero(clear & ~same)


def test_persistent_graph_replay_equals_eager(small_dir, clip15, monkeypatch):
    """The captured step (PDL, the grid barriers' counters and the attention counters reset inside the
    launch) replays what eager launches do, bit for bit: nothing in it depends on timing."""
    pinned(monkeypatch, "persistent")
    graphed = voxtral.load(small_dir, device="cuda").trace(clip15, STEPS)

    class Eager:
        def __init__(self, dec, b):
            self.dec, self.view = dec, dec.buf.rows(b)

        def launch(self, stream):
            d = self.dec
            decoder.step(d.weights, d.cfg, self.view, persistent=d._tables)

    monkeypatch.setattr(decoder.Decoder, "_graph", lambda self, b: Eager(self, b))
    eager = voxtral.load(small_dir, device="cuda").trace(clip15, STEPS)
    np.testing.assert_array_equal(graphed.tokens, eager.tokens)
    np.testing.assert_array_equal(graphed.logits, eager.logits)


def test_persistent_batch_gives_the_offline_tokens(small_dir, clip5, clip15, monkeypatch):
    """Rows of a batch (buckets 1 … 8, spare rows on the scratch cache) each give their input's tokens."""
    audios = clips(clip5, clip15)
    pinned(monkeypatch, "persistent")
    model = voxtral.load(small_dir, device="cuda")
    want = [t.tokens for t in alone(model, audios)]
    got = model.transcribe_batch(audios, sample_rate=16000)
    assert set(model.engine._decoder.paths.values()) == {"persistent"}
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g.tokens != w:
            assert_near_tie(model, audios[i], g.tokens, w, f"persistent batch: input {i}")


def test_engine_times_the_persistent_path(small_dir, clip5):
    """Buckets up to 8 rows capture and time the persistent step beside the others."""
    model = voxtral.load(small_dir, device="cuda")
    model.transcribe(clip5)
    dec = model.engine._decoder
    assert dec.path_ms and all("persistent" in ms for b, ms in dec.path_ms.items() if b <= 8), dec.path_ms
