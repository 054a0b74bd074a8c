"""Per-token confidence from the decoder's logits: the chosen token's probability and its close rivals.

The greedy choice is the argmax, so its probability is the largest of the step's softmax; with a
margin P, the alternatives are the other tokens whose probability is within P of it (best first).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import OptionError
from .tokenizer import Tokenizer

MAX_ALTERNATIVES = 5  # rivals listed per token at most


@dataclass(frozen=True)
class Alternative:
    id: int
    text: str  # "" for control tokens
    prob: float


@dataclass(frozen=True)
class TokenScore:
    prob: float  # softmax probability of the chosen token
    text: str = ""  # the chosen token's text ("" for control tokens)
    alternatives: tuple[Alternative, ...] = ()


def check_options(confidence, alternatives) -> None:
    """confidence: True or False; alternatives: None or a probability margin in (0, 1] (OptionError
    otherwise, a bool included: True was a margin of 1, "yes" a confidence of true)."""
    if not isinstance(confidence, bool | np.bool_):
        raise OptionError(f"confidence must be True or False, got {confidence!r}")
    if alternatives is None:
        return
    number = isinstance(alternatives, int | float) and not isinstance(alternatives, bool)
    if not number or not 0 < alternatives <= 1:
        raise OptionError(f"alternatives must be a probability margin in (0, 1], got {alternatives!r}")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64: logits [n, V] → probabilities [n, V]."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def score(logits: np.ndarray, tokens: np.ndarray, tok: Tokenizer, margin: float | None) -> list[TokenScore]:
    """TokenScore of each step: logits [n, V] and the tokens chosen [n]."""
    probs = softmax(logits)  # [n, V]
    out = []
    for row, chosen in zip(probs, tokens, strict=True):
        best = float(row[chosen])
        alts: tuple[Alternative, ...] = ()
        if margin is not None:
            top = np.argpartition(row, -(MAX_ALTERNATIVES + 1))[-(MAX_ALTERNATIVES + 1) :]
            top = top[np.argsort(-row[top])]
            alts = tuple(
                Alternative(int(t), tok.decode([int(t)]), float(row[t]))
                for t in top
                if t != chosen and row[t] >= best - margin
            )
        out.append(TokenScore(prob=best, text=tok.decode([int(chosen)]), alternatives=alts))
    return out


def marked_piece(s: TokenScore) -> str:
    """One token's text, written {chosen|rival|…} when it has text rivals."""
    rivals = [a.text for a in s.alternatives if a.text]
    return "{" + "|".join([s.text] + rivals) + "}" if s.text and rivals else s.text


def marked_text(scores: list[TokenScore]) -> str:
    """The text with every text token that has text rivals written {chosen|rival|…}."""
    return "".join(marked_piece(s) for s in scores).strip()
