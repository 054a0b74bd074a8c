"""Does an upload into a pitched device view wait for the stream? (dev/pitched_upload_wip.patch, #15)

A slot's column of a KV table (KVCaches._point: table[:, slot], n_layers rows of 16 bytes) goes up with
cudaMemcpy2DAsync from pageable host memory; a 64-file run's cProfile booked 2.3 s of the engine's
thread under those uploads, but memcpy2DAsync's own time was 0.07 s. This queues a kernel that sleeps
--sleep-ms, then times the host call of each way of uploading the column (one pitched copy; one 1-D copy
per row; one 1-D copy of the whole table) and says whether the stream was still busy when it returned.

    python dev/upload_block.py [--layers 32] [--slots 65] [--sleep-ms 300]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

SLEEP = r"""extern "C" __global__ void sleep_ms(int ms) {
    for (int i = 0; i < ms; ++i) __nanosleep(1000000);
}"""


def main(argv: list[str] | None = None) -> None:
    import cupy as cp
    from cupy.cuda import runtime

    from voxtral.gpu.copy import upload

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--slots", type=int, default=65)
    ap.add_argument("--sleep-ms", type=int, default=300)
    args = ap.parse_args(argv)
    sleeper = cp.RawKernel(SLEEP, "sleep_ms")
    table = cp.zeros((args.layers, args.slots, 2), np.uint64)
    host = np.arange(args.layers * args.slots * 2, dtype=np.uint64).reshape(table.shape)
    column = np.ascontiguousarray(host[:, 7])
    stream = cp.cuda.Stream(non_blocking=True)

    def rows() -> None:  # one 1-D copy per row, as the patch does
        pitch, width = table.strides[0], column.strides[0]
        base = table[:, 7].data.ptr
        for r in range(args.layers):
            runtime.memcpyAsync(base + r * pitch, column.ctypes.data + r * width, width, 1, stream.ptr)

    ways = {
        "pitched (upload, shipped)": lambda: upload(table[:, 7], column),
        "row by row (the patch)": rows,
        "whole table, 1-D": lambda: upload(table, host),
    }
    with stream:
        for name, way in ways.items():
            sleeper((1,), (1,), (np.int32(args.sleep_ms),))
            t0 = time.perf_counter()
            way()
            ms = 1000 * (time.perf_counter() - t0)
            busy = not stream.done
            stream.synchronize()
            ok = bool((cp.asnumpy(table[:, 7]) == column).all())
            print(f"{name:<28} host {ms:8.3f} ms, stream still busy after: {busy}, column right: {ok}")
            table[...] = 0


if __name__ == "__main__":
    main()
