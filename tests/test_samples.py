"""Every sample program runs on a tiny random checkpoint."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from format_checks import check_output

SAMPLES = Path(__file__).parents[1] / "samples"


def run_sample(name, *args):
    return subprocess.run(
        [sys.executable, str(SAMPLES / name), *map(str, args)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(SAMPLES.parent)},
    )  # fmt: skip


@pytest.mark.parametrize("name", ["transcribe_file.py", "compare_cpu_gpu.py"])
def test_sample_runs(name, tiny_dir, clip5):
    r = run_sample(name, clip5, "--model", tiny_dir)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_transcribe_file_names_a_bad_file_without_a_traceback(tiny_dir, tmp_path):
    r = run_sample("transcribe_file.py", tmp_path / "missing.wav", "--model", tiny_dir, "--device", "cpu")
    assert r.returncode == 3 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == f"transcribe_file: {tmp_path / 'missing.wav'}: file not found; check the path"


def test_folder_to_srt(tiny_dir, clip5, tmp_path):
    shutil.copy(clip5, tmp_path / "good.wav")
    (tmp_path / "broken.flac").write_bytes(b"not audio")
    (tmp_path / "kept.wav").write_bytes(b"not audio either")
    (tmp_path / "kept.srt").write_text("mine")
    r = run_sample("folder_to_srt.py", tmp_path, "--model", tiny_dir, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "broken.flac: skipped" in r.stdout and "kept.wav: " in r.stdout and "good.wav: " in r.stdout
    assert check_output("srt", (tmp_path / "good.srt").read_text(encoding="utf-8"), 5.0)
    assert (tmp_path / "kept.srt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".srt") == ["good.srt", "kept.srt"]


def test_live_sessions(tiny_dir, clip5, clip15):
    """Two sources through one StreamServer: each final text equals its offline transcript."""
    import voxtral

    model = voxtral.load(tiny_dir, device="cpu")
    r = run_sample("live_sessions.py", clip5, clip15, "--model", tiny_dir, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    finals = dict(line.split(": ", 1) for line in r.stdout.splitlines() if not line.startswith("["))
    for clip in (clip5, clip15):
        assert finals[str(clip)] == model.transcribe(clip).text
