"""Human-readable description of a checkpoint: configuration, parameter counts, file sizes."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from .checkpoint import Checkpoint


def parameter_counts(ckpt: Checkpoint) -> dict[str, int]:
    """Parameters per stage (encoder incl. conv stem, adapter, decoder incl. embeddings)."""
    counts = {"encoder": 0, "adapter": 0, "decoder": 0}
    for name, arr in ckpt.weights.tensors():
        stage = (
            "adapter"
            if "audio_language_projection" in name
            else "encoder"
            if "whisper" in name
            else "decoder"
        )
        counts[stage] += int(np.prod(arr.shape))
    counts["total"] = sum(counts.values())
    return counts


def describe(ckpt: Checkpoint) -> str:
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
    counts = parameter_counts(ckpt)
    lines.append("parameters: " + ", ".join(f"{k} {v / 1e6:,.1f} M" for k, v in counts.items()))
    lines.append("files: " + ", ".join(f"{k} {v / 1e6:,.1f} MB" for k, v in ckpt.file_sizes().items()))
    return "\n".join(lines)
