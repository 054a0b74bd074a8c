"""params.json (SPEC §1) → frozen EncoderConfig / DecoderConfig / AudioConfig / ModelConfig.

Every dimension the code uses comes from here. Unknown keys are ignored; a missing or
mistyped required key raises ConfigError naming the key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

FRAME_MS = 80  # one decoder (text) position per 80 ms of audio
MAX_DELAY_MS = 2400  # our cap on the transcription delay (SPEC §6)
MAX_CAPACITY = 4096  # the most slots one engine may have (a batch size, a server's sessions, a bench size)
MAX_STEPS = 100_000  # the most timed decode steps a bench may ask for
MAX_POSITION = 65_536  # the furthest decode position a bench profiles (its audio: 5 KB a position)
ENCODER_PATH = ("multimodal", "whisper_model_args", "encoder_args")
AUDIO_PATH = ENCODER_PATH + ("audio_encoding_args",)
DOWNSAMPLE_PATH = ("multimodal", "whisper_model_args", "downsample_args")


def _section(raw: dict, path: tuple[str, ...]) -> dict:
    node: Any = raw
    for i, key in enumerate(path):
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(f"params.json: missing key '{'.'.join(path[: i + 1])}'")
        node = node[key]
    if not isinstance(node, dict):
        raise ConfigError(f"params.json: '{'.'.join(path)}' must be an object")
    return node


def _get(
    section: dict, path: tuple[str, ...], key: str, kind: type, default: Any = None, *, lo=None, hi=None
):
    """section[key] as kind (an int may stand for a float); lo ≤ value ≤ hi when given, floats finite.
    ConfigError naming the key for a missing, mistyped or out-of-range value."""
    name = ".".join(path + (key,))
    if key not in section:
        if default is not None:
            return default
        raise ConfigError(f"params.json: missing key '{name}'")
    value = section[key]
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"params.json: '{name}' must be {kind.__name__}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"params.json: '{name}' must be a finite number, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        show = lambda v: f"{v:g}" if isinstance(v, float) else str(v)  # noqa: E731
        raise ConfigError(f"params.json: '{name}' must be in {show(lo)} … {show(hi)}, got {value!r}")
    return value


# What the code supports (far beyond the official model, well short of absurd allocations).
MAX_DIM = 1 << 16  # widths, hidden sizes
MAX_LAYERS = 1 << 10
MAX_HEADS = 1 << 10
MAX_WINDOW = 1 << 20  # attention positions
MAX_VOCAB = 1 << 22
STRUCTURE = {"causal": True, "pos_embed": "rope", "ffn_type": "swiglu", "norm_type": "rms_norm"}


@dataclass(frozen=True)
class TransformerConfig:
    """Shared shape of the encoder and decoder stacks."""

    dim: int
    n_layers: int
    head_dim: int
    hidden_dim: int
    n_heads: int
    n_kv_heads: int
    rope_theta: float
    norm_eps: float
    sliding_window: int
    use_biases: bool

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def group(self) -> int:
        """Query heads per kv head (GQA)."""
        return self.n_heads // self.n_kv_heads

    @classmethod
    def parse(cls, section: dict, path: tuple[str, ...]) -> dict:
        g = lambda key, kind, hi=None, lo=1: _get(section, path, key, kind, lo=lo, hi=hi)  # noqa: E731
        fields = dict(
            dim=g("dim", int, MAX_DIM),
            n_layers=g("n_layers", int, MAX_LAYERS),
            head_dim=g("head_dim", int, MAX_DIM),
            hidden_dim=g("hidden_dim", int, 4 * MAX_DIM),
            n_heads=g("n_heads", int, MAX_HEADS),
            n_kv_heads=g("n_kv_heads", int, MAX_HEADS),
            rope_theta=g("rope_theta", float, 1e12, 1.0),
            norm_eps=g("norm_eps", float, 0.1, 1e-30),
            sliding_window=g("sliding_window", int, MAX_WINDOW),
            use_biases=_get(section, path, "use_biases", bool),
        )
        if fields["n_heads"] % fields["n_kv_heads"]:
            raise ConfigError(
                f"params.json: '{'.'.join(path + ('n_heads',))}' must be a multiple of n_kv_heads"
            )
        for key, supported in STRUCTURE.items():  # what this implementation computes, when the file says
            if key in section and section[key] != supported:
                raise ConfigError(
                    f"params.json: '{'.'.join(path + (key,))}' is {section[key]!r}; this model is "
                    f"implemented for {supported!r} only"
                )
        if fields["head_dim"] % 2:
            raise ConfigError(f"params.json: '{'.'.join(path + ('head_dim',))}' must be even (RoPE pairs)")
        return fields


@dataclass(frozen=True)
class EncoderConfig(TransformerConfig):
    """The causal audio encoder (32 layers, width 1280 officially)."""


@dataclass(frozen=True)
class DecoderConfig(TransformerConfig):
    """The text decoder (26 layers, width 3072 officially)."""

    vocab_size: int = 0
    ada_t_cond_dim: int = 0  # 0 = no ada-RMSNorm time conditioning
    tied_embeddings: bool = True


@dataclass(frozen=True)
class AudioConfig:
    """Front-end numbers (SPEC §2)."""

    sampling_rate: int
    frame_rate: float
    num_mel_bins: int
    hop_length: int
    window_size: int
    global_log_mel_max: float
    downsample_factor: int

    @property
    def samples_per_token(self) -> int:
        """Audio samples per decoder position: 16000 / 12.5 = 1280."""
        return round(self.sampling_rate / self.frame_rate)

    @property
    def frames_per_token(self) -> int:
        """Mel frames per decoder position: 1280 / 160 = 8."""
        return self.samples_per_token // self.hop_length


@dataclass(frozen=True)
class ModelConfig:
    encoder: EncoderConfig
    decoder: DecoderConfig
    audio: AudioConfig

    @property
    def adapter_in(self) -> int:
        """Adapter input width: 4 encoder positions concatenated (4 × 1280 = 5120)."""
        return self.encoder.dim * self.audio.downsample_factor

    @classmethod
    def from_dict(cls, raw: Any) -> ModelConfig:
        if not isinstance(raw, dict):
            raise ConfigError("params.json: the top level must be a JSON object")
        enc_section = _section(raw, ENCODER_PATH)
        enc = EncoderConfig(**TransformerConfig.parse(enc_section, ENCODER_PATH))
        dec_fields = TransformerConfig.parse(raw, ())
        vocab = _get(raw, (), "vocab_size", int, lo=1, hi=MAX_VOCAB)
        ada = _get(raw, (), "ada_rms_norm_t_cond", bool, False)
        ada_dim = _get(raw, (), "ada_rms_norm_t_cond_dim", int, lo=1, hi=MAX_DIM) if ada else 0
        tied = _get(raw, (), "tied_embeddings", bool, True)
        if not tied:
            raise ConfigError("params.json: 'tied_embeddings' false is not supported by this model")
        dec = DecoderConfig(**dec_fields, vocab_size=vocab, ada_t_cond_dim=ada_dim, tied_embeddings=tied)
        a = _section(raw, AUDIO_PATH)
        rate = _get(a, AUDIO_PATH, "sampling_rate", int, lo=1000, hi=384000)
        window = _get(a, AUDIO_PATH, "window_size", int, lo=2, hi=MAX_DIM)
        down = _section(raw, DOWNSAMPLE_PATH)
        audio = AudioConfig(
            sampling_rate=rate,
            frame_rate=_get(a, AUDIO_PATH, "frame_rate", float, lo=0.1, hi=rate),
            num_mel_bins=_get(a, AUDIO_PATH, "num_mel_bins", int, lo=1, hi=window // 2 + 1),
            hop_length=_get(a, AUDIO_PATH, "hop_length", int, lo=1, hi=window),
            window_size=window,
            global_log_mel_max=_get(a, AUDIO_PATH, "global_log_mel_max", float, lo=-1e6, hi=1e6),
            downsample_factor=_get(down, DOWNSAMPLE_PATH, "downsample_factor", int, lo=1, hi=64),
        )
        spt = audio.sampling_rate / audio.frame_rate
        if not math.isclose(spt, round(spt)) or round(spt) % audio.hop_length:
            raise ConfigError("params.json: sampling_rate / frame_rate must be a whole number of hops")
        conv_stride = 2  # the conv stem halves the mel frames (SPEC §3.1)
        if audio.frames_per_token != conv_stride * audio.downsample_factor:
            raise ConfigError(
                f"params.json: sampling_rate / frame_rate / hop_length = {audio.frames_per_token} mel frames "
                f"per token, but the encoder turns {conv_stride} × downsample_factor = "
                f"{conv_stride * audio.downsample_factor} into one; the audio numbers do not fit this model"
            )
        return cls(encoder=enc, decoder=dec, audio=audio)

    @classmethod
    def from_file(cls, path: Path) -> ModelConfig:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: file not found") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read it ({e.strerror}); check its permissions") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        except (RecursionError, ValueError) as e:  # nesting too deep, an integer of > 4300 digits
            raise ConfigError(f"{path}: not valid JSON ({type(e).__name__}: {e})") from None
        try:
            return cls.from_dict(raw)
        except ConfigError as e:  # name the file itself, not just "params.json"
            raise ConfigError(str(e).replace("params.json:", f"{path}:", 1)) from None
