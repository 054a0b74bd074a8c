"""The command line as a user runs it (subprocess): output, formats, and one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf


def voxtral(*args, env=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "voxtral", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
    )


def assert_one_line_error(r, *needles):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("voxtral: error:")]
    assert len(errors) == 1, r.stderr
    for n in needles:
        assert n in errors[0], errors[0]


def test_transcribe_prints_text(tiny_dir, clip5):
    r = voxtral("transcribe", clip5, "--model", tiny_dir, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert "ms/step" in r.stderr


def test_json_format(tiny_dir, clip5):
    r = voxtral("transcribe", clip5, "-m", tiny_dir, "-d", "cpu", "-f", "json", "-q")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["text"] and doc["segments"] and doc["timings"]["decode"] > 0
    assert all(0 <= s["start"] <= s["end"] <= doc["duration"] for s in doc["segments"])
    assert r.stderr == ""


def test_output_dir_and_bad_file_among_good(tiny_dir, clip5, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(os.urandom(3000))
    out = tmp_path / "out"
    out.mkdir()
    r = voxtral("transcribe", clip5, bad, tmp_path / "missing.flac", "-m", tiny_dir, "-o", out, "-d", "cpu")
    assert r.returncode == 3
    assert (out / f"{clip5.stem}.txt").read_text().strip()
    assert sorted(p.name for p in out.iterdir()) == [f"{clip5.stem}.txt"]  # nothing half-written
    errs = [line for line in r.stderr.splitlines() if line.startswith("voxtral: error:")]
    assert len(errs) == 2 and "broken.wav" in errs[0] and "missing.flac" in errs[1]


def _write(tmp_path, name, data, rate=16000):
    path = tmp_path / name
    sf.write(path, data, rate)
    return path


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda t: t / "nope.wav", "not found"),
        (lambda t: t, "directory"),
        (lambda t: _write(t, "empty.wav", np.zeros(0, np.float32)), "empty"),
        (lambda t: (t / "text.wav").write_text("hello") and t / "text.wav", "text.wav"),
    ],
    ids=["missing", "directory", "empty", "corrupt"],
)
def test_bad_audio(tiny_dir, tmp_path, make, needle):
    path = make(tmp_path)
    r = voxtral("transcribe", path, "-m", tiny_dir, "-d", "cpu")
    assert_one_line_error(r, needle)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_non_finite_samples(tiny_dir, tmp_path, bad):
    data = np.zeros(16000, np.float32)
    data[100] = bad
    path = tmp_path / "nonfinite.wav"
    sf.write(path, data, 16000, subtype="FLOAT")
    assert_one_line_error(voxtral("transcribe", path, "-m", tiny_dir, "-d", "cpu"), "nonfinite.wav")


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda d: (d / "params.json").unlink(), "missing params.json"),
        (lambda d: (d / "params.json").write_text("[1, 2"), "params.json"),
        (lambda d: (d / "consolidated.safetensors").write_bytes(b"\x00" * 7), "truncated"),
    ],
    ids=["missing-file", "malformed-params", "truncated-weights"],
)
def test_bad_model_directory(tiny_dir, clip5, tmp_path, damage, needle):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    damage(d)
    assert_one_line_error(voxtral("transcribe", clip5, "-m", d), needle)


def test_unreachable_hub_id_offline(clip5, tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    r = voxtral("transcribe", clip5, "-m", "someone/not-a-cached-model", env=env)
    assert_one_line_error(r, "someone/not-a-cached-model", "offline")


def test_device_cuda_without_gpu_is_one_line(tiny_dir, clip5):
    from voxtral.gpu.device import unavailable_reason

    if unavailable_reason() is None:
        pytest.skip("a GPU is present: --device cuda is valid here")
    assert_one_line_error(voxtral("transcribe", clip5, "-m", tiny_dir, "-d", "cuda"), "GPU")


def test_auto_falls_back_to_cpu_with_a_note(tiny_dir, clip5):
    from voxtral.gpu.device import unavailable_reason

    if unavailable_reason() is None:
        pytest.skip("a GPU is present: auto picks it")
    r = voxtral("transcribe", clip5, "-m", tiny_dir)
    assert r.returncode == 0 and "running on the CPU" in r.stderr


def test_bad_delay(tiny_dir, clip5):
    assert_one_line_error(voxtral("transcribe", clip5, "-m", tiny_dir, "--delay-ms", "100"), "delay_ms")


def test_info(tiny_dir):
    r = voxtral("info", "-m", tiny_dir)
    assert r.returncode == 0 and "parameters:" in r.stdout and "consolidated.safetensors" in r.stdout


def test_help_on_every_command():
    for args in (
        ["--help"],
        ["transcribe", "--help"],
        ["info", "--help"],
        ["dev", "random-checkpoint", "--help"],
    ):
        r = voxtral(*args)
        assert r.returncode == 0 and "Usage" in r.stdout
