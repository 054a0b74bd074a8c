"""Output formats: Transcript → the text of one file (txt, json, srt, vtt, tsv); pure functions.

Times come from the token → time alignment of SPEC §6 (approximate, 80 ms resolution). Subtitle
cues (srt, vtt, tsv) are the segments, kept inside the audio and in order, each shown for at least
MIN_CUE_S where the next cue leaves room and never for no time (a segment with no time left joins the
previous cue); their text is one line (whitespace runs become a space).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from .confidence import marked_piece, marked_text
from .transcript import FRAME_S, Transcript, ms_floor

MIN_CUE_S = 0.5  # a shorter cue (e.g. one word at a zero-width time) is lengthened to stay readable
MIN_TIME_S = 0.001  # the clocks' resolution: no cue is shorter (never `00:00:03,000 --> 00:00:03,000`)
JSON_VERSION = 1  # bumped when a key of the json format changes meaning


@dataclass(frozen=True)
class Cue:
    start: float  # seconds, 0 ≤ start ≤ end ≤ duration, start ≥ previous cue's end
    end: float
    text: str  # one line


def one_line(text: str) -> str:
    """Collapse every whitespace run (newlines, tabs) into one space (the text has no control characters:
    the tokenizer drops them)."""
    return " ".join(text.split())


def cues(t: Transcript) -> list[Cue]:
    """The non-empty segments as ordered, non-overlapping cues inside [0, duration], none empty in time:
    a segment left no time (it starts where the previous cue or the audio ends) joins the previous cue."""
    segs = [(s.start, s.end, one_line(s.text)) for s in t.segments]
    segs = [s for s in segs if s[2]]
    duration = ms_floor(t.duration)
    spans: list[list] = []  # [start, end, text]
    prev_end = 0.0
    for start, end, text in segs:
        start = min(max(start, prev_end), duration)
        end = min(max(end, start), duration)
        if spans and end - start < MIN_TIME_S:
            spans[-1][2] += " " + text
            continue
        spans.append([start, end, text])
        prev_end = end
    for i, span in enumerate(spans):
        room = spans[i + 1][0] if i + 1 < len(spans) else duration
        if span[1] - span[0] < MIN_CUE_S:
            span[1] = max(span[1], min(span[0] + MIN_CUE_S, room))
        span[1] = max(span[1], span[0] + MIN_TIME_S)  # audio under 1 ms: one millisecond all the same
    return [Cue(round(a, 3), round(b, 3), text) for a, b, text in spans]


def clock(seconds: float, decimal: str = ",") -> str:
    """HH:MM:SS,mmm (srt) or HH:MM:SS.mmm (vtt) from seconds."""
    ms = round(seconds * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def to_txt(t: Transcript) -> str:
    """One line per segment; with alternatives, each token with rivals marked {chosen|rival} in it."""
    if t.scores and any(s.alternatives for s in t.scores):
        lines = _marked_segments(t)
        return "".join(line + "\n" for line in lines) if lines else one_line(marked_text(t.scores)) + "\n"
    lines = [line for line in (one_line(s.text) for s in t.segments) if line]
    if not lines and t.text.strip():
        lines = [one_line(t.text)]
    return "".join(line + "\n" for line in lines)


def _marked_segments(t: Transcript) -> list[str] | None:
    """Each segment's line with rivals marked, found by walking the token scores along the segments
    (segments end where words end, and words are runs of tokens); None where they do not line up."""
    scores, i, lines = t.scores, 0, []
    for seg in t.segments:
        target, plain, marked = one_line(seg.text), "", []
        while one_line(plain) != target:
            if i >= len(scores) or len(one_line(plain)) > len(target):
                return None
            plain += scores[i].text
            marked.append(marked_piece(scores[i]))
            i += 1
        if target:
            lines.append(one_line("".join(marked)))
    return lines


def to_srt(t: Transcript) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, a blank line after each."""
    return "".join(
        f"{i}\n{clock(c.start)} --> {clock(c.end)}\n{c.text}\n\n" for i, c in enumerate(cues(t), start=1)
    )


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(t: Transcript) -> str:
    """WebVTT: the header, then cues `HH:MM:SS.mmm --> HH:MM:SS.mmm` with escaped text."""
    body = "".join(
        f"{clock(c.start, '.')} --> {clock(c.end, '.')}\n{_vtt_escape(c.text)}\n\n" for c in cues(t)
    )
    return "WEBVTT\n\n" + body


def to_tsv(t: Transcript) -> str:
    """Tab-separated `start end text` with times in integer milliseconds (Whisper's tsv)."""
    rows = [f"{round(c.start * 1000)}\t{round(c.end * 1000)}\t{c.text}\n" for c in cues(t)]
    return "start\tend\ttext\n" + "".join(rows)


def token_time(k: int, duration: float) -> float:
    """Start of the 80 ms frame of generated token k (SPEC §6); frames of the end padding → the end."""
    return round(min(k * FRAME_S, ms_floor(duration)), 3)


def json_document(t: Transcript) -> dict:
    """The json format as a dict: text, segments with words, tokens with times, timings, model, settings."""
    info = dict(t.info)
    return {
        "version": JSON_VERSION,
        "text": t.text,
        "duration": t.duration,
        "model": info.pop("model", None),
        "settings": info,
        "timings": t.timings,
        "segments": [
            {"start": s.start, "end": s.end, "text": s.text, "words": [vars(w) for w in s.words]}
            for s in t.segments
        ],
        "tokens": [_token(k, tok, t) for k, tok in enumerate(t.tokens)],
    }


def _token(k: int, tok: int, t: Transcript) -> dict:
    """One generated token: id, frame time, and its probability and rivals when scored."""
    entry = {"id": int(tok), "time": token_time(k, t.duration)}
    if t.scores is not None:
        s = t.scores[k]
        entry["prob"] = round(s.prob, 6)
        if s.alternatives:
            entry["alternatives"] = [
                {"id": a.id, "text": a.text, "prob": round(a.prob, 6)} for a in s.alternatives
            ]
    return entry


def _dumps(value, indent: str = "") -> str:
    """JSON with one line per innermost object or list, so words and tokens stay one per line."""
    if isinstance(value, dict) and any(isinstance(v, dict | list) for v in value.values()):
        inner = indent + "  "
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        inner = indent + "  "
        return "[\n" + ",\n".join(inner + _dumps(v, inner) for v in value) + f"\n{indent}]"
    return json.dumps(value, ensure_ascii=False)


def to_json(t: Transcript) -> str:
    """The json_document, indented, one word or token per line."""
    return _dumps(json_document(t)) + "\n"


WRITERS: dict[str, Callable[[Transcript], str]] = {
    "txt": to_txt,
    "json": to_json,
    "srt": to_srt,
    "vtt": to_vtt,
    "tsv": to_tsv,
}
