"""`voxtral bench` (speed on this machine) and `voxtral dev random-checkpoint`: every option checked,
the --json path included, before any work starts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from .cli import FLAG, _directory, _exit_on, _setup_logging, app
from .config import MAX_CAPACITY, MAX_POSITION, MAX_STEPS
from .errors import AudioError, DeviceError, OptionError, OutputError, VoxtralError
from .outputs import Stdout

dev_app = typer.Typer(no_args_is_help=True, help="Developer tools (random checkpoints).")
app.add_typer(dev_app, name="dev")
DEVICES = ("cpu", "cuda")


def _counts(value: str | None, option: str, most: int) -> tuple[int, ...]:
    """`1,8,32` → (1, 8, 32); OptionError naming the option unless every item is a whole number from 1 to
    most."""
    if not value:
        return ()
    try:
        items = tuple(int(v) for v in value.split(","))
    except ValueError:
        items = ()
    if not items or min(items) < 1 or max(items) > most:
        raise OptionError(
            f"{option} takes whole numbers from 1 to {most} separated by commas (e.g. 1,8,32), got {value!r}"
        )
    return items


def _check_json_path(path: Path) -> None:
    """OutputError (exit 6) now, not after the benchmark, when the report could not be written to path: a
    new file is created and removed again (the only test that holds where permission bits do not tell,
    e.g. for root, or in /proc); an existing one must be a writable non-directory."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"--json {path}: is a directory; name a file, e.g. {path / 'bench.json'}")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise OutputError(f"--json {path}: cannot write there (no such directory, or not writable)")
    if os.path.lexists(path):
        if not os.access(path, os.W_OK):
            raise OutputError(f"--json {path}: cannot write there (not writable)")
        return
    try:
        with open(path, "x"):
            pass
    except OSError as e:
        raise OutputError(f"--json {path}: cannot write there ({e.strerror or e})") from None
    path.unlink(missing_ok=True)


@app.command()
def bench(
    model: Annotated[
        str | None, typer.Option("--model", "-m", metavar="DIR|ID", help="Model directory or Hub id.")
    ] = None,
    random_weights: Annotated[
        str | None,
        typer.Option(
            "--random-weights",
            metavar="SIZE",
            help="Generate a random checkpoint (tiny, small or full; EOS unreachable) instead.",
        ),
    ] = None,
    audio: Annotated[
        Path | None, typer.Option("--audio", metavar="FILE", help="Audio file (default: a 60 s speech clip).")
    ] = None,
    device: Annotated[
        str, typer.Option("--device", "-d", metavar="DEVICES", help="Comma-separated devices: cpu,cuda.")
    ] = "cpu,cuda",
    positions: Annotated[
        str,
        typer.Option("--positions", metavar="N,…", help="Decode profile positions (GPU), comma-separated."),
    ] = "500,5000",
    steps: Annotated[
        int, typer.Option("--steps", metavar="N", help="Timed decode steps per position (GPU).")
    ] = 100,
    cpu_steps: Annotated[
        int, typer.Option("--cpu-steps", metavar="N", help="Timed decode steps on the CPU.")
    ] = 16,
    stream: Annotated[
        bool,
        typer.Option("--stream", help="Also measure streaming: real-time factor, piece latency.", **FLAG),
    ] = False,
    batch: Annotated[
        str | None,
        typer.Option(
            "--batch", metavar="B,…", help="Also time batched steps for these batch sizes, e.g. 1,8,32."
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server", metavar="N,…", help="Also time live-session ticks for these session counts, e.g. 1,8."
        ),
    ] = None,
    files: Annotated[
        str | None,
        typer.Option(
            "--files",
            metavar="N,…",
            help="Also run N files end to end through transcribe's path (batch size N), e.g. 64.",
        ),
    ] = None,
    cold_start: Annotated[
        bool,
        typer.Option(
            "--cold-start/--no-cold-start",
            help="GPU: also time load → first token in new processes, caches empty then warm.",
        ),
    ] = True,
    gemv: Annotated[
        bool,
        typer.Option(
            "--gemv", help="GPU: also time each decode GEMV and their whole chain against cuBLAS.", **FLAG
        ),
    ] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", metavar="FILE", help="Write the full report as JSON here.")
    ] = None,
) -> None:
    """CPU vs GPU speed per stage and decode ms/step vs the bandwidth roofline (table; JSON with --json)."""
    _setup_logging(False, False)
    from . import bench as bench_mod
    from .gpu.device import unavailable_reason
    from .testing import SIZES

    try:
        if (model is None) == (random_weights is None):
            raise OptionError("give exactly one of --model or --random-weights")
        random_weights = random_weights and random_weights.lower()
        if random_weights is not None and random_weights not in SIZES:
            raise OptionError(f"--random-weights must be one of {', '.join(SIZES)}, got {random_weights!r}")
        devices = tuple(d.strip().lower() for d in device.split(",") if d.strip())
        if not devices or any(d not in DEVICES for d in devices) or len(set(devices)) < len(devices):
            raise OptionError(f"--device takes cpu, cuda or cpu,cuda (each once), got {device!r}")
        if gemv and "cuda" not in devices:
            raise OptionError("--gemv times the GPU's decode kernels: give -d cuda or cpu,cuda")
        if devices == ("cuda",) and (reason := unavailable_reason()):
            raise DeviceError(f"cannot benchmark the GPU: {reason}")
        if not (1 <= steps <= MAX_STEPS and 1 <= cpu_steps <= MAX_STEPS):
            raise OptionError(f"--steps and --cpu-steps must be from 1 to {MAX_STEPS}")
        if audio is not None and audio.is_dir():
            raise OptionError(f"--audio {audio}: a directory; give an audio file")
        if audio is not None and not audio.is_file():  # bad audio, as for transcribe: exit 3
            raise AudioError(f"--audio {audio}: no such file")
        if json_out is not None:
            _check_json_path(json_out)
        opts = bench_mod.BenchOptions(
            model=model, random_weights=random_weights, devices=devices,
            positions=_counts(positions, "--positions", MAX_POSITION), steps=steps, cpu_steps=cpu_steps,
            stream=stream, batch=_counts(batch, "--batch", MAX_CAPACITY),
            server=_counts(server, "--server", MAX_CAPACITY), audio=audio,
            files=_counts(files, "--files", MAX_CAPACITY), cold_start=cold_start, gemv=gemv,
        )  # fmt: skip
        result = bench_mod.run(opts, progress=lambda msg: typer.echo(f"voxtral: {msg}", err=True))
        if json_out is not None:
            bench_mod.write_json(result, json_out)
    except VoxtralError as e:
        raise _exit_on(e) from None
    Stdout().write(bench_mod.table(result) + "\n")


@dev_app.command("random-checkpoint")
def random_checkpoint(
    directory: Annotated[
        str,
        typer.Argument(
            metavar="DIRECTORY",
            callback=_directory,
            help="Where to write the checkpoint (created if needed).",
        ),
    ],
    size: Annotated[
        str,
        typer.Option(
            "--size", metavar="SIZE", help="tiny (tests), small, or full (the official shapes, 8.9 GB)."
        ),
    ] = "tiny",
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Random seed (≥ 0).")] = 0,
    eos_unreachable: Annotated[
        bool, typer.Option("--eos-unreachable", help="Make EOS never win, so every position decodes.", **FLAG)
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace checkpoint files already in DIRECTORY.", **FLAG)
    ] = False,
) -> None:
    """Write a random checkpoint in the exact official file format."""
    from .checkpoint import CHECKPOINT_FILES
    from .testing import SIZES, write_checkpoint

    try:
        size = size.lower()
        if size not in SIZES:
            raise OptionError(f"--size must be one of {', '.join(SIZES)}, got {size!r}")
        if seed < 0:
            raise OptionError(f"--seed must be ≥ 0, got {seed}")
        if directory.exists() and not directory.is_dir():  # output not written: 6, as transcribe's -o FILE
            raise OutputError(f"{directory}: is a file; give a directory for the checkpoint")
        present = [name for name in CHECKPOINT_FILES if (directory / name).exists()]
        if present and not overwrite:  # 6, as transcribe's outputs that exist
            raise OutputError(
                f"{directory}: already holds {', '.join(present)}; pass --overwrite to replace it"
            )
        write_checkpoint(directory, size=size, seed=seed, eos_reachable=not eos_unreachable)
    except VoxtralError as e:
        raise _exit_on(e) from None
    except OSError as e:
        raise _exit_on(
            OutputError(f"{directory}: cannot write the checkpoint there ({e.strerror})")
        ) from None
    typer.echo(f"wrote a random {size} checkpoint to {directory}", err=True)
