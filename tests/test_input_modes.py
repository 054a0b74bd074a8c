"""The same audio through every door of the command line gives the same tokens: a file, `transcribe -`
(a pipe), `transcribe /dev/stdin`, a FIFO and `stream --stdin`; empty input is the same error (exit 3)
everywhere; a closed stdin is one line. Inputs are made here with soundfile and PyAV."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from test_audio_formats import encode_av, encode_sf, signal

CLI = [sys.executable, "-m", "voxtral"]


def run(args, stdin: bytes | None = None, close_stdin: bool = False):
    """The CLI with `stdin` as its standard input (None: /dev/null; close_stdin: none at all)."""
    how = {"preexec_fn": lambda: os.close(0)} if close_stdin else {"input": stdin or b""}
    r = subprocess.run([*CLI, *map(str, args)], capture_output=True, timeout=600, **how)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("voxtral: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def tokens(out: str) -> list[int]:
    return [t["id"] for t in json.loads(out)["tokens"]]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """18 s of FLAC (44.1 kHz stereo), of an MP3 written as an encoder writes to a pipe and of one with
    a gapless (LAME) length header; 3 s of an M4A indexed at its end (as recorders leave them)."""
    d = tmp_path_factory.mktemp("inputs")
    x = np.tile(signal(44100, 2, 6.0), (3, 1))  # 18 s
    (d / "a.flac").write_bytes(encode_sf("FLAC", "PCM_16", 44100, x))
    (d / "a.mp3").write_bytes(encode_av("mp3", "libmp3lame", 44100, x, {"write_xing": "0"}))
    (d / "tagged.mp3").write_bytes(encode_av("mp3", "libmp3lame", 44100, x))  # a LAME gapless header
    (d / "memo.m4a").write_bytes(encode_av("ipod", "aac", 44100, x[: 44100 * 3]))  # moov at the end
    return d


@pytest.mark.parametrize("name", ["a.flac", "a.mp3", "tagged.mp3", "memo.m4a"])
def test_a_pipe_gives_the_tokens_of_the_file(tiny_dir, inputs, name):
    path = inputs / name
    common = ["-m", tiny_dir, "-d", "cpu", "-q", "-f", "json"]
    code, from_file, err = run(["transcribe", path, *common])
    assert code == 0, err
    code, from_pipe, err = run(["transcribe", "-", *common], stdin=path.read_bytes())
    assert code == 0, err
    code, from_dev_stdin, err = run(["transcribe", "/dev/stdin", *common], stdin=path.read_bytes())
    assert code == 0, err
    assert json.loads(from_file)["duration"] == json.loads(from_pipe)["duration"] >= 3.0
    assert tokens(from_file) == tokens(from_pipe) == tokens(from_dev_stdin)


def test_standard_input_is_named_as_given(tiny_dir, inputs):
    """`-` is named `-` wherever an input is named (it was /dev/stdin, what it is read as): the summary
    line, the `==> - <==` header, the JSON Lines "input", the failed-inputs line, an error line."""
    flac = inputs / "a.flac"
    common = ["-m", tiny_dir, "-d", "cpu"]
    code, out, err = run(["transcribe", "-", flac, *common, "-f", "json"], stdin=flac.read_bytes())
    assert code == 0, err
    assert [json.loads(line)["input"] for line in out.splitlines()] == ["-", str(flac)]
    assert any(line.startswith("voxtral: -: 18.0 s audio") for line in err.splitlines()), err
    code, out, err = run(["transcribe", "-", flac, *common], stdin=flac.read_bytes())
    assert code == 0 and out.startswith("==> - <==\n") and f"\n==> {flac} <==\n" in out, err
    code, out, err = run(["transcribe", "-", flac, *common], stdin=b"not audio")
    assert code == 3 and one_error_line(err).startswith("voxtral: error: -: cannot decode audio"), err
    assert "voxtral: 1 of 2 inputs failed: -\n" in err and "/dev/stdin" not in err
    code, out, err = run(["transcribe", "-", "-", *common], stdin=flac.read_bytes())
    assert code == 0 and "voxtral: -: named more than once; transcribed once" in err, err
    assert out.startswith("==> - <==\n"), out  # two inputs named: the shape of several, transcribed once
    code, out, err = run(["transcribe", flac, flac, *common, "-f", "json"])
    assert code == 0 and [json.loads(line)["input"] for line in out.splitlines()] == [str(flac)], out


def test_a_caf_pipe_is_read_whole_by_transcribe_and_named_to_stream(tiny_dir):
    """FFmpeg opens a CAF only where it can seek: `transcribe -` (which holds a pipe's bytes first) gives
    the file's tokens; `stream --stdin` (decoding as bytes arrive) says it is a CAF and how to convert it
    on the way (it said "for headerless PCM pass --format"), exit 3."""
    caf = encode_sf("CAF", "PCM_16", 16000, signal(16000, 1, 3.0))
    common = ["-m", tiny_dir, "-d", "cpu", "-q", "-f", "json"]
    code, out, err = run(["transcribe", "-", *common], stdin=caf)
    assert code == 0 and abs(json.loads(out)["duration"] - 3.0) < 0.01, err
    code, out, err = run(["stream", "--stdin", "-m", tiny_dir, "-d", "cpu", "-q"], stdin=caf)
    assert code == 3 and out == ""
    line = one_error_line(err)
    assert "a CAF file cannot be read from a pipe" in line and "ffmpeg -i IN.caf -f wav -" in line, line


def test_a_fifo_gives_the_tokens_of_the_file(tiny_dir, inputs, tmp_path):
    fifo = tmp_path / "audio.flac"
    os.mkfifo(fifo)
    data = (inputs / "a.flac").read_bytes()

    def write():
        with open(fifo, "wb") as f:
            f.write(data)

    writer = threading.Thread(target=write)
    writer.start()
    common = ["-m", tiny_dir, "-d", "cpu", "-q", "-f", "json"]
    code, from_fifo, err = run(["transcribe", fifo, *common])
    writer.join()
    assert code == 0, err
    assert tokens(from_fifo) == tokens(run(["transcribe", inputs / "a.flac", *common])[1])


def test_stream_stdin_of_an_mp3_prints_the_offline_text(tiny_dir, inputs):
    path = inputs / "a.mp3"
    code, offline, err = run(["transcribe", path, "-m", tiny_dir, "-d", "cpu", "-q", "-f", "json"])
    assert code == 0, err
    code, live, err = run(["stream", "--stdin", "-m", tiny_dir, "-d", "cpu", "-q"], stdin=path.read_bytes())
    assert code == 0, err
    assert live.strip() == json.loads(offline)["text"]  # txt would break the lines at segments


@pytest.mark.parametrize("suffix, fmt, codec", [("m4a", "ipod", "aac"), ("webm", "webm", "libopus")])
def test_phone_and_browser_recordings_are_accepted(tiny_dir, tmp_path, suffix, fmt, codec):
    rate = 48000 if codec == "libopus" else 44100
    path = tmp_path / f"memo.{suffix}"
    path.write_bytes(encode_av(fmt, codec, rate, signal(rate, 1, 2.0)))
    code, out, err = run(["transcribe", tmp_path, "-m", tiny_dir, "-d", "cpu", "-q", "-f", "json"])
    assert code == 0, err
    assert abs(json.loads(out)["duration"] - 2.0) < 0.1  # found in the directory and read whole


EMPTY = "the audio is empty (0 samples); pass a recording with sound in it"


@pytest.mark.parametrize(
    "args, stdin",
    [
        (["transcribe", "{empty}"], None),
        (["transcribe", "-"], "wav"),
        (["stream", "--stdin"], "wav"),
        (["stream", "--stdin"], b""),
        (["stream", "--stdin", "--format", "s16le", "--rate", "16000"], b""),
        (["transcribe", "-"], b""),
    ],
)
def test_empty_input_is_the_same_error_in_every_mode(tiny_dir, tmp_path, args, stdin):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(encode_sf("WAV", "PCM_16", 16000, np.zeros((0, 1))))
    args = [a.format(empty=empty) for a in args]
    code, out, err = run(
        [*args, "-m", tiny_dir, "-d", "cpu", "-q"], stdin=empty.read_bytes() if stdin == "wav" else stdin
    )
    assert code == 3 and out == ""
    assert one_error_line(err).endswith(EMPTY)


STDIN_FORMS = [["transcribe", "-"], ["transcribe", "/dev/stdin"], ["stream", "--stdin"]]


@pytest.mark.parametrize("args", STDIN_FORMS)
def test_a_closed_stdin_is_one_line(tiny_dir, args):
    code, out, err = run([*args, "-m", tiny_dir, "-d", "cpu"], close_stdin=True)
    assert code == 2 and out == ""
    assert "standard input, which is closed" in one_error_line(err)


@pytest.mark.parametrize("args", STDIN_FORMS)
def test_a_terminal_on_stdin_is_refused_not_read(tiny_dir, args):
    import pty

    leader, follower = pty.openpty()
    try:
        cmd = [*CLI, *args, "-m", str(tiny_dir), "-d", "cpu"]
        r = subprocess.run(cmd, stdin=follower, capture_output=True, timeout=60)
    finally:
        os.close(leader)
        os.close(follower)
    assert r.returncode == 2 and "standard input, which is a terminal" in one_error_line(r.stderr.decode())


@pytest.mark.parametrize("suffix", ["mp3", "flac", "m4a", "wav", "ogg"])
def test_a_zero_byte_file_is_empty_audio_in_one_line(tiny_dir, tmp_path, suffix):
    path = tmp_path / f"e.{suffix}"
    path.write_bytes(b"")
    code, out, err = run(["transcribe", path, "-m", tiny_dir, "-d", "cpu", "-q"])
    assert code == 3 and out == "" and err.strip().splitlines() == [f"voxtral: error: {path}: {EMPTY}"]


def test_float_pcm_of_the_wrong_byte_order_is_one_line(tiny_dir):
    data = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype("<f4").tobytes()
    code, out, err = run(
        ["stream", "--stdin", "--format", "f32be", "--rate", 16000, "-m", tiny_dir, "-q"], stdin=data
    )
    assert code == 3 and len(err.strip().splitlines()) == 1 and "non-finite" in one_error_line(err)
