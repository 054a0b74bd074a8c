"""Full-size random checkpoint (8.9 GB) on the CPU: validates, runs, stays under 20 GB RSS.

Opt-in (`pytest -m slow`): it writes 8.9 GB and needs a few minutes on 2 cores.
"""

import resource
import time

import numpy as np
import pytest

import voxtral
from voxtral.testing import write_checkpoint

pytestmark = pytest.mark.slow
RSS_LIMIT_GB = 20


def test_full_size_checkpoint_runs_on_cpu(tmp_path, clip5):
    t0 = time.perf_counter()
    write_checkpoint(tmp_path, "full", seed=0, eos_reachable=False)
    t1 = time.perf_counter()
    model = voxtral.load(tmp_path, device="cpu")
    t2 = time.perf_counter()
    trace = model.trace(clip5, n_steps=2)
    t3 = time.perf_counter()
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(
        f"\nfull size: generate {t1 - t0:.0f} s, load {t2 - t1:.1f} s, "
        f"encoder+prefill+2 steps {t3 - t2:.0f} s, peak RSS {rss_gb:.2f} GB"
    )
    assert trace.audio_embeds.shape == (112, 3072)
    assert trace.logits.shape == (2, 131072) and np.isfinite(trace.logits).all()
    assert trace.logits[:, 2].max() == 0.0  # EOS row zeroed: its logit is exactly 0
    assert rss_gb < RSS_LIMIT_GB
