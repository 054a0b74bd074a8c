"""Whether a CUDA GPU can be used, asked without importing CuPy at package import time."""

from __future__ import annotations

NO_GPU = "no NVIDIA GPU or driver found"


def cupy_missing() -> bool:
    """True when CuPy is not installed at all (a CPU-only install: nothing to report)."""
    import importlib.util

    return importlib.util.find_spec("cupy") is None


def unavailable_reason() -> str | None:
    """None when CuPy and a CUDA device are usable, else one line saying why not."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install 'voxtral[cuda]')"
    except Exception as e:  # a broken CuPy/CUDA install raising on import
        return f"CuPy cannot start ({_first_line(e)})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, no device, or a driver older than CuPy's CUDA
        return _driver_reason(e)
    return None if n > 0 else NO_GPU


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _driver_reason(e: Exception) -> str:
    """CUDA's own words for a machine without a GPU are misleading ("insufficient driver"): translate."""
    import os

    text = _first_line(e)
    no_driver = not os.path.exists("/proc/driver/nvidia/version") and os.name == "posix"
    if "NoDevice" in text or "no CUDA-capable device" in text or no_driver:
        return NO_GPU
    if "InsufficientDriver" in text or "insufficient" in text:
        return f"the NVIDIA driver is older than CuPy's CUDA ({text}); update it or use cupy-cuda12x"
    return f"CUDA is not usable ({text})"
