"""Transcribe every audio file in a folder to subtitles: FILE.srt beside it (or in --out).

python samples/folder_to_srt.py FOLDER [--out DIR] [--model DIR_OR_HUB_ID] [--device auto|cpu|cuda]
"""

import argparse
from pathlib import Path

import voxtral
from voxtral.formats import to_srt
from voxtral.inputs import audio_files_in, write_atomic

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("folder", type=Path)
parser.add_argument("--out", type=Path, help="where the .srt files go (default: the folder)")
parser.add_argument("--model", default=voxtral.DEFAULT_MODEL)
parser.add_argument("--device", default="auto")
args = parser.parse_args()

model = voxtral.load(args.model, device=args.device)  # loaded once for every file
out_dir = args.out or args.folder
out_dir.mkdir(parents=True, exist_ok=True)
for audio in audio_files_in(args.folder):
    srt_path = out_dir / f"{audio.stem}.srt"
    if srt_path.exists():
        print(f"{audio.name}: {srt_path} exists, left as it is")
        continue
    try:
        transcript = model.transcribe(audio)
    except voxtral.VoxtralError as e:  # a bad file: say why, go on with the others
        print(f"{audio.name}: skipped ({e})")
        continue
    write_atomic(srt_path, to_srt(transcript))  # temporary file + rename: never half-written
    print(f"{audio.name}: {len(transcript.segments)} subtitles, {transcript.duration:.1f} s → {srt_path}")
