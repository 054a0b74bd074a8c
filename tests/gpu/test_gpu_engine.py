"""One engine behind every request pattern, on the GPU: the checks of tests/engine_checks.py (the CPU
runs them in tests/test_engine.py), plus the decoder's graph buckets (fused GEMVs up to 8 rows,
skinny_gemm up to 64, cuBLAS GEMMs at any size) and its per-slot KV caches."""

import numpy as np
import pytest
from engine_checks import (
    PATTERNS,
    alone,
    assert_equal_or_reference_near_tie,
    assert_near_tie,
    check_abandoned_sessions_free_their_slots,
    check_bad_input_among_good,
    check_confidence_everywhere,
    check_mixed_threads,
    check_pattern,
    check_stream_open_during_transcription,
    clips,
    with_early_stops,
)

import voxtral
from voxtral.gpu.decoder import SKINNY_PATHS, buckets
from voxtral.gpu.gemv import MAX_BATCH


@pytest.fixture(scope="module")
def gpu(tiny_dir):
    return voxtral.load(tiny_dir, device="cuda")


@pytest.fixture(scope="module")
def audios(clip5, clip15):
    return clips(clip5, clip15)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_pattern_gives_the_offline_tokens(gpu, audios, pattern):
    check_pattern(gpu, pattern, audios)


@pytest.mark.parametrize("pattern", ["batched", "streaming", "server"])
def test_early_stops_in_every_pattern(tiny_dir, audios, pattern):
    m = voxtral.load(tiny_dir, device="cuda")
    with_early_stops(m, audios, alone(m, audios))
    check_pattern(m, pattern, audios)


def test_offline_tokens_equal_the_cpu_ones(tiny_dir, gpu, audios):
    """Equal, or first different where the CPU's own top-2 logits are a near tie."""
    cpu = voxtral.load(tiny_dir, device="cpu")
    for i, (g, c) in enumerate(zip(alone(gpu, audios), alone(cpu, audios), strict=True)):
        assert_equal_or_reference_near_tie(cpu, audios[i], g.tokens, c.tokens, f"input {i}")


def test_mixed_requests_from_threads(gpu, audios):
    check_mixed_threads(gpu, audios)


def test_stream_open_during_transcription(gpu, audios):
    check_stream_open_during_transcription(gpu, audios)


def test_abandoned_sessions_free_their_slots(gpu, audios, monkeypatch):
    check_abandoned_sessions_free_their_slots(gpu, audios, monkeypatch)


def test_confidence_with_batches_and_streams(gpu, audios):
    check_confidence_everywhere(gpu, audios)


def test_bad_input_among_good(gpu, clip5, tmp_path):
    check_bad_input_among_good(gpu, clip5, tmp_path)


def test_buckets():
    assert buckets(1) == (1,)
    assert buckets(12) == (1, 2, 4, 8, 12)
    assert buckets(64) == (1, 2, 4, 8, 16, 32, 64)


def test_batch_of_gemm_buckets_equals_alone(tiny_dir, audios):
    """12 at once: steps of 9 … 12 rows run skinny_gemm or cuBLAS (the faster), fewer the fused GEMVs."""
    m = voxtral.load(tiny_dir, device="cuda", capacity=12)
    rng = np.random.default_rng(0)
    inputs = []
    for k in range(14):  # 0.5 … 6 s pieces of the clips: more inputs than slots, joining as others leave
        a = audios[k % 2]
        start = int(rng.integers(0, len(a) - 16000))
        inputs.append(a[start : start + int(rng.integers(8000, 96000))])
    want = [t.tokens for t in alone(m, inputs)]
    got = m.transcribe_batch(inputs, batch_size=12, sample_rate=16000)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g.tokens != w:
            assert_near_tie(m, inputs[i], g.tokens, w, f"batch of 12: input {i}")


def test_decoder_graphs_and_per_slot_memory(gpu, audios):
    """Graphs per bucket used, each on the faster step path; each slot's KV ring is sized for what it
    serves and grows to the window."""
    enc = gpu.backend.encoder(1)
    embeds = enc.encode([(enc.join(), gpu.trace(audios[1], 1, sample_rate=16000).mel)])[0]
    dec = gpu.backend.decoder(12)
    slots = [dec.join(len(embeds)) for _ in range(10)]
    for s in slots:
        dec.append_audio(s, embeds)
        dec.prefill([s], gpu.schedule.prompt)
    for k in (1, 3, 10):
        dec.step(slots[:k], 2)
    assert sorted(dec._graphs) == [1, 4, 12]
    # a bucket's step is captured on every path it can take (fused GEMVs up to 8 rows, skinny_gemm up to
    # 64, cuBLAS GEMMs), timed, and the fastest kept unless the preferred one is within 5 % of it
    for b, ms in dec.path_ms.items():
        skinny = set(SKINNY_PATHS)
        assert set(ms) == ({"fused", "cuBLAS"} | skinny if b <= MAX_BATCH else {"cuBLAS"} | skinny), (b, ms)
        prefer = "fused" if b <= MAX_BATCH else "cuBLAS"
        best = min(ms, key=ms.get)
        assert dec.paths[b] == (prefer if ms[best] > 0.95 * ms[prefer] else best), (b, ms)
    assert set(dec.path_ms) == {1, 4, 12}
    window = gpu.config.decoder.sliding_window
    assert dec.kv.rows(slots[0]) == min(window, -(-len(embeds) // 64) * 64)
    small = dec.join(64)  # a guess far too short: the ring doubles as positions come
    dec.append_audio(small, embeds)
    dec.prefill([small], gpu.schedule.prompt)
    n = len(embeds) - len(gpu.schedule.prompt) + 1
    tokens, _ = dec.step([small], n)
    assert dec.kv.rows(small) >= min(window, len(embeds))
    np.testing.assert_array_equal(tokens[0], gpu.transcribe(audios[1], sample_rate=16000).tokens[:n])
    before = dec.nbytes()
    for s in slots:
        dec.leave(s)
    assert dec.nbytes() < before and dec.free() == 11


def test_narrow_attention_graph_equals_the_wide_one(gpu, audios, monkeypatch):
    """A bucket under attention_split's wide rule (here 128 rows × 2 kv heads) whose windows fit one split
    steps through its graph of one split per (row, kv head): bitwise the tokens and logits of the wide
    graph; a bucket below the rule has no such graph."""
    import voxtral.gpu.decoder as gpu_decoder
    from voxtral.gpu import ops

    enc = gpu.backend.encoder(1)
    embeds = enc.encode([(enc.join(), gpu.trace(audios[1], 1, sample_rate=16000).mel)])[0]
    assert 128 * gpu.config.decoder.n_kv_heads >= ops.SPLIT_BLOCKS > 64 * gpu.config.decoder.n_kv_heads
    got = {}
    for narrow in (False, True):
        monkeypatch.setattr(gpu_decoder, "NARROW_SPLITS", narrow)
        dec = gpu.backend.decoder(128)
        slots = [dec.join(len(embeds)) for _ in range(70)]
        for s in slots:
            dec.append_audio(s, embeds)
        dec.prefill(slots, gpu.schedule.prompt)
        got[narrow] = dec.step(slots, 5, logits=True)
        dec.step(slots[:3], 1)  # bucket 4: below the rule
        assert set(dec._narrow) == ({128} if narrow else set()), dec._narrow
        assert sorted(dec._graphs) == [4, 128]
    np.testing.assert_array_equal(got[True][0], got[False][0])
    np.testing.assert_array_equal(got[True][1], got[False][1])


@pytest.mark.parametrize("path", ["fused", "skinny", "skinny-w13", "cuBLAS"])
def test_both_step_paths_give_the_offline_tokens(gpu, tiny_dir, audios, monkeypatch, path):
    """Whichever path the timing picks, a batch gives the tokens of the offline runs (near-ties aside)."""
    import voxtral.gpu.decoder as gpu_decoder

    want = [t.tokens for t in alone(gpu, audios)]  # each bucket on the path timed fastest

    def forced(stream, made, state, **kw):
        return made.get(path, made["cuBLAS"]), {}

    monkeypatch.setattr(gpu_decoder, "fastest", forced)
    m = voxtral.load(tiny_dir, device="cuda")
    got = m.transcribe_batch(audios, sample_rate=16000)
    assert set(m.engine._decoder.paths.values()) == {path}
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g.tokens != w:
            assert_near_tie(m, audios[i], g.tokens, w, f"{path} path: input {i}")
