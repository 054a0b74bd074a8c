"""Whether a CUDA GPU can be used, asked without importing CuPy at package import time."""

from __future__ import annotations


def unavailable_reason() -> str | None:
    """None when CuPy and a CUDA device are usable, else one line saying why not."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install 'voxtral[cuda]')"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken: any CuPy/CUDA error means "no GPU"
        return f"CUDA is not usable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    return None if n > 0 else "no CUDA GPU found"
