"""The host a bench ran on: its CPU, cores and single-thread Python speed.

Host-bound figures (a streaming feed's or a live tick's host part, the files path's scheduling) scale with
the last: on leases of the same GPU type the same code gave a feed median of 4.4–5.1 ms and 128 live
sessions 15.3–21.0 ms, so runs compare only with this beside them.
"""

from __future__ import annotations

import math
import platform
import time

LOOP = 200_000  # iterations of the fixed Python loop
REPEATS = 5  # the fastest repeat counts


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; elsewhere what platform knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def python_loop_ns(n: int = LOOP, repeats: int = REPEATS) -> float:
    """Nanoseconds per iteration of a fixed pure-Python loop (a dict lookup, an `&`, an add): the fastest
    of `repeats` runs of n iterations."""
    table = {i: i for i in range(64)}
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        total = 0
        for i in range(n):
            total += table[i & 63]
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e9


def host_info() -> dict:
    """{"cpu": model name, "cores": CPUs this process may use, "python_loop_ns": python_loop_ns()}."""
    from ..cpu.linear import cores

    return {"cpu": cpu_model(), "cores": cores(), "python_loop_ns": python_loop_ns()}


def host_line(host: dict) -> str:
    return (
        f"host: {host['cpu']}, {host['cores']} cores, Python loop {host['python_loop_ns']:.1f} ns/iteration "
        "(host-bound figures scale with it)"
    )
