"""What the encoder's knobs do to what users see: per variant of voxtral.gpu.encoder's constants (the
variants of dev/encoder_profile.py), a fresh model of one checkpoint, then the 60 s clip's encoder +
adapter (a transcription's own timing, warm), the streaming feed median (80 ms chunks, unpaced) and the
tick of B live sessions (median, p99), as `voxtral bench` measures them. Variants run in turn, --rounds
times (A B A B: drift between leases and over a run shows as spread, not as a difference).

    python dev/encoder_variants.py CHECKPOINT [--variants shipped,f32-untuned] [--sessions 1,128]
        [--rounds 2] [--ticks 40]
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import voxtral  # noqa: E402
from dev.encoder_profile import VARIANTS  # noqa: E402
from voxtral import audio as audio_io  # noqa: E402
from voxtral.bench.run import default_audio  # noqa: E402
from voxtral.bench.streams import server_report, stream_report  # noqa: E402
from voxtral.gpu import encoder as encoder_module  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--variants", default="shipped,f32-untuned")
    ap.add_argument("--sessions", default="1,128")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ticks", type=int, default=40)
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run (the knobs are the GPU's)")
    args = ap.parse_args(argv)
    samples = audio_io.load_audio(default_audio())
    sizes = [int(v) for v in args.sessions.split(",")]
    for r in range(args.rounds):
        for variant in args.variants.split(","):
            kept = {name: getattr(encoder_module, name) for name in VARIANTS[variant]}
            for name, value in VARIANTS[variant].items():
                setattr(encoder_module, name, value)
            model = voxtral.load(args.checkpoint, device=args.device, capacity=max(sizes))
            model.transcribe(samples, sample_rate=16000)  # captures and tunes what a transcription takes
            encoder_ms = 1000 * model.transcribe(samples, sample_rate=16000).timings["encoder"]
            feed = stream_report(model, samples, 80, 1.0)["feed_ms"]["median"]  # as the bench: 60 s unpaced
            rows = server_report(model, samples, sizes, args.ticks)
            live = ", ".join(
                f"{t['sessions']}: {t['tick_ms']:.2f} (p99 {t['tick_p99_ms']:.2f})" for t in rows
            )
            print(f"round {r} [{variant}] encoder+adapter {encoder_ms:.2f} ms, feed median {feed:.2f} ms, "
                  f"live ticks ms {live}", flush=True)  # fmt: skip
            for name, value in kept.items():
                setattr(encoder_module, name, value)
            del model
            gc.collect()
            if args.device == "cuda":
                import cupy

                cupy.get_default_memory_pool().free_all_blocks()


if __name__ == "__main__":
    main()
