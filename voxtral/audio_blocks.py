"""Audio in blocks: a file or an array decoded, mixed to mono and resampled to 16 kHz on the fly.

Every transcription reads its audio this way (bounded memory for any length), and load_audio is the
concatenation of the same blocks, so a file, the same samples as an array, a whole load and a block
read all give the same samples. Resampling is soxr's HQ stream (the quality of librosa's "soxr_hq").
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError

BLOCK_S = 10  # seconds of audio decoded at a time
CONVERT_HINT = "convert it to 16 kHz WAV (e.g. `ffmpeg -i IN -ar 16000 OUT.wav`)"


def is_regular_file(path: str | Path) -> bool:
    """True for a plain file (seekable, can be read twice); False for a pipe, FIFO, device or nothing."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def file_blocks(path: str | Path, target_rate: int = 16000, block_s: float = BLOCK_S) -> Iterator[np.ndarray]:
    """Mono float32 blocks [S] at target_rate; AudioError (naming the file) when it cannot be read.

    A pipe, FIFO or device (`<(cmd)`, /dev/stdin, mkfifo) is opened once and read as a stream: a WAV
    block by block, another container whole (libsndfile needs to seek in it)."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: file not found; check the path")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory; pass an audio file inside it")
    if not is_regular_file(path):
        yield from _stream_blocks(path, target_rate)
        return
    try:  # opened once, by Python (so any file name the OS accepts works), read front to back
        with open(path, "rb") as f, sf.SoundFile(f) as snd:
            rate = snd.samplerate
            blocks = snd.blocks(blocksize=max(1, int(rate * block_s)), dtype="float32", always_2d=True)
            mono = (b.mean(axis=1, dtype=np.float32) for b in blocks)
            yield from resampled(mono, rate, target_rate, str(path))
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError, OSError) as e:
        reason = " ".join(str(getattr(e, "error_string", e)).split())
        raise AudioError(f"{path}: cannot decode audio ({reason}); {CONVERT_HINT}") from None


def _stream_blocks(path: Path, target_rate: int) -> Iterator[np.ndarray]:
    from .pcm import read_stream

    try:
        with open(path, "rb") as f:
            yield from read_stream(f, target_rate=target_rate, name=str(path), hint=CONVERT_HINT)
    except OSError as e:
        raise AudioError(f"{path}: cannot read it ({e.strerror})") from None


def array_blocks(
    x: np.ndarray, rate: int, target_rate: int = 16000, block_s: float = BLOCK_S, name: str = "audio array"
) -> Iterator[np.ndarray]:
    """Blocks of mono samples x [S] (any float dtype) at `rate`, as float32 blocks at target_rate."""
    step = max(1, int(rate * block_s))
    blocks = (np.asarray(x[i : i + step], np.float32) for i in range(0, len(x), step))
    return resampled(blocks, rate, target_rate, name)


def resampled(blocks, rate: int, target_rate: int, name: str) -> Iterator[np.ndarray]:
    """Mono float32 blocks at `rate` → at target_rate; AudioError for non-finite samples or no samples."""
    resampler = None if rate == target_rate else soxr.ResampleStream(rate, target_rate, 1, "float32", "HQ")
    n = 0
    for x in blocks:
        if not np.isfinite(x).all():
            raise AudioError(f"{name}: the audio has non-finite samples (NaN or Inf); fix or re-export it")
        n += len(x)
        yield x if resampler is None else resampler.resample_chunk(x)
    if n == 0:
        raise AudioError(f"{name}: the audio is empty (0 samples); pass a recording with sound in it")
    if resampler is not None:
        yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)
