"""Human-readable description of a checkpoint: configuration, parameter counts, file sizes.

Parameter counts come from the tensor shapes the configuration implies (checkpoint.expected_tensors),
so `voxtral info` needs params.json and tekken.json only, not the weights.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from .checkpoint import Description, expected_tensors
from .config import ModelConfig


def parameter_counts(cfg: ModelConfig) -> dict[str, int]:
    """Parameters per stage (encoder incl. conv stem, adapter, decoder incl. embeddings)."""
    counts = {"encoder": 0, "adapter": 0, "decoder": 0}
    for name, shape in expected_tensors(cfg).items():
        stage = (
            "adapter"
            if "audio_language_projection" in name
            else "encoder"
            if "whisper" in name
            else "decoder"
        )
        counts[stage] += int(np.prod(shape))
    counts["total"] = sum(counts.values())
    return counts


def describe(ckpt: Description) -> str:
    cfg = ckpt.config
    lines = [f"model directory: {ckpt.directory}"]
    for part in ("encoder", "decoder", "audio"):
        values = ", ".join(f"{k} {v}" for k, v in asdict(getattr(cfg, part)).items())
        lines.append(f"{part}: {values}")
    tok = ckpt.tokenizer
    lines.append(
        f"tokenizer: vocab {tok.vocab_size}, {tok.n_special} special, "
        f"delay {tok.default_delay_ms} ms default, {tok.n_left_pad_tokens} left pad tokens"
    )
    counts = parameter_counts(cfg)
    lines.append("parameters: " + ", ".join(f"{k} {v / 1e6:,.1f} M" for k, v in counts.items()))
    lines.append("files: " + ", ".join(f"{k} {v / 1e6:,.1f} MB" for k, v in ckpt.file_sizes().items()))
    return "\n".join(lines)
