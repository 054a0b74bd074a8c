"""The `voxtral` command line: transcribe, eval, info (here); stream (cli_live.py); bench, dev (cli_dev.py).

Text goes to stdout (or files in --output-dir); progress, timings and errors to stderr. A VoxtralError
or a bad option becomes one line `voxtral: error: …` and a non-zero exit code; with several inputs the
good ones are still done and the failures are summarised at the end. Inputs and options are checked
before any model is loaded. Exit codes: 0 ok, 2 bad option, 3 bad audio, 4 bad checkpoint, 5 no usable
device, 6 output not written, 7 live session, 130 Ctrl-C, 141 stdout closed by its reader, 143 SIGTERM.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from . import __version__
from .checkpoint import DEFAULT_MODEL
from .config import MAX_CAPACITY
from .errors import DeviceError, OptionError, VoxtralError
from .formats import WRITERS, json_document, one_line
from .inputs import (
    STDIN,
    InputError,
    audio_seconds,
    expand_inputs,
    plan_outputs,
    prepare_output_dir,
    remove_empty,
    shown,
    shown_message,
    write_together,
)
from .outputs import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    BrokenPipe,
    InOrder,
    Stdout,
    StdoutError,
    Terminated,
    silence_stdout,
    stop_signals,
    terminated_as,
)
from .progress import ONE_LINE, Progress, say

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

FLAG = {"metavar": ""}  # a flag takes no value: no `<bool>` in --help
# click's UsageError (typer ships its own click): the base of every bad-option error
USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _not_empty(value: str | None) -> str | None:
    """An option value that names something cannot be empty (`-m ''` would mean the current directory)."""
    if value is not None and not value.strip():
        raise typer.BadParameter("is empty")
    return value


def _directory(value: str | None) -> Path | None:
    if value == "-":  # not a directory named "-" made by surprise
        raise typer.BadParameter(
            "- is not standard output here: leave it out to get the text on stdout (./- names a directory -)"
        )
    return None if _not_empty(value) is None else Path(value)


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        metavar="DIR|ID",
        callback=_not_empty,
        help="Model directory, or Hugging Face Hub id.",
    ),
]
DEVICES = ("auto", "cpu", "cuda")
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device", "-d", metavar="DEVICE", callback=lambda v: v.strip().lower(), help="auto, cpu or cuda."
    ),
]
DelayOpt = Annotated[
    int | None,
    typer.Option("--delay-ms", metavar="MS", help="Transcription delay, 80–2400 ms in steps of 80."),
]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="No progress or timings on stderr (warnings and errors stay).", **FLAG
    ),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Also the model, device and each stage's time.", **FLAG)
]
FORMAT_NAMES = ", ".join(WRITERS)
MAX_NAMES_IN_SUMMARY = 10

# (input index, path, Transcript) → write it somewhere; Transcript None: that input failed (nothing to
# write, but outputs kept in input order go on past it)
Emit = Callable[[int, Path, object], None]


def _version(value: bool) -> None:
    if value:
        Stdout().write(f"voxtral {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.", **FLAG)
    ] = False,
) -> None:
    """Speech to text with Voxtral Mini 4B Realtime (Mistral's open weights), on an NVIDIA GPU or the CPU."""


def _error(message: str) -> None:
    say(f"voxtral: error: {message}")


_STOP_SAID: list[str] = []  # a stop's line was printed (main() prints one for a Ctrl-C nobody reported)


def _stop_said(message: str) -> None:
    say(f"voxtral: {message}")
    _STOP_SAID.append(message)


def _exit_on(e: VoxtralError) -> typer.Exit:
    _error(str(e))
    return typer.Exit(e.exit_code)


def _setup_logging(verbose: bool, quiet: bool) -> None:
    if verbose and quiet:
        raise _exit_on(OptionError("--verbose and --quiet contradict each other; pass one of them"))
    # --quiet drops progress and timings (printed only without it), never a warning: audio skipped in a
    # damaged file, a fallback to the CPU, an input named twice
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="voxtral: %(message)s", stream=sys.stderr, force=True)
    logging.raiseExceptions = False  # a closed or full stderr loses log lines, not the run


def _summary(name: str, t, verbose: bool) -> str:
    steps, tm = t.info["steps"], t.timings
    per_step = 1000 * tm.get("decode", 0.0) / max(steps, 1)
    line = (
        f"{name}: {t.duration:.1f} s audio, {steps} steps — mel {tm['mel'] * 1000:.0f} ms, "
        f"encoder {tm['encoder'] * 1000:.0f} ms, prefill {tm['prefill'] * 1000:.0f} ms, "
        f"decode {per_step:.1f} ms/step ({t.info['device']})"
    )
    if verbose:
        line += f"; reading {tm['audio'] * 1000:.0f} ms, delay {t.info['delay_ms']} ms"
    return line


def _check_input_names(inputs: list[str]) -> None:
    """OptionError for an empty input name ('' would mean the current directory) or a blank one that
    names no file."""
    for name in inputs:
        if not name.strip() and not (name and Path(name).exists()):
            raise OptionError(f"an input is empty ({name!r}); give audio files, directories or patterns")


def _stdin_as_file(inputs: list[str]) -> list[str]:
    """`-` → /dev/stdin (read once); OptionError when stdin is a terminal or closed, for `-` and for
    `/dev/stdin` named as such. A file named `-` is `./-`."""
    if "-" not in inputs and STDIN not in inputs:
        return inputs
    check_stdin("-" if "-" in inputs else STDIN)
    return [STDIN if name == "-" else name for name in inputs]


def check_stdin(what: str) -> None:
    """OptionError unless standard input is open and not a terminal (audio must be piped into it)."""
    if sys.stdin is None:
        raise OptionError(f"{what} reads audio from standard input, which is closed; pipe a file into it")
    if sys.stdin.isatty():
        raise OptionError(f"{what} reads audio from standard input, which is a terminal; pipe a file into it")


def _check_device_and_delay(device: str, delay_ms: int | None) -> None:
    """OptionError (or DeviceError for --device cuda without a usable GPU) before any input is read."""
    from .config import FRAME_MS, MAX_DELAY_MS
    from .gpu.device import unavailable_reason

    if device not in DEVICES:
        raise OptionError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if delay_ms is not None and not (FRAME_MS <= delay_ms <= MAX_DELAY_MS and delay_ms % FRAME_MS == 0):
        raise OptionError(
            f"--delay-ms must be a multiple of {FRAME_MS} from {FRAME_MS} to {MAX_DELAY_MS}, got {delay_ms}"
        )
    if device == "cuda" and (reason := unavailable_reason()):
        raise DeviceError(f"cannot use the GPU: {reason}; use --device cpu")


def _parse_formats(values: list[str] | None) -> list[str]:
    """`-f srt -f vtt`, `-f srt,vtt` or `-f all` → format names in order; OptionError for unknown ones."""
    names: list[str] = []
    for value in values or ["txt"]:
        for name in (n.strip().lower() for n in value.split(",")):
            if name not in (*WRITERS, "all"):
                raise OptionError(f"--format {name!r} is not a format; use {FORMAT_NAMES} or all")
            names += [n for n in (WRITERS if name == "all" else [name]) if n not in names]
    return names


def _load(
    model: str, device: str, delay_ms: int | None, quiet: bool, verbose: bool, batch_size: int = 1,
    interrupted: str = "nothing was written",
):  # fmt: skip
    """Load the model once; a VoxtralError exits with its one line, Ctrl-C or SIGTERM (raised as
    Terminated under main()) with one line ending in `interrupted` (what did not happen) and exit 130
    or 143."""
    import voxtral
    from voxtral.api import DEFAULT_CAPACITY

    try:
        m = voxtral.load(model, device=device, delay_ms=delay_ms, capacity=max(batch_size, DEFAULT_CAPACITY))
    except VoxtralError as e:
        raise _exit_on(e) from None
    except KeyboardInterrupt:
        _stop_said(f"interrupted (Ctrl-C) while loading the model; {interrupted}")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Terminated:
        _stop_said(f"terminated (SIGTERM) while loading the model; {interrupted}")
        raise typer.Exit(EXIT_TERMINATED) from None
    gc.collect()  # what loading left behind, then everything loaded leaves the collector's full passes
    gc.freeze()  # (~20–40 ms each, every few seconds of a run: they stop the engine thread)
    if not quiet:
        detail = f", {m.capacity} slots, delay {m.schedule.delay_ms} ms" if verbose else ""
        say(f"voxtral: loaded {m.checkpoint.directory} on {m.device} in {m.load_seconds:.1f} s{detail}")
    return m


class Run:
    """The inputs of one command through the model: results handed to emit, errors as one line each,
    a progress display, and a clean stop on Ctrl-C, SIGTERM or a closed stdout (what was and was not
    written is said)."""

    def __init__(self, paths: list[Path], quiet: bool, verbose: bool):
        self.paths, self.quiet, self.verbose = paths, quiet, verbose
        self.failed: dict[int, InputError] = {}  # by input index, as reported (a batch finishes out of order)
        self.done: list[int] = []  # inputs handed to emit (a writer that keeps input order may hold some)
        self.stop_code = 0
        self.partly_printed: Callable[[int], bool] = lambda i: False  # stdout had some of input i's text
        self.held_back: Callable[[int], bool] = lambda i: False  # done, waiting for an earlier input

    def go(self, m, emit: Emit, batch_size: int = 1, options: dict | None = None) -> None:
        # FFmpeg reads the lengths, and a KeyboardInterrupt raised inside its callbacks would be swallowed
        with stop_signals() as early:
            seconds = [audio_seconds(p) for p in self.paths]
        decoded = [0.0] * len(self.paths)
        with Progress(len(self.paths), sum(seconds), enabled=False if self.quiet else None) as progress:
            stop = early  # the StopRequest of stop_signals (the run's own, below)

            def on_progress(i: int, s: float) -> None:  # between engine ticks: a safe point
                stop.check()
                decoded[i] = min(s, seconds[i])
                progress.update(sum(decoded), len(self.done) + len(self.failed))

            try:
                early.check()  # a signal while the lengths were read
                with stop_signals() as stop:
                    results = m.transcribe_each(
                        self.paths, batch_size, on_progress=on_progress, **(options or {})
                    )
                    for i, t in results:
                        decoded[i] = seconds[i]
                        self._one(i, t, emit, progress)
                        del t  # written (or held by emit): not kept while the next one is made (MBs an hour)
                        progress.update(sum(decoded), len(self.done) + len(self.failed))
                        stop.check()
            except KeyboardInterrupt:
                self._stopped(progress, "interrupted (Ctrl-C)", EXIT_INTERRUPTED)
            except Terminated:
                self._stopped(progress, "terminated (SIGTERM)", EXIT_TERMINATED)
            except BrokenPipe:
                silence_stdout()
                self.stop_code = EXIT_BROKEN_PIPE
            except StdoutError as e:  # stdout itself failed: every later input would too
                progress.log(f"voxtral: error: {e}")
                self._stopped(progress, "stopped", e.exit_code)

    def _one(self, i: int, t, emit: Emit, progress: Progress) -> None:
        path = self.paths[i]
        try:
            if isinstance(t, VoxtralError):
                emit(i, path, None)
                raise t
            emit(i, path, t)
        except StdoutError:
            raise
        except VoxtralError as e:
            progress.log(f"voxtral: error: {shown_message(str(e), path)}")
            self.failed[i] = InputError(shown(path), e)
            return
        self.done.append(i)
        if not self.quiet:
            progress.log("voxtral: " + _summary(shown(path), t, self.verbose))

    def _stopped(self, progress: Progress, why: str, code: int) -> None:
        written = {i for i in self.done if not self.held_back(i)}
        failed = {f.name for f in self.failed.values()}

        def why_not(i: int) -> str:
            if self.held_back(i):
                return " (done, held back to keep the input order)"
            return " (partly printed)" if self.partly_printed(i) else ""

        left = [
            shown(p) + why_not(i)
            for i, p in enumerate(self.paths)
            if i not in written and shown(p) not in failed
        ]
        names = ", ".join(left[:MAX_NAMES_IN_SUMMARY]) + (" …" if len(left) > MAX_NAMES_IN_SUMMARY else "")
        progress.log(
            f"voxtral: {why}: {len(written)} of {len(self.paths)} inputs written"
            + (f"; not written: {names}" if left else "")
        )
        _STOP_SAID.append(why)
        self.stop_code = code

    def exit_code(self, earlier: list[InputError], n_inputs: int) -> int:
        """Summarise the failures (with several inputs) in input order, whatever the batch size; the stop
        code, else the code of the first failed input (those that cannot be opened come first)."""
        failed = earlier + [self.failed[i] for i in sorted(self.failed)]
        if failed and n_inputs > 1 and not self.stop_code:
            # an input whose text had begun on stdout when it failed says so (its lines are incomplete)
            partly = {self.failed[i].name for i in self.failed if self.partly_printed(i)}
            shown_names = [f.name + (" (partly printed)" if f.name in partly else "") for f in failed]
            names = ", ".join(shown_names[:MAX_NAMES_IN_SUMMARY])
            more = (
                f" and {len(failed) - MAX_NAMES_IN_SUMMARY} more"
                if len(failed) > MAX_NAMES_IN_SUMMARY
                else ""
            )
            say(f"voxtral: {len(failed)} of {n_inputs} inputs failed: {names}{more}")
        return self.stop_code or (failed[0].error.exit_code if failed else 0)


def _to_files(plan: dict[Path, list[Path]], formats: list[str], overwrite: bool) -> Emit:
    """Write every format of a transcript, all or none, each atomically, none replaced without overwrite."""

    def emit(i: int, path: Path, t) -> None:
        if t is None:
            return
        files = {out: WRITERS[fmt](t) for out, fmt in zip(plan[path], formats, strict=True)}
        write_together(files, overwrite=overwrite, owner=shown(path))

    return emit


def _to_stdout(out: Stdout, fmt: str, several: bool) -> tuple[Emit, Callable[[int], bool]]:
    """One format on stdout, in input order whatever the batch size: for several inputs, JSON Lines
    (one document a line, with its "input") for json, a `==> FILE <==` line before each otherwise.
    Also: whether input i is held back (done, waiting for an earlier one)."""

    def write(i: int, item) -> None:
        path, t = item
        if t is None:
            return
        if fmt == "json" and several:
            text = json.dumps({"input": shown(path), **json_document(t)}, ensure_ascii=False) + "\n"
        else:
            text = WRITERS[fmt](t)
            if several:
                text = f"==> {shown(path).translate(ONE_LINE)} <==\n{text}"  # a newline in a name: \\n
        out.write(text)  # StdoutError stops the run: every later input would fail the same way

    order = InOrder(write)

    def emit(i: int, path: Path, t) -> None:
        order.add(i, (path, t))

    return emit, order.waiting.__contains__


class _LiveText:
    """txt on stdout, each segment printed as soon as it is decided (inputs one at a time): the same text
    as the txt format, there while a long file is still being decoded."""

    def __init__(self, out: Stdout, paths: list[Path], several: bool):
        self.out, self.paths, self.several = out, paths, several
        self.printed: dict[int, str] = {}  # input → its text on stdout so far
        self.shown: set[int] = set()  # inputs of which something (a header, text) reached stdout

    def _begin(self, i: int) -> None:
        if i not in self.printed:
            self.printed[i] = ""
            if self.several:
                self.out.write(f"==> {shown(self.paths[i]).translate(ONE_LINE)} <==\n")
                self.shown.add(i)

    def segment(self, i: int, seg) -> None:
        line = one_line(seg.text)
        if line:
            self._begin(i)
            self.out.write(line + "\n")
            self.printed[i] += line + "\n"
            self.shown.add(i)

    def emit(self, i: int, path: Path, t) -> None:
        if t is None:
            return
        self._begin(i)
        text, done = WRITERS["txt"](t), self.printed[i]
        self.out.write(text[len(done) :] if text.startswith(done) else "")


@app.command()
def transcribe(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Audio files (any format FFmpeg decodes), directories (their audio files) "
            "or quoted glob patterns ('**' recurses).",
            metavar="INPUT",
        ),
    ],
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = "auto",
    delay_ms: DelayOpt = None,
    fmt: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            "-f",
            metavar="FORMAT",
            help=f"{FORMAT_NAMES} or all; repeat or comma-separate for several (with --output-dir). "
            "[default: txt]",
        ),
    ] = None,
    output_dir: Annotated[
        str | None,
        typer.Option(
            "--output-dir",
            "-o",
            metavar="DIR",
            callback=_directory,
            help="Write FILE.FORMAT here (created if missing), one per input and format.",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace output files that exist.", **FLAG)
    ] = False,
    confidence: Annotated[
        bool,
        typer.Option("--confidence", help="Give each token its probability (json: tokens[].prob).", **FLAG),
    ] = False,
    alternatives: Annotated[
        float | None,
        typer.Option(
            "--alternatives",
            metavar="P",
            help="Also list rival tokens within probability P of the chosen one (json; txt marks them "
            "inline as {chosen|rival}).",
        ),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size", "-b", metavar="B", help="Decode up to B inputs together (continuous batching)."
        ),
    ] = 1,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Transcribe audio; text to stdout (or files in --output-dir), progress and timings to stderr."""
    _setup_logging(verbose, quiet)
    try:
        formats = _parse_formats(fmt)
        if output_dir is None and len(formats) > 1:
            raise OptionError(f"{len(formats)} formats need --output-dir (stdout takes one)")
        if alternatives is not None and not 0 < alternatives <= 1:
            raise OptionError(f"--alternatives must be a probability margin in (0, 1], got {alternatives}")
        if overwrite and output_dir is None:
            raise OptionError(
                "--overwrite replaces files in --output-dir; without one the text goes to stdout"
            )
        if alternatives is not None and not {"json", "txt"} & set(formats):
            raise OptionError("--alternatives shows in the json and txt formats; add --format json or txt")
        if confidence and alternatives is None and "json" not in formats:
            raise OptionError("--confidence shows in the json format (tokens[].prob); add --format json")
        if not 1 <= batch_size <= MAX_CAPACITY:
            raise OptionError(f"--batch-size must be from 1 to {MAX_CAPACITY}, got {batch_size}")
        _check_input_names(inputs)
        inputs = _stdin_as_file(inputs)
        _check_device_and_delay(device, delay_ms)
        out = Stdout(hint=" or pass --output-dir", json=formats == ["json"])
        if output_dir is None:
            out.check()
    except VoxtralError as e:
        raise _exit_on(e) from None
    paths, failed = expand_inputs(inputs)
    n_inputs = len(paths) + len(failed)
    several = n_inputs > 1 or len(inputs) > 1  # the shape follows what was named (a.wav a.wav: JSON Lines)
    created: list[Path] = []
    if output_dir is not None and paths:
        try:
            created = prepare_output_dir(output_dir)
        except VoxtralError as e:
            raise _exit_on(e) from None
        plan, taken = plan_outputs(paths, output_dir, formats, overwrite)
        paths, failed = list(plan), failed + taken
        emit = _to_files(plan, formats, overwrite)
    options: dict = {"confidence": confidence, "alternatives": alternatives}
    if output_dir is None and formats == ["txt"] and batch_size == 1 and alternatives is None:
        live = _LiveText(out, paths, several=several)  # text as it is decided
        emit, options["on_segment"] = live.emit, live.segment
    elif output_dir is None:
        emit, held_back = _to_stdout(out, formats[0], several=several)
    for f in failed:
        _error(str(f.error))
    run = Run(paths, quiet, verbose)
    if "on_segment" in options:
        run.partly_printed = live.shown.__contains__
    elif output_dir is None:
        run.held_back = held_back
    if paths:
        try:
            m = _load(model, device, delay_ms, quiet, verbose, batch_size)
        except BaseException:  # the model did not load, or a stop: nothing was written
            remove_empty(created)
            raise
        try:
            run.go(m, emit, batch_size, options)
        finally:  # every input failed: the directories made for their outputs go too (only if empty)
            remove_empty(created)
    else:  # every input failed before the model loads (its output names refused, say)
        remove_empty(created)
    raise typer.Exit(run.exit_code(failed, n_inputs))


def _wer_line(name: str, s, width: int) -> str:
    counts = f"{s.substitutions} sub, {s.deletions} del, {s.insertions} ins"
    return f"{name:<{width}}  WER {100 * s.wer:6.2f}%  ({s.errors}/{s.words} words: {counts})"


@app.command("eval")
def eval_(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Directories of clips with a reference FILE.txt beside each FILE.wav, clips, glob "
            "patterns, or list files (one clip path a line, relative to the list file's folder).",
            metavar="INPUT",
        ),
    ],
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = "auto",
    delay_ms: DelayOpt = None,
    show_text: Annotated[
        bool, typer.Option("--show-text", help="Also print the normalised reference and hypothesis.", **FLAG)
    ] = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Word error rate per clip and overall, against the reference .txt files (normalised text)."""
    from . import evaluate

    _setup_logging(verbose, quiet)
    scores, out = [], Stdout()
    try:
        _check_input_names(inputs)
        if "-" in inputs:  # a file named `-` is `./-`, as for transcribe
            raise OptionError("eval scores clips against a reference FILE.txt beside each; `-` (standard "
                              "input) has none: pass the clips, their directory or a list file")  # fmt: skip
        _check_device_and_delay(device, delay_ms)
        out.check()
    except VoxtralError as e:
        raise _exit_on(e) from None
    clips, failed = evaluate.find_clips(inputs)  # references read and checked here, before the model loads
    n_inputs = len(clips) + len(failed)
    for f in failed:
        _error(str(f.error))
    width = max([len(str(c)) for c in clips] + [len("overall")])

    def emit(i: int, path: Path, t) -> None:
        if t is None:
            return
        reference = evaluate.read_reference(path)
        s = evaluate.score(reference, t.text)
        scores.append(s)
        text = _wer_line(str(path), s, width) + "\n"
        if show_text:
            text += f"  ref: {evaluate.normalize(reference)}\n  hyp: {evaluate.normalize(t.text)}\n"
        out.write(text)

    run = Run(clips, quiet, verbose)
    if clips:
        run.go(_load(model, device, delay_ms, quiet, verbose), emit)  # one at a time: in input order
    if scores and not run.stop_code:
        clips_word = "clip" if len(scores) == 1 else "clips"
        out.write(_wer_line("overall", evaluate.total(scores), width) + f" over {len(scores)} {clips_word}\n")
    raise typer.Exit(run.exit_code(failed, n_inputs))


@app.command()
def info(model: ModelOpt = DEFAULT_MODEL) -> None:
    """Print the model's configuration and parameter counts (reads params.json and tekken.json only)."""
    _setup_logging(False, False)
    from .checkpoint import load_description
    from .report import describe

    try:
        text = describe(load_description(model))
    except VoxtralError as e:
        raise _exit_on(e) from None
    Stdout().write(text + "\n")


def _command_path(error, command) -> str:
    """The command a usage error is about: its context's, else (an option's value missing: click has
    no context yet) the subcommands named on the command line."""
    if error.ctx is not None:
        return error.ctx.command_path
    path, group = ["voxtral"], command
    for arg in (a for a in sys.argv[1:] if not a.startswith("-")):
        group = getattr(group, "commands", {}).get(arg)
        if group is None:
            break
        path.append(arg)
    return " ".join(path)


def main(command=None) -> None:
    """Run the app (`command`: typer.main.get_command(app), made here if not given); usage errors
    (unknown option, bad value, missing argument) become one line, exit 2; Ctrl-C or SIGTERM between a
    command's steps (its runs say more themselves) one line, exit 130 or 143."""
    command = typer.main.get_command(app) if command is None else command
    try:
        with terminated_as(Terminated):  # SIGTERM's default action would end the process without a word
            code = command.main(args=sys.argv[1:], prog_name="voxtral", standalone_mode=False)
    except Terminated:  # between a command's steps (a run, a live stream or the server say their own)
        code = EXIT_TERMINATED
        if not _STOP_SAID:
            _stop_said("terminated (SIGTERM)")
    except USAGE_ERROR as e:
        if type(e).__name__ == "NoArgsIsHelpError" and e.ctx is not None:  # `voxtral`, `voxtral dev`: help
            Stdout().write(e.ctx.get_help() + "\n")
            sys.exit(0)
        _error(f"{e.format_message()} (see {_command_path(e, command)} --help)")
        code = 2
    except typer.Abort:  # Ctrl-C outside a run
        code = EXIT_INTERRUPTED
    except BrokenPipe:
        silence_stdout()
        code = EXIT_BROKEN_PIPE
    except VoxtralError as e:  # e.g. StdoutError from a command's last write
        _error(str(e))
        code = e.exit_code
    except OSError as e:  # click's own writes (--help) to a full stdout or a closed pipe
        if not _stdout_failed():
            raise
        silence_stdout()
        code = EXIT_BROKEN_PIPE
        if not isinstance(e, BrokenPipeError):
            _error(f"cannot write to standard output ({e.strerror})")
            code = StdoutError.exit_code
    if code == EXIT_INTERRUPTED and not _STOP_SAID:  # Ctrl-C between the steps of a command
        _stop_said("interrupted (Ctrl-C)")
    sys.exit(code if isinstance(code, int) else 0)


def _stdout_failed() -> bool:
    """True when standard output cannot be written (tried here with a newline: a write that failed may
    have dropped its data, so a flush alone proves nothing; only reached on an error's way out)."""
    try:
        sys.stdout.flush()
        os.write(sys.stdout.fileno(), b"\n")
    except (OSError, AttributeError, ValueError):
        return True
    return False


from . import cli_dev, cli_live, cli_serve  # noqa: E402, F401  (they add their commands to app)
