"""Loader of the CUDA kernels in cuda/*.cu: source → NVRTC (through CuPy) → cached module.

Each .cu file is one kernel family; `#include "common.cuh"` is inlined and `#line` directives keep
NVRTC's messages pointing at the real file and line. Modules are compiled once per process
(functools.cache) and CuPy keeps the binaries on disk between processes. CuPy is imported lazily so
that the package imports without it.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from pathlib import Path

NVRTC_OPTIONS = ("-std=c++17",)
_INCLUDE = re.compile(r'^\s*#include\s+"([^"]+)"\s*$')


def cuda_dir() -> Path:
    """The folder holding the kernel sources: voxtral/cuda when installed, else the repo's cuda/."""
    try:
        packaged = importlib.resources.files("voxtral") / "cuda"
        if packaged.is_dir():
            return Path(str(packaged))
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "cuda"


def source(filename: str) -> str:
    """The text NVRTC compiles for `filename`: local includes inlined, each part tagged with #line."""
    return _expand(cuda_dir() / filename, seen=set())


def _expand(path: Path, seen: set[str]) -> str:
    if path.name in seen:  # every header has include guards; inlining it twice is harmless but useless
        return ""
    seen.add(path.name)
    out = [f'#line 1 "{path.name}"']
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = _INCLUDE.match(line)
        if match:
            out.append(_expand(path.parent / match.group(1), seen))
            out.append(f'#line {number + 1} "{path.name}"')
        else:
            out.append(line)
    return "\n".join(out) + "\n"


@functools.cache
def module(filename: str, name_expressions: tuple[str, ...] = ()):
    """The compiled cupy.RawModule of one .cu file; template kernels must be named up front."""
    import cupy

    return cupy.RawModule(
        code=source(filename),
        options=NVRTC_OPTIONS,
        name_expressions=list(name_expressions) or None,
    )


@functools.cache
def function(filename: str, name: str, name_expressions: tuple[str, ...] = ()):
    """One kernel (a cupy.RawKernel) of a .cu file, by its C name or its template name expression."""
    return module(filename, name_expressions).get_function(name)
