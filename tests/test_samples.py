"""Every sample program runs on a tiny random checkpoint."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).parents[1] / "samples"


@pytest.mark.parametrize("name", ["transcribe_file.py", "compare_cpu_gpu.py"])
def test_sample_runs(name, tiny_dir, clip5):
    r = subprocess.run(
        [sys.executable, str(SAMPLES / name), str(clip5), "--model", str(tiny_dir)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(SAMPLES.parent)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
