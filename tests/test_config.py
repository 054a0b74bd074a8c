import copy

import pytest

from voxtral.checkpoint import expected_tensors
from voxtral.config import ModelConfig
from voxtral.errors import ConfigError
from voxtral.testing import params


def test_official_config_parses_to_official_numbers():
    cfg = ModelConfig.from_dict(params("full"))
    assert (cfg.encoder.dim, cfg.encoder.n_layers, cfg.encoder.sliding_window) == (1280, 32, 750)
    assert (cfg.decoder.dim, cfg.decoder.n_layers, cfg.decoder.group, cfg.decoder.vocab_size) == (
        3072,
        26,
        4,
        131072,
    )
    assert cfg.adapter_in == 5120
    assert cfg.audio.samples_per_token == 1280 and cfg.audio.frames_per_token == 8


def test_official_tensor_list_has_711_bf16_tensors_of_4_4_billion_values():
    shapes = expected_tensors(ModelConfig.from_dict(params("full")))
    assert len(shapes) == 711  # SPEC §1
    total = sum(int(__import__("numpy").prod(s)) for s in shapes.values())
    assert abs(2 * total - 8.86e9) < 0.01e9  # 8.86 GB of BF16


@pytest.mark.parametrize(
    "path, key",
    [
        ((), "dim"),
        (("multimodal", "whisper_model_args", "encoder_args"), "n_heads"),
        (("multimodal", "whisper_model_args", "encoder_args", "audio_encoding_args"), "hop_length"),
        (("multimodal", "whisper_model_args", "downsample_args"), "downsample_factor"),
    ],
)
def test_missing_key_is_named(path, key):
    raw = copy.deepcopy(params("tiny"))
    node = raw
    for p in path:
        node = node[p]
    del node[key]
    with pytest.raises(ConfigError, match=key):
        ModelConfig.from_dict(raw)


def test_wrong_type_is_named():
    raw = params("tiny")
    raw["n_heads"] = "four"
    with pytest.raises(ConfigError, match="n_heads"):
        ModelConfig.from_dict(raw)


def test_unknown_keys_are_ignored():
    raw = params("tiny")
    raw["something_new"] = {"x": 1}
    assert ModelConfig.from_dict(raw).decoder.dim == 64
