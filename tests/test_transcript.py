"""Token → time alignment (SPEC §6) on a hand-made token sequence."""

from voxtral.testing.tekken import make_tekken
from voxtral.tokenizer import Tokenizer
from voxtral.transcript import align_words, segments_from_words

PAD, WORD = 32, 33


def _tok():
    return Tokenizer.from_dict(make_tekken(1000 + 400, seed=0))


def _id(tok, text: bytes) -> int:
    return tok.pieces.index(text)


def test_words_end_one_frame_before_their_first_token():
    tok = _tok()
    hello, dot = _id(tok, b" the"), _id(tok, b".")
    a = _id(tok, b" and")
    # frames:   0    1    2      3     4    5     6     7   8
    tokens = [PAD, PAD, hello, WORD, PAD, a, dot, WORD, PAD]
    words = align_words(tokens, tok, duration=10.0)
    assert [w.text for w in words] == [" the", " and."]
    assert words[0].end == 0.08  # (2 − 1) × 80 ms
    assert words[0].start == 0.08  # first non-pad frame is 2 (0.16 s), clamped to the end
    assert words[1].start == 0.08 and words[1].end == 0.32  # (5 − 1) × 80 ms
    segs = segments_from_words(words)
    assert len(segs) == 1 and segs[0].text == "the and."


def test_sentence_punctuation_splits_segments_and_times_stay_in_audio():
    tok = _tok()
    the, dot = _id(tok, b" the"), _id(tok, b".")
    tokens = [the, dot, WORD] * 3 + [the] * 50
    words = align_words(tokens, tok, duration=1.0)
    segs = segments_from_words(words)
    assert [s.text for s in segs][:3] == ["the.", "the.", "the."]
    assert all(0 <= w.start <= w.end <= 1.0 for w in words)
    assert all(a.end <= b.start + 1e-9 for a, b in zip(words, words[1:], strict=False))


def test_a_long_silence_before_a_word_is_a_pause_that_splits_segments():
    tok = _tok()
    the, a, dot = _id(tok, b" the"), _id(tok, b" and"), _id(tok, b".")
    tokens = [PAD, the, WORD, PAD, a, WORD] + [PAD] * 30 + [the, dot]
    words = align_words(tokens, tok, duration=10.0)
    assert [(w.start, w.end) for w in words] == [(0.0, 0.0), (0.0, 0.24), (1.8, 2.8)]  # 2.8 − MAX_WORD_S
    segs = segments_from_words(words)
    assert [(s.text, s.start, s.end) for s in segs] == [("the and", 0.0, 0.24), ("the.", 1.8, 2.8)]
    assert len(segments_from_words(words, pause_s=2.0)) == 1


def test_word_ends_are_rounded_down_inside_the_audio():
    tok = _tok()
    words = align_words([_id(tok, b" the")] * 40, tok, duration=1.0006)
    assert words[-1].end == 1.0


def test_live_segments_equal_the_whole_run():
    """Random token streams fed in random pieces, with the audio known so far growing ahead of them:
    the segments given out as they become final are exactly the whole run's, in order."""
    import json
    import tempfile
    from pathlib import Path

    import numpy as np

    from voxtral.testing.tekken import make_tekken
    from voxtral.tokenizer import Tokenizer
    from voxtral.transcript import LiveSegments, align_words, segments_from_words

    path = Path(tempfile.mkdtemp()) / "tekken.json"
    path.write_text(json.dumps(make_tekken(2000)))
    tok = Tokenizer.from_file(path)
    dot = next(i for i in range(tok.n_special, tok.vocab_size) if tok.pieces[i] == b".")
    rng = np.random.default_rng(0)
    early = 0
    for trial in range(60):
        n = int(rng.integers(1, 400))
        choices = [tok.streaming_pad_id] * 6 + [tok.streaming_word_id] * 2 + [dot] + list(range(1000, 1400))
        tokens = [int(rng.choice(choices)) for _ in range(n)]
        duration = max(0.0, (n - 17) * 0.08 + float(rng.uniform(-0.3, 0.3)))  # the right padding: 17 tokens
        want = segments_from_words(align_words(tokens, tok, duration))
        live, got, fed = LiveSegments(tok), [], 0
        while fed < n:
            step = int(rng.integers(1, 40))
            known = min(duration, (fed + step) * 0.08 + float(rng.uniform(0, 5)))
            got += live.add(tokens[fed : fed + step], known)
            fed += step
        early += len(got)
        got += live.finish(duration)
        assert got == want, f"trial {trial}"
    assert early > 100  # most segments were given out before the end
