"""The audio reader across containers × codecs × rates × channels (SPEC §2.1): a file on disk, the same
bytes on a live pipe (as `stream --stdin` reads them) and on a FIFO (as `transcribe` reads any pipe) give
the same samples, as long as the audio really is: lengths come from decoding, never from a header's claim.

Every input is made here, at test time, with the libraries (soundfile, PyAV); nothing large is committed.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import threading

import av
import numpy as np
import pytest
import soundfile as sf
import soxr
from test_stream_audio import Pipe

from voxtral.audio import load_audio
from voxtral.audio_blocks import RawFormat, file_blocks, header_seconds, read_stream
from voxtral.errors import AudioError

SECONDS = 0.6


def signal(rate: int, channels: int, seconds: float = SECONDS) -> np.ndarray:
    """[S, C] float32: a different chirp per channel plus a little noise, within ±0.6."""
    t = np.arange(int(rate * seconds)) / rate
    rng = np.random.default_rng(rate + channels)
    x = [0.4 * np.sin(2 * np.pi * (200 + 150 * c) * t * (1 + t)) for c in range(channels)]
    return (np.stack(x, axis=1) + 0.05 * rng.standard_normal((len(t), channels))).astype(np.float32)


def encode_av(fmt: str, codec: str, rate: int, x: np.ndarray, options: dict | None = None) -> bytes:
    """x [S, C] encoded by FFmpeg (PyAV) into container fmt, as the bytes of a file."""
    layout = {1: "mono", 2: "stereo"}.get(x.shape[1], f"{x.shape[1]}c")
    with tempfile.TemporaryDirectory() as tmp:  # a real file: +faststart rewrites it at the end
        path = os.path.join(tmp, "out")
        with av.open(path, "w", format=fmt, options=options or {}) as container:
            stream = container.add_stream(codec, rate=rate)
            stream.layout = layout
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.T), format="fltp", layout=layout)
            frame.sample_rate = rate
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)
        return open(path, "rb").read()


def encode_sf(fmt: str, subtype: str, rate: int, x: np.ndarray) -> bytes:
    out = io.BytesIO()
    sf.write(out, x, rate, format=fmt, subtype=subtype)
    return out.getvalue()


def decoded_frames(data: bytes) -> int:
    """Samples per channel in FFmpeg's full decode of the bytes as a file (PyAV, no resampling)."""
    with av.open(io.BytesIO(data)) as container:
        return sum(frame.samples for frame in container.decode(audio=0))


def via_fifo(path) -> np.ndarray:
    """file_blocks of a FIFO a writer thread fills with the file's bytes."""
    data = open(path, "rb").read()
    fifo = f"{path}.fifo"
    os.mkfifo(fifo)

    def write():
        try:
            with open(fifo, "wb") as f:
                f.write(data)
        except BrokenPipeError:  # the reader stopped early (a test of a failing read)
            pass

    writer = threading.Thread(target=write)
    writer.start()
    try:
        return np.concatenate(list(file_blocks(fifo)))
    finally:
        writer.join()


def check_modes(tmp_path, name: str, data: bytes, rate: int, expected_frames: int, fifo: bool = False):
    """File, pipe (live blocks) and FIFO give identical samples, of the expected length (± 1 sample at
    16 kHz after resampling). Returns the file's samples."""
    path = tmp_path / name
    path.write_bytes(data)
    from_file = load_audio(path)
    from_pipe = np.concatenate(list(read_stream(io.BufferedReader(Pipe(data)))))
    assert abs(len(from_file) - expected_frames * 16000 / rate) <= 1, (len(from_file), expected_frames)
    np.testing.assert_array_equal(from_pipe, from_file)
    if fifo:
        np.testing.assert_array_equal(via_fifo(path), from_file)
    return from_file


def reference(x_int_or_float: np.ndarray, rate: int) -> np.ndarray:
    """An independent path: channels averaged in float64, one-shot soxr HQ to 16 kHz."""
    mono = np.asarray(x_int_or_float, np.float64).mean(axis=1).astype(np.float32)
    return mono if rate == 16000 else soxr.resample(mono, rate, 16000, "HQ")


WAV_SUBTYPES = ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"]
RATES_CHANNELS = [(8000, 1), (16000, 2), (44100, 6), (96000, 8)]


@pytest.mark.parametrize("subtype", WAV_SUBTYPES)
@pytest.mark.parametrize("rate, channels", RATES_CHANNELS)
def test_wav_every_sample_format_rate_and_channel_count(tmp_path, subtype, rate, channels):
    x = signal(rate, channels)
    data = encode_sf("WAV", subtype, rate, x)
    got = check_modes(tmp_path, "a.wav", data, rate, len(x), fifo=(rate, subtype) == (16000, "PCM_16"))
    want = reference(sf.read(io.BytesIO(data), dtype="float64", always_2d=True)[0], rate)
    n = min(len(got), len(want))
    np.testing.assert_allclose(got[:n], want[:n], atol=2e-6)  # streaming vs one-shot resampling


@pytest.mark.parametrize(
    "fmt, subtype, suffix",
    [("RF64", "PCM_16", "wav"), ("W64", "PCM_24", "w64"), ("AIFF", "PCM_16", "aiff"), ("AU", "ULAW", "au")],
)
def test_other_uncompressed_containers(tmp_path, fmt, subtype, suffix):
    x = signal(22050, 2)
    check_modes(tmp_path, f"a.{suffix}", encode_sf(fmt, subtype, 22050, x), 22050, len(x))


def test_wav_with_a_list_chunk_and_an_unknown_data_size(tmp_path):
    """What recorders (LIST/INFO before fmt) and writers that cannot seek back (0xFFFFFFFF) leave."""
    x = signal(16000, 1)
    data = encode_sf("WAV", "PCM_16", 16000, x)
    data = data[:12] + b"LIST\x05\x00\x00\x00abcde\x00" + data[12:]  # an odd-sized chunk, padded
    data = data[:4] + b"\xff\xff\xff\xff" + data[8:]
    at = data.index(b"data")
    data = data[: at + 4] + b"\xff\xff\xff\xff" + data[at + 8 :]
    check_modes(tmp_path, "a.wav", data, 16000, len(x))


@pytest.mark.parametrize("rate, channels", [(8000, 1), (22050, 2), (48000, 1), (96000, 2)])
def test_flac(tmp_path, rate, channels):
    x = signal(rate, channels)
    data = encode_sf("FLAC", "PCM_16", rate, x)
    got = check_modes(tmp_path, "a.flac", data, rate, len(x), fifo=rate == 8000)
    ints = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)[0] / 2**15
    n = min(len(got), len(reference(ints, rate)))
    np.testing.assert_allclose(got[:n], reference(ints, rate)[:n], atol=2e-6)


def test_flac_of_unknown_length(tmp_path):
    """FLAC written to a pipe has total_samples = 0 in STREAMINFO (input-03): decoded to its end."""
    x = signal(22050, 1)
    data = bytearray(encode_sf("FLAC", "PCM_16", 22050, x))
    assert data[:4] == b"fLaC"
    data[21] &= 0xF0  # the 36-bit total_samples field: the low 4 bits of byte 21, bytes 22 … 25
    data[22:26] = bytes(4)
    check_modes(tmp_path, "piped.flac", bytes(data), 22050, len(x))


@pytest.mark.parametrize(
    "fmt, codec, suffix, rate, channels",
    [
        ("ogg", "libopus", "opus", 48000, 1),
        ("webm", "libopus", "webm", 48000, 2),
        ("ipod", "aac", "m4a", 44100, 2),  # moov at the start (+faststart), so a pipe can read it
        ("mp4", "aac", "mp4", 16000, 1),
        ("adts", "aac", "aac", 22050, 1),
        ("mp3", "libmp3lame", "mp3", 8000, 1),  # no Xing header here: see the two MP3 tests below
    ],
)
def test_compressed_containers(tmp_path, fmt, codec, suffix, rate, channels):
    x = signal(rate, channels)
    options = {
        "ipod": {"movflags": "+faststart"},
        "mp4": {"movflags": "+faststart"},
        "mp3": {"write_xing": "0"},
    }
    data = encode_av(fmt, codec, rate, x, options.get(fmt))
    got = check_modes(tmp_path, f"a.{suffix}", data, rate, decoded_frames(data), fifo=suffix == "webm")
    assert abs(len(got) - len(x) * 16000 / rate) < 0.2 * 16000  # the whole signal, give or take codec delay


def test_an_mp4_indexed_at_its_end(tmp_path):
    """A file or an offline pipe (buffered first) reads it; a live stream cannot, and says what to do."""
    data = encode_av("ipod", "aac", 16000, signal(16000, 1))
    (tmp_path / "a.m4a").write_bytes(data)
    from_file = load_audio(tmp_path / "a.m4a")
    np.testing.assert_array_equal(via_fifo(tmp_path / "a.m4a"), from_file)
    with pytest.raises(AudioError, match=r"moov\) at the end cannot be read from a pipe: pass the file"):
        list(read_stream(io.BufferedReader(Pipe(data)), name="a.m4a"))


def test_ogg_vorbis(tmp_path):
    x = signal(44100, 2)
    data = encode_sf("OGG", "VORBIS", 44100, x)
    check_modes(tmp_path, "a.ogg", data, 44100, decoded_frames(data))


def test_mp3_without_a_length_header_is_read_to_its_end(tmp_path):
    """A VBR MP3 with no Xing/Info header (what an encoder writes to a pipe): 3 s of noise, 20 s of
    silence, then a tone; a reader trusting the first frame's bitrate would stop early (input-01, rel-54)."""
    rate = 22050
    loud = signal(rate, 1, 3.0)
    x = np.concatenate([loud, np.zeros((20 * rate, 1), np.float32), signal(rate, 1, 2.0)])
    data = encode_av("mp3", "libmp3lame", rate, x, {"write_xing": "0"})
    assert b"Xing" not in data[:4096] and b"Info" not in data[:4096]
    got = check_modes(tmp_path, "vbr.mp3", data, rate, decoded_frames(data))
    assert len(got) >= len(x) * 16000 / rate  # every sample, plus the encoder's padding
    assert np.abs(got[-16000:]).max() > 0.1  # the tone at the end is there


def test_mp3_with_a_length_header_on_a_pipe(tmp_path):
    """With a LAME/Info header the file's decode drops the encoder's padding exactly. An offline pipe
    (`transcribe -`, a FIFO) is buffered whole first, so it does the same; a live stream cannot check the
    header against the file size and keeps the last frame's padding (< 1 frame, as FFmpeg on a pipe)."""
    rate = 44100
    x = signal(rate, 2)
    data = encode_av("mp3", "libmp3lame", rate, x)
    (tmp_path / "a.mp3").write_bytes(data)
    from_file = load_audio(tmp_path / "a.mp3")
    assert abs(len(from_file) - len(x) * 16000 / rate) <= 1  # gapless: exactly the encoded samples
    np.testing.assert_array_equal(via_fifo(tmp_path / "a.mp3"), from_file)
    live = np.concatenate(list(read_stream(io.BufferedReader(Pipe(data)))))
    assert 0 <= len(live) - len(from_file) <= 1152 * 16000 // rate + 1
    n = len(from_file) - 800  # the resampler's last 50 ms see the padding
    np.testing.assert_array_equal(live[:n], from_file[:n])


def test_a_video_file_without_sound_says_so(tmp_path):
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 16
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    (tmp_path / "silent.mp4").write_bytes(out.getvalue())
    with pytest.raises(AudioError, match="silent.mp4: has no audio stream"):
        load_audio(tmp_path / "silent.mp4")


@pytest.mark.parametrize("kind", ["header-only WAV", "0 bytes", "header-only FLAC"])
def test_empty_audio_is_the_same_error_everywhere(tmp_path, kind):
    data = {
        "header-only WAV": encode_sf("WAV", "PCM_16", 16000, np.zeros((0, 1))),
        "0 bytes": b"",
        "header-only FLAC": encode_sf("FLAC", "PCM_16", 16000, np.zeros((0, 1))),
    }[kind]
    (tmp_path / "empty.wav").write_bytes(data)
    errors = []
    for blocks in (file_blocks(tmp_path / "empty.wav"), read_stream(io.BufferedReader(Pipe(data)), name="x")):
        with pytest.raises(AudioError) as e:
            list(blocks)
        errors.append(str(e.value).split(": ", 1)[1])
    assert errors[0] == errors[1] == "the audio is empty (0 samples); pass a recording with sound in it"


def test_a_damaged_compressed_stream_fails_after_the_good_part(tmp_path):
    x = signal(48000, 1, 2.0)
    data = encode_av("ogg", "libopus", 48000, x)
    cut = data[: len(data) // 2] + b"\x00" * 64 + data[len(data) // 2 :]
    (tmp_path / "bad.opus").write_bytes(cut)
    n = 0
    try:
        for block in file_blocks(tmp_path / "bad.opus"):
            n += len(block)
    except AudioError as e:
        assert "bad.opus" in str(e)
    assert n > 0  # what came before the damage was decoded


RAW_DTYPES = {
    "u8": "u1", "s8": "i1", "s16le": "<i2", "s16be": ">i2", "s24le": None, "s24be": None, "s32le": "<i4",
    "s32be": ">i4", "f32le": "<f4", "f32be": ">f4", "f64le": "<f8", "f64be": ">f8",
}  # fmt: skip


@pytest.mark.parametrize("encoding", list(RAW_DTYPES))
@pytest.mark.parametrize("channels", [1, 3, 8])
def test_headerless_pcm_every_encoding(encoding, channels):
    """`stream --stdin --format … --channels …`: exactly the samples a NumPy decode of the bytes gives."""
    rng = np.random.default_rng(channels)
    frames = 3001
    if encoding.startswith("f"):
        values = rng.uniform(-1, 1, (frames, channels))
        data, want = values.astype(RAW_DTYPES[encoding]).tobytes(), values.astype(RAW_DTYPES[encoding])
    elif encoding.startswith("s24"):
        ints = rng.integers(-(2**23), 2**23, (frames, channels))
        order = "little" if encoding.endswith("le") else "big"
        data = b"".join(int(i).to_bytes(3, order, signed=True) for i in ints.ravel())
        want = ints / 2.0**23
    else:
        info = np.iinfo(RAW_DTYPES[encoding])
        ints = rng.integers(info.min, info.max, (frames, channels), endpoint=True).astype(
            RAW_DTYPES[encoding]
        )
        data = ints.tobytes()
        bits = 8 * ints.dtype.itemsize
        want = (ints - 128.0) / 128.0 if encoding == "u8" else ints / 2.0 ** (bits - 1)
    got = np.concatenate(
        list(read_stream(io.BufferedReader(Pipe(data)), RawFormat(encoding, 16000, channels)))
    )
    np.testing.assert_array_equal(got, np.asarray(want, np.float64).mean(axis=1).astype(np.float32))


@pytest.mark.parametrize("channels", [9, 10, 12, 33, 64])
def test_headerless_pcm_of_many_channels(channels):
    """Frames of 18 … 128 bytes that do not divide FFmpeg's 32 KB reads (once a heap overflow)."""
    x = np.repeat(signal(16000, 1, 1.0), channels, axis=1)
    data = (x * 32767).astype("<i2").tobytes()
    got = np.concatenate(
        list(read_stream(io.BufferedReader(Pipe(data)), RawFormat("s16le", 16000, channels)))
    )
    assert len(got) == 16000


@pytest.mark.parametrize("frame_bytes", [1, 3, 20, 128, 512])
@pytest.mark.parametrize("step", [1, 7, 4093, 100000])
def test_the_stream_reader_never_hands_out_more_than_asked(frame_bytes, step):
    from voxtral.audio_blocks import _Reader

    data = bytes(range(256)) * 400 + b"\x01\x02"
    reader, got = _Reader(io.BufferedReader(Pipe(data, step)), frame_bytes), b""
    for i in range(10**6):
        ask = (32768, 1000, 5)[i % 3]  # FFmpeg's reads, and short ones (a buffer's remaining space)
        chunk = reader.read(ask)
        assert len(chunk) <= ask
        if not chunk:
            break
        got += chunk
    whole = len(data) // frame_bytes * frame_bytes
    assert got == data[:whole] and reader.stray == data[whole:]


def test_a_wav_whose_sizes_say_zero_is_read_to_its_end(tmp_path):
    """What a writer that could not seek back may leave: RIFF and data sizes 0. File = pipe = 0.6 s."""
    x = signal(16000, 1)
    data = bytearray(encode_sf("WAV", "PCM_16", 16000, x))
    data[4:8] = bytes(4)
    data[40:44] = bytes(4)
    check_modes(tmp_path, "sizes0.wav", bytes(data), 16000, len(x), fifo=True)


def test_a_video_file_gives_its_first_audio_track(tmp_path):
    path = tmp_path / "two.mkv"
    with av.open(str(path), "w", format="matroska") as container:
        streams = [container.add_stream("aac", rate=rate) for rate in (22050, 48000)]
        for stream in streams:
            stream.layout = "mono"
        for stream, seconds in zip(streams, (1.0, 2.0), strict=True):
            frame = av.AudioFrame.from_ndarray(
                signal(stream.rate, 1, seconds).T.copy(), format="fltp", layout="mono"
            )
            frame.sample_rate = stream.rate
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)
    assert abs(len(load_audio(path)) - 16000) < 800  # track 0: 1.0 s and AAC's priming (track 1: 2.0 s)


def test_concatenated_mp3s_are_read_whole(tmp_path, caplog):
    """`cat a.mp3 b.mp3`: the second file's header frame is a packet the codec rejects; FFmpeg skips it,
    so do we (with a warning), and both halves are there."""
    x = signal(44100, 1, 2.0)
    one = encode_av("mp3", "libmp3lame", 44100, x)
    (tmp_path / "two.mp3").write_bytes(one + one)
    got = load_audio(tmp_path / "two.mp3")
    assert abs(len(got) - 2 * 32000) < 0.1 * 16000  # plus the first half's encoder padding


LATIN1_TITLE = b"LIST\x16\x00\x00\x00INFOINAM\x0a\x00\x00\x00Caf\xe9 m\xfcsic"  # a LIST/INFO chunk, not UTF-8


def wav_header_edit(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


@pytest.mark.parametrize(
    "name, edit, outcome",
    [
        ("latin1-title", lambda d: d[:12] + LATIN1_TITLE + d[12:], "ok"),  # metadata is not the audio
        ("0-channels", lambda d: wav_header_edit(d, 22, b"\x00\x00"), "error"),
        ("65535-channels", lambda d: wav_header_edit(d, 22, b"\xff\xff"), "error"),
        ("float-16-bit", lambda d: wav_header_edit(d, 20, b"\x03\x00"), "error"),
        ("0-bits", lambda d: wav_header_edit(d, 34, b"\x00\x00"), "error"),
    ],
)  # fmt: skip
def test_odd_wav_headers_decode_or_fail_in_one_line(tmp_path, name, edit, outcome):
    """Headers FFmpeg or PyAV cannot map (found by fuzzing): an AudioError, never another exception."""
    data = edit(encode_sf("WAV", "PCM_16", 16000, signal(16000, 1)))
    path = tmp_path / f"{name}.wav"
    path.write_bytes(data)
    for blocks in (file_blocks(path), read_stream(io.BufferedReader(Pipe(data)), name=name)):
        if outcome == "ok":
            assert abs(len(np.concatenate(list(blocks))) - 9600) <= 1
        else:
            with pytest.raises(AudioError):
                list(blocks)


def test_64_bit_integer_pcm(tmp_path):
    x = signal(16000, 2)
    ints = np.round(x.astype(np.float64) * 2.0**63 * 0.999).astype("<i8")
    header = encode_sf("WAV", "PCM_32", 16000, x)[:44]
    header = wav_header_edit(header, 28, (16000 * 16).to_bytes(4, "little"))  # byte rate
    header = wav_header_edit(header, 32, b"\x10\x00\x40\x00")  # block align 16, 64 bits
    header = wav_header_edit(header, 40, ints.nbytes.to_bytes(4, "little"))
    got = check_modes(tmp_path, "s64.wav", header + ints.tobytes(), 16000, len(x))
    np.testing.assert_allclose(got, (ints / 2.0**63).mean(axis=1), atol=1e-6)


def test_mp3s_of_different_rates_concatenated(tmp_path):
    """Each run at its own rate is converted on its own; all of it is there, in every mode."""
    parts = [(16000, 1.0), (44100, 1.0), (8000, 1.0)]
    data = b"".join(
        encode_av("mp3", "libmp3lame", rate, signal(rate, 1, s), {"write_xing": "0"}) for rate, s in parts
    )
    path = tmp_path / "rates.mp3"
    path.write_bytes(data)
    got = load_audio(path)
    assert abs(len(got) - 3 * 16000) < 0.2 * 16000
    np.testing.assert_array_equal(np.concatenate(list(read_stream(io.BufferedReader(Pipe(data))))), got)


def test_too_short_to_make_one_sample_says_so(tmp_path):
    path = tmp_path / "one.wav"
    path.write_bytes(encode_sf("WAV", "PCM_16", 48000, np.full((1, 1), 0.5)))
    with pytest.raises(AudioError, match=r"too short \(1 sample at 48000 Hz make none at 16000 Hz\)"):
        load_audio(path)


def test_a_pipe_that_the_temporary_directory_cannot_hold_is_an_output_error(tmp_path, clip5, monkeypatch):
    """A full $TMPDIR while a pipe is buffered: an OutputError naming the directory and TMPDIR, never
    "convert the audio" (../shared/cases-style new-user finding); a directory that cannot hold a file at
    all, the same."""
    import errno
    import shutil as sh

    from voxtral import audio_blocks
    from voxtral.errors import OutputError

    class Full(io.BytesIO):
        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

    path = tmp_path / "a.wav"
    sh.copy(clip5, path)
    monkeypatch.setattr(audio_blocks, "_spool_file", Full)
    with pytest.raises(OutputError, match="cannot hold its bytes in .*No space left on device.*TMPDIR"):
        via_fifo(path)
    monkeypatch.undo()
    monkeypatch.setattr(audio_blocks, "SPOOL_DIR", str(tmp_path / "missing"))
    sh.copy(clip5, tmp_path / "b.wav")
    with pytest.raises(OutputError, match="cannot make a temporary file in .*missing.*TMPDIR"):
        via_fifo(tmp_path / "b.wav")


def test_header_lengths_are_what_the_container_claims(tmp_path):
    """header_seconds (progress and KV sizing only) reads a header without decoding or probing, and gives
    what FFmpeg's default open claims: WAV, a WAV whose sizes say 0, MP4, FLAC, MP3, Ogg; None for a
    missing file."""
    x = signal(16000, 1)
    data = bytearray(encode_sf("WAV", "PCM_16", 16000, x))
    data[4:8] = data[40:44] = bytes(4)
    files = {
        "a.wav": encode_sf("WAV", "PCM_16", 16000, x),
        "zero.wav": bytes(data),
        "a.m4a": encode_av("ipod", "aac", 16000, x),
        "a.flac": encode_sf("FLAC", "PCM_16", 16000, x),
        "a.mp3": encode_av("mp3", "libmp3lame", 16000, x),
        "a.ogg": encode_sf("OGG", "VORBIS", 16000, x),
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        with av.open(str(tmp_path / name)) as c:
            claim = None if c.duration is None else c.duration / 1e6
        assert header_seconds(tmp_path / name) == claim, name
    assert header_seconds(tmp_path / "a.wav") == len(x) / 16000
    assert header_seconds(tmp_path / "a.m4a") == pytest.approx(SECONDS, abs=0.1)
    assert header_seconds(tmp_path / "missing.wav") is None


def test_wav_files_are_read_in_big_packets_with_the_same_samples(tmp_path):
    """A WAV file is demuxed in WAV_PACKET-byte packets (few GIL hand-overs per file) and gives exactly
    the samples FFmpeg's default 4 KB packets give; other containers keep FFmpeg's defaults."""
    import io

    from voxtral.audio_blocks import WAV_PACKET, _wav_options

    x = signal(16000, 2, seconds=5.0)
    wav = tmp_path / "a.wav"
    wav.write_bytes(encode_sf("WAV", "PCM_24", 16000, x))
    assert _wav_options(io.BytesIO(wav.read_bytes())) == {"max_size": str(WAV_PACKET), "probesize": "32"}
    assert _wav_options(io.BytesIO(encode_sf("FLAC", "PCM_16", 16000, x))) == {}
    assert _wav_options(io.BytesIO(b"RIFF\0\0\0\0AVI LIST")) == {}
    with av.open(str(wav)) as c:  # FFmpeg's defaults
        default = np.concatenate([f.to_ndarray().reshape(-1, 2) for f in c.decode(audio=0)])
    with av.open(str(wav), options=_wav_options(io.BytesIO(wav.read_bytes()))) as c:
        packets = list(c.demux(c.streams.audio[0]))
        big = np.concatenate([f.to_ndarray().reshape(-1, 2) for p in packets for f in p.decode()])
    assert len(packets) <= -(-wav.stat().st_size // WAV_PACKET) + 1
    np.testing.assert_array_equal(big, default)
    live = np.concatenate(list(read_stream(io.BufferedReader(Pipe(wav.read_bytes())))))  # 4 KB packets
    np.testing.assert_array_equal(load_audio(wav), live)


def test_aac_frames_whose_planes_do_not_match_their_layout_are_skipped_not_read(tmp_path, clip5):
    """AAC muxed into a WAV decodes to garbage frames of 19 channels and 34 planes; reading such a frame
    crashed PyAV (a segfault: the whole process, every input of a batch). They count as damaged packets
    now. In a child process, so that a crash fails this test instead of the run."""
    x = sf.read(clip5, dtype="int16")[0][None]  # this speech makes the garbage frames (a chirp did not)
    path = tmp_path / "aac.wav"
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(x, format="s16", layout="mono")
        frame.sample_rate = 16000
        for f in av.AudioResampler(format="fltp", layout="mono", rate=16000).resample(frame):
            for p in stream.encode(f):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    code = (
        "import sys\n"
        "from voxtral.audio_blocks import file_blocks\n"
        "from voxtral.errors import AudioError\n"
        "try:\n"
        "    print(sum(len(b) for b in file_blocks(sys.argv[1])))\n"
        "except AudioError as e:\n"
        "    print('AudioError', e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]  # before: a segfault, or NaN samples from the garbage
    # FFmpeg's AAC encoder here makes garbage frames of this clip; another FFmpeg may encode it cleanly
    assert "damaged packet" in r.stderr or int(r.stdout) >= len(x[0]), (r.stdout, r.stderr[-2000:])


class _Frame:  # what _raw_samples reads of a PyAV AudioFrame (planes through _plane)
    def __init__(self, channels, planar, planes, samples=4, name="flt", size=None):
        nbytes = {"flt": 4, "s16": 2, "x24": 3}[name]
        size = samples * nbytes * (1 if planar else channels) if size is None else size
        self.layout = type("L", (), {"channels": [None] * channels})
        self.format = type("F", (), {"is_planar": planar, "bytes": nbytes, "name": name + "p" * planar})
        dtype = np.float32 if nbytes == 4 else np.int16
        self.planes = [np.arange(size // nbytes, dtype=dtype) for _ in range(planes)]
        self.samples = samples


class _Plane(np.ndarray):  # an array with the buffer_size a PyAV plane has
    @property
    def buffer_size(self):
        return self.nbytes


def _fake_plane(frame, index):
    if index >= len(frame.planes):
        raise ValueError(f"plane index {index} out of range for {len(frame.planes)} planes")
    return frame.planes[index].view(_Plane)


def test_a_frame_is_read_only_when_its_channels_planes_hold_its_samples(monkeypatch):
    import voxtral.audio_blocks as ab

    monkeypatch.setattr(ab, "_plane", _fake_plane)
    assert ab._raw_samples(_Frame(2, True, 2)).shape == (4, 2)
    assert ab._raw_samples(_Frame(3, False, 1)).shape == (4, 3)
    assert ab._raw_samples(_Frame(12, True, 38)).shape == (4, 12)  # planes past the channels: not read
    assert ab._raw_samples(_Frame(19, True, 12)) is None  # fewer planes than channels
    assert ab._raw_samples(_Frame(0, True, 0)) is None
    assert ab._raw_samples(_Frame(2, True, 2, size=8)) is None  # planes shorter than their samples
    assert ab._raw_samples(_Frame(6, False, 1, size=16)) is None
    assert ab._raw_samples(_Frame(1, False, 1, name="x24", size=12)) is None  # no NumPy type for it


def test_more_than_eight_planar_channels_are_read_without_a_crash(tmp_path):
    """A 12-channel Vorbis file decodes to planar frames whose PyAV plane list can hold 38 entries;
    reading them all (PyAV's to_ndarray) crashed the process. In a child process, so that a crash fails
    this test instead of the run; file = pipe = FIFO."""
    x = (0.1 * np.random.default_rng(12).standard_normal((16000, 12))).astype(np.float32)
    path = tmp_path / "twelve.ogg"
    sf.write(path, x, 16000, format="OGG", subtype="VORBIS")
    code = (
        "import sys, io, numpy as np\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from test_audio_formats import check_modes\n"
        "from pathlib import Path\n"
        "p = Path(sys.argv[1])\n"
        "y = check_modes(p.parent, 'copy.ogg', p.read_bytes(), 16000, 16000, fifo=True)\n"
        "print(len(y), bool(np.isfinite(y).all()))\n"
    )
    tests = os.path.dirname(__file__)
    cmd = [sys.executable, "-c", code, str(path), tests]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["16000", "True"], (r.stdout, r.stderr[-2000:])


def test_an_rf64_wav_written_to_a_pipe_is_read_to_its_end(tmp_path):
    """FFmpeg writing RF64 to a pipe (`-rf64 always -f wav -`) cannot seek back: its ds64 chunk says 0
    bytes of data. File = pipe = FIFO = every sample (FFmpeg alone reads none)."""

    class Sink(io.RawIOBase):  # not seekable, as a pipe
        def __init__(self):
            self.data = bytearray()

        def writable(self):
            return True

        def write(self, b):
            self.data += b
            return len(b)

    x = signal(16000, 1)
    sink = Sink()
    with av.open(sink, "w", format="wav", options={"rf64": "always"}) as out:
        stream = out.add_stream("pcm_s16le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray((x.T * 32767).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = 16000
        for p in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(p)
    data = bytes(sink.data)
    assert data[:4] == b"RF64" and data[28:36] == bytes(8)  # ds64: 0 bytes of data
    with av.open(io.BytesIO(data)) as c:
        assert sum(f.samples for f in c.decode(audio=0)) == 0  # what FFmpeg's defaults give
    check_modes(tmp_path, "rf64.wav", data, 16000, len(x), fifo=True)


def test_standard_input_is_named_dash_in_the_decoders_lines():
    """`-` is read as /dev/stdin; the decoder's errors and warnings (skipped damaged packets) name it `-`,
    as every other line does (one warning said /dev/stdin, new-user pass)."""
    code = (
        "from voxtral.audio_blocks import file_blocks\n"
        "from voxtral.errors import AudioError\n"
        "try:\n"
        "    list(file_blocks('/dev/stdin'))\n"
        "except AudioError as e:\n"
        "    print(e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], input=b"not audio at all\n" * 100, capture_output=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0 and r.stdout.decode().startswith("-: cannot decode audio"), (r.stdout, r.stderr)
