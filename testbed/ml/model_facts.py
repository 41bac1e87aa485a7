"""What checking a scenario needs to know of its model, read from the model's config.json
alone (no weights, no torch): where that file is, the parameter count by part (embeddings,
one decoder block, head), the names of the modules LoRA may target, and the sizes that bound
other fields (blocks, vocabulary).

The arithmetic covers the Llama family (llama, mistral, qwen2, qwen3: the bundled models
and their like): attention q/k/v/o, a gated MLP gate/up/down, two RMSNorms per block.
For another model type, `ModelFacts.known` is False and the checks that need the arithmetic
are skipped (the model still loads at run time if transformers knows it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from testbed.config.files import FileProblem, input_path, read_text
from testbed.ml.assets import MODEL_NAMES, cache_dir

LLAMA_FAMILY = ("llama", "mistral", "qwen2", "qwen3")
BLOCK_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MAX_CONFIG_BYTES = 2**20
# generous bounds on a real model's sizes (the largest published: ~260k vocabulary, width 25,600,
# 126 blocks): past them a config.json is nonsense, and loops over blocks would not end
MAX_SIZES = {"vocab_size": 2**24, "hidden_size": 2**17, "intermediate_size": 2**20, "num_hidden_layers": 1024,
             "num_attention_heads": 1024, "num_key_value_heads": 1024, "head_dim": 2**14}


class ModelConfigError(ValueError):
    """A model that cannot be found or whose config.json is unusable: ``file: field: problem``.
    `path` is the config.json at fault, or None when the scenario's `model` names nothing."""

    def __init__(self, message: str, path: object = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)


@dataclass(frozen=True)
class ModelFacts:
    config_path: str  # the config.json read
    model_type: str
    known: bool  # the model type's arithmetic is known (Llama family)
    vocab_size: int = 0
    hidden_size: int = 0
    intermediate_size: int = 0
    n_blocks: int = 0
    n_heads: int = 0
    n_kv_heads: int = 0
    head_dim: int = 0
    tied_embeddings: bool = True

    @property
    def embed_params(self) -> int:
        return self.vocab_size * self.hidden_size

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear module of one decoder block, and of the head."""
        h, q, kv, m = self.hidden_size, self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim, self.intermediate_size
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, m), "up_proj": (h, m), "down_proj": (m, h), "lm_head": (h, self.vocab_size)}

    @property
    def block_params(self) -> int:
        shapes = self.linear_shapes()
        return sum(i * o for name, (i, o) in shapes.items() if name != "lm_head") + 2 * self.hidden_size

    @property
    def head_params(self) -> int:
        """The LM head's own weights (0 when tied to the embeddings) and the final norm."""
        return (0 if self.tied_embeddings else self.vocab_size * self.hidden_size) + self.hidden_size

    @property
    def n_params(self) -> int:
        return self.embed_params + self.n_blocks * self.block_params + self.head_params

    @property
    def module_names(self) -> tuple[str, ...]:
        """Names LoRA can target (peft matches a name against each module path's last part)."""
        return (*BLOCK_LINEARS, "lm_head", "embed_tokens")


def find_model_config(spec: str) -> Path | None:
    """The config.json of the scenario's `model`, without building or downloading anything:
    a bundled name's built folder, a local folder, or the Hugging Face cache. None where it
    cannot be known here (a bundled model not built yet, a hub id while the hub is online).
    ModelConfigError where `model` names nothing that could load."""
    if spec in MODEL_NAMES:
        path = cache_dir() / "models" / spec / "config.json"
        return path if path.is_file() else None  # `testbed run` builds it
    try:
        folder = input_path(spec)
        is_dir, exists = folder.is_dir(), folder.exists()
    except (FileProblem, OSError, ValueError) as exc:
        raise ModelConfigError(f"not a model folder or name: {exc}") from None
    if is_dir:
        if not (folder / "config.json").is_file():
            raise ModelConfigError(f"model folder {spec!r} has no config.json")
        return folder / "config.json"
    if exists:
        raise ModelConfigError(f"model path {spec!r} is a file, expected a folder with config.json")
    from testbed.ml.assets import _looks_like_path

    if _looks_like_path(spec):
        raise ModelConfigError(f"model path {spec!r} does not exist (known names: {', '.join(MODEL_NAMES)})")
    return _hub_config(spec)


def _hub_config(spec: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(spec, "config.json")
    except ValueError as exc:  # not a valid repo id
        raise ModelConfigError(f"{spec!r} is neither a bundled model ({', '.join(MODEL_NAMES)}), a local "
                               f"folder nor a Hugging Face id: {str(exc).splitlines()[0]}") from None
    if isinstance(found, str):
        return Path(found)
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise ModelConfigError(f"{spec!r} is neither a bundled model ({', '.join(MODEL_NAMES)}), a local folder, "
                               "nor in the Hugging Face cache, and the hub is offline (HF_HUB_OFFLINE=1)")
    return None


def read_model_facts(path: Path) -> ModelFacts:
    """The facts of one config.json; ModelConfigError names the key that is wrong."""
    try:
        text = read_text(path, max_bytes=MAX_CONFIG_BYTES)
    except FileProblem as exc:
        raise ModelConfigError(f"{exc.path}: (file): {exc.problem}", path) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ModelConfigError(f"{path}: line {err.lineno}: not JSON: {err.msg}", path) from None
    except RecursionError:
        raise ModelConfigError(f"{path}: (file): JSON nested too deeply", path) from None
    if not isinstance(raw, dict):
        raise ModelConfigError(f"{path}: (top level): expected a JSON object of model settings", path)
    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelConfigError(f"{path}: model_type: expected the model's type as text, e.g. \"llama\"", path)
    if model_type not in LLAMA_FAMILY:
        return ModelFacts(str(path), model_type, known=False)
    sizes = {key: _size(raw, key, path) for key in ("vocab_size", "hidden_size", "intermediate_size",
                                                     "num_hidden_layers", "num_attention_heads")}
    kv = _size(raw, "num_key_value_heads", path, default=sizes["num_attention_heads"])
    head_dim = _size(raw, "head_dim", path, default=sizes["hidden_size"] // sizes["num_attention_heads"] or 1)
    if sizes["num_attention_heads"] % kv:
        raise ModelConfigError(f"{path}: num_key_value_heads: {kv} does not divide num_attention_heads "
                               f"{sizes['num_attention_heads']}", path)
    tied = raw.get("tie_word_embeddings", True)
    if not isinstance(tied, bool):
        raise ModelConfigError(f"{path}: tie_word_embeddings: expected true or false, got {tied!r:.40}", path)
    return ModelFacts(str(path), model_type, known=True, vocab_size=sizes["vocab_size"],
                      hidden_size=sizes["hidden_size"], intermediate_size=sizes["intermediate_size"],
                      n_blocks=sizes["num_hidden_layers"], n_heads=sizes["num_attention_heads"], n_kv_heads=kv,
                      head_dim=head_dim, tied_embeddings=tied)


def _size(raw: dict, key: str, path: Path, default: int | None = None) -> int:
    value = raw.get(key, default)
    if value is None and default is not None:
        value = default
    top = MAX_SIZES[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= top:
        shown = repr(value) if not isinstance(value, int) or value.bit_length() < 64 else f"{value.bit_length()} bits"
        raise ModelConfigError(f"{path}: {key}: expected a whole number in 1..{top:,}, got {shown[:40]}", path)
    return value
