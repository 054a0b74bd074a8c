"""The progress bar: its line (files, audio seconds, ETA), and drawing only on a terminal."""

import io

from voxtral.progress import CLEAR_LINE, Done, ProgressBar, bar_line, eta_seconds


def test_bar_line():
    line = bar_line(Done(1, 30.0), Done(4, 120.0), elapsed=10.0, width=200)
    assert line == "[######..................] 1/4 files, 30/120 s audio, 0:10 elapsed, ETA 0:30"


def test_bar_line_before_any_file_and_cut_to_the_width():
    assert bar_line(Done(), Done(2, 0.0), 0.0, width=200).endswith("ETA ?")
    assert len(bar_line(Done(), Done(2, 10.0), 0.0, width=30)) == 29


def test_eta_by_audio_seconds_then_by_files():
    assert eta_seconds(Done(1, 10.0), Done(3, 40.0), elapsed=5.0) == 15.0
    assert eta_seconds(Done(1, 0.0), Done(3, 0.0), elapsed=5.0) == 10.0
    assert eta_seconds(Done(), Done(3, 40.0), elapsed=5.0) is None
    assert "1:01:01" in bar_line(Done(1, 1.0), Done(2, 2.0), elapsed=3661.0, width=200)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_drawn_on_a_terminal_and_cleared_around_other_lines():
    term, out = Terminal(), io.StringIO()
    bar = ProgressBar(Done(2, 10.0), term)
    bar.write("hello\n", out)
    bar.advance(1, 5.0)
    bar.clear()
    text = term.getvalue()
    assert text.count(CLEAR_LINE) == 5 and "0/2 files" in text and "1/2 files" in text
    assert text.endswith(CLEAR_LINE) and out.getvalue() == "hello\n"


def test_nothing_drawn_when_not_a_terminal():
    stream = io.StringIO()
    bar = ProgressBar(Done(2, 10.0), stream)
    bar.advance(1, 5.0)
    bar.write("line\n", stream)
    bar.clear()
    assert stream.getvalue() == "line\n"
