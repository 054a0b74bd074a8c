"""Random checkpoints in the exact official format (SPEC §1): params.json, tekken.json and a BF16
consolidated.safetensors with the official tensor names, for a `tiny` config (tests) and the
`full` official config (benchmarks).

The safetensors file is written tensor by tensor (the `safetensors` package needs every tensor in
memory at once, 8.9 GB at full size), random numbers are drawn by several threads, and peak memory
stays at a few hundred MB whatever the size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..checkpoint import ADAPTER, PARAMS_FILE, TOKENIZER_FILE, WEIGHTS_FILE, expected_tensors
from ..config import ModelConfig
from .tekken import make_tekken

SIZES = ("tiny", "small", "full")
CHUNK_VALUES = 1 << 22  # values drawn per thread task: 16 MB of float32
EOS_ID = 2
PAD_ID, WORD_ID = 32, 33  # [STREAMING_PAD], [STREAMING_WORD]
N_SPECIAL = 1000  # control ids below this are never text


def _audio_args() -> dict:
    return {
        "sampling_rate": 16000,
        "frame_rate": 12.5,
        "num_mel_bins": 128,
        "hop_length": 160,
        "window_size": 400,
        "global_log_mel_max": 1.5,
        "transcription_format": "streaming",
    }


def _encoder_args(dim, n_layers, head_dim, hidden_dim, n_heads, window) -> dict:
    return {
        "audio_encoding_args": _audio_args(),
        "dim": dim,
        "n_layers": n_layers,
        "head_dim": head_dim,
        "hidden_dim": hidden_dim,
        "n_heads": n_heads,
        "n_kv_heads": n_heads,
        "use_biases": True,
        "rope_theta": 1000000.0,
        "causal": True,
        "norm_eps": 1e-05,
        "sliding_window": window,
        "pos_embed": "rope",
        "ffn_type": "swiglu",
        "norm_type": "rms_norm",
    }


def params(size: str) -> dict:
    """params.json content, nested exactly like the official file."""
    if size == "full":
        dec = dict(dim=3072, n_layers=26, head_dim=128, hidden_dim=9216, n_heads=32, n_kv_heads=8)
        dec |= dict(vocab_size=131072, sliding_window=8192, ada_dim=32)
        enc = _encoder_args(1280, 32, 64, 5120, 32, 750)
    elif size == "tiny":
        # Every structural feature kept (GQA 4/2, encoder biases, ada-norm, head dim 64 like the
        # encoder's so the GPU kernels run it); windows (24 encoder, 40 decoder positions) far
        # shorter than a few seconds of audio, so the window logic runs.
        dec = dict(dim=64, n_layers=2, head_dim=64, hidden_dim=160, n_heads=4, n_kv_heads=2)
        dec |= dict(vocab_size=1000 + 512, sliding_window=40, ada_dim=8)
        enc = _encoder_args(64, 2, 64, 128, 2, 24)
    elif size == "small":
        # tiny's encoder; a decoder with the real head dim and GQA group (128, 4) and every K a multiple
        # of 64, so the persistent decoder step (cuda/layers.cu) takes it; a window of 160 positions,
        # longer than one 128-key attention split and shorter than a 15 s clip, so the rings wrap.
        dec = dict(dim=256, n_layers=2, head_dim=128, hidden_dim=512, n_heads=8, n_kv_heads=2)
        dec |= dict(vocab_size=1000 + 512, sliding_window=160, ada_dim=8)
        enc = _encoder_args(64, 2, 64, 128, 2, 24)
    else:
        raise ValueError(f"size must be one of {SIZES}")
    return {
        "dim": dec["dim"],
        "n_layers": dec["n_layers"],
        "head_dim": dec["head_dim"],
        "hidden_dim": dec["hidden_dim"],
        "n_heads": dec["n_heads"],
        "n_kv_heads": dec["n_kv_heads"],
        "use_biases": False,
        "causal": True,
        "rope_theta": 1000000.0,
        "norm_eps": 1e-05,
        "vocab_size": dec["vocab_size"],
        "model_parallel": 1,
        "tied_embeddings": True,
        "sliding_window": dec["sliding_window"],
        "model_max_length": 131072,
        "multimodal": {
            "whisper_model_args": {"encoder_args": enc, "downsample_args": {"downsample_factor": 4}},
        },
        "ada_rms_norm_t_cond": True,
        "ada_rms_norm_t_cond_dim": dec["ada_dim"],
    }


def _scale(name: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """(mean, std) of a tensor's entries: keeps activations O(1) through every layer.

    tok_embeddings gets std 0.5/√D: the input token's own logit (|E[t]|² through the tied
    output) then stays below the audio's influence, so a random model follows its audio
    instead of repeating its input token.
    """
    if name.endswith("norm.weight"):
        return 1.0, 0.1
    if name.endswith(".bias"):
        return 0.0, 0.05
    if "ada_rms_norm_t_cond.2" in name:
        return 0.0, 0.2 / np.sqrt(shape[1])  # (1 + ada) stays near 1
    fan_in = int(np.prod(shape[1:]))
    if name.endswith("tok_embeddings.weight"):
        return 0.0, 0.5 / np.sqrt(fan_in)
    return 0.0, 1.0 / np.sqrt(fan_in)


def _embedding_row_scale(vocab: int, eos_reachable: bool) -> np.ndarray:
    """[V] factor per tok_embeddings row: control ids the model never emits are damped so text,
    [STREAMING_PAD] and [STREAMING_WORD] win; EOS is zeroed when it must be unreachable
    (its logit is then ≡ 0 against 131 071 random ones: never the argmax in practice)."""
    scale = np.ones(vocab, np.float32)
    scale[3:N_SPECIAL] = 0.25
    scale[[PAD_ID, WORD_ID]] = 1.0
    scale[EOS_ID] = 1.0 if eos_reachable else 0.0
    return scale


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 → BF16 bit patterns (round to nearest even)."""
    u = x.view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def _fill(seed_seq: np.random.SeedSequence, n: int, mean: float, std: float, scale=None) -> np.ndarray:
    """n random values as BF16 bits; scale [n] multiplies them elementwise (row scales)."""
    rng = np.random.default_rng(seed_seq)
    x = rng.random(n, dtype=np.float32)  # uniform [0, 1): 3× cheaper than normal; same mean/std below
    x -= 0.5
    x *= np.float32(std * np.sqrt(12.0))
    x += np.float32(mean)
    if scale is not None:
        x *= scale
    return _bf16_bits(x)


def _write_tensor(f, pool, seed_seq, name: str, shape: tuple[int, ...], row_scale) -> None:
    n = int(np.prod(shape))
    mean, std = _scale(name, shape)
    row = n // shape[0]
    chunks = [(i, min(CHUNK_VALUES, n - i)) for i in range(0, n, CHUNK_VALUES)]

    def task(args):
        seed, (start, count) = args
        rows = (
            None
            if row_scale is None
            else np.repeat(row_scale[start // row : -(-(start + count) // row)], row)
        )
        scale = None if rows is None else rows[start % row : start % row + count]
        return _fill(seed, count, mean, std, scale)

    for bits in pool.map(task, zip(seed_seq.spawn(len(chunks)), chunks, strict=True)):
        f.write(bits.tobytes())


def write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], seed: int, row_scales: dict) -> None:
    """Stream a BF16 safetensors file: header, then each tensor's random data in header order.

    row_scales: tensor name → [rows] factor applied to that tensor's rows.
    """
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    root = np.random.SeedSequence(seed)
    with _replacing(path) as tmp:
        with open(tmp, "wb") as f, ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            f.write(len(text).to_bytes(8, "little"))
            f.write(text)
            for (name, shape), seed_seq in zip(shapes.items(), root.spawn(len(shapes)), strict=True):
                _write_tensor(f, pool, seed_seq, name, shape, row_scales.get(name))


def write_checkpoint(
    directory: Path | str, size: str = "tiny", seed: int = 0, eos_reachable: bool = True
) -> Path:
    """Write a random checkpoint directory in the official format; returns the directory.

    Each file is written under a temporary name and renamed into place, weights first and params.json
    last, so an interrupted run never leaves a directory that looks complete. ValueError if seed < 0.
    """
    if seed < 0:
        raise ValueError(f"seed must be ≥ 0, got {seed}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    raw = params(size)
    cfg = ModelConfig.from_dict(raw)
    scales = {ADAPTER + "tok_embeddings.weight": _embedding_row_scale(cfg.decoder.vocab_size, eos_reachable)}
    write_safetensors(directory / WEIGHTS_FILE, expected_tensors(cfg), seed, scales)
    tekken = make_tekken(cfg.decoder.vocab_size, n_special=N_SPECIAL, seed=seed)
    _write_text(directory / TOKENIZER_FILE, json.dumps(tekken))
    _write_text(directory / PARAMS_FILE, json.dumps(raw, indent=2))
    return directory


def _write_text(path: Path, text: str) -> None:
    with _replacing(path) as tmp:
        tmp.write_text(text)


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary name beside path to write; renamed to path when the block ends, removed when it
    raises (Ctrl-C, SIGTERM, a full disk: a full-size checkpoint's 8.9 GB never stay half-written)."""
    tmp = path.with_suffix(".partial")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
