"""The one audio reader: a file, pipe, FIFO, stdin or array → mono float32 blocks at 16 kHz (SPEC §2.1).

Every input is opened once and read front to back; its length is what decoding gives, never a header's
claim. One decoder for every container and codec, so the same bytes give the same samples however they
arrive: FFmpeg, through PyAV (which bundles it): WAV (PCM, float, μ-law, A-law, ADPCM; RF64, W64), AIFF,
AU, FLAC, MP3, AAC/M4A/MP4, Ogg Vorbis/Opus, WebM, video files' first audio track, headerless PCM.
(libsndfile trusts a WAV's data size — 0 from a writer that could not seek back means "empty" to it —
where FFmpeg reads to the end; one decoder keeps a file and a pipe equal by construction.)

Decoded frames become float64 [S, C] (integers scaled to [-1, 1) exactly); channels are averaged
(float64), cast to float32 and resampled with soxr's HQ stream (librosa's "soxr_hq"); load_audio is the
concatenation of the blocks.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soxr

from .errors import AudioError, OptionError, OutputError

STDIN = "/dev/stdin"  # what `-` is read as (inputs.py)
TMPDIR_HINT = "set TMPDIR to a directory with room"
SPOOL_DIR = None  # where a piped input is buffered: the system's temporary directory ($TMPDIR)
SPOOL_CHUNK = 1 << 20  # bytes copied from a pipe at a time
FILE_BATCH = 32768  # samples of a file's consecutive frames converted to float in one go (_ffmpeg_frames)
BLOCK_S = 10  # seconds of audio handed on at a time (offline); a live stream hands on what it has
WAV_PACKET = 65536  # bytes of a WAV file's packets (FFmpeg's default: 4096): _wav_options
WAV_HEAD = 36  # bytes of a WAV's start _wav_options reads: RIFF/RF64 id, size, WAVE, ds64's sizes
CONVERT_HINT = "convert it to 16 kHz WAV (e.g. `ffmpeg -i IN -ar 16000 OUT.wav`)"
RAW_HINT = "for headerless PCM pass --format (e.g. s16le) and --rate"
RAW_CHECK = "check --format and --channels"
MOOV_HINT = (
    "an MP4/M4A with its index (moov) at the end cannot be read from a pipe: pass the file itself, or "
    "remux it with `ffmpeg -i IN -c copy -movflags +faststart OUT.m4a`"
)
CAF_HINT = (
    "a CAF file cannot be read from a pipe as it arrives (FFmpeg's CAF reader seeks): convert it on the "
    "way, e.g. `ffmpeg -i IN.caf -f wav - | voxtral stream --stdin`"
)
EMPTY = "{name}: the audio is empty (0 samples); pass a recording with sound in it"  # in every mode
NON_FINITE = (
    "{name}: the audio has non-finite samples (NaN, Inf, or beyond float32's range); fix or re-export it"
)
log = logging.getLogger(__name__)
# FFmpeg indexes a WAV's or MP3's packets as it reads them, for seeking: 24 bytes a packet, up to 1 MiB
# an input (its "indexmem"; a 16 kHz WAV reaches it after 47 min). Nothing here seeks: none is kept.
NO_SEEK_INDEX = {"indexmem": "0"}
PCM_CODEC = re.compile(r"pcm_[suf](\d+)(?:le|be)?(?:_planar)?|pcm_(mulaw|alaw)")  # group 1: bits a sample
# headerless PCM: name → bytes per sample (the names are FFmpeg's raw demuxers)
ENCODINGS = {
    "u8": 1, "s8": 1, "s16le": 2, "s16be": 2, "s24le": 3, "s24be": 3, "s32le": 4, "s32be": 4,
    "f32le": 4, "f32be": 4, "f64le": 8, "f64be": 8,
}  # fmt: skip


@dataclass(frozen=True)
class RawFormat:
    """Headerless PCM: sample encoding (a key of ENCODINGS), frames per second, interleaved channels."""

    encoding: str
    rate: int
    channels: int = 1

    def __post_init__(self):
        if self.encoding not in ENCODINGS:
            raise OptionError(f"--format {self.encoding!r} is not one of {', '.join(ENCODINGS)}")
        if isinstance(self.rate, bool) or not isinstance(self.rate, int) or not 0 < self.rate < 2**31:
            raise OptionError(f"--rate must be a positive whole number of Hz, got {self.rate!r}")
        channels = self.channels
        if isinstance(channels, bool) or not isinstance(channels, int) or not 0 < channels <= 64:
            raise OptionError(f"--channels must be a whole number 1 … 64, got {self.channels!r}")

    @property
    def frame_bytes(self) -> int:
        return ENCODINGS[self.encoding] * self.channels


def is_regular_file(path: str | Path) -> bool:
    """True for a plain file (seekable, can be read twice); False for a pipe, FIFO, device or nothing."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def file_blocks(path: str | Path, target_rate: int = 16000, block_s: float = BLOCK_S) -> Iterator[np.ndarray]:
    """Mono float32 blocks [S] at target_rate; AudioError (naming the file) when it cannot be read.

    A pipe, FIFO or device (`<(cmd)`, /dev/stdin, mkfifo) is read once, front to back, into an unnamed
    temporary file (SPOOL_DIR, removed by the system even after a crash) and decoded from there exactly as
    the same bytes in a file would be: an MP3's gapless length header and an MP4 indexed at its end need
    the whole input (read_stream decodes as bytes arrive, for live input)."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: file not found; check the path")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory; pass an audio file inside it")
    name = "-" if str(path) == STDIN else str(path)  # standard input is `-` in every line (inputs.shown)
    try:  # opened once, by Python (so any file name the OS accepts works), read front to back
        with open(path, "rb") as f:
            if is_regular_file(path):
                yield from _decode_file(f, name, target_rate, block_s)
                return
            with _spool_file() as spool:
                _spool(f, spool, path)
                spool.seek(0)
                yield from _decode_file(spool, name, target_rate, block_s)
    except OSError as e:
        raise AudioError(f"{path}: cannot read it ({e.strerror}); {CONVERT_HINT}") from None


def _spool_file():
    """The unnamed temporary file a pipe is read into; OutputError when the temporary directory
    cannot hold one (it is not the audio's fault)."""
    try:
        return tempfile.TemporaryFile(prefix="voxtral-input-", dir=SPOOL_DIR)
    except OSError as e:
        where = SPOOL_DIR or tempfile.gettempdir()
        raise OutputError(f"cannot make a temporary file in {where} ({e.strerror}); {TMPDIR_HINT}") from None


def _spool(src: BinaryIO, spool: BinaryIO, path: Path) -> None:
    """Copy a pipe into the spool file: a read error is the input's, a write error the temporary
    directory's (full: say so, and where, not "convert the audio")."""
    while True:
        try:
            chunk = src.read(SPOOL_CHUNK)
        except OSError as e:
            raise AudioError(f"{path}: cannot read it ({e.strerror}); {CONVERT_HINT}") from None
        if not chunk:
            return
        try:
            spool.write(chunk)
        except OSError as e:
            where = SPOOL_DIR or tempfile.gettempdir()
            raise OutputError(
                f"{path}: cannot hold its bytes in {where} ({e.strerror}); {TMPDIR_HINT}"
            ) from None


def _decode_file(f: BinaryIO, name: str, target_rate: int, block_s: float) -> Iterator[np.ndarray]:
    """Blocks of an open, seekable file."""
    if os.fstat(f.fileno()).st_size == 0:
        raise AudioError(EMPTY.format(name=name))
    frames = _ffmpeg_frames(_Seekable(f), name, CONVERT_HINT, batch=FILE_BATCH, demuxer=_wav_options(f))
    yield from _mono_blocks(frames, target_rate, name, block_s)


def _wav_options(f: BinaryIO) -> dict:
    """FFmpeg demuxer options for a WAV file (RIFF/RF64/BW64 … WAVE): WAV_PACKET-byte packets and no
    probing past the header (which holds everything the decoder needs), and _wav_length's. The samples
    are the same; a packet is a few calls that each give up the GIL, so 16× fewer packets let a reader
    thread finish its file while the engine thread launches kernels (4 KB packets: ~2800 hand-overs of
    the GIL a minute of audio, each up to the interpreter's 5 ms switch interval). {} for anything else."""
    head = f.read(WAV_HEAD)
    f.seek(0)
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return {"max_size": str(WAV_PACKET), "probesize": "32"} | _wav_length(head)
    return {}


def _wav_length(head: bytes) -> dict:
    """{"ignore_length": "1"} for an RF64/BW64 WAV whose ds64 chunk gives the data 0 bytes (or all ones):
    what FFmpeg writes to a pipe (`-rf64 always -f wav -`), which cannot seek back to fill it in. FFmpeg
    then reads no sample; the data runs to the end of the input (as for a RIFF WAV whose size says 0,
    which FFmpeg reads to its end by itself). {} otherwise. head: the input's first WAV_HEAD bytes."""
    if head[:4] in (b"RF64", b"BW64") and head[8:16] == b"WAVEds64" and len(head) >= WAV_HEAD:
        if int.from_bytes(head[28:36], "little") in (0, 2**64 - 1):
            return {"ignore_length": "1"}
    return {}


def read_stream(
    stream: BinaryIO,
    raw: RawFormat | None = None,
    target_rate: int = 16000,
    name: str = "stdin",
    hint: str = RAW_HINT,
    block_s: float = 0.0,
) -> Iterator[np.ndarray]:
    """Mono float32 blocks [S] at target_rate from a byte stream read once, as its bytes arrive.

    Any container FFmpeg decodes, or headerless PCM described by `raw`. block_s = 0 hands on each
    decoded frame at once (live input). hint ends the message of a stream that cannot be decoded.
    AudioError after every good sample before the fault has been yielded."""
    reader = _Reader(stream, 1 if raw is None else raw.frame_bytes)
    if raw is None:
        head = reader.peek(WAV_HEAD)
        hint = CAF_HINT if head[:4] == b"caff" else hint  # FFmpeg opens a CAF only where it can seek
        frames = _ffmpeg_frames(reader, name, hint, demuxer=_wav_length(head))
    else:
        layout = {1: "mono", 2: "stereo"}.get(raw.channels, f"{raw.channels} channels")
        options = {"sample_rate": str(raw.rate), "ch_layout": layout}
        frames = _ffmpeg_frames(reader, name, hint, raw.encoding, options)
    try:
        yield from _mono_blocks(frames, target_rate, name, block_s)
    except AudioError:  # a stream cut short by a stop signal may end mid-packet: the signal is the news
        if reader.stop is None:
            raise
    if reader.stop is not None:  # a stop signal inside FFmpeg's read: raised here, where it can be seen
        raise reader.stop
    if reader.stray:
        stray = len(reader.stray)
        what = f"{stray} stray byte{'s' if stray > 1 else ''} of a {raw.frame_bytes}-byte frame"
        raise AudioError(f"{name}: the stream ended in the middle of a sample ({what}); {RAW_CHECK}")


def array_blocks(
    x: np.ndarray, rate: int, target_rate: int = 16000, block_s: float = BLOCK_S, name: str = "audio array"
) -> Iterator[np.ndarray]:
    """Blocks of mono samples x [S] (any float dtype) at `rate`, as float32 blocks at target_rate."""
    step = max(1, int(rate * block_s))
    blocks = (to_float32(x[i : i + step]) for i in range(0, len(x), step))
    return resampled(blocks, rate, target_rate, name)


def resampled(blocks, rate: int, target_rate: int, name: str) -> Iterator[np.ndarray]:
    """Mono float32 blocks at `rate` → at target_rate; AudioError for non-finite samples, or for no samples
    at target_rate (none decoded, or too few to make one: 1 sample at 48 kHz)."""
    return _resampled_runs(((x, rate) for x in blocks), target_rate, name)


def _resampled_runs(blocks, target_rate: int, name: str) -> Iterator[np.ndarray]:
    """(mono float32 block, its rate) pairs → float32 blocks at target_rate. Where the rate changes (MP3s
    of different rates concatenated) the resampler is flushed and a new one starts: each run is converted
    on its own, as FFmpeg's own resampling does."""
    resampler, rate, n_in, n_out = None, None, 0, 0
    end = object()
    try:
        for block in itertools.chain(blocks, [(end, None)]):
            x, r = block
            if x is not end and not np.isfinite(x).all():
                raise AudioError(NON_FINITE.format(name=name))
            if r != rate and resampler is not None:  # a new rate, or the end: the old run's tail
                y = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                n_out += len(y)
                if len(y):
                    yield y
            if x is end:
                break
            if r != rate:
                rate = r
                resampler = (
                    None if r == target_rate else soxr.ResampleStream(r, target_rate, 1, "float32", "HQ")
                )
            n_in += len(x)
            # the caller gets the only reference (popped from out): held here while waiting at the yield,
            # a block would stay until the input's next pull (0.64 MB a 10 s block at 16 kHz, + 1.9 MB at
            # 48 kHz)
            out = [x if resampler is None else resampler.resample_chunk(x)]
            block = x = None
            n_out += len(out[0])
            if len(out[0]):
                yield out.pop()
    finally:  # an error's traceback holds this frame: a resampler alive at exit made nanobind print
        resampler = None  # 20 lines of "leaked instances" after the error line (a 10 MHz WAV too short)
    if n_out == 0 and n_in > 0:
        what = f"{n_in} sample{'s' if n_in > 1 else ''} at {rate} Hz make none at {target_rate} Hz"
        raise AudioError(f"{name}: the audio is too short ({what}); pass a longer recording")
    if n_out == 0:
        raise AudioError(EMPTY.format(name=name))


def header_seconds(path: str | Path) -> float | None:
    """The duration a regular file's header claims (no decoding; for progress and sizing only);
    None for a pipe or when the header says nothing. FFmpeg's header read with no probing past the
    first bytes (0.14 ms a WAV; probing: 2.5 ms, 0.85 s of 64 files on the engine thread), and with its
    default probing where that finds no duration (or no format: an MP3 without tags needs more bytes)."""
    if not is_regular_file(path):
        return None
    import av

    for options in ({"probesize": "32"}, {}):
        try:
            with open(path, "rb") as f, av.open(_Seekable(f), options=options) as container:
                if container.duration is not None:
                    return container.duration / 1e6
        except Exception:  # any unreadable file: decoding reports it properly
            pass
    return None


# --- the decoder: float64 [S, C] frames and their rate ---------------------------------------------------


def _ffmpeg_frames(
    f, name: str, hint: str, fmt: str | None = None, options: dict | None = None, batch: int = 0,
    demuxer: dict | None = None,
) -> Iterator[tuple[np.ndarray, int]]:  # fmt: skip
    """FFmpeg's decoded frames of the first audio stream of an open file or stream (PyAV). A packet the
    codec rejects is skipped, as FFmpeg itself does (a warning says how many); a container that cannot
    be read further is an AudioError after the frames before it.
    batch: consecutive frames of one rate and layout are handed on together once they hold this many
    samples (files: the per-frame NumPy work of ~1000-sample frames held the GIL that the engine thread
    needs for its launches); 0 hands on each frame as it comes (a live stream). demuxer: options of the
    container's demuxer (_wav_options)."""
    import av

    try:
        container = _open(f, fmt, options or {}, demuxer or {})
    except Exception as e:  # FFmpeg's errors and PyAV's own on odd headers: the input's fault, one line
        if isinstance(f, _Reader) and f.n_bytes == 0 and f.at_end():
            raise AudioError(EMPTY.format(name=name)) from None
        raise AudioError(f"{name}: cannot decode audio ({_reason(e)}); {hint}") from None
    with container:
        if not container.streams.audio:
            raise AudioError(f"{name}: has no audio stream; pass a file with sound in it")
        stream = container.streams.audio[0]
        cc = stream.codec_context
        if cc is None:  # FFmpeg has no decoder for what the header names (float 16-bit)
            raise AudioError(f"{name}: cannot decode audio (no decoder for its codec); {hint}")
        if (cc.name or "").startswith("pcm_") and (cc.format is None or not cc.layout.channels):
            # a PCM header FFmpeg cannot map (0 or 65535 channels): some PyAV builds crash decoding it
            what = f"a PCM header with {len(cc.layout.channels)} channels and no sample format"
            raise AudioError(f"{name}: cannot decode audio ({what}); {hint}")
        n = skipped = packets = 0
        held, n_held, kind = [], 0, None  # raw [S, C] arrays of one (rate, dtype, channels)

        def flush():
            nonlocal n_held
            if held:
                with np.errstate(all="ignore"):  # a signalling NaN cast; resampled() reports it
                    x = _scaled(np.concatenate(held) if len(held) > 1 else held[0])
                held.clear()
                n_held = 0
                yield x, kind[0]

        try:
            for packet in container.demux(stream):
                packets += 1
                try:
                    frames = _decoded(packet, stream.codec_context)
                except av.FFmpegError:
                    # an empty packet (the decoder's flush at the end, sent again after a stop signal
                    # ended the read) carries no audio: nothing is missing
                    skipped += packet.size > 0
                    continue
                for frame in frames:
                    raw = _raw_samples(frame)
                    if raw is None:  # a damaged packet's frame that cannot be read safely
                        skipped += 1
                        continue
                    if (frame.sample_rate, raw.dtype, raw.shape[1]) != kind:
                        yield from flush()
                        kind = (frame.sample_rate, raw.dtype, raw.shape[1])
                    held.append(raw)
                    n_held += len(raw)
                    n += len(raw)
                    if n_held >= batch:
                        yield from flush()
            yield from flush()
        except AudioError:
            raise
        except Exception as e:  # FFmpeg's errors, and PyAV's on headers it cannot map (0 channels, …)
            yield from flush()  # the frames before the error, then the error
            rate = stream.codec_context.sample_rate or 1
            if n == 0 and isinstance(f, _Reader) and "mp4" in container.format.name.split(","):
                hint = MOOV_HINT  # its index is at the end: a pipe cannot go back for the samples
            raise AudioError(
                f"{name}: cannot decode audio after {n / rate:.2f} s ({_reason(e)}); {hint}"
            ) from None
        if skipped:
            log.warning(
                "%s: skipped %d damaged packet(s) of %d; the audio there is missing", name, skipped, packets
            )


def _open(f, fmt: str | None, options: dict, demuxer: dict):
    """av.open, with tags in another encoding than UTF-8 (a Latin-1 WAV title) ignored: not the audio; and
    no seek index (an input is read front to back once); demuxer: more options of the container."""
    import av

    kwargs = {"mode": "r", "format": fmt, "options": options, "container_options": NO_SEEK_INDEX | demuxer}
    try:
        return av.open(f, metadata_errors="ignore", **kwargs)
    except TypeError:  # PyAV ≥ 19 has no metadata_errors (it reads such tags leniently itself)
        return av.open(f, **kwargs)


def _decoded(packet, codec_context) -> list:
    """The frames of one packet. A PCM packet cut off mid-frame (a truncated WAV on a pipe) is decoded up
    to its last whole frame, as FFmpeg 8 does (older FFmpeg rejects the whole packet)."""
    import av

    try:
        return packet.decode()
    except av.FFmpegError:
        width = PCM_CODEC.fullmatch(getattr(codec_context, "name", None) or "")
        channels = len(codec_context.layout.channels) if width is not None else 0
        if width is None or channels == 0:
            raise
        frame = (int(width[1]) // 8 if width[1] else 1) * channels
        if frame == 0 or packet.size % frame == 0:
            raise
        whole = av.Packet(bytes(packet)[: packet.size - packet.size % frame])
        whole.pts, whole.dts, whole.time_base = packet.pts, packet.dts, packet.time_base
        return codec_context.decode(whole)


# FFmpeg's sample formats (planar ones end in "p") → their NumPy types (native byte order, as FFmpeg's)
SAMPLE_TYPES = {"u8": np.uint8, "s16": np.int16, "s32": np.int32, "s64": np.int64, "flt": np.float32,
                "dbl": np.float64}  # fmt: skip


def _raw_samples(frame) -> np.ndarray | None:
    """A decoded frame (packed or planar; u8, s16, s32, s64, flt, dbl) → its samples [S, C] as stored, read
    plane by plane for its channels only; None when it cannot be read safely (a plane per channel, or one
    packed, holding its samples; a known format). Never PyAV's `frame.planes` or to_ndarray: they take
    every plane PyAV counts, past the channels over pointers the decoder never set (a 12-channel Vorbis
    frame counts 38: PyAV 18 read them and crashed the process, a segfault that lost every input of a
    batch; PyAV 19 raises), and garbage AAC decodes to 19 channels counted as 34 planes."""
    channels, fmt, s = len(frame.layout.channels), frame.format, frame.samples
    dtype = SAMPLE_TYPES.get(fmt.name.removesuffix("p"))
    if channels == 0 or dtype is None:
        return None
    try:
        planes = [_plane(frame, c) for c in range(channels if fmt.is_planar else 1)]
    except (ValueError, IndexError):  # fewer planes than channels
        return None
    if any(p.buffer_size < s * fmt.bytes * (1 if fmt.is_planar else channels) for p in planes):
        return None
    if fmt.is_planar:
        return np.stack([np.frombuffer(p, dtype, s) for p in planes], axis=1)
    return np.frombuffer(planes[0], dtype, s * channels).reshape(s, channels)


def _plane(frame, index: int):
    """Plane `index` of a decoded frame (PyAV's AudioPlane; ValueError past its planes in PyAV ≥ 19)."""
    from av.audio.plane import AudioPlane

    return AudioPlane(frame, index)


def _scaled(x: np.ndarray) -> np.ndarray:
    """Samples [S, C] as stored → float64 in [−1, 1) for integers, exact."""
    if x.dtype == np.uint8:
        return (x.astype(np.float64) - 128.0) / 128.0
    if np.issubdtype(x.dtype, np.integer):
        return x / 2.0 ** (8 * x.dtype.itemsize - 1)
    return np.ascontiguousarray(x, dtype=np.float64)


def _mono_blocks(frames, target_rate: int, name: str, block_s: float) -> Iterator[np.ndarray]:
    """float64 [S, C] frames with their rate → mono float32 blocks at target_rate, about block_s long."""

    def mono():
        held, n_held, rate = [], 0, None
        for x, r in frames:
            if r != rate and held:  # a new rate: hand on what was held at the old one
                yield _joined(held), rate
                n_held = 0
            rate = r
            with np.errstate(all="ignore"):  # inf − inf in a mean: NaN, which the resampler step reports
                m = to_float32(x.mean(axis=1))
            if block_s <= 0:  # a live stream: each piece as it comes
                yield m, rate
                continue
            size = max(1, int(block_s * rate))
            while n_held + len(m) >= size:  # a block is full: cut the piece there (pieces may be long)
                cut = size - n_held
                held.append(m[:cut])
                yield _joined(held), rate
                m, n_held = m[cut:], 0
            if len(m):
                held.append(m)
                n_held += len(m)
        if held:
            yield _joined(held), rate

    return _resampled_runs(mono(), target_rate, name)


def _joined(held: list[np.ndarray]) -> np.ndarray:
    """The held pieces as one block, the list emptied: a generator waiting at its yield keeps no second
    copy of the block (an input's pieces would otherwise stay until its next pull, 0.64 MB a 10 s block)."""
    block = np.concatenate(held) if len(held) > 1 else held[0]
    held.clear()
    return block


def to_float32(x: np.ndarray) -> np.ndarray:
    """float32 samples; values beyond float32's range become inf (resampled() reports them), quietly."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(x, dtype=np.float32)


def _reason(e: Exception) -> str:
    """An exception's message on one line (FFmpeg's strerror, else its text)."""
    text = getattr(e, "error_string", None) or getattr(e, "strerror", None) or str(e)
    return " ".join(str(text).split())


class _Reader:
    """A byte stream as FFmpeg sees it: read(n) returns at most n bytes, what is there now (a pipe is
    decoded as it arrives), no seeking; counts the bytes handed on. With frame_bytes (headerless PCM) the
    bytes after the last whole frame are never handed on (`stray` at the end): FFmpeg would reject the
    packet they end, losing the samples before them. Until the end it keeps frame_bytes − 1 bytes back."""

    def __init__(self, stream: BinaryIO, frame_bytes: int = 1):
        self._read = getattr(stream, "read1", None) or stream.read
        self.frame_bytes, self.n_bytes, self._buf, self._eof = frame_bytes, 0, b"", False
        self.stop: BaseException | None = None  # a stop signal's exception caught in read()

    def read(self, n: int = -1) -> bytes:
        """FFmpeg's read callback. A stop signal (Ctrl-C's KeyboardInterrupt, SIGTERM's Terminated) that
        lands here would be swallowed by FFmpeg's C caller ("Exception ignored"): it ends the stream
        instead, and read_stream raises it once FFmpeg has returned."""
        try:
            return self._read_some(n)
        except Exception:
            raise
        except BaseException as e:
            self.stop, self._eof = e, True
            return b""

    def _read_some(self, n: int) -> bytes:
        n = n if n > 0 else 1 << 16
        keep = self.frame_bytes - 1
        while not self._eof and len(self._buf) <= keep:
            more = self._read(max(n, self.frame_bytes))
            self._eof = not more
            self._buf += more
        if self._eof:
            limit = len(self._buf) - (self.n_bytes + len(self._buf)) % self.frame_bytes
        else:
            limit = len(self._buf) - keep
        data, self._buf = self._buf[: min(n, limit)], self._buf[min(n, limit) :]
        self.n_bytes += len(data)
        return data

    def peek(self, n: int) -> bytes:
        """The stream's first n bytes (fewer if it ends sooner), waiting for them; read() still hands
        them on. Before any read() only."""
        try:
            while not self._eof and len(self._buf) < n:
                more = self._read(n - len(self._buf))
                self._eof = not more
                self._buf += more
        except Exception:
            raise
        except BaseException as e:  # a stop signal: as in read()
            self.stop, self._eof = e, True
        return self._buf[:n]

    @property
    def stray(self) -> bytes:
        """The bytes of a cut-off last frame, once the stream has ended."""
        return self._buf if self._eof else b""

    def at_end(self) -> bool:
        """True when the stream has ended with nothing left (reads once more if it has not said so)."""
        if not self._eof and not self._buf:
            more = self._read(1 << 16)
            self._eof, self._buf = not more, more
        return self._eof and not self._buf


class _Seekable:
    """A regular file for FFmpeg: read, seek and tell, where a seek FFmpeg tries past the ends (probing an
    empty or cut file) fails quietly instead of PyAV printing the exception."""

    def __init__(self, f: BinaryIO):
        self.f = f

    def read(self, n: int = -1) -> bytes:
        return self.f.read(n)

    def seek(self, offset: int, whence: int = 0) -> int:
        try:
            return self.f.seek(offset, whence)
        except (OSError, ValueError):
            return -1

    def tell(self) -> int:
        return self.f.tell()
