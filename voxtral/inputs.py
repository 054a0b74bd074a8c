"""Inputs and outputs of a run: files, directories and globs → audio paths; output paths; atomic writes.

Nothing here prints or transcribes: the CLI drives the run and renders progress and errors. Inputs are
checked (exist, are files, can be opened) before any model is loaded. An output file is written through
a temporary file in its directory and put in place atomically; without overwrite it is put in place
only if no file of that name exists at that moment (a hard link, which fails if the name is taken), so
a file that appears during the run is never replaced either.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .audio_blocks import STDIN, header_seconds, is_regular_file
from .errors import AudioError, OptionError, OutputError, VoxtralError

log = logging.getLogger(__name__)

# what a directory is searched for: audio containers, and video ones (their first audio track)
AUDIO_SUFFIXES = frozenset(
    (
        ".wav .wave .flac .ogg .oga .opus .mp3 .mp2 .aif .aiff .aifc .au .snd .caf .w64 .rf64 .m4a .m4b .mp4 "
        ".aac .webm .weba .mka .mkv .mov .wma .amr .3gp .ac3 .spx .avi .ts .mts .m2ts .mpg .mpeg .flv .wmv"
    ).split()
)
GLOB_CHARS = frozenset("*?[")
APPLE_DOUBLE = b"\x00\x05\x16\x07"  # the magic number of macOS's `._name` companion files
NO_AUDIO_HERE = f"no audio files in this directory (looked for {' '.join(sorted(AUDIO_SUFFIXES))})"


@dataclass(frozen=True)
class InputError:
    """An input argument (path or pattern) that failed before or during transcription."""

    name: str
    error: VoxtralError


# STDIN (audio_blocks.py): what `-` is read as (once, front to back)


def shown(path) -> str:
    """An input's name as the user knows it: `-` for standard input (read as /dev/stdin), else the path."""
    return "-" if str(path) == STDIN else str(path)


def shown_message(message: str, path) -> str:
    """A message about an input with the input named as shown() names it."""
    return message.replace(STDIN, "-", 1) if str(path) == STDIN else message


def is_audio(path: Path) -> bool:
    """True for a file name with an audio suffix (case-insensitive)."""
    return path.suffix.lower() in AUDIO_SUFFIXES


def audio_files_in(directory: Path) -> list[Path]:
    """The audio files directly inside a directory, sorted by name (symlinked directories not entered);
    a broken link with an audio name is one too, so that it is reported, not skipped unseen. macOS's
    AppleDouble companions (`._name.wav`) are not audio: left out."""
    return sorted(
        p
        for p in directory.iterdir()
        if is_audio(p) and (p.is_file() or _broken_link(p)) and not apple_double(p)
    )


def apple_double(path: Path) -> bool:
    """Whether a file is a macOS AppleDouble companion (`._x.wav`, written beside x.wav on volumes without
    resource forks: USB drives, network shares): its name and its magic number 0x00051607."""
    if not path.name.startswith("._"):
        return False
    try:
        with open(path, "rb") as f:
            return f.read(4) == APPLE_DOUBLE
    except OSError:
        return False


def _broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def _expand_one(arg: str) -> list[Path]:
    """One argument → its paths: a directory's audio files, a pattern's matches, or the path itself."""
    path = Path(arg)
    if path.is_dir():
        found = audio_files_in(path)
        if not found:
            raise AudioError(f"{arg}: {NO_AUDIO_HERE}")
        return found
    if not path.exists() and GLOB_CHARS & set(arg):
        found = _glob(arg)
        if not found:
            raise AudioError(f"{arg}: no file matches this pattern; check it (quote it for the shell)")
        # a directory it matches stands for its audio files, as when the shell expands the pattern; one
        # without any stays itself, to fail as an input (never skipped unseen)
        return [q for p in found for q in ((audio_files_in(p) or [p]) if p.is_dir() else [p])]
    return [path]


def _glob(pattern: str) -> list[Path]:
    """The files a pattern matches, and the directories unless it recurses, sorted; '**' recurses
    without following symlinked directories (pathlib's rule), so a link loop cannot make it run on. A
    pattern ending in '**' (`tree/**`) means the audio files anywhere below, as a directory argument
    means the audio files in it."""
    path = Path(pattern)
    base, relative = (
        (Path(path.anchor), str(path.relative_to(path.anchor))) if path.anchor else (Path(), pattern)
    )
    recursive = path.name == "**"
    if recursive:
        relative = str(Path(relative) / "*")
    return sorted(
        p
        for p in base.glob(relative)
        if (p.is_file() and (is_audio(p) or not recursive) and not apple_double(p))
        or (p.is_dir() and "**" not in pattern)
        or (_broken_link(p) and is_audio(p))
    )


def expand_inputs(args: list[str]) -> tuple[list[Path], list[InputError]]:
    """Files as given, directories → their audio files, glob patterns → matches; no duplicates; each
    path checked to be a readable file (an input that is not fails here, before any model loads)."""
    paths: list[Path] = []
    errors: list[InputError] = []
    seen: set[str] = set()
    for arg in args:
        try:
            found = _expand_one(arg)
        except VoxtralError as e:
            errors.append(InputError(arg, e))
            continue
        except OSError as e:  # a directory it names or lies in that this process may not read
            errors.append(_unreadable(arg, e))
            continue
        for p in found:
            key = os.path.abspath(p)
            if key in seen:
                log.warning("%s: named more than once; transcribed once", shown(p))
                continue
            seen.add(key)
            try:
                check_readable(p)
            except VoxtralError as e:
                errors.append(InputError(str(p), e))
                continue
            except OSError as e:
                errors.append(_unreadable(str(p), e))
                continue
            paths.append(p)
    return paths, errors


def _unreadable(name: str, e: OSError) -> InputError:
    """The input error of a path whose directory this process may not read."""
    return InputError(name, AudioError(f"{name}: cannot read it ({e.strerror}); check the permissions"))


def check_readable(path: Path) -> None:
    """AudioError unless path is a file this process can open (its content is checked when read)."""
    if _broken_link(path):
        raise AudioError(
            f"{path}: a broken link (to {os.readlink(path)}, which does not exist); fix or remove it"
        )
    if not path.exists():
        raise AudioError(f"{path}: file not found; check the path")
    if path.is_dir():  # named as a file, or matched by a pattern (with no audio file in it)
        if not audio_files_in(path):
            raise AudioError(f"{path}: {NO_AUDIO_HERE}")
        raise AudioError(f"{path}: is a directory; pass an audio file inside it")
    if not is_regular_file(path):  # a pipe or FIFO: opening it would wait for, or use up, its data
        if not os.access(path, os.R_OK):
            raise AudioError(f"{path}: cannot open (permission denied); check its permissions")
        return
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise AudioError(f"{path}: cannot open ({e.strerror}); check its permissions") from None


def audio_seconds(path: Path) -> float:
    """The duration from the file's header (no decoding); 0.0 when it cannot be read or is a pipe."""
    return header_seconds(path) or 0.0


def prepare_output_dir(output_dir: Path) -> list[Path]:
    """Create the output directory (and its parents) if needed; OptionError if it names a file,
    OutputError if it cannot be created or written in (all before any model loads). Returns the
    directories it created, deepest first (remove_empty takes them back if the run never starts)."""
    try:
        is_file = output_dir.exists() and not output_dir.is_dir()
        above = next((p for p in output_dir.parents if p.exists() and not p.is_dir()), None)
        new = [p for p in (output_dir, *output_dir.parents) if not (p.exists() or p.is_symlink())]
    except OSError as e:  # a directory above it that this process may not enter
        raise OutputError(f"--output-dir {output_dir}: cannot look at it ({e.strerror})") from None
    if is_file:
        raise OptionError(f"--output-dir {output_dir}: is a file, not a directory; pass a directory")
    if above is not None:
        raise OptionError(f"--output-dir {output_dir}: {above} is a file, not a directory; pass a directory")
    if output_dir.is_symlink() and not output_dir.exists():
        target = os.readlink(output_dir)
        raise OptionError(
            f"--output-dir {output_dir}: a broken link (to {target}, which does not exist); fix it"
        )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"--output-dir {output_dir}: cannot create it ({e.strerror})") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        remove_empty(new)
        why = "a read-only file system" if _read_only(output_dir) else "permission denied"
        raise OutputError(f"--output-dir {output_dir}: cannot write there ({why})")
    return new


def _read_only(path: Path) -> bool:
    """Whether path is on a file system mounted read-only (os.access says only that it is not writable)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows)
        return False


def remove_empty(directories: list[Path]) -> None:
    """Remove these directories, deepest first, while they are empty (what prepare_output_dir created
    for a run that then wrote nothing: a model that did not load, a stop during the load)."""
    for d in directories:
        try:
            d.rmdir()
        except OSError:  # not empty (something else wrote there), or gone
            return


def output_paths(path: Path, output_dir: Path, formats: list[str]) -> list[Path]:
    """OUTPUT_DIR/STEM.FORMAT for each format."""
    return [output_dir / f"{path.stem}.{fmt}" for fmt in formats]


def plan_outputs(
    paths: list[Path], output_dir: Path, formats: list[str], overwrite: bool
) -> tuple[dict[Path, list[Path]], list[InputError]]:
    """Outputs per input; an input whose output exists (without overwrite), is taken by another, or is an
    input of the run (even with overwrite: its audio would be lost) fails. Inputs with an audio suffix
    claim their outputs first: `rec/*` over clips with transcripts beside them (take1.wav, take1.txt)
    writes the clips' outputs, and the .txt files fail (as audio, or for the taken name), not the clips.
    Errors come in input order."""
    plan: dict[Path, list[Path]] = {}
    failed: dict[Path, InputError] = {}
    owner: dict[Path, Path] = {}
    most = _name_max(output_dir)
    inputs = {i for p in paths for i in (_file_id(p, os.stat), _file_id(p, os.lstat)) if i is not None}
    for path in sorted(paths, key=lambda p: not is_audio(p)):  # stable: input order within each kind
        outs, who = output_paths(path, output_dir, formats), shown(path)
        long = next((o for o in outs if len(o.name.encode("utf-8", "surrogateescape")) > most), None)
        taken = next((o for o in outs if o in owner), None)
        existing = next((o for o in outs if os.path.lexists(o)), None)  # a dangling link holds its name
        source = next((o for o in outs if _file_id(o, os.lstat) in inputs), None)  # (a link is replaced)
        if long is not None:
            name, why = repr(long.name), f"at most {most} bytes"
            msg = f"{who}: its output name {name} is too long for the file system ({why}); rename the input"
        elif source is not None:
            msg = f"{who}: its output {source} is an input of this run; use another --output-dir"
        elif existing is not None and existing.is_dir():
            msg = f"{who}: its output {existing} is a directory; move it or use another --output-dir"
        elif taken is not None:
            other = shown(owner[taken])
            msg = f"{who}: its output {taken} would also be written for {other}; run them separately"
        elif existing is not None and not overwrite:
            msg = f"{who}: {exists_message(existing)}"
        else:
            owner.update(dict.fromkeys(outs, path))
            plan[path] = outs
            continue
        failed[path] = InputError(who, OutputError(msg))
    return {p: plan[p] for p in paths if p in plan}, [failed[p] for p in paths if p in failed]


def _file_id(path: Path, stat) -> tuple[int, int] | None:
    """(device, inode) of path by stat (os.stat follows links, os.lstat does not), or None."""
    try:
        st = stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _name_max(directory: Path) -> int:
    """The longest file name (bytes) the file system of directory takes (255 where it does not say)."""
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _stage_prefix(path: Path) -> str:
    """mkstemp's prefix for path's temporary file: ".NAME.", NAME cut short where the whole temporary name
    (mkstemp adds 8 random characters, then ".tmp") would pass the file system's longest name: any name
    the file system takes can be written (names of 242–255 bytes were refused)."""
    name, room = path.name, _name_max(path.parent) - len("..") - 8 - len(".tmp")
    while name and len(name.encode("utf-8", "surrogateescape")) > room:
        name = name[:-1]
    return f".{name}."


def exists_message(path: Path) -> str:
    return f"{path} exists; pass --overwrite to replace it (or use another --output-dir)"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str, overwrite: bool = True) -> None:
    """Write via a temporary file in the same directory, then put it in place: never a half-written
    file. Without overwrite, OutputError if the name is taken at that moment (nothing is replaced)."""
    write_together({path: text}, overwrite=overwrite)


def write_together(files: dict[Path, str], overwrite: bool = True, owner: str | None = None) -> None:
    """Write several files (one input's formats) all or none: each to a temporary file beside it first,
    then each put in place. Without overwrite a name taken at that moment (a file that appeared during
    the run) fails the whole set: OutputError, prefixed with owner (the input) when given, the files
    already placed by this call removed again and no temporary file left."""
    staged: dict[Path, str] = {}
    placed: list[Path] = []
    try:
        for path, text in files.items():
            staged[path] = _stage(path, text)
        for path, tmp in staged.items():
            _place(tmp, path, overwrite)
            placed.append(path)
    except BaseException as e:  # an error, Ctrl-C, SIGTERM (the CLI makes it an exception)
        for tmp in staged.values():
            Path(tmp).unlink(missing_ok=True)
        if not overwrite:
            for path in placed:  # made by this call (a hard link to a name that was free): ours to remove
                path.unlink(missing_ok=True)
        if isinstance(e, _Taken):
            prefix = f"{owner}: its output " if owner else ""
            raise OutputError(
                f"{prefix}{e.path} appeared during the run; pass --overwrite to replace it"
            ) from None
        raise


class _Taken(Exception):
    def __init__(self, path: Path):
        self.path = path


def _stage(path: Path, text: str) -> str:
    """A temporary file beside path holding text, with a normal file's mode; its name."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_stage_prefix(path), suffix=".tmp")
    except OSError as e:
        hint = (
            "check the directory's permissions"
            if e.errno in (errno.EACCES, errno.EPERM)
            else "check the directory"
        )
        raise OutputError(f"{path}: cannot write ({e.strerror}); {hint}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OutputError(
                f"{path}: cannot write ({e.strerror}); check free space and permissions"
            ) from None
        raise
    return tmp


def _place(tmp: str, path: Path, overwrite: bool) -> None:
    """Give tmp the name path: replacing with overwrite, else only if the name is free (a hard link
    fails if it is taken); _Taken if it is."""
    try:
        if overwrite:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise _Taken(path) from None
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
                raise
            if path.exists():  # a file system without hard links: check, then rename (a small window)
                raise _Taken(path) from None
            os.replace(tmp, path)
            return
        os.unlink(tmp)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror}); check free space and permissions") from None
