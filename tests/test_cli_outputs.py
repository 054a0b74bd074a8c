"""The CLI never loses or garbles output, and says so when it cannot write: stdout in input order and
valid in its format, any encoding, a closed, full or vanished stdout, signals mid-run, files that
appear during the run, any file name (../shared/cases/input-07, input-11, rel-02, rel-43, rel-44,
rel-53). Subprocess tests, as a user runs the command."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxtral.errors import OutputError
from voxtral.inputs import write_atomic, write_together

RATE = 16000


def run(*args, env=None, **kw):
    return subprocess.run(
        [sys.executable, "-m", "voxtral", *map(str, args)],
        capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}, **kw,
    )  # fmt: skip


def one_error(stderr: str, needle: str) -> None:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("voxtral: error:")]
    assert len(errors) == 1 and needle in errors[0], stderr


@pytest.fixture(scope="module")
def clips(tmp_path_factory, clip5):
    """Three inputs of 5, 2 and 0.5 s: with -b 3 they finish in reverse order."""
    d = tmp_path_factory.mktemp("clips")
    x = sf.read(clip5, dtype="float32")[0]
    paths = []
    for name, seconds in (("long.wav", 5.0), ("mid.wav", 2.0), ("short.wav", 0.5)):
        sf.write(d / name, x[: int(seconds * RATE)], RATE)
        paths.append(d / name)
    return paths


def test_json_of_several_inputs_is_json_lines_in_input_order(tiny_dir, clips):
    r = run("transcribe", *clips, "-m", tiny_dir, "-d", "cpu", "-f", "json", "-b", "3", "-q")
    assert r.returncode == 0, r.stderr
    docs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [d["input"] for d in docs] == [str(p) for p in clips]
    assert all({"text", "segments", "tokens"} <= set(d) for d in docs)


@pytest.mark.parametrize("fmt", ["txt", "srt", "tsv"])
def test_other_formats_of_several_inputs_have_a_header_each_in_input_order(tiny_dir, clips, fmt):
    r = run("transcribe", *clips, "-m", tiny_dir, "-d", "cpu", "-f", fmt, "-b", "3", "-q")
    assert r.returncode == 0, r.stderr
    headers = [line for line in r.stdout.splitlines() if line.startswith("==> ")]
    assert headers == [f"==> {p} <==" for p in clips]


@pytest.fixture(scope="module")
def seed5(tmp_path_factory):
    """The README's example checkpoint: its text has U+FFFD, which ASCII cannot hold."""
    from voxtral.testing import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("seed5"), "tiny", seed=5, eos_reachable=False)


def test_an_encoding_that_cannot_hold_the_text_gets_replacements(seed5, clip5):
    for args, stdin in ((("transcribe", clip5), None), (("stream", "--stdin"), clip5)):
        r = subprocess.run(
            [sys.executable, "-m", "voxtral", *map(str, args), "-m", str(seed5), "-d", "cpu", "-q"],
            input=None if stdin is None else open(stdin, "rb").read(),
            capture_output=True, timeout=300, env={**os.environ, "PYTHONIOENCODING": "ascii"},
        )  # fmt: skip
        assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
        assert b"?" in r.stdout and r.stdout.isascii()


def test_json_on_an_ascii_stdout_is_escaped_not_replaced(seed5, clip5):
    """JSON keeps every character on any stdout: \\u escapes where the encoding has none."""
    for args, stdin in (
        (("transcribe", clip5, "-f", "json"), None),
        (("stream", "--stdin", "--jsonl"), clip5),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "voxtral", *map(str, args), "-m", str(seed5), "-d", "cpu", "-q"],
            input=None if stdin is None else open(stdin, "rb").read(),
            capture_output=True, timeout=300, env={**os.environ, "PYTHONIOENCODING": "ascii"},
        )  # fmt: skip
        assert r.returncode == 0 and r.stdout.isascii(), r.stderr
        docs = (
            [json.loads(line) for line in r.stdout.decode().splitlines()]
            if "--jsonl" in args
            else [json.loads(r.stdout)]
        )
        assert "\ufffd" in "".join(d["text"] for d in docs)  # the character itself, not "?"


@pytest.mark.parametrize("cmd", [["transcribe", "CLIP"], ["stream", "--stdin"], ["eval", "CLIP"]])
def test_closed_stdout_is_one_line_and_exit_6_before_the_model_loads(tiny_dir, clip5, cmd):
    args = [str(clip5) if a == "CLIP" else a for a in cmd]
    r = run(*args, "-m", tiny_dir, "-d", "cpu", preexec_fn=lambda: os.close(1), stdin=open(clip5, "rb"))
    assert r.returncode == 6, r.stderr
    one_error(r.stderr, "standard output is closed")
    assert "loaded" not in r.stderr
    assert ("--output-dir" in r.stderr) == (cmd[0] == "transcribe")  # only transcribe has one


def test_full_disk_under_stdout_is_one_line_and_exit_6(tiny_dir, clip5):
    for args in (["transcribe", clip5, clip5], ["stream", "--stdin"]):
        with open("/dev/full", "w") as full:
            r = subprocess.run(
                [sys.executable, "-m", "voxtral", *map(str, args), "-m", str(tiny_dir), "-d", "cpu", "-q"],
                stdin=open(clip5, "rb"), stdout=full, stderr=subprocess.PIPE, text=True, timeout=300,
            )  # fmt: skip
        assert r.returncode == 6, r.stderr
        one_error(r.stderr, "cannot write to standard output")
        assert ("--output-dir" in r.stderr) == (args[0] == "transcribe")
        assert "partly printed" not in r.stderr  # nothing reached it (new-user pass)


def test_a_reader_that_goes_away_stops_it_quietly(tiny_dir, clips, tmp_path):
    """`voxtral transcribe … | head -c 1`: exit 141 (SIGPIPE's code), no message, no traceback."""
    inputs = []  # nine inputs (links: named three times, a clip would be a warning even with -q)
    for k, clip in enumerate(clips * 3):
        inputs.append(tmp_path / f"{k}{clip.suffix}")
        inputs[-1].symlink_to(clip)
    p = subprocess.Popen(
        [sys.executable, "-m", "voxtral", "transcribe", *map(str, inputs), "-m", str(tiny_dir), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    p.stdout.read(1)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 141 and err == "", err


def noise(path, seconds: float):
    sf.write(
        path, (0.1 * np.random.default_rng(1).standard_normal(int(seconds * RATE))).astype(np.float32), RATE
    )
    return path


def signal_after_first(tiny_dir, inputs, out, sig, *args, preexec_fn=None) -> tuple[int, str]:
    """`transcribe INPUTS -o OUT ARGS`, sent `sig` once f0.wav is written → (exit code, stderr)."""
    p = subprocess.Popen(
        [sys.executable, "-m", "voxtral", "transcribe", *map(str, inputs), "-m", str(tiny_dir), "-d", "cpu",
         "-o", str(out), *args],
        stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn,
    )  # fmt: skip
    lines = []
    for line in p.stderr:  # wait until the first input is written
        lines.append(line)
        if "f0.wav:" in line:
            break
    p.send_signal(sig)
    stderr = "".join(lines) + p.stderr.read()
    return p.wait(timeout=120), stderr


@pytest.mark.parametrize(
    "sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")]
)
def test_a_signal_mid_run_leaves_no_temp_file_and_says_what_was_written(tiny_dir, tmp_path, sig, code, word):
    inputs = [noise(tmp_path / f"f{i}.wav", 150) for i in range(4)]  # seconds of work left after f0
    out = tmp_path / "out"
    returncode, stderr = signal_after_first(tiny_dir, inputs, out, sig, "-f", "all")
    assert returncode == code, stderr
    assert "Traceback" not in stderr, stderr
    summary = [line for line in stderr.splitlines() if word in line]
    assert len(summary) == 1 and "of 4 inputs written" in summary[0] and "not written:" in summary[0], stderr
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    written = {f.split(".")[0] for f in os.listdir(out)}
    assert "f0" in written and "f3" not in written


def test_an_inherited_ignored_sigint_stays_ignored(tiny_dir, tmp_path):
    """A run started with SIGINT ignored (`cmd &` in a script, nohup) is not stopped by one, as `stream`
    is not: every input is written, exit 0 (helper report, session 9)."""
    inputs = [noise(tmp_path / f"f{i}.wav", 60) for i in range(2)]
    out = tmp_path / "out"
    ignore = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    returncode, stderr = signal_after_first(tiny_dir, inputs, out, signal.SIGINT, preexec_fn=ignore)
    assert returncode == 0, stderr
    assert sorted(os.listdir(out)) == ["f0.txt", "f1.txt"], stderr


def test_a_file_that_appears_during_the_run_is_never_replaced(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("the user's own file")  # appeared after the run checked its outputs
    with pytest.raises(OutputError, match="appeared during the run"):
        write_atomic(target, "transcript", overwrite=False)
    assert target.read_text() == "the user's own file" and os.listdir(tmp_path) == ["x.txt"]
    write_atomic(tmp_path / "y.txt", "transcript", overwrite=False)
    assert (tmp_path / "y.txt").read_text() == "transcript"


@pytest.mark.parametrize("taken", ["a.srt", "a.json"])
def test_an_inputs_formats_are_written_all_or_none(tmp_path, taken):
    """Whichever of an input's outputs appeared during the run, none of them is written (the order of
    the formats does not matter) and the message names the input first, then the output."""
    (tmp_path / taken).write_text("the user's own file")
    files = {tmp_path / "a.json": "{}", tmp_path / "a.srt": "1", tmp_path / "a.txt": "text"}
    with pytest.raises(OutputError) as e:
        write_together(files, overwrite=False, owner="talk.wav")
    assert str(e.value) == f"talk.wav: its output {tmp_path / taken} appeared during the run; " + (
        "pass --overwrite to replace it"
    )
    assert os.listdir(tmp_path) == [taken] and (tmp_path / taken).read_text() == "the user's own file"
    write_together(files, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["a.json", "a.srt", "a.txt"]


def test_any_file_name_the_os_accepts(tiny_dir, clip5, tmp_path):
    name = os.fsdecode(b"caf\xe9 \xe2\x98\x83.wav")  # a Latin-1 byte (not UTF-8) and a snowman
    (tmp_path / name).write_bytes(clip5.read_bytes())
    out = tmp_path / "out"
    r = run("transcribe", tmp_path / name, "-m", tiny_dir, "-d", "cpu", "-o", out, "-q")
    assert r.returncode == 0, r.stderr
    assert os.listdir(os.fsencode(out)) == [b"caf\xe9 \xe2\x98\x83.txt"]


def test_a_file_name_not_in_the_locale_is_reported_with_its_own_bytes(tiny_dir, tmp_path):
    """stderr carries the name's bytes (b"caf\\xe9"), as `ls` shows them, not a surrogate escape."""
    name = os.fsdecode(b"caf\xe9.wav")
    r = subprocess.run(
        [sys.executable, "-m", "voxtral", "transcribe", str(tmp_path / name), "-m", str(tiny_dir), "-q"],
        capture_output=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 3
    assert b"caf\xe9.wav: file not found" in r.stderr and b"udce9" not in r.stderr
    assert r.stderr.count(b"\n") == 1


def test_the_failure_summary_is_in_input_order_at_any_batch_size(tiny_dir, tmp_path):
    """a.wav fails late (a NaN at 60 s), b.wav at once: batched, b's error comes first, and the summary
    still names a, b (input order), as one by one."""
    x = (0.1 * np.random.default_rng(2).standard_normal(70 * RATE)).astype(np.float32)
    x[60 * RATE] = np.nan
    sf.write(tmp_path / "a.wav", x, RATE, subtype="FLOAT")
    (tmp_path / "b.wav").write_bytes(b"RIFF garbage, not audio" * 10)
    for batch in ("2", "1"):
        r = subprocess.run(
            [sys.executable, "-m", "voxtral", "transcribe", str(tmp_path / "a.wav"), str(tmp_path / "b.wav"),
             "-m", str(tiny_dir), "-d", "cpu", "-q", "-b", batch, "-o", str(tmp_path / f"out{batch}")],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert r.returncode == 3, r.stderr
        summary = r.stderr.strip().splitlines()[-1]
        names = f"{tmp_path / 'a.wav'}, {tmp_path / 'b.wav'}"
        assert summary == f"voxtral: 2 of 2 inputs failed: {names}", r.stderr


def test_an_input_that_fails_after_its_text_began_is_marked_in_the_summary(tiny_dir, tmp_path):
    """Text on stdout as it is decided: a.wav prints text, then fails (a NaN at 60 s); the summary says
    its text is partial ("partly printed", as a Ctrl-C summary does), b.wav (not audio) is plain."""
    x = (0.1 * np.random.default_rng(2).standard_normal(70 * RATE)).astype(np.float32)
    x[60 * RATE] = np.nan
    sf.write(tmp_path / "a.wav", x, RATE, subtype="FLOAT")
    (tmp_path / "b.wav").write_bytes(b"RIFF garbage, not audio" * 10)
    r = subprocess.run(
        [sys.executable, "-m", "voxtral", "transcribe", str(tmp_path / "a.wav"), str(tmp_path / "b.wav"),
         "-m", str(tiny_dir), "-d", "cpu", "-q"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 3 and r.stdout.strip(), (r.stdout, r.stderr)  # some of a.wav's text came out
    summary = r.stderr.strip().splitlines()[-1]
    want = f"voxtral: 2 of 2 inputs failed: {tmp_path / 'a.wav'} (partly printed), {tmp_path / 'b.wav'}"
    assert summary == want, r.stderr


def test_a_control_character_in_a_file_name_keeps_the_error_on_one_line(tiny_dir, tmp_path):
    """A newline (or an escape sequence) in a name is written as an escape: one line per message."""
    bad = tmp_path / "bad\nname\x1b[31m.wav"
    bad.write_bytes(b"not audio at all")
    r = subprocess.run(
        [sys.executable, "-m", "voxtral", "transcribe", str(bad), "-m", str(tiny_dir), "-q"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 3
    assert r.stderr.count("\n") == 1 and "bad\\nname\\x1b[31m.wav: cannot decode audio" in r.stderr, r.stderr


@pytest.mark.parametrize("fmt", ["txt", "srt"])  # live text and the held-in-order writer
def test_a_newline_in_a_file_name_keeps_the_stdout_header_on_one_line(tiny_dir, clip5, tmp_path, fmt):
    (tmp_path / "new\nline.wav").write_bytes(clip5.read_bytes())
    (tmp_path / "plain.wav").write_bytes(clip5.read_bytes())
    names = [str(tmp_path / "new\nline.wav"), str(tmp_path / "plain.wav")]
    r = subprocess.run(
        [sys.executable, "-m", "voxtral", "transcribe", *names, "-m", str(tiny_dir), "-d", "cpu", "-q",
         "-f", fmt],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    headers = [line for line in r.stdout.splitlines() if line.startswith("==> ")]
    assert headers == [f"==> {tmp_path}/new\\nline.wav <==", f"==> {tmp_path}/plain.wav <=="], r.stdout


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_a_run_whose_pipe_has_not_ended(tiny_dir, clip5, tmp_path, sig, code):
    """A FIFO whose writer keeps it open: the reader thread waits in it, and the run stopped by a signal
    exits at once instead of when the writer is done (Python joined the reader threads at exit)."""
    fifo = tmp_path / "live.wav"
    os.mkfifo(fifo)
    p = subprocess.Popen(
        [sys.executable, "-m", "voxtral", "transcribe", str(fifo), "-m", str(tiny_dir), "-d", "cpu"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    writer = open(fifo, "wb")  # noqa: SIM115 (held open past the signal, like `(cat f; sleep 60) |`)
    try:
        writer.write(clip5.read_bytes()[:20000])
        writer.flush()
        first = p.stderr.readline()  # "loaded …": the run is under way
        p.send_signal(sig)
        t0 = time.monotonic()
        returncode = p.wait(timeout=60)
        waited = time.monotonic() - t0
    finally:
        writer.close()
    stderr = first + p.stderr.read()
    assert returncode == code, stderr
    assert waited < 10, f"exited {waited:.1f} s after the signal"
    assert "Traceback" not in stderr and "not written" in stderr, stderr


def test_jsonl_has_no_blank_line(tiny_dir, clip5):
    r = subprocess.run(
        [sys.executable, "-m", "voxtral", "stream", "--stdin", "--jsonl", "-m", str(tiny_dir), "-q"],
        stdin=open(clip5, "rb"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0 and r.stdout.endswith("}\n")
    assert all(json.loads(line) for line in r.stdout.splitlines())


def test_a_long_single_file_is_reported_after_it_is_read_once(tiny_dir, tmp_path):
    """-v adds the model, slots and the reading time per file."""
    r = run("transcribe", noise(tmp_path / "n.wav", 3), "-m", tiny_dir, "-d", "cpu", "-v")
    assert r.returncode == 0 and "slots" in r.stderr and "reading" in r.stderr


def test_segments_are_given_as_soon_as_they_are_decided(seed5, clip5):
    """transcribe_each(on_segment=…): the Transcript's segments, in order, the first ones before it ends."""
    import voxtral

    m = voxtral.load(seed5, device="cpu")
    x = sf.read(clip5, dtype="float32")[0]
    long = np.concatenate([x] * 6)  # the seed-5 checkpoint splits each repetition into segments
    events = []
    for _, t in m.transcribe_each([long], 1, sample_rate=RATE, on_segment=lambda i, s: events.append(s)):
        events.append(t)
    t = events[-1]
    segments = events[:-1]
    assert len(t.segments) >= 6 and segments == list(t.segments)


def test_txt_on_stdout_comes_as_it_is_decided(seed5, clip5, tmp_path):
    """A long file's text appears on stdout while the file is still being decoded."""
    x = sf.read(clip5, dtype="float32")[0]
    sf.write(tmp_path / "long.wav", np.concatenate([x] * 40), RATE)  # 200 s
    p = subprocess.Popen(
        [sys.executable, "-m", "voxtral", "transcribe", str(tmp_path / "long.wav"), "-m", str(seed5), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    first = p.stdout.readline()
    still_running = p.poll() is None
    rest = p.stdout.read()
    assert p.wait(timeout=300) == 0 and first.strip()
    assert still_running, "the first line came only at the end"
    whole = run("transcribe", tmp_path / "long.wav", "-m", seed5, "-d", "cpu", "-q", "-b", "2")  # not live
    assert first + rest == whole.stdout


def test_a_file_stopped_while_printing_is_named_as_partly_printed(seed5, clip5, tmp_path):
    x = sf.read(clip5, dtype="float32")[0]
    sf.write(tmp_path / "long.wav", np.concatenate([x] * 40), RATE)  # 200 s
    p = subprocess.Popen(
        [sys.executable, "-m", "voxtral", "transcribe", str(tmp_path / "long.wav"), str(clip5), "-m",
         str(seed5), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert p.stdout.readline().strip()  # some of long.wav's text is out
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=300)[1]
    assert p.returncode == 130, err
    summary = [line for line in err.splitlines() if "interrupted" in line]
    assert summary == [
        f"voxtral: interrupted (Ctrl-C): 0 of 2 inputs written; not written: {tmp_path / 'long.wav'} "
        f"(partly printed), {clip5}"
    ], err


@pytest.mark.parametrize("fmt, batch", [("json", 1), ("srt", 1), ("txt", 2), ("txt", 1)])
def test_a_failed_input_does_not_hold_back_the_ones_after_it_on_stdout(tiny_dir, clips, tmp_path, fmt, batch):
    """An input that fails while decoding (not audio after all) is skipped in the in-order output."""
    bad = tmp_path / "notaudio.wav"
    bad.write_bytes(b"this is not a WAV file at all" * 10)
    inputs = [clips[2], bad, clips[1]]
    r = run("transcribe", *inputs, "-m", tiny_dir, "-d", "cpu", "-f", fmt, "-b", batch, "-q")
    assert r.returncode == 3, r.stderr
    one_error(r.stderr.replace("voxtral: 1 of 3", "(summary)"), "notaudio.wav")
    if fmt == "json":
        assert [json.loads(line)["input"] for line in r.stdout.splitlines()] == [str(clips[2]), str(clips[1])]
    else:
        headers = [line for line in r.stdout.splitlines() if line.startswith("==> ")]
        assert headers == [f"==> {clips[2]} <==", f"==> {clips[1]} <=="]


@pytest.mark.parametrize("args", [["info", "-m", "TINY"], ["--version"], ["--help"], ["transcribe", "-h"]])
def test_every_command_says_when_stdout_is_full_or_closed(tiny_dir, args):
    args = [str(tiny_dir) if a == "TINY" else a for a in args]
    with open("/dev/full", "w") as full:
        r = subprocess.run(
            [sys.executable, "-m", "voxtral", *args],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    assert r.returncode == 6, r.stderr
    one_error(r.stderr, "cannot write to standard output")
    if args[0] in ("info", "--version"):
        r = run(*args, preexec_fn=lambda: os.close(1))
        assert r.returncode == 6, r.stderr
        one_error(r.stderr, "standard output is closed")


def test_an_input_held_back_for_the_input_order_is_not_called_written(tiny_dir, clip5, tmp_path):
    """-b 2 to stdout: the short second input is done first but waits for the first; stopped then,
    neither is on stdout and the stop line says so."""
    x = sf.read(clip5, dtype="float32")[0]
    sf.write(tmp_path / "long.wav", np.concatenate([x] * 80), RATE)  # 400 s
    p = subprocess.Popen(
        [sys.executable, "-m", "voxtral", "transcribe", str(tmp_path / "long.wav"), str(clip5), "-m",
         str(tiny_dir), "-d", "cpu", "-b", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines = []
    for line in p.stderr:  # wait until the short input is done
        lines.append(line)
        if line.startswith(f"voxtral: {clip5}:"):
            break
    p.send_signal(signal.SIGINT)
    out, rest = p.communicate(timeout=300)
    err = "".join(lines) + rest
    assert p.returncode == 130 and out == "", err
    summary = [line for line in err.splitlines() if "interrupted" in line]
    assert summary == [
        f"voxtral: interrupted (Ctrl-C): 0 of 2 inputs written; not written: {tmp_path / 'long.wav'}, "
        f"{clip5} (done, held back to keep the input order)"
    ], err


@pytest.mark.parametrize("container", ["WAV", "FLAC"])
def test_pipes_and_fifos_are_read_once_as_streams(tiny_dir, clip5, tmp_path, container):
    """`transcribe /dev/stdin`, `<(cmd)` and a FIFO: read once, by the decoder (../shared/cases/rel-12)."""
    import threading

    x = sf.read(clip5, dtype="float32")[0]
    sf.write(tmp_path / f"a.{container.lower()}", x, RATE, format=container)
    data = (tmp_path / f"a.{container.lower()}").read_bytes()
    expected = run("transcribe", tmp_path / f"a.{container.lower()}", "-m", tiny_dir, "-d", "cpu", "-q")
    assert expected.returncode == 0 and expected.stdout.strip()
    for name in ("/dev/stdin", "-"):
        r = subprocess.run(
            [sys.executable, "-m", "voxtral", "transcribe", name, "-m", str(tiny_dir), "-d", "cpu", "-q"],
            input=data, capture_output=True, timeout=300,
        )  # fmt: skip
        assert r.returncode == 0 and r.stdout.decode() == expected.stdout, r.stderr
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(data), daemon=True)
    writer.start()
    try:
        r = run("transcribe", fifo, "-m", tiny_dir, "-d", "cpu", "-q")
    finally:
        if writer.is_alive():  # the FIFO was never opened: let the writer go
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(timeout=60)
    assert r.returncode == 0 and r.stdout == expected.stdout, r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr


def test_standard_input_on_a_terminal_is_one_line(tiny_dir):
    import pty

    leader, follower = pty.openpty()
    try:
        r = run("transcribe", "-", "-m", tiny_dir, "-d", "cpu", stdin=follower)
    finally:
        os.close(leader)
        os.close(follower)
    assert r.returncode == 2
    one_error(r.stderr, "terminal")


def test_a_blank_file_name_is_still_a_file(tiny_dir, clip5, tmp_path):
    (tmp_path / " ").write_bytes(clip5.read_bytes())
    r = run("transcribe", " ", "-m", tiny_dir, "-d", "cpu", "-q", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr


@pytest.fixture(scope="module")
def interpreter_start_s() -> float:
    """Wall seconds Python itself takes to start here (twice, the longer): before voxtral's first line
    runs, a Ctrl-C is the interpreter's own business."""
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - t0)
    return max(times)


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.3, 0.5])
def test_ctrl_c_while_starting_says_so_once(tiny_dir, clips, tmp_path, delay, interpreter_start_s):
    """SIGINT at any moment of start-up after the interpreter's own (imports, model load, before the
    run): exit 130 with one line saying so, or the run finishes (0); never a traceback or a swallowed
    interrupt's warning."""
    delay += 2.5 * interpreter_start_s  # a loaded machine starts Python slower than the quiet measure
    out = tmp_path / "out"
    p = subprocess.Popen(
        [sys.executable, "-m", "voxtral", "transcribe", str(clips[2]), "-m", str(tiny_dir), "-d", "cpu",
         "-o", str(out)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=120)[1]
    assert "Traceback" not in err and "Exception ignored" not in err, err
    # 130, or killed by SIGINT: under `python -m` the interpreter re-raises SIGINT on its way out after an
    # interrupt inside the model load, which a shell reports as 130 too (the `voxtral` script exits 130)
    if p.returncode in (130, -signal.SIGINT):
        assert len([line for line in err.splitlines() if line.startswith("voxtral: interrupted")]) == 1, err
        assert not out.exists() or not [f for f in os.listdir(out) if f.endswith(".tmp")]
    else:
        assert p.returncode == 0 and (out / f"{Path(clips[2]).stem}.txt").exists(), err


def test_an_output_dir_made_for_inputs_that_all_fail_their_output_names_is_removed(tiny_dir, clip5, tmp_path):
    """-o DIR is created if missing and removed again if the run writes nothing into it: also when every
    input fails before the model loads, at its output name (too long for the file system, here)."""
    d = tmp_path / "in"
    d.mkdir()
    (d / ("x" * 251 + ".wav")).write_bytes(Path(clip5).read_bytes())
    out = tmp_path / "made" / "out"
    r = run("transcribe", d, "-m", tiny_dir, "-d", "cpu", "-q", "-o", out, "-f", "txt,json")
    assert r.returncode == 6, r.stderr
    one_error(r.stderr, "is too long for the file system")
    assert not (tmp_path / "made").exists()
