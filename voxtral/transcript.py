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


def _word(k: int, text: str, prev_end: float | None, first_sound: int, limit: float) -> tuple[Word, float]:
    """Word k's times (SPEC §6): it ends one frame before its first token, starts where the previous word
    ended (the first: at the first non-pad frame), at most MAX_WORD_S before its end; (word, its end)."""
    end = min(max(0.0, (k - 1) * FRAME_S), limit)
    after = first_sound * FRAME_S if prev_end is None else prev_end
    start = min(max(after, end - MAX_WORD_S), end)
    return Word(start=round(start, 3), end=round(end, 3), text=text), end


def align_words(tokens: list[int], tok: Tokenizer, duration: float) -> list[Word]:
    """Words with start/end seconds from the generated tokens (SPEC §6, approximate)."""
    first_sound = next((k for k, t in enumerate(tokens) if t != tok.streaming_pad_id), 0)
    words, prev_end, limit = [], None, ms_floor(duration)
    for k, ids in _word_groups(tokens, tok):
        word, prev_end = _word(k, tok.decode(ids), prev_end, first_sound, limit)
        words.append(word)
    return words


def _opens_segment(current: list[Word], w: Word, pause_s: float) -> bool:
    """Whether w starts a new segment: a pause of pause_s or more before it."""
    return bool(current) and w.start - current[-1].end >= pause_s - 1e-9


def _closes_segment(w: Word) -> bool:
    """Whether the segment ends after w: sentence punctuation."""
    return w.text.rstrip().endswith(SENTENCE_END)


def _segment(ws: list[Word]) -> Segment:
    text = "".join(w.text for w in ws).strip()
    return Segment(start=ws[0].start, end=ws[-1].end, text=text, words=tuple(ws))


def segments_from_words(words: list[Word], pause_s: float = PAUSE_S) -> list[Segment]:
    """Split words into segments after sentence punctuation and before a pause of pause_s or more."""
    segments, current = [], []
    for w in words:
        if _opens_segment(current, w, pause_s):
            segments.append(current)
            current = []
        current.append(w)
        if _closes_segment(w):
            segments.append(current)
            current = []
    if current:
        segments.append(current)
    return [_segment(ws) for ws in segments]


class LiveSegments:
    """The segments of a growing token sequence, each given out as soon as it is final: exactly those of
    segments_from_words(align_words(all tokens, duration)), in order, once finish(duration) has run.

    A word is final when the next word has begun and its end cannot be clamped by the audio's end any
    more (its end is within the audio known so far); a segment when a final word opens the next one, or
    its last final word ends a sentence. For text printed while a long file is decoded."""

    def __init__(self, tok: Tokenizer):
        self.tok = tok
        self._first_sound: int | None = None
        self._boundary = True
        self._k = 0  # index of the next token
        self._groups: list[tuple[int, list[int]]] = []  # complete, not yet turned into words
        self._open: tuple[int, list[int]] | None = None  # the word still being spelled
        self._prev_end: float | None = None
        self._current: list[Word] = []  # words of the segment being built

    def add(self, tokens, known_duration: float) -> list[Segment]:
        """The next tokens, and the audio seconds known to exist so far → the segments now final."""
        for t in tokens:
            t = int(t)
            if self._first_sound is None and t != self.tok.streaming_pad_id:
                self._first_sound = self._k
            if t == self.tok.streaming_word_id:
                self._boundary = True
            elif self.tok.is_text(t):
                head = self.tok.token_bytes(t)[:1]
                inside = self._open is not None and head != b"" and 0x80 <= head[0] < 0xC0
                if (self._boundary or head.isspace()) and not inside:
                    if self._open is not None:
                        self._groups.append(self._open)
                    self._open = (self._k, [])
                self._open[1].append(t)
                self._boundary = False
            self._k += 1
        return self._words(ms_floor(known_duration), final=False)

    def finish(self, duration: float) -> list[Segment]:
        """The rest, once every token is in and the audio's duration is known."""
        if self._open is not None:
            self._groups.append(self._open)
            self._open = None
        out = self._words(ms_floor(duration), final=True)
        if self._current:
            out.append(_segment(self._current))
            self._current = []
        return out

    def _words(self, limit: float, final: bool) -> list[Segment]:
        out = []
        while self._groups and (final or (self._groups[0][0] - 1) * FRAME_S <= limit):
            k, ids = self._groups.pop(0)
            w, self._prev_end = _word(k, self.tok.decode(ids), self._prev_end, self._first_sound or 0, limit)
            if _opens_segment(self._current, w, PAUSE_S):
                out.append(_segment(self._current))
                self._current = []
            self._current.append(w)
            if _closes_segment(w):
                out.append(_segment(self._current))
                self._current = []
        return out
