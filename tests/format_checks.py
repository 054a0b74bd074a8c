"""Independent readers of the written formats (srt, webvtt-py, csv, json, strict patterns), and the
checks every output must pass: times in order, inside the audio, cue texts on one line."""

from __future__ import annotations

import csv
import html
import io
import json
import re

import srt
import webvtt

VTT_CLOCK = r"\d{2}:[0-5]\d:[0-5]\d\.\d{3}"
VTT_FILE = re.compile(rf"WEBVTT\n\n(?:{VTT_CLOCK} --> {VTT_CLOCK}\n[^\n]+\n\n)*")
SRT_CLOCK = r"\d{2}:[0-5]\d:[0-5]\d,\d{3}"
SRT_FILE = re.compile(rf"(?:\d+\n{SRT_CLOCK} --> {SRT_CLOCK}\n[^\n]+\n\n)*")


def check_spans(spans: list[tuple[float, float]], duration: float, overlap_ok: bool = False) -> None:
    """0 ≤ start ≤ end ≤ duration, starts in order, no span before the previous one ends."""
    prev_start = prev_end = 0.0
    for start, end in spans:
        assert 0.0 <= start <= end <= duration + 1e-6, (start, end, duration)
        assert start >= prev_start - 1e-6 and (overlap_ok or start >= prev_end - 1e-6), (start, prev_end)
        prev_start, prev_end = start, end


def read_srt(text: str) -> list[tuple[float, float, str]]:
    assert SRT_FILE.fullmatch(text), text
    subs = list(srt.parse(text))
    assert [s.index for s in subs] == list(range(1, len(subs) + 1))
    return [(s.start.total_seconds(), s.end.total_seconds(), s.content) for s in subs]


def read_vtt(text: str) -> list[tuple[float, float, str]]:
    assert VTT_FILE.fullmatch(text), text
    captions = webvtt.from_string(text).captions
    assert len(captions) == text.count(" --> ")
    return [
        (c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000, html.unescape(c.text))
        for c in captions
    ]


def read_tsv(text: str) -> list[tuple[float, float, str]]:
    rows = list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["start", "end", "text"]
    assert all(len(r) == 3 and r[0].isdigit() and r[1].isdigit() and r[2] for r in rows[1:]), rows
    return [(int(a) / 1000, int(b) / 1000, t) for a, b, t in rows[1:]]


def read_json(text: str) -> list[tuple[float, float, str]]:
    doc = json.loads(text)
    assert {"text", "duration", "segments", "tokens", "timings", "model", "settings"} <= doc.keys()
    duration = doc["duration"]
    words = [w for s in doc["segments"] for w in s["words"]]
    check_spans([(w["start"], w["end"]) for w in words], duration)
    check_spans([(t["time"], t["time"]) for t in doc["tokens"]], duration, overlap_ok=True)
    for s in doc["segments"]:
        assert s["words"] and s["start"] == s["words"][0]["start"] and s["end"] == s["words"][-1]["end"]
    return [(s["start"], s["end"], " ".join(s["text"].split())) for s in doc["segments"]]


def read_txt(text: str) -> list[tuple[float, float, str]]:
    assert text == "" or text.endswith("\n")
    return [(0.0, 0.0, line) for line in text.splitlines()]


READERS = {"srt": read_srt, "vtt": read_vtt, "tsv": read_tsv, "json": read_json, "txt": read_txt}


def check_output(fmt: str, text: str, duration: float) -> list[str]:
    """Parse one written file, check its times; its cue (or line) texts."""
    cues = READERS[fmt](text)
    check_spans([(a, b) for a, b, _ in cues], duration, overlap_ok=fmt == "txt")
    assert all(c == " ".join(c.split()) and (c or fmt == "json") for _, _, c in cues), cues
    return [c for _, _, c in cues]
