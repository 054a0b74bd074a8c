"""Compile cuda/*.cu ahead of time: cuda/bin/<name>.fatbin + cuda/bin/manifest.json (see cuda/README.md).

    python dev/build_kernels.py              # rebuild what changed (nvcc and c++filt on PATH)
    python dev/build_kernels.py --all        # rebuild every module
    python dev/build_kernels.py --check      # exit 1 if a committed binary is stale (no nvcc needed)
    python dev/build_kernels.py --verbose    # also print ptxas register / spill lines (sm_90)

Each module is the text NVRTC would compile (`voxtral.gpu.kernels.source`), plus, for template kernels,
a host function taking the address of every instance the runtime launches (`voxtral.gpu.ops.TEMPLATES`),
which makes nvcc instantiate them. nvcc writes one fatbin with SASS for each of TARGETS and PTX for the
last, compressed for size; the symbols come from the PTX `.entry` lines, demangled with c++filt and
matched to the name expressions. The manifest records each module's fingerprint (sha256 of its source and
options): the loader uses a binary only while the fingerprint still matches, so a stale one is never run.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voxtral.gpu import kernels, ops  # noqa: E402

TARGETS = ("80", "86", "89", "90")  # Ampere A100 / RTX 30, Ada, Hopper; PTX of 90 for Blackwell and later
ENTRY = re.compile(r"^\s*(?:\.(?:visible|weak|extern)\s+)*\.entry\s+([A-Za-z_$][\w$]*)", re.M)


def translation_unit(filename: str, names: tuple[str, ...]) -> str:
    text = kernels.source(filename)
    if names:
        refs = "".join(f"    out[{i}] = (void*)&{n};\n" for i, n in enumerate(names))
        text += f"\nvoid voxtral_instances(void** out) {{\n{refs}}}\n"
    return text


# Modules with a path for an arch-specific target (sm_90a: wgmma): their Hopper SASS is built for it, and
# the PTX (Blackwell and later) stays plain compute_90, whose code takes the portable path.
ARCH_SPECIFIC = {"skinny.cu": "90a"}


def gencode(filename: str = "") -> list[str]:
    codes = [f"-gencode=arch=compute_{t},code=sm_{t}" for t in TARGETS[:-1]]
    last = TARGETS[-1]
    special = ARCH_SPECIFIC.get(filename)
    if special:
        return [*codes, f"-gencode=arch=compute_{special},code=sm_{special}",
                f"-gencode=arch=compute_{last},code=compute_{last}"]  # fmt: skip
    return [*codes, f"-gencode=arch=compute_{last},code=[sm_{last},compute_{last}]"]


def expression(demangled: str) -> str:
    """'void gemv<0, true, …>(void const*, …)' → 'gemv<0,true,…>' (spaces dropped)."""
    head = demangled.split("(", 1)[0]
    return re.sub(r"^void\s+", "", head).replace(" ", "")


def symbols(ptx: str, names: tuple[str, ...]) -> dict[str, str]:
    """{name expression or C name: symbol} for every kernel of the module."""
    entries = ENTRY.findall(ptx)
    mangled = [e for e in entries if e.startswith("_Z")]
    out = {e: e for e in entries if not e.startswith("_Z")}  # extern "C"
    if mangled:
        demangled = subprocess.run(
            ["c++filt"], input="\n".join(mangled), capture_output=True, text=True, check=True
        ).stdout.splitlines()
        by_expr = {expression(d): m for d, m in zip(demangled, mangled, strict=True)}
        for n in names:
            symbol = by_expr.get(n.replace(" ", ""))
            if symbol is None:
                raise SystemExit(f"build_kernels: {n} was not instantiated (entries: {sorted(by_expr)})")
            out[n] = symbol
    return out


def build(filename: str, out_dir: Path, verbose: bool) -> dict:
    names = ops.TEMPLATES.get(filename, ())
    stem = Path(filename).stem
    with tempfile.TemporaryDirectory() as tmp:
        tu = Path(tmp) / filename
        tu.write_text(translation_unit(filename, names))
        common = ["nvcc", *kernels.NVRTC_OPTIONS, "--threads", "0"]
        fatbin = out_dir / f"{stem}.fatbin"
        run = [*common, "-fatbin", "--compress-mode=size", *gencode(filename), "-o", str(fatbin), str(tu)]
        ptx = Path(tmp) / f"{stem}.ptx"
        listing = [*common, "-ptx", f"-arch=compute_{TARGETS[-1]}", "-o", str(ptx), str(tu)]
        for cmd in (run, listing):
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"build_kernels: {' '.join(cmd)}\n{done.stderr}")
        if verbose:
            arch = ARCH_SPECIFIC.get(filename, TARGETS[-1])
            check = [*common, f"-arch=sm_{arch}", "-Xptxas", "-v", "-c", "-o", "/dev/null", str(tu)]
            print(subprocess.run(check, capture_output=True, text=True).stderr, end="")
        return {
            "fingerprint": kernels.fingerprint(filename),
            "fatbin": fatbin.name,
            "kernels": symbols(ptx.read_text(), names),
        }


def nvcc_version() -> str:
    out = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--all", action="store_true", help="rebuild every module")
    parser.add_argument("--check", action="store_true", help="only report stale or missing binaries")
    parser.add_argument("--verbose", action="store_true", help="print ptxas resource usage")
    args = parser.parse_args()
    out_dir = kernels.cuda_dir() / "bin"
    manifest = kernels.manifest() or {"modules": {}}
    modules = manifest.setdefault("modules", {})
    files = kernels.kernel_files()

    problems = kernels.stale(ops.TEMPLATES)
    if args.check:
        print("\n".join(f"stale: cuda/bin: {p}" for p in problems) or "cuda/bin is up to date")
        return 1 if problems else 0
    todo = files if args.all or args.verbose else sorted({p.split(":")[0] for p in problems} & set(files))
    out_dir.mkdir(exist_ok=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        built = dict(zip(todo, pool.map(lambda f: build(f, out_dir, args.verbose), todo), strict=True))
    for f in sorted(set(modules) - set(files)):
        (out_dir / modules.pop(f)["fatbin"]).unlink(missing_ok=True)
    modules.update(built)
    manifest.update(
        nvcc=nvcc_version(), targets=[f"sm_{t}" for t in TARGETS], ptx=f"compute_{TARGETS[-1]}",
        options=list(kernels.NVRTC_OPTIONS),
    )  # fmt: skip
    manifest["modules"] = dict(sorted(modules.items()))
    (out_dir / kernels.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"built {len(built)} of {len(files)} modules into {out_dir}: {', '.join(built) or 'none changed'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
