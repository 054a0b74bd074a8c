"""Where a streaming feed's time goes (voxtral bench --stream's "feed median", #15): one session fed the
benchmark clip in 80 ms chunks after a warm-up, then (1) each feed's wall time, (2) a CUPTI kernel trace
of --traced feeds (torch's profiler: a measuring tool on the GPU machine, not a dependency of voxtral):
the GPU's busy time per feed against the wall, each kernel family's µs per feed and the largest gaps
between kernels by the pair around them, (3) cProfile of --profiled feeds, the top functions by own
time and by cumulative time, (4) the host's timeline of --stamped feeds: when the scheduler's phases and the
backend's steps (STAMPED) begin and end, µs after the feed's start (medians). --sessions B > 1: a "feed"
is a live tick of B sessions on a StreamServer instead (each fed 80 ms, then one server.step() and the
device's synchronize, as `voxtral bench --server B` times it).

    python dev/feed_profile.py CHECKPOINT [--feeds 150] [--traced 20] [--profiled 100] [--top 25]
        [--stamped 100] [--sessions 1]
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from dev.step_profile import family, gap_lines, kernels_of  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    import voxtral
    from voxtral import audio as audio_io
    from voxtral.bench.run import default_audio

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--feeds", type=int, default=150)
    ap.add_argument("--traced", type=int, default=20)
    ap.add_argument("--profiled", type=int, default=100)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--stamped", type=int, default=100)
    ap.add_argument("--sessions", type=int, default=1, help="B > 1: a live tick of B sessions a feed")
    args = ap.parse_args(argv)
    model = voxtral.load(args.checkpoint, device="cuda", capacity=max(32, args.sessions))
    samples = audio_io.load_audio(default_audio())
    chunk = 1280  # 80 ms at 16 kHz
    need = chunk * (9 + args.feeds + args.traced + args.profiled + args.stamped)
    samples = np.tile(samples, -(-2 * need // len(samples)))
    torch.cuda.init()
    at = 0
    if args.sessions == 1:
        session = model.stream()

        def feed() -> None:
            nonlocal at
            session.feed(samples[at : at + chunk])
            at += chunk

    else:
        from voxtral.server import StreamServer

        server = StreamServer(model, capacity=args.sessions)
        sessions = [server.open() for _ in range(args.sessions)]
        offsets = [(i * 7919 * chunk) % (len(samples) - need) for i in range(args.sessions)]  # apart

        def feed() -> None:
            nonlocal at
            for s, off in zip(sessions, offsets, strict=True):
                s.feed(samples[off + at : off + at + chunk])
            server.step()
            model.backend.synchronize()
            at += chunk

    for _ in range(10):  # warm-up: graphs captured, the decoder past its first steps
        feed()
    walls = []
    for _ in range(args.feeds):
        t = time.perf_counter()
        feed()
        walls.append(1000 * (time.perf_counter() - t))
    w = np.array(walls)
    print(f"{args.feeds} feeds: median {np.median(w):.2f} ms, p10 {np.percentile(w, 10):.2f},"
          f" p90 {np.percentile(w, 90):.2f}, max {w.max():.2f}")  # fmt: skip

    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(args.traced):
            feed()
    wall = 1000 * (time.perf_counter() - t0) / args.traced
    ks = kernels_of(prof)
    fams = [family(name) for name, _, _ in ks]
    per: dict[str, float] = collections.defaultdict(float)
    count: dict[str, int] = collections.Counter()
    for f, (_, a, b) in zip(fams, ks, strict=True):
        per[f] += b - a
        count[f] += 1
    busy = sum(per.values()) / 1000 / args.traced
    print(f"traced {args.traced} feeds: wall {wall:.2f} ms a feed, kernels busy {busy:.2f} ms a feed,"
          f" {len(ks) / args.traced:.0f} kernels a feed")  # fmt: skip
    for f in sorted(per, key=lambda f: -per[f])[:12]:
        print(f"  {f:<32} {count[f] / args.traced:6.1f} a feed {per[f] / args.traced:9.1f} µs a feed")
    print("\n".join(gap_lines(ks, 10, per=args.traced, what=" a feed")))

    stamps = stamped(feed, args.stamped)
    print(f"host timeline of {args.stamped} feeds (µs after the feed's start: median, p90):")
    for name, values in sorted(stamps.items(), key=lambda kv: np.median(kv[1])):
        v = np.array(values)
        print(f"  {name:<40} {np.median(v):8.0f} {np.percentile(v, 90):8.0f}   ({len(v)} stamps)")

    host = cProfile.Profile()
    host.enable()
    for _ in range(args.profiled):
        feed()
    host.disable()
    for key in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(host, stream=text).sort_stats(key).print_stats(args.top)
        print(text.getvalue())


# (module, class or None, function) stamped on entry (">") and exit ("<") by --stamped
STAMPED = [
    ("voxtral.scheduler", "Scheduler", name)
    for name in ("tick", "_expire", "_admit", "_encode", "_take_audio", "_prefill", "_settle_timings",
                 "_step", "_retire")
] + [
    ("voxtral.gpu.backend", "GpuBackend", "log_mel"),
    ("voxtral.gpu.mel", "GpuMel", "_replay"),
    ("voxtral.gpu.encoder", "Encoder", "encode"),
    ("voxtral.gpu.encoder", "Encoder", "_tick"),
    ("voxtral.gpu.encoder", "Groups", "regroup"),
    ("voxtral.gpu.encoder", None, "adapter"),
    ("voxtral.gpu.decoder", "Decoder", "_round"),
    ("voxtral.gpu.launch", None, "launch_graph"),
    ("voxtral.gpu.encoder", None, "launch_graph"),
    ("voxtral.gpu.decoder", None, "launch_graph"),
    ("voxtral.server", "StreamServer", "step"),
]  # fmt: skip


def stamped(feed, n: int) -> dict[str, list[float]]:
    """n feeds with the STAMPED functions' entries and exits stamped (perf_counter, µs after the feed's
    start): {event: [stamps]}, each event named by function, > or <, and its count within the feed."""
    import importlib

    out: dict[str, list[float]] = collections.defaultdict(list)
    start = [0.0]
    seen: collections.Counter = collections.Counter()

    def stamp(name: str) -> None:
        seen[name] += 1
        out[f"{name} #{seen[name]}"].append(1e6 * (time.perf_counter() - start[0]))

    def wrap(fn, name: str):
        def inner(*a, **k):
            stamp(name + " >")
            try:
                return fn(*a, **k)
            finally:
                stamp(name + " <")

        return inner

    kept = []
    for module, cls, name in STAMPED:
        owner = importlib.import_module(module)
        owner = getattr(owner, cls) if cls else owner
        kept.append((owner, name, owner.__dict__[name]))
        label = f"{cls or module.rsplit('.', 1)[-1]}.{name}"
        setattr(owner, name, wrap(owner.__dict__[name], label))
    try:
        for _ in range(n):
            seen.clear()
            start[0] = time.perf_counter()
            feed()
            stamp("feed returns")
    finally:
        for owner, name, value in kept:
            setattr(owner, name, value)
    return out


if __name__ == "__main__":
    main()
