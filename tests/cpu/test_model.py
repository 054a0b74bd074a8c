"""The CPU model: float32 vs float64, sliding windows, ring caches, prefill vs single steps."""

import dataclasses

import numpy as np
import pytest

import voxtral
from voxtral.api import Model
from voxtral.cpu import encoder
from voxtral.cpu.backend import CpuBackend

N_STEPS = 24


def rel_l2(x, ref):
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def m32(tiny_dir):
    return voxtral.load(tiny_dir, device="cpu")


def test_float32_matches_float64(tiny_dir, m32, clip5):
    m64 = voxtral.load(tiny_dir, device="cpu", dtype="float64")
    ref = m64.trace(clip5, N_STEPS)
    out = m32.trace(clip5, N_STEPS, forced_tokens=ref.tokens)
    err = rel_l2(out.logits, ref.logits)
    print(f"float32 vs float64 logits over {N_STEPS} steps: rel L2 {err:.2e}")
    assert err < 1e-4
    assert rel_l2(out.audio_embeds, ref.audio_embeds) < 1e-5


def _with_window(model: Model, encoder_window=None, decoder_window=None) -> Model:
    """The same weights with other attention windows (None keeps the checkpoint's)."""
    cfg = model.config
    enc = dataclasses.replace(cfg.encoder, sliding_window=encoder_window or cfg.encoder.sliding_window)
    dec = dataclasses.replace(cfg.decoder, sliding_window=decoder_window or cfg.decoder.sliding_window)
    ckpt = dataclasses.replace(model.checkpoint, config=dataclasses.replace(cfg, encoder=enc, decoder=dec))
    return Model(ckpt, CpuBackend(ckpt, model.schedule.n_delay), model.schedule, 0.0, 4)


def embeddings(model: Model, mel):
    """The one-pass reference encoder + adapter (cpu/encoder.py) on a model's weights and config."""
    return encoder.audio_embeddings(mel, model.checkpoint.weights, model.config)


def test_encoder_window_is_used(m32, clip5):
    """Audio of 448 encoder positions against a window of 24: ignoring the window changes the output."""
    mel = m32.trace(clip5, 1).mel
    base = embeddings(m32, mel)
    assert mel.shape[1] // 2 > 10 * m32.config.encoder.sliding_window
    wide = embeddings(_with_window(m32, encoder_window=10**6), mel)
    assert rel_l2(wide, base) > 1e-2


def test_encoder_ring_equals_one_pass(m32, clip5, monkeypatch):
    """Chunks of 8 positions through a ring of 31 slots = one pass over all positions."""
    mel = m32.trace(clip5, 1).mel
    one_pass = embeddings(m32, mel)
    monkeypatch.setattr(encoder, "CHUNK_POSITIONS", 8)
    chunked = embeddings(m32, mel)
    assert rel_l2(chunked, one_pass) < 1e-6


def test_trace_embeddings_are_the_one_pass_encoder(m32, clip5):
    """The engine's encoder slot (chunks of a pass, conv state carried) = the one-pass reference."""
    tr = m32.trace(clip5, 1)
    assert rel_l2(tr.audio_embeds, embeddings(m32, tr.mel)) < 1e-5


def test_decoder_window_is_used(m32, clip5):
    """60 steps after a 38-position prefill pass the window of 40; without it the logits change."""
    n = 60
    base = m32.trace(clip5, n)
    wide = _with_window(m32, decoder_window=10**6).trace(clip5, n, forced_tokens=base.tokens)
    early = slice(0, 40 - 38)  # steps whose keys all fit in the window: identical
    assert rel_l2(wide.logits[early], base.logits[early]) < 1e-6
    assert rel_l2(wide.logits[10:], base.logits[10:]) > 1e-2


def test_prefill_and_steps_equal_position_by_position(m32, clip5):
    """Prefill (38 positions in one call) then steps = every position run alone."""
    audio = embeddings(m32, m32.trace(clip5, 1).mel)
    prompt = m32.schedule.prompt
    dec = m32.backend.decoder(2)
    s1, s2 = dec.join(len(audio)), dec.join(len(audio))
    dec.append_audio(s1, audio)
    dec.append_audio(s2, audio)
    dec.prefill([s1], prompt)
    t1, l1 = dec.step([s1], 50, logits=True)
    dec.prefill([s2], prompt[:1])  # nothing run: the prompt's first token waits
    dec.step([s2], len(prompt) - 1, inputs=prompt[None, :-1])  # positions 0 … L − 2, one at a time
    t2, l2 = dec.step([s2], 50, inputs=np.concatenate([prompt[-1:], t1[0, :-1]])[None], logits=True)
    np.testing.assert_array_equal(t1, t2)
    assert rel_l2(l2, l1) < 1e-6


def test_transcribe_uses_every_position(m32, clip5):
    t = m32.transcribe(clip5)
    n_positions = (32 + 63 + 17) * 1  # left pad, ceil(5.0 s / 80 ms), right pad tokens
    assert len(t.tokens) == n_positions - len(m32.schedule.prompt) + 1
    assert t.duration == pytest.approx(80001 / 16000)
    assert set(t.timings) >= {"mel", "encoder", "prefill", "decode"}
    assert len(set(t.tokens)) > 2 and t.text  # the random model follows its audio, not one token
