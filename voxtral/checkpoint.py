"""Checkpoint directory (SPEC §1): local dir or Hub id → config, tokenizer, memory-mapped BF16 weights.

Every tensor's name, dtype and shape is checked against the config before anything runs, and
the weights stay memory-mapped: the CPU path widens them block by block where they are used,
the GPU path streams them to the device tensor by tensor.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .config import ModelConfig
from .errors import CheckpointError
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

DEFAULT_MODEL = "mistralai/Voxtral-Mini-4B-Realtime-2602"
WEIGHTS_FILE = "consolidated.safetensors"
PARAMS_FILE = "params.json"
TOKENIZER_FILE = "tekken.json"
CHECKPOINT_FILES = (WEIGHTS_FILE, PARAMS_FILE, TOKENIZER_FILE)
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit on the JSON header

ADAPTER = "mm_streams_embeddings.embedding_module."
ENCODER = ADAPTER + "whisper_encoder."


@dataclass(frozen=True)
class LayerWeights:
    """One transformer layer, fields named after the checkpoint's own suffixes."""

    attention_norm: np.ndarray  # [D]
    wq: np.ndarray  # [H·Dh, D]
    wk: np.ndarray  # [Hkv·Dh, D]
    wv: np.ndarray  # [Hkv·Dh, D]
    wo: np.ndarray  # [D, H·Dh]
    ffn_norm: np.ndarray  # [D]
    w1: np.ndarray  # [F, D]  gate
    w2: np.ndarray  # [D, F]
    w3: np.ndarray  # [F, D]  up
    wq_bias: np.ndarray | None = None  # encoder only
    wv_bias: np.ndarray | None = None
    wo_bias: np.ndarray | None = None
    w2_bias: np.ndarray | None = None
    ada_down: np.ndarray | None = None  # decoder only: ada_rms_norm_t_cond.0 [C, D]
    ada_up: np.ndarray | None = None  # ada_rms_norm_t_cond.2 [D, C]


# field → checkpoint suffix (the one place where names are translated)
LAYER_SUFFIX = {
    "attention_norm": "attention_norm.weight",
    "wq": "attention.wq.weight",
    "wk": "attention.wk.weight",
    "wv": "attention.wv.weight",
    "wo": "attention.wo.weight",
    "ffn_norm": "ffn_norm.weight",
    "w1": "feed_forward.w1.weight",
    "w2": "feed_forward.w2.weight",
    "w3": "feed_forward.w3.weight",
    "wq_bias": "attention.wq.bias",
    "wv_bias": "attention.wv.bias",
    "wo_bias": "attention.wo.bias",
    "w2_bias": "feed_forward.w2.bias",
    "ada_down": "ada_rms_norm_t_cond.0.weight",
    "ada_up": "ada_rms_norm_t_cond.2.weight",
}


@dataclass(frozen=True)
class Weights:
    conv0_weight: np.ndarray  # [E, M, 3]
    conv0_bias: np.ndarray  # [E]
    conv1_weight: np.ndarray  # [E, E, 3]
    conv1_bias: np.ndarray  # [E]
    encoder_layers: tuple[LayerWeights, ...]
    encoder_norm: np.ndarray  # [E]
    adapter_w0: np.ndarray  # audio_language_projection.0 [D, 4E]
    adapter_w2: np.ndarray  # audio_language_projection.2 [D, D]
    tok_embeddings: np.ndarray  # [V, D], also the output projection
    decoder_layers: tuple[LayerWeights, ...]
    norm: np.ndarray  # [D]

    def tensors(self):
        """(name, array) for every tensor, in checkpoint naming, for streaming uploads."""
        yield from _flat(self)


def _layer_shapes(cfg, biases: bool, ada_dim: int) -> dict[str, tuple[int, ...]]:
    d, f = cfg.dim, cfg.hidden_dim
    shapes = {
        "attention_norm": (d,),
        "wq": (cfg.q_dim, d),
        "wk": (cfg.kv_dim, d),
        "wv": (cfg.kv_dim, d),
        "wo": (d, cfg.q_dim),
        "ffn_norm": (d,),
        "w1": (f, d),
        "w2": (d, f),
        "w3": (f, d),
    }
    if biases:
        shapes |= {"wq_bias": (cfg.q_dim,), "wv_bias": (cfg.kv_dim,), "wo_bias": (d,), "w2_bias": (d,)}
    if ada_dim:
        shapes |= {"ada_down": (ada_dim, d), "ada_up": (d, ada_dim)}
    return shapes


def expected_tensors(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name of the official checkpoint with its shape, derived from the config."""
    enc, dec, audio = cfg.encoder, cfg.decoder, cfg.audio
    names = {
        ENCODER + "conv_layers.0.conv.weight": (enc.dim, audio.num_mel_bins, 3),
        ENCODER + "conv_layers.0.conv.bias": (enc.dim,),
        ENCODER + "conv_layers.1.conv.weight": (enc.dim, enc.dim, 3),
        ENCODER + "conv_layers.1.conv.bias": (enc.dim,),
    }
    for i in range(enc.n_layers):
        for field, shape in _layer_shapes(enc, enc.use_biases, 0).items():
            names[f"{ENCODER}transformer.layers.{i}.{LAYER_SUFFIX[field]}"] = shape
    names[ENCODER + "transformer.norm.weight"] = (enc.dim,)
    names[ADAPTER + "audio_language_projection.0.weight"] = (dec.dim, cfg.adapter_in)
    names[ADAPTER + "audio_language_projection.2.weight"] = (dec.dim, dec.dim)
    names[ADAPTER + "tok_embeddings.weight"] = (dec.vocab_size, dec.dim)
    for i in range(dec.n_layers):
        for field, shape in _layer_shapes(dec, dec.use_biases, dec.ada_t_cond_dim).items():
            names[f"layers.{i}.{LAYER_SUFFIX[field]}"] = shape
    names["norm.weight"] = (dec.dim,)
    return names


def _flat(w: Weights):
    yield ENCODER + "conv_layers.0.conv.weight", w.conv0_weight
    yield ENCODER + "conv_layers.0.conv.bias", w.conv0_bias
    yield ENCODER + "conv_layers.1.conv.weight", w.conv1_weight
    yield ENCODER + "conv_layers.1.conv.bias", w.conv1_bias
    for prefix, layers in (
        (ENCODER + "transformer.layers.", w.encoder_layers),
        ("layers.", w.decoder_layers),
    ):
        for i, layer in enumerate(layers):
            for f in fields(layer):
                arr = getattr(layer, f.name)
                if arr is not None:
                    yield f"{prefix}{i}.{LAYER_SUFFIX[f.name]}", arr
    yield ENCODER + "transformer.norm.weight", w.encoder_norm
    yield ADAPTER + "audio_language_projection.0.weight", w.adapter_w0
    yield ADAPTER + "audio_language_projection.2.weight", w.adapter_w2
    yield ADAPTER + "tok_embeddings.weight", w.tok_embeddings
    yield "norm.weight", w.norm


def read_header(path: Path) -> tuple[dict, int]:
    """The safetensors JSON header and the byte offset where tensor data starts."""
    try:
        size = path.stat().st_size
        f = open(path, "rb")
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read it ({e.strerror}); check its permissions") from None
    with f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes)")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise CheckpointError(f"{path}: not a safetensors file or truncated header")
        try:
            header = json.loads(f.read(n))
        except (
            UnicodeDecodeError,
            json.JSONDecodeError,
            RecursionError,
            ValueError,
        ):  # ValueError: huge ints
            raise CheckpointError(f"{path}: corrupt safetensors header; download it again") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header")
    header.pop("__metadata__", None)
    return header, 8 + n


def _entry(path: Path, name: str, entry) -> tuple[str, tuple, int, int]:
    """A header entry's (dtype, shape, begin, end), checked for type: CheckpointError when it lies."""
    if entry is None:
        raise CheckpointError(f"{path}: missing tensor '{name}' — the checkpoint is incomplete")
    bad = f"{path}: tensor '{name}' has a corrupt header entry"
    if not isinstance(entry, dict):
        raise CheckpointError(f"{bad} ({type(entry).__name__} instead of an object); download it again")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # noqa: E731
    if not isinstance(dtype, str):
        raise CheckpointError(f"{bad} ('dtype' {dtype!r}); download it again")
    if not isinstance(shape, list) or not all(whole(n) for n in shape):
        raise CheckpointError(f"{bad} ('shape' {shape!r}); download it again")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(whole(n) for n in offsets):
        raise CheckpointError(f"{bad} ('data_offsets' {offsets!r}); download it again")
    if offsets[0] > offsets[1]:
        raise CheckpointError(f"{bad} ('data_offsets' {offsets!r} end before they begin); download it again")
    return dtype, tuple(shape), offsets[0], offsets[1]


def _check_tensors(path: Path, header: dict, data_start: int, expected: dict) -> None:
    size = path.stat().st_size
    for name, shape in expected.items():
        dtype, got_shape, begin, end = _entry(path, name, header.get(name))
        if dtype != "BF16":
            raise CheckpointError(f"{path}: tensor '{name}' has dtype {dtype}, expected BF16")
        if got_shape != shape:
            raise CheckpointError(
                f"{path}: tensor '{name}' has shape {list(got_shape)}, expected {list(shape)}"
            )
        if end - begin != 2 * int(np.prod(shape)):
            raise CheckpointError(f"{path}: tensor '{name}' has a wrong byte length")
        if data_start + end > size:
            raise CheckpointError(
                f"{path}: truncated — tensor '{name}' ends at byte {data_start + end}, file has {size}; "
                "download it again"
            )
    extra = sorted(set(header) - set(expected))
    if extra:
        log.info("ignoring %d tensors the model does not use (first: %s)", len(extra), extra[0])


def _validate_with_safetensors(path: Path) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except SafetensorError as e:
        raise CheckpointError(f"{path}: invalid safetensors file ({e})") from None


def open_weights(path: Path, cfg: ModelConfig) -> Weights:
    """Check every tensor against the config, then memory-map them as BF16 arrays."""
    # imported here, not with the module: ml_dtypes 0.7 takes ~0.8 s to import, which every `voxtral`
    # command paid before it could print its help or an option's error
    import ml_dtypes  # also registers bfloat16 with NumPy before safetensors is used

    header, data_start = read_header(path)
    expected = expected_tensors(cfg)
    _check_tensors(path, header, data_start, expected)
    _validate_with_safetensors(path)
    raw = np.memmap(path, dtype=np.uint8, mode="r")

    def get(name: str) -> np.ndarray:
        begin, end = header[name]["data_offsets"]
        return raw[data_start + begin : data_start + end].view(ml_dtypes.bfloat16).reshape(expected[name])

    def layers(prefix: str, part, ada_dim: int) -> tuple[LayerWeights, ...]:
        names = _layer_shapes(part, part.use_biases, ada_dim)
        return tuple(
            LayerWeights(**{f: get(f"{prefix}{i}.{LAYER_SUFFIX[f]}") for f in names})
            for i in range(part.n_layers)
        )

    enc, dec = cfg.encoder, cfg.decoder
    return Weights(
        conv0_weight=get(ENCODER + "conv_layers.0.conv.weight"),
        conv0_bias=get(ENCODER + "conv_layers.0.conv.bias"),
        conv1_weight=get(ENCODER + "conv_layers.1.conv.weight"),
        conv1_bias=get(ENCODER + "conv_layers.1.conv.bias"),
        encoder_layers=layers(ENCODER + "transformer.layers.", enc, 0),
        encoder_norm=get(ENCODER + "transformer.norm.weight"),
        adapter_w0=get(ADAPTER + "audio_language_projection.0.weight"),
        adapter_w2=get(ADAPTER + "audio_language_projection.2.weight"),
        tok_embeddings=get(ADAPTER + "tok_embeddings.weight"),
        decoder_layers=layers("layers.", dec, dec.ada_t_cond_dim),
        norm=get("norm.weight"),
    )


SCAN_VALUES = 1 << 24  # BF16 values checked at a time by non_finite_tensors (32 MB)


def non_finite_tensors(path: Path, cfg: ModelConfig) -> list[str]:
    """Names of the tensors of the weights file that hold NaN or Inf (BF16 exponent 0xFF), in file order.

    A streaming scan of every tensor the model uses (reads the whole file: seconds); the backends call it
    only once they have seen a non-finite value, to name the culprit."""
    header, data_start = read_header(path)
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    bad = []
    for name in expected_tensors(cfg):
        begin, end = header[name]["data_offsets"]
        bits = raw[data_start + begin : data_start + end].view(np.uint16)
        if any(
            ((bits[i : i + SCAN_VALUES] & 0x7F80) == 0x7F80).any() for i in range(0, len(bits), SCAN_VALUES)
        ):
            bad.append(name)
    return bad


def non_finite_error(directory: Path, cfg: ModelConfig, what: str) -> CheckpointError:
    """The error for non-finite values `what` found: naming the tensors, or saying none is to blame."""
    path = directory / WEIGHTS_FILE
    bad = non_finite_tensors(path, cfg)
    if not bad:
        return CheckpointError(
            f"{path}: {what} are NaN or Inf although every weight is finite (the activations overflowed); "
            "check that params.json belongs to these weights"
        )
    more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
    return CheckpointError(
        f"{path}: tensor '{bad[0]}'{more} has NaN or Inf values; the file is damaged: download it again"
    )


@dataclass(frozen=True)
class Checkpoint:
    directory: Path
    config: ModelConfig
    tokenizer: Tokenizer
    weights: Weights

    def file_sizes(self) -> dict[str, int]:
        return {name: (self.directory / name).stat().st_size for name in CHECKPOINT_FILES}


def looks_local(text: str) -> bool:
    """Whether a --model value means a local directory rather than a Hub id (owner/name): a path with
    another shape (./x, /x, ~/x, a/b/c, x, x/: a trailing slash names a directory), or one whose first
    part is an existing directory here."""
    if text.startswith((".", "/", "~")) or text.endswith("/") or text.count("/") != 1 or "\\" in text:
        return True
    return Path(text.split("/")[0]).is_dir()


def resolve(model: str | Path, files: tuple[str, ...] = CHECKPOINT_FILES) -> Path:
    """A local checkpoint directory, or a Hub id whose `files` are downloaded into the HF cache."""
    path = Path(model).expanduser()
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except OSError as e:  # a directory above it that this process may not enter
        raise CheckpointError(f"{path}: cannot look at it ({e.strerror}); check the permissions") from None
    if exists:
        if not is_dir:
            raise CheckpointError(f"{path}: expected a model directory, got a file")
        if not os.access(path, os.R_OK | os.X_OK):
            raise CheckpointError(
                f"{path}: cannot read the model directory (permission denied); check its permissions"
            )
        return path
    text = str(model)
    if looks_local(text):
        raise CheckpointError(
            f"{text}: model directory not found; pass --model DIR (a directory holding "
            f"{', '.join(CHECKPOINT_FILES)}) or a Hub id like {DEFAULT_MODEL}"
        )
    return _download(text, files)


def _fetch_hint(repo_id: str) -> str:
    files = " ".join(CHECKPOINT_FILES)
    return (
        f"pass --model DIR with {', '.join(CHECKPOINT_FILES)} in DIR; on a machine with internet access: "
        f"`hf download {repo_id} {files} --local-dir DIR` (huggingface_hub before 0.34: `huggingface-cli "
        f"download …` with the same arguments), then copy DIR here"
    )


def _download(repo_id: str, files: tuple[str, ...]) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(files)))
    except RepositoryNotFoundError:
        raise CheckpointError(
            f"{repo_id}: no such model on the Hugging Face Hub (or it needs a login); check --model"
        ) from None
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"{repo_id}: not in the local cache and the Hub cannot be reached (offline?); "
            + _fetch_hint(repo_id)
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{repo_id}: download failed ({first}); {_fetch_hint(repo_id)}") from None


@dataclass(frozen=True)
class Description:
    """What `voxtral info` shows: the configuration and tokenizer, without the weights."""

    directory: Path
    config: ModelConfig
    tokenizer: Tokenizer

    def file_sizes(self) -> dict[str, int]:
        """Sizes of the checkpoint files present in the directory."""
        paths = {n: self.directory / n for n in CHECKPOINT_FILES}
        return {n: p.stat().st_size for n, p in paths.items() if p.is_file()}


def load_description(model: str | Path = DEFAULT_MODEL) -> Description:
    """params.json and tekken.json (for a Hub id, only those two are downloaded), checked; the weights
    file's header too when it is already there. CheckpointError / ConfigError for damage."""
    directory = resolve(model, files=(PARAMS_FILE, TOKENIZER_FILE))
    for name in (PARAMS_FILE, TOKENIZER_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory}: missing {name} — the model directory is incomplete")
    config = ModelConfig.from_file(directory / PARAMS_FILE)
    tokenizer = Tokenizer.from_file(directory / TOKENIZER_FILE)
    tokenizer.check_vocab_size(config.decoder.vocab_size)
    weights = directory / WEIGHTS_FILE
    if weights.is_file():  # there already: its header and size checked too (no tensor data is read)
        header, data_start = read_header(weights)
        _check_tensors(weights, header, data_start, expected_tensors(config))
    return Description(directory=directory, config=config, tokenizer=tokenizer)


def load_checkpoint(model: str | Path = DEFAULT_MODEL) -> Checkpoint:
    """Resolve, then load config and tokenizer and open the weights, checking everything."""
    directory = resolve(model)
    for name in CHECKPOINT_FILES:
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory}: missing {name} — the model directory is incomplete")
    config = ModelConfig.from_file(directory / PARAMS_FILE)
    tokenizer = Tokenizer.from_file(directory / TOKENIZER_FILE)
    tokenizer.check_vocab_size(config.decoder.vocab_size)
    weights = open_weights(directory / WEIGHTS_FILE, config)
    return Checkpoint(directory=directory, config=config, tokenizer=tokenizer, weights=weights)
