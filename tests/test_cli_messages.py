"""What the CLI says: --version and --help, one-line errors for every bad option of every command
(checked before any work: ../shared/cases/rel-49), references checked before transcribing (rel-51),
`info` without the weights, --model values that look local, the offline message, the microphone."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from voxtral.errors import DeviceError


def run(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "voxtral", *map(str, args)],
        capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}, cwd=cwd,
    )  # fmt: skip


def one_error(r, needle: str, code: int = 2) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("voxtral: error:")]
    assert len(errors) == 1 and needle in errors[0], r.stderr


def test_version():
    import voxtral

    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"voxtral {voxtral.__version__}"


@pytest.mark.parametrize(
    "cmd", [[], ["transcribe"], ["eval"], ["info"], ["stream"], ["bench"], ["dev", "random-checkpoint"]]
)
def test_help_has_no_type_noise_on_flags(cmd):
    r = run(*cmd, "--help")
    assert r.returncode == 0 and "Usage" in r.stdout and "<bool>" not in r.stdout
    options = [line for line in r.stdout.splitlines() if line.lstrip().startswith("-")]
    assert not [line for line in options if "<" in line]  # each value-taking option names its value
    assert run(*cmd, "-h").stdout == r.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["bench", "--random-weights", "tiny", "-d", "cpu", "--positions", "foo"], "--positions"),
        (["bench", "--random-weights", "tiny", "-d", "cpu", "--batch", "0"], "--batch"),
        (["bench", "--random-weights", "tiny", "-d", "cpu", "--files", "8,x"], "--files"),
        (["bench", "--random-weights", "huge", "-d", "cpu"], "--random-weights"),
        (["bench", "--random-weights", "tiny", "-d", "tpu"], "--device"),
        (["bench", "--random-weights", "tiny", "-d", "cpu,cpu"], "each once"),
        (["bench", "--random-weights", "tiny", "-d", "cpu", "--audio", "."], "a directory"),
        (["bench", "-d", "cpu"], "--model or --random-weights"),
        (["bench", "--random-weights", "tiny", "--steps", "x"], "--steps"),
        (["bench", "--random-weights", "tiny", "-d", "cpu", "--cpu-steps", "9" * 20], "--cpu-steps"),
        (["bench", "--random-weights", "tiny", "-d", "cpu", "--positions", "99999999999"], "--positions"),
        (["bench", "--random-weights", "tiny", "-d", "cpu", "--server", "1,5000"], "--server"),
        (["bench", "--random-weights", "tiny", "-d", "cpu", "--gemv"], "--gemv"),
        (["transcribe", "CLIP", "-b", "99999999999999999999"], "--batch-size must be from 1 to 4096"),
        (["transcribe", "CLIP", "-b", "0"], "--batch-size"),
        (["dev", "random-checkpoint", "x", "--size", "huge"], "--size"),
        (["dev", "random-checkpoint", "x", "--seed", "-1"], "--seed"),
        (["transcribe", "CLIP", "-o", ""], "--output-dir"),
        (["transcribe", "CLIP", "-o", "-"], "leave it out to get the text on stdout"),
        (["transcribe", "CLIP", "-m", ""], "--model"),
        (["info", "-m", " "], "--model"),
        (["transcribe", ""], "empty"),
        (["transcribe", "CLIP", " "], "empty"),
        (["eval", ""], "empty"),
        (["dev", "random-checkpoint", ""], "empty"),
        (["transcribe", "CLIP", "--delay-ms", "100"], "--delay-ms"),
        (["transcribe", "CLIP", "--overwrite"], "--overwrite"),
        (["transcribe", "CLIP", "-v", "-q"], "contradict"),
        (["stream", "--stdin", "-v", "-q"], "contradict"),
        (["transcribe", "CLIP", "--confidence"], "--confidence"),
        (["transcribe", "CLIP", "--confidence", "-f", "srt"], "--format json"),
        (["transcribe", "CLIP", "--confidence", "--alternatives", "0.2", "-f", "srt"], "--alternatives"),
        (["transcribe", "CLIP", "--alternatives", "0.1", "-f", "vtt"], "json or txt"),
        (["eval", "CLIP", "-d", "tpu"], "--device"),
        (["eval", "-"], "`-` (standard input) has none"),
        (["transcribe"], "Missing argument"),
        (["transcribe", "CLIP", "--format"], "(see voxtral transcribe --help)"),  # no value: no context yet
        (["dev", "random-checkpoint", "x", "--size"], "(see voxtral dev random-checkpoint --help)"),
        (["stream", "--stdin", "--mic"], "exactly one"),
        (["stream", "--stdin", "--confidence"], "--jsonl"),
        (["stream", "--stdin", "--rate", "8000"], "--format"),
    ],
)
def test_bad_options_are_one_line_before_any_work(args, needle, clip5):
    t0 = time.monotonic()
    r = run(*[str(clip5) if a == "CLIP" else a for a in args])
    one_error(r, needle)
    assert time.monotonic() - t0 < 20 and "writing a random" not in r.stderr  # nothing was run first


@pytest.mark.parametrize("args, needle", [(["--delay-ms", "100"], "--delay-ms"), (["-d", "tpu"], "--device")])
def test_stream_checks_its_options_before_reading_stdin(args, needle):
    """An open stdin that sends nothing: the option error comes at once, not after the input."""
    p = subprocess.Popen(
        [sys.executable, "-m", "voxtral", "stream", "--stdin", *args],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        code = p.wait(timeout=60)
    finally:
        p.kill()
        p.stdin.close()
    r = subprocess.CompletedProcess(p.args, code, "", p.stderr.read())
    one_error(r, needle)


@pytest.mark.parametrize("cmd", [[], ["dev"]])
def test_a_bare_command_prints_its_help(cmd):
    r = run(*cmd)
    assert r.returncode == 0 and r.stdout.startswith("Usage:") and r.stderr == ""


def test_a_random_checkpoint_replaces_nothing_without_overwrite(tmp_path):
    assert run("dev", "random-checkpoint", tmp_path, "--seed", "1").returncode == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(before) == ["consolidated.safetensors", "params.json", "tekken.json"]
    one_error(run("dev", "random-checkpoint", tmp_path, "--seed", "2"), "--overwrite", code=6)  # exists
    one_error(run("dev", "random-checkpoint", tmp_path / "params.json"), "is a file", code=6)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert run("dev", "random-checkpoint", tmp_path, "--seed", "2", "--overwrite").returncode == 0
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert (
        sorted(after) == sorted(before)
        and after["consolidated.safetensors"] != before["consolidated.safetensors"]
    )


def test_bench_of_an_absent_gpu_is_an_error(tiny_dir):
    from voxtral.gpu.device import unavailable_reason

    if unavailable_reason() is None:
        pytest.skip("a GPU is present")
    one_error(run("bench", "--model", tiny_dir, "-d", "cuda"), "GPU", code=5)


def test_an_empty_reference_is_named_before_anything_is_transcribed(tiny_dir, clip5, tmp_path):
    (tmp_path / "x.wav").write_bytes(clip5.read_bytes())
    (tmp_path / "y.wav").write_bytes(clip5.read_bytes())
    (tmp_path / "x.txt").write_text("hello world")
    (tmp_path / "y.txt").write_text(" ... ")
    r = run("eval", tmp_path, "-m", tiny_dir, "-d", "cpu")
    assert r.returncode == 3 and "Traceback" not in r.stderr
    error = next(line for line in r.stderr.splitlines() if line.startswith("voxtral: error:"))
    assert "y.txt" in error and "no words" in error
    assert r.stderr.index("y.txt") < r.stderr.index("voxtral: loaded")  # before the model loaded
    assert "x.wav" in r.stdout and "y.wav" not in r.stdout


def test_a_list_file_says_its_paths_are_relative_to_it(tiny_dir, clip5, tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "clips.list").write_text("missing.wav\n")
    r = run("eval", tmp_path / "lists" / "clips.list", "-m", tiny_dir, "-d", "cpu")
    one_error(r, "relative to its folder", code=3)


def test_info_reads_only_params_and_tekken(tiny_dir, tmp_path):
    for name in ("params.json", "tekken.json"):
        shutil.copy(tiny_dir / name, tmp_path / name)
    r = run("info", "-m", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "parameters:" in r.stdout and "tekken.json" in r.stdout and "consolidated" not in r.stdout


def test_info_checks_a_weights_file_that_is_there(tiny_dir, tmp_path):
    for name in ("params.json", "tekken.json"):
        shutil.copy(tiny_dir / name, tmp_path / name)
    (tmp_path / "consolidated.safetensors").write_bytes(
        (tiny_dir / "consolidated.safetensors").read_bytes()[:1000]
    )
    one_error(run("info", "-m", tmp_path), "consolidated.safetensors", code=4)


def test_a_model_path_that_looks_local_is_never_a_hub_id(tmp_path, clip5):
    (tmp_path / "models").mkdir()
    r = run("transcribe", clip5, "-m", "models/voxtral", cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    one_error(r, "model directory not found", code=4)
    assert "--model" in r.stderr
    # a trailing slash names a directory (it was taken for a Hub id: "download failed (Repo id must …")
    r = run("info", "-m", "nonexistent_dir/", cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    one_error(r, "model directory not found", code=4)
    assert "hf download" not in r.stderr


def test_the_offline_message_says_how_to_fetch_the_model(clip5, tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    r = run("transcribe", clip5, "-m", "mistralai/Voxtral-Mini-4B-Realtime-2602", env=env)
    one_error(r, "offline", code=4)
    for needle in (
        "--model",
        "consolidated.safetensors",
        "params.json",
        "tekken.json",
        "hf download mistralai/Voxtral-Mini-4B-Realtime-2602",  # huggingface_hub ≥ 0.34 has only `hf`
        "huggingface-cli download",
    ):
        assert needle in r.stderr


def test_the_microphone_without_portaudio_says_so(monkeypatch):
    import builtins

    from voxtral.microphone import microphone

    real = builtins.__import__

    def fake(name, *args, **kw):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(DeviceError, match="PortAudio"):
        microphone()


def test_option_names_spelled_out():
    """Every option of every command is named in its declaration, lower-case: typer 0.27 derived the name
    `--SIZE` from a metavar equal to the upper-cased parameter (`voxtral dev random-checkpoint --size`
    was refused there); a declared name does not depend on that derivation."""
    import typer.main

    from voxtral import cli_dev  # noqa: F401  (registers the dev group)
    from voxtral.cli import app

    def commands(cmd, path):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from commands(sub, f"{path} {name}")

    seen = 0
    for path, cmd in commands(typer.main.get_command(app), "voxtral"):
        for p in cmd.params:
            if p.param_type_name == "option":  # click's or typer's vendored click
                longs = [o for o in p.opts if o.startswith("--")]
                assert longs and all(o == o.lower() for o in longs), (path, p.opts)
                seen += 1
    assert seen > 30


def test_bench_report_that_cannot_be_written_is_one_error(tiny_dir, clip5):
    """--json to a file that passes the early check but fails when written (a full device): one line,
    exit 6, after the bench ran; no traceback."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    args = ["--model", tiny_dir, "-d", "cpu", "--audio", clip5, "--cpu-steps", "1", "--json", "/dev/full"]
    r = run("bench", *args)
    one_error(r, "/dev/full: cannot write the report", code=6)


def test_an_output_dir_under_a_file_or_a_broken_link_is_an_option_error(clip5, tmp_path):
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    one_error(run("transcribe", clip5, "-o", f"{clip5}/sub"), "is a file, not a directory")
    one_error(run("transcribe", clip5, "-o", tmp_path / "gone"), "a broken link")


def test_an_output_dir_made_for_a_run_that_never_started_is_taken_back(clip5, tmp_path, monkeypatch):
    """--output-dir is made before the model loads; a model that does not load (exit 4) or a stop during
    the load (exit 130) leaves no empty directories behind it, and one that was there stays."""
    from typer.testing import CliRunner

    import voxtral
    from voxtral import cli

    r = run("transcribe", clip5, "-m", tmp_path / "no-model", "-o", tmp_path / "new" / "out")
    one_error(r, "model directory not found", code=4)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    one_error(run("transcribe", clip5, "-m", tmp_path / "no-model", "-o", tmp_path / "kept"), "model", code=4)
    assert (tmp_path / "kept").is_dir()

    def load(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(voxtral, "load", load)
    monkeypatch.setattr(cli, "_STOP_SAID", [])
    r = CliRunner().invoke(cli.app, ["transcribe", str(clip5), "-d", "cpu", "-o", str(tmp_path / "a" / "b")])
    assert r.exit_code == 130 and not (tmp_path / "a").exists(), r.output


def test_an_output_dir_made_for_a_run_whose_every_input_failed_is_taken_back(tiny_dir, tmp_path):
    """Every input failed (exit 3): nothing written, and the directories made for it are gone (new-user
    pass: an empty tree stayed)."""
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio\n" * 50)
    r = run("transcribe", bad, "-m", tiny_dir, "-d", "cpu", "-o", tmp_path / "nest" / "b" / "c")
    one_error(r, "notes.wav", code=3)
    assert not (tmp_path / "nest").exists()


def test_bench_report_path_that_cannot_be_created_fails_before_the_bench(tmp_path):
    """--json where no file can be created even though the directory's permission bits say yes (root, or
    a pseudo file system): an option error up front, and nothing left behind where it can be created."""
    if os.path.isdir("/proc") and not os.path.exists("/proc/voxtral-x.json"):
        r = run("bench", "--random-weights", "tiny", "-d", "cpu", "--json", "/proc/voxtral-x.json")
        one_error(r, "--json", code=6)  # output not written, as for transcribe -o
    r = run("bench", "--random-weights", "tiny", "-d", "cpu", "--json", "/nonexistent/x.json")
    one_error(r, "--json", code=6)
    one_error(
        run("bench", "--random-weights", "tiny", "-d", "cpu", "--json", tmp_path), "is a directory", code=6
    )
    report = tmp_path / "report.json"
    r = run("bench", "--random-weights", "tiny", "-d", "cpu", "--json", report, "--positions", "foo")
    one_error(r, "--positions")  # found after the --json check
    assert not report.exists()  # its probe was removed


def test_bench_audio_that_does_not_exist_is_bad_audio(tmp_path):
    """As for transcribe: a missing audio file is exit 3, one line."""
    one_error(
        run("bench", "--random-weights", "tiny", "-d", "cpu", "--audio", tmp_path / "none.wav"),
        "no such file",
        code=3,
    )


@pytest.mark.parametrize("interrupted", [None, "the server did not start"])
@pytest.mark.parametrize("stop", ["Ctrl-C", "SIGTERM"])
def test_a_stop_while_the_model_loads_is_one_line_and_exit_130_or_143(monkeypatch, capsys, interrupted, stop):
    """Ctrl-C or SIGTERM during load (SIGTERM raised as Terminated, as main() has every command take it;
    its default action ended the process without a word): one line saying what did not happen
    (transcribe/stream: nothing was written; serve: the server did not start), exit 130 or 143, no
    traceback; SIGTERM's old handler is back afterwards."""
    import signal

    import typer

    import voxtral
    from voxtral import cli
    from voxtral.outputs import Terminated, terminated_as

    def load(*args, **kwargs):
        if stop == "Ctrl-C":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises first
        raise AssertionError("SIGTERM did not stop the load")

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(voxtral, "load", load)
    monkeypatch.setattr(cli, "_STOP_SAID", [])  # the process-wide record of stop lines, for this test only
    extra = {} if interrupted is None else {"interrupted": interrupted}
    with pytest.raises(typer.Exit) as e, terminated_as(Terminated):
        cli._load("some/model", "cpu", None, False, False, **extra)
    code, said = (130, "interrupted (Ctrl-C)") if stop == "Ctrl-C" else (143, "terminated (SIGTERM)")
    assert e.value.exit_code == code
    tail = interrupted or "nothing was written"
    assert capsys.readouterr().err == f"voxtral: {said} while loading the model; {tail}\n"
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.parametrize(
    "sig,code,line",
    [
        ("SIGINT", 130, "voxtral: interrupted"),
        ("SIGTERM", 143, "voxtral: terminated (SIGTERM)"),
        ("SIGTERM", None, None),
    ],
)
def test_a_stop_signal_while_importing_is_one_line_after_the_imports(monkeypatch, capsys, sig, code, line):
    """Ctrl-C or SIGTERM while the command line is imported (seconds on a cold disk) is noted and acted
    on once the imports are done: one line, exit 130 or 143, the command not run. A SIGTERM inherited as
    ignored (code None here) stays ignored: the command runs."""
    import signal

    import typer.main

    from voxtral import cli, entry

    signum = getattr(signal, sig)
    real = typer.main.get_command

    def get_command(app):  # inside the imports' protected stretch
        os.kill(os.getpid(), signum)
        return real(app)

    ran = []
    monkeypatch.setattr(typer.main, "get_command", get_command)
    monkeypatch.setattr(cli, "main", lambda command: ran.append(command))
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if code is None:
        signal.signal(signum, signal.SIG_IGN)
    try:
        if code is None:
            entry.main()
            assert len(ran) == 1 and capsys.readouterr().err == ""
        else:
            with pytest.raises(SystemExit) as e:
                entry.main()
            assert e.value.code == code and not ran
            assert capsys.readouterr().err == line + "\n"
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_sigterm_between_a_commands_steps_is_one_line_and_exit_143(monkeypatch, capsys, tmp_path):
    """SIGTERM after the imports and before a run has begun (here while the inputs are listed): one line,
    exit 143, nothing written (its default action ended the process without a word)."""
    import signal

    from voxtral import cli

    real = cli.expand_inputs

    def expand_inputs(inputs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(inputs)

    monkeypatch.setattr(cli, "expand_inputs", expand_inputs)
    monkeypatch.setattr(cli, "_STOP_SAID", [])
    out = tmp_path / "out"
    clip = os.path.join(os.path.dirname(__file__), "..", "audio", "night1968", "5s_dont_worry_about_him.wav")
    monkeypatch.setattr(sys, "argv", ["voxtral", "transcribe", clip, "-o", str(out), "-d", "cpu"])
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 143
    assert capsys.readouterr().err == "voxtral: terminated (SIGTERM)\n"
    assert not out.exists() and signal.getsignal(signal.SIGTERM) == before


@pytest.mark.parametrize("rate, n", [(10_000_000, 182), (1_000_000, 5)])
def test_audio_too_short_to_resample_is_one_line_and_nothing_more(tiny_dir, tmp_path, rate, n):
    """A recording at a high rate too short to give one 16 kHz sample is exit 3 with one error line and
    nothing after it (the resampler its traceback held made nanobind print ~20 "leaked" lines at exit)."""
    import numpy as np
    import soundfile as sf

    wav = tmp_path / "short.wav"
    sf.write(wav, np.full(n, 0.1), rate, subtype="PCM_16")
    r = run("transcribe", wav, "-m", tiny_dir, "-d", "cpu", "-q")
    assert r.returncode == 3 and r.stdout == "", r
    assert r.stderr.splitlines() == [
        f"voxtral: error: {wav}: the audio is too short ({n} samples at {rate} Hz make none at 16000 Hz); "
        "pass a longer recording"
    ], r.stderr


def test_quiet_keeps_warnings(tiny_dir, clip5):
    """-q drops progress and timings, not warnings (an input named twice here; audio skipped in a damaged
    file is the same kind of line): a quiet script still learns what was not transcribed."""
    r = run("transcribe", clip5, clip5, "-m", tiny_dir, "-d", "cpu", "-q")
    assert r.returncode == 0 and r.stdout, r
    assert r.stderr.splitlines() == [f"voxtral: {clip5}: named more than once; transcribed once"], r.stderr
