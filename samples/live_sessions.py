"""Serve several live audio streams from one model: every 80 ms, one step for all of them.

python samples/live_sessions.py a.wav b.wav c.wav [--model DIR_OR_HUB_ID] [--device auto|cpu|cuda]

Each file plays the part of a live source that delivers 80 ms of audio per tick; the sessions start
one second apart. A StreamServer encodes every session's new audio in one pass and advances all their
decoders in one batched step; each session's text is printed as it is decided.
"""

import argparse

import voxtral
from voxtral.audio import load_audio
from voxtral.server import StreamServer

TICK = 1280  # samples per 80 ms at 16 kHz

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("files", nargs="+")
parser.add_argument("--model", default=voxtral.DEFAULT_MODEL)
parser.add_argument("--device", default="auto")
args = parser.parse_args()

model = voxtral.load(args.model, device=args.device)
sources = [load_audio(f) for f in args.files]
server = StreamServer(model, capacity=len(sources))
sessions: dict = {}  # file index → session
texts = {i: "" for i in range(len(sources))}
tick = 0
while len(sessions) < len(sources) or server.sessions:
    for i, audio in enumerate(sources):
        start = (tick - 12 * i) * TICK  # source i starts 12 ticks (~1 s) after source i − 1
        if start == 0:
            sessions[i] = server.open()
        if i in sessions and not sessions[i].finished and start >= 0:
            sessions[i].feed(audio[start : start + TICK])
            if start + TICK >= len(audio):
                sessions[i].finish()
    for session, pieces in server.step().items():
        i = next(k for k, s in sessions.items() if s is session)
        for piece in pieces:
            texts[i] += piece.text
            print(f"[{args.files[i]} {piece.time:6.2f} s]{piece.text}", flush=True)
    tick += 1
for i, name in enumerate(args.files):
    print(f"{name}: {texts[i].strip()}")
