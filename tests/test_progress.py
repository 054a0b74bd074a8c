"""The progress display: off unless stderr is a terminal (then only log lines are written); the real
terminal display is tested through a pty in tests/test_cli.py."""

from voxtral.progress import Progress


def test_off_writes_only_log_lines(capsys):
    with Progress(2, 20.0, enabled=False) as p:
        p.update(5.0, 0)
        p.log("voxtral: a line")
        p.update(20.0, 2)
    captured = capsys.readouterr()
    assert captured.err == "voxtral: a line\n" and captured.out == ""


def test_off_when_stderr_is_not_a_terminal(capsys):
    assert Progress(1, 1.0).enabled is False  # pytest's captured stderr is no terminal
