"""Word error rate against reference transcripts: normalised text, counted with jiwer.

A clip's reference is the `.txt` file of the same name beside it. Normalisation (both sides):
Unicode NFKC, lower case, apostrophes removed ("don't" → "dont"), every other punctuation mark or
symbol replaced by a space, whitespace collapsed. Numbers are not spelled out ("20" ≠ "twenty").
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import jiwer

from .errors import AudioError, OptionError
from .inputs import InputError, audio_files_in, expand_inputs, is_audio

log = logging.getLogger(__name__)
SKIPPED_NAMED = 3  # clips without a reference a directory's warning names (then "…")

APOSTROPHES = frozenset("'’ʼ`´")


def normalize(text: str) -> str:
    """Lower-case words without punctuation, separated by single spaces."""
    chars = []
    for ch in unicodedata.normalize("NFKC", text).lower():
        if ch in APOSTROPHES:
            continue
        chars.append(" " if unicodedata.category(ch)[0] in "PSZC" else ch)
    return " ".join("".join(chars).split())


@dataclass(frozen=True)
class Score:
    """Word edit counts of a hypothesis against a reference of `words` words."""

    words: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        return self.errors / self.words if self.words else 0.0

    def __add__(self, other: Score) -> Score:
        return Score(
            self.words + other.words,
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
        )


def score(reference: str, hypothesis: str) -> Score:
    """Edit counts of the normalised hypothesis against the normalised (non-empty) reference."""
    for name, text in (("reference", reference), ("hypothesis", hypothesis)):
        if not isinstance(text, str):  # normalize(None) was a TypeError
            raise OptionError(f"score(): the {name} must be a str, got {type(text).__name__}")
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        raise OptionError("the reference has no words after normalisation; put its transcript in it")
    out = jiwer.process_words(ref, hyp)
    return Score(len(ref.split()), out.substitutions, out.deletions, out.insertions)


def total(scores: list[Score]) -> Score:
    """Corpus totals: overall WER is all errors over all reference words."""
    return sum(scores, Score())


def reference_of(audio: Path) -> Path:
    """The reference transcript beside an audio file: same name, `.txt`."""
    return audio.with_suffix(".txt")


def read_reference(audio: Path) -> str:
    """The reference text of a clip; AudioError naming the file when it is missing or unreadable."""
    ref = reference_of(audio)
    try:
        return ref.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is no text
    except (OSError, UnicodeDecodeError) as e:
        raise AudioError(f"{ref}: cannot read the reference ({e}); save it as UTF-8 text") from None


def _list_file(path: Path) -> list[Path]:
    """Audio paths listed in a text file, one a line (relative to the list file's folder; `#` comments;
    UTF-8, with or without a byte-order mark)."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    clips = [path.parent / line for line in lines if line and not line.startswith("#")]
    if not clips:  # an empty list scored nothing and said nothing, exit 0
        raise AudioError(f"{path}: the list names no clip; put one audio path a line (# for comments)")
    return clips


def _clips_of(arg: str) -> list[Path]:
    """One argument → clips: a directory's audio files that have references, an audio file, or a list."""
    path = Path(arg)
    if path.is_dir():
        try:
            audio = audio_files_in(path)
        except OSError as e:  # a directory this process may not read: not a list file
            raise AudioError(
                f"{arg}: cannot read the directory ({e.strerror}); check its permissions"
            ) from None
        found = [p for p in audio if reference_of(p).is_file()]
        skipped = [p.name for p in audio if p not in found]
        names = ", ".join(skipped[:SKIPPED_NAMED]) + (", …" if len(skipped) > SKIPPED_NAMED else "")
        if not audio:
            raise AudioError(
                f"{arg}: no audio file here; pass a directory of clips with their .txt transcripts"
            )
        if not found:
            raise AudioError(
                f"{arg}: no audio file here has a reference .txt of the same name beside it ({names})"
            )
        if skipped:  # the evaluation set is the clips with references; say which were left out
            what = f"{len(skipped)} audio file" + ("" if len(skipped) == 1 else "s")
            log.warning("%s: %s without a reference .txt of the same name left out (%s)", arg, what, names)
        return found
    if path.is_file() and not is_audio(path):
        clip = _clip_of_reference(path)
        if clip is not None:  # not a list: a transcript beside its clip
            raise AudioError(
                f"{arg}: is the reference transcript of {clip}; pass the clip, or their directory"
            )
        return _list_file(path)
    paths, errors = expand_inputs([arg])
    if errors:
        raise errors[0].error
    transcripts = {reference_of(p) for p in paths if is_audio(p)}  # dir/* matches clips and their .txt
    return [p for p in paths if p not in transcripts]


def _clip_of_reference(path: Path) -> Path | None:
    """The audio file whose reference transcript path is (same name beside it), or None."""
    if path.suffix.lower() != ".txt":
        return None
    try:
        siblings = [p for p in path.parent.iterdir() if p.stem == path.stem and is_audio(p)]
    except OSError:
        return None
    return next((p for p in sorted(siblings) if reference_of(p) == path), None)


def _check_clip(clip: Path, listed_in: Path | None = None) -> None:
    """AudioError unless the clip exists and has a readable reference with words in it beside it."""
    if not clip.is_file():
        where = f" (listed in {listed_in}, relative to its folder)" if listed_in is not None else ""
        if clip.is_dir():  # a list names clips, one a line: a directory's clips are its own argument
            why = "list its clips one a line, or pass the directory as an argument"
            raise AudioError(f"{clip}: is a directory{where}; {why}")
        raise AudioError(f"{clip}: file not found{where}; check the path")
    if reference_of(clip) == clip:  # a .txt matched by a glob: it would be its own reference
        raise AudioError(f"{clip}: a .txt file is a transcript or a list, not a clip; pass audio files")
    if reference_of(clip).is_dir():
        raise AudioError(f"{clip}: its reference {reference_of(clip)} is a directory, not a transcript file")
    if not reference_of(clip).is_file():
        raise AudioError(f"{clip}: no reference transcript {reference_of(clip).name} beside it; add one")
    if not normalize(read_reference(clip)):
        raise AudioError(f"{reference_of(clip)}: the reference has no words; put the clip's transcript in it")


def find_clips(args: list[str]) -> tuple[list[Path], list[InputError]]:
    """Clips with references from directories, audio files, glob patterns or list files, in order."""
    clips: list[Path] = []
    errors: list[InputError] = []
    for arg in args:
        try:
            found = _clips_of(arg)
        except (AudioError, OSError, UnicodeDecodeError) as e:
            err = e if isinstance(e, AudioError) else AudioError(f"{arg}: cannot read this list ({e})")
            errors.append(InputError(arg, err))
            continue
        listed_in = Path(arg) if Path(arg).is_file() and not is_audio(Path(arg)) else None
        for clip in (c for c in found if c not in clips):
            try:
                _check_clip(clip, listed_in)
                clips.append(clip)
            except AudioError as e:
                errors.append(InputError(str(clip), e))
    return clips, errors
