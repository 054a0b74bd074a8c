"""Streaming audio input: MelStream = log_mel for any chunking; WAV / raw PCM byte streams → samples,
and bad streams → AudioError after every good sample."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from voxtral.audio import MelStream, load_audio, log_mel
from voxtral.audio_blocks import RawFormat, read_stream
from voxtral.config import AudioConfig
from voxtral.errors import AudioError, OptionError

CFG = AudioConfig(16000, 12.5, 128, 160, 400, 1.5, 4)


class Pipe(io.RawIOBase):
    """A non-seekable byte stream that hands out at most `step` bytes per read, like a pipe."""

    def __init__(self, data: bytes, step: int = 777):
        self.data, self.at, self.step = data, 0, step

    def readable(self):
        return True

    def readinto(self, buf):
        n = min(len(buf), self.step, len(self.data) - self.at)
        buf[:n] = self.data[self.at : self.at + n]
        self.at += n
        return n


def mel_in_chunks(x: np.ndarray, sizes) -> np.ndarray:
    stream, out, start = MelStream(CFG), [], 0
    for n in sizes:
        out.append(stream.feed(x[start : start + n]))
        start += n
    out.append(stream.finish())
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("n", [0, 150, 200, 201, 359, 360, 361, 1000, 16000])
@pytest.mark.parametrize("chunk", [1, 7, 160, 161, 100000])
def test_mel_stream_equals_log_mel(n, chunk):
    x = (np.random.default_rng(n).standard_normal(n) * 0.1).astype(np.float32)
    got = mel_in_chunks(x, [chunk] * (n // chunk + 1))
    np.testing.assert_array_equal(got, log_mel(x, CFG))


def test_mel_stream_holds_back_only_the_look_ahead():
    """A frame comes out once the 200 samples after its centre are in; memory stays under a frame hop."""
    stream = MelStream(CFG)
    assert stream.feed(np.zeros(200, np.float32)).shape[1] == 0
    assert stream.feed(np.zeros(1, np.float32)).shape[1] == 1  # frame 0 needs samples 0 … 200
    assert stream.feed(np.zeros(159, np.float32)).shape[1] == 1  # frame 1 needs … 360
    assert stream.feed(np.zeros(160_000 - 360, np.float32)).shape[1] == 999 - 2
    assert len(stream._padded) < CFG.window_size + CFG.hop_length
    assert stream.finish().shape[1] == 1  # frame 999 needs 40 samples past the end: the reflection
    with pytest.raises(AudioError, match="after finish"):
        stream.feed(np.zeros(1, np.float32))


def wav_bytes(x, rate, subtype):
    out = io.BytesIO()
    sf.write(out, x, rate, format="WAV", subtype=subtype)
    return out.getvalue()


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_wav_stream_equals_load_audio(subtype, tmp_path):
    x = (np.random.default_rng(0).standard_normal((5000, 2)) * 0.2).clip(-1, 1)
    data = wav_bytes(x, 16000, subtype)
    (tmp_path / "x.wav").write_bytes(data)
    got = np.concatenate(list(read_stream(io.BufferedReader(Pipe(data)))))
    np.testing.assert_array_equal(got, load_audio(tmp_path / "x.wav"))  # FFmpeg on the pipe = libsndfile


def test_wav_stream_resamples_and_skips_extra_chunks(tmp_path):
    x = np.sin(np.arange(44100) * 2 * np.pi * 440 / 44100) * 0.5
    data = wav_bytes(x, 44100, "PCM_16")
    data = data[:12] + b"LIST\x05\x00\x00\x00abcde\x00" + data[12:]  # an odd-sized chunk before fmt
    data = data[:4] + (len(data) - 8).to_bytes(4, "little") + data[8:]
    (tmp_path / "x.wav").write_bytes(wav_bytes(x, 44100, "PCM_16"))
    got = np.concatenate(list(read_stream(io.BufferedReader(Pipe(data)))))
    want = load_audio(tmp_path / "x.wav")
    assert abs(len(got) - len(want)) <= 1
    n = min(len(got), len(want))
    assert np.abs(got[:n] - want[:n]).max() < 1e-3


def test_wav_of_unknown_length_reads_to_the_end():
    """A writer that cannot seek back (ffmpeg to a pipe) leaves 0xFFFFFFFF as the data size."""
    data = bytearray(wav_bytes(np.zeros(1000), 16000, "PCM_16"))
    data[40:44] = b"\xff\xff\xff\xff"
    assert sum(len(b) for b in read_stream(io.BufferedReader(Pipe(bytes(data))))) == 1000


@pytest.mark.parametrize(
    "encoding, dtype, scale",
    [("s16le", "<i2", 2**15), ("s16be", ">i2", 2**15), ("s32le", "<i4", 2**31), ("f32le", "<f4", 1)],
)
def test_raw_pcm_stereo(encoding, dtype, scale):
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (3000, 2))
    data = (x * scale).astype(dtype).tobytes()
    got = np.concatenate(list(read_stream(io.BufferedReader(Pipe(data)), RawFormat(encoding, 16000, 2))))
    np.testing.assert_allclose(got, x.mean(axis=1), atol=1e-4)


def test_raw_s24_and_u8():
    x = np.array([-1.0, -0.5, 0.0, 0.25, 0.999])
    ints = np.round(x * 2**23).astype("<i4")
    s24 = b"".join(int(i).to_bytes(3, "little", signed=True) for i in ints)
    got = next(read_stream(io.BytesIO(s24), RawFormat("s24le", 16000)))
    np.testing.assert_allclose(got, ints / 2**23, atol=1e-7)
    u8 = bytes([0, 64, 128, 255])
    got = next(read_stream(io.BytesIO(u8), RawFormat("u8", 16000)))
    np.testing.assert_allclose(got, [-1.0, -0.5, 0.0, 127 / 128])


def collect(blocks) -> tuple[int, AudioError | None]:
    """Samples yielded before the error, and the error."""
    n = 0
    try:
        for b in blocks:
            n += len(b)
    except AudioError as e:
        return n, e
    return n, None


def test_a_stream_ending_mid_sample_keeps_the_samples_before(tmp_path):
    data = np.zeros(1000, "<i2").tobytes() + b"\x01"
    n, error = collect(read_stream(io.BufferedReader(Pipe(data)), RawFormat("s16le", 16000)))
    assert n == 1000 and "middle of a sample" in str(error)
    wav = wav_bytes(np.zeros((1000, 2)), 16000, "PCM_16")[:-3]  # data size now overstates the rest
    (tmp_path / "cut.wav").write_bytes(wav)
    n, error = collect(read_stream(io.BufferedReader(Pipe(wav))))
    assert (n, error) == (999, None)  # 3997 bytes: 999 whole frames of 4, as every player reads it
    assert len(load_audio(tmp_path / "cut.wav")) == 999  # the same file on disk


@pytest.mark.parametrize(
    "data, needle",
    [
        (b"RIFF", "cannot decode audio"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00", "cannot decode audio"),
        (b"RIFF\x24\x00\x00\x00WAVE", "cannot decode audio"),
        (b"RIFF\x24\x00\x00\x00WAVEdata\x00\x00\x00\x00", "cannot decode audio"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + bytes(16), "cannot decode audio"),
        (b"", "the audio is empty"),
        (b"not audio at all, just text", "--format"),
    ],
)
def test_bad_headers_are_clear_errors(data, needle):
    n, error = collect(read_stream(io.BufferedReader(Pipe(data))))
    assert n == 0 and isinstance(error, AudioError) and needle in str(error)


def test_a_flac_stream_equals_the_file(tmp_path):
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 4000)
    out = io.BytesIO()
    sf.write(out, x, 22050, format="FLAC")
    (tmp_path / "x.flac").write_bytes(out.getvalue())
    got = np.concatenate(list(read_stream(io.BufferedReader(Pipe(out.getvalue())))))
    np.testing.assert_array_equal(got, load_audio(tmp_path / "x.flac"))


@pytest.mark.parametrize(
    "args, needle",
    [(("s17le", 16000), "not one of"), (("s16le", 0), "--rate"), (("s16le", 16000, 0), "--channels")],
)
def test_bad_raw_formats(args, needle):
    with pytest.raises(OptionError, match=needle):
        RawFormat(*args)


@pytest.mark.parametrize(
    "samples, encoding", [([0.0, np.inf], "f32le"), ([np.nan, 0.0], "f32le"), ([1e300, 0.0], "f64le")]
)
def test_non_finite_float_pcm_is_an_error_without_warnings(samples, encoding):
    import warnings

    data = np.array(samples, {"f32le": "<f4", "f64le": "<f8"}[encoding]).tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning from a cast would be an exception here
        n, error = collect(read_stream(io.BytesIO(data), RawFormat(encoding, 16000)))
    assert "non-finite" in str(error)


class _InterruptedPipe(io.RawIOBase):
    """A pipe whose third read is hit by Ctrl-C: the KeyboardInterrupt comes from inside FFmpeg's read."""

    def __init__(self, data: bytes):
        self.data, self.reads = data, 0

    def readable(self):
        return True

    def read1(self, n=-1):
        self.reads += 1
        if self.reads == 3:
            raise KeyboardInterrupt
        chunk, self.data = self.data[:4096], self.data[4096:]
        return chunk


@pytest.mark.parametrize("raw", [RawFormat("s16le", 16000, 1), None])  # headerless PCM, and a WAV
def test_ctrl_c_inside_ffmpegs_read_ends_the_stream_and_is_raised(raw, capfd, caplog):
    x = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    if raw is None:
        buf = io.BytesIO()
        sf.write(buf, x, 16000, format="WAV", subtype="PCM_16")
        data = buf.getvalue()
    else:
        data = (x * 32767).astype("<i2").tobytes()
    blocks = []
    with pytest.raises(KeyboardInterrupt):
        for block in read_stream(_InterruptedPipe(data), raw):
            blocks.append(block)
    assert sum(len(b) for b in blocks) <= 8192 // 2  # what came before the signal, nothing after
    assert "Exception ignored" not in capfd.readouterr().err  # not swallowed by FFmpeg's C caller
    assert "damaged" not in caplog.text  # the decoder's flush after the stop is no damaged packet
