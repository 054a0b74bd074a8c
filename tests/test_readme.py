"""The README's usage block, run line by line as written, with a tiny random checkpoint in place of the
real model (and a tiny instead of a full-size random checkpoint, which is 8.9 GB): every line exits 0."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

README = Path(__file__).parents[1] / "README.md"
AUDIO = Path(__file__).parents[1] / "audio"


def usage_lines() -> list[str]:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## Usage\n\n```bash\n(.*?)```", text, re.S).group(1)
    return [re.sub(r"\s+#\s.*$", "", line).strip() for line in block.splitlines() if line.strip()]


def substituted(line: str, tiny: Path, work: Path) -> str:
    line = line.replace("/tmp/", f"{work}/").replace("--size full", "--size tiny")
    line = line.replace("/models/voxtral", str(tiny))
    if re.match(r"voxtral (transcribe|eval|info)\b", line) and "--model" not in line and " -m " not in line:
        line += f" -m {tiny}"
    return line


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The files the usage block names: a.wav, b.flac, talk.mp3, talks/, rec/**/*.flac, audio/."""
    d = tmp_path_factory.mktemp("readme")
    x = (0.1 * np.random.default_rng(0).standard_normal(3 * 16000)).astype(np.float32)
    sf.write(d / "a.wav", x, 16000)
    sf.write(d / "b.flac", x, 16000)
    sf.write(d / "talk.mp3", x, 16000, format="MP3")
    (d / "talks").mkdir()
    for name in ("one.wav", "two.wav"):
        sf.write(d / "talks" / name, x, 16000)
    (d / "rec" / "day1").mkdir(parents=True)
    sf.write(d / "rec" / "day1" / "c.flac", x, 16000)
    (d / "audio").symlink_to(AUDIO)
    return d


@pytest.mark.parametrize("line", usage_lines())
def test_usage_line_runs_as_written(line, tiny_dir, work):
    cmd = substituted(line, tiny_dir, work)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
    }
    r = subprocess.run(["bash", "-c", cmd], cwd=work, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, f"{cmd}\n{r.stderr}"
    assert "Traceback" not in r.stderr
