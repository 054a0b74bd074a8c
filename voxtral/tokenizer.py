"""tekken.json (SPEC §1) → token ids ↔ bytes → text (SPEC §6). Decode only: the model never encodes text.

Ids `0 … n_special−1` are control tokens (BOS, EOS, STREAMING_PAD, STREAMING_WORD, …) and never text.
Id `t ≥ n_special` is the byte string `base64decode(vocab[t − n_special].token_bytes)`; a transcript is
those bytes joined and decoded as UTF-8. One token may hold part of a multi-byte character, so streaming
output goes through `IncrementalDecoder`, which holds a partial character back until it is complete.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import FRAME_MS, MAX_DELAY_MS
from .errors import ConfigError

# Control ids used when special_tokens lacks the name (the official file's ranks).
FALLBACK_IDS = {"<s>": 1, "</s>": 2, "[STREAMING_PAD]": 32, "[STREAMING_WORD]": 33}
DEFAULT_N_LEFT_PAD_TOKENS = 32  # audio.streaming_n_left_pad_tokens of the official file
DEFAULT_DELAY_MS = 480  # audio.transcription_delay_ms of the official file
FIX = "use the tekken.json shipped with the model (re-download it)"


def _fail(source: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {problem}; {FIX}")


def _int(
    section: dict,
    key: str,
    source: str,
    where: str,
    default: int | None = None,
    lo: int = 0,
    hi: int = 1 << 22,
) -> int:
    """An integer lo … hi (a whole float such as 480.0 counts); missing → default; else ConfigError."""
    if key not in section:
        if default is None:
            raise _fail(source, f"missing key '{where}.{key}'")
        return default
    value = section[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value != int(value)
    ):
        raise _fail(source, f"'{where}.{key}' must be a whole number, got {value!r}")
    if not lo <= value <= hi:
        raise _fail(source, f"'{where}.{key}' must be in {lo} … {hi}, got {value!r}")
    return int(value)


def _decode_vocab(vocab: Any, n_used: int, source: str) -> list[bytes]:
    """Base64-decode the first n_used vocab entries, checking that entry i has rank i."""
    if not isinstance(vocab, list):
        raise _fail(source, "'vocab' must be a list")
    if len(vocab) < n_used:
        raise _fail(source, f"vocab has {len(vocab)} entries, fewer than vocab_size − n_special = {n_used}")
    pieces = []
    for i in range(n_used):
        entry = vocab[i]
        try:
            pieces.append(base64.b64decode(entry["token_bytes"], validate=True))
            rank = entry["rank"]
        except (binascii.Error, TypeError, KeyError, ValueError):
            raise _fail(source, f"vocab entry {i} has missing or bad base64 'token_bytes'") from None
        if rank != i:
            raise _fail(source, f"vocab entry {i} has rank {rank!r}, expected {i}")
    return pieces


def _special_ids(specials: Any, n_special: int, source: str) -> dict[str, int]:
    """token_str → rank for the listed control tokens below n_special."""
    if specials is None:
        return {}
    if not isinstance(specials, list):
        raise _fail(source, "'special_tokens' must be a list")
    try:
        found = {s["token_str"]: int(s["rank"]) for s in specials}
    except (TypeError, KeyError, ValueError):
        raise _fail(source, "every special_tokens entry needs 'rank' and 'token_str'") from None
    return {name: rank for name, rank in found.items() if 0 <= rank < n_special}


@dataclass(frozen=True, eq=False)
class Tokenizer:
    """The decode half of the Tekken tokenizer: ids → bytes → text."""

    source: str  # the file it came from, for messages
    vocab_size: int  # V: rows of the embedding / logits
    n_special: int
    bos_id: int
    eos_id: int
    streaming_pad_id: int
    streaming_word_id: int
    n_left_pad_tokens: int
    default_delay_ms: int
    pieces: tuple[bytes, ...]  # [V]: b"" for control ids, the token's bytes otherwise

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        """Load tekken.json; any problem raises ConfigError naming the file."""
        path = Path(path)
        if not path.is_file():
            raise _fail(str(path), "tokenizer file not found")
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except json.JSONDecodeError as e:
            raise _fail(str(path), f"invalid JSON at line {e.lineno} column {e.colno} ({e.msg})") from None
        except (RecursionError, ValueError) as e:  # nesting too deep, an integer of > 4300 digits
            raise _fail(str(path), f"invalid JSON ({type(e).__name__}: {e})") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read it ({e.strerror}); check its permissions") from None
        except UnicodeDecodeError:
            raise _fail(str(path), "not UTF-8 text") from None
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "tekken.json") -> Tokenizer:
        """Build from the parsed JSON of a tekken.json file."""
        if not isinstance(raw, dict):
            raise _fail(source, "top level must be a JSON object")
        for key in ("config", "vocab"):
            if key not in raw:
                raise _fail(source, f"missing key '{key}'")
        config, audio = raw["config"], raw.get("audio") or {}
        if not isinstance(config, dict) or not isinstance(audio, dict):
            raise _fail(source, "'config' and 'audio' must be objects")
        vocab_size = _int(config, "default_vocab_size", source, "config")
        n_special = _int(config, "default_num_special_tokens", source, "config")
        if not 0 < n_special < vocab_size:
            raise _fail(source, f"need 0 < default_num_special_tokens {n_special} < vocab size {vocab_size}")
        pieces = _decode_vocab(raw["vocab"], vocab_size - n_special, source)
        ids = FALLBACK_IDS | _special_ids(raw.get("special_tokens"), n_special, source)
        n_left = _int(
            audio, "streaming_n_left_pad_tokens", source, "audio", DEFAULT_N_LEFT_PAD_TOKENS, hi=1024
        )
        delay_ms = _int(
            audio, "transcription_delay_ms", source, "audio", DEFAULT_DELAY_MS, FRAME_MS, MAX_DELAY_MS
        )
        if delay_ms % FRAME_MS:
            raise _fail(
                source, f"'audio.transcription_delay_ms' must be a multiple of {FRAME_MS}, got {delay_ms}"
            )
        return cls(
            source=source,
            vocab_size=vocab_size,
            n_special=n_special,
            bos_id=ids["<s>"],
            eos_id=ids["</s>"],
            streaming_pad_id=ids["[STREAMING_PAD]"],
            streaming_word_id=ids["[STREAMING_WORD]"],
            n_left_pad_tokens=n_left,
            default_delay_ms=delay_ms,
            pieces=(b"",) * n_special + tuple(pieces),
        )

    def is_text(self, token_id: int) -> bool:
        """True for ids that carry text (not control tokens)."""
        return self.n_special <= token_id < self.vocab_size

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token: b"" for control ids."""
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} outside the vocabulary [0, {self.vocab_size})")
        return self.pieces[token_id]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a whole id sequence; control ids are dropped, invalid UTF-8 becomes U+FFFD, control
        characters (NUL, escapes: never speech) are dropped."""
        data = bytearray()  # not b"".join: it takes an 80-byte buffer view per piece (4 MB for 70 min)
        for t in ids:
            data += self.token_bytes(int(t))
        return printable(data.decode("utf-8", errors="replace"))

    def check_vocab_size(self, model_vocab_size: int) -> None:
        """Raise ConfigError unless the model's vocab_size (params.json) equals the tokenizer's."""
        if model_vocab_size != self.vocab_size:
            raise ConfigError(
                f"{self.source}: tokenizer vocab size {self.vocab_size} differs from the model's "
                f"vocab_size {model_vocab_size} in params.json; use the tekken.json of the same checkpoint"
            )


class IncrementalDecoder:
    """Token-by-token text: a character split across tokens comes out whole once complete."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        """The text completed by this token ("" for control ids or an unfinished character)."""
        return printable(self._utf8.decode(self.tokenizer.token_bytes(int(token_id))))

    def finish(self) -> str:
        """Flush a trailing unfinished character (as U+FFFD) and reset for reuse."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return printable(text)


CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0/C1 controls but tab, newline, CR


def printable(text: str) -> str:
    """Text without control characters: random or damaged tokens can spell them, speech never does."""
    return CONTROL.sub("", text)
