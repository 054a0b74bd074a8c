"""Results: Word, Segment, Transcript, and the token → time alignment of SPEC §6.

The alignment is approximate, at the model's 80 ms resolution: the first text token of a word,
emitted at output step k, marks the word's END at ≈ (k − 1) × 80 ms; a word starts where the
previous one ended (the first word: at the first frame that is not [STREAMING_PAD]), but never
more than MAX_WORD_S before its end: a longer span is a pause followed by the word, and that gap
between words is what splits segments at long pauses.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .config import FRAME_MS
from .tokenizer import Tokenizer

FRAME_S = FRAME_MS / 1000
SENTENCE_END = (".", "?", "!", "…")
MAX_WORD_S = 1.0  # longest span given to one word; more than this before its end is silence
PAUSE_S = 0.8  # a silence this long between two words starts a new segment


@dataclass(frozen=True)
class Word:
    start: float  # seconds from the start of the audio
    end: float
    text: str  # with its leading space, as the tokens spell it


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Transcript:
    text: str
    tokens: list[int]  # every generated id, control ids included
    segments: list[Segment]
    duration: float  # seconds of input audio
    timings: dict[str, float] = field(default_factory=dict)  # stage → seconds
    info: dict = field(default_factory=dict)  # model, device, delay, steps
    scores: list | None = None  # a confidence.TokenScore per token, when confidence was asked for

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]

    def to_dict(self) -> dict:
        return asdict(self)


def ms_floor(seconds: float) -> float:
    """Seconds rounded down to whole milliseconds, so a time rounded to ms stays inside the audio."""
    return math.floor(seconds * 1000) / 1000


def _word_groups(tokens: list[int], tok: Tokenizer) -> list[tuple[int, list[int]]]:
    """(index k of the word's first text token, its text ids) for each word. A word never starts in the
    middle of a character (a token of UTF-8 continuation bytes stays with the word before), so words,
    segments and subtitles spell the characters the whole text does."""
    groups: list[tuple[int, list[int]]] = []
    boundary = True
    for k, t in enumerate(tokens):
        if t == tok.streaming_word_id:
            boundary = True
        elif tok.is_text(t):
            head = tok.token_bytes(t)[:1]
            inside_a_character = bool(groups) and head != b"" and 0x80 <= head[0] < 0xC0  # UTF-8 continuation
            if (boundary or head.isspace()) and not inside_a_character:
                groups.append((k, []))
            groups[-1][1].append(t)
            boundary = False
    return groups


def align_words(tokens: list[int], tok: Tokenizer, duration: float) -> list[Word]:
    """Words with start/end seconds from the generated tokens (SPEC §6, approximate)."""
    first_sound = next((k for k, t in enumerate(tokens) if t != tok.streaming_pad_id), 0)
    words, prev_end, limit = [], None, ms_floor(duration)
    for k, ids in _word_groups(tokens, tok):
        end = min(max(0.0, (k - 1) * FRAME_S), limit)
        after = first_sound * FRAME_S if prev_end is None else prev_end
        start = min(max(after, end - MAX_WORD_S), end)
        words.append(Word(start=round(start, 3), end=round(end, 3), text=tok.decode(ids)))
        prev_end = end
    return words


def segments_from_words(words: list[Word], pause_s: float = PAUSE_S) -> list[Segment]:
    """Split words into segments after sentence punctuation and before a pause of pause_s or more."""
    segments, current = [], []
    for w in words:
        if current and w.start - current[-1].end >= pause_s - 1e-9:
            segments.append(current)
            current = []
        current.append(w)
        if w.text.rstrip().endswith(SENTENCE_END):
            segments.append(current)
            current = []
    if current:
        segments.append(current)
    return [
        Segment(start=ws[0].start, end=ws[-1].end, text="".join(w.text for w in ws).strip(), words=tuple(ws))
        for ws in segments
    ]
