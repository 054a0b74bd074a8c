"""Files through the streaming path (read in blocks, bounded memory) and through continuous batching
from the CLI: the same tokens and text as one file at a time, offline."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import voxtral
import voxtral.api
from voxtral.audio import load_audio
from voxtral.audio_blocks import file_blocks
from voxtral.errors import AudioError, OptionError


@pytest.fixture(scope="module")
def model(tiny_dir):
    return voxtral.load(tiny_dir, device="cpu")


@pytest.fixture(scope="module")
def clip44(clip15, tmp_path_factory):
    """The 15 s clip as 44.1 kHz stereo: read in blocks, it must be resampled on the fly."""
    import librosa

    x = load_audio(clip15)
    y = librosa.resample(x, orig_sr=16000, target_sr=44100, res_type="soxr_hq")
    path = tmp_path_factory.mktemp("c44") / "c44.wav"
    sf.write(path, np.stack([y, 0.5 * y], axis=1), 44100, subtype="FLOAT")
    return path


def test_blocks_equal_the_whole_file(clip44, clip5):
    for path in (clip44, clip5):
        ref = load_audio(path)
        blocks = list(file_blocks(path, block_s=3))
        got = np.concatenate(blocks)
        assert abs(len(got) - len(ref)) <= 1 and max(len(b) for b in blocks) <= 1.05 * 3 * 16000
        n = min(len(got), len(ref))
        assert np.abs(got[:n] - ref[:n]).max() < 1e-6


def test_streaming_transcription_equals_offline(model, clip5, clip44):
    for path in (clip5, clip44):
        offline = model.transcribe(path)
        streamed = model.transcribe(path, streaming=True)
        assert streamed.info["streaming"] and "stream" in streamed.timings
        assert streamed.tokens == offline.tokens and streamed.text == offline.text
        assert streamed.duration == pytest.approx(offline.duration, abs=1e-4)


def test_long_files_stream_by_default(model, clip5, clip15, monkeypatch):
    monkeypatch.setattr(voxtral.api, "LONG_AUDIO_S", 10)
    assert model.transcribe(clip15).info.get("streaming")
    assert not model.transcribe(clip5).info.get("streaming")
    assert not model.transcribe(clip15, confidence=True).info.get("streaming")


def test_streaming_errors(model, tmp_path, clip5):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF garbage")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    for path, match in ((tmp_path / "none.wav", "not found"), (bad, "cannot decode"), (empty, "empty")):
        with pytest.raises(AudioError, match=match):
            model.transcribe(path, streaming=True)
    with pytest.raises(OptionError):
        model.transcribe(clip5, streaming=True, confidence=True)


def voxtral_cli(*args):
    return subprocess.run([sys.executable, "-m", "voxtral", *map(str, args)], capture_output=True, text=True)


def test_cli_batch_size_gives_the_same_outputs(tiny_dir, clip5, clip15, clip44, tmp_path):
    outputs = {}
    for b in (1, 3):
        out = tmp_path / f"b{b}"
        out.mkdir()
        r = voxtral_cli(
            "transcribe", clip5, clip15, clip44, "-m", tiny_dir, "-d", "cpu", "-b", b, "-o", out, "-f", "json"
        )
        assert r.returncode == 0, r.stderr
        outputs[b] = {p.name: json.loads(p.read_text()) for p in out.iterdir()}
    assert sorted(outputs[1]) == [
        "15s_there_are_two_of_them_out_there.json",
        "5s_dont_worry_about_him.json",
        "c44.json",
    ]
    for name, ref in outputs[1].items():
        got = outputs[3][name]
        assert (
            got["tokens"] == ref["tokens"]
            and got["text"] == ref["text"]
            and got["segments"] == ref["segments"]
        )


def test_cli_streaming_flag_and_bad_combinations(tiny_dir, clip5):
    r = voxtral_cli("transcribe", clip5, "-m", tiny_dir, "-d", "cpu", "--streaming")
    assert r.returncode == 0 and "streamed in" in r.stderr and r.stdout.strip()
    for extra in (["-b", "2"], ["--confidence"]):
        r = voxtral_cli("transcribe", clip5, "-m", tiny_dir, "-d", "cpu", "--streaming", *extra)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
