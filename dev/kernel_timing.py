"""Isolated timings of every CUDA kernel at the real model's sizes (SPEC §8), with bytes moved.

time_kernels() returns one row per case: microseconds (median of CUDA-event timings of a captured
graph of many launches), the fewest bytes the kernel must move, GB/s and % of the device-to-device
copy bandwidth measured in the same call, and TFLOP/s for attention_tiled. Inputs are rotated over
several sets so that repeated launches are not served from L2 (50 MB on an H100) where a set is big.
Sizes are the official full-size model's (voxtral.testing.checkpoint.params("full")); the KV caches
are slot rings found through a KVCaches table (voxtral/gpu/kv.py), as the decoder and encoder use them.
Run `python dev/kernel_timing.py [kernel]` from the repository root on a GPU machine (dev/README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # voxtral from this checkout, installed or not

import numpy as np  # noqa: E402

from voxtral.config import ModelConfig  # noqa: E402
from voxtral.gpu import ops  # noqa: E402
from voxtral.gpu.kv import KVCaches  # noqa: E402
from voxtral.testing.checkpoint import params  # noqa: E402

ROTATE_BYTES = 160 << 20  # input sets cycled per case: > 3× an H100's L2
MAX_SETS = 16
LAUNCHES_PER_GRAPH = 64
REPS = 30
COPY_BYTES = 1 << 30
# Decoder (SPEC §5) and encoder (SPEC §3) sizes of the official model; T_ENC is 60 s of audio (4 encoder
# positions per 80 ms).
CFG = ModelConfig.from_dict(params("full"))
DEC, ENC = CFG.decoder, CFG.encoder
D_DEC, H_DEC, HKV_DEC, DH_DEC, F_DEC = DEC.dim, DEC.n_heads, DEC.n_kv_heads, DEC.head_dim, DEC.hidden_dim
W_DEC, V, THETA_DEC = DEC.sliding_window, DEC.vocab_size, DEC.rope_theta
D_ENC, H_ENC, HKV_ENC, DH_ENC, F_ENC = ENC.dim, ENC.n_heads, ENC.n_kv_heads, ENC.head_dim, ENC.hidden_dim
W_ENC, THETA_ENC, M_MEL = ENC.sliding_window, ENC.rope_theta, CFG.audio.num_mel_bins
T_ENC = 3000
T_ADAPTER = T_ENC // CFG.audio.downsample_factor


def time_graph_us(launch, n_sets: int, launches: int = LAUNCHES_PER_GRAPH, reps: int = REPS) -> float:
    """Median µs per launch of `launch(i)` (i picks the input set) over `reps` replays of one graph."""
    import cupy as cp

    cp.cuda.Device().synchronize()  # inputs were made on the legacy stream, which `stream` does not wait for
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        for i in range(2 * n_sets):  # compile, load and warm up outside the capture
            launch(i % n_sets)
        stream.synchronize()
        stream.begin_capture()
        for i in range(launches):
            launch(i % n_sets)
        graph = stream.end_capture()
        graph.launch(stream)
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        times = []
        for _ in range(reps):
            start.record(stream)
            graph.launch(stream)
            stop.record(stream)
            stop.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, stop) * 1e3 / launches)
    return float(np.median(times))


def _sets(nbytes: int) -> int:
    return int(max(1, min(MAX_SETS, -(-ROTATE_BYTES // max(nbytes, 1)))))


def copy_bandwidth_gbps() -> float:
    """Device-to-device copy rate, bytes read plus written per second, in GB/s."""
    import cupy as cp

    src = cp.random.random(COPY_BYTES // 4, dtype=np.float32)
    dst = cp.empty_like(src)
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for i in range(12):
        start.record()
        cp.cuda.runtime.memcpyAsync(
            dst.data.ptr, src.data.ptr, COPY_BYTES, cp.cuda.runtime.memcpyDeviceToDevice, 0
        )
        stop.record()
        stop.synchronize()
        if i >= 2:
            times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
    return 2 * COPY_BYTES / float(np.median(times)) / 1e9


def _randn(*shape, dtype=np.float32):
    import cupy as cp

    return cp.random.standard_normal(shape, dtype=np.float32).astype(dtype)


def _bf16(*shape):
    """Random BF16 bit patterns of N(0, 1) values (the top halves of float32s)."""
    return (_randn(*shape).view(np.uint32) >> 16).astype(np.uint16)


def _cases():
    """(kernel, case, setup) with setup() → (launch(i), n_sets, nbytes, flops)."""
    import cupy as cp

    def i32(values):
        return cp.asarray(np.asarray(values, dtype=np.int32))

    def empty_bf16(*shape):
        return cp.empty(shape, np.uint16)

    def rms(t, d, bias):
        nbytes = (14 if bias else 6) * t * d + 8 * d  # x read (+ written back), out, w (+ bias)
        n = _sets(nbytes)
        xs, w, b = [_randn(t, d) for _ in range(n)], _randn(d), _randn(d) if bias else None
        outs = [empty_bf16(t, d) for _ in range(n)]
        return lambda i: ops.rms_norm(xs[i], w, 1e-5, bias=b, out=outs[i]), n, nbytes, 0

    def caches(n_slots, rows, hkv, dh, filled=0):
        """KVCaches of one layer, n_slots open rings of `rows` rows, the first `filled` rows random."""
        kv = KVCaches(1, n_slots, hkv, dh)
        for c in range(n_slots):
            kv.open(c, rows)
            for a in kv.arrays[c]:
                if filled:
                    a[:, :filled] = _bf16(1, filled, hkv, dh)
        return kv

    def rope(t, h, hkv, dh, bias, rows, theta, bf16_in=False):
        width = (h + 2 * hkv) * dh
        nbytes = (4 if bf16_in else 6) * t * width
        n = _sets(nbytes)
        qkv = [(_bf16 if bf16_in else _randn)(t, width) for _ in range(n)]
        outs = [empty_bf16(t, h, dh) for _ in range(n)]
        kv, b = caches(n, rows, hkv, dh), _randn(width) if bias else None  # set i writes slot i's ring
        pos, sl = i32(np.arange(t) + 4000), [i32([i] * t) for i in range(n)]
        dims = dict(n_kv_heads=hkv, head_dim=dh)
        launch = lambda i: ops.rope_qkv(qkv[i], pos, sl[i], *kv.layer(0), theta, **dims, bias=b, out=outs[i])
        return launch, n, nbytes, 0

    def split(ctx, nb):
        splits = ops.attention_splits(nb, HKV_DEC)
        active = min(splits, -(-ctx // ops.split_min_keys(nb, HKV_DEC)))
        partials = 0 if active == 1 else nb * H_DEC * active * (DH_DEC + 2) * 4 * 2  # written, read back
        nbytes = nb * ctx * HKV_DEC * DH_DEC * 4 + partials
        n = _sets(nbytes)
        kv = caches(n * nb, W_DEC, HKV_DEC, DH_DEC, filled=ctx)  # set i: slots i·nb … (i+1)·nb − 1
        q, out = _bf16(nb, H_DEC, DH_DEC), empty_bf16(nb, H_DEC, DH_DEC)
        ws = ops.attention_workspace(nb, H_DEC, HKV_DEC, DH_DEC, splits)
        pos, sl = i32([ctx - 1] * nb), [i32(np.arange(nb) + i * nb) for i in range(n)]
        launch = lambda i: ops.attention_split(
            q, *kv.layer(0), pos, sl[i], W_DEC, n_kv_heads=HKV_DEC, out=out, workspace=ws
        )
        return launch, n, nbytes, 0

    def live_split(streams, splits=None, min_keys=None):
        """An encoder live tick's attention_split: 4 queries of each of `streams` slots at the end of a
        full window (encoder.LIVE_SPLITS / LIVE_SPLIT_KEYS; None: the launcher's choice)."""
        t, ring = 4 * streams, W_ENC + 63
        nbytes = streams * (W_ENC + 3) * HKV_ENC * DH_ENC * 4  # each stream's keys and values once
        n = _sets(nbytes)
        kv = caches(n * streams, ring, HKV_ENC, DH_ENC, filled=ring)
        q, out = _bf16(t, H_ENC, DH_ENC), empty_bf16(t, H_ENC, DH_ENC)
        ws = ops.attention_workspace(t, H_ENC, HKV_ENC, DH_ENC, splits)
        pos = i32(np.tile(np.arange(4) + 2 * W_ENC, streams))
        sl = [i32(np.repeat(np.arange(streams), 4) + i * streams) for i in range(n)]
        launch = lambda i: ops.attention_split(
            q, *kv.layer(0), pos, sl[i], W_ENC, n_kv_heads=HKV_ENC, out=out, workspace=ws, splits=splits,
            min_keys=min_keys,
        )  # fmt: skip
        return launch, n, nbytes, 0

    def tiled(t, rows):
        r = t + W_ENC  # one slot's ring [R, Hkv, Dh] (the encoder passes layer i of its KVCaches arrays)
        kc, vc, q = _bf16(r, HKV_ENC, DH_ENC), _bf16(r, HKV_ENC, DH_ENC), _bf16(t, H_ENC, DH_ENC)
        out = empty_bf16(t, H_ENC, DH_ENC)
        nbytes = (r - 1) * HKV_ENC * DH_ENC * 4 + 4 * t * H_ENC * DH_ENC
        flops = ops.tiled_flops(t, 0, W_ENC, H_ENC, DH_ENC)
        launch = lambda i: ops.attention_tiled(q, kc, vc, W_ENC, 0, out=out, block_rows=rows)
        return launch, 1, nbytes, flops

    def gelu(t, m, bias):
        n = _sets(6 * t * m)
        xs, outs = [_randn(t, m) for _ in range(n)], [empty_bf16(t, m) for _ in range(n)]
        b = _randn(m) if bias else None
        return lambda i: ops.bias_gelu(xs[i], b, out=outs[i]), n, 6 * t * m, 0

    def swiglu(t, f):
        n = _sets(10 * t * f)
        gus, outs = [_randn(t, 2 * f) for _ in range(n)], [empty_bf16(t, f) for _ in range(n)]
        return lambda i: ops.silu_mul(gus[i], out=outs[i]), n, 10 * t * f, 0

    def im2col(n, c, stride):  # n outputs of stride-`stride` taps over [stride·n + 2, c] (f32 for conv0)
        x = _randn(stride * n + 2, c) if stride == 1 else _bf16(stride * n + 2, c)
        rows = i32((stride * np.arange(n)[:, None] + np.arange(3)).ravel()).reshape(n, 3)
        nbytes = x.nbytes + 2 * n * c * 3
        n_sets = _sets(nbytes)
        outs = [empty_bf16(n, c * 3) for _ in range(n_sets)]
        return lambda i: ops.im2col_rows(x, rows, out=outs[i]), n_sets, nbytes, 0

    def emb(t):
        e, audio, out = _bf16(V, D_DEC), _randn(4, 64, D_DEC), cp.empty((t, D_DEC), np.float32)
        tok, pos, sl = i32(np.arange(t) * 997 % V), i32(np.arange(t)), i32(np.arange(t) % 4)
        return lambda i: ops.embed(tok, e, audio, pos, sl, out=out), 1, 10 * t * D_DEC, 0

    def scatter(r):  # r rows of D_DEC floats from one array into 128 slots' rings of 256 rows
        src = _randn(r, D_DEC)
        rings = cp.empty((128, 256, D_DEC), np.float32)
        addr = cp.asarray(src.data.ptr + np.arange(r, dtype=np.int64) * D_DEC * 4)
        dst = cp.asarray(np.arange(r, dtype=np.int64) * 256 % (128 * 256))
        return lambda i: ops.scatter_rows(addr, dst, rings), 1, 8 * r * D_DEC, 0

    def argmax(nb):
        n = _sets(4 * nb * V)
        logits = [_randn(nb, V) for _ in range(n)]
        tok, pos, hist = i32([0] * nb), i32([0] * nb), cp.zeros((nb, 64), np.int32)
        return lambda i: ops.argmax_advance(logits[i], tok, pos, hist), n, 4 * nb * V, 0

    def log_mel(t):  # t frames through GpuMel: DFT GEMM, power_spectrum, filter GEMM, log_mel_normalize
        from voxtral.gpu.mel import GpuMel

        mel = GpuMel(CFG.audio)
        windows = _randn(t, mel.n_fft)
        out = cp.empty((mel.cfg.num_mel_bins, t), np.float32)
        scratch = (cp.empty((t, 2 * mel.n_freq), np.float32), cp.empty((t, mel.n_freq), np.float32))
        flops = 2 * t * mel.n_fft * 2 * mel.n_freq + 2 * t * mel.n_freq * mel.cfg.num_mel_bins
        return (
            lambda i: mel(windows, out=out, scratch=scratch),
            1,
            4 * t * (mel.n_fft + mel.cfg.num_mel_bins),
            flops,
        )

    tm = 2 * T_ENC  # mel frames of T_ENC encoder positions
    return [
        ("log_mel (GpuMel)", f"60 s offline: T={tm}", lambda: log_mel(tm)),
        ("log_mel (GpuMel)", "a live tick of 128 sessions: T=1024", lambda: log_mel(1024)),
        ("rms_norm", f"decoder T=1 D={D_DEC}", lambda: rms(1, D_DEC, False)),
        ("rms_norm", f"encoder T={T_ENC} D={D_ENC} +bias", lambda: rms(T_ENC, D_ENC, True)),
        ("rms_norm", f"encoder pass T=1024 D={D_ENC} +bias", lambda: rms(1024, D_ENC, True)),
        ("rms_norm", f"decoder T=64 D={D_DEC}", lambda: rms(64, D_DEC, False)),
        (
            "rope_qkv",
            f"decoder T=1 H={H_DEC} Hkv={HKV_DEC} Dh={DH_DEC}",
            lambda: rope(1, H_DEC, HKV_DEC, DH_DEC, False, W_DEC, THETA_DEC),
        ),
        (
            "rope_qkv",
            f"encoder T={T_ENC} H={H_ENC} Hkv={HKV_ENC} Dh={DH_ENC}",
            lambda: rope(T_ENC, H_ENC, HKV_ENC, DH_ENC, True, W_ENC + T_ENC - 1, THETA_ENC),
        ),
        (
            "rope_qkv",
            f"encoder pass T=1024 bf16 H={H_ENC} Dh={DH_ENC}",
            lambda: rope(1024, H_ENC, HKV_ENC, DH_ENC, True, W_ENC + 1023, THETA_ENC, bf16_in=True),
        ),
        (
            "rope_qkv",
            f"live tick T=4 bf16 H={H_ENC} Dh={DH_ENC}",
            lambda: rope(4, H_ENC, HKV_ENC, DH_ENC, True, W_ENC + 3, THETA_ENC, bf16_in=True),
        ),
        ("attention_split", f"decode ctx=500 W={W_DEC}", lambda: split(500, 1)),
        *[
            (
                "attention_split",
                f"tick {b}s S={sp or 'auto'} min={mk or 'auto'}",
                lambda b=b, sp=sp, mk=mk: live_split(b, sp, mk),
            )
            for b in (1, 2)
            for sp, mk in ((None, None), (4, 64), (6, 128), (8, 64), (12, 64), (16, 48))
        ],  # fmt: skip
        ("attention_split", f"decode ctx=5000 W={W_DEC}", lambda: split(5000, 1)),
        ("attention_split", "decode ctx=5000 B=16", lambda: split(5000, 16)),
        ("attention_tiled", f"encoder T={T_ENC} W={W_ENC} 128 rows", lambda: tiled(T_ENC, 128)),
        ("attention_tiled", f"encoder T={T_ENC} W={W_ENC} 64 rows", lambda: tiled(T_ENC, 64)),
        ("bias_gelu", f"conv T={T_ENC} N={D_ENC} +bias", lambda: gelu(T_ENC, D_ENC, True)),
        ("bias_gelu", f"adapter T={T_ADAPTER} N={D_DEC}", lambda: gelu(T_ADAPTER, D_DEC, False)),
        ("silu_mul", f"decoder T=1 F={F_DEC}", lambda: swiglu(1, F_DEC)),
        ("silu_mul", f"encoder T={T_ENC} F={F_ENC}", lambda: swiglu(T_ENC, F_ENC)),
        ("im2col_rows", f"conv0 mel [{tm}, {M_MEL}] K=3", lambda: im2col(tm, M_MEL, 1)),
        ("im2col_rows", f"conv1 [{tm}, {D_ENC}] K=3 s=2", lambda: im2col(T_ENC, D_ENC, 2)),
        ("embed", f"decoder T=1 D={D_DEC}", lambda: emb(1)),
        ("scatter_rows", f"a live tick: 128 rows of D={D_DEC}", lambda: scatter(128)),
        ("argmax_advance", f"B=1 V={V}", lambda: argmax(1)),
        ("argmax_advance", f"B=16 V={V}", lambda: argmax(16)),
    ]


def time_kernels(only: str | None = None) -> list[dict]:
    """Time every kernel (or those whose name contains `only`) in isolation; one dict per case.

    Keys: kernel, case, us, bytes, gbps, pct_bw, tflops (attention_tiled only), or error.
    """
    bw = copy_bandwidth_gbps()
    rows = [dict(kernel="copy (D2D)", case=f"{COPY_BYTES >> 20} MiB", us=2 * COPY_BYTES / bw / 1e3,
                 bytes=2 * COPY_BYTES, gbps=bw, pct_bw=100.0, tflops=None)]  # fmt: skip
    for kernel, case, setup in _cases():
        if only and only not in kernel:
            continue
        try:
            launch, n_sets, nbytes, flops = setup()
            us = time_graph_us(launch, n_sets)
        except Exception as e:  # one failing case must not hide the others' numbers
            rows.append(dict(kernel=kernel, case=case, error=f"{type(e).__name__}: {e}"))
            continue
        gbps = nbytes / us / 1e3
        tflops = flops / us / 1e6 if flops else None
        rows.append(
            dict(
                kernel=kernel,
                case=case,
                us=us,
                bytes=nbytes,
                gbps=gbps,
                pct_bw=100 * gbps / bw,
                tflops=tflops,
            )
        )
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'kernel':<16} {'case':<34} {'µs':>9} {'MB':>8} {'GB/s':>7} {'%bw':>5} {'TFLOP/s':>8}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['kernel']:<16} {r['case']:<34} FAILED {r['error'][:200]}")
            continue
        tf = f"{r['tflops']:8.1f}" if r["tflops"] else ""
        head = f"{r['kernel']:<16} {r['case']:<34} {r['us']:9.2f} {r['bytes'] / 1e6:8.2f}"
        lines.append(f"{head} {r['gbps']:7.0f} {r['pct_bw']:5.1f} {tf}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_table(time_kernels(sys.argv[1] if len(sys.argv) > 1 else None)))
