"""The log-mel spectrogram on the device (SPEC §2.3): what voxtral.audio.windows_log_mel computes on the
host, for frames whose samples are already cut (MelStream / PaddedMel .windows).

Two float32 GEMMs on cuBLAS (gpu/gemm.py) and two of our kernels (cuda/mel.cu): the real DFT of each
Hann-windowed frame as one matrix product with [hann·cos | −hann·sin] (n_fft = 400 is small: a GEMM
beats an FFT plan and needs no cuFFT), |X|², the mel filter bank (already [M, T]), log10 and the
normalisation. Float32 throughout; against the float64 host recipe the values differ by ≤ ~3e-5
(normalised units; measured on the clips with float32 NumPy), the floor clamp keeping quiet bins exact.
No CuPy elementwise kernel (nothing compiles at run time); no host sync; capturable.

A call of at most GRAPH_ROWS[-1] frames (a live tick: 8 frames a stream) is one replay of a CUDA graph
of those four launches over fixed buffers, its rows rounded up to a bucket: the host stages the frames
in one pinned buffer, issues one upload and one graph launch (~30 µs of host time where four launches,
two of them cuBLAS calls choosing their kernel, took ~400 µs before the encoder could start).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..audio import LOG_MEL_FLOOR, LOG_MEL_RANGE, LOG_MEL_SCALE, LOG_MEL_SHIFT, hann_window, mel_filters
from ..config import AudioConfig
from . import ops
from .copy import H2D
from .gemm import gemm

MEL_ROWS = 8192  # frames uploaded and transformed at a time (many): 13 MB of windows, 82 s of audio
PINNED_BYTES = 256 << 20  # pinned windows queued behind the GPU's work before the host waits (many)
GRAPH_ROWS = (8, 16, 32, 64, 128, 256, 512, 1024)  # frames of a call replayed as a graph (buckets)


def dft_matrix(n_fft: int) -> np.ndarray:
    """[hann·cos | −hann·sin] float64 [2F, n_fft], F = n_fft/2 + 1: frames [T, n_fft] · its transpose =
    the real | imaginary parts of numpy.fft.rfft(frames · hann) [T, 2F]; phases reduced exactly."""
    f = n_fft // 2 + 1
    k = np.arange(n_fft)
    angle = 2 * np.pi * ((np.arange(f)[:, None] * k[None, :]) % n_fft) / n_fft
    window = hann_window(n_fft)
    return np.concatenate([np.cos(angle) * window, -np.sin(angle) * window])


class GpuMel:
    """windows [T, n_fft] f32 (device) → normalised log-mel [M, T] f32 (device), as windows_log_mel."""

    def __init__(self, cfg: AudioConfig):
        import cupy

        n = cfg.window_size
        self.cfg, self.n_fft, self.n_freq = cfg, n, n // 2 + 1
        self.dft = cupy.asarray(dft_matrix(n).astype(np.float32))
        self.filters = cupy.asarray(mel_filters(cfg.sampling_rate, n, cfg.num_mel_bins).astype(np.float32))
        self.low = cfg.global_log_mel_max - LOG_MEL_RANGE
        self._held: deque = deque()  # (event, pinned buffer) of uploads in flight (many)
        self._held_bytes = 0
        self._graphs: dict = {}  # bucket rows → captured graph of _rows over the fixed buffers
        self._fixed = None  # (pinned stage, upload event, windows, x, p, out) of the graph calls

    def many(self, windows: list[list[np.ndarray]]) -> list:
        """Each input's frames' samples, host pieces [T_j, n_fft] (views of any layout; float32 or exact
        float64) → its log-mel [M, ΣT_j] f32 on the device, every input in one go: the pieces are staged
        in pinned host memory, MEL_ROWS frames an upload, into one time-major array [ΣT, M]; input i's
        frames are rows of it, and what comes back is their transpose (a view: `frames.T` is
        C-contiguous [T_i, M], what the conv stem gathers from). Runs on the current stream; the host
        waits only when more than PINNED_BYTES of uploads are still queued behind the GPU's work.
        At most GRAPH_ROWS[-1] frames on a non-default stream (a live tick): what comes back are views
        of one fixed buffer, valid until the next call (the engine copies them into the encoder's
        buffers in the same tick, before it computes the next tick's log-mel)."""
        import cupy

        counts = [sum(len(p) for p in pieces) for pieces in windows]
        total = sum(counts)
        offsets = np.cumsum([0, *counts])
        stream = cupy.cuda.get_current_stream()
        if 0 < total <= GRAPH_ROWS[-1] and stream.ptr:  # a capturable (non-default) stream
            out = self._replay([p for ps in windows for p in ps if len(p)], total, stream)
            return [out[offsets[i] : offsets[i + 1]].T for i in range(len(windows))]
        out = cupy.empty((total, self.cfg.num_mel_bins), np.float32)
        pieces = iter([p for ps in windows for p in ps if len(p)])
        piece, done = next(pieces, None), 0
        for row in range(0, total, MEL_ROWS):
            n = min(MEL_ROWS, total - row)
            stage, fill = self._pinned(n), 0
            while fill < n:  # the next n frames of the pieces, one after another
                k = min(len(piece) - done, n - fill)
                stage[fill : fill + k] = piece[done : done + k]
                fill, done = fill + k, done + k
                if done == len(piece):
                    piece, done = next(pieces, None), 0
            self._rows(self._upload(stage), out[row : row + n])
        return [out[offsets[i] : offsets[i + 1]].T for i in range(len(windows))]

    def _pinned(self, n: int) -> np.ndarray:
        """A pinned host buffer [n, n_fft] f32; buffers of uploads the GPU has done are let go first."""
        import cupy

        while self._held and (self._held[0][0].done or self._held_bytes > PINNED_BYTES):
            event, buffer = self._held.popleft()
            event.synchronize()
            self._held_bytes -= buffer.nbytes
        memory = cupy.cuda.alloc_pinned_memory(n * self.n_fft * 4)
        return np.frombuffer(memory, np.float32, n * self.n_fft).reshape(n, self.n_fft)

    def _upload(self, stage: np.ndarray):
        """A pinned buffer → a new device array, asynchronously on the current stream; the buffer is held
        until the copy is done (an event)."""
        import cupy
        from cupy.cuda import runtime

        dev = cupy.empty(stage.shape, np.float32)
        stream = cupy.cuda.get_current_stream()
        runtime.memcpyAsync(dev.data.ptr, stage.ctypes.data, stage.nbytes, H2D, stream.ptr)
        event = cupy.cuda.Event(disable_timing=True)
        event.record(stream)
        self._held.append((event, stage))
        self._held_bytes += stage.nbytes
        return dev

    def _replay(self, pieces: list[np.ndarray], total: int, stream):
        """The frames of pieces (total ≤ GRAPH_ROWS[-1]) → [total, M] f32 (time-major log-mel), a view of
        the fixed output buffer that the next call rewrites: staged in the pinned buffer, uploaded, one
        replay of the bucket's graph (no copy out: ~50 µs of host time a tick)."""
        import cupy
        from cupy.cuda import runtime

        from .graphs import capture
        from .launch import launch_graph

        if self._fixed is None:
            most = GRAPH_ROWS[-1]
            memory = cupy.cuda.alloc_pinned_memory(most * self.n_fft * 4)
            stage = np.frombuffer(memory, np.float32, most * self.n_fft).reshape(most, self.n_fft)
            dev = [cupy.zeros((most, n), np.float32) for n in (self.n_fft, 2 * self.n_freq, self.n_freq)]
            self._fixed = [stage, None, *dev, cupy.zeros((most, self.cfg.num_mel_bins), np.float32)]
        stage, uploaded, windows, x, p, out = self._fixed
        if uploaded is not None:
            uploaded.synchronize()  # the last upload from the stage has been read (long done in a tick)
        np.concatenate(pieces, out=stage[:total], casting="same_kind")
        runtime.memcpyAsync(windows.data.ptr, stage.ctypes.data, total * self.n_fft * 4, H2D, stream.ptr)
        self._fixed[1] = event = cupy.cuda.Event(disable_timing=True)
        event.record(stream)
        if not self._graphs:  # every bucket at once (~2 ms each), so that no later tick waits for one
            for r in GRAPH_ROWS:  # rows past total hold earlier (finite) frames or zeros: never read
                run = lambda r=r: self._rows(windows[:r], out[:r], (x[:r], p[:r]))  # noqa: E731
                self._graphs[r] = capture(stream, run)
        launch_graph(self._graphs[next(r for r in GRAPH_ROWS if r >= total)], stream)
        return out[:total]

    def _rows(self, windows, out, scratch=(None, None)) -> None:
        """Windows [n, n_fft] f32 (device) → out [n, M]: the time-major log-mel. scratch: (x [n, 2F],
        p [n, F]) f32 buffers instead of new ones."""
        x = gemm(windows, self.dft, out=scratch[0])  # [n, 2F]: re | im
        p = ops.power_spectrum(x, out=scratch[1])  # [n, F]
        gemm(p, self.filters, out=out)  # [n, M]
        ops.log_mel_normalize(out, LOG_MEL_FLOOR, self.low, LOG_MEL_SHIFT, LOG_MEL_SCALE)

    def __call__(self, windows, out=None, scratch=None):
        """windows [T, n_fft] f32 → out [M, T] f32 (allocated if None). scratch: (x [T, 2F], p [T, F])
        f32 buffers to use instead of allocating (a captured graph's)."""
        ops._check(windows, "windows", np.float32, (None, self.n_fft))
        t, m = windows.shape[0], self.cfg.num_mel_bins
        out = ops._out(out, "out", np.float32, (m, t))
        if t == 0:
            return out
        x, p = scratch if scratch is not None else (None, None)
        x = gemm(windows, self.dft, out=x)  # [T, 2F]: re | im (gemm allocates x when None)
        p = ops.power_spectrum(x, out=p)  # [T, F]
        gemm(self.filters, p, out=out)  # [M, T]
        return ops.log_mel_normalize(out, LOG_MEL_FLOOR, self.low, LOG_MEL_SHIFT, LOG_MEL_SCALE)
