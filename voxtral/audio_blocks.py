"""A file read in blocks: decoded, mixed to mono and resampled to 16 kHz on the fly (bounded memory).

For files too long to hold whole: the streaming schedule (stream.py) takes the blocks as they come,
and its tokens are the offline run's. Resampling is soxr's HQ stream, the resampler load_audio uses
in one shot (librosa's "soxr_hq").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .audio import CONVERT_HINT
from .errors import AudioError

BLOCK_S = 10  # seconds of the file decoded at a time


def file_blocks(path: str | Path, target_rate: int = 16000, block_s: float = BLOCK_S) -> Iterator[np.ndarray]:
    """Mono float32 blocks [S] at target_rate; AudioError (naming the file) when it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: file not found; check the path")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory; pass an audio file inside it")
    try:
        rate = sf.info(str(path)).samplerate
        blocks = sf.blocks(str(path), blocksize=max(1, int(rate * block_s)), dtype="float32", always_2d=True)
        resampler = (
            None if rate == target_rate else soxr.ResampleStream(rate, target_rate, 1, "float32", "HQ")
        )
        n = 0
        for block in blocks:  # [S, C]
            x = block.mean(axis=1, dtype=np.float32)
            if not np.isfinite(x).all():
                raise AudioError(
                    f"{path}: the audio has non-finite samples (NaN or Inf); fix or re-export it"
                )
            n += len(x)
            yield x if resampler is None else resampler.resample_chunk(x)
        if n == 0:
            raise AudioError(f"{path}: the audio is empty (0 samples); pass a recording with sound in it")
        if resampler is not None:
            yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError, OSError) as e:
        reason = " ".join(str(getattr(e, "error_string", e)).split())
        raise AudioError(f"{path}: cannot decode audio ({reason}); {CONVERT_HINT}") from None
