"""The model side: a frozen base LLM with LoRA adapters, and what travels of it.

Only adapter tensors ever leave a client, serialised with safetensors: the byte count of
that serialisation is the payload size the network simulator times.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from testbed.config.scenario import LoraConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")

AdapterState = dict[str, torch.Tensor]


def quiet_transformers() -> None:
    """No per-load progress bars or deprecation chatter from transformers in our output."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")


def load_base_model(model_dir: str, *, dtype: torch.dtype = torch.float32, **config_overrides):
    """A causal LM from a local folder (or a hub id where a hub exists), frozen, eval mode.
    `config_overrides` change the config before the weights load, e.g. num_hidden_layers=k
    loads only the first k decoder blocks.

    Where the folder holds one safetensors file already in `dtype`, the frozen weights are
    the file's pages, memory-mapped copy-on-write (`mapped_base_model`): every process that
    loads the same file shares one copy in the page cache, so parallel client workers cost
    little extra memory. Anything else goes through transformers' own loader."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    model = mapped_base_model(model_dir, dtype, **config_overrides)
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, **config_overrides)
    model.requires_grad_(False)
    return model.eval()


def mapped_base_model(model_dir: str, dtype: torch.dtype, **config_overrides):
    """The model with its weights assigned from a memory-mapped `model.safetensors`, or None
    where that file is absent, holds another dtype, or does not cover the model (tied
    weights excepted). Writes to a weight stay private to the process (copy-on-write)."""
    from pathlib import Path

    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    path = Path(model_dir) / "model.safetensors"
    if not path.is_file():
        return None
    weights = load_file(path)  # tensors backed by a private mapping of the file
    if any(t.is_floating_point() and t.dtype != dtype for t in weights.values()):
        return None
    config = AutoConfig.from_pretrained(model_dir, **config_overrides)
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    wanted = model.state_dict().keys()
    result = model.load_state_dict({k: v for k, v in weights.items() if k in wanted}, strict=False, assign=True)
    model.tie_weights()
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(result.missing_keys) - tied:
        return None
    return model


def server_device(setting: str) -> torch.device:
    """`server.device`: auto -> CUDA when present, else CPU; cuda without a GPU is an error."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("server.device: cuda requested but torch sees no CUDA device")
    if setting == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


@functools.lru_cache(maxsize=4)
def load_tokenizer(model_dir: str):
    """The model's tokenizer (pad = eos where it has none); loaded once per process and shared
    by the clients a worker hosts, which only read it. A folder with a tokenizer.json loads it
    as the fast tokenizer directly: AutoTokenizer's class lookup imports tokenizer modules of
    many other models first (2.3 s instead of 1.2 s here, in every run's critical path)."""
    from pathlib import Path

    if (Path(model_dir) / "tokenizer.json").is_file():
        from transformers import PreTrainedTokenizerFast as AutoTokenizer
    else:
        from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def peft_config(lora: LoraConfig):
    """PEFT's LoraConfig for the scenario's `framework.lora`."""
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=list(lora.targets), task_type="CAUSAL_LM")


def attach_lora(model, lora: LoraConfig, *, seed: int):
    """Wrap `model` with fresh LoRA adapters; the initial A matrices come from `seed`."""
    from peft import get_peft_model

    missing = [t for t in lora.targets if not any(n == t or n.endswith("." + t) for n, _ in model.named_modules())]
    if missing:
        raise ValueError(f"framework.lora.targets: no module named {missing} in this model")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return get_peft_model(model, peft_config(lora))


def save_peft_folder(folder: str | os.PathLike, lora: LoraConfig, state: AdapterState, base_model: str) -> None:
    """`state` (PEFT state-dict keys, as adapter_state() returns them) as a standard PEFT adapter
    folder (adapter_config.json + adapter_model.safetensors): `PeftModel.from_pretrained(base,
    folder)` loads it."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    cfg = peft_config(lora)
    cfg.base_model_name_or_path = str(base_model)
    cfg.save_pretrained(str(folder))
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(folder, "adapter_model.safetensors"),
              metadata={"format": "pt"})


def adapter_state(peft_model) -> AdapterState:
    """A detached CPU copy of the trainable adapter tensors, keys in sorted order."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(peft_model)
    return {k: state[k].detach().to("cpu", torch.float32).clone().contiguous() for k in sorted(state)}


def load_adapter_state(peft_model, state: AdapterState) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(peft_model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"adapter state has keys this model lacks: {unexpected[:3]}")


def serialize(state: AdapterState) -> bytes:
    return st_save(state)


def deserialize(data: bytes) -> AdapterState:
    return st_load(data)


def count_parameters(model) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


@dataclass(frozen=True)
class OptimizerSpec:
    kind: str  # adamw | sgd
    lr: float
    weight_decay: float = 0.0

    def build(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        if self.kind == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.kind == "sgd":
            return torch.optim.SGD(params, lr=self.lr, weight_decay=self.weight_decay)
        raise ValueError(f"unknown optimizer '{self.kind}'; supported: adamw, sgd")
