"""The log-mel spectrogram on the device (SPEC §2.3): what voxtral.audio.windows_log_mel computes on the
host, for frames whose samples are already cut (MelStream / PaddedMel .windows).

Two float32 GEMMs on cuBLAS (gpu/gemm.py) and two of our kernels (cuda/mel.cu): the real DFT of each
Hann-windowed frame as one matrix product with [hann·cos | −hann·sin] (n_fft = 400 is small: a GEMM
beats an FFT plan and needs no cuFFT), |X|², the mel filter bank (already [M, T]), log10 and the
normalisation. Float32 throughout; against the float64 host recipe the values differ by ≤ ~3e-5
(normalised units; measured on the clips with float32 NumPy), the floor clamp keeping quiet bins exact.
No CuPy elementwise kernel (nothing compiles at run time); no host sync; capturable.
"""

from __future__ import annotations

import numpy as np

from ..audio import LOG_MEL_FLOOR, LOG_MEL_RANGE, LOG_MEL_SCALE, LOG_MEL_SHIFT, hann_window, mel_filters
from ..config import AudioConfig
from . import ops
from .gemm import gemm


def dft_matrix(n_fft: int) -> np.ndarray:
    """[hann·cos | −hann·sin] float64 [2F, n_fft], F = n_fft/2 + 1: frames [T, n_fft] · its transpose =
    the real | imaginary parts of numpy.fft.rfft(frames · hann) [T, 2F]; phases reduced exactly."""
    f = n_fft // 2 + 1
    k = np.arange(n_fft)
    angle = 2 * np.pi * ((np.arange(f)[:, None] * k[None, :]) % n_fft) / n_fft
    window = hann_window(n_fft)
    return np.concatenate([np.cos(angle) * window, -np.sin(angle) * window])


class GpuMel:
    """windows [T, n_fft] f32 (device) → normalised log-mel [M, T] f32 (device), as windows_log_mel."""

    def __init__(self, cfg: AudioConfig):
        import cupy

        n = cfg.window_size
        self.cfg, self.n_fft, self.n_freq = cfg, n, n // 2 + 1
        self.dft = cupy.asarray(dft_matrix(n).astype(np.float32))
        self.filters = cupy.asarray(mel_filters(cfg.sampling_rate, n, cfg.num_mel_bins).astype(np.float32))
        self.low = cfg.global_log_mel_max - LOG_MEL_RANGE

    def __call__(self, windows, out=None, scratch=None):
        """windows [T, n_fft] f32 → out [M, T] f32 (allocated if None). scratch: (x [T, 2F], p [T, F])
        f32 buffers to use instead of allocating (a captured graph's)."""
        ops._check(windows, "windows", np.float32, (None, self.n_fft))
        t, m = windows.shape[0], self.cfg.num_mel_bins
        out = ops._out(out, "out", np.float32, (m, t))
        if t == 0:
            return out
        x, p = scratch if scratch is not None else (None, None)
        x = gemm(windows, self.dft, out=x)  # [T, 2F]: re | im (gemm allocates x when None)
        p = ops.power_spectrum(x, out=p)  # [T, F]
        gemm(self.filters, p, out=out)  # [M, T]
        return ops.log_mel_normalize(out, LOG_MEL_FLOOR, self.low, LOG_MEL_SHIFT, LOG_MEL_SCALE)
