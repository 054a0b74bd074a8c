"""Writers (txt, json, srt, vtt, tsv) on hand-made and random transcripts, read by independent parsers."""

import json

import numpy as np
import pytest
from format_checks import check_output

from voxtral.formats import MIN_CUE_S, WRITERS, clock, cues, to_json, to_srt, to_tsv, to_txt, to_vtt
from voxtral.testing.tekken import make_tekken
from voxtral.tokenizer import Tokenizer
from voxtral.transcript import Segment, Transcript, Word, align_words, segments_from_words

PAD, WORD = 32, 33
INFO = {"model": "/models/voxtral", "device": "cpu", "delay_ms": 480, "steps": 9}


def transcript(segs, duration=10.0, tokens=(PAD, WORD, 1200, PAD)) -> Transcript:
    """A transcript whose segments are (start, end, text), one word each."""
    segments = [Segment(a, b, text, (Word(a, b, " " + text),)) for a, b, text in segs]
    text = " ".join(t for _, _, t in segs)
    return Transcript(text, list(tokens), segments, duration, {"decode": 0.5}, dict(INFO))


SPEECH = transcript([(0.0, 1.2, "Hello there."), (1.2, 2.96, "How are you?"), (4.0, 6.5, "Fine, thanks.")])
TRICKY = transcript(
    [
        (0.0, 0.0, "Yes."),  # zero width: lengthened to MIN_CUE_S
        (1.0, 1.6, "a --> b <i>x</i> & y"),
        (1.4, 1.5, "   "),  # nothing to show: no cue
        (1.5, 2.0, "line one\n\nline two\tand a tab"),  # starts before the previous end: moved to it
        (3.0, 3.04, "short"),  # lengthened only up to the next start
        (3.1, 12.0, "past the end"),  # clamped to the duration
    ],
    duration=10.0,
)


def test_clock():
    assert clock(0) == "00:00:00,000"
    assert clock(3725.4567) == "01:02:05,457"
    assert clock(59.9996, ".") == "00:01:00.000"


def test_txt_is_one_line_per_segment():
    assert to_txt(SPEECH) == "Hello there.\nHow are you?\nFine, thanks.\n"
    assert to_txt(transcript([], duration=1.0)) == ""


@pytest.mark.parametrize("fmt", ["srt", "vtt", "tsv", "txt", "json"])
def test_speech_reads_back(fmt):
    texts = check_output(fmt, WRITERS[fmt](SPEECH), SPEECH.duration)
    assert texts == ["Hello there.", "How are you?", "Fine, thanks."]


def test_srt_exact():
    assert to_srt(SPEECH).startswith("1\n00:00:00,000 --> 00:00:01,200\nHello there.\n\n2\n00:00:01,200 --> ")


def test_vtt_exact_and_escaped():
    assert to_vtt(SPEECH).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.200\nHello there.\n\n")
    assert "a --&gt; b &lt;i&gt;x&lt;/i&gt; &amp; y" in to_vtt(TRICKY)


def test_tsv_exact():
    assert to_tsv(SPEECH).splitlines()[:2] == ["start\tend\ttext", "0\t1200\tHello there."]


@pytest.mark.parametrize("fmt", ["srt", "vtt", "tsv", "txt"])
def test_tricky_text_and_times_read_back(fmt):
    texts = check_output(fmt, WRITERS[fmt](TRICKY), TRICKY.duration)
    expect = ["Yes.", "a --> b <i>x</i> & y", "line one line two and a tab", "short", "past the end"]
    assert texts == expect


def test_cues_lengthen_short_ones_without_overlap():
    c = cues(TRICKY)
    assert (c[0].start, c[0].end) == (0.0, MIN_CUE_S)
    assert (c[2].start, c[2].end) == (1.6, 2.1)  # moved after the previous cue, then lengthened
    assert (c[3].start, c[3].end) == (3.0, 3.1)  # only up to the next cue's start
    assert c[-1].end == TRICKY.duration


def test_json_document():
    doc = json.loads(to_json(SPEECH))
    assert doc["model"] == "/models/voxtral"
    assert doc["settings"] == {"device": "cpu", "delay_ms": 480, "steps": 9}
    assert doc["timings"] == {"decode": 0.5} and doc["text"] == SPEECH.text
    assert doc["tokens"] == [{"id": 32, "time": 0.0}, {"id": 33, "time": 0.08}, {"id": 1200, "time": 0.16},
                             {"id": 32, "time": 0.24}]  # fmt: skip
    assert doc["segments"][1]["words"] == [{"start": 1.2, "end": 2.96, "text": " How are you?"}]


def test_json_keeps_one_word_or_token_per_line():
    lines = to_json(SPEECH).splitlines()
    assert '    {"id": 1200, "time": 0.16},' in lines
    assert '        {"start": 0.0, "end": 1.2, "text": " Hello there."}' in lines


def test_json_token_times_stop_at_the_end_of_the_audio():
    doc = json.loads(to_json(transcript([], duration=0.1, tokens=[PAD] * 5)))
    assert [t["time"] for t in doc["tokens"]] == [0.0, 0.08, 0.1, 0.1, 0.1]


@pytest.mark.parametrize("seed", range(6))
def test_random_token_streams_give_valid_files(seed):
    tok = Tokenizer.from_dict(make_tekken(1000 + 400, seed=0))
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    kinds = rng.choice(3, size=n, p=[0.5, 0.15, 0.35])  # pad, word boundary, text
    tokens = [PAD if k == 0 else WORD if k == 1 else int(rng.integers(1000, 1400)) for k in kinds]
    duration = float(rng.uniform(0.05, n * 0.08 + 1))
    words = align_words(tokens, tok, duration)
    t = Transcript(tok.decode(tokens).strip(), tokens, segments_from_words(words), duration, {}, dict(INFO))
    for fmt, write in WRITERS.items():
        check_output(fmt, write(t), duration)


def tokenizer():
    import json as _json
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "tekken.json"
    path.write_text(_json.dumps(make_tekken(2000)))
    return Tokenizer.from_file(path)


def test_no_cue_ever_has_no_time():
    """../shared/cases/input-06: two sentence ends decided in the right padding are both clamped to the
    audio's end; the second joins the first cue instead of `00:00:03,000 --> 00:00:03,000`. And audio
    under a millisecond still gets a cue of one."""
    tok = tokenizer()
    ids = {tok.pieces[i]: i for i in range(tok.n_special, tok.vocab_size)}
    p, w, dot = tok.streaming_pad_id, tok.streaming_word_id, ids[b"."]
    the, of = ids.get(b" the", ids[b"e"]), ids.get(b" of", ids[b"o"])
    tokens = [p] * 20 + [w, the, dot] + [p] * 18 + [w, of, dot] + [w, the, dot] + [p] * 3
    t = Transcript(tok.decode(tokens), tokens, segments_from_words(align_words(tokens, tok, 3.0)), 3.0)
    cs = cues(t)
    assert all(c.end > c.start for c in cs) and [c.end for c in cs] == sorted(c.end for c in cs)
    assert " ".join(c.text for c in cs) == " ".join(s.text for s in t.segments)  # no text lost
    tiny = transcript([(0.0, 0.0, "Hm.")], duration=0.0004)
    assert [(c.start, c.end) for c in cues(tiny)] == [(0.0, 0.001)]
    assert "00:00:00,000 --> 00:00:00,001" in to_srt(tiny)


def test_a_character_split_across_a_word_boundary_stays_whole():
    """A [STREAMING_WORD] between the two tokens of one UTF-8 character does not split the character:
    words, segments and the whole text spell the same characters."""
    tok = tokenizer()
    by_bytes = {tok.pieces[i]: i for i in range(tok.n_special, tok.vocab_size)}
    e_acute = "é".encode()  # two bytes: a lead and a continuation byte
    lead, cont = by_bytes[e_acute[:1]], by_bytes[e_acute[1:]]
    w = tok.streaming_word_id
    tokens = [
        w,
        by_bytes[b" "],
        by_bytes[b"c"],
        by_bytes[b"a"],
        by_bytes[b"f"],
        lead,
        w,
        cont,
        tok.streaming_pad_id,
    ]
    words = align_words(tokens, tok, 1.0)
    assert "".join(w.text for w in words) == tok.decode(tokens) == " café"
    assert "\ufffd" not in "".join(w.text for w in words)
