"""`voxtral bench`: CPU vs GPU speed per stage, decode ms/step against the bandwidth roofline (SPEC §8).

Per device: load time, the stages of a real transcription (mel, encoder + adapter, prefill, decode),
then a decode profile: per-step times (median, p90) in windows around given positions, reached by
real greedy steps over long audio. On the GPU, the same run measures the device copy bandwidth and
a large BF16 GEMM, and reports the decode step as a share of the bandwidth roofline and the encoder
as a share of the GEMM rate. Use a checkpoint with EOS unreachable so every run decodes every step.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from .. import audio as audio_io
from ..config import ModelConfig
from ..errors import OutputError
from ..scheduler import Job
from .files import files_lines, files_report
from .gemvs import gemv_lines, gemv_report
from .host import host_info, host_line
from .streams import (
    batch_lines,
    batch_report,
    gpu_timer,
    server_lines,
    server_report,
    stream_lines,
    stream_report,
    times,
)

CLIP = "60s_i_dont_want_anyones_life_on_my_hands.wav"  # audio/night1968/, shipped in the wheel too
COPY_BYTES = 1 << 30  # device copy for the bandwidth ceiling
READ_BYTES = 1 << 30  # host memory read (all cores) for the CPU's bandwidth ceiling
READ_REPEATS = 10  # reads of each probe buffer; the fastest counts (cpu/linear.read_bandwidth)
GEMM_SIZE = 8192  # square BF16 GEMM for the matrix-unit ceiling


@dataclass
class BenchOptions:
    model: str | None = None  # checkpoint directory or Hub id
    random_weights: str | None = None  # "full" or "tiny": generate one (EOS unreachable) instead
    audio: Path | None = None  # default_audio()
    devices: tuple[str, ...] = ("cpu", "cuda")
    positions: tuple[int, ...] = (500, 5000)  # decode profile windows (GPU)
    steps: int = 100  # timed steps per window (GPU)
    cpu_steps: int = 16  # timed steps on the CPU (after the prompt)
    delay_ms: int | None = None
    stream: bool = False  # also measure streaming: real-time factor, per-feed time, piece latency
    stream_chunk_ms: int = 80
    stream_paced_s: float = 20.0  # seconds of the audio fed at the pace of a live source
    batch: tuple[int, ...] = ()  # also measure batched steps for these batch sizes
    batch_position: int = 500
    batch_steps: int = 50
    server: tuple[int, ...] = ()  # also time StreamServer ticks with this many live sessions
    server_ticks: int = 50
    files: tuple[int, ...] = ()  # also run this many files end to end through the CLI's path (files.py)
    cold_start: bool = True  # GPU: load → first token in fresh processes, empty then warm caches
    gemv: bool = False  # GPU: the decode GEMVs per shape and as a chain against cuBLAS (gemvs.py)


@dataclass
class DeviceReport:
    device: str
    load_s: float
    audio_s: float
    stages_ms: dict[str, float]
    steps: int
    load_to_first_token_s: float = 0.0  # load + first transcription up to its first token, cold
    rates: dict = field(default_factory=dict)  # tokens_per_s, realtime_x
    decode_profile: list[dict] = field(default_factory=list)  # {position, median_ms, p90_ms, ...}
    extra: dict = field(default_factory=dict)
    stream: dict = field(default_factory=dict)  # streams.stream_report
    batch: list[dict] = field(default_factory=list)  # streams.batch_report
    server: list[dict] = field(default_factory=list)  # streams.server_report
    files: list[dict] = field(default_factory=list)  # files.files_report
    gemv: dict = field(default_factory=dict)  # gemvs.gemv_report


def default_audio() -> Path:
    """The 60 s clip: beside this module in an installed wheel, else in the repository's audio/."""
    here = Path(__file__).resolve().parent
    for path in (here / CLIP, here.parents[1] / "audio" / "night1968" / CLIP):
        if path.is_file():
            return path
    from ..errors import AudioError

    raise AudioError(
        f"the default benchmark clip {CLIP} is missing from this installation; pass --audio FILE"
    )


def derived_rates(stages_ms: dict, audio_s: float) -> dict:
    """Tokens per second of the decode loop, and audio seconds per second of the whole transcription."""
    total_s = sum(stages_ms[k] for k in ("audio", "mel", "encoder", "prefill", "decode")) / 1000
    return {"tokens_per_s": 1000 / stages_ms["decode_ms_per_step"], "realtime_x": audio_s / total_s}


def decode_bytes(cfg: ModelConfig, position: int) -> int:
    """Bytes one decoder step must read at `position`: every BF16 weight once plus the KV cache."""
    d = cfg.decoder
    per_layer = (d.q_dim + 2 * d.kv_dim) * d.dim + d.dim * d.q_dim + 3 * d.hidden_dim * d.dim
    keys = min(position + 1, d.sliding_window)
    return 2 * (d.n_layers * per_layer + d.vocab_size * d.dim) + d.n_layers * keys * 2 * d.kv_dim * 2


def encoder_flops(cfg: ModelConfig, n_frames: int) -> float:
    """FLOPs of conv stem + encoder + adapter for n_frames mel frames (2 per multiply-add)."""
    e, a = cfg.encoder, cfg.audio
    s = n_frames // 2
    linear = (e.q_dim + 2 * e.kv_dim) * e.dim + e.dim * e.q_dim + 3 * e.hidden_dim * e.dim
    visible = sum(min(p + 1, e.sliding_window) for p in range(s))
    attention = 4 * e.head_dim * e.n_heads * visible * e.n_layers
    conv = 2 * n_frames * e.dim * a.num_mel_bins * 3 + 2 * s * e.dim * e.dim * 3
    adapter = 2 * (s // 4) * (cfg.decoder.dim * cfg.adapter_in + cfg.decoder.dim**2)
    return 2.0 * s * linear * e.n_layers + attention + conv + adapter


def _gpu_ceilings() -> dict:
    """Measured device copy bandwidth (bytes read + written) and BF16 GEMM rate."""
    import cupy

    from ..gpu.gemm import gemm

    src = cupy.random.random(COPY_BYTES // 4, dtype=np.float32)
    dst = cupy.empty_like(src)
    x = (cupy.random.standard_normal((GEMM_SIZE, GEMM_SIZE), dtype=np.float32).view(np.uint32) >> 16).astype(
        np.uint16
    )
    out = cupy.empty((GEMM_SIZE, GEMM_SIZE), np.float32)

    def timed(fn, reps: int) -> float:
        fn()
        begin, end = cupy.cuda.Event(), cupy.cuda.Event()
        samples = []
        for _ in range(reps):
            begin.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(cupy.cuda.get_elapsed_time(begin, end) / 1000)
        return float(np.median(samples))

    copy_s = timed(lambda: dst.__setitem__(Ellipsis, src), 10)
    gemm_s = timed(lambda: gemm(x, x, out=out), 10)
    return {"copy_GBps": 2 * COPY_BYTES / copy_s / 1e9, "gemm_TFLOPs": 2 * GEMM_SIZE**3 / gemm_s / 1e12}


def _cpu_ceilings(cfg: ModelConfig) -> dict:
    """Measured host read bandwidth (cpu/linear.read_bandwidth: every core summing its share of 1 GB with
    the GEMV's compiled loops), what runs the decode GEMVs (Numba and its threads, or NumPy for weights
    below COMPILED_MIN_VALUES) and the BLAS libraries loaded (threadpoolctl; each is held to one thread
    per call inside the engine)."""
    import numba
    from threadpoolctl import threadpool_info

    from ..cpu.linear import COMPILED_MIN_VALUES, read_bandwidth

    blas = [
        {k: lib.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer", "architecture")}
        for lib in threadpool_info()
        if lib.get("user_api") == "blas"
    ]
    read = read_bandwidth(READ_BYTES, READ_REPEATS) / 1e9
    compiled = cfg.decoder.dim * cfg.decoder.q_dim >= COMPILED_MIN_VALUES
    return {"read_GBps": read, "threads": numba.get_num_threads(), "gemv": "Numba" if compiled else "NumPy",
            "blas": blas}  # fmt: skip


def _long_audio(samples: np.ndarray, n_positions: int, spt: int) -> np.ndarray:
    reps = -(-(n_positions * spt) // len(samples))
    return np.tile(samples, reps)


def _profile(model, samples: np.ndarray, positions, steps: int) -> list[dict]:
    """Per-step times of the shipped decoder (one slot) in a window at each position, reached by real
    greedy steps over long audio. GPU: CUDA events around calls of `burst` steps, per step = / burst."""
    cfg, backend, schedule = model.config, model.backend, model.schedule
    n_needed = max(positions) + steps + 1
    long = _long_audio(samples, n_needed, cfg.audio.samples_per_token)
    mel = audio_io.log_mel(
        audio_io.pad_offline(long, schedule.n_left, 0, cfg.audio.samples_per_token), cfg.audio
    )
    encoder, decoder = backend.encoder(1), backend.decoder(1)
    slot = decoder.join(n_needed)
    decoder.append_audio(slot, encoder.encode([(encoder.join(), mel)])[0])
    decoder.prefill([slot], schedule.prompt)
    per_call = decoder.burst
    rows, pos = [], len(schedule.prompt) - 1
    for p in sorted(positions):
        while pos < p:
            n = min(per_call * 4, p - pos)
            decoder.step([slot], n)
            pos += n
        ms = step_ms(backend, decoder, [slot], steps, per_call)
        pos += steps
        rows.append(
            {
                "position": p,
                "median_ms": float(np.median(ms)),
                "p90_ms": float(np.percentile(ms, 90)),
                "n": len(ms),
            }
        )
    return rows


def step_ms(backend, decoder, slots: list[int], steps: int, per_call: int) -> np.ndarray:
    """Milliseconds per step over `steps` steps taken in calls of per_call (each call's mean)."""
    times = []
    for start in range(0, steps, per_call):
        n = min(per_call, steps - start)
        if backend.name == "cuda":
            with gpu_timer(backend) as elapsed:
                decoder.step(slots, n)
            times.append(elapsed() / n)
        else:
            t0 = time.perf_counter()
            decoder.step(slots, n)
            times.append(1000 * (time.perf_counter() - t0) / n)
    return np.array(times)


def _first_token_s(model, samples: np.ndarray, sr: int) -> float:
    """Seconds from audio in hand to the first token on a fresh model (kernels compiled, graph captured)."""
    t0 = time.perf_counter()
    model.engine.run(Job(audio_io.blocks(samples, sr), max_steps=1))
    return time.perf_counter() - t0


def bench_device(
    model_dir: str, device: str, opts: BenchOptions, samples: np.ndarray, sr: int
) -> DeviceReport:
    import voxtral

    cold = {}
    if device == "cuda" and opts.cold_start:  # first, in other processes, before this one holds memory
        from .cold import cold_start

        cold = cold_start(model_dir, opts.audio or default_audio(), device)
    t0 = time.perf_counter()
    capacity = max([voxtral.api.DEFAULT_CAPACITY, *opts.batch, *opts.server, *opts.files])
    model = voxtral.load(model_dir, device=device, delay_ms=opts.delay_ms, capacity=capacity)
    load_s = time.perf_counter() - t0
    first_token_s = load_s + _first_token_s(model, samples, sr)
    t = model.transcribe(samples, sample_rate=sr)  # warm: the first token above compiled and captured
    stages = {k: 1000 * v for k, v in t.timings.items()}
    stages["decode_ms_per_step"] = stages["decode"] / max(len(t.tokens), 1)
    rates = derived_rates(stages, t.duration)
    report = DeviceReport(
        device=device, load_s=load_s, audio_s=t.duration, stages_ms=stages, steps=len(t.tokens),
        load_to_first_token_s=first_token_s, rates=rates,
    )  # fmt: skip
    if device == "cuda":
        memory = model.backend.memory_bytes()  # one stream, before the profile's long audio
        report.decode_profile = _profile(model, samples, opts.positions, opts.steps)
        report.extra = _gpu_ceilings() | memory
        if cold:
            report.extra["cold_start"] = cold
        if opts.gemv:
            report.gemv = gemv_report(model)
    else:
        report.decode_profile = _profile(model, samples, (len(model.schedule.prompt),), opts.cpu_steps)
        report.extra = _cpu_ceilings(model.config)
    if opts.stream:
        report.stream = stream_report(model, samples, opts.stream_chunk_ms, opts.stream_paced_s)
    if opts.batch:
        report.batch = batch_report(model, samples, opts.batch, opts.batch_position, opts.batch_steps)
    if opts.server:
        report.server = server_report(model, samples, opts.server, opts.server_ticks)
    if opts.files:
        report.files = files_report(model, samples, opts.files, sr)
    return report


def add_rooflines(report: DeviceReport, cfg: ModelConfig) -> None:
    """Decode step vs the bandwidth floor and encoder vs the GEMM rate, both measured in the same run."""
    bw = report.extra.get("copy_GBps") or report.extra.get("read_GBps")  # GPU: copy; CPU: read
    rate = report.extra.get("gemm_TFLOPs")
    if not bw:
        return
    for row in report.decode_profile:
        floor_ms = decode_bytes(cfg, row["position"]) / (bw * 1e9) * 1000
        row["roofline_ms"] = floor_ms
        row["roofline_pct"] = 100 * floor_ms / row["median_ms"]
    if not rate:
        return
    n_frames = int(report.audio_s * cfg.audio.sampling_rate) // cfg.audio.hop_length
    flops = encoder_flops(cfg, n_frames)
    report.extra["encoder_flop_limit_ms"] = flops / (rate * 1e12) * 1000
    report.extra["encoder_flop_pct"] = (
        100 * report.extra["encoder_flop_limit_ms"] / report.stages_ms["encoder"]
    )


def run(opts: BenchOptions, progress=lambda msg: None) -> dict:
    """Run the benchmark on every available device; returns the JSON-ready report."""
    from ..gpu.device import unavailable_reason

    samples = audio_io.load_audio(opts.audio or default_audio())
    sr = 16000
    with tempfile.TemporaryDirectory(prefix="voxtral-bench-") as tmp:
        model_dir = opts.model
        if opts.random_weights:
            from ..testing import write_checkpoint

            progress(f"writing a random {opts.random_weights} checkpoint (EOS unreachable)")
            model_dir = str(write_checkpoint(tmp, opts.random_weights, seed=0, eos_reachable=False))
        cfg = ModelConfig.from_file(Path(model_dir) / "params.json") if Path(model_dir).is_dir() else None
        reports = []
        for device in opts.devices:
            if device == "cuda" and unavailable_reason():
                progress(f"skipping cuda: {unavailable_reason()}")
                continue
            progress(f"benchmarking {device}")
            r = bench_device(model_dir, device, opts, samples, sr)
            if cfg is not None:
                add_rooflines(r, cfg)
            reports.append(r)
    result = {
        "model": None if opts.model is None else str(opts.model),  # None with random_weights
        "random_weights": opts.random_weights,  # the size generated (EOS unreachable), or None
        "delay_ms": opts.delay_ms,  # None: the tokenizer's
        "version": __version__,
        "commit": source_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "audio": str(opts.audio or default_audio()),
        "audio_s": len(samples) / sr,
        "host": host_info(),
        "devices": [asdict(r) for r in reports],
    }
    if len(reports) == 2:
        cpu, gpu = reports
        result["cpu_over_gpu"] = {
            k: cpu.stages_ms[k] / gpu.stages_ms[k] for k in cpu.stages_ms if gpu.stages_ms.get(k, 0) > 0
        }
    return result


def table(result: dict) -> str:
    """A short human-readable table of the report."""
    lines = [f"audio {result['audio_s']:.1f} s", host_line(result["host"])]
    for r in result["devices"]:
        s = r["stages_ms"]
        lines.append(
            f"{r['device']:>5}: load {r['load_s']:.1f} s (first token {r['load_to_first_token_s']:.1f} s)"
            f" | mel {s['mel']:.0f} ms"
            f" | encoder+adapter {s['encoder']:.1f} ms | prefill {s['prefill']:.1f} ms"
            f" | decode {s['decode_ms_per_step']:.2f} ms/step over {r['steps']} steps"
            f" | {r['rates']['tokens_per_s']:.0f} tokens/s, {times(r['rates']['realtime_x'])} real time"
        )
        for row in r["decode_profile"]:
            roof = (
                f" | roofline {row['roofline_ms']:.2f} ms = {row['roofline_pct']:.0f}%"
                if "roofline_ms" in row
                else ""
            )
            lines.append(
                f"       step @ pos {row['position']}: median {row['median_ms']:.3f} ms,"
                f" p90 {row['p90_ms']:.3f} ms{roof}"
            )
        x = r["extra"]
        if "copy_GBps" in x:
            lines.append(
                f"       copy {x['copy_GBps']:.0f} GB/s, GEMM {x['gemm_TFLOPs']:.0f} TFLOP/s, encoder at "
                f"{x.get('encoder_flop_pct', 0):.0f}% of its FLOP limit "
                f"({x.get('encoder_flop_limit_ms', 0):.1f} ms), "
                f"device memory {x['pool_total'] / 1e9:.2f} GB (one stream, {r['audio_s']:.0f} s audio)"
            )
        if r.get("gemv"):
            lines += gemv_lines(r["gemv"])
        if "cold_start" in x:
            c, w = x["cold_start"]["cold"], x["cold_start"]["warm"]
            lines.append(
                f"       new process, load → first token: cold caches {c['first_token_s']:.1f} s "
                f"({c['nvrtc_compiles']} NVRTC compiles, {c['nvrtc_s']:.1f} s), "
                f"warm {w['first_token_s']:.1f} s ({w['nvrtc_compiles']}); "
                f"kernel modules prebuilt {c['prebuilt_modules']}/{c['modules']}"
            )
        if "read_GBps" in x:
            libs = ", ".join(f"{b['internal_api']} {b['version']}" for b in x["blas"]) or "none found"
            gemv = f"Numba on {x['threads']} threads" if x.get("gemv", "Numba") == "Numba" else "NumPy"
            lines.append(
                f"       read bandwidth {x['read_GBps']:.1f} GB/s on {x['threads']} threads; decode GEMVs: "
                f"{gemv}; GEMMs: BLAS {libs} (one thread per call)"
            )
        if r.get("stream"):
            lines += stream_lines(r["stream"])
        if r.get("batch"):
            lines += batch_lines(r["batch"])
        if r.get("server"):
            lines += server_lines(r["server"])
        if r.get("files"):
            lines += files_lines(r["files"])
    if "cpu_over_gpu" in result:
        lines.append("cpu/gpu: " + ", ".join(f"{k} {v:.0f}x" for k, v in result["cpu_over_gpu"].items()))
    return "\n".join(lines)


def source_commit() -> str | None:
    """The git commit of the voxtral source that runs (a checkout's HEAD, "+dirty" with local changes), or
    None for an installed package or without git."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        git = ["git", "-C", str(root)]
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "voxtral", "cuda"],
                               capture_output=True, text=True, timeout=5)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def write_json(result: dict, path: Path) -> None:
    """The report as JSON at path; OutputError (one line, exit 6) if it cannot be written there."""
    try:
        path.write_text(json.dumps(result, indent=2))
    except OSError as e:
        raise OutputError(f"--json {path}: cannot write the report ({e.strerror or e})") from None
