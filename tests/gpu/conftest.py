"""Every test under tests/gpu is marked `gpu` and skips only when CuPy or a CUDA device is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _gpu_missing() -> str | None:
    """Why no GPU test can run here, or None when CuPy sees a CUDA device."""
    try:
        import cupy
    except Exception as e:  # ImportError, or a broken CUDA install raising on import
        return f"CuPy is not importable ({type(e).__name__}: {e})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return f"no CUDA device ({type(e).__name__}: {e})"
    return None if n > 0 else "no CUDA device (getDeviceCount() == 0)"


def pytest_collection_modifyitems(config, items):
    reason = _gpu_missing()
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.gpu)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
