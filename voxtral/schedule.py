"""The rules of the schedule (SPEC §6, §7), written once: the loop that applies them is scheduler.py.

Prompt, delay, padding and the stop rule. Token k of the output (k = 0 is chosen at position L − 1)
belongs to audio frame k, 80 ms each from the start of the audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import FRAME_MS, MAX_DELAY_MS
from .errors import OptionError
from .tokenizer import Tokenizer

RIGHT_PAD_EXTRA_TOKENS = 10  # silence after the delay + 1 tokens, so the last words come out (SPEC §6)


def delay_tokens(delay_ms: int) -> int:
    """80 … 2400 ms in steps of 80 → 1 … 30 decoder positions."""
    if isinstance(delay_ms, bool) or not isinstance(delay_ms, (int, np.integer)):
        raise OptionError(f"delay_ms must be a whole number of milliseconds, got {delay_ms!r}")
    if not FRAME_MS <= delay_ms <= MAX_DELAY_MS or delay_ms % FRAME_MS:
        raise OptionError(
            f"delay_ms must be a multiple of {FRAME_MS} from {FRAME_MS} to {MAX_DELAY_MS}, got {delay_ms}"
        )
    return int(delay_ms) // FRAME_MS


@dataclass(frozen=True)
class Schedule:
    n_delay: int  # decoder positions of transcription delay
    n_left: int  # silence tokens prepended (32)
    bos: int
    pad: int  # [STREAMING_PAD]
    eos: int

    @classmethod
    def create(cls, tokenizer: Tokenizer, delay_ms: int | None = None) -> Schedule:
        ms = tokenizer.default_delay_ms if delay_ms is None else delay_ms
        return cls(
            n_delay=delay_tokens(ms),
            n_left=tokenizer.n_left_pad_tokens,
            bos=tokenizer.bos_id,
            pad=tokenizer.streaming_pad_id,
            eos=tokenizer.eos_id,
        )

    @property
    def delay_ms(self) -> int:
        return self.n_delay * FRAME_MS

    @property
    def n_right(self) -> int:
        """Silence tokens appended offline: n_delay + 1 + 10."""
        return self.n_delay + 1 + RIGHT_PAD_EXTRA_TOKENS

    @property
    def prompt(self) -> np.ndarray:
        """[BOS] + [STREAMING_PAD] × (n_left + n_delay), length L."""
        return np.array([self.bos] + [self.pad] * (self.n_left + self.n_delay), np.int64)

    def n_generated(self, n_positions: int) -> int:
        """Greedy steps the audio allows: positions L − 1 … N − 1."""
        return n_positions - len(self.prompt) + 1

    def cut_at_eos(self, tokens: np.ndarray) -> tuple[np.ndarray, bool]:
        """The tokens of a burst up to and including EOS, and whether EOS came (later steps are void)."""
        hit = np.flatnonzero(tokens == self.eos)
        return (tokens[: hit[0] + 1], True) if hit.size else (tokens, False)
