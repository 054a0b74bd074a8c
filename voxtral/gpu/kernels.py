"""Loader of the CUDA kernels in cuda/*.cu: a prebuilt fatbin when it matches the source, else NVRTC.

Each .cu file is one kernel family; `#include "common.cuh"` is inlined and `#line` directives keep
compiler messages pointing at the real file and line (`source`). The kernels ship compiled: `python
dev/build_kernels.py` runs nvcc over that same text and writes cuda/bin/<name>.fatbin (SASS for
every TARGETS architecture plus PTX that newer GPUs' drivers compile) and cuda/bin/manifest.json, which
records each module's source fingerprint and the symbol of every kernel, template instances included.
A module is loaded from its fatbin only when the fingerprint of the source in hand matches the
manifest (an edited kernel never runs stale code) and the driver accepts the binary; otherwise, and
for any kernel the fatbin lacks, NVRTC compiles it through CuPy, which caches the result on disk.
`VOXTRAL_KERNELS=nvrtc` forces NVRTC. Modules load once per process (functools.cache); `load_all`
loads every module in parallel threads. CuPy is imported lazily so that the package imports without it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import logging
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

NVRTC_OPTIONS = ("-std=c++17",)
MANIFEST = "manifest.json"
FORCE_ENV = "VOXTRAL_KERNELS"  # "nvrtc": never load prebuilt binaries
_INCLUDE = re.compile(r'^\s*#include\s+"([^"]+)"\s*$')
log = logging.getLogger(__name__)
_origins: dict[str, str] = {}  # module file → "prebuilt" | "nvrtc" | "nvrtc (<why>)"
_lock = threading.Lock()


def cuda_dir() -> Path:
    """The folder holding the kernel sources: voxtral/cuda when installed, else the repo's cuda/."""
    try:
        packaged = importlib.resources.files("voxtral") / "cuda"
        if packaged.is_dir():
            return Path(str(packaged))
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "cuda"


def kernel_files() -> list[str]:
    """Every kernel family: the .cu files of cuda_dir(), sorted."""
    return sorted(p.name for p in cuda_dir().glob("*.cu"))


def source(filename: str) -> str:
    """The text NVRTC compiles for `filename`: local includes inlined, each part tagged with #line."""
    return _expand(cuda_dir() / filename, seen=set())


def fingerprint(filename: str) -> str:
    """sha256 of what a build compiles for `filename`: its expanded source and the compiler options."""
    text = source(filename) + "\0" + "\0".join(NVRTC_OPTIONS)
    return hashlib.sha256(text.encode()).hexdigest()


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
def manifest() -> dict:
    """cuda/bin/manifest.json ({} when absent or unreadable): {"modules": {file: entry}, ...}."""
    path = cuda_dir() / "bin" / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def stale(instances: dict[str, tuple[str, ...]]) -> list[str]:
    """Why cuda/bin is out of date with the sources, one line per module (empty when current).

    instances: file → the template name expressions the runtime uses (ops.TEMPLATES).
    """
    bin_dir = cuda_dir() / "bin"
    modules = manifest().get("modules", {})
    files = kernel_files()
    out = []
    for f in files:
        entry = modules.get(f)
        if entry is None:
            out.append(f"{f}: not built")
        elif entry.get("fingerprint") != fingerprint(f):
            out.append(f"{f}: source changed since the build")
        elif not (bin_dir / entry.get("fatbin", "")).is_file():
            out.append(f"{f}: {entry.get('fatbin')} is missing")
        elif set(instances.get(f, ())) - set(entry.get("kernels", {})):
            out.append(f"{f}: instances added since the build")
    out += [f"{f}: built, but the source is gone" for f in sorted(set(modules) - set(files))]
    return out


def _record(filename: str, origin: str) -> None:
    with _lock:
        if _origins.get(filename, "").startswith("prebuilt") and origin.startswith("nvrtc"):
            origin = "prebuilt + " + origin
        _origins[filename] = origin


def origins() -> dict[str, str]:
    """Where each module loaded so far came from: "prebuilt", "nvrtc", or "nvrtc (<why>)"."""
    with _lock:
        return dict(_origins)


@functools.cache
def _prebuilt(filename: str):
    """(cupy.RawModule loaded from the fatbin, {name → symbol}), or None with the reason recorded."""
    if os.environ.get(FORCE_ENV, "").lower() == "nvrtc":
        return None, f"{FORCE_ENV}=nvrtc"
    entry = manifest().get("modules", {}).get(filename)
    if entry is None:
        return None, "not prebuilt"
    if entry.get("fingerprint") != fingerprint(filename):
        return None, "source changed since the build"
    import cupy

    path = cuda_dir() / "bin" / entry["fatbin"]
    try:
        module = cupy.RawModule(path=str(path))
        symbols = dict(entry["kernels"])
        module.get_function(next(iter(symbols.values())))  # loads the binary: the driver may refuse it
    except Exception as e:  # an older driver, a GPU with neither SASS nor usable PTX, a missing file
        log.warning("voxtral: prebuilt %s not usable here (%s); compiling it with NVRTC", filename, e)
        return None, f"prebuilt refused: {type(e).__name__}"
    return module, symbols


@functools.cache
def compile_nvrtc(filename: str, name_expressions: tuple[str, ...] = ()):
    """The cupy.RawModule NVRTC compiles from source(filename); template kernels must be named up front."""
    import cupy

    module = cupy.RawModule(
        code=source(filename), options=NVRTC_OPTIONS, name_expressions=list(name_expressions) or None
    )
    module.compile()
    return module


@functools.cache
def function(filename: str, name: str, name_expressions: tuple[str, ...] = ()):
    """One kernel (a cupy.RawKernel) of a .cu file, by its C name or its template name expression.

    name_expressions: the template instances NVRTC compiles together if it has to compile this file.
    """
    module, symbols = _prebuilt(filename)
    if module is not None and name in symbols:
        _record(filename, "prebuilt")
        return module.get_function(symbols[name])
    why = symbols if module is None else f"{name} not prebuilt"
    _record(filename, "nvrtc" if why == "not prebuilt" else f"nvrtc ({why})")
    names = name_expressions if name in name_expressions or "<" not in name else (*name_expressions, name)
    return compile_nvrtc(filename, names).get_function(name)


def load_all(instances: dict[str, tuple[str, ...]], device_id: int = 0, threads: int = 8) -> dict[str, str]:
    """Load every kernel family on one device at once, NVRTC compiles in parallel threads; returns origins().

    instances: file → the template name expressions the runtime uses (extern "C" kernels need none).
    """
    import cupy

    def one(filename: str) -> None:
        with cupy.cuda.Device(device_id):
            load(filename)

    def load(filename: str) -> None:
        names = instances.get(filename, ())
        if names:
            for n in names:
                function(filename, n, names)
            return
        module, symbols = _prebuilt(filename)
        if module is not None:
            for n in symbols:
                function(filename, n)
        else:
            _record(filename, "nvrtc" if symbols == "not prebuilt" else f"nvrtc ({symbols})")
            compile_nvrtc(filename)

    files = kernel_files()
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(files)))) as pool:
        list(pool.map(one, files))
    return origins()
