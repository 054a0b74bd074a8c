"""Word error rate: normalisation, exact counts on hand-made pairs, and finding clips with references."""

import pytest

from voxtral.errors import AudioError, OptionError
from voxtral.evaluate import Score, find_clips, normalize, read_reference, score, total


def test_normalize():
    assert normalize("Don't  worry—about HIM. I can't!\n'em, well-known 20%") == (
        "dont worry about him i cant em well known 20"
    )
    assert normalize("Ｃafé  ÜBER’s") == "café übers"
    assert normalize(" .,;! ") == ""


def test_known_wer_of_a_hand_made_pair():
    # the quick brown fox | jumps→jumped (S) | over | the (D) | lazy dog | +today (I): 3 errors / 9 words
    reference = "The quick brown fox jumps over the lazy dog."
    s = score(reference, "the quick brown fox jumped over lazy dog, today!")
    assert (s.words, s.substitutions, s.deletions, s.insertions) == (9, 1, 1, 1)
    assert s.errors == 3 and s.wer == 3 / 9


def test_perfect_and_empty_hypotheses():
    assert score("Hello, world!", "hello world").wer == 0.0
    assert score("one two three", "").wer == 1.0
    with pytest.raises(OptionError, match="no words"):
        score(" ... ", "anything")


def test_overall_wer_is_total_errors_over_total_words():
    a, b = score("a b c d", "a x c d"), score("e f", "")
    assert total([a, b]) == Score(6, 1, 2, 0) and total([a, b]).wer == 3 / 6
    assert total([]).wer == 0.0


@pytest.fixture
def clips(tmp_path):
    for name in ("one", "two", "lonely"):
        (tmp_path / f"{name}.wav").write_bytes(b"x")
    (tmp_path / "one.txt").write_text("first reference", encoding="utf-8")
    (tmp_path / "two.txt").write_text("second", encoding="utf-8")
    return tmp_path


def test_directory_gives_clips_that_have_references(clips, caplog):
    found, errors = find_clips([str(clips)])
    assert [p.name for p in found] == ["one.wav", "two.wav"] and errors == []
    assert read_reference(found[0]) == "first reference"
    # the clip without a reference is left out of the set, and a warning says so (a glob naming it
    # would count it as a failure: there the user named that file)
    want = f"{clips}: 1 audio file without a reference .txt of the same name left out (lonely.wav)"
    assert want in caplog.text


def test_many_clips_left_out_are_counted(tmp_path, caplog):
    (tmp_path / "a.wav").write_bytes(b"x")
    (tmp_path / "a.txt").write_text("words", encoding="utf-8")
    for i in range(5):
        (tmp_path / f"n{i}.wav").write_bytes(b"x")
    find_clips([str(tmp_path)])
    want = "5 audio files without a reference .txt of the same name left out (n0.wav, n1.wav, n2.wav, …)"
    assert want in caplog.text


def test_list_file_pattern_and_explicit_clips(clips):
    (clips / "list.lst").write_text("# eval set\ntwo.wav\n\nlonely.wav\nmissing.wav\n")
    found, errors = find_clips([str(clips / "list.lst"), str(clips / "o*.wav"), str(clips / "two.wav")])
    assert [p.name for p in found] == ["two.wav", "one.wav"]
    assert [type(e.error) for e in errors] == [AudioError, AudioError]
    assert "no reference transcript lonely.txt" in str(errors[0].error)
    assert "not found" in str(errors[1].error)


def test_a_directory_named_in_a_list_is_said_so(clips):
    """Not "file not found": the directory is there, a list names clips (new-user pass)."""
    (clips / "sub").mkdir()
    (clips / "list.lst").write_text("sub\ntwo.wav\n")
    found, errors = find_clips([str(clips / "list.lst")])
    assert [p.name for p in found] == ["two.wav"] and len(errors) == 1
    assert "sub: is a directory (listed in" in str(errors[0].error), errors[0].error


def test_a_byte_order_mark_is_not_part_of_a_listed_name_or_a_reference(clips):
    """Windows Notepad starts UTF-8 files with U+FEFF (new-user pass)."""
    (clips / "list.lst").write_text("\ufefftwo.wav\none.wav\n", encoding="utf-8")
    (clips / "two.txt").write_text("\ufeffsecond", encoding="utf-8")
    found, errors = find_clips([str(clips / "list.lst")])
    assert [p.name for p in found] == ["two.wav", "one.wav"] and errors == []
    assert read_reference(found[0]) == "second"


@pytest.mark.parametrize("text", ["", "# only a comment\n\n", "\n", "\ufeff  \n"])
def test_a_list_naming_no_clip_is_an_error(clips, text):
    """An empty list file scored nothing, printed nothing and exited 0 (new-user pass)."""
    (clips / "list.lst").write_text(text, encoding="utf-8")
    found, errors = find_clips([str(clips / "list.lst")])
    assert found == [] and len(errors) == 1 and "names no clip" in str(errors[0].error)


def test_a_reference_that_is_a_directory_is_said_so(clips):
    """Not "no reference transcript two.txt beside it" (new-user pass)."""
    (clips / "two.txt").unlink()
    (clips / "two.txt").mkdir()
    found, errors = find_clips([str(clips / "two.wav")])
    assert found == [] and "is a directory, not a transcript file" in str(errors[0].error)


def test_directory_without_references_is_an_error(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x")
    found, errors = find_clips([str(tmp_path), str(tmp_path / "nothing*.wav")])
    assert found == [] and len(errors) == 2
    assert "has a reference .txt of the same name beside it (a.wav)" in str(errors[0].error)  # named
    empty = tmp_path / "empty"
    empty.mkdir()
    found, errors = find_clips([str(empty)])
    assert found == [] and f"{empty}: no audio file here;" in str(errors[0].error)


def test_a_directory_this_process_may_not_read_is_said_so(tmp_path, monkeypatch):
    """Not "cannot read this list": an unreadable directory is a directory (new-user pass)."""
    from pathlib import Path

    (tmp_path / "clips").mkdir()
    real = Path.iterdir

    def iterdir(self):
        if self.name == "clips":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    clips, errors = find_clips([str(tmp_path / "clips")])
    assert clips == [] and len(errors) == 1
    assert "cannot read the directory (Permission denied)" in str(errors[0].error)


def test_transcripts_are_no_clips_in_a_glob_and_no_list_when_named(clips):
    """`dir/*` passes the clips and their .txt transcripts: the transcripts are not clips (they failed
    as audio, exit 3, though every clip was scored); a transcript named alone is not read as a list
    file (its sentence was reported as a missing clip). New-user pass."""
    (clips / "list.txt").write_text("one.wav\n", encoding="utf-8")  # a list file named .txt stays a list
    found, errors = find_clips([str(clips / "*")])
    assert [p.name for p in found] == ["one.wav", "two.wav"]
    assert [e.name for e in errors] == [str(clips / "list.txt"), str(clips / "lonely.wav")]
    assert "a .txt file is a transcript or a list, not a clip" in str(errors[0].error)
    found, errors = find_clips([str(clips / "one.txt")])
    assert found == [] and "is the reference transcript of" in str(errors[0].error)
    found, errors = find_clips([str(clips / "list.txt")])
    assert [p.name for p in found] == ["one.wav"] and errors == []
