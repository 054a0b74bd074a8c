"""Random tekken.json dicts in the exact official layout (SPEC §1), for tests at any vocabulary size.

Layout of `vocab`: the 256 single bytes (ranks 0…255), then curated merges (English words with and
without a leading space, letter pairs, é ü 日本 and an emoji, and tokens holding only part of a multi-byte
character so incremental decoding is exercised), then random lowercase strings of 2–8 letters until the
file holds `n_vocab_entries` unique byte strings. As in the official file, `token_str` is the UTF-8 text of
the bytes, or null where they are not complete UTF-8, and the vocab has more entries than are used.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import numpy as np

# The official file's regex for splitting text before BPE (used only for encoding, which we never do).
PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|"
    r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
AUDIO = {
    "sampling_rate": 16000,
    "frame_rate": 12.5,
    "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
    "transcription_delay_ms": 480,
    "streaming_look_ahead_ms": 2.5,
    "streaming_look_back_ms": 52.5,
    "streaming_n_left_pad_tokens": 32,
    "transcription_format": "streaming",
}
# Named control tokens by rank (mistral-common's list, plus the two streaming tokens).
SPECIAL_NAMES = {
    0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]", 5: "[AVAILABLE_TOOLS]",
    6: "[/AVAILABLE_TOOLS]", 7: "[TOOL_RESULTS]", 8: "[/TOOL_RESULTS]", 9: "[TOOL_CALLS]", 10: "[IMG]",
    11: "<pad>", 12: "[IMG_BREAK]", 13: "[IMG_END]", 14: "[PREFIX]", 15: "[MIDDLE]", 16: "[SUFFIX]",
    17: "[SYSTEM_PROMPT]", 18: "[/SYSTEM_PROMPT]", 19: "[TOOL_CONTENT]",
    32: "[STREAMING_PAD]", 33: "[STREAMING_WORD]",
}  # fmt: skip
WORDS = (
    "the of and to in is it that was he for on are as with his they at be this from have or by one had "
    "not but what all were when we there can an your which their said if do will each about how up out "
    "them then she many some so these would other into has more her two like him see time could no make "
    "than first been its who now people my made over did down only way find use may water long little "
    "very after words called just where most know hello world speech audio model voice"
).split()
# Whole multi-byte characters, then pieces of them: 日 = E6 97 A5, 本 = E6 9C AC, 😀 = F0 9F 98 80.
MULTIBYTE = ("é", "ü", "ß", "ñ", "日本", " café", "über", "😀", "語")
PARTIAL = (b"\xe6\x97", b"\xa5", b"\xe6\x9c", b"\xac\xe8", b"\xf0\x9f", b"\x98\x80", b"caf\xc3", b"\xa9s")
LETTERS = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)


def _curated() -> list[bytes]:
    """Merges a test can rely on, the most useful first (a tiny vocab keeps only the head)."""
    first = [b" " + w.encode() for w in WORDS[:20]] + list(PARTIAL) + [m.encode() for m in MULTIBYTE]
    rest = [w.encode() for w in WORDS] + [b" " + w.encode() for w in WORDS[20:]]
    pairs = [bytes([a, b]) for a in b"etaoinshr" for b in b"etaoinshr"]
    return first + rest + pairs + [b"ing", b"ion", b"ent", b"the", b"and", b"  ", b"\n\n", b".\n"]


def _random_merges(rng: np.random.Generator, count: int) -> list[bytes]:
    """`count` random strings of 2–8 lowercase letters, a third of them with a leading space."""
    lengths = rng.integers(2, 9, size=count)
    letters = LETTERS[rng.integers(0, len(LETTERS), size=int(lengths.sum()))].tobytes()
    spaced = rng.random(count) < 1 / 3
    ends = np.cumsum(lengths).tolist()
    starts = [0] + ends[:-1]
    return [b" " * s + letters[a:b] for s, a, b in zip(spaced.tolist(), starts, ends, strict=True)]


def _unique_pieces(n_entries: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    pieces = dict.fromkeys([bytes([b]) for b in range(256)] + _curated())
    while len(pieces) < n_entries:
        pieces.update(dict.fromkeys(_random_merges(rng, n_entries - len(pieces) + 64)))
    return list(pieces)[:n_entries]


def _token_str(piece: bytes) -> str | None:
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return None


def make_tekken(
    vocab_size: int, n_special: int = 1000, seed: int = 0, n_vocab_entries: int | None = None
) -> dict:
    """A tekken.json dict: `vocab_size` ids, `n_special` control tokens, deterministic for a seed."""
    if not 0 < n_special < vocab_size:
        raise ValueError(f"need 0 < n_special ({n_special}) < vocab_size ({vocab_size})")
    n_entries = vocab_size - n_special + 100 if n_vocab_entries is None else n_vocab_entries
    vocab = [
        {"rank": i, "token_bytes": base64.b64encode(p).decode("ascii"), "token_str": _token_str(p)}
        for i, p in enumerate(_unique_pieces(n_entries, seed))
    ]
    specials = [
        {"rank": r, "token_str": SPECIAL_NAMES.get(r, f"<SPECIAL_{r}>"), "is_control": True}
        for r in range(n_special)
    ]
    config = {
        "pattern": PATTERN,
        "num_vocab_tokens": n_entries,
        "default_vocab_size": vocab_size,
        "default_num_special_tokens": n_special,
        "version": "v7",
    }
    return {"config": config, "vocab": vocab, "special_tokens": specials, "audio": copy.deepcopy(AUDIO)}


def write_tekken(path: str | Path, **kwargs) -> Path:
    """Write make_tekken(**kwargs) as JSON to `path`; returns the path."""
    path = Path(path)
    path.write_text(json.dumps(make_tekken(**kwargs)), encoding="utf-8")
    return path
