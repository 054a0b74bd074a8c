"""voxtral.audio against independent formulations (librosa STFT, a direct DFT) and bad inputs."""

from __future__ import annotations

import math
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from voxtral.audio import load_audio, log_mel, pad_offline
from voxtral.config import AudioConfig
from voxtral.errors import AudioError, OptionError

CLIPS = sorted((Path(__file__).parents[1] / "audio" / "night1968").glob("*.wav"))
CFG = AudioConfig(
    sampling_rate=16000,
    frame_rate=12.5,
    num_mel_bins=128,
    hop_length=160,
    window_size=400,
    global_log_mel_max=1.5,
    downsample_factor=4,
)
SPT = CFG.samples_per_token  # 1280
N_LEFT, N_RIGHT = 32, 17  # SPEC §2.2 with the default delay
TOL = 1e-5


def normalise(power: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """[n_fft // 2 + 1, T] power → SPEC §2.3 log-mel, with the float32 filterbank librosa gives by default."""
    fb = librosa.filters.mel(
        sr=cfg.sampling_rate, n_fft=cfg.window_size, n_mels=cfg.num_mel_bins, norm="slaney"
    )
    mel = fb.astype(np.float64) @ power
    log_spec = np.maximum(np.log10(np.maximum(mel, 1e-10)), cfg.global_log_mel_max - 8)
    return (log_spec + 4) / 4


def mel_librosa(y: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    stft = librosa.stft(
        y.astype(np.float64),
        n_fft=cfg.window_size,
        hop_length=cfg.hop_length,
        win_length=cfg.window_size,
        window="hann",
        center=True,
        pad_mode="reflect",
    )
    return normalise(np.abs(stft[:, :-1]) ** 2, cfg)


def mel_direct_dft(y: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Reflect padding by slicing, frames by a loop, DFT by explicit cos/sin matrices: no FFT."""
    n, hop = cfg.window_size, cfg.hop_length
    half = n // 2
    y = y.astype(np.float64)
    padded = np.concatenate([y[half:0:-1], y, y[-2 : -half - 2 : -1]])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    frames = np.stack([padded[t * hop : t * hop + n] * window for t in range(len(y) // hop)])
    angle = 2 * np.pi * np.outer(np.arange(n // 2 + 1), np.arange(n)) / n  # [K, n]
    power = (np.cos(angle) @ frames.T) ** 2 + (np.sin(angle) @ frames.T) ** 2
    return normalise(power, cfg)


@pytest.mark.parametrize("clip", CLIPS, ids=lambda p: p.stem)
def test_log_mel_vs_librosa_stft(clip):
    x, rate = sf.read(clip, dtype="float32")
    assert rate == CFG.sampling_rate
    padded = pad_offline(x, N_LEFT, N_RIGHT, SPT)
    got = log_mel(padded, CFG)
    want = mel_librosa(padded, CFG)
    assert got.dtype == np.float32 and got.shape == want.shape == (128, len(padded) // 160)
    err = np.abs(got - want).max()
    print(f"{clip.stem}: max |log_mel - librosa| = {err:.2e}")
    assert err <= TOL
    assert got.min() >= (CFG.global_log_mel_max - 8 + 4) / 4 - 1e-7  # the clamp holds


def test_clips_present():
    assert len(CLIPS) == 4


@pytest.mark.parametrize("mels,hop,ceiling", [(128, 160, 1.5), (80, 160, 1.5), (128, 100, 0.5)])
@pytest.mark.parametrize("n", [201, 400, 401, 1000, 2 * 1280 + 37])
def test_log_mel_vs_direct_dft(n, mels, hop, ceiling):
    cfg = AudioConfig(16000, 12.5, mels, hop, 400, ceiling, 4)
    rng = np.random.default_rng(n)
    y = (rng.standard_normal(n) * rng.choice([1e-4, 0.1, 1.0])).astype(np.float32)
    got = log_mel(y, cfg)
    want = mel_direct_dft(y, cfg)
    assert got.shape == want.shape == (mels, n // hop)
    assert np.abs(got - want).max() <= TOL


@pytest.mark.parametrize("n", [1, 2, 159, 160, 161, 199, 200])
def test_log_mel_short_inputs(n):
    y = np.linspace(-0.5, 0.5, n, dtype=np.float32)
    got = log_mel(y, CFG)
    assert got.shape == (128, n // 160) and np.isfinite(got).all()


def test_log_mel_silence_is_the_floor():
    got = log_mel(np.zeros(1280, np.float32), CFG)
    np.testing.assert_array_equal(got, np.full((128, 8), (1.5 - 8 + 4) / 4, np.float32))


def test_pad_offline_lengths_every_n():
    for n in range(1, 5 * SPT):
        x = np.ones(n, np.float32)
        p = pad_offline(x, N_LEFT, N_RIGHT, SPT)
        assert len(p) == (N_LEFT + math.ceil(n / SPT) + N_RIGHT) * SPT, n
        assert p.dtype == np.float32 and p[N_LEFT * SPT : N_LEFT * SPT + n].all()
        assert not p[: N_LEFT * SPT].any() and not p[N_LEFT * SPT + n :].any()


@pytest.mark.parametrize("n", sorted({*range(1, 5 * 1280, 97), 1, 1279, 1280, 1281, 6399}))
def test_frame_count(n):
    p = pad_offline(np.full(n, 0.1, np.float32), N_LEFT, N_RIGHT, SPT)
    t = log_mel(p, CFG).shape[1]
    assert t == len(p) // 160 and t % CFG.frames_per_token == 0


@pytest.mark.parametrize("clip", CLIPS, ids=lambda p: p.stem)
def test_frame_count_clips(clip):
    x = load_audio(clip)
    p = pad_offline(x, N_LEFT, N_RIGHT, SPT)
    t = log_mel(p, CFG).shape[1]
    assert t == len(p) // 160 == (N_LEFT + math.ceil(len(x) / SPT) + N_RIGHT) * 8


def test_pad_offline_exact_multiple_adds_nothing_extra():
    p = pad_offline(np.ones(2 * SPT, np.float32), 1, 2, SPT)
    assert len(p) == 5 * SPT
    with pytest.raises(OptionError):
        pad_offline(np.ones(3, np.float32), -1, 0, SPT)


# ---- load_audio ---------------------------------------------------------------------------------------


def sine(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * rate / len(x)


def test_load_wav_16k_unchanged():
    x, _ = sf.read(CLIPS[0], dtype="float32")
    np.testing.assert_array_equal(load_audio(CLIPS[0]), x)
    np.testing.assert_array_equal(load_audio(str(CLIPS[0])), x)


def test_stereo_mixes_to_mono(tmp_path):
    left, right = sine(440, 16000), sine(1000, 16000, amp=0.25)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize("rate", [44100, 8000, 48000])
def test_resample(tmp_path, rate):
    x = sine(1000, rate, seconds=1.0)
    path = tmp_path / f"sine_{rate}.wav"
    sf.write(path, x, rate, subtype="FLOAT")
    y = load_audio(path)
    assert y.dtype == np.float32 and abs(len(y) - len(x) * 16000 / rate) <= 1
    assert abs(peak_hz(y, 16000) - 1000) <= 1
    mid = y[1000:-1000]  # away from the resampler's edges
    assert abs(np.sqrt(np.mean(mid**2)) - 0.5 / np.sqrt(2)) < 0.01


def test_resample_array_matches_file(tmp_path):
    x = sine(300, 22050)
    path = tmp_path / "a.wav"
    sf.write(path, x, 22050, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(x, sample_rate=22050), load_audio(path))


@pytest.mark.parametrize(
    "fmt,ext,tol", [("FLAC", "flac", 1 / 32768), ("OGG", "ogg", None), ("MP3", "mp3", None)]
)
def test_compressed_round_trip(tmp_path, fmt, ext, tol):
    x = sine(1000, 16000, seconds=1.0)
    path = tmp_path / f"sine.{ext}"
    try:
        sf.write(path, x, 16000, format=fmt)
    except (sf.LibsndfileError, TypeError, ValueError) as e:
        if fmt != "MP3":
            raise
        pytest.skip(f"this libsndfile cannot write MP3 ({e}); reading MP3 is libsndfile's, not ours")
    y = load_audio(path)
    if tol is not None:  # lossless
        np.testing.assert_allclose(y, x, atol=tol)
    else:  # lossy: encoder delay/padding may change the length slightly
        assert abs(len(y) - len(x)) <= 2 * 1152 and abs(peak_hz(y, 16000) - 1000) <= 2


def test_int_arrays():
    x16 = np.array([0, 1, -1, 16384, -32768, 32767], np.int16)
    np.testing.assert_array_equal(load_audio(x16, sample_rate=16000), x16.astype(np.float32) / 32768)
    x32 = np.array([[2**30, -(2**30)], [-(2**31), -(2**31)]], np.int32)  # [S, C]
    np.testing.assert_array_equal(load_audio(x32, sample_rate=16000), [0.0, -1.0])
    np.testing.assert_array_equal(load_audio(np.array([128, 0], np.uint8), sample_rate=16000), [0.0, -1.0])


def test_float64_array_and_integral_float_rate():
    x = np.linspace(-1, 1, 100)
    y = load_audio(x, sample_rate=16000.0)
    assert y.dtype == np.float32 and np.allclose(y, x, atol=1e-7)


def assert_one_line_error(source, name: str, match: str, **kwargs):
    with pytest.raises(AudioError) as info:
        load_audio(source, **kwargs)
    message = str(info.value)
    assert "\n" not in message and name in message, message
    assert match in message, message


def test_bad_files(tmp_path):
    assert_one_line_error(tmp_path / "missing.wav", "missing.wav", "not found")
    assert_one_line_error(tmp_path, str(tmp_path), "directory")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    assert_one_line_error(empty, str(empty), "empty")
    zero_bytes = tmp_path / "zero.wav"
    zero_bytes.write_bytes(b"")
    assert_one_line_error(zero_bytes, str(zero_bytes), "the audio is empty")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_one_line_error(corrupt, str(corrupt), "cannot decode")
    text = tmp_path / "notes.txt"
    text.write_text("this is not audio\nsecond line\n")
    assert_one_line_error(text, str(text), "cannot decode")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_file(tmp_path, bad):
    x = sine(440, 16000)
    x[100] = bad
    path = tmp_path / "nonfinite.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    assert_one_line_error(path, str(path), "non-finite")
    assert_one_line_error(x, "audio array", "non-finite", sample_rate=16000)


def test_bad_arrays():
    x = np.zeros(100, np.float32)
    assert_one_line_error(x, "audio array", "sample_rate is required")
    for rate in (0, -16000, 16000.5, float("nan"), True, "16000"):
        assert_one_line_error(x, "audio array", "positive whole number", sample_rate=rate)
    assert_one_line_error(np.zeros(0, np.float32), "audio array", "empty", sample_rate=16000)
    assert_one_line_error(np.zeros((10, 2, 2)), "audio array", "[S] or [S, C]", sample_rate=16000)
    assert_one_line_error(np.zeros((2, 1000)), "audio array", "channels-first", sample_rate=16000)
    assert_one_line_error(np.zeros((16000, 0)), "audio array", "no channels", sample_rate=16000)
    assert_one_line_error(np.zeros((0, 0)), "audio array", "no channels", sample_rate=16000)
    for dtype in (bool, np.complex64, object, "U3"):
        assert_one_line_error(np.zeros(10, dtype), "audio array", "not audio", sample_rate=16000)
    assert_one_line_error([0.0, 1.0], "list", "file path or a NumPy array")


def test_option_errors():
    with pytest.raises(OptionError):
        load_audio(CLIPS[0], sample_rate=16000)
    with pytest.raises(OptionError):
        load_audio(CLIPS[0], target_rate=0)


@pytest.mark.parametrize(
    "rate, n_fft, n_mels", [(16000, 400, 128), (16000, 400, 80), (8000, 256, 40), (44100, 2048, 128)]
)
def test_mel_filters_equal_librosa(rate, n_fft, n_mels):
    """Our Slaney filterbank (no librosa at run time) against librosa's, which defines the recipe."""
    from voxtral.audio import mel_filters

    want = librosa.filters.mel(
        sr=rate,
        n_fft=n_fft,
        n_mels=n_mels,
        fmin=0.0,
        fmax=rate / 2,
        htk=False,
        norm="slaney",
        dtype=np.float64,
    )
    np.testing.assert_allclose(mel_filters(rate, n_fft, n_mels), want, rtol=1e-12, atol=1e-15)


def test_importing_voxtral_and_reading_audio_needs_no_librosa(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(1600, np.float32), 16000)
    code = (
        "import sys, voxtral; from voxtral.audio import load_audio, log_mel;"
        "from voxtral.config import AudioConfig;"
        f"log_mel(load_audio({str(path)!r}), AudioConfig(16000, 12.5, 128, 160, 400, 1.5, 4));"
        "assert 'librosa' not in sys.modules, 'librosa was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_gpu_log_mel_matrices_reproduce_the_host_recipe_in_float32(clip15):
    """voxtral/gpu/mel.py's DFT matrix and filter bank, multiplied in float32 as cuBLAS will, give the
    float64 host log-mel within 1e-4 (normalised units) on speech (the GPU kernels: tests/gpu/test_mel.py)."""
    import voxtral.audio as va
    from voxtral.config import ModelConfig
    from voxtral.gpu.mel import dft_matrix
    from voxtral.testing.checkpoint import params

    cfg = ModelConfig.from_dict(params("full")).audio
    windows = va.PaddedMel(cfg, 32, 17).windows(load_audio(clip15))
    f = cfg.window_size // 2 + 1
    x = windows.astype(np.float32) @ dft_matrix(cfg.window_size).astype(np.float32).T
    power = x[:, :f] ** 2 + x[:, f:] ** 2
    mel = va.mel_filters(cfg.sampling_rate, cfg.window_size, cfg.num_mel_bins).astype(np.float32) @ power.T
    low = np.float32(cfg.global_log_mel_max - va.LOG_MEL_RANGE)
    log = np.maximum(np.log10(np.maximum(mel, np.float32(va.LOG_MEL_FLOOR))), low)
    got = (log + va.LOG_MEL_SHIFT) / va.LOG_MEL_SCALE
    want = va.windows_log_mel(windows, cfg)
    assert np.abs(got - want).max() < 1e-4 and np.abs(got - want).mean() < 1e-6
