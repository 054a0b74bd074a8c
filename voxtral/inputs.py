"""Inputs and outputs of a run: files, directories and globs → audio paths; output paths; atomic writes.

Nothing here prints or transcribes: the CLI drives the loop and renders progress and errors.
"""

from __future__ import annotations

import glob
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from .errors import AudioError, OutputError, VoxtralError

# what a directory is searched for (libsndfile's common containers, MP3 included since 1.1)
AUDIO_SUFFIXES = frozenset(
    ".wav .wave .flac .ogg .oga .opus .mp3 .aif .aiff .aifc .au .snd .caf .w64 .rf64".split()
)
GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class InputError:
    """An input argument (path or pattern) that failed before transcription."""

    name: str
    error: VoxtralError


def is_audio(path: Path) -> bool:
    """True for a file name with an audio suffix (case-insensitive)."""
    return path.suffix.lower() in AUDIO_SUFFIXES


def audio_files_in(directory: Path) -> list[Path]:
    """The audio files directly inside a directory, sorted by name."""
    return sorted(p for p in directory.iterdir() if p.is_file() and is_audio(p))


def _expand_one(arg: str) -> list[Path]:
    """One argument → its paths: a directory's audio files, a pattern's matches, or the path itself."""
    path = Path(arg)
    if path.is_dir():
        found = audio_files_in(path)
        if not found:
            suffixes = " ".join(sorted(AUDIO_SUFFIXES))
            raise AudioError(f"{arg}: no audio files in this directory (looked for {suffixes})")
        return found
    if not path.exists() and GLOB_CHARS & set(arg):
        found = sorted(Path(p) for p in glob.glob(arg, recursive=True) if Path(p).is_file())
        if not found:
            raise AudioError(f"{arg}: no file matches this pattern; check it (quote it for the shell)")
        return found
    return [path]


def expand_inputs(args: list[str]) -> tuple[list[Path], list[InputError]]:
    """Files as given, directories → their audio files, glob patterns → matches; no duplicates."""
    paths: list[Path] = []
    errors: list[InputError] = []
    seen: set[str] = set()
    for arg in args:
        try:
            found = _expand_one(arg)
        except VoxtralError as e:
            errors.append(InputError(arg, e))
            continue
        for p in found:
            key = os.path.abspath(p)
            if key not in seen:
                seen.add(key)
                paths.append(p)
    return paths, errors


def audio_seconds(path: Path) -> float:
    """The duration from the file's header (no decoding); 0.0 when it cannot be read."""
    try:
        return float(sf.info(str(path)).duration)
    except Exception:  # any unreadable file: the transcription reports it properly
        return 0.0


def output_paths(path: Path, output_dir: Path, formats: list[str]) -> list[Path]:
    """OUTPUT_DIR/STEM.FORMAT for each format."""
    return [output_dir / f"{path.stem}.{fmt}" for fmt in formats]


def plan_outputs(
    paths: list[Path], output_dir: Path, formats: list[str], overwrite: bool
) -> tuple[dict[Path, list[Path]], list[InputError]]:
    """Outputs per input; an input whose output exists (without overwrite) or is taken by another fails."""
    plan: dict[Path, list[Path]] = {}
    errors: list[InputError] = []
    owner: dict[Path, Path] = {}
    for path in paths:
        outs = output_paths(path, output_dir, formats)
        taken = next((o for o in outs if o in owner), None)
        existing = next((o for o in outs if o.exists()), None)
        if taken is not None:
            msg = f"{path}: its output {taken} would also be written for {owner[taken]}; run them separately"
            errors.append(InputError(str(path), OutputError(msg)))
        elif existing is not None and not overwrite:
            msg = f"{existing} exists; pass --overwrite to replace it (or use another --output-dir)"
            errors.append(InputError(str(path), OutputError(f"{path}: {msg}")))
        else:
            owner.update(dict.fromkeys(outs, path))
            plan[path] = outs
    return plan, errors


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory, then rename: never a half-written file."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror}); check the directory's permissions") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({e.strerror}); check free space and permissions") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
