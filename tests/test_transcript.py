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
        n = int(rng.integers(1, 400 if trial % 3 else 1500))  # some past MAX_SEGMENT_S without a pause
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
        assert live.segments == want  # kept compactly for the Transcript
    assert early > 100  # most segments were given out before the end


def test_a_segment_never_spans_more_than_max_segment_s():
    from voxtral.transcript import MAX_SEGMENT_S

    tok = _tok()
    words = [_id(tok, b" the"), _id(tok, b" and")]
    tokens = [words[k % 2] for k in range(1500)]  # 120 s of one word per frame: no punctuation, no pause
    segs = segments_from_words(align_words(tokens, tok, duration=120.0))
    assert len(segs) >= 4
    assert all(s.end - s.start <= MAX_SEGMENT_S + 1e-9 for s in segs)
    assert [w for s in segs for w in s.words] == align_words(tokens, tok, duration=120.0)
    assert all(a.end <= b.start for a, b in zip(segs, segs[1:], strict=False))


def test_segments_are_compact_and_read_like_a_list():
    import pickle
    import tracemalloc

    from voxtral.transcript import Transcript, aligned_words, build_segments

    tok = _tok()
    ids = [_id(tok, b" the"), _id(tok, b" and"), _id(tok, b".")]
    tokens = [ids[k % 3] for k in range(20000)]
    want = segments_from_words(align_words(tokens, tok, 1600.0))
    tracemalloc.start()
    segs = build_segments(aligned_words(tokens, tok, 1600.0))
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n_words = sum(len(s.words) for s in want)
    assert held / n_words < 40, f"{held / n_words:.0f} bytes per word"  # Word objects take ~200
    assert segs == want and list(segs) == want and len(segs) == len(want)
    assert segs[-1] == want[-1] and segs[2:5] == want[2:5]
    assert segs + want[:1] == want + want[:1] and want[:1] + segs == want[:1] + want  # + gives a list
    assert segs != tuple(want)  # as a list would
    assert pickle.loads(pickle.dumps(segs)) == want
    t = Transcript("x", tokens[:3], segs, 1600.0)
    d = t.to_dict()
    assert isinstance(d["segments"], list) and d["segments"][0]["words"][0]["text"] == " the"
    assert t.words == [w for s in want for w in s.words]
