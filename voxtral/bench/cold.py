"""Load → first token in a fresh process, with cold (empty) or warm compiler caches.

`cold_start(model_dir, audio, device)` runs this module twice as a child process sharing one new,
empty cache folder: first cold (CuPy's kernel cache and the driver's JIT cache empty, as on a new
machine, container or CI runner), then warm (the same caches as the first run left them). The child
decodes the audio, then times `voxtral.load` plus a transcription up to its first token, and reports
each NVRTC compilation it waited for (CuPy's own kernels and any of ours not loaded from cuda/bin).

    python -m voxtral.bench.cold MODEL_DIR AUDIO DEVICE   # prints one JSON object
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

_NAME = re.compile(r'__global__\s+void\s+(\w+)|#line 1 "([^"]+)"')


def _label(source: str) -> str:
    m = _NAME.search(source)
    return (m.group(2) or m.group(1)) if m else "?"


def _caller() -> str:
    """file:line of the innermost voxtral frame (not this module) that led to the current call."""
    for frame in reversed(traceback.extract_stack()):
        if "voxtral" in frame.filename and not frame.filename.endswith("cold.py"):
            return f"{Path(frame.filename).name}:{frame.lineno}"
    return "?"


def _watch_nvrtc(compiles: list) -> None:
    """Record (kernel @ caller, seconds) of every NVRTC compilation CuPy runs (cache misses only)."""
    import cupy.cuda.compiler as compiler

    # CuPy 13/14 compile through one of these module-level functions (looked up by name at each call)
    for attr in ("compile_using_nvrtc", "_compile_using_nvrtc_no_warning"):
        inner = getattr(compiler, attr, None)
        if inner is None:
            continue

        def timed(source, *args, _inner=inner, **kwargs):
            t0 = time.perf_counter()
            try:
                return _inner(source, *args, **kwargs)
            finally:
                compiles.append((f"{_label(source)} @ {_caller()}", time.perf_counter() - t0))

        setattr(compiler, attr, timed)


def child(model_dir: str, audio: str, device: str) -> dict:
    import voxtral
    from voxtral import audio as audio_io

    from .run import _first_token_s

    samples = audio_io.load_audio(audio)
    compiles: list = []
    if device == "cuda":
        _watch_nvrtc(compiles)
    t0 = time.perf_counter()
    model = voxtral.load(model_dir, device=device)
    load_s = time.perf_counter() - t0
    first_s = load_s + _first_token_s(model, samples, 16000)
    origins = getattr(model.backend, "kernel_origins", {})
    return {
        "load_s": load_s, "first_token_s": first_s,
        "nvrtc_compiles": len(compiles), "nvrtc_s": sum(s for _, s in compiles),
        "nvrtc": [{"kernel": k, "s": round(s, 3)} for k, s in compiles],
        "prebuilt_modules": sum(o == "prebuilt" for o in origins.values()), "modules": len(origins),
        "kernel_origins": origins,
    }  # fmt: skip


def cold_start(model_dir: str, audio: str | Path, device: str = "cuda") -> dict:
    """{"cold": child report, "warm": child report} from two fresh processes sharing new caches."""
    with tempfile.TemporaryDirectory(prefix="voxtral-cold-") as tmp:
        env = dict(os.environ)
        env.update(CUPY_CACHE_DIR=str(Path(tmp) / "cupy"), CUDA_CACHE_PATH=str(Path(tmp) / "nv"))
        env.pop("CUPY_CACHE_IN_MEMORY", None)
        out = {}
        for kind in ("cold", "warm"):
            done = subprocess.run(
                [sys.executable, "-m", "voxtral.bench.cold", str(model_dir), str(audio), device],
                env=env, capture_output=True, text=True,
            )  # fmt: skip
            if done.returncode:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                raise RuntimeError(f"the {kind}-start child failed: {tail[0]}")
            out[kind] = json.loads(done.stdout.strip().splitlines()[-1])
        return out


if __name__ == "__main__":
    print(json.dumps(child(*sys.argv[1:4])))
