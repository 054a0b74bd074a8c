"""The prebuilt kernels in cuda/bin match the sources (no GPU or nvcc needed): a kernel edited without
`python dev/build_kernels.py` would load through NVRTC at run time, silently slow on first use."""

from __future__ import annotations

import json

from voxtral.gpu import kernels, ops


def test_cuda_bin_is_built_from_the_current_sources():
    assert kernels.stale(ops.TEMPLATES) == [], "run: python dev/build_kernels.py"


def test_the_manifest_names_every_kernel_the_runtime_launches():
    modules = kernels.manifest()["modules"]
    for filename, names in ops.TEMPLATES.items():
        assert set(names) <= set(modules[filename]["kernels"]), filename
    assert all(modules[f]["kernels"] for f in kernels.kernel_files())


def test_a_changed_source_is_not_loaded_from_its_binary(monkeypatch, tmp_path):
    src = kernels.cuda_dir()
    for p in [*src.glob("*.cu"), *src.glob("*.cuh")]:
        (tmp_path / p.name).write_text(p.read_text())
    (tmp_path / "bin").mkdir()
    manifest = json.loads((src / "bin" / kernels.MANIFEST).read_text())
    (tmp_path / "bin" / kernels.MANIFEST).write_text(json.dumps(manifest))
    monkeypatch.setattr(kernels, "cuda_dir", lambda: tmp_path)
    kernels.manifest.cache_clear()
    try:
        for fatbin in (m["fatbin"] for m in manifest["modules"].values()):
            (tmp_path / "bin" / fatbin).write_bytes(b"")
        assert kernels.stale(ops.TEMPLATES) == []
        rms = tmp_path / "rms_norm.cu"
        rms.write_text(rms.read_text() + "\n// edited\n")
        assert kernels.stale(ops.TEMPLATES) == ["rms_norm.cu: source changed since the build"]
        (tmp_path / "common.cuh").write_text((tmp_path / "common.cuh").read_text() + "\n")
        assert len(kernels.stale(ops.TEMPLATES)) == len(kernels.kernel_files())  # every module includes it
    finally:
        kernels.manifest.cache_clear()
