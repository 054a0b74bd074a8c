"""The command line as a user runs it (subprocess): output, formats, and one-line errors."""

import json
import os
import pty
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from format_checks import READERS, check_output

FORMATS = list(READERS)


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
    shutil.copy(clip5, tmp_path / "good.wav")
    out = tmp_path / "out"
    out.mkdir()
    inputs = [tmp_path / "*.wav", tmp_path / "missing.flac"]
    r = voxtral("transcribe", *inputs, "-m", tiny_dir, "-o", out, "-d", "cpu", "-f", "srt,json")
    assert r.returncode == 3
    assert sorted(p.name for p in out.iterdir()) == ["good.json", "good.srt"]  # nothing half-written
    assert check_output("srt", (out / "good.srt").read_text(), 5.0)
    errs = [line for line in r.stderr.splitlines() if line.startswith("voxtral: error:")]
    assert len(errs) == 2 and "missing.flac" in errs[0] and "broken.wav" in errs[1]
    assert r.stderr.index("missing.flac") < r.stderr.index("voxtral: loaded")  # found before the model loads
    assert r.stderr.splitlines()[-1].startswith("voxtral: 2 of 3 inputs failed: ")
    assert "\r" not in r.stderr and "ETA" not in r.stderr  # no progress bar when stderr is piped


@pytest.fixture(scope="module")
def written(tiny_dir, clip5, clip15, tmp_path_factory):
    """Every format of two clips given as a directory: (output dir, {stem: duration})."""
    clips = tmp_path_factory.mktemp("clips")
    for clip in (clip5, clip15):
        shutil.copy(clip, clips)
    out = tmp_path_factory.mktemp("out")
    r = voxtral("transcribe", clips, "-m", tiny_dir, "-d", "cpu", "-o", out, "-f", "all", "-q")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return out, {c.stem: sf.info(c).duration for c in (clip5, clip15)}


@pytest.mark.parametrize("fmt", ["txt", "json", "srt", "vtt", "tsv"])
def test_each_format_reads_back_with_times_inside_the_audio(written, fmt):
    out, durations = written
    for stem, duration in durations.items():
        texts = check_output(fmt, (out / f"{stem}.{fmt}").read_text(encoding="utf-8"), duration)
        assert texts and all(texts)


def test_formats_agree(written):
    out, durations = written
    assert len(list(out.iterdir())) == 5 * len(durations)
    for stem, duration in durations.items():
        read = {f: (out / f"{stem}.{f}").read_text(encoding="utf-8") for f in FORMATS}
        texts = {f: check_output(f, text, duration) for f, text in read.items()}
        assert texts["srt"] == texts["vtt"] == texts["tsv"] == texts["txt"] == texts["json"]


def test_never_overwrites_without_overwrite(tiny_dir, clip5, tmp_path):
    (tmp_path / "5s_dont_worry_about_him.vtt").write_text("mine")
    args = [clip5, "-m", tiny_dir, "-d", "cpu", "-o", tmp_path, "-f", "txt,vtt"]
    r = voxtral("transcribe", *args)
    assert_one_line_error(r, "exists", "--overwrite")
    assert r.returncode == 6 and sorted(os.listdir(tmp_path)) == ["5s_dont_worry_about_him.vtt"]
    assert "loaded" not in r.stderr  # refused before loading the model
    r = voxtral("transcribe", *args, "--overwrite")
    assert r.returncode == 0 and (tmp_path / "5s_dont_worry_about_him.vtt").read_text().startswith("WEBVTT")


def test_overwrite_never_replaces_an_input(tiny_dir, clip5, tmp_path):
    """An input whose output name is itself (audio named x.txt, written as txt beside it) is refused
    with --overwrite too: the audio would be lost."""
    audio = tmp_path / "x.txt"
    shutil.copyfile(clip5, audio)
    r = voxtral("transcribe", audio, "-m", tiny_dir, "-d", "cpu", "-o", tmp_path, "--overwrite")
    assert_one_line_error(r, "is an input of this run", "--output-dir")
    assert r.returncode == 6 and audio.read_bytes() == clip5.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["x.txt"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["-f", "docx"], "docx"),
        (["-f", "srt", "-f", "vtt"], "--output-dir"),
        (["-o", "CLIP"], "is a file"),
        (["-b", "0"], "--batch-size"),
        (["--alternatives", "2"], "--alternatives"),
        (["--no-such-option"], "No such option"),
        (["-b", "x"], "--batch-size"),
    ],
    ids=[
        "unknown-format",
        "two-formats-to-stdout",
        "output-dir-is-a-file",
        "batch-0",
        "alternatives",
        "unknown",
        "not-a-number",
    ],
)
def test_option_errors_are_one_line(tiny_dir, clip5, args, needle):
    """Every option error: one `voxtral: error:` line, exit 2, before the model loads (../shared/cases/
    rel-06: -o naming a file)."""
    r = voxtral("transcribe", clip5, "-m", tiny_dir, *[str(clip5) if a == "CLIP" else a for a in args])
    assert_one_line_error(r, needle)
    assert r.returncode == 2 and "loaded" not in r.stderr


def test_output_dir_is_created(tiny_dir, clip5, tmp_path):
    out = tmp_path / "new" / "subs"
    r = voxtral("transcribe", clip5, "-m", tiny_dir, "-d", "cpu", "-f", "srt", "-o", out, "-q")
    assert r.returncode == 0 and [p.name for p in out.iterdir()] == ["5s_dont_worry_about_him.srt"]


def test_progress_display_ticks_within_one_long_file(tiny_dir, tmp_path):
    """On a terminal (a real pty as stderr) the display counts audio seconds as a single 3-minute file
    is decoded, then is erased; stdout (a pipe) gets the text and nothing of the display."""
    import re

    import numpy as np
    import soundfile as sf

    long = tmp_path / "long.wav"
    sf.write(long, (0.1 * np.random.default_rng(0).standard_normal(180 * 16000)).astype(np.float32), 16000)
    leader, follower = pty.openpty()
    cmd = [sys.executable, "-m", "voxtral", "transcribe", long, "-m", tiny_dir, "-d", "cpu"]
    env = {**os.environ, "COLUMNS": "120"}
    proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    out = proc.stdout.read().decode()
    assert proc.wait(timeout=300) == 0
    terminal = b"".join(chunks).decode()
    seen = {int(s) for s in re.findall(r"0/1 files, (\d+)/180 s audio", terminal)}
    assert any(0 < s < 180 for s in seen), f"no intermediate count in {sorted(seen)}"
    assert "elapsed, ETA" in terminal and "long.wav: 180.0 s audio" in terminal
    assert out.strip() and "files," not in out  # the text on stdout, no display


def test_eval_computes_the_known_wer(tiny_dir, clip5, clip15, tmp_path):
    import voxtral as vx
    from voxtral.evaluate import normalize

    model = vx.load(tiny_dir, device="cpu")
    hyp5, hyp15 = (normalize(model.transcribe(c).text).split() for c in (clip5, clip15))
    assert hyp5 and hyp15
    for clip, ref in ((clip5, ["qqq", *hyp5[1:], "zzz"]), (clip15, hyp15)):
        shutil.copy(clip, tmp_path)
        (tmp_path / f"{clip.stem}.txt").write_text(" ".join(ref).upper() + ".")
    shutil.copy(clip5, tmp_path / "no_reference.wav")  # left out, and said so: nothing to compare with
    r = voxtral("eval", tmp_path, "-m", tiny_dir, "-d", "cpu", "-q")
    left_out = f"voxtral: {tmp_path}: 1 audio file without a reference .txt of the same name left out"
    assert r.returncode == 0 and r.stderr == f"{left_out} (no_reference.wav)\n", r.stderr
    lines = r.stdout.splitlines()
    n5, n15 = len(hyp5) + 1, len(hyp15)  # reference words: one substituted and one deleted in clip5
    assert len(lines) == 3 and lines[0].startswith(str(tmp_path / clip15.name))
    assert f"WER   0.00%  (0/{n15} words: 0 sub, 0 del, 0 ins)" in lines[0]
    assert f"WER {100 * 2 / n5:6.2f}%  (2/{n5} words: 1 sub, 1 del, 0 ins)" in lines[1]
    overall = f"WER {100 * 2 / (n5 + n15):6.2f}%  (2/{n5 + n15} words: 1 sub, 1 del, 0 ins) over 2 clips"
    assert lines[2].startswith("overall") and lines[2].endswith(overall)


def test_eval_without_references_is_one_line(tiny_dir, clip5, tmp_path):
    shutil.copy(clip5, tmp_path / "alone.wav")
    assert_one_line_error(voxtral("eval", tmp_path / "alone.wav", "-m", tiny_dir), "no reference transcript")


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


def test_auto_falls_back_to_cpu_quietly_without_cupy(tiny_dir, clip5):
    """A CPU-only install (no CuPy) is no news: no note, except with -v; CuPy present but no usable GPU
    gets one note naming the reason (voxtral/gpu/device.py)."""
    from voxtral.gpu.device import cupy_missing, unavailable_reason

    if unavailable_reason() is None:
        pytest.skip("a GPU is present: auto picks it")
    r = voxtral("transcribe", clip5, "-m", tiny_dir)
    assert r.returncode == 0 and ("running on the CPU" in r.stderr) == (not cupy_missing())
    r = voxtral("transcribe", clip5, "-m", tiny_dir, "-v")
    assert r.returncode == 0 and "running on the CPU" in r.stderr


def test_bad_delay(tiny_dir, clip5):
    assert_one_line_error(voxtral("transcribe", clip5, "-m", tiny_dir, "--delay-ms", "100"), "--delay-ms")


def test_info(tiny_dir):
    r = voxtral("info", "-m", tiny_dir)
    assert r.returncode == 0 and "parameters:" in r.stdout and "consolidated.safetensors" in r.stdout


def test_help_on_every_command():
    for args in (
        ["--help"],
        ["transcribe", "--help"],
        ["eval", "--help"],
        ["info", "--help"],
        ["dev", "random-checkpoint", "--help"],
    ):
        r = voxtral(*args)
        assert r.returncode == 0 and "Usage" in r.stdout


@pytest.mark.parametrize("stderr", ["full", "closed"])
def test_a_full_or_closed_stderr_loses_status_lines_not_the_run(tiny_dir, clip5, tmp_path, stderr):
    """2>/dev/full or 2>&-: the status lines cannot be written; the transcript still is (exit 0), to
    stdout and to --output-dir, and a bad input still exits with its code."""
    cmd = [sys.executable, "-m", "voxtral", "transcribe", str(clip5), "-m", str(tiny_dir), "-d", "cpu"]
    kw: dict = dict(capture_output=False, stdout=subprocess.PIPE, text=True, timeout=300)
    if stderr == "full":
        kw["stderr"] = open(os.devnull if not os.path.exists("/dev/full") else "/dev/full", "w")  # noqa: SIM115
    else:
        kw["preexec_fn"] = lambda: os.close(2)
    r = subprocess.run(cmd, **kw)
    assert r.returncode == 0 and r.stdout.strip()
    r = subprocess.run([*cmd, "-o", str(tmp_path / "out")], **kw)
    assert r.returncode == 0 and (tmp_path / "out" / f"{clip5.stem}.txt").read_text().strip()
    r = subprocess.run([*cmd[:4], str(tmp_path / "none.wav"), *cmd[5:]], **kw)
    assert r.returncode == 3
