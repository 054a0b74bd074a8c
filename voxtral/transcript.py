"""Results: Word, Segment, Transcript, and the token → time alignment of SPEC §6.

The alignment is approximate, at the model's 80 ms resolution: the first text token of a word,
emitted at output step k, marks the word's END at ≈ (k − 1) × 80 ms; a word starts where the
previous one ended (the first word: at the first frame that is not [STREAMING_PAD]).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .config import FRAME_MS
from .tokenizer import Tokenizer

FRAME_S = FRAME_MS / 1000
SENTENCE_END = (".", "?", "!", "…")


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

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]

    def to_dict(self) -> dict:
        return asdict(self)


def _word_groups(tokens: list[int], tok: Tokenizer) -> list[tuple[int, list[int]]]:
    """(index k of the word's first text token, its text ids) for each word."""
    groups: list[tuple[int, list[int]]] = []
    boundary = True
    for k, t in enumerate(tokens):
        if t == tok.streaming_word_id:
            boundary = True
        elif tok.is_text(t):
            if boundary or tok.token_bytes(t)[:1].isspace():
                groups.append((k, []))
            groups[-1][1].append(t)
            boundary = False
    return groups


def align_words(tokens: list[int], tok: Tokenizer, duration: float) -> list[Word]:
    """Words with start/end seconds from the generated tokens (SPEC §6, approximate)."""
    first_sound = next((k for k, t in enumerate(tokens) if t != tok.streaming_pad_id), 0)
    words, prev_end = [], None
    for k, ids in _word_groups(tokens, tok):
        end = min(max(0.0, (k - 1) * FRAME_S), duration)
        start = min(first_sound * FRAME_S if prev_end is None else prev_end, end)
        words.append(Word(start=round(start, 3), end=round(end, 3), text=tok.decode(ids)))
        prev_end = end
    return words


def segments_from_words(words: list[Word]) -> list[Segment]:
    """One segment per sentence (split after sentence punctuation)."""
    segments, current = [], []
    for w in words:
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
