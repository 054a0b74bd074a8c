"""`voxtral bench --files N,…`: N audio files end to end through the CLI's path, load excluded.

For each N: N WAV files (the bench clip, each rotated to a different start, so N distinct inputs) in a
temporary directory go through what `voxtral transcribe DIR -o OUT --batch-size N` runs (cli.Run: the
inputs' lengths read, audio decoded and resampled, mel, encoder, decoder, each transcript written as a
.txt file), the model already loaded. Reported: audio seconds over wall seconds (real-time factor), the
GPU's busy share over the run (NVML's utilization: the share of time a kernel was running, sampled every
0.1 s; GPU only), and the process's resident memory above its level before the run (peak, sampled
likewise): flat in N means the host holds a bounded amount per running input, not per file. And the
seconds each stage took in the run (Scheduler.stage_seconds: audio decoding in the reader threads, which
run in parallel; mel, encoder and prefill on the device's own clock; decode as the host waits for it):
against the wall time they show where it goes. The timeline holds the same samples over the run (every
SAMPLE_S: the GPU's busy share and each stage's seconds so far, device stages booked once their work has
run): where the GPU waits for the host (the start of a batch, while its files are read and encoded).
"""

from __future__ import annotations

import ctypes
import functools
import os
import tempfile
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .streams import times

SAMPLE_S = 0.1
BUSY_LINE_S = 0.5  # the text report's GPU busy line: one mean per this many seconds


def files_report(model, samples: np.ndarray, sizes, sr: int = 16000) -> list[dict]:
    """Per N of sizes: the row described in the module docstring."""
    from ..cli import Run, _to_files

    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")  # 16-bit PCM, as a WAV holds

    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="voxtral-bench-files-") as tmp:
            src, out = Path(tmp) / "in", Path(tmp) / "out"
            src.mkdir()
            out.mkdir()
            paths = []
            for i in range(n):  # distinct audio: the clip rotated by i / n of its length
                path = src / f"{i:04d}.wav"
                with wave.open(str(path), "wb") as w:  # the standard library's writer: no extra needed
                    w.setnchannels(1)
                    w.setsampwidth(2)
                    w.setframerate(sr)
                    w.writeframes(np.roll(pcm, -i * len(pcm) // n).tobytes())
                paths.append(path)
            plan = {p: [out / (p.stem + ".txt")] for p in paths}
            run = Run(paths, quiet=True, verbose=False)
            before = dict(model.engine.stage_seconds)
            progress = functools.partial(_stages_since, model.engine, before)
            with Sampler(model.backend.name == "cuda", progress) as sampled:
                t0 = time.perf_counter()
                run.go(model, _to_files(plan, ["txt"], overwrite=True), batch_size=n)
                wall = time.perf_counter() - t0
            stages = {k: v - before[k] for k, v in model.engine.stage_seconds.items()}
            written = sum(1 for p in paths if plan[p][0].is_file())
        audio_s = n * len(samples) / sr
        rows.append(
            {
                "files": n,
                "audio_s": audio_s,
                "wall_s": wall,
                "realtime_x": audio_s / wall,
                "written": written,
                "failed": len(run.failed),
                "gpu_busy_pct": sampled.gpu_busy_pct,
                "host_rss_growth_bytes": sampled.rss_growth,
                "stage_s": stages,
                "timeline": _timeline(sampled.timeline()),
            }
        )
    return rows


def _stages_since(engine, before: dict) -> dict:
    """Seconds per stage the engine has booked since `before` (its stage_seconds then)."""
    return {k: round(v - before[k], 4) for k, v in engine.stage_seconds.items()}


def _timeline(samples: dict) -> dict:
    """Sampler.timeline() of a files run → {"sample_s", "t_s", "gpu_busy_pct", "stage_s": {stage: [...]}}."""
    return {"sample_s": SAMPLE_S, "t_s": samples["t_s"], "gpu_busy_pct": samples["gpu_busy_pct"],
            "stage_s": samples["probe"]}  # fmt: skip


def files_lines(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        busy = "" if r["gpu_busy_pct"] is None else f", GPU busy {r['gpu_busy_pct']:.0f}%"
        grew = r["host_rss_growth_bytes"]
        rss = "" if grew is None else f", host memory +{grew / 1e6:.0f} MB"
        lines.append(
            f"       files {r['files']:>4} end to end (transcribe DIR -o OUT --batch-size {r['files']}): "
            f"{r['audio_s']:.0f} s of audio in {r['wall_s']:.2f} s = {times(r['realtime_x'])} real time"
            f"{busy}{rss}; {r['written']} written, {r['failed']} failed"
        )
        lines.append("         stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in r["stage_s"].items()))
        line = r["timeline"]
        if any(b is not None for b in line["gpu_busy_pct"]):  # one mean per BUSY_LINE_S of the run
            bins: dict[int, list] = {}
            for t, b in zip(line["t_s"], line["gpu_busy_pct"], strict=True):
                bins.setdefault(int(t / BUSY_LINE_S + 1e-6), []).append(b)
            means = [[b for b in bins.get(i, []) if b is not None] for i in range(max(bins) + 1)]
            text = " ".join(f"{np.mean(m):.0f}" if m else "-" for m in means)
            lines.append(f"         GPU busy % per {BUSY_LINE_S:g} s: {text}")
    return lines


class Sampler:
    """A thread sampling, every SAMPLE_S, the GPU's utilization (NVML, when gpu), this process's resident
    memory (Linux /proc) and probe() (a dict of numbers, when given); the results are None where they
    cannot be read."""

    def __init__(self, gpu: bool, probe: Callable[[], dict] | None = None):
        self._nvml = _Nvml.open() if gpu else None
        self._probe = probe
        self._busy: list[int] = []
        self._samples: list[tuple[float, int | None, dict]] = []  # (seconds since start, busy, probe())
        self._t0 = time.perf_counter()
        self._rss0 = _rss_bytes()
        self._rss_peak = self._rss0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="voxtral-bench-sampler", daemon=True)

    def __enter__(self):
        self._t0 = time.perf_counter()
        self._sample()  # at 0: a run shorter than SAMPLE_S still has its first and last samples
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        k = 1
        while not self._stop.wait(max(0.0, self._t0 + k * SAMPLE_S - time.perf_counter())):
            self._sample()  # on the grid k · SAMPLE_S from the start (a late sample does not shift the rest)
            k = max(k + 1, int((time.perf_counter() - self._t0) / SAMPLE_S) + 1)

    def _sample(self) -> None:
        busy = None if self._nvml is None else self._nvml.utilization()
        if busy is not None:
            self._busy.append(busy)
        probed = {} if self._probe is None else self._probe()
        self._samples.append((time.perf_counter() - self._t0, busy, probed))
        rss = _rss_bytes()
        if rss is not None and self._rss_peak is not None:
            self._rss_peak = max(self._rss_peak, rss)

    @property
    def gpu_busy_pct(self) -> float | None:
        return float(np.mean(self._busy)) if self._busy else None

    def timeline(self) -> dict:
        """The samples: {"t_s": [...], "gpu_busy_pct": [... or None], "probe": {key: [...]}}."""
        keys = self._samples[0][2].keys() if self._samples else ()
        return {
            "t_s": [round(t, 3) for t, _, _ in self._samples],
            "gpu_busy_pct": [b for _, b, _ in self._samples],
            "probe": {k: [p[k] for _, _, p in self._samples] for k in keys},
        }

    @property
    def rss_growth(self) -> int | None:
        return None if self._rss0 is None else self._rss_peak - self._rss0


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class _Utilization(ctypes.Structure):
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


class _Nvml:
    """The driver's NVML (libnvidia-ml), for the current CUDA device found by its PCI bus id."""

    def __init__(self, lib, handle):
        self.lib, self.handle = lib, handle

    @classmethod
    def open(cls):
        import cupy

        try:
            lib = ctypes.CDLL("libnvidia-ml.so.1")
            if lib.nvmlInit_v2() != 0:
                return None
            handle = ctypes.c_void_p()
            bus_id = cupy.cuda.Device().pci_bus_id.encode()
            if lib.nvmlDeviceGetHandleByPciBusId_v2(ctypes.c_char_p(bus_id), ctypes.byref(handle)) != 0:
                return None
        except (OSError, AttributeError):
            return None
        return cls(lib, handle)

    def utilization(self) -> int | None:
        u = _Utilization()
        return u.gpu if self.lib.nvmlDeviceGetUtilizationRates(self.handle, ctypes.byref(u)) == 0 else None
