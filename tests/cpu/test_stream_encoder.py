"""The CPU backend's slots: an encoder slot fed in pieces = the one-pass encoder, and the rolling caches
of a long stream = references computed without rolling (tiny config: encoder window 24, decoder 40)."""

import dataclasses

import numpy as np
import pytest

import voxtral
from voxtral.cpu import encoder
from voxtral.cpu.backend import CpuBackend
from voxtral.cpu.transformer import KVCache

UNLIMITED = 10**6


def rel_l2(x, ref):
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def m32(tiny_dir):
    return voxtral.load(tiny_dir, device="cpu")


@pytest.fixture(scope="module")
def mel15(m32, clip15):
    return m32.trace(clip15, 1).mel  # [M, 1896]: 948 encoder positions, 237 decoder positions


def one_pass(model, mel):
    return encoder.audio_embeddings(mel, model.checkpoint.weights, model.config)


def stream_encode(backend, mel, sizes, chunk=None):
    """An encoder slot fed consecutive pieces of the given sizes; checks the row count as it goes."""
    pool = backend.encoder(2, chunk or encoder.CHUNK_POSITIONS)
    slot, out, fed = pool.join(chunk), [], 0
    for n in sizes:
        (rows,) = pool.encode([(slot, mel[:, fed : fed + n])])
        fed += n
        out.append(rows)
        assert sum(len(r) for r in out) == min(fed, mel.shape[1]) // 8  # one row per 8 frames
    return np.concatenate(out), pool.slots[slot]


def random_sizes(total, seed=0):
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < total:
        sizes.append(int(rng.choice([0, 1, 2, 3, 7, 8, 9, 15, 17, int(rng.integers(0, 400))])))
    return sizes


@pytest.mark.parametrize("sizes", ["random", 1, 13, 1000])
def test_encoder_slot_equals_one_pass(m32, clip5, sizes):
    mel = m32.trace(clip5, 1).mel  # [M, 896]
    total = mel.shape[1]
    pieces = random_sizes(total) if sizes == "random" else [sizes] * -(-total // sizes)
    streamed, _ = stream_encode(m32.backend, mel, pieces, chunk=encoder.LIVE_CHUNK_POSITIONS)
    assert rel_l2(streamed, one_pass(m32, mel)) < 1e-5


def test_slots_of_one_pool_are_independent(m32, clip5, mel15):
    """Two inputs interleaved through one pool, each in its own slot, = each alone."""
    mel5 = m32.trace(clip5, 1).mel
    pool = m32.backend.encoder(3)
    a, b = pool.join(), pool.join(encoder.LIVE_CHUNK_POSITIONS)
    got = {a: [], b: []}
    for i in range(0, mel15.shape[1], 200):
        rows = pool.encode([(a, mel15[:, i : i + 200]), (b, mel5[:, i : i + 200])])
        got[a].append(rows[0])
        got[b].append(rows[1])
    assert rel_l2(np.concatenate(got[a]), one_pass(m32, mel15)) < 1e-5
    assert rel_l2(np.concatenate(got[b]), one_pass(m32, mel5)) < 1e-5
    pool.leave(a)
    assert pool.free() == 2 and pool.join() == a


def test_rolling_encoder_equals_one_pass_without_a_ring(m32, mel15, monkeypatch):
    """948 positions through a ring of 87 slots (window 24 + chunk 64 − 1) = one pass keeping all keys."""
    streamed, stream = stream_encode(m32.backend, mel15, [40] * 48, chunk=encoder.LIVE_CHUNK_POSITIONS)
    ring = stream.layers.cache.ring
    assert stream.layers.pos > 10 * ring  # the ring wrapped many times
    monkeypatch.setattr(encoder, "CHUNK_POSITIONS", 4096)  # offline: one chunk, ring > all positions
    assert rel_l2(streamed, one_pass(m32, mel15)) < 1e-5


def _unwindowed(model):
    """A model on the same weights with windows wider than any test input."""
    cfg = model.config
    enc = dataclasses.replace(cfg.encoder, sliding_window=UNLIMITED)
    dec = dataclasses.replace(cfg.decoder, sliding_window=UNLIMITED)
    ckpt = dataclasses.replace(model.checkpoint, config=dataclasses.replace(cfg, encoder=enc, decoder=dec))
    return ckpt


def test_window_only_matters_beyond_it(m32, mel15):
    """Rows whose encoder positions all lie inside the first window equal an unwindowed encoder's."""
    streamed, _ = stream_encode(m32.backend, mel15, [40] * 48, chunk=encoder.LIVE_CHUNK_POSITIONS)
    ckpt = _unwindowed(m32)
    wide = encoder.audio_embeddings(mel15, ckpt.weights, ckpt.config)
    inside = m32.config.encoder.sliding_window // 4  # rows 0 … 5 read positions 0 … 23
    assert rel_l2(streamed[:inside], wide[:inside]) < 1e-5
    assert rel_l2(streamed[inside + 2 :], wide[inside + 2 :]) > 1e-2


def _keep_everything(model, n):
    """A decoder slot whose KV ring holds every one of n positions (the window never rolls it)."""
    dec = CpuBackend(model.checkpoint, model.schedule.n_delay).decoder(1)
    slot = dec.join(n)
    dec.slots[slot].cache = KVCache(model.config.decoder, ring=n)
    return dec, slot


def test_rolling_decoder_equals_a_cache_that_keeps_everything(m32, mel15):
    """237 positions through a live slot's rolling KV (ring ≤ 103, window 40) = a ring of 237 slots."""
    schedule = m32.schedule
    audio = one_pass(m32, mel15)  # [237, D]
    n, L = len(audio), len(schedule.prompt)
    ref, r = _keep_everything(m32, n)
    ref.append_audio(r, audio)
    ref.prefill([r], schedule.prompt)
    expected = list(ref.step([r], n - L + 1)[0][0])
    dec = m32.backend.decoder(1)
    s = dec.join()  # a live stream: length unknown
    dec.append_audio(s, audio[:50])
    dec.prefill([s], schedule.prompt)
    tokens = list(dec.step([s], 50 - L + 1)[0][0])
    for start in range(50, n, 7):  # appended in pieces; consumed rows are dropped
        dec.append_audio(s, audio[start : start + 7])
        tokens += list(dec.step([s], len(audio[start : start + 7]))[0][0])
        assert len(dec.slots[s].audio) <= 7
    assert tokens == expected
    cache = dec.slots[s].cache
    assert cache.slot_pos.max() > 2 * cache.ring  # the ring wrapped
    with pytest.raises(ValueError, match="no audio embedding"):
        dec.step([s], 1)


def test_rolling_decoder_logits_match_keep_everything(m32, mel15):
    """Teacher-forced logits over all 199 steps: rolling ring vs a cache of every position."""
    prompt = m32.schedule.prompt
    audio = one_pass(m32, mel15)
    n = len(audio) - len(prompt) + 1
    forced = np.concatenate([prompt[-1:], 1000 + np.arange(n - 1) % 500])[None]  # [1, n] inputs
    ref, r = _keep_everything(m32, len(audio))
    ref.append_audio(r, audio)
    ref.prefill([r], prompt)
    _, want = ref.step([r], n, inputs=forced, logits=True)
    dec = m32.backend.decoder(1)
    s = dec.join()
    dec.append_audio(s, audio)
    dec.prefill([s], prompt)
    _, got = dec.step([s], n, inputs=forced, logits=True)
    assert rel_l2(got, want) < 1e-5


def test_a_slot_ring_grows_to_the_window(m32, mel15):
    """A slot sized for 64 positions grows (doubling) as it runs, and never past window + chunk − 1."""
    audio = one_pass(m32, mel15)
    dec = m32.backend.decoder(1)
    s = dec.join(64)
    dec.append_audio(s, audio)
    dec.prefill([s], m32.schedule.prompt)
    assert dec.slots[s].cache.ring == 64
    dec.step([s], len(audio) - len(m32.schedule.prompt) + 1)
    cache = dec.slots[s].cache
    assert cache.ring == cache.max_ring == m32.config.decoder.sliding_window + 63
