"""Damaged model directories (SPEC §1): every number of params.json and tekken.json the code uses is checked
for type and range before anything is allocated, a lying safetensors header is a CheckpointError, NaN/Inf
weights are named by tensor, and shapes the CUDA kernels cannot run are refused at load, by dimension.
Each kind: one `voxtral: error:` line naming the file and the field or tensor, exit 4."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from test_checkpoint import rewrite_header

from voxtral import checkpoint as checkpoint_module
from voxtral.checkpoint import WEIGHTS_FILE, load_checkpoint, non_finite_tensors, read_header
from voxtral.config import ModelConfig
from voxtral.errors import CheckpointError, ConfigError
from voxtral.testing import params

ENC = ("multimodal", "whisper_model_args", "encoder_args")
AUDIO = ENC + ("audio_encoding_args",)
DOWN = ("multimodal", "whisper_model_args", "downsample_args")


@pytest.fixture
def copy_dir(tiny_dir, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_dir, dst)
    return dst


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(24000)).astype(np.float32), 16000)
    return path


def voxtral(*args):
    r = subprocess.run([sys.executable, "-m", "voxtral", *map(str, args)], capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("voxtral: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def set_key(raw: dict, path: tuple, key: str, value) -> dict:
    node = raw
    for p in path:
        node = node[p]
    node[key] = value
    return raw


BAD_PARAMS = [
    (AUDIO, "hop_length", 0),
    (AUDIO, "hop_length", 100000),
    (AUDIO, "frame_rate", 0.0),
    (AUDIO, "window_size", -400),
    (AUDIO, "sampling_rate", -16000),
    (AUDIO, "sampling_rate", 0),
    (AUDIO, "num_mel_bins", 10**6),
    (AUDIO, "global_log_mel_max", float("nan")),
    (DOWN, "downsample_factor", 0),
    (ENC, "sliding_window", 10**9),
    (ENC, "dim", 10**7),
    (ENC, "n_layers", 0),
    (ENC, "rope_theta", float("inf")),
    ((), "rope_theta", 0.0),
    ((), "norm_eps", float("nan")),
    ((), "norm_eps", -1e-5),
    ((), "vocab_size", 10**9),
    ((), "hidden_dim", -1),
    ((), "n_kv_heads", 0),
]


def no_weights(*args):
    raise AssertionError("the weights were opened before the config was checked")


@pytest.mark.parametrize("path, key, value", BAD_PARAMS)
def test_a_params_number_out_of_range_is_named_before_any_weight_is_read(
    copy_dir, monkeypatch, path, key, value
):
    raw = set_key(json.loads((copy_dir / "params.json").read_text()), path, key, value)
    (copy_dir / "params.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=rf"params.json: '{'.'.join(path + (key,))}' must be"):
        ModelConfig.from_dict(raw)

    monkeypatch.setattr(checkpoint_module, "open_weights", no_weights)
    with pytest.raises(ConfigError, match=key):
        load_checkpoint(copy_dir)


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({(AUDIO, "sampling_rate"): 8000}, "4 mel frames per token"),
        ({(AUDIO, "hop_length"): 320}, "4 mel frames per token"),
        ({(AUDIO, "frame_rate"): 25.0}, "4 mel frames per token"),
        (
            {(ENC, "norm_type"): "layer_norm"},
            "'multimodal.whisper_model_args.encoder_args.norm_type' is 'layer_norm'",
        ),
        ({(ENC, "ffn_type"): "gelu"}, "implemented for 'swiglu' only"),
        ({(ENC, "pos_embed"): "sinusoidal"}, "pos_embed"),
        ({((), "causal"): False}, "'causal' is False"),
        ({((), "n_heads"): 5}, "'n_heads' must be a multiple of n_kv_heads"),
    ],
)
def test_numbers_that_do_not_fit_this_model_together_are_named(changes, needle):
    raw = params("tiny")
    for (path, key), value in changes.items():
        set_key(raw, path, key, value)
    with pytest.raises(ConfigError) as e:
        ModelConfig.from_dict(raw)
    assert needle in str(e.value)


@pytest.mark.parametrize("name", ["params.json", "tekken.json", WEIGHTS_FILE])
@pytest.mark.parametrize(
    "poison_json", ["[" * 100000 + "]" * 100000, "1" + "0" * 5000], ids=["deep-nesting", "5001-digit-int"]
)  # short ids: the test id goes into PYTEST_CURRENT_TEST, the environment of the voxtral subprocess
def test_json_that_python_cannot_parse_is_one_line(copy_dir, name, poison_json):
    """Nesting deeper than the recursion limit, an integer of more than 4300 digits."""
    if name == WEIGHTS_FILE:
        header, start = read_header(copy_dir / name)
        data = (copy_dir / name).read_bytes()[start:]
        text = poison_json.encode()
        (copy_dir / name).write_bytes(len(text).to_bytes(8, "little") + text + data)
    else:
        (copy_dir / name).write_text(poison_json)
    code, _, err = voxtral("info", "-m", copy_dir)
    assert code == 4 and name in one_error_line(err)


def test_a_bad_params_number_on_the_command_line(copy_dir, wav):
    raw = set_key(json.loads((copy_dir / "params.json").read_text()), AUDIO, "hop_length", 0)
    (copy_dir / "params.json").write_text(json.dumps(raw))
    code, out, err = voxtral("transcribe", wav, "-m", copy_dir, "-d", "cpu", "-q")
    assert code == 4 and out == ""
    line = one_error_line(err)
    assert f"{copy_dir / 'params.json'}: '{'.'.join(AUDIO)}.hop_length'" in line


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("streaming_n_left_pad_tokens", 10**7, "must be in 0 … 1024"),
        ("streaming_n_left_pad_tokens", -1, "must be in 0 … 1024"),
        ("transcription_delay_ms", 120, "multiple of 80"),
        ("transcription_delay_ms", 50, "must be in 80 … 2400"),
        ("transcription_delay_ms", 10**6, "must be in 80 … 2400"),
        ("transcription_delay_ms", "480", "whole number"),
        ("transcription_delay_ms", float("nan"), "whole number"),
        ("streaming_n_left_pad_tokens", float("inf"), "whole number"),
    ],
)
def test_a_tekken_number_out_of_range_is_named(copy_dir, monkeypatch, key, value, needle):
    raw = json.loads((copy_dir / "tekken.json").read_text())
    raw.setdefault("audio", {})[key] = value
    (copy_dir / "tekken.json").write_text(json.dumps(raw))
    monkeypatch.setattr(checkpoint_module, "open_weights", no_weights)
    with pytest.raises(ConfigError, match=f"audio.{key}"):
        load_checkpoint(copy_dir)
    code, out, err = voxtral("info", "-m", copy_dir)
    line = one_error_line(err)
    assert code == 4 and "tekken.json" in line and f"audio.{key}" in line and needle in line


T = "layers.0.attention.wq.weight"


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda h: h.__setitem__(T, "junk"), "str instead of an object"),
        (lambda h: h[T].__setitem__("data_offsets", ["0", "10"]), "'data_offsets'"),
        (lambda h: h[T].__setitem__("data_offsets", [0, 1, 2]), "'data_offsets'"),
        (lambda h: h[T].__setitem__("data_offsets", [10, 0]), "end before they begin"),
        (lambda h: h[T].__setitem__("shape", 5), "'shape' 5"),
        (lambda h: h[T].__setitem__("shape", [-1, 64]), "'shape'"),
        (lambda h: h[T].__setitem__("dtype", 7), "'dtype' 7"),
    ],
)
def test_a_safetensors_header_that_lies_is_a_checkpoint_error(copy_dir, edit, needle):
    rewrite_header(copy_dir / WEIGHTS_FILE, edit)
    with pytest.raises(CheckpointError, match=needle):
        load_checkpoint(copy_dir)
    code, _, err = voxtral("info", "-m", copy_dir)
    assert code == 4 and f"tensor '{T}' has a corrupt header entry" in one_error_line(err)


def poison(directory, name: str, value: bytes, count: int = 3) -> None:
    """Overwrite the first `count` BF16 values of one tensor in place."""
    path = directory / WEIGHTS_FILE
    header, start = read_header(path)
    begin = header[name]["data_offsets"][0]
    with open(path, "r+b") as f:
        f.seek(start + begin)
        f.write(value * count)


@pytest.mark.parametrize(
    "name, value",
    [
        ("layers.0.attention.wq.weight", b"\xc0\x7f"),  # NaN, decoder
        ("mm_streams_embeddings.embedding_module.tok_embeddings.weight", b"\x80\x7f"),  # +Inf, output head
        ("mm_streams_embeddings.embedding_module.whisper_encoder.transformer.layers.0.feed_forward.w1.weight",
         b"\x80\xff"),  # -Inf, encoder
    ],
)  # fmt: skip
def test_non_finite_weights_are_named_by_tensor(copy_dir, wav, name, value):
    poison(copy_dir, name, value)
    assert non_finite_tensors(copy_dir / WEIGHTS_FILE, load_checkpoint(copy_dir).config) == [name]
    code, out, err = voxtral("transcribe", wav, "-m", copy_dir, "-d", "cpu", "-q", "-f", "json")
    assert code == 4 and out == ""
    assert f"tensor '{name}' has NaN or Inf values" in one_error_line(err)
    assert len(err.strip().splitlines()) == 1  # no NumPy warnings before it


def test_finite_weights_scan_clean(tiny_dir):
    assert non_finite_tensors(tiny_dir / WEIGHTS_FILE, load_checkpoint(tiny_dir).config) == []


def supported(changes: dict) -> None:
    """check_supported on the official config with changes {(path, key): value}."""
    from voxtral.gpu.backend import check_supported

    raw = params("full")
    for (path, key), value in changes.items():
        set_key(raw, path, key, value)
    check_supported(ModelConfig.from_dict(raw), smem_block=227 * 1024)  # an H100/H200's opt-in maximum


def test_the_official_shapes_run_on_the_gpu_kernels():
    supported({})


@pytest.mark.parametrize(
    "changes, needle",
    [
        (
            {(ENC, "head_dim"): 96},
            "encoder head_dim 96 is not one the CUDA kernels are compiled for (64, 128)",
        ),
        ({((), "head_dim"): 256}, "decoder head_dim 256"),
        ({((), "n_heads"): 48, ((), "n_kv_heads"): 3}, "16 query heads per kv head"),
        ({((), "hidden_dim"): 16384}, "decoder hidden_dim = 16384 is too wide for the CUDA GEMV"),
        ({((), "dim"): 8192}, "decoder dim = 8192 is too wide"),
    ],
)
def test_shapes_the_gpu_kernels_cannot_run_are_named(changes, needle):
    with pytest.raises(ConfigError) as e:
        supported(changes)
    assert needle in str(e.value) and "--device cpu" in str(e.value)


def test_stream_with_damaged_weights_prints_no_summary(copy_dir, wav):
    """The error line, not a "0.6 s audio, 0 pieces" summary of a model that failed."""
    poison(copy_dir, "layers.0.attention.wq.weight", b"\xc0\x7f")
    r = subprocess.run(
        [sys.executable, "-m", "voxtral", "stream", "--stdin", "-m", str(copy_dir), "-d", "cpu"],
        input=wav.read_bytes(), capture_output=True, text=False,
    )  # fmt: skip
    err = r.stderr.decode()
    assert r.returncode == 4 and "has NaN or Inf values" in one_error_line(err)
    assert " s audio, " not in err
