"""The CPU backend's streaming seam: incremental encoder = offline encoder, and the rolling caches of
a long stream = references computed without rolling (tiny config: encoder window 24, decoder 40)."""

import dataclasses

import numpy as np
import pytest

import voxtral
from voxtral.cpu import encoder
from voxtral.cpu.backend import CpuBackend
from voxtral.cpu.transformer import KVCache
from voxtral.schedule import greedy

UNLIMITED = 10**6


def rel_l2(x, ref):
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def m32(tiny_dir):
    return voxtral.load(tiny_dir, device="cpu")


@pytest.fixture(scope="module")
def mel15(m32, clip15):
    return m32.trace(clip15, 1).mel  # [M, 1896]: 948 encoder positions, 237 decoder positions


def stream_encode(backend, mel, sizes):
    """encode_frames over consecutive pieces of the given sizes; checks the row count as it goes."""
    enc, out, fed = backend.start_encoder(), [], 0
    for n in sizes:
        rows = backend.encode_frames(enc, mel[:, fed : fed + n])
        fed += n
        out.append(rows)
        assert sum(len(r) for r in out) == min(fed, mel.shape[1]) // 8  # one row per 8 frames
    return np.concatenate(out), enc


def random_sizes(total, seed=0):
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < total:
        sizes.append(int(rng.choice([0, 1, 2, 3, 7, 8, 9, 15, 17, int(rng.integers(0, 400))])))
    return sizes


@pytest.mark.parametrize("sizes", ["random", 1, 13, 1000])
def test_encode_frames_equals_encode(m32, clip5, sizes):
    mel = m32.trace(clip5, 1).mel  # [M, 896]
    total = mel.shape[1]
    pieces = random_sizes(total) if sizes == "random" else [sizes] * -(-total // sizes)
    streamed, _ = stream_encode(m32.backend, mel, pieces)
    assert rel_l2(streamed, m32.backend.encode(mel)) < 1e-5


def test_rolling_encoder_equals_one_pass_without_a_ring(m32, mel15, monkeypatch):
    """948 positions through a ring of 87 slots (window 24 + chunk 64 − 1) = one pass keeping all keys."""
    streamed, enc = stream_encode(m32.backend, mel15, [40] * 48)
    ring = enc.layers.cache.ring
    assert enc.layers.pos > 10 * ring  # the ring wrapped many times
    monkeypatch.setattr(encoder, "CHUNK_POSITIONS", 4096)  # offline: one chunk, ring > all positions
    reference = m32.backend.encode(mel15)
    assert rel_l2(streamed, reference) < 1e-5


def _unwindowed(model):
    """A CPU backend on the same weights with windows wider than any test input."""
    cfg = model.config
    enc = dataclasses.replace(cfg.encoder, sliding_window=UNLIMITED)
    dec = dataclasses.replace(cfg.decoder, sliding_window=UNLIMITED)
    ckpt = dataclasses.replace(model.checkpoint, config=dataclasses.replace(cfg, encoder=enc, decoder=dec))
    return CpuBackend(ckpt, model.schedule.n_delay)


def test_window_only_matters_beyond_it(m32, mel15):
    """Rows whose encoder positions all lie inside the first window equal an unwindowed encoder's."""
    streamed, _ = stream_encode(m32.backend, mel15, [40] * 48)
    wide = _unwindowed(m32).encode(mel15)
    inside = m32.config.encoder.sliding_window // 4  # rows 0 … 5 read positions 0 … 23
    assert rel_l2(streamed[:inside], wide[:inside]) < 1e-5
    assert rel_l2(streamed[inside + 2 :], wide[inside + 2 :]) > 1e-2


def test_rolling_decoder_equals_a_cache_that_keeps_everything(m32, mel15):
    """237 positions through the stream's rolling KV (ring 103, window 40) = a ring of 237 slots."""
    b, schedule = m32.backend, m32.schedule
    audio = b.encode(mel15)  # [237, D]
    n = len(audio)
    reference = b.start(audio, n)
    reference.cache = KVCache(m32.config.decoder, ring=n)
    expected = greedy(b, reference, schedule, n)
    state = b.start_stream()
    b.append_audio(state, audio[:50])
    b.prefill(state, schedule.prompt)
    tokens = list(b.step(state, 50 - len(schedule.prompt) + 1)[0])
    for start in range(50, n, 7):  # appended in pieces; consumed rows are dropped
        b.append_audio(state, audio[start : start + 7])
        tokens += list(b.step(state, len(audio[start : start + 7]))[0])
        assert len(state.audio) <= 7
    assert tokens == expected
    assert state.cache.slot_pos.max() > 2 * state.cache.ring  # the ring wrapped
    with pytest.raises(ValueError, match="no audio embedding"):
        b.step(state, 1)


def test_rolling_decoder_logits_match_keep_everything(m32, mel15):
    """Teacher-forced logits over all 199 steps: rolling ring vs a cache of every position."""
    b, prompt = m32.backend, m32.schedule.prompt
    audio = b.encode(mel15)
    n = len(audio) - len(prompt) + 1
    forced = np.concatenate([prompt[-1:], 1000 + np.arange(n - 1) % 500])  # [n] inputs
    reference = b.start(audio, len(audio))
    reference.cache = KVCache(m32.config.decoder, ring=len(audio))
    b.prefill(reference, prompt)
    _, want = b.step(reference, n, inputs=forced, want_logits=True)
    state = b.start_stream()
    b.append_audio(state, audio)
    b.prefill(state, prompt)
    _, got = b.step(state, n, inputs=forced, want_logits=True)
    assert rel_l2(got, want) < 1e-5
