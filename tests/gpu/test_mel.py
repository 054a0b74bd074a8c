"""The log-mel on the device (voxtral/gpu/mel.py, cuda/mel.cu) against the host recipe it replaces
(voxtral.audio.windows_log_mel, float64): equal within float32 rounding on speech, noise, quiet audio,
silence, one frame and none; and from prebuilt kernels only."""

from __future__ import annotations

import numpy as np
import pytest

from voxtral.audio import PaddedMel, load_audio, windows_log_mel
from voxtral.config import ModelConfig
from voxtral.testing.checkpoint import params

cp = pytest.importorskip("cupy", reason="CuPy is not importable")

CFG = ModelConfig.from_dict(params("full")).audio  # the official front end: 128 bins, n_fft 400
# Float32 NumPy doing the same products differs from the float64 recipe by ≤ 3.2e-5 (mean 7e-8) on the
# 60 s clip; cuBLAS sums in another order, so the bounds leave some room.
MAX_DIFF, MEAN_DIFF = 2e-4, 1e-6


def windows_of(samples: np.ndarray, n_left: int = 32, n_right: int = 17) -> np.ndarray:
    m = PaddedMel(CFG, n_left, n_right)
    return np.concatenate([m.windows(samples), m.windows(np.zeros(0, np.float32))])


def compare(windows: np.ndarray) -> tuple[float, float]:
    from voxtral.gpu.mel import GpuMel

    want = windows_log_mel(windows, CFG)
    got = cp.asnumpy(GpuMel(CFG)(cp.asarray(windows.astype(np.float32))))
    assert got.shape == want.shape and got.dtype == np.float32
    d = np.abs(got.astype(np.float64) - want)
    return (float(d.max()), float(d.mean())) if d.size else (0.0, 0.0)


@pytest.mark.parametrize("what", ["speech", "noise", "quiet", "silence"])
def test_gpu_log_mel_equals_the_host_recipe(clip15, what):
    rng = np.random.default_rng(0)
    samples = {
        "speech": load_audio(clip15),
        "noise": 0.3 * rng.standard_normal(5 * 16000),
        "quiet": 1e-4 * rng.standard_normal(5 * 16000),
        "silence": np.zeros(16000),
    }[what].astype(np.float32)
    worst, mean = compare(windows_of(samples))
    print(f"{what}: max |GPU − host| {worst:.2e}, mean {mean:.2e}")
    assert worst <= MAX_DIFF and mean <= MEAN_DIFF


@pytest.mark.parametrize("t", [0, 1, 3])
def test_gpu_log_mel_of_few_frames(t):
    windows = np.random.default_rng(1).standard_normal((t, CFG.window_size)) * 0.1
    worst, _ = compare(windows)
    assert worst <= MAX_DIFF


def test_gpu_log_mel_keeps_nan_and_uses_prebuilt_kernels():
    from voxtral.gpu import kernels
    from voxtral.gpu.mel import GpuMel

    windows = np.zeros((2, CFG.window_size), np.float32)
    windows[1, 7] = np.nan  # a bad sample spoils its frame, as on the host
    got = cp.asnumpy(GpuMel(CFG)(cp.asarray(windows)))
    assert np.isfinite(got[:, 0]).all() and np.isnan(got[:, 1]).all()
    assert kernels.origins().get("mel.cu") == "prebuilt", kernels.origins()


def test_gpu_log_mel_in_a_graph_with_its_own_buffers(clip5):
    from voxtral.gpu.mel import GpuMel

    windows = cp.asarray(windows_of(load_audio(clip5)).astype(np.float32))
    mel = GpuMel(CFG)
    t = windows.shape[0]
    out = cp.empty((CFG.num_mel_bins, t), np.float32)
    scratch = (cp.empty((t, 2 * mel.n_freq), np.float32), cp.empty((t, mel.n_freq), np.float32))
    want = cp.asnumpy(mel(windows))
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        mel(windows, out=out, scratch=scratch)
        graph = stream.end_capture()
        out.fill(0)
        graph.launch(stream)
        stream.synchronize()
    np.testing.assert_array_equal(cp.asnumpy(out), want)


def test_gpu_log_mel_of_many_inputs_in_pieces(clip5, monkeypatch):
    """GpuMel.many (what the engine calls once a tick): inputs of several pieces each (float32 and float64
    views, empty ones), staged across upload boundaries → each input's frames as windows_log_mel gives
    them, as [M, T] views whose transpose is C-contiguous (what the conv stem gathers from)."""
    from voxtral.gpu import mel as gpu_mel

    monkeypatch.setattr(gpu_mel, "MEL_ROWS", 37)  # many uploads, pieces cut across them
    speech = windows_of(load_audio(clip5))
    rng = np.random.default_rng(2)
    noise = (0.1 * rng.standard_normal((50, CFG.window_size))).astype(np.float32)
    speech_pieces = [speech[:100], speech[100:101], speech[101:]]
    inputs = [speech_pieces, [noise.astype(np.float64)], [noise[:0]], [noise[3:9]]]
    got = gpu_mel.GpuMel(CFG).many(inputs)
    assert len(got) == len(inputs)
    for pieces, g in zip(inputs, got, strict=True):
        want = windows_log_mel(np.concatenate(pieces), CFG)
        assert g.shape == want.shape and g.dtype == np.float32 and g.T.flags.c_contiguous
        if want.size:
            assert np.abs(cp.asnumpy(g) - want).max() <= MAX_DIFF


def test_gpu_log_mel_of_a_live_tick_is_one_graph_replay(clip15):
    """GpuMel.many of few frames on the engine's stream (a live tick: 8 frames a stream) replays a graph
    of its bucket over fixed buffers: each call's output equals the host recipe (valid until the next
    call: views of the fixed output buffer); every bucket is captured at the first call, never again."""
    from voxtral.gpu import mel as gpu_mel

    speech = windows_of(load_audio(clip15)).astype(np.float32)  # 1 549 frames
    mel = gpu_mel.GpuMel(CFG)
    stream = cp.cuda.Stream(non_blocking=True)
    calls = [[[speech[:8]]], [[speech[8:13]], [speech[13:16]]], [[speech[16:24]]], [[speech[24:1048]]]]
    graphs = None
    for inputs in calls:
        with stream:
            got = mel.many(inputs)
            stream.synchronize()
        graphs = graphs or dict(mel._graphs)
        assert sorted(graphs) == list(gpu_mel.GRAPH_ROWS) and mel._graphs == graphs
        for pieces, g in zip(inputs, got, strict=True):
            want = windows_log_mel(np.concatenate(pieces), CFG)
            assert g.shape == want.shape and g.T.flags.c_contiguous
            assert np.abs(cp.asnumpy(g) - want).max() <= MAX_DIFF
    with stream:  # more frames than the largest bucket: the upload path, a new array
        big = mel.many([[speech[:1100]]])[0]
    assert mel._graphs == graphs and big.shape == (CFG.num_mel_bins, 1100)
    assert np.abs(cp.asnumpy(big) - windows_log_mel(speech[:1100], CFG)).max() <= MAX_DIFF
