"""Transcribe audio from stdin while it arrives, printing text as soon as it is decided.

python samples/stream_stdin.py < speech.wav [--model DIR_OR_HUB_ID] [--device auto|cpu|cuda]
arecord -f S16_LE -r 16000 -t raw | python samples/stream_stdin.py --format s16le --rate 16000
"""

import argparse
import sys

import voxtral
from voxtral.audio_blocks import RawFormat, read_stream

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default=voxtral.DEFAULT_MODEL)
parser.add_argument("--device", default="auto")
parser.add_argument("--format", help="raw PCM on stdin (s16le, f32le, …); default: any audio file format")
parser.add_argument("--rate", type=int, default=16000, help="sample rate of the raw PCM")
args = parser.parse_args()

model = voxtral.load(args.model, device=args.device)
raw = RawFormat(args.format, args.rate) if args.format else None
session = model.stream()
latencies = []
for piece in session.run(read_stream(sys.stdin.buffer, raw)):
    print(piece.text, end="", flush=True)
    latencies.append(piece.latency)
print()
worst = max(latencies, default=0.0)
print(f"({session.duration:.1f} s of audio, {len(latencies)} pieces, worst latency {worst * 1000:.0f} ms)")
