"""Transcribe a file on every available device and compare text and speed.

python samples/compare_cpu_gpu.py speech.wav [--model DIR_OR_HUB_ID]
"""

import argparse

import voxtral
from voxtral.gpu.device import unavailable_reason

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("audio")
parser.add_argument("--model", default=voxtral.DEFAULT_MODEL)
args = parser.parse_args()

devices = ["cpu"] + (["cuda"] if unavailable_reason() is None else [])
results = {}
for device in devices:
    t = voxtral.load(args.model, device=device).transcribe(args.audio)
    results[device] = t
    per_step = 1000 * t.timings["decode"] / max(len(t.tokens), 1)
    print(f"{device:>4}: encoder {t.timings['encoder'] * 1000:8.1f} ms, decode {per_step:7.2f} ms/step")
if len(results) == 2:
    same = results["cpu"].text == results["cuda"].text
    print("same text on CPU and GPU" if same else "texts differ (BF16 near-ties can flip a token)")
print(results[devices[-1]].text)
