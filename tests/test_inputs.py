"""Inputs (files, directories, glob patterns), output planning and atomic writes."""

import os

import numpy as np
import pytest
import soundfile as sf

from voxtral.errors import AudioError, OutputError
from voxtral.inputs import audio_seconds, expand_inputs, plan_outputs, prepare_output_dir, write_atomic


@pytest.fixture
def folder(tmp_path):
    for name in ("b.wav", "a.flac", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.WAV").write_bytes(b"x")
    return tmp_path


def names(paths):
    return [p.name for p in paths]


def test_directory_gives_its_audio_files_sorted(folder):
    paths, errors = expand_inputs([str(folder)])
    assert names(paths) == ["a.flac", "b.wav"] and errors == []


def test_glob_patterns_and_recursion(folder):
    paths, _ = expand_inputs([str(folder / "*.wav")])
    assert names(paths) == ["b.wav"]
    paths, _ = expand_inputs([str(folder / "**" / "*.[wW][aA][vV]")])
    assert names(paths) == ["b.wav", "c.WAV"]


def test_macos_appledouble_companions_are_not_taken_as_audio(folder):
    """`._b.wav` beside b.wav (macOS on a USB drive or share): left out of a directory and of a pattern;
    a `._` file without the AppleDouble magic stays, and one named on its own is an input as any other."""
    (folder / "._b.wav").write_bytes(b"\x00\x05\x16\x07" + bytes(80))
    (folder / "._real.wav").write_bytes((folder / "b.wav").read_bytes())
    paths, errors = expand_inputs([str(folder)])
    assert names(paths) == ["._real.wav", "a.flac", "b.wav"] and errors == []
    paths, _ = expand_inputs([str(folder / "*.wav")])
    assert names(paths) == ["._real.wav", "b.wav"]
    paths, _ = expand_inputs([str(folder / "**")])
    assert "._b.wav" not in names(paths)
    paths, _ = expand_inputs([str(folder / "._b.wav")])
    assert names(paths) == ["._b.wav"]


def test_a_directory_a_pattern_matches_counts_as_named(folder):
    """As when the shell expands the pattern: a matched directory gives its audio files; one without any
    fails as an input instead of being left out unseen (helper report, session 9)."""
    (folder / "empty").mkdir()
    paths, errors = expand_inputs([str(folder / "s*")])
    assert names(paths) == ["c.WAV"] and errors == []
    paths, errors = expand_inputs([str(folder / "*")])
    assert names(paths) == ["a.flac", "b.wav", "notes.txt", "c.WAV"]  # sorted matches, sub's inside
    assert [e.name for e in errors] == [str(folder / "empty")]
    paths, errors = expand_inputs([str(folder / "e*")])  # as when the directory is named
    assert (
        names(paths) == []
        and str(errors[0].error) == expand_inputs([str(folder / "empty")])[1][0].error.args[0]
    )
    assert "empty: no audio files in this directory" in str(errors[0].error)
    paths, _ = expand_inputs([str(folder / "**" / "*")])  # a recursive pattern: files only, no repeats
    assert names(paths) == ["a.flac", "b.wav", "notes.txt", "c.WAV"]


def test_a_pattern_ending_in_two_stars_means_the_audio_files_below(folder):
    paths, errors = expand_inputs([str(folder / "**")])
    assert names(paths) == ["a.flac", "b.wav", "c.WAV"] and errors == []  # notes.txt is not audio
    paths, _ = expand_inputs([str(folder / "sub" / "**")])
    assert names(paths) == ["c.WAV"]


def test_files_kept_in_order_without_duplicates_and_missing_ones_fail_at_once(folder):
    args = [str(folder / "b.wav"), str(folder), str(folder / "missing.wav"), str(folder / "texts")]
    (folder / "texts").mkdir()
    (folder / "texts" / "notes.txt").write_text("x")
    paths, errors = expand_inputs(args)
    assert names(paths) == ["b.wav", "a.flac"]
    assert [e.name for e in errors] == [str(folder / "missing.wav"), str(folder / "texts")]
    assert "file not found" in str(errors[0].error) and "no audio files" in str(errors[1].error)


def test_an_input_named_twice_is_transcribed_once_and_said_so(folder, caplog):
    with caplog.at_level("WARNING", logger="voxtral.inputs"):
        paths, errors = expand_inputs([str(folder / "b.wav"), str(folder), str(folder / "b.wav")])
    assert names(paths) == ["b.wav", "a.flac"] and errors == []
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"{folder / 'b.wav'}: named more than once; transcribed once"] * 2, said


def test_a_broken_link_in_a_directory_is_reported_not_skipped(folder):
    (folder / "gone.mp3").symlink_to(folder / "nothere.mp3")
    (folder / "gone.txt").symlink_to(folder / "nothere.txt")  # not an audio name: not an input
    for arg in (folder, folder / "*.mp3", folder / "**", folder / "g*"):  # directories and patterns alike
        paths, errors = expand_inputs([str(arg)])
        assert [e.name for e in errors] == [str(folder / "gone.mp3")], arg
        assert "a broken link (to " in str(errors[0].error) and "nothere.mp3" in str(errors[0].error)
    assert names(expand_inputs([str(folder)])[0]) == ["a.flac", "b.wav"]


def test_an_unreadable_file_fails_at_once(folder):
    import os

    locked = folder / "locked.wav"
    locked.write_bytes(b"RIFF")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):  # root reads anything: nothing to test here
            return
        paths, errors = expand_inputs([str(locked)])
        assert paths == [] and "cannot open" in str(errors[0].error)
    finally:
        locked.chmod(0o644)


def test_a_symlink_loop_does_not_hang_a_recursive_pattern(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.wav").write_bytes(b"x")
    (tmp_path / "d" / "loop").symlink_to(tmp_path / "d")
    paths, errors = expand_inputs([str(tmp_path / "**" / "*.wav")])
    assert [p.name for p in paths] == ["a.wav"] and not errors


def test_empty_directory_and_unmatched_pattern_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    paths, errors = expand_inputs([str(tmp_path / "empty"), str(tmp_path / "*.mp3")])
    assert paths == [] and [type(e.error) for e in errors] == [AudioError, AudioError]
    assert "no audio files" in str(errors[0].error) and "no file matches" in str(errors[1].error)


def test_audio_seconds_from_the_header(tmp_path):
    sf.write(tmp_path / "x.wav", np.zeros(24000, np.float32), 16000)
    (tmp_path / "bad.wav").write_bytes(b"junk")
    assert audio_seconds(tmp_path / "x.wav") == 1.5 and audio_seconds(tmp_path / "bad.wav") == 0.0


def test_plan_refuses_existing_outputs_and_shared_names(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.srt").write_text("old")
    inputs = [tmp_path / "a.wav", tmp_path / "b.wav", tmp_path / "x" / "b.flac"]
    plan, errors = plan_outputs(inputs, out, ["txt", "srt"], overwrite=False)
    assert list(plan) == [tmp_path / "b.wav"] and plan[tmp_path / "b.wav"] == [out / "b.txt", out / "b.srt"]
    assert [e.name for e in errors] == [str(inputs[0]), str(inputs[2])]
    assert all(isinstance(e.error, OutputError) for e in errors)
    assert "--overwrite" in str(errors[0].error) and "b.wav" in str(errors[1].error)
    plan, errors = plan_outputs(inputs[:2], out, ["srt"], overwrite=True)
    assert len(plan) == 2 and errors == []


def test_clips_claim_their_outputs_before_the_transcripts_beside_them(tmp_path):
    """`rec/*` over take1.txt, take1.wav (sorted: the .txt first): the clip gets take1.srt, and the .txt
    (not audio by its name: it fails as audio anyway) is the one refused; errors stay in input order."""
    inputs = [tmp_path / "take1.txt", tmp_path / "take1.wav", tmp_path / "take2.txt", tmp_path / "take2.flac"]
    plan, errors = plan_outputs(inputs, tmp_path / "out", ["srt"], overwrite=False)
    assert list(plan) == [tmp_path / "take1.wav", tmp_path / "take2.flac"]
    assert [e.name for e in errors] == [str(inputs[0]), str(inputs[2])]
    assert f"would also be written for {inputs[1]}" in str(errors[0].error)
    # two clips of one name: the first named keeps it, as before
    plan, errors = plan_outputs([tmp_path / "x.wav", tmp_path / "x.flac"], tmp_path / "out", ["srt"], False)
    assert list(plan) == [tmp_path / "x.wav"] and "would also be written for" in str(errors[0].error)


def test_an_output_name_taken_by_a_directory_fails_even_with_overwrite(tmp_path):
    (tmp_path / "a.txt").mkdir()
    plan, errors = plan_outputs([tmp_path / "in" / "a.wav"], tmp_path, ["txt"], overwrite=True)
    assert plan == {} and "is a directory" in str(errors[0].error)


def test_an_output_that_is_an_input_of_the_run_fails_even_with_overwrite(tmp_path):
    """Writing it would replace audio that is being read: its own input, another input, or the file an
    input names through a link. Other inputs go ahead; no input is touched."""
    own, other, real = tmp_path / "x.txt", tmp_path / "b.txt", tmp_path / "real.flac"
    for p in (own, other, real):
        p.write_bytes(b"audio")
    (tmp_path / "link.wav").symlink_to(real)
    inputs = [
        own,
        tmp_path / "b.wav",
        other,
        tmp_path / "link.wav",
        tmp_path / "real.wav",
        tmp_path / "ok.wav",
    ]
    plan, errors = plan_outputs(inputs, tmp_path, ["txt", "flac"], overwrite=True)
    assert list(plan) == [tmp_path / "link.wav", tmp_path / "ok.wav"]
    assert [e.name for e in errors] == [
        str(own),
        str(tmp_path / "b.wav"),
        str(other),
        str(tmp_path / "real.wav"),
    ]
    assert all("is an input of this run" in str(e.error) for e in errors)
    assert all(p.read_bytes() == b"audio" for p in (own, other, real))


def test_an_output_dir_this_process_cannot_write_is_an_output_error(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as for a non-root user on a 0o555 dir
    with pytest.raises(OutputError, match="cannot write there"):
        prepare_output_dir(tmp_path / "out")
    assert not (tmp_path / "out").exists()  # made for the check, taken back with the error


def test_an_output_dir_on_a_read_only_file_system_says_so(tmp_path, monkeypatch):
    """Not "permission denied" (new-user pass: a read-only mount)."""
    (tmp_path / "ro").mkdir()
    real = os.statvfs
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.setattr(os, "statvfs", lambda path: _Flags(real(path), os.ST_RDONLY))
    with pytest.raises(OutputError, match=r"cannot write there \(a read-only file system\)"):
        prepare_output_dir(tmp_path / "ro")


class _Flags:
    def __init__(self, st, flag: int):
        self.f_flag = st.f_flag | flag


def test_any_output_name_the_file_system_takes_is_written(tmp_path):
    """Output names of 242–255 bytes were refused because the temporary name they are written through
    (".NAME.XXXXXXXX.tmp") would not fit; now its NAME part is cut short (new-user pass). Past the file
    system's longest name the input fails with one clear error, as before."""
    (tmp_path / "out").mkdir()
    fits, too_long = tmp_path / ("a" * 246 + ".wav"), tmp_path / ("b" * 251 + ".wav")  # 250, 255 bytes
    for p in (fits, too_long):
        p.write_bytes(b"audio")
    plan, errors = plan_outputs([fits, too_long], tmp_path / "out", ["json", "txt"], overwrite=False)
    assert list(plan) == [fits] and len(errors) == 1
    assert "too long for the file system" in str(errors[0].error) and "b" * 251 in str(errors[0].error)
    for out in plan[fits]:  # 251 and 250 bytes
        write_atomic(out, "text\n", overwrite=False)
        assert out.read_text() == "text\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(o.name for o in plan[fits])


def test_write_atomic_replaces_whole_files_with_a_normal_mode(tmp_path):
    path = tmp_path / "a.txt"
    write_atomic(path, "one\n")
    write_atomic(path, "two\n")
    assert path.read_text() == "two\n" and os.listdir(tmp_path) == ["a.txt"]
    assert path.stat().st_mode & 0o644 == 0o644


def test_write_atomic_leaves_nothing_behind_on_failure(tmp_path, monkeypatch):
    def fail(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OutputError, match="No space left"):
        write_atomic(tmp_path / "a.txt", "text")
    assert os.listdir(tmp_path) == []
    with pytest.raises(OutputError, match="cannot write"):
        write_atomic(tmp_path / "missing" / "a.txt", "text")


def test_a_dangling_link_holds_its_output_name(tmp_path):
    (tmp_path / "a.txt").symlink_to(tmp_path / "nowhere")
    plan, errors = plan_outputs([tmp_path / "in" / "a.wav"], tmp_path, ["txt"], overwrite=False)
    assert plan == {} and "exists" in str(errors[0].error)


def test_an_output_dir_that_cannot_be_created_is_an_output_error(tmp_path, monkeypatch):
    from pathlib import Path

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(OutputError, match="cannot create it \\(Permission denied\\)"):
        prepare_output_dir(tmp_path / "ro" / "sub")


def test_a_directory_this_process_may_not_read_is_an_input_error(folder, monkeypatch):
    """An unreadable directory (named, or holding the named file): one input error, no traceback."""
    from pathlib import Path

    real = Path.is_dir

    def is_dir(self):
        if self.name in ("sub", "c.WAV"):
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "is_dir", is_dir)
    paths, errors = expand_inputs([str(folder / "sub"), str(folder / "sub" / "c.WAV"), str(folder / "b.wav")])
    assert names(paths) == ["b.wav"]
    assert [e.name for e in errors] == [str(folder / "sub"), str(folder / "sub" / "c.WAV")]
    assert all("cannot read it (Permission denied)" in str(e.error) for e in errors)
    with pytest.raises(OutputError, match="cannot look at it"):
        prepare_output_dir(folder / "sub")
