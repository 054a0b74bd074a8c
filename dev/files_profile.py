"""Where an end-to-end files run spends its time (voxtral bench --files, #15): after the engine's
warm_up (every graph captured and tuned, as the bench's earlier parts leave it), N files through the
CLI's path for each value of scheduler.READERS and of the interpreter's thread switch interval
(--switch, ms; sys.setswitchinterval) in turn (--rounds times), each row the files report's
real-time factor, GPU busy share and stage seconds, with the first seconds of its timeline; then one
run under cProfile (the thread that drives the engine; reader threads are not profiled), its top
functions by cumulative and by own time.

    python dev/files_profile.py CHECKPOINT [--files 64] [--readers 2,4] [--switch 5] [--rounds 2] [--top 30]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import pstats
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import voxtral  # noqa: E402
from voxtral import audio as audio_io  # noqa: E402
from voxtral import scheduler  # noqa: E402
from voxtral.bench.files import files_report  # noqa: E402
from voxtral.bench.run import default_audio  # noqa: E402


def line(r: dict) -> str:
    tl = r["timeline"]
    first = [f"{t:.1f}:{b}" for t, b in zip(tl["t_s"], tl["gpu_busy_pct"], strict=True) if t < 2.05][::2]
    stages = ", ".join(f"{k} {v:.2f}" for k, v in r["stage_s"].items())
    busy = "n/a" if r["gpu_busy_pct"] is None else f"{r['gpu_busy_pct']:.0f}%"
    return (f"{r['realtime_x']:.0f}x real time, wall {r['wall_s']:.2f} s, GPU busy {busy};"
            f" stages {stages}; busy at t (s): {' '.join(first)}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--files", type=int, default=64)
    ap.add_argument("--readers", default="2,4")
    ap.add_argument("--switch", default="5", help="thread switch intervals to try, ms (Python's default: 5)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    samples = audio_io.load_audio(default_audio())
    model = voxtral.load(
        args.checkpoint, device=args.device, capacity=max(args.files, voxtral.api.DEFAULT_CAPACITY)
    )
    model.engine.warm_up()
    files_report(model, samples, [args.files])  # first use of the pool's blocks, the output path
    kept, interval = scheduler.READERS, sys.getswitchinterval()
    readers, switches = [int(v) for v in args.readers.split(",")], [float(v) for v in args.switch.split(",")]
    for r in range(args.rounds):
        for n, ms in itertools.product(readers, switches):
            scheduler.READERS = n
            sys.setswitchinterval(ms / 1000)
            row = line(files_report(model, samples, [args.files])[0])
            print(f"round {r} READERS={n} switch {ms:g} ms: {row}", flush=True)
    scheduler.READERS = kept
    sys.setswitchinterval(interval)
    if args.top == 0:  # no profiled run
        return
    prof = cProfile.Profile()
    prof.enable()
    row = files_report(model, samples, [args.files])[0]
    prof.disable()
    print(f"profiled run READERS={kept}: {line(row)}")
    for key in ("cumulative", "tottime"):
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats(key).print_stats(args.top)
        print(text.getvalue())


if __name__ == "__main__":
    main()
