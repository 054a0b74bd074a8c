"""Streaming on the GPU (SPEC §7): the incremental encoder against the offline one, any chunking against
the offline tokens, the rolling caches over a long stream, and flat device memory."""

import numpy as np
import pytest
from stream_checks import chunk_sizes, run_stream

import voxtral
from voxtral.audio import log_mel, pad_offline

SPT = 1280


@pytest.fixture(scope="module")
def gpu(tiny_dir):
    return voxtral.load(tiny_dir, device="cuda")


def _assert_close(graphed: list, eager: list, what: str, tol: float, min_rows: int) -> None:
    """Each graphed slot's embeddings [N, D] have the eager ones' shape (N > min_rows) and lie within
    relative L2 tol of them."""
    for g, e in zip(graphed, eager, strict=True):
        assert g.shape == e.shape and len(g) > min_rows
        err = float(np.linalg.norm(g - e) / np.linalg.norm(e))
        print(f"{what}: rel L2 {err:.2e} over {len(e)} embeddings")
        assert err < tol


def _encoder_slot(b, mel, sizes, chunk=None) -> np.ndarray:
    """mel [M, T] through one slot of a new encoder pool in pieces of the given sizes → embeddings."""
    pool = b.encoder(2)
    slot, rows, start = pool.join(chunk), [], 0
    for n in sizes:
        rows.append(b.to_numpy(pool.encode([(slot, mel[:, start : start + n])])[0]))
        start += n
    return np.concatenate(rows)


def test_live_encoder_slot_matches_an_offline_one(gpu, audio5):
    """A live slot (chunk 64, split attention) fed random pieces = an offline slot (chunk 1024, tiled
    attention) fed the whole mel at once."""
    b, s = gpu.backend, gpu.schedule
    mel = log_mel(pad_offline(audio5, s.n_left, s.n_right, SPT), gpu.config.audio)  # [M, T], T % 8 == 0
    ref = _encoder_slot(b, mel, [mel.shape[1]])  # [N, D]
    rng = np.random.default_rng(1)
    sizes = [int(rng.choice([0, 1, 2, 3, 7, 8, 9, 64, 200])) for _ in range(mel.shape[1])]
    out = _encoder_slot(b, mel, sizes, chunk=b.live_chunk)[: len(ref)]
    assert out.shape == ref.shape
    err = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
    print(f"live vs offline encoder slot on the GPU: rel L2 {err:.2e} over {len(ref)} embeddings")
    assert err < 1e-2


def test_a_stream_captures_its_graphs_when_it_opens(tiny_dir, audio5):
    """model.stream() captures what a live stream's feeds replay (the encoder's tick and pass graphs of
    4 and 8 rows with split attention, the offline bucket of its left padding, the decoder's bucket of
    one row): its 80 ms feeds capture nothing (a first session's feeds stalled 40–360 ms)."""
    model = voxtral.load(tiny_dir, device="cuda")
    session = model.stream()
    enc, dec = model.engine._encoder, model.engine._decoder

    def graphs():
        return set(enc._ticks), set(enc._graphs), set(enc._offline), set(dec._graphs)

    opened = graphs()
    assert opened[:2] == ({(4, False), (8, False)},) * 2 and opened[2:] == ({128}, {1}), opened
    for start in range(0, len(audio5), SPT):
        session.feed(audio5[start : start + SPT])
    assert graphs() == opened
    model.stream()  # another session: nothing more to capture
    assert graphs() == opened


def test_an_offline_inputs_short_tail_joins_its_last_pass(gpu, audio5, monkeypatch):
    """1 024 + 200 positions of one offline slot in one call run as one pass of 1 224 rows (bucket 1 280),
    not 1 024 then 200 (< TAIL_ROWS); the embeddings are those of the same frames fed as 2 048 + 400."""
    from voxtral.gpu import encoder

    b, s = gpu.backend, gpu.schedule
    mel = log_mel(pad_offline(audio5, s.n_left, s.n_right, SPT), gpu.config.audio)  # [M, T]
    mel = np.tile(mel, (1, -(-2448 // mel.shape[1])))[:, :2448]  # 1 224 positions
    passes = []
    offline_pass = encoder.Encoder._offline_pass

    def spy(self, rows, pos, slot, table, before):
        passes.append(len(pos))
        return offline_pass(self, rows, pos, slot, table, before)

    monkeypatch.setattr(encoder.Encoder, "_offline_pass", spy)
    whole = _encoder_slot(b, mel, [2448])
    assert passes == [1224]
    pieces = _encoder_slot(b, mel, [2048, 400])
    assert passes == [1224, 1024, 200]
    _assert_close([whole], [pieces], "tail in the last pass vs a tail pass", 1e-2, 200)


@pytest.mark.parametrize("chunk", [1, 37, 160, 1280, 12345, "random"])
def test_any_chunking_gives_the_offline_tokens(gpu, audio5, chunk):
    offline = gpu.transcribe(audio5, sample_rate=16000)
    tokens, pieces = run_stream(gpu, audio5, chunk_sizes(len(audio5), chunk))
    assert tokens == offline.tokens
    assert "".join(p.text for p in pieces).strip() == offline.text


def test_stream_matches_the_cpu_stream(tiny_dir, gpu, audio5):
    cpu = voxtral.load(tiny_dir, device="cpu")
    ref, _ = run_stream(cpu, audio5, chunk_sizes(len(audio5), 1280))
    out, _ = run_stream(gpu, audio5, chunk_sizes(len(audio5), 1280))
    assert out == ref


def test_long_stream_rolls_with_flat_device_memory(gpu):
    """6 minutes (4500 positions, far past the tiny windows of 24 and 40): pool use does not grow."""
    import cupy

    rng = np.random.default_rng(0)
    session = gpu.stream()
    pool = cupy.get_default_memory_pool()
    used = []
    for _minute in range(6):
        for _ in range(6):
            session.feed((0.1 * rng.standard_normal(160_000)).astype(np.float32))  # 10 s
        gpu.backend.synchronize()
        used.append(pool.used_bytes())
    session.finish()
    print(f"pool bytes in use after each minute: {used}")
    assert session.n_steps > 4400
    assert max(used[1:]) <= used[1]


def test_cli_stream_runs_on_the_gpu(tiny_dir, clip5):
    """`voxtral stream --stdin` picks the GPU with --device auto and prints the offline text."""
    import subprocess
    import sys

    offline = voxtral.load(tiny_dir, device="cuda").transcribe(clip5)
    r = subprocess.run(
        [sys.executable, "-m", "voxtral", "stream", "--stdin", "-m", str(tiny_dir)],
        stdin=open(clip5, "rb"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "(cuda)" in r.stderr
    assert r.stdout.strip() == offline.text


def test_encoder_pool_matches_the_offline_encoder(gpu, audio5):
    """Three slots of one pool (one pass of the layers for all per call), each fed its own chunking
    (pieces of 0 … 200 frames), two live and one offline: each equals the slot fed alone."""
    b, s = gpu.backend, gpu.schedule
    mel = log_mel(pad_offline(audio5, s.n_left, s.n_right, SPT), gpu.config.audio)  # [M, T]
    ref = _encoder_slot(b, mel, [mel.shape[1]])  # [N, D]
    pool = b.encoder(4)
    slots = [pool.join(b.live_chunk), pool.join(b.live_chunk), pool.join()]
    rng = np.random.default_rng(2)
    done = dict.fromkeys(slots, 0)
    outs: dict[int, list] = {slot: [] for slot in slots}
    while any(d < mel.shape[1] for d in done.values()):
        items = []
        for slot in slots:
            n = int(rng.choice([0, 1, 8, 9, 64, 200]))
            items.append((slot, mel[:, done[slot] : done[slot] + n]))
            done[slot] += n
        for (slot, _), e in zip(items, pool.encode(items), strict=True):
            outs[slot].append(b.to_numpy(e))
    for slot in slots:
        out = np.concatenate(outs[slot])
        assert out.shape == ref.shape
        err = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
        print(f"pooled slot {slot} vs an offline slot alone: rel L2 {err:.2e}")
        assert err < 1e-2


def test_encoder_warm_up_captures_the_live_buckets_first(gpu, audio5):
    """Encoder.warm_up(rows) captures every live bucket up to the one holding `rows` (tiled, and split
    below LIVE_TILED_MIN_ROWS = 32), each as a pass of the layers and as a tick (conv stem + layers);
    live ticks after it give the embeddings of a pool that captured on first use."""
    b, s = gpu.backend, gpu.schedule
    mel = log_mel(pad_offline(audio5, s.n_left, s.n_right, SPT), gpu.config.audio)  # [M, T]
    outs = []
    for warm in (False, True):
        pool = b.encoder(3)
        if warm:
            pool.warm_up(20)
            split, tiled = [(n, False) for n in (4, 8, 16)], [(n, True) for n in (4, 8, 16, 32)]
            assert sorted(pool._graphs) == sorted(pool._ticks) == sorted(split + tiled)
        slots = [pool.join(b.live_chunk) for _ in range(2)]
        out = []
        for start in range(0, mel.shape[1], 8):
            items = [(slot, mel[:, start + k : start + k + 8]) for k, slot in enumerate(slots)]
            out += [b.to_numpy(e) for e in pool.encode(items)]
        outs.append(np.concatenate(out))
    np.testing.assert_array_equal(*outs)


@pytest.mark.parametrize("tiled", [False, True])
def test_live_pass_graph_equals_the_eager_pass(gpu, audio5, monkeypatch, tiled):
    """Live ticks of 3 slots (8 mel frames each: short runs only) replay the captured graph of their
    row bucket, its attention attention_split or (tiled) attention_runs over one-warp tiles; the same
    ticks run eagerly (no graph: attention_runs over one-warp tiles) give the same embeddings."""
    from voxtral.gpu import encoder as gpu_encoder

    monkeypatch.setattr(gpu_encoder, "LIVE_TILED_MIN_ROWS", 0 if tiled else 10**9)

    b, s = gpu.backend, gpu.schedule
    mel = log_mel(pad_offline(audio5, s.n_left, s.n_right, SPT), gpu.config.audio)  # [M, T]

    def ticks(pool) -> list[np.ndarray]:
        slots = [pool.join(b.live_chunk) for _ in range(3)]
        out: dict[int, list] = {slot: [] for slot in slots}
        for start in range(0, mel.shape[1], 8):
            items = [(slot, mel[:, start + k : start + k + 8]) for k, slot in enumerate(slots)]
            for (slot, _), e in zip(items, pool.encode(items), strict=True):
                out[slot].append(b.to_numpy(e))
        return [np.concatenate(out[slot]) for slot in slots]

    pool = b.encoder(4)
    graphed = ticks(pool)
    assert pool._ticks, "the live ticks did not take the graph path"
    assert bool(pool._live_tiles) == tiled
    monkeypatch.setattr(gpu_encoder, "LIVE_BUCKETS", (0,))  # no pass fits a bucket: all eager
    pool = b.encoder(4)
    eager = ticks(pool)
    assert not pool._graphs and not pool._ticks
    tol = 1e-3 if tiled else 1e-2  # split: another kernel's order of summation
    _assert_close(graphed, eager, f"live pass graph (tiled {tiled}) vs eager", tol, min_rows=10)


def test_offline_pass_graph_equals_the_eager_pass(gpu, audio5, monkeypatch):
    """Offline passes (runs of ≥ 64 positions only) of 3 slots fed pieces of 200 … 500 mel frames
    replay the captured graph of their row bucket (one attention_runs launch a layer through the tile
    table); the same passes run eagerly (one attention_tiled launch per run) give the same embeddings."""
    from voxtral.gpu import encoder as gpu_encoder

    b, s = gpu.backend, gpu.schedule
    mel = log_mel(pad_offline(audio5, s.n_left, s.n_right, SPT), gpu.config.audio)  # [M, T]
    mel = np.concatenate([mel, mel[:, ::-1], mel], axis=1)

    def passes(pool) -> list[np.ndarray]:
        slots = [pool.join() for _ in range(3)]
        rng = np.random.default_rng(5)
        done = dict.fromkeys(slots, 0)
        out: dict[int, list] = {slot: [] for slot in slots}
        while any(d < mel.shape[1] for d in done.values()):
            items = []
            for slot in slots:
                n = max(200, min(int(rng.choice([200, 333, 500])), mel.shape[1] - done[slot]))
                items.append((slot, mel[:, done[slot] : done[slot] + n]))
                done[slot] += n
            for (slot, _), e in zip(items, pool.encode(items), strict=True):
                out[slot].append(b.to_numpy(e))
        return [np.concatenate(out[slot]) for slot in slots]

    pool = b.encoder(4)
    graphed = passes(pool)
    assert pool._offline, "the offline passes did not take the graph path"
    monkeypatch.setattr(gpu_encoder, "OFFLINE_BUCKETS", (0,))  # no pass fits a bucket: all eager
    pool = b.encoder(4)
    eager = passes(pool)
    assert not pool._offline
    _assert_close(graphed, eager, "offline pass graph vs eager", 1e-3, min_rows=50)


def test_offline_stem_graph_equals_the_eager_stem(gpu, audio5, monkeypatch):
    """A call's conv stem replays its frames bucket's captured graph: a call of one group launches it
    once the first pass's inputs are in place, a call of several groups (≤ CONV_ROWS frames each)
    launches and copies each. 3 slots fed pieces of 0 … 500 frames in calls of one and of several groups,
    the carried rows moving on across calls, give the embeddings of the eager stem (ConvStem.feed)."""
    from voxtral.gpu import encoder as gpu_encoder

    b, s = gpu.backend, gpu.schedule
    mel = log_mel(pad_offline(audio5, s.n_left, s.n_right, SPT), gpu.config.audio)  # [M, T]
    mel = np.concatenate([mel, mel[:, ::-1]], axis=1)
    calls = [[300, 1, 500], [0, 333, 200], [500, 500, 500], [1, 2, 3]]  # frames per slot and call

    def run(pool) -> list[np.ndarray]:
        slots, start = [pool.join() for _ in range(3)], [0, 0, 0]
        out: dict[int, list] = {slot: [] for slot in slots}
        for sizes in calls:
            items = [(slot, mel[:, a : a + n]) for slot, a, n in zip(slots, start, sizes, strict=True)]
            start = [a + n for a, n in zip(start, sizes, strict=True)]
            for (slot, _), e in zip(items, pool.encode(items), strict=True):
                out[slot].append(b.to_numpy(e))
        return [np.concatenate(out[slot]) for slot in slots]

    monkeypatch.setattr(gpu_encoder, "STEM_FRAMES", 256)
    monkeypatch.setattr(gpu_encoder, "CONV_ROWS", 800)  # 801 frames: 2 groups; 3 × 500: 3 groups
    pool = b.encoder(4)
    graphed = run(pool)
    assert {512, 768} <= set(pool._stems), sorted(pool._stems)  # call 2 grew the room, call 3 took 512 again
    monkeypatch.setattr(gpu_encoder, "CONV_ROWS", 0)  # every group eager
    pool = b.encoder(4)
    eager = run(pool)
    assert not pool._stems
    _assert_close(graphed, eager, "offline stem graph vs eager", 1e-3, min_rows=50)


def _offline_and_live(b, pool, mel) -> list[np.ndarray]:
    """mel [M, T] through 2 offline slots of `pool` in one call, then 2 live slots in ticks of 8 frames →
    each slot's embeddings."""
    offline = [pool.join() for _ in range(2)]
    out = [b.to_numpy(e) for e in pool.encode([(slot, mel) for slot in offline])]
    live = [pool.join(b.live_chunk) for _ in range(2)]
    ticks: dict[int, list] = {slot: [] for slot in live}
    for start in range(0, mel.shape[1], 8):
        items = [(slot, mel[:, start : start + 8]) for slot in live]
        for (slot, _), e in zip(items, pool.encode(items), strict=True):
            ticks[slot].append(b.to_numpy(e))
    return out + [np.concatenate(ticks[slot]) for slot in live]


def test_chained_passes_equal_the_plain_launches(gpu, audio5, monkeypatch):
    """Every pass's own kernels as programmatic dependent launches (encoder.CHAIN_ALL: rms_norm, rope_qkv,
    attention, silu_mul start while the kernel before them ends and wait for it) give bitwise the
    embeddings of plain launches: offline passes (graphs of their buckets) of 2 slots, live ticks of 2."""
    from voxtral.gpu import encoder as gpu_encoder

    b, s = gpu.backend, gpu.schedule
    mel = log_mel(pad_offline(audio5, s.n_left, s.n_right, SPT), gpu.config.audio)  # [M, T]

    plain = _offline_and_live(b, b.encoder(4), mel)
    monkeypatch.setattr(gpu_encoder, "CHAIN_ALL", True)
    pool = b.encoder(4)
    chained = _offline_and_live(b, pool, mel)
    assert pool._offline and pool._ticks, "neither offline graphs nor tick graphs were taken"
    for a, c in zip(plain, chained, strict=True):
        assert len(a) > 10
        np.testing.assert_array_equal(a, c)


def test_graph_chains_equal_one_graph(gpu, audio5, monkeypatch):
    """Passes captured as chains of graphs cut at layers (encoder.GRAPH_CUTS) give bitwise the embeddings
    of passes captured whole: offline passes of 2 slots, live ticks (stem and layers) of 2."""
    from voxtral.gpu import encoder as gpu_encoder
    from voxtral.gpu.graphs import GraphChain

    b, s = gpu.backend, gpu.schedule
    mel = log_mel(pad_offline(audio5, s.n_left, s.n_right, SPT), gpu.config.audio)  # [M, T]

    layers = gpu.config.encoder.n_layers
    monkeypatch.setattr(gpu_encoder, "GRAPH_CUTS", ())
    pool = b.encoder(4)
    whole = _offline_and_live(b, pool, mel)
    assert not any(isinstance(g, GraphChain) for g in pool._ticks.values())
    monkeypatch.setattr(gpu_encoder, "GRAPH_CUTS", tuple(range(1, layers)))  # a graph a layer
    pool = b.encoder(4)
    cut = _offline_and_live(b, pool, mel)
    graphs = [*pool._ticks.values(), *(g for g, _, _ in pool._offline.values())]
    assert graphs and all(isinstance(g, GraphChain) and len(g.graphs) == layers for g in graphs)
    for a, c in zip(whole, cut, strict=True):
        assert len(a) > 10
        np.testing.assert_array_equal(a, c)


def test_offline_pass_buffers_grow_with_the_largest_bucket(gpu, audio5, monkeypatch):
    """The offline passes' shared buffers are as large as the largest bucket used so far, and at least
    OFFLINE_MIN_ROWS (a short input does not hold a 64-file pass's memory, a file's own passes never grow
    them); a larger pass grows them, and recaptures, with the same embeddings as eager passes."""
    from voxtral.gpu import encoder as gpu_encoder

    b, s = gpu.backend, gpu.schedule
    mel = log_mel(pad_offline(audio5, s.n_left, s.n_right, SPT), gpu.config.audio)  # [M, T]
    mel = np.concatenate([mel, mel[:, ::-1], mel, mel[:, ::-1]], axis=1)
    pieces = [mel[:, :300], mel[:, 300:]]  # ~150 positions (bucket 256), then ~1000 (bucket 1024)

    def run(pool, sizes: list | None = None) -> np.ndarray:
        slot, out = pool.join(), []
        for piece in pieces:
            out.append(b.to_numpy(pool.encode([(slot, piece)])[0]))
            if sizes is not None:
                sizes.append(len(pool._offline_buffers.pos))
        return np.concatenate(out)

    sizes: list[int] = []
    graphed = run(b.encoder(2), sizes)
    assert sizes == [gpu_encoder.OFFLINE_MIN_ROWS] * 2, sizes  # 1 280: both pieces' buckets fit
    monkeypatch.setattr(gpu_encoder, "OFFLINE_MIN_ROWS", 0)
    sizes = []
    grown = run(b.encoder(2), sizes)
    assert sizes == [256, 1024], sizes
    monkeypatch.setattr(gpu_encoder, "OFFLINE_BUCKETS", (0,))  # no pass fits a bucket: all eager
    eager = run(b.encoder(2))
    what = "offline passes on fixed and on growing buffers vs eager"
    _assert_close([graphed, grown], [eager, eager], what, 1e-3, min_rows=200)


def test_offline_short_runs_take_tiles_in_any_pass(gpu, audio5):
    """A pass holding an offline input's short run (its last positions) replays the tiled graph of its
    bucket whatever its size, so that the input's numerics do not depend on what shares its pass (nor
    does the input read its window once per query); a pass of a few live streams alone takes the split
    graph. The offline slot's embeddings match those of the same input alone (bucket 4, also tiled)."""
    b, s = gpu.backend, gpu.schedule
    mel = log_mel(pad_offline(audio5, s.n_left, s.n_right, SPT), gpu.config.audio)  # [M, T]
    pool = b.encoder(4)
    offline, live = pool.join(), [pool.join(b.live_chunk) for _ in range(2)]
    got = pool.encode([(slot, mel[:, 8 * k : 8 * k + 8]) for k, slot in enumerate([offline, *live])])
    assert list(pool._ticks) == [(16, True)]  # 8 frames → 4 positions a slot: 12 rows, bucket 16
    pool.encode([(slot, mel[:, 64 + 8 * k : 72 + 8 * k]) for k, slot in enumerate(live)])
    assert sorted(pool._ticks) == [(8, False), (16, True)]  # the live streams alone: 8 rows, split
    alone = b.encoder(1)
    ref = alone.encode([(alone.join(), mel[:, :8])])[0]
    assert list(alone._ticks) == [(4, True)]
    what = "offline short run in a pass vs alone"
    _assert_close([b.to_numpy(got[0])], [b.to_numpy(ref)], what, 1e-3, min_rows=0)
