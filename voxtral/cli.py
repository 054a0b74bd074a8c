"""The `voxtral` command line: transcribe, info, dev random-checkpoint.

Text goes to stdout; progress, timings and errors to stderr. A VoxtralError becomes one line
`voxtral: error: …` and a non-zero exit code; with several files the good ones are still done.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .checkpoint import DEFAULT_MODEL
from .errors import OptionError, VoxtralError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Speech to text with Voxtral Mini 4B Realtime."
)
dev_app = typer.Typer(no_args_is_help=True, help="Developer tools (random checkpoints).")
app.add_typer(dev_app, name="dev")

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model directory or Hugging Face Hub id.")]
DeviceOpt = Annotated[str, typer.Option("--device", "-d", help="auto, cpu or cuda.")]


class Format(str, Enum):
    txt = "txt"
    json = "json"


def _error(message: str) -> None:
    typer.echo(f"voxtral: error: {message}", err=True)


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(level=level, format="voxtral: %(message)s", stream=sys.stderr, force=True)


def _render(transcript, fmt: Format) -> str:
    if fmt is Format.json:
        return json.dumps(transcript.to_dict(), ensure_ascii=False, indent=2) + "\n"
    return transcript.text + "\n"


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory, then rename: never a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _summary(name: str, t) -> str:
    steps = t.info["steps"]
    tm = t.timings
    per_step = 1000 * tm.get("decode", 0.0) / max(steps, 1)
    return (
        f"{name}: {t.duration:.1f} s audio, {steps} steps — mel {tm['mel'] * 1000:.0f} ms, "
        f"encoder {tm['encoder'] * 1000:.0f} ms, prefill {tm['prefill'] * 1000:.0f} ms, "
        f"decode {per_step:.1f} ms/step ({t.info['device']})"
    )


@app.command()
def transcribe(
    files: Annotated[list[Path], typer.Argument(help="Audio files (any format libsndfile reads).")],
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = "auto",
    delay_ms: Annotated[
        int | None, typer.Option(help="Transcription delay, 80–2400 ms in steps of 80.")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.txt,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="Write FILE.<format> here instead of stdout.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or timings on stderr.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More detail on stderr.")] = False,
) -> None:
    """Transcribe audio files; text to stdout (or files in --output-dir), timings to stderr."""
    _setup_logging(verbose, quiet)
    import voxtral

    try:
        if output_dir is not None and not output_dir.is_dir():
            raise OptionError(f"{output_dir}: output directory does not exist")
        m = voxtral.load(model, device=device, delay_ms=delay_ms)
    except VoxtralError as e:
        _error(str(e))
        raise typer.Exit(e.exit_code) from None
    if not quiet:
        typer.echo(
            f"voxtral: loaded {m.checkpoint.directory} on {m.device} in {m.load_seconds:.1f} s", err=True
        )
    exit_code = 0
    for path in files:
        try:
            t = m.transcribe(path)
        except VoxtralError as e:
            _error(str(e))
            exit_code = exit_code or e.exit_code
            continue
        text = _render(t, fmt)
        if output_dir is not None:
            _write_atomic(output_dir / f"{path.stem}.{fmt.value}", text)
        else:
            if len(files) > 1 and fmt is Format.txt:
                text = f"==> {path} <==\n{text}"
            sys.stdout.write(text)
            sys.stdout.flush()
        if not quiet:
            typer.echo("voxtral: " + _summary(str(path), t), err=True)
    raise typer.Exit(exit_code)


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
