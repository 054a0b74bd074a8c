"""Results: Word, Segment, Transcript, and the token → time alignment of SPEC §6.

The alignment is approximate, at the model's 80 ms resolution: the first text token of a word,
emitted at output step k, marks the word's END at ≈ (k − 1) × 80 ms; a word starts where the
previous one ended (the first word: at the first frame that is not [STREAMING_PAD]), but never
more than MAX_WORD_S before its end: a longer span is a pause followed by the word, and that gap
between words is what splits segments at long pauses.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace

from .config import FRAME_MS
from .tokenizer import Tokenizer

FRAME_S = FRAME_MS / 1000
SENTENCE_END = (".", "?", "!", "…")
MAX_WORD_S = 1.0  # longest span given to one word; more than this before its end is silence
PAUSE_S = 0.8  # a silence this long between two words starts a new segment
JOIN_EVERY = 256  # word texts joined into one string per this many words (a str object each costs ~60 B)
MAX_SEGMENT_S = 30.0  # a word that would make its segment span longer than this starts a new one


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


class Segments(Sequence):
    """The segments of a transcript, stored as columns (word times in float arrays, word texts joined
    in blocks of JOIN_EVERY words): ~30 bytes a word where Word and Segment objects take ~200, so a
    transcript of hours stays small. A read-only sequence of Segment: index, slice, iterate, `in`,
    compare with a list, `+` a list (gives a list); `list(segments)` for a list to edit. Each access
    makes the Segment objects asked for, in time proportional to their words."""

    def __init__(self):
        self._start, self._end = array("d"), array("d")  # per word, seconds
        self._offset = array("q", [0])  # word i's text: characters offset[i] … offset[i + 1] of all text
        self._blocks: list[str] = []  # block b: the texts of words b·JOIN_EVERY … (b+1)·JOIN_EVERY − 1
        self._pending: list[str] = []  # the texts of the words after the last block, one str each
        self._bounds = array("q", [0])  # segment j: words bounds[j] … bounds[j + 1] − 1

    def _add_word(self, w: Word) -> None:
        self._start.append(w.start)
        self._end.append(w.end)
        self._offset.append(self._offset[-1] + len(w.text))
        self._pending.append(w.text)
        if len(self._pending) == JOIN_EVERY:
            self._blocks.append("".join(self._pending))
            self._pending.clear()

    def _close(self) -> None:
        """End the open segment after the last word added (nothing if it has no words)."""
        if len(self._start) > self._bounds[-1]:
            self._bounds.append(len(self._start))

    def _text(self, i: int) -> str:
        b, k = divmod(i, JOIN_EVERY)
        if b == len(self._blocks):
            return self._pending[k]
        first = self._offset[b * JOIN_EVERY]
        return self._blocks[b][self._offset[i] - first : self._offset[i + 1] - first]

    def _segment(self, j: int) -> Segment:
        words = range(self._bounds[j], self._bounds[j + 1])
        return _segment(tuple(Word(self._start[i], self._end[i], self._text(i)) for i in words))

    def __len__(self) -> int:
        return len(self._bounds) - 1

    def __getitem__(self, j):
        if isinstance(j, slice):
            return [self._segment(i) for i in range(*j.indices(len(self)))]
        if j < 0:
            j += len(self)
        if not 0 <= j < len(self):
            raise IndexError("segment index out of range")
        return self._segment(j)

    def __iter__(self) -> Iterator[Segment]:
        return (self._segment(j) for j in range(len(self)))

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, list | Segments)
            and len(other) == len(self)
            and all(a == b for a, b in zip(self, other, strict=True))
        )

    def __add__(self, other) -> list[Segment]:
        return list(self) + list(other)

    def __radd__(self, other) -> list[Segment]:
        return list(other) + list(self)

    def __repr__(self) -> str:
        return f"Segments({list(self)!r})"


class SegmentBuilder:
    """Words in order → Segments: a segment ends after sentence punctuation, before a pause of pause_s or
    more, and before a word that would make it span more than MAX_SEGMENT_S."""

    def __init__(self, pause_s: float = PAUSE_S):
        self.pause_s = pause_s
        self.segments = Segments()
        self._first: Word | None = None  # first and last word of the open segment
        self._last: Word | None = None

    def add(self, w: Word) -> int:
        """Add the next word; returns how many segments it closed (0, 1 or 2)."""
        closed = 0
        if self._last is not None and _opens_segment(self._first, self._last, w, self.pause_s):
            closed += self._close()
        self.segments._add_word(w)
        self._first = self._first or w
        self._last = w
        if _closes_segment(w):
            closed += self._close()
        return closed

    def finish(self) -> int:
        """Close the open segment; returns 1 if there was one."""
        return self._close()

    def _close(self) -> int:
        if self._last is None:
            return 0
        self.segments._close()
        self._first = self._last = None
        return 1


@dataclass(frozen=True)
class Transcript:
    text: str
    tokens: list[int]  # every generated id, control ids included
    segments: Sequence[Segment]  # a list, or Segments (the same, stored compactly)
    duration: float  # seconds of input audio
    timings: dict[str, float] = field(default_factory=dict)  # stage → seconds
    info: dict = field(default_factory=dict)  # model, device, delay, steps
    scores: list | None = None  # a confidence.TokenScore per token, when confidence was asked for

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]

    def to_dict(self) -> dict:
        return asdict(replace(self, segments=list(self.segments), tokens=list(self.tokens)))


def ms_floor(seconds: float) -> float:
    """Seconds rounded down to whole milliseconds, so a time rounded to ms stays inside the audio."""
    return math.floor(seconds * 1000) / 1000


def _word_groups(tokens: Iterable[int], tok: Tokenizer) -> Iterator[tuple[int, list[int]]]:
    """(index k of the word's first text token, its text ids) for each word, in order. A word never starts
    in the middle of a character (a token of UTF-8 continuation bytes stays with the word before), so
    words, segments and subtitles spell the characters the whole text does."""
    group: tuple[int, list[int]] | None = None
    boundary = True
    for k, t in enumerate(tokens):
        t = int(t)
        if t == tok.streaming_word_id:
            boundary = True
        elif tok.is_text(t):
            head = tok.token_bytes(t)[:1]
            inside_a_character = group is not None and head != b"" and 0x80 <= head[0] < 0xC0  # continuation
            if (boundary or head.isspace()) and not inside_a_character:
                if group is not None:
                    yield group
                group = (k, [])
            group[1].append(t)
            boundary = False
    if group is not None:
        yield group


def _word(k: int, text: str, prev_end: float | None, first_sound: int, limit: float) -> tuple[Word, float]:
    """Word k's times (SPEC §6): it ends one frame before its first token, starts where the previous word
    ended (the first: at the first non-pad frame), at most MAX_WORD_S before its end; (word, its end)."""
    end = min(max(0.0, (k - 1) * FRAME_S), limit)
    after = first_sound * FRAME_S if prev_end is None else prev_end
    start = min(max(after, end - MAX_WORD_S), end)
    return Word(start=round(start, 3), end=round(end, 3), text=text), end


def aligned_words(tokens: Sequence[int], tok: Tokenizer, duration: float) -> Iterator[Word]:
    """Words with start/end seconds from the generated tokens (SPEC §6, approximate), one at a time."""
    first_sound = next((k for k, t in enumerate(tokens) if t != tok.streaming_pad_id), 0)
    prev_end, limit = None, ms_floor(duration)
    for k, ids in _word_groups(tokens, tok):
        word, prev_end = _word(k, tok.decode(ids), prev_end, first_sound, limit)
        yield word


def align_words(tokens: Sequence[int], tok: Tokenizer, duration: float) -> list[Word]:
    """Words with start/end seconds from the generated tokens (SPEC §6, approximate)."""
    return list(aligned_words(tokens, tok, duration))


def build_segments(words: Iterable[Word], pause_s: float = PAUSE_S) -> Segments:
    """Segments (compact) of words given one at a time: see SegmentBuilder."""
    builder = SegmentBuilder(pause_s)
    for w in words:
        builder.add(w)
    builder.finish()
    return builder.segments


def _opens_segment(first: Word, last: Word, w: Word, pause_s: float) -> bool:
    """Whether w starts a new segment after the open one (first … last): a pause of pause_s or more before
    it, or the segment would span more than MAX_SEGMENT_S with it."""
    return w.start - last.end >= pause_s - 1e-9 or w.end - first.start > MAX_SEGMENT_S + 1e-9


def _closes_segment(w: Word) -> bool:
    """Whether the segment ends after w: sentence punctuation."""
    return w.text.rstrip().endswith(SENTENCE_END)


def _segment(ws: list[Word]) -> Segment:
    text = "".join(w.text for w in ws).strip()
    return Segment(start=ws[0].start, end=ws[-1].end, text=text, words=tuple(ws))


def segments_from_words(words: Iterable[Word], pause_s: float = PAUSE_S) -> list[Segment]:
    """Split words into segments after sentence punctuation, before a pause of pause_s or more and before
    a word that would make a segment span more than MAX_SEGMENT_S."""
    return list(build_segments(words, pause_s))


class LiveSegments:
    """The segments of a growing token sequence, each given out as soon as it is final: exactly those of
    segments_from_words(align_words(all tokens, duration)), in order, once finish(duration) has run;
    `segments` holds them all (compact), for the Transcript.

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
        self._builder = SegmentBuilder()

    @property
    def segments(self) -> Segments:
        """Every segment given out so far (all of them once finish has run)."""
        return self._builder.segments

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
        return out + self._closed(self._builder.finish())

    def _words(self, limit: float, final: bool) -> list[Segment]:
        closed = 0
        while self._groups and (final or (self._groups[0][0] - 1) * FRAME_S <= limit):
            k, ids = self._groups.pop(0)
            w, self._prev_end = _word(k, self.tok.decode(ids), self._prev_end, self._first_sound or 0, limit)
            closed += self._builder.add(w)
        return self._closed(closed)

    def _closed(self, n: int) -> list[Segment]:
        segments = self._builder.segments
        return segments[len(segments) - n :] if n else []
