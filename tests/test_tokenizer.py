"""voxtral.tokenizer on random tekken.json files in the official layout (voxtral.testing.tekken)."""

import base64
import json
import random
import time

import pytest

from voxtral.errors import ConfigError
from voxtral.testing.tekken import make_tekken, write_tekken
from voxtral.tokenizer import IncrementalDecoder, Tokenizer

N_SPECIAL = 1000


def id_of(tekken: dict, piece: bytes) -> int:
    """The token id whose bytes are `piece`, among the ids the tokenizer uses."""
    n_special = tekken["config"]["default_num_special_tokens"]
    n_used = tekken["config"]["default_vocab_size"] - n_special
    ranks = [e["rank"] for e in tekken["vocab"][:n_used] if base64.b64decode(e["token_bytes"]) == piece]
    assert ranks, f"{piece!r} is not in the used vocab"
    return n_special + ranks[0]


@pytest.fixture(scope="module")
def small():
    tekken = make_tekken(vocab_size=2000)
    return tekken, Tokenizer.from_dict(tekken)


@pytest.fixture(scope="module")
def tiny():
    tekken = make_tekken(vocab_size=N_SPECIAL + 300, seed=1)  # the tiny test model's size
    return tekken, Tokenizer.from_dict(tekken)


def test_decode_known_ids(small):
    tekken, tok = small
    ids = [tok.bos_id, tok.streaming_pad_id, id_of(tekken, b"hello"), tok.streaming_word_id]
    ids += [id_of(tekken, b" world"), id_of(tekken, b" caf\xc3\xa9"), tok.eos_id]
    assert tok.decode(ids) == "hello world café"
    assert tok.decode([N_SPECIAL + ord("A"), N_SPECIAL + ord("\n")]) == "A\n"  # ranks 0…255 are the bytes


def test_special_ids_give_no_text(small):
    _, tok = small
    assert (tok.bos_id, tok.eos_id, tok.streaming_pad_id, tok.streaming_word_id) == (1, 2, 32, 33)
    assert tok.decode(range(N_SPECIAL)) == ""
    assert all(tok.token_bytes(i) == b"" and not tok.is_text(i) for i in range(N_SPECIAL))
    assert tok.is_text(N_SPECIAL) and tok.is_text(tok.vocab_size - 1) and not tok.is_text(tok.vocab_size)
    dec = IncrementalDecoder(tok)
    assert [dec.feed(i) for i in (1, 32, 33, 2)] == ["", "", "", ""]


def test_token_bytes_outside_vocab_raises(small):
    _, tok = small
    for bad in (-1, tok.vocab_size):
        with pytest.raises(ValueError, match="outside the vocabulary"):
            tok.token_bytes(bad)


def test_split_characters_come_out_whole(tiny):
    tekken, tok = tiny
    # 日 = E6 97 A5 over two tokens; 本 = E6 9C AC, its last token also starts 語 = E8 AA 9E;
    # 😀 = F0 9F 98 80 over two tokens
    pieces = [b"\xe6\x97", b"\xa5", b"\xe6\x9c", b"\xac\xe8", b"\xaa", b"\x9e", b"\xf0\x9f", b"\x98\x80"]
    ids = [id_of(tekken, p) for p in pieces]
    dec = IncrementalDecoder(tok)
    assert [dec.feed(i) for i in ids] == ["", "日", "", "本", "", "語", "", "😀"]
    assert dec.finish() == ""
    assert tok.decode(ids) == "日本語😀"


def test_unfinished_character_flushes_as_replacement(tiny):
    tekken, tok = tiny
    dec = IncrementalDecoder(tok)
    assert dec.feed(id_of(tekken, b"\xe6\x97")) == ""
    assert dec.finish() == "\ufffd"
    assert dec.feed(id_of(tekken, b"\xc3\xa9")) == "é"  # finish() resets the decoder


def test_incremental_equals_whole_decode_on_random_ids(small):
    _, tok = small
    rng = random.Random(0)
    for _ in range(20):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 60))]
        dec = IncrementalDecoder(tok)
        assert "".join(dec.feed(i) for i in ids) + dec.finish() == tok.decode(ids)


def test_full_size_file_loads_fast(tmp_path):
    path = write_tekken(tmp_path / "tekken.json", vocab_size=131072)
    start = time.perf_counter()
    tok = Tokenizer.from_file(path)
    seconds = time.perf_counter() - start
    assert seconds < 2.0, f"loading a full-size tekken.json took {seconds:.2f} s"
    assert (tok.vocab_size, tok.n_special, len(tok.pieces)) == (131072, 1000, 131072)
    last = json.loads(path.read_text())["vocab"][131072 - 1000 - 1]
    assert tok.token_bytes(131071) == base64.b64decode(last["token_bytes"])


def test_audio_section_read_with_fallbacks():
    tekken = make_tekken(vocab_size=1300)
    tekken["audio"].update(streaming_n_left_pad_tokens=16, transcription_delay_ms=960.0)
    tok = Tokenizer.from_dict(tekken)
    assert (tok.n_left_pad_tokens, tok.default_delay_ms) == (16, 960)
    del tekken["audio"]
    tok = Tokenizer.from_dict(tekken)
    assert (tok.n_left_pad_tokens, tok.default_delay_ms) == (32, 480)


def test_control_ids_looked_up_by_name_with_fallbacks():
    tekken = make_tekken(vocab_size=1300)
    specials = tekken["special_tokens"]
    specials[32]["token_str"], specials[40]["token_str"] = specials[40]["token_str"], "[STREAMING_PAD]"
    assert Tokenizer.from_dict(tekken).streaming_pad_id == 40
    del tekken["special_tokens"]
    tok = Tokenizer.from_dict(tekken)
    assert (tok.bos_id, tok.eos_id, tok.streaming_pad_id, tok.streaming_word_id) == (1, 2, 32, 33)


def _without(key):
    return lambda t: t.pop(key)


def _set_first_bytes(t):
    t["vocab"][5]["token_bytes"] = "not base64!"


@pytest.mark.parametrize(
    "change, problem",
    [
        (_without("vocab"), "missing key 'vocab'"),
        (_without("config"), "missing key 'config'"),
        (lambda t: t.update(vocab=t["vocab"][:299]), "vocab has 299 entries, fewer than"),
        (_set_first_bytes, "vocab entry 5 has missing or bad base64"),
        (lambda t: t["config"].pop("default_vocab_size"), "missing key 'config.default_vocab_size'"),
    ],
)
def test_bad_tekken_raises_one_line_naming_file(tmp_path, change, problem):
    tekken = make_tekken(vocab_size=1300)
    change(tekken)
    path = tmp_path / "tekken.json"
    path.write_text(json.dumps(tekken))
    with pytest.raises(ConfigError) as info:
        Tokenizer.from_file(path)
    message = str(info.value)
    assert str(path) in message and problem in message and "\n" not in message


def test_missing_and_invalid_files_raise(tmp_path):
    missing = tmp_path / "nope" / "tekken.json"
    with pytest.raises(ConfigError, match="not found") as info:
        Tokenizer.from_file(missing)
    assert str(missing) in str(info.value)
    broken = tmp_path / "tekken.json"
    broken.write_text('{"config": {"default_vocab_size": 1300,')
    with pytest.raises(ConfigError, match="invalid JSON at line 1") as info:
        Tokenizer.from_file(broken)
    assert str(broken) in str(info.value) and "\n" not in str(info.value)


def test_an_unreadable_file_says_permissions_only(tmp_path, monkeypatch):
    """Not "re-download it" too: the file may be fine (new-user pass, a non-root user, mode 000)."""
    import voxtral.tokenizer as tokenizer

    path = tmp_path / "tekken.json"
    write_tekken(path, vocab_size=1300)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tokenizer, "open", refuse, raising=False)
    with pytest.raises(ConfigError, match="Permission denied.*check its permissions$"):
        Tokenizer.from_file(path)


def test_check_vocab_size():
    tok = Tokenizer.from_dict(make_tekken(vocab_size=1300), source="model/tekken.json")
    tok.check_vocab_size(1300)
    with pytest.raises(ConfigError, match="model/tekken.json: tokenizer vocab size 1300 differs.*131072"):
        tok.check_vocab_size(131072)


def test_make_tekken_layout():
    tekken = make_tekken(vocab_size=1300, n_special=100, seed=3)
    assert set(tekken) == {"config", "vocab", "special_tokens", "audio"}
    assert tekken["config"]["num_vocab_tokens"] == len(tekken["vocab"]) == 1300 - 100 + 100
    pieces = [base64.b64decode(e["token_bytes"]) for e in tekken["vocab"]]
    assert len(set(pieces)) == len(pieces) and pieces[:256] == [bytes([b]) for b in range(256)]
    assert [e["rank"] for e in tekken["vocab"]] == list(range(len(pieces)))
    assert tekken["vocab"][65]["token_str"] == "A" and tekken["vocab"][0xE6]["token_str"] is None
    names = [s["token_str"] for s in tekken["special_tokens"]]
    assert len(names) == 100 and names[:3] == ["<unk>", "<s>", "</s>"] and names[99] == "<SPECIAL_99>"
    assert names[32:34] == ["[STREAMING_PAD]", "[STREAMING_WORD]"]
    assert make_tekken(vocab_size=5000, seed=3) == make_tekken(vocab_size=5000, seed=3)
    assert make_tekken(vocab_size=5000, seed=3)["vocab"] != make_tekken(vocab_size=5000, seed=4)["vocab"]
