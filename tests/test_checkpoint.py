"""Loading: the generator's files pass every check; each kind of damage is reported by name."""

import json
import shutil

import numpy as np
import pytest

from voxtral.checkpoint import ADAPTER, WEIGHTS_FILE, expected_tensors, load_checkpoint, read_header
from voxtral.errors import CheckpointError, ConfigError


@pytest.fixture
def copy_dir(tiny_dir, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_dir, dst)
    return dst


def rewrite_header(path, edit):
    """Apply edit(header) to a safetensors file's header, keeping the data."""
    header, start = read_header(path)
    data = path.read_bytes()[start:]
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


def test_generated_checkpoint_loads_with_every_tensor(tiny_dir):
    ckpt = load_checkpoint(tiny_dir)
    names = dict(ckpt.weights.tensors())
    assert set(names) == set(expected_tensors(ckpt.config))
    emb = ckpt.weights.tok_embeddings
    assert str(emb.dtype) == "bfloat16" and isinstance(emb.base, np.ndarray)  # a view of the memory map
    assert np.isfinite(np.asarray(emb, np.float32)).all()


def test_missing_file(copy_dir):
    (copy_dir / "tekken.json").unlink()
    with pytest.raises(CheckpointError, match="missing tekken.json"):
        load_checkpoint(copy_dir)


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")


def test_missing_tensor_is_named(copy_dir):
    name = "layers.1.feed_forward.w3.weight"
    rewrite_header(copy_dir / WEIGHTS_FILE, lambda h: h.pop(name))
    with pytest.raises(CheckpointError, match=f"missing tensor '{name}'"):
        load_checkpoint(copy_dir)


def test_wrong_shape_is_named(copy_dir):
    name = ADAPTER + "audio_language_projection.2.weight"

    def edit(h):
        h[name]["shape"] = h[name]["shape"][::-1] + [1]

    rewrite_header(copy_dir / WEIGHTS_FILE, edit)
    with pytest.raises(CheckpointError, match=f"tensor '{name}' has shape"):
        load_checkpoint(copy_dir)


def test_wrong_dtype_is_named(copy_dir):
    name = "norm.weight"

    def edit(h):
        h[name]["dtype"] = "F16"

    rewrite_header(copy_dir / WEIGHTS_FILE, edit)
    with pytest.raises(CheckpointError, match="dtype F16"):
        load_checkpoint(copy_dir)


def test_truncated_file_names_the_first_cut_tensor(copy_dir):
    path = copy_dir / WEIGHTS_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    header, start = read_header(path)
    cut = [n for n, e in header.items() if start + e["data_offsets"][1] > len(data) - 1000]
    with pytest.raises(CheckpointError, match="truncated") as e:
        load_checkpoint(copy_dir)
    assert any(f"'{n}'" in str(e.value) for n in cut)
    assert str(e.value).startswith(f"{path}: ")  # the whole path: which checkpoint, not just the file name


def test_garbage_weights_file(copy_dir):
    (copy_dir / WEIGHTS_FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        load_checkpoint(copy_dir)


def test_malformed_params_json(copy_dir):
    (copy_dir / "params.json").write_text("{ this is not json")
    with pytest.raises(ConfigError, match="params.json: not valid JSON"):
        load_checkpoint(copy_dir)


@pytest.mark.parametrize("name", ["params.json", "tekken.json", WEIGHTS_FILE])
def test_a_file_that_cannot_be_read_says_so(copy_dir, monkeypatch, name):
    """Not "not valid JSON": the file is fine, this process may not read it (as for a 0o000 file)."""
    import builtins
    from pathlib import Path

    real_open, real_read_text = builtins.open, Path.read_text

    def refuse(file):
        if str(file).endswith(name):
            raise PermissionError(13, "Permission denied", str(file))

    def guarded_open(file, *args, **kwargs):
        refuse(file)
        return real_open(file, *args, **kwargs)

    def guarded_read_text(self, *args, **kwargs):
        refuse(self)
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(Path, "read_text", guarded_read_text)
    with pytest.raises((ConfigError, CheckpointError), match="cannot read it \\(Permission denied\\)"):
        load_checkpoint(copy_dir)


def test_params_not_matching_tensors(copy_dir):
    raw = json.loads((copy_dir / "params.json").read_text())
    raw["hidden_dim"] = 192
    (copy_dir / "params.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="feed_forward.w1.weight' has shape"):
        load_checkpoint(copy_dir)


def test_tokenizer_vocab_mismatch(copy_dir):
    raw = json.loads((copy_dir / "tekken.json").read_text())
    raw["config"]["default_vocab_size"] = 1400
    (copy_dir / "tekken.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="vocab"):
        load_checkpoint(copy_dir)


def test_a_model_directory_this_process_may_not_read_is_a_checkpoint_error(tiny_dir, tmp_path, monkeypatch):
    import os
    from pathlib import Path

    from voxtral.checkpoint import resolve

    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == Path(tiny_dir) else real_access(p, mode)
    )
    with pytest.raises(CheckpointError, match="cannot read the model directory"):
        load_checkpoint(tiny_dir)
    real_exists = Path.exists

    def exists(self):
        if self == tmp_path / "locked" / "model":
            raise PermissionError(13, "Permission denied")
        return real_exists(self)

    monkeypatch.setattr(Path, "exists", exists)
    with pytest.raises(CheckpointError, match="cannot look at it"):
        resolve(tmp_path / "locked" / "model")


@pytest.mark.parametrize("stop", [KeyboardInterrupt, OSError])
def test_interrupted_generator_leaves_no_partial_file(tmp_path, monkeypatch, stop):
    """Ctrl-C or SIGTERM (raised as an exception by the CLI) or a full disk while the random checkpoint
    is written: its temporary file is removed, nothing half-written stays (it was 1.4 GB at full size)."""
    from voxtral.testing import checkpoint as generator

    written = []

    def write_tensor(f, *args):
        if written:
            raise stop("stopped")
        written.append(args[1])
        f.write(b"\0" * 64)

    monkeypatch.setattr(generator, "_write_tensor", write_tensor)
    with pytest.raises(stop):
        generator.write_checkpoint(tmp_path / "ck", size="tiny")
    assert written and sorted(p.name for p in (tmp_path / "ck").iterdir()) == []
