"""Audio byte streams → mono float32 blocks at 16 kHz, as they arrive (for streaming from stdin).

    read_stream(stream, raw=None)     a WAV stream (or any container libsndfile reads, decoded at EOF)
    read_stream(stream, raw=RawFormat("s16le", 44100, 2))     headerless PCM described by the caller
    microphone(rate)                  blocks from the default input device (the `mic` extra)

WAV and raw PCM are parsed here, block by block, so a pipe is transcribed while it is still being
written; other containers (FLAC, OGG, MP3, …) need the whole stream first. Bad input is an
AudioError raised after every complete sample before it has been yielded.
"""

from __future__ import annotations

import io
import logging
import queue
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import soundfile as sf

from .audio_blocks import array_blocks
from .errors import AudioError, DeviceError, OptionError

log = logging.getLogger(__name__)
READ_BYTES = 1 << 16  # bytes asked of the stream per read; a pipe returns what it has
MIC_BLOCK_S = 0.1  # microphone block: 100 ms
RESAMPLER_QUALITY = "HQ"  # soxr quality, as audio_blocks (every file and array)
RAW_HINT = "for headerless PCM pass --format (e.g. s16le) and --rate"

# name → (NumPy dtype of one sample, bytes per sample); s24 is unpacked by hand
ENCODINGS = {
    "u8": ("u1", 1),
    "s8": ("i1", 1),
    "s16le": ("<i2", 2),
    "s16be": (">i2", 2),
    "s24le": ("<i4", 3),
    "s24be": (">i4", 3),
    "s32le": ("<i4", 4),
    "s32be": (">i4", 4),
    "f32le": ("<f4", 4),
    "f32be": (">f4", 4),
    "f64le": ("<f8", 8),
    "f64be": (">f8", 8),
}
WAV_PCM, WAV_FLOAT, WAV_EXTENSIBLE = 1, 3, 0xFFFE
UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # data sizes a writer that cannot seek back leaves in the header


@dataclass(frozen=True)
class RawFormat:
    """Headerless PCM: sample encoding (a key of ENCODINGS), frames per second, interleaved channels."""

    encoding: str
    rate: int
    channels: int = 1

    def __post_init__(self):
        if self.encoding not in ENCODINGS:
            raise OptionError(f"--format {self.encoding!r} is not one of {', '.join(ENCODINGS)}")
        if isinstance(self.rate, bool) or not isinstance(self.rate, int) or self.rate <= 0:
            raise OptionError(f"--rate must be a positive whole number of Hz, got {self.rate!r}")
        if isinstance(self.channels, bool) or not isinstance(self.channels, int) or self.channels <= 0:
            raise OptionError(f"--channels must be a positive whole number, got {self.channels!r}")


def read_stream(
    stream: BinaryIO,
    raw: RawFormat | None = None,
    target_rate: int = 16000,
    name: str = "stdin",
    hint: str = RAW_HINT,
) -> Iterator[np.ndarray]:
    """Mono float32 blocks [S] at target_rate from a byte stream, yielded as its bytes arrive.

    A WAV header (or a whole non-WAV file) is read and checked at once, so a bad one fails here;
    hint ends the message of a container that cannot be decoded.
    """
    if raw is not None:
        return _resampled(_pcm_blocks(stream, raw, -1, name), raw.rate, target_rate)
    head = _read_exact(stream, 12)
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        fmt, size = _wav_header(stream, name, head)
        return _resampled(_pcm_blocks(stream, fmt, size, name), fmt.rate, target_rate)
    if len(head) < 12 and head[:4] in (b"RIFF", b"RF64"):
        raise AudioError(f"{name}: truncated WAV header ({len(head)} bytes)")
    return iter([_whole_file(head + stream.read(), target_rate, name, hint)])


def microphone(rate: int = 16000) -> Iterator[np.ndarray]:
    """Mono float32 blocks [S] at rate from the default input device, until interrupted.

    DeviceError at once when the `mic` extra (sounddevice, PortAudio) is missing.
    """
    try:
        import sounddevice
    except ImportError:
        raise DeviceError("microphone input needs the `mic` extra: pip install 'voxtral[mic]'") from None
    except OSError as e:  # the extra is there but its C library is not
        raise DeviceError(
            f"the microphone needs the PortAudio library ({e}); install it (e.g. apt install libportaudio2)"
        ) from None
    return _microphone_blocks(sounddevice, rate)


def _microphone_blocks(sounddevice, rate: int) -> Iterator[np.ndarray]:
    blocks: queue.Queue = queue.Queue()
    callback = lambda data, frames, when, status: blocks.put(data[:, 0].copy())  # noqa: E731
    try:
        device = sounddevice.InputStream(
            samplerate=rate, channels=1, dtype="float32", blocksize=int(rate * MIC_BLOCK_S), callback=callback
        )
    except sounddevice.PortAudioError as e:
        raise DeviceError(f"cannot open the microphone ({e}); check the input device") from None
    with device:
        while True:
            yield blocks.get()


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    """Up to n bytes, fewer only at the end of the stream."""
    out = b""
    while len(out) < n:
        more = stream.read(n - len(out))
        if not more:
            break
        out += more
    return out


def _read_some(stream: BinaryIO, n: int) -> bytes:
    """Whatever the stream has now, at most n bytes (at least 1 unless it ended)."""
    read1 = getattr(stream, "read1", None)
    return read1(n) if read1 is not None else stream.read(n)


def _wav_header(stream: BinaryIO, name: str, head: bytes) -> tuple[RawFormat, int]:
    """Parse chunks up to 'data' (after the 12-byte RIFF header): the sample format and data size."""
    fmt = None
    while True:
        chunk = _read_exact(stream, 8)
        if len(chunk) < 8:
            what = "no 'fmt ' chunk" if fmt is None else "no 'data' chunk"
            raise AudioError(f"{name}: truncated WAV header ({what} before the stream ended)")
        kind, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if kind == b"data":
            if fmt is None:
                raise AudioError(f"{name}: bad WAV header ('data' before 'fmt ')")
            return fmt, -1 if head[:4] == b"RF64" or size in UNKNOWN_SIZES else size
        body = _read_exact(stream, size + size % 2)  # chunks are padded to even sizes
        if len(body) < size:
            raise AudioError(f"{name}: truncated WAV header (chunk {kind!r} cut short)")
        if kind == b"fmt ":
            fmt = _wav_format(body, name)


def _wav_format(body: bytes, name: str) -> RawFormat:
    """A WAV 'fmt ' chunk → RawFormat (PCM 8/16/24/32-bit, float 32/64-bit, extensible)."""
    if len(body) < 16:
        raise AudioError(f"{name}: bad WAV header ('fmt ' chunk of {len(body)} bytes)")
    code, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
    if code == WAV_EXTENSIBLE and len(body) >= 26:
        code = struct.unpack("<H", body[24:26])[0]  # first two bytes of the sub-format GUID
    encodings = {(WAV_PCM, 8): "u8", (WAV_PCM, 16): "s16le", (WAV_PCM, 24): "s24le", (WAV_PCM, 32): "s32le"}
    encodings |= {(WAV_FLOAT, 32): "f32le", (WAV_FLOAT, 64): "f64le"}
    if (code, bits) not in encodings or channels == 0 or rate == 0:
        raise AudioError(
            f"{name}: unsupported WAV sample format (code {code}, {bits} bits, {channels} channels, "
            f"{rate} Hz); convert to 16-bit PCM WAV (e.g. `ffmpeg -i IN -f wav -acodec pcm_s16le -`)"
        )
    return RawFormat(encodings[code, bits], rate, channels)


def _pcm_blocks(stream: BinaryIO, fmt: RawFormat, size: int, name: str) -> Iterator[np.ndarray]:
    """Interleaved PCM bytes → mono float32 blocks at fmt.rate; size −1 = until the stream ends."""
    frame = ENCODINGS[fmt.encoding][1] * fmt.channels
    rest, left = b"", size
    while left != 0:
        data = _read_some(stream, READ_BYTES if left < 0 else min(READ_BYTES, left))
        if not data:
            break
        left = left - len(data) if left > 0 else left
        data = rest + data
        n = len(data) // frame * frame
        rest = data[n:]
        if n:
            yield _to_mono(data[:n], fmt, name)
    if rest:
        raise AudioError(
            f"{name}: the stream ended in the middle of a sample ({len(rest)} stray "
            f"byte{'s' if len(rest) > 1 else ''} of a "
            f"{frame}-byte frame); check --format and --channels"
        )
    if left > 0:
        log.warning("%s: WAV data ended %d bytes short of its header's size", name, left)


def _to_mono(data: bytes, fmt: RawFormat, name: str) -> np.ndarray:
    """Bytes of whole frames → [S] float32, channels averaged; integers scaled to [-1, 1)."""
    dtype, width = ENCODINGS[fmt.encoding]
    if width == 3:  # 24-bit: the 3 bytes of each sample into the top of an int32
        b = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
        b = b if fmt.encoding.endswith("le") else b[:, ::-1]
        x = (b[:, 0] << 8 | b[:, 1] << 16 | b[:, 2] << 24) / 2.0**31
    elif dtype[-2] == "f":
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            x = np.frombuffer(data, dtype).reshape(-1, fmt.channels).mean(axis=1, dtype=np.float64)
            mono = x.astype(np.float32)
        if not np.isfinite(mono).all():
            raise AudioError(f"{name}: non-finite or out-of-range samples (NaN, Inf); check --format")
        return mono
    elif dtype == "u1":
        x = (np.frombuffer(data, dtype).astype(np.float64) - 128.0) / 128.0
    else:
        x = np.frombuffer(data, dtype) / 2.0 ** (8 * width - 1)
    return x.reshape(-1, fmt.channels).mean(axis=1).astype(np.float32)


def _resampled(blocks: Iterator[np.ndarray], rate: int, target: int) -> Iterator[np.ndarray]:
    """Blocks at rate → blocks at target (soxr's streaming resampler, flushed at the end)."""
    if rate == target:
        yield from blocks
        return
    import soxr

    resampler = soxr.ResampleStream(rate, target, 1, dtype="float32", quality=RESAMPLER_QUALITY)
    for x in blocks:
        yield resampler.resample_chunk(x)
    yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)


def _whole_file(data: bytes, target_rate: int, name: str, hint: str) -> np.ndarray:
    """A container other than WAV: decode all of it with libsndfile, then resample."""
    if not data:
        raise AudioError(f"{name}: no audio (the stream is empty)")
    try:
        x, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)  # [S, C]
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError) as e:
        reason = " ".join(str(getattr(e, "error_string", e)).split())
        raise AudioError(f"{name}: cannot decode audio ({reason}); {hint}") from None
    return np.concatenate(list(array_blocks(x.mean(axis=1), rate, target_rate, name=name)))
