"""The GPU path against the CPU path on tiny checkpoints, and the graphed step against eager."""

import numpy as np
import pytest
from engine_checks import assert_equal_or_reference_near_tie

import voxtral
from voxtral.gpu import decoder
from voxtral.gpu.skinny import available as skinny_available

cupy = pytest.importorskip("cupy", reason="CuPy is not importable")

N_STEPS = 24
MARGIN = 0.05  # top-1 − top-2 logit gap the CPU run must keep for token identity to be meaningful


def rel_l2(x, ref):
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def cpu(tiny_dir):
    return voxtral.load(tiny_dir, device="cpu")


@pytest.fixture(scope="module")
def gpu(tiny_dir):
    return voxtral.load(tiny_dir, device="cuda")


def test_device_selection(gpu):
    assert gpu.device == "cuda"
    assert voxtral.load(gpu.checkpoint.directory).device == "cuda"  # auto picks the GPU


def test_encoder_matches_cpu(cpu, gpu, clip15):
    ref = cpu.trace(clip15, 1)
    out = gpu.trace(clip15, 1)
    d = np.abs(out.mel.astype(np.float64) - ref.mel)  # the device's float32 log-mel (tests/gpu/test_mel.py)
    print(f"log-mel GPU vs CPU: max {d.max():.2e}, mean {d.mean():.2e}")
    assert out.mel.shape == ref.mel.shape and d.max() <= 2e-4 and d.mean() <= 1e-6
    err = rel_l2(out.audio_embeds, ref.audio_embeds)
    print(f"audio embeddings GPU vs CPU: rel L2 {err:.2e}")
    assert err < 2e-2


def test_logits_match_cpu_with_teacher_forcing(cpu, gpu, clip15):
    n = 80  # past the tiny decoder window of 40
    ref = cpu.trace(clip15, n)
    out = gpu.trace(clip15, n, forced_tokens=ref.tokens)
    err = rel_l2(out.logits, ref.logits)
    per_step = max(rel_l2(out.logits[i], ref.logits[i]) for i in range(n))
    print(f"logits GPU vs CPU over {n} steps: rel L2 {err:.2e} (worst step {per_step:.2e})")
    assert err < 2e-2 and per_step < 2e-2


def test_greedy_tokens_and_text_match_cpu(cpu, gpu, clip5, clip15):
    for clip in (clip5, clip15):
        ref = cpu.trace(clip, N_STEPS)
        top2 = np.sort(ref.logits, axis=1)[:, -2:]
        assert (top2[:, 1] - top2[:, 0]).min() > MARGIN, "checkpoint lacks clear margins: pick another seed"
        np.testing.assert_array_equal(gpu.trace(clip, N_STEPS).tokens, ref.tokens)
        t_cpu, t_gpu = cpu.transcribe(clip), gpu.transcribe(clip)
        assert_equal_or_reference_near_tie(cpu, clip, t_gpu.tokens, t_cpu.tokens, clip.name)
        if t_gpu.tokens == t_cpu.tokens:
            assert t_gpu.text == t_cpu.text


def test_eos_stops_the_gpu_run_like_the_cpu_run(tiny_eos_dir, clip15):
    cpu = voxtral.load(tiny_eos_dir, device="cpu").transcribe(clip15)
    gpu = voxtral.load(tiny_eos_dir, device="cuda").transcribe(clip15)
    assert gpu.tokens == cpu.tokens


def test_prefill_equals_position_by_position(gpu, clip5):
    tr = gpu.trace(clip5, 1)
    audio = gpu.backend.encoder(1)
    slot = audio.join()
    embeds = audio.encode([(slot, tr.mel)])[0]
    prompt = gpu.schedule.prompt
    dec = gpu.backend.decoder(2)
    s1, s2 = dec.join(len(embeds)), dec.join(len(embeds))
    dec.append_audio(s1, embeds)
    dec.append_audio(s2, embeds)
    dec.prefill([s1], prompt)
    t1, l1 = dec.step([s1], 30, logits=True)
    dec.prefill([s2], prompt[:1])
    dec.step([s2], len(prompt) - 1, inputs=prompt[None, :-1])
    t2, l2 = dec.step([s2], 30, inputs=np.concatenate([prompt[-1:], t1[0, :-1]])[None], logits=True)
    np.testing.assert_array_equal(t1, t2)
    assert rel_l2(l2, l1) < 1e-2


def test_slots_prefilled_together_run_as_each_alone(gpu, clip5, monkeypatch):
    """One prefill of several slots (in passes of PREFILL_ROWS rows: here two slots a pass, so the last
    pass holds one) gives each slot the caches its own prefill gives: the same tokens and logits after."""
    import cupy

    tr = gpu.trace(clip5, 1)
    audio = gpu.backend.encoder(1)
    embeds = audio.encode([(audio.join(), tr.mel)])[0]
    prompt = gpu.schedule.prompt
    monkeypatch.setattr(decoder, "PREFILL_ROWS", 2 * (len(prompt) - 1))
    inputs = [cupy.roll(embeds, k, axis=0) for k in (0, 3, 7)]  # different audio in each slot
    dec = gpu.backend.decoder(6)
    together, alone = [[dec.join(len(embeds)) for _ in inputs] for _ in range(2)]
    for slots in (together, alone):
        for s, e in zip(slots, inputs, strict=True):
            dec.append_audio(s, e)
    dec.prefill(together, prompt)
    for s in alone:
        dec.prefill([s], prompt)
    t1, l1 = dec.step(together, 20, logits=True)
    t2, l2 = dec.step(alone, 20, logits=True)
    np.testing.assert_array_equal(t1, t2)
    assert rel_l2(l1, l2) < 1e-3


def test_spare_rows_of_a_bucket_leave_open_slots_alone(gpu, clip5):
    """Three of five open slots stepped together fill a bucket of 4 rows: the spare row runs on the
    scratch cache, never in an open slot left out (it would write ahead into that slot's ring, over keys
    of its window once the ring wraps: the tiny model's ring is its 40-position window)."""
    tr = gpu.trace(clip5, 1)
    audio = gpu.backend.encoder(1)
    embeds = audio.encode([(audio.join(), tr.mel)])[0]
    dec = gpu.backend.decoder(5)
    slots = [dec.join(len(embeds)) for _ in range(5)]
    for s in slots:
        dec.append_audio(s, embeds)
    dec.prefill(slots, gpu.schedule.prompt)
    dec.step(slots[:3], 20)
    t3, l3 = dec.step([slots[3]], 20, logits=True)  # left out of the bucket of 4 (the lowest free index)
    t4, l4 = dec.step([slots[4]], 20, logits=True)
    np.testing.assert_array_equal(t3, t4)
    np.testing.assert_array_equal(l3, l4)


def test_warm_up_captures_every_bucket_and_leaves_open_slots_alone(gpu, clip5, monkeypatch):
    """Decoder.warm_up, called while a slot is mid-stream, captures a graph per bucket on spare rows only:
    the slot's next steps are those of a decoder that captured lazily (the fused path pinned, so both
    take the same numerics)."""
    monkeypatch.setattr(decoder, "fastest", lambda stream, made, state, **kw: (made["fused"], {}))
    tr = gpu.trace(clip5, 1)
    audio = gpu.backend.encoder(1)
    embeds = audio.encode([(audio.join(), tr.mel)])[0]
    runs = []
    for warm in (False, True):
        dec = gpu.backend.decoder(5)
        slot = dec.join(len(embeds))
        dec.append_audio(slot, embeds)
        dec.prefill([slot], gpu.schedule.prompt)
        first = dec.step([slot], 10)[0]
        if warm:
            dec.warm_up()
            assert set(dec._graphs) == set(dec.buckets) == {1, 2, 4, 5}
        runs.append((first, *dec.step([slot], 20, logits=True)))
    for lazy, warmed in zip(*runs, strict=True):
        np.testing.assert_array_equal(lazy, warmed)


class _Eager:
    """Stands in for a captured graph: runs the same step eagerly."""

    def __init__(self, dec, b, path="fused"):
        self.dec, self.view, self.path = dec, dec.buf.rows(b), path

    def launch(self, stream):
        skinny = decoder.SKINNY_PATHS.get(self.path, frozenset())
        decoder.step(self.dec.weights, self.dec.cfg, self.view, fused=self.path == "fused", skinny=skinny)


@pytest.mark.parametrize("path", ["fused", "skinny"])
def test_graph_replay_equals_eager(gpu, clip5, monkeypatch, path):
    """A step path's graph (fused: PDL, tile counters, the rope epilogue; skinny: PDL, thread-block
    clusters, tensor maps as kernel arguments) replays what the same launches do one by one. The path
    is pinned: the timing may give a tiny model's bucket another."""
    if path == "skinny" and not skinny_available(cupy.cuda.Device().id):
        pytest.skip("skinny_gemm runs on compute capability 9.0 (Hopper) only")
    monkeypatch.setattr(decoder, "fastest", lambda stream, made, state, **kw: (made[path], {}))
    graphed = voxtral.load(gpu.checkpoint.directory, device="cuda").trace(clip5, 40)
    monkeypatch.setattr(decoder.Decoder, "_graph", lambda self, b: _Eager(self, b, path))
    eager = voxtral.load(gpu.checkpoint.directory, device="cuda").trace(clip5, 40)
    np.testing.assert_array_equal(graphed.tokens, eager.tokens)
    np.testing.assert_array_equal(graphed.logits, eager.logits)


def test_confidence_matches_cpu(cpu, gpu, clip5):
    c = cpu.transcribe(clip5, alternatives=0.2)
    g = gpu.transcribe(clip5, alternatives=0.2)
    assert g.tokens == c.tokens
    np.testing.assert_allclose([s.prob for s in g.scores], [s.prob for s in c.scores], atol=2e-2)


def test_bench_gemv_report_times_every_shape_against_cublas(gpu):
    """`voxtral bench --gemv`: each decode GEMV at 1 and 8 rows, ours and cuBLAS, and the B = 1 chain."""
    from voxtral.bench.gemvs import BATCHES, SHAPES, gemv_lines, gemv_report

    report = gemv_report(gpu)
    rows = report["shapes"]
    assert [(r["shape"], r["batch"]) for r in rows] == [(s, b) for b in BATCHES for s in SHAPES]
    for r in rows:
        assert 0 < r["ours_us"] < 1e5 and 0 < r["cublas_us"] < 1e5, r
    assert set(report["chain_us"]) == {"ours", "cublas"} and all(v > 0 for v in report["chain_us"].values())
    lines = gemv_lines(report)
    assert len(lines) == 2 + len(BATCHES) and "cuBLAS" in lines[-1]
