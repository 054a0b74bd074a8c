"""samples/stream_stdin.py runs on a tiny random checkpoint, with a WAV and with raw PCM on stdin."""

import os
import subprocess
import sys
from pathlib import Path

import soundfile as sf

import voxtral

SAMPLE = Path(__file__).parents[1] / "samples" / "stream_stdin.py"
ENV = {**os.environ, "PYTHONPATH": str(SAMPLE.parents[1])}


def run_sample(stdin: bytes, *args):
    return subprocess.run(
        [sys.executable, str(SAMPLE), *map(str, args)],
        input=stdin, capture_output=True, timeout=300, env=ENV,
    )  # fmt: skip


def test_stream_stdin_sample(tiny_dir, clip5):
    expected = voxtral.load(tiny_dir, device="cpu").transcribe(clip5).text
    wav = run_sample(clip5.read_bytes(), "--model", tiny_dir, "--device", "cpu")
    assert wav.returncode == 0, wav.stderr.decode()
    text, summary = wav.stdout.decode().rstrip("\n").rsplit("\n", 1)
    assert text.strip() == expected and "5.0 s of audio" in summary
    pcm = sf.read(clip5, dtype="int16")[0].tobytes()
    raw = run_sample(pcm, "--model", tiny_dir, "--device", "cpu", "--format", "s16le", "--rate", 16000)
    assert raw.returncode == 0, raw.stderr.decode()
    assert raw.stdout.decode().rsplit("\n", 2)[0].strip() == expected
