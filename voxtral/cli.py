"""The `voxtral` command line: transcribe, eval, info, bench, dev random-checkpoint.

Text goes to stdout (or files in --output-dir); progress, timings and errors to stderr. A VoxtralError
becomes one line `voxtral: error: …` and a non-zero exit code; with several files the good ones are
still done and the failures are summarised at the end.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from .checkpoint import DEFAULT_MODEL
from .errors import OptionError, VoxtralError
from .formats import WRITERS
from .inputs import InputError, audio_seconds, expand_inputs, plan_outputs, write_atomic
from .progress import Done, ProgressBar

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Speech to text with Voxtral Mini 4B Realtime."
)
dev_app = typer.Typer(no_args_is_help=True, help="Developer tools (random checkpoints).")
app.add_typer(dev_app, name="dev")

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model directory or Hugging Face Hub id.")]
DeviceOpt = Annotated[str, typer.Option("--device", "-d", help="auto, cpu or cuda.")]
DelayOpt = Annotated[int | None, typer.Option(help="Transcription delay, 80–2400 ms in steps of 80.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or timings on stderr.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="More detail on stderr.")]
FORMAT_NAMES = ", ".join(WRITERS)
MAX_NAMES_IN_SUMMARY = 10

Emit = Callable[[Path, object, ProgressBar], None]


def _error(message: str) -> None:
    typer.echo(f"voxtral: error: {message}", err=True)


def _exit_on(e: VoxtralError) -> typer.Exit:
    _error(str(e))
    return typer.Exit(e.exit_code)


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(level=level, format="voxtral: %(message)s", stream=sys.stderr, force=True)


def _summary(name: str, t) -> str:
    steps = t.info["steps"]
    tm = t.timings
    per_step = 1000 * tm.get("decode", 0.0) / max(steps, 1)
    return (
        f"{name}: {t.duration:.1f} s audio, {steps} steps — mel {tm['mel'] * 1000:.0f} ms, "
        f"encoder {tm['encoder'] * 1000:.0f} ms, prefill {tm['prefill'] * 1000:.0f} ms, "
        f"decode {per_step:.1f} ms/step ({t.info['device']})"
    )


def _parse_formats(values: list[str] | None) -> list[str]:
    """`-f srt -f vtt`, `-f srt,vtt` or `-f all` → format names in order; OptionError for unknown ones."""
    names: list[str] = []
    for value in values or ["txt"]:
        for name in (n.strip().lower() for n in value.split(",")):
            if name not in (*WRITERS, "all"):
                raise OptionError(f"--format {name!r} is not a format; use {FORMAT_NAMES} or all")
            names += [n for n in (WRITERS if name == "all" else [name]) if n not in names]
    return names


def _check_output(output_dir: Path | None, formats: list[str]) -> None:
    if output_dir is None and len(formats) > 1:
        raise OptionError(f"{len(formats)} formats need --output-dir (stdout takes one)")
    if output_dir is not None and not output_dir.is_dir():
        raise OptionError(f"{output_dir}: output directory does not exist; create it first")


def _load(model: str, device: str, delay_ms: int | None, quiet: bool, batch_size: int = 1):
    """Load the model once; a VoxtralError exits with its one line."""
    import voxtral
    from voxtral.api import DEFAULT_CAPACITY

    try:
        m = voxtral.load(model, device=device, delay_ms=delay_ms, capacity=max(batch_size, DEFAULT_CAPACITY))
    except VoxtralError as e:
        raise _exit_on(e) from None
    if not quiet:
        typer.echo(
            f"voxtral: loaded {m.checkpoint.directory} on {m.device} in {m.load_seconds:.1f} s", err=True
        )
    return m


def _results(m, paths: list[Path], options: dict, batch_size: int):
    """(path, Transcript or its VoxtralError) per path, as each finishes (up to batch_size at once)."""
    for i, t in m.transcribe_each(paths, batch_size, **options):
        yield paths[i], t


def _each(
    m, paths: list[Path], emit: Emit, quiet: bool, options: dict | None = None, batch_size: int = 1
) -> list[InputError]:
    """Transcribe each path (up to batch_size together), hand it to emit; one error line per failure;
    a progress bar on a terminal."""
    seconds = {p: audio_seconds(p) for p in paths}
    bar = ProgressBar(Done(len(paths), sum(seconds.values())), sys.stderr, enabled=False if quiet else None)
    failed: list[InputError] = []
    try:
        for path, t in _results(m, paths, options or {}, batch_size):
            try:
                if isinstance(t, VoxtralError):
                    raise t
                emit(path, t, bar)
            except VoxtralError as e:
                bar.write(f"voxtral: error: {e}\n", sys.stderr)
                failed.append(InputError(str(path), e))
            else:
                if not quiet:
                    bar.write("voxtral: " + _summary(str(path), t) + "\n", sys.stderr)
            bar.advance(1, seconds[path])
    finally:
        bar.clear()
    return failed


def _finish(failed: list[InputError], n_inputs: int) -> int:
    """Summarise the failures (with several inputs); the exit code of the first one, else 0."""
    if failed and n_inputs > 1:
        names = ", ".join(f.name for f in failed[:MAX_NAMES_IN_SUMMARY])
        more = f" and {len(failed) - MAX_NAMES_IN_SUMMARY} more" if len(failed) > MAX_NAMES_IN_SUMMARY else ""
        typer.echo(f"voxtral: {len(failed)} of {n_inputs} inputs failed: {names}{more}", err=True)
    return failed[0].error.exit_code if failed else 0


def _to_files(plan: dict[Path, list[Path]], formats: list[str]) -> Emit:
    """Write every format of a transcript, each file atomically."""

    def emit(path: Path, t, bar: ProgressBar) -> None:
        texts = [WRITERS[fmt](t) for fmt in formats]
        for out, text in zip(plan[path], texts, strict=True):
            write_atomic(out, text)

    return emit


def _to_stdout(fmt: str, headers: bool) -> Emit:
    """Print one format; with several files, a `==> FILE <==` line before each (not for json)."""

    def emit(path: Path, t, bar: ProgressBar) -> None:
        text = WRITERS[fmt](t)
        if headers and fmt != "json":
            text = f"==> {path} <==\n{text}"
        bar.write(text, sys.stdout)

    return emit


@app.command()
def transcribe(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Audio files (any format libsndfile reads), directories (their audio files) "
            "or quoted glob patterns ('**' recurses)."
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
            help=f"{FORMAT_NAMES} or all; repeat or comma-separate for several (with --output-dir). "
            "[default: txt]",
        ),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-o", help="Write FILE.FORMAT here (one per input and format)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace output files that exist already.")] = False,
    confidence: Annotated[
        bool, typer.Option(help="Give each token its probability (json: tokens[].prob).")
    ] = False,
    alternatives: Annotated[
        float | None,
        typer.Option(
            metavar="P",
            help="Also list rival tokens within probability P of the chosen one (json; txt marks them "
            "inline as {chosen|rival}).",
        ),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            "-b",
            min=1,
            help="Decode up to B inputs together, one step for all (continuous batching).",
        ),
    ] = 1,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Transcribe audio; text to stdout (or files in --output-dir), progress and timings to stderr."""
    _setup_logging(verbose, quiet)
    try:
        formats = _parse_formats(fmt)
        _check_output(output_dir, formats)
        if alternatives is not None and not 0 < alternatives <= 1:
            raise OptionError(f"--alternatives must be a probability margin in (0, 1], got {alternatives}")
    except VoxtralError as e:
        raise _exit_on(e) from None
    paths, failed = expand_inputs(inputs)
    n_inputs = len(paths) + len(failed)
    if output_dir is not None:
        plan, taken = plan_outputs(paths, output_dir, formats, overwrite)
        paths, failed = list(plan), failed + taken
        emit = _to_files(plan, formats)
    else:
        emit = _to_stdout(formats[0], headers=n_inputs > 1)
    for f in failed:
        _error(str(f.error))
    if paths:
        options = {"confidence": confidence, "alternatives": alternatives}
        m = _load(model, device, delay_ms, quiet, batch_size)
        failed += _each(m, paths, emit, quiet, options, batch_size)
    raise typer.Exit(_finish(failed, n_inputs))


def _wer_line(name: str, s, width: int) -> str:
    counts = f"{s.substitutions} sub, {s.deletions} del, {s.insertions} ins"
    return f"{name:<{width}}  WER {100 * s.wer:6.2f}%  ({s.errors}/{s.words} words: {counts})"


@app.command("eval")
def eval_(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Directories of clips with a reference FILE.txt beside each FILE.wav, clips, "
            "glob patterns, or list files (one clip path a line)."
        ),
    ],
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = "auto",
    delay_ms: DelayOpt = None,
    show_text: Annotated[
        bool, typer.Option(help="Also print the normalised reference and hypothesis.")
    ] = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Word error rate per clip and overall, against the reference .txt files (normalised text)."""
    from . import evaluate

    _setup_logging(verbose, quiet)
    clips, failed = evaluate.find_clips(inputs)
    n_inputs = len(clips) + len(failed)
    for f in failed:
        _error(str(f.error))
    width = max([len(str(c)) for c in clips] + [len("overall")])
    scores = []

    def emit(path: Path, t, bar: ProgressBar) -> None:
        reference = evaluate.read_reference(path)
        s = evaluate.score(reference, t.text)
        scores.append(s)
        text = _wer_line(str(path), s, width) + "\n"
        if show_text:
            text += f"  ref: {evaluate.normalize(reference)}\n  hyp: {evaluate.normalize(t.text)}\n"
        bar.write(text, sys.stdout)

    if clips:
        failed += _each(_load(model, device, delay_ms, quiet), clips, emit, quiet)
    if scores:
        typer.echo(_wer_line("overall", evaluate.total(scores), width) + f" over {len(scores)} clips")
    raise typer.Exit(_finish(failed, n_inputs))


@app.command()
def stream(
    stdin: Annotated[bool, typer.Option("--stdin", help="Read stdin: WAV, or raw PCM (--format).")] = False,
    mic: Annotated[bool, typer.Option("--mic", help="Read the microphone (the `mic` extra).")] = False,
    raw: Annotated[
        str | None, typer.Option("--format", help="Raw PCM on stdin: s16le, s24le, s32le, f32le, u8, …")
    ] = None,
    rate: Annotated[int | None, typer.Option(help="Sample rate of the raw PCM in Hz.")] = None,
    channels: Annotated[int, typer.Option(help="Interleaved channels of the raw PCM.")] = 1,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="JSON lines: text, time, latency.")] = False,
    confidence: Annotated[
        bool, typer.Option(help="With --jsonl: each piece's probability (prob), as transcribe's.")
    ] = False,
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = "auto",
    delay_ms: DelayOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Transcribe live audio from stdin or the microphone, printing text as soon as it is decided."""
    _setup_logging(verbose, quiet)
    try:
        source = _stream_source(stdin, mic, raw, rate, channels)
    except VoxtralError as e:
        raise _exit_on(e) from None
    if confidence and not jsonl:
        raise _exit_on(OptionError("--confidence needs --jsonl (the probabilities go in the JSON lines)"))
    m = _load(model, device, delay_ms, quiet)
    raise typer.Exit(_stream_run(m, source, _stream_printer(jsonl), quiet, confidence))


def _stream_source(stdin: bool, mic: bool, raw: str | None, rate: int | None, channels: int):
    """The blocks of 16 kHz samples the options ask for; OptionError for a bad combination."""
    from .pcm import RawFormat, microphone, read_stream

    if stdin == mic:
        raise OptionError("give exactly one of --stdin or --mic")
    if raw is None and (rate is not None or channels != 1):
        raise OptionError("--rate and --channels describe raw PCM: add --format (e.g. --format s16le)")
    if raw is not None and (mic or rate is None):
        raise OptionError("--format describes raw PCM on --stdin and needs --rate (e.g. --rate 16000)")
    if mic:
        return microphone()
    return read_stream(sys.stdin.buffer, None if raw is None else RawFormat(raw, rate, channels))


def _stream_printer(jsonl: bool) -> Callable[[list], None]:
    """Print pieces as they come: plain text (flushed), or one JSON line each."""
    import json

    started = False

    def emit(pieces) -> None:
        nonlocal started
        for p in pieces:
            if jsonl:
                line = {"text": p.text, "time": p.time, "latency": round(p.latency, 4)}
                if p.prob is not None:
                    line["prob"] = round(p.prob, 6)
                sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
            else:
                sys.stdout.write(p.text if started else p.text.lstrip())
                started = started or bool(p.text.strip())
        sys.stdout.flush()

    return emit


def _stream_run(m, source, emit: Callable[[list], None], quiet: bool, confidence: bool = False) -> int:
    """Feed the source to a session and emit as it goes; flush at the end, also after bad input or
    Ctrl-C (the engine lets KeyboardInterrupt surface only between its ticks, so the session is whole)."""
    session, error, latencies = m.stream(confidence=confidence), None, []
    try:
        for block in source:
            pieces = session.feed(block)
            latencies += [p.latency for p in pieces]
            emit(pieces)
    except VoxtralError as e:
        error = e
    except KeyboardInterrupt:
        pass
    if error is None or session.n_samples:  # bad input: still transcribe the audio before it
        try:
            pieces = session.finish()
        except VoxtralError as e:  # e.g. no audio at all
            error, pieces = error or e, []
        latencies += [p.latency for p in pieces]
        emit(pieces)
        sys.stdout.write("\n")
        sys.stdout.flush()
    if not quiet:
        lat = sorted(latencies) or [0.0]
        typer.echo(
            f"voxtral: {session.duration:.1f} s audio, {len(latencies)} pieces, latency median "
            f"{1000 * lat[len(lat) // 2]:.0f} ms, max {1000 * lat[-1]:.0f} ms ({m.device})",
            err=True,
        )
    if error is not None:
        _error(str(error))
        return error.exit_code
    return 0


@app.command()
def info(model: ModelOpt = DEFAULT_MODEL) -> None:
    """Print the model's configuration, parameter counts and file sizes."""
    _setup_logging(False, False)
    from .checkpoint import load_checkpoint
    from .report import describe

    try:
        ckpt = load_checkpoint(model)
    except VoxtralError as e:
        _error(str(e))
        raise typer.Exit(e.exit_code) from None
    typer.echo(describe(ckpt))


@app.command()
def bench(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model directory or Hub id.")] = None,
    random_weights: Annotated[
        str | None, typer.Option(help="Generate a random checkpoint (tiny or full, EOS unreachable) instead.")
    ] = None,
    audio: Annotated[Path | None, typer.Option(help="Audio file (default: the 60 s clip of audio/).")] = None,
    device: Annotated[
        str, typer.Option("--device", "-d", help="Comma-separated devices: cpu,cuda.")
    ] = "cpu,cuda",
    positions: Annotated[
        str, typer.Option(help="Decode profile positions (GPU), comma-separated.")
    ] = "500,5000",
    steps: Annotated[int, typer.Option(help="Timed decode steps per position (GPU).")] = 100,
    cpu_steps: Annotated[int, typer.Option(help="Timed decode steps on the CPU.")] = 4,
    stream: Annotated[
        bool, typer.Option("--stream", help="Also measure streaming: real-time factor, piece latency.")
    ] = False,
    batch: Annotated[
        str | None, typer.Option(help="Also time batched steps for these batch sizes, e.g. 1,8,32.")
    ] = None,
    server: Annotated[
        str | None, typer.Option(help="Also time live-session ticks for these session counts, e.g. 1,8.")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the full report as JSON here.")
    ] = None,
) -> None:
    """CPU vs GPU speed per stage and decode ms/step vs the bandwidth roofline (table; JSON with --json)."""
    _setup_logging(False, False)
    from . import bench as bench_mod

    if (model is None) == (random_weights is None):
        _error("give exactly one of --model or --random-weights")
        raise typer.Exit(2)
    opts = bench_mod.BenchOptions(
        model=model,
        random_weights=random_weights,
        devices=tuple(d.strip() for d in device.split(",") if d.strip()),
        positions=tuple(int(p) for p in positions.split(",")),
        steps=steps,
        cpu_steps=cpu_steps,
        stream=stream,
        batch=tuple(int(b) for b in batch.split(",")) if batch else (),
        server=tuple(int(b) for b in server.split(",")) if server else (),
    )
    if audio is not None:
        opts.audio = audio
    try:
        result = bench_mod.run(opts, progress=lambda msg: typer.echo(f"voxtral: {msg}", err=True))
    except VoxtralError as e:
        _error(str(e))
        raise typer.Exit(e.exit_code) from None
    if json_out is not None:
        bench_mod.write_json(result, json_out)
    typer.echo(bench_mod.table(result))


@dev_app.command("random-checkpoint")
def random_checkpoint(
    directory: Annotated[Path, typer.Argument(help="Where to write the checkpoint (created if needed).")],
    size: Annotated[str, typer.Option(help="tiny (tests) or full (the official shapes, 8.9 GB).")] = "tiny",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    eos_unreachable: Annotated[
        bool, typer.Option(help="Make EOS never win, so every position decodes.")
    ] = False,
) -> None:
    """Write a random checkpoint in the exact official file format."""
    from .testing import SIZES, write_checkpoint

    if size not in SIZES:
        _error(f"--size must be one of {', '.join(SIZES)}")
        raise typer.Exit(2)
    write_checkpoint(directory, size=size, seed=seed, eos_reachable=not eos_unreachable)
    typer.echo(f"wrote a random {size} checkpoint to {directory}", err=True)


def main() -> None:
    app()
