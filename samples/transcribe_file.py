"""Transcribe one audio file and print its segments with times.

python samples/transcribe_file.py speech.wav [--model DIR_OR_HUB_ID] [--device auto|cpu|cuda]
"""

import argparse
import sys

import voxtral

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("audio")
parser.add_argument("--model", default=voxtral.DEFAULT_MODEL)
parser.add_argument("--device", default="auto")
args = parser.parse_args()

try:
    model = voxtral.load(args.model, device=args.device)
    transcript = model.transcribe(args.audio)
except voxtral.VoxtralError as e:  # a missing or bad file or model: say why, exit with its code
    print(f"transcribe_file: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
for segment in transcript.segments:
    print(f"[{segment.start:7.2f} → {segment.end:7.2f}] {segment.text}")
print(f"({transcript.duration:.1f} s of audio on {model.device}, stages in s: {transcript.timings})")
