"""Peak RSS of `voxtral transcribe` over long inputs, tiny random checkpoint, CPU (issue #11).

Memory must not grow with the audio length, in any mode (the engine reads audio in blocks and keeps a
bounded window), and inputs decoded together add only their own slots' state.

    python dev/memory_check.py [--minutes 10,60,120] [--batch-minutes 70] [--work DIR]

Writes noise WAVs of the given lengths, then runs each file alone, and 4 files of the shortest length
and 4 of --batch-minutes, with `--batch-size 4` and one after another (`-b 1`), each in a fresh process,
sampling its RSS (psutil) every 0.2 s; prints a table with each peak against the run of the same kind
over the shortest files (growth with the audio's length) and against the shortest file alone (what 4
inputs at once add). Every run should be within 10 % of the shortest file alone. Here an input in the
engine holds ~1.5 MB: its encoder KV ring (window + chunk − 1 positions, 1.1 MB), its decoder KV ring
(0.2 MB) and the block of samples it is turning into frames; a finished transcript of this noise (a
word per token) is ~0.5 MB per 10 min.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf

RATE = 16000


def noise_wav(path: Path, minutes: float) -> Path:
    if not path.exists():
        with sf.SoundFile(path, "w", RATE, 1, "PCM_16") as f:
            for k in range(int(minutes * 6)):  # 10 s blocks
                f.write((0.1 * np.random.default_rng(k).standard_normal(10 * RATE)).astype(np.float32))
    return path


def peak_rss(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of `python -m voxtral ARGS`."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "voxtral", *args], stdout=subprocess.DEVNULL)
    proc, peak = psutil.Process(p.pid), 0
    while p.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    if p.returncode != 0:
        raise SystemExit(f"voxtral {' '.join(args)} exited with {p.returncode}")
    return peak / 1e6, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", default="10,60,120")
    ap.add_argument("--batch-minutes", type=float, default=70)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "voxtral-memory")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    ck = a.work / "tiny"
    if not ck.exists():
        subprocess.run(
            [sys.executable, "-m", "voxtral", "dev", "random-checkpoint", str(ck), "--eos-unreachable"]
        )
    common = ["-m", str(ck), "-d", "cpu", "-q", "-f", "txt"]
    rows = []
    for m in [float(x) for x in a.minutes.split(",")]:
        path = noise_wav(a.work / f"{m:g}min.wav", m)
        rows.append((f"{m:g} min alone", *peak_rss(["transcribe", str(path), *common])))
        print(f"{rows[-1][0]:>24}: peak RSS {rows[-1][1]:7.0f} MB in {rows[-1][2]:6.0f} s", flush=True)
    shortest = min(float(x) for x in a.minutes.split(","))
    runs = [(m, "-b", b) for b in ("4", "1") for m in (shortest, a.batch_minutes)]
    for minutes, *opts in runs:
        first = noise_wav(a.work / f"{minutes:g}min.wav", minutes)
        copies = [first] + [a.work / f"{minutes:g}min_{k}.wav" for k in range(1, 4)]
        for c in copies[1:]:
            if not c.exists():
                c.symlink_to(first)
        name = f"4 × {minutes:g} min, {' '.join(opts)}"
        rows.append((name, *peak_rss(["transcribe", *map(str, copies), *common, *opts])))
        print(f"{rows[-1][0]:>24}: peak RSS {rows[-1][1]:7.0f} MB in {rows[-1][2]:6.0f} s", flush=True)
    base = {}  # the first (shortest) run of each kind: alone, 4 × … -b 4, 4 × … -b 1
    alone = rows[0][1]
    print(f"\n{'run':<26}   peak RSS   vs the shortest run of its kind   vs the shortest alone")
    for name, mb, _ in rows:
        b = base.setdefault(name.split(" min")[-1] if "×" in name else "alone", mb)
        print(f"{name:<26} {mb:7.0f} MB  {100 * (mb / b - 1):+30.1f} %  {100 * (mb / alone - 1):+20.1f} %")


if __name__ == "__main__":
    main()
