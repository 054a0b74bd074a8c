"""Audio front end (SPEC §2): file or array → mono float32 samples → padded → log-mel.

    load_audio(source)        path or array → [S] float32, mono, 16 kHz (audio_blocks.py, concatenated)
    pad_offline(samples, …)   [S] → [S'] with S' a whole number of tokens (S' % 1280 == 0)
    log_mel(samples, cfg)     [S] → [M, T] float32, T = S // hop (offline: T % 8 == 0)
    MelStream / PaddedMel     the same log-mel, incrementally (PaddedMel with the offline padding)

Every model number (rate, hop, window, mel bins, log-mel ceiling) comes from `AudioConfig`;
the constants below are the fixed parts of the recipe, shared with Whisper.
"""

from __future__ import annotations

import functools
import numbers
import os
from pathlib import Path

import numpy as np

from .audio_blocks import (
    CONVERT_HINT,
    EMPTY,
    NON_FINITE,
    array_blocks,
    file_blocks,
    header_seconds,
    to_float32,
)
from .config import AudioConfig
from .errors import AudioError, OptionError

LOG_MEL_FLOOR = 1e-10  # power floor before log10: keeps silence finite (−10)
LOG_MEL_RANGE = 8.0  # log10 units kept below the ceiling: 8 × 10 dB = 80 dB
LOG_MEL_SHIFT = 4.0  # (x + 4) / 4 maps the kept range to about [-1, 1] (Whisper's scaling)
LOG_MEL_SCALE = 4.0
__all__ = ["CONVERT_HINT", "MelStream", "PaddedMel", "blocks", "load_audio", "log_mel", "pad_offline"]

Source = str | os.PathLike | np.ndarray


def load_audio(source: Source, sample_rate: int | None = None, target_rate: int = 16000) -> np.ndarray:
    """Decode a file or take an array ([S] or [S, C]); return mono float32 [S] at target_rate."""
    return np.concatenate(list(blocks(source, sample_rate, target_rate)))


def blocks(source: Source, sample_rate: int | None = None, target_rate: int = 16000):
    """A file path or an array ([S] or [S, C], with its sample_rate) → an iterator of mono float32 blocks
    [S] at target_rate. Arrays are checked here; a file when the first block is asked for."""
    target_rate = _check_rate(target_rate, "target_rate", OptionError)
    if isinstance(source, np.ndarray):
        if sample_rate is None:
            raise AudioError("audio array: sample_rate is required with an array, e.g. sample_rate=16000")
        rate = _check_rate(sample_rate, "audio array: sample_rate", AudioError)
        samples = _array_to_mono(source, "audio array")
        if samples.size == 0:
            raise AudioError(EMPTY.format(name="audio array"))
        if not np.isfinite(samples).all():
            raise AudioError(NON_FINITE.format(name="audio array"))
        return array_blocks(samples, rate, target_rate)
    if isinstance(source, str | os.PathLike):
        if str(source) == "":  # Path("") is ".", which would be named as a directory (" " is a file name)
            raise AudioError("audio path is empty; pass a file path (or `-` on the command line for stdin)")
        if sample_rate is not None:
            raise OptionError(f"{source}: sample_rate is only for arrays; a file carries its own rate")
        return file_blocks(Path(source), target_rate)
    raise AudioError(f"audio source of type {type(source).__name__}: pass a file path or a NumPy array")


def audio_length(source: Source, sample_rate: int | None = None, target_rate: int = 16000) -> int | None:
    """Samples load_audio would likely return, from a file's header or an array's shape without
    decoding (an estimate: decoding decides); None when unknown (a pipe, or no length in the header)."""
    if isinstance(source, np.ndarray):
        try:
            n, rate = len(source), int(sample_rate)
        except (TypeError, ValueError):
            return None
        return -(-n * target_rate // rate) if rate > 0 else None
    if not isinstance(source, str | os.PathLike):
        return None
    seconds = header_seconds(source)
    return None if seconds is None else int(np.ceil(seconds * target_rate))


def _check_rate(rate, what: str, error: type[Exception]) -> int:
    """A positive whole number of samples per second (ints or integral floats)."""
    ok = isinstance(rate, numbers.Real) and not isinstance(rate, bool | np.bool_)
    if not ok or not np.isfinite(rate) or rate <= 0 or rate != int(rate):
        raise error(f"{what} must be a positive whole number of Hz, got {rate!r}")
    return int(rate)


def _array_to_mono(x: np.ndarray, name: str) -> np.ndarray:
    """[S] or [S, C] float/int → [S] float32; ints scaled to [-1, 1)."""
    if x.ndim not in (1, 2):
        raise AudioError(f"{name}: shape {x.shape} has {x.ndim} dims; pass samples as [S] or [S, C]")
    if x.ndim == 2 and x.shape[1] == 0:
        raise AudioError(f"{name}: shape {x.shape} has no channels; pass [S] or [S, C] with C ≥ 1")
    if x.ndim == 2 and x.shape[1] > x.shape[0]:
        raise AudioError(f"{name}: shape {x.shape} looks channels-first; pass [S, C] (e.g. x.T)")
    if np.issubdtype(x.dtype, np.signedinteger):
        x = x.astype(np.float64) / 2.0 ** (8 * x.dtype.itemsize - 1)
    elif np.issubdtype(x.dtype, np.unsignedinteger):  # unsigned PCM is centred at half range
        half = 2.0 ** (8 * x.dtype.itemsize - 1)
        x = (x.astype(np.float64) - half) / half
    elif not np.issubdtype(x.dtype, np.floating):
        raise AudioError(f"{name}: dtype {x.dtype} is not audio; pass float or integer samples")
    if x.ndim == 2:
        x = x.mean(axis=1)
    return to_float32(x)  # beyond float32: inf, reported by the caller


def pad_offline(
    samples: np.ndarray, n_left_tokens: int, n_right_tokens: int, samples_per_token: int
) -> np.ndarray:
    """Silence: n_left tokens before; after, up to a whole token, then n_right tokens (SPEC §2.2)."""
    if n_left_tokens < 0 or n_right_tokens < 0 or samples_per_token <= 0:
        raise OptionError(
            f"pad_offline: need n_left_tokens, n_right_tokens >= 0 and samples_per_token > 0, got "
            f"{n_left_tokens}, {n_right_tokens}, {samples_per_token}"
        )
    n = len(samples)
    left = n_left_tokens * samples_per_token
    to_token = -n % samples_per_token
    out = np.zeros(left + n + to_token + n_right_tokens * samples_per_token, dtype=np.float32)
    out[left : left + n] = samples
    return out


SLANEY_LINEAR_HZ = 200.0 / 3  # Hz per mel below 1 kHz (Slaney's Auditory Toolbox scale)
SLANEY_LOG_HZ = 1000.0  # where the scale turns logarithmic
SLANEY_LOG_STEP = np.log(6.4) / 27.0  # log-Hz per mel above 1 kHz


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear (200/3 Hz per mel) to 1 kHz, logarithmic above (float64)."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / SLANEY_LINEAR_HZ
    log_start = SLANEY_LOG_HZ / SLANEY_LINEAR_HZ
    above = hz >= SLANEY_LOG_HZ
    log_mel = log_start + np.log(np.maximum(hz, SLANEY_LOG_HZ) / SLANEY_LOG_HZ) / SLANEY_LOG_STEP
    return np.where(above, log_mel, mel)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """The inverse of hz_to_mel (float64)."""
    mel = np.asarray(mel, dtype=np.float64)
    log_start = SLANEY_LOG_HZ / SLANEY_LINEAR_HZ
    above = mel >= log_start
    return np.where(above, SLANEY_LOG_HZ * np.exp(SLANEY_LOG_STEP * (np.maximum(mel, log_start) - log_start)),
                    mel * SLANEY_LINEAR_HZ)  # fmt: skip


@functools.lru_cache(maxsize=8)
def mel_filters(sampling_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-scale, Slaney-normalised mel filterbank [M, n_fft // 2 + 1], 0 Hz to Nyquist (float64).

    Triangles between n_mels + 2 points equally spaced in mel, each scaled by 2 / its width in Hz (equal
    area); the recipe of librosa.filters.mel(htk=False, norm="slaney"), which the tests compare with."""
    fft_hz = np.linspace(0.0, sampling_rate / 2, n_fft // 2 + 1)
    edges_hz = mel_to_hz(np.linspace(0.0, hz_to_mel(sampling_rate / 2), n_mels + 2))  # [M + 2]
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (fft_hz - lower) / (centre - lower)
    falling = (upper - fft_hz) / (upper - centre)
    fb = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (upper - lower))
    fb.setflags(write=False)  # cached and shared: nobody may change it
    return fb


@functools.lru_cache(maxsize=8)
def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window of n samples (the STFT convention: period n, not n - 1)."""
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    w.setflags(write=False)
    return w


def log_mel(samples: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """[S] samples → [M, T] normalised log-mel, T = S // hop_length (SPEC §2.3)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise AudioError(f"log_mel: samples must be 1-D [S], got shape {x.shape}")
    return windows_log_mel(_log_mel_windows(x, cfg), cfg)


def _log_mel_windows(x: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """The frames' samples [T, n_fft] of log_mel(x), T = S // hop_length (a strided view)."""
    n_fft, hop = cfg.window_size, cfg.hop_length
    n_frames = len(x) // hop  # centred STFT gives 1 + S // hop frames; the last is dropped
    if n_frames == 0:
        return np.zeros((0, n_fft), np.float32)
    # Reflect padding; numpy reflects repeatedly when S <= n_fft // 2 (an edge case: offline
    # padding always gives far longer inputs).
    return _windows(np.pad(x, n_fft // 2, mode="reflect"), n_frames, cfg)


def _windows(padded: np.ndarray, n_frames: int, cfg: AudioConfig) -> np.ndarray:
    """The n_fft samples of frames t < n_frames of a padded signal [T, n_fft] (a strided view)."""
    n_fft, hop = cfg.window_size, cfg.hop_length
    n = max(0, min(n_frames, (len(padded) - n_fft) // hop + 1))  # frames the signal holds
    if not padded.flags.c_contiguous:
        padded = np.ascontiguousarray(padded)
    step = padded.itemsize
    # the ndarray constructor over padded's buffer: as_strided's view costs ~3× as much (2.6 against 0.8 µs),
    # once per live session a tick
    out = np.ndarray((n, n_fft), padded.dtype, buffer=padded, strides=(hop * step, step))
    out.flags.writeable = False
    return out


def windows_log_mel(frames: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Frames' samples [T, n_fft] (float64) → normalised log-mel [M, T] float32 (SPEC §2.3)."""
    n_fft = cfg.window_size
    spectrum = np.fft.rfft(frames * hann_window(n_fft), axis=-1)  # [T, n_fft // 2 + 1]
    power = spectrum.real**2 + spectrum.imag**2
    mel = mel_filters(cfg.sampling_rate, n_fft, cfg.num_mel_bins) @ power.T  # [M, T]
    log_spec = np.log10(np.maximum(mel, LOG_MEL_FLOOR))
    log_spec = np.maximum(log_spec, cfg.global_log_mel_max - LOG_MEL_RANGE)
    return ((log_spec + LOG_MEL_SHIFT) / LOG_MEL_SCALE).astype(np.float32)


def windows_log_mel_many(frames: list[np.ndarray], cfg: AudioConfig) -> list[np.ndarray]:
    """windows_log_mel of several streams' frames [T_i, n_fft] in one call (one FFT, one matmul) →
    [M, T_i] each: many live streams' new frames cost about what one stream's do."""
    if not frames:
        return []
    mel = windows_log_mel(np.concatenate(frames), cfg)  # [M, ΣT]
    cuts = np.cumsum([len(f) for f in frames])[:-1]
    return np.split(mel, cuts, axis=1)


class MelStream:
    """Incremental log_mel (SPEC §2.3, §7): samples in chunks of any size → the frames of log_mel(all).

    Frame t is centred on sample t·hop, so it waits for n_fft/2 samples of look-ahead; finish()
    reflect-pads the end as log_mel does and returns the frames still held back. Only the samples
    that frames not yet returned need are kept, so memory is bounded for any length.
    """

    def __init__(self, cfg: AudioConfig):
        self.cfg = cfg
        self.n_samples = 0  # samples fed so far
        self.n_frames = 0  # frames returned so far
        self.finished = False
        self._half = cfg.window_size // 2
        self._head = np.zeros(0, np.float32)  # the first samples, until the left reflection can be built
        self._padded: np.ndarray | None = None  # the padded signal from padded index _start on
        self._start = 0  # padded index of _padded[0] (padded index = sample index + n_fft/2)

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """The next samples [S] → the frames [M, T'] they complete (T' ≥ 0)."""
        return windows_log_mel(self.windows(samples), self.cfg)

    def windows(self, samples: np.ndarray) -> np.ndarray:
        """feed() up to the log-mel: the samples of the frames they complete [T', n_fft] (a strided view;
        float32 for float32 samples, which the windows then hold exactly, else float64), for
        windows_log_mel or a backend's log_mel with other streams'."""
        if self.finished:
            raise AudioError("MelStream: feed after finish(); start a new stream")
        x = np.asarray(samples).reshape(-1)
        x = x.astype(np.float32 if x.dtype == np.float32 else np.float64, copy=False)
        self.n_samples += len(x)
        if self._padded is None:
            self._head = np.concatenate([self._head, x])
            if len(self._head) <= self._half:
                return np.zeros((0, self.cfg.window_size), np.float32)
            self._padded, self._head = np.concatenate([self._head[self._half : 0 : -1], self._head]), None
        else:
            self._padded = np.concatenate([self._padded, x])
        n, hop = self.n_samples, self.cfg.hop_length
        ready = min(n // hop, (n - self._half) // hop + 1)  # frame t needs samples < t·hop + n_fft/2
        return self._take_windows(ready)

    def finish(self) -> np.ndarray:
        """Reflect-pad the end; the frames [M, T'] still held back, up to T = samples // hop in all."""
        return windows_log_mel(self.finish_windows(), self.cfg)

    def finish_windows(self) -> np.ndarray:
        """finish() up to the log-mel: the samples of the frames still held back [T', n_fft]."""
        if self.finished:
            raise AudioError("MelStream: finish() called twice; start a new stream")
        self.finished = True
        if self._padded is None:  # too short to have returned anything: the one-shot recipe
            self.n_frames = self.n_samples // self.cfg.hop_length
            return _log_mel_windows(self._head, self.cfg)
        tail = self._padded[-self._half - 1 : -1][::-1]  # np.pad "reflect": x[S−2], x[S−3], …
        self._padded = np.concatenate([self._padded, tail])
        return self._take_windows(self.n_samples // self.cfg.hop_length)

    def _take_windows(self, upto: int) -> np.ndarray:
        """The samples of frames n_frames … upto − 1 [T', n_fft] (a view of a signal no longer held)."""
        if upto <= self.n_frames:
            return np.zeros((0, self.cfg.window_size), np.float32)
        hop = self.cfg.hop_length
        offset = self.n_frames * hop - self._start
        out = _windows(self._padded[offset:], upto - self.n_frames, self.cfg)
        self._padded = self._padded[upto * hop - self._start :].copy()  # not a view of the whole signal
        self._start, self.n_frames = upto * hop, upto
        return out


class PaddedMel:
    """log_mel(pad_offline(samples)) incrementally (SPEC §2.2, §2.3): samples in blocks → frames.

    The n_left silent tokens come first; finish() adds silence to a whole token and n_right tokens, then
    flushes, so an input fed whole or in any blocks gives exactly the frames of the one-shot recipe
    (T a multiple of 8). A live stream is the same with its end unknown until finish().
    """

    def __init__(self, cfg: AudioConfig, n_left_tokens: int, n_right_tokens: int):
        self.cfg, self.n_right = cfg, n_right_tokens
        self.n_samples = 0  # samples fed (padding not counted)
        self._mel = MelStream(cfg)
        self._left = np.zeros(n_left_tokens * cfg.samples_per_token, np.float32)

    @property
    def finished(self) -> bool:
        return self._mel.finished

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """The next samples [S] → the frames [M, T'] they complete (T' ≥ 0)."""
        return windows_log_mel(self.windows(samples), self.cfg)

    def windows(self, samples: np.ndarray) -> np.ndarray:
        """feed() up to the log-mel: the frames' samples [T', n_fft] (see MelStream.windows)."""
        self.n_samples += len(samples)
        if self._left is None:  # after the first call: the stream's own windows (a view, no copy)
            return self._mel.windows(samples)
        return np.concatenate([*self._start(), self._mel.windows(samples)])

    def finish(self) -> np.ndarray:
        """The right padding and the frames still held back [M, T']."""
        return windows_log_mel(self.finish_windows(), self.cfg)

    def finish_windows(self) -> np.ndarray:
        """finish() up to the log-mel: the frames' samples [T', n_fft] (see MelStream.windows)."""
        spt = self.cfg.samples_per_token
        pad = np.zeros(-self.n_samples % spt + self.n_right * spt, np.float32)
        return np.concatenate([*self._start(), self._mel.windows(pad), self._mel.finish_windows()])

    def _start(self) -> list[np.ndarray]:
        """The left padding's frames' samples [T', n_fft], the first time only."""
        windows = [] if self._left is None else [self._mel.windows(self._left)]
        self._left = None
        return windows
