"""`voxtral stream`: live audio from stdin or the microphone, text printed as soon as it is decided.

Ctrl-C is how a live stream normally ends: the text the model still holds is flushed and the exit code
is 0. SIGTERM flushes too and exits 143; a closed reader of stdout stops it quietly (141).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated

import typer

from .checkpoint import DEFAULT_MODEL
from .cli import (
    FLAG,
    DelayOpt,
    DeviceOpt,
    ModelOpt,
    QuietOpt,
    VerboseOpt,
    _check_device_and_delay,
    _error,
    _exit_on,
    _load,
    _setup_logging,
    app,
    check_stdin,
)
from .errors import AudioError, OptionError, VoxtralError
from .outputs import (
    EXIT_BROKEN_PIPE,
    EXIT_TERMINATED,
    BrokenPipe,
    Stdout,
    Terminated,
    silence_stdout,
    terminated_as,
)
from .progress import say


@app.command()
def stream(
    stdin: Annotated[
        bool,
        typer.Option(
            "--stdin", help="Read stdin: any audio container FFmpeg decodes, or raw PCM (--format).", **FLAG
        ),
    ] = False,
    mic: Annotated[
        bool, typer.Option("--mic", help="Read the microphone (the `mic` extra).", **FLAG)
    ] = False,
    raw: Annotated[
        str | None,
        typer.Option(
            "--format", metavar="ENCODING", help="Raw PCM on stdin: s16le, s24le, s32le, f32le, u8, …"
        ),
    ] = None,
    rate: Annotated[
        int | None, typer.Option("--rate", metavar="HZ", help="Sample rate of the raw PCM in Hz.")
    ] = None,
    channels: Annotated[
        int, typer.Option("--channels", metavar="N", help="Interleaved channels of the raw PCM.")
    ] = 1,
    jsonl: Annotated[
        bool, typer.Option("--jsonl", help="One JSON object a line: text, time, latency.", **FLAG)
    ] = False,
    confidence: Annotated[
        bool, typer.Option("--confidence", help="With --jsonl: each piece's probability (prob).", **FLAG)
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
        if confidence and not jsonl:
            raise OptionError("--confidence needs --jsonl (the probabilities go in the JSON lines)")
        _check_device_and_delay(device, delay_ms)  # every option before a byte of input is read
        out = Stdout(json=jsonl)
        out.check()
        source = _source(stdin, mic, raw, rate, channels)
    except VoxtralError as e:
        raise _exit_on(e) from None
    m = _load(model, device, delay_ms, quiet, verbose)
    raise typer.Exit(_run(m, source, _printer(out, jsonl), quiet, confidence))


def _source(stdin: bool, mic: bool, raw: str | None, rate: int | None, channels: int):
    """The blocks of 16 kHz samples the options ask for; OptionError for a bad combination."""
    from .audio_blocks import RawFormat, read_stream
    from .microphone import microphone

    if stdin == mic:
        raise OptionError("give exactly one of --stdin or --mic")
    if raw is None and (rate is not None or channels != 1):
        raise OptionError("--rate and --channels describe raw PCM: add --format (e.g. --format s16le)")
    if raw is not None and (mic or rate is None):
        raise OptionError("--format describes raw PCM on --stdin and needs --rate (e.g. --rate 16000)")
    if mic:
        return microphone()
    fmt = None if raw is None else RawFormat(raw, rate, channels)
    check_stdin("--stdin")
    return read_stream(sys.stdin.buffer, fmt)


def _printer(out: Stdout, jsonl: bool) -> Callable[[list, bool], None]:
    """Print pieces as they come: plain text (flushed, a newline at the end), or one JSON line each."""
    started = False

    def emit(pieces, last: bool) -> None:
        nonlocal started
        text = ""
        for p in pieces:
            if jsonl:
                line = {"text": p.text, "time": p.time, "latency": round(p.latency, 4)}
                if p.prob is not None:
                    line["prob"] = round(p.prob, 6)
                text += json.dumps(line, ensure_ascii=False) + "\n"
            else:
                text += p.text if started else p.text.lstrip()
                started = started or bool(p.text.strip())
        if last and started and not jsonl:  # the line of text ends (no empty line when there was none)
            text += "\n"
        if text:
            out.write(text)

    return emit


def _run(m, source, emit: Callable[[list, bool], None], quiet: bool, confidence: bool = False) -> int:
    """Feed the source to a session and emit as it goes; flush at the end, also after bad input, Ctrl-C
    or SIGTERM (the engine lets those surface only between its ticks, so the session is whole)."""
    session, error, latencies, code = m.stream(confidence=confidence), None, [], 0
    try:
        with terminated_as(Terminated):
            stopped = False
            try:
                for block in source:
                    pieces = session.feed(block)
                    latencies += [p.latency for p in pieces]
                    emit(pieces, False)
            except VoxtralError as e:
                error = e
            except KeyboardInterrupt:  # the normal end of a live stream
                stopped = True
            except Terminated:
                code, stopped = EXIT_TERMINATED, True
            if stopped and not session.n_samples:  # ended before any audio came: nothing to say
                session.close()
                say("voxtral: stopped before any audio came; nothing to transcribe")
                return code
            if error is None or session.n_samples:  # bad input: still transcribe the audio before it
                try:
                    pieces = session.finish()
                except VoxtralError as e:  # e.g. no audio at all
                    error, pieces = error or e, []
                latencies += [p.latency for p in pieces]
                emit(pieces, True)
    except BrokenPipe:
        silence_stdout()
        return EXIT_BROKEN_PIPE
    except VoxtralError as e:  # stdout failed (closed, disk full)
        error = error or e
    if not quiet and session.duration > 0 and (error is None or isinstance(error, AudioError)):
        # the summary of what was heard; not when the model failed (its pieces would be missing)
        lat = sorted(latencies) or [0.0]
        say(
            f"voxtral: {session.duration:.1f} s audio, {len(latencies)} pieces, latency median "
            f"{1000 * lat[len(lat) // 2]:.0f} ms, max {1000 * lat[-1]:.0f} ms ({m.device})"
        )
    if error is not None:
        _error(str(error))
        return code or error.exit_code
    return code
