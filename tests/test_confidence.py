"""Token confidence: probabilities and rivals from logits, end to end and through the CLI."""

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

import voxtral
from voxtral.confidence import marked_text, score, softmax
from voxtral.testing.tekken import make_tekken
from voxtral.tokenizer import Tokenizer


def test_score_on_hand_made_logits():
    tok = Tokenizer.from_dict(make_tekken(1000 + 400, seed=0))
    the, a = tok.pieces.index(b" the"), tok.pieces.index(b" and")
    logits = np.full((2, 1400), -30.0)
    logits[0, [the, a, 32]] = [2.0, 1.5, 0.0]
    logits[1, [the, a]] = [5.0, -5.0]
    scores = score(logits, np.array([the, the]), tok, margin=0.3)
    z = math.exp(2.0) + math.exp(1.5) + math.exp(0.0) + 1397 * math.exp(-30.0)
    assert scores[0].prob == pytest.approx(math.exp(2.0) / z)
    assert [alt.id for alt in scores[0].alternatives] == [a]  # p(and) ≈ 0.35 is within 0.3 of 0.58
    assert scores[0].alternatives[0].text == " and"
    assert scores[1].alternatives == () and scores[1].prob > 0.99
    assert marked_text(scores) == "{ the| and} the"
    np.testing.assert_allclose(softmax(logits).sum(axis=1), 1.0)


def test_transcript_scores_are_the_softmax_of_each_step(tiny_dir, clip5):
    m = voxtral.load(tiny_dir, device="cpu")
    t = m.transcribe(clip5, alternatives=0.5)
    assert len(t.scores) == len(t.tokens)
    n = 30
    trace = m.trace(clip5, n)
    probs = softmax(trace.logits)
    for k in range(n):
        assert t.scores[k].prob == pytest.approx(probs[k, t.tokens[k]], rel=1e-5)
        assert t.scores[k].prob == pytest.approx(probs[k].max(), rel=1e-5)
        for alt in t.scores[k].alternatives:
            assert alt.id != t.tokens[k] and alt.prob >= t.scores[k].prob - 0.5
    assert voxtral.load(tiny_dir, device="cpu").transcribe(clip5).scores is None


def _cli(*args):
    cmd = [sys.executable, "-m", "voxtral", "transcribe", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_cli_json_and_inline_marks(tiny_dir, clip5):
    r = _cli(clip5, "-m", tiny_dir, "-d", "cpu", "-f", "json", "--alternatives", "1.0", "-q")
    assert r.returncode == 0, r.stderr
    tokens = json.loads(r.stdout)["tokens"]
    assert all(0 < t["prob"] <= 1 for t in tokens)
    with_alts = [t for t in tokens if t.get("alternatives")]
    assert with_alts and all(len(t["alternatives"]) <= 5 for t in with_alts)
    r = _cli(clip5, "-m", tiny_dir, "-d", "cpu", "--alternatives", "1.0", "-q")
    assert r.returncode == 0 and "{" in r.stdout and "|" in r.stdout
    r = _cli(clip5, "-m", tiny_dir, "-d", "cpu", "--confidence", "-f", "json", "-q")
    assert all("prob" in t and "alternatives" not in t for t in json.loads(r.stdout)["tokens"])


def test_cli_bad_margin(tiny_dir, clip5):
    r = _cli(clip5, "-m", tiny_dir, "--alternatives", "1.5")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--alternatives" in r.stderr


def test_txt_with_alternatives_keeps_one_line_per_segment(tmp_path, clip5):
    """--alternatives marks rivals inside each segment's line instead of joining the text into one."""
    import numpy as np
    import soundfile as sf

    import voxtral
    from voxtral.formats import one_line, to_txt
    from voxtral.testing import write_checkpoint

    ck = write_checkpoint(tmp_path / "ck5", "tiny", seed=5, eos_reachable=False)  # several segments
    m = voxtral.load(ck, device="cpu")
    x = sf.read(clip5, dtype="float32")[0]
    t = m.transcribe(np.concatenate([x, x]), sample_rate=16000, alternatives=0.5)
    lines = to_txt(t).splitlines()
    assert len(t.segments) >= 2 and len(lines) == len([s for s in t.segments if s.text.strip()])
    # {chosen|rival|…} → chosen: the line without its marks is the segment
    chosen = [one_line(re.sub(r"\{([^|{}]*)(\|[^{}]*)?\}", r"\1", line)) for line in lines]
    assert chosen == [one_line(s.text) for s in t.segments if s.text.strip()]
    assert any("{" in line for line in lines)
