"""The models of a published federated-LoRA study, built from their published configuration with
random weights: time and memory of a training step do not depend on the weights' values, so
nothing is downloaded.

The study is EdgeFlowerTune (github.com/Edge-Intelligence-Lab/EdgeFlowerTune, commit c5f9bdd);
docs/fidelity.md compares the testbed's predictions with its measurements. Only Gemma 3 270M
has published timings; its architecture is the study's own C++ configuration
(third_party/mobilefinetuner/operators/finetune_ops/graph/gemma_model.h:18-37, "aligned with
HuggingFace Gemma3TextConfig"), and its LoRA set-ups are the study's configs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from testbed.config.framework import LoraConfig
from testbed.ml.model_facts import ModelFacts

STUDY = "EdgeFlowerTune c5f9bdd"
GEMMA_H = "third_party/mobilefinetuner/operators/finetune_ops/graph/gemma_model.h"

# Gemma 3 270M (text), as gemma_model.h:18-37 gives it.
GEMMA3_270M: dict[str, object] = {
    "vocab_size": 262144, "hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18,
    "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "max_position_embeddings": 32768,
    "sliding_window": 512, "attention_bias": False, "attention_dropout": 0.0, "rms_norm_eps": 1e-6,
    "query_pre_attn_scalar": 256, "attn_logit_softcapping": None, "final_logit_softcapping": None,
    "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0, "hidden_activation": "gelu_pytorch_tanh",
    "tie_word_embeddings": True,
}
GEMMA3_270M_SOURCE = f"{STUDY} {GEMMA_H}:18-37"


# Qwen 0.5B, as qwen_model.h:18-30 gives it; q/k/v carry biases (qwen_model.cpp:75-79) and the
# logits come from the tied embeddings (qwen_model.cpp:498). No timings were published for it.
QWEN_H = "third_party/mobilefinetuner/operators/finetune_ops/graph/qwen_model.h"
QWEN05B: dict[str, object] = {
    "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
    "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
    "rope_theta": 1_000_000.0, "hidden_act": "silu", "tie_word_embeddings": True,
}
QWEN05B_SOURCE = f"{STUDY} {QWEN_H}:18-30, qwen_model.cpp:64-80, 498"


@dataclass(frozen=True)
class StudyLora:
    """One of the study's LoRA set-ups (rank, alpha, target modules) and where it is written."""

    r: int
    alpha: float
    targets: tuple[str, ...]
    source: str

    def config(self) -> LoraConfig:
        return LoraConfig(r=self.r, alpha=self.alpha, targets=self.targets)


ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
ALL_LINEARS = (*ATTENTION, "gate_proj", "up_proj", "down_proj")
# FedAvg-LoRA, WikiText and MMLU runs: r 8, alpha 32, q/k/v/o.
FEDAVG_LORA = StudyLora(8, 32.0, ATTENTION, f"{STUDY} configs/classic_fl_gemma3_fedavg_lora_eight_client_formal_"
                                             "seq64_wikitext_b8_r250.yaml:56-64")
# The three-phone validation (batch 1, seq 128): r 8, alpha 16, q/k/v/o.
VALIDATION_LORA = StudyLora(8, 16.0, ATTENTION, f"{STUDY} configs/classic_fl_gemma270m_fedavg_lora_three_nova_r3.yaml:49-56")


def gemma3_270m_config(**overrides: object):
    """transformers' Gemma3TextConfig of the study's Gemma 3 270M (fp32, SDPA attention);
    `overrides` shrink it for tests (e.g. vocab_size: the q/k/v/o adapters do not depend on it)."""
    from transformers import Gemma3TextConfig

    config = Gemma3TextConfig(**{**GEMMA3_270M, **overrides})
    config._attn_implementation = "sdpa"
    return config


def gemma3_270m_facts() -> ModelFacts:
    """The testbed's model arithmetic (testbed.ml.model_facts) for Gemma 3 270M."""
    c = GEMMA3_270M
    return ModelFacts(GEMMA3_270M_SOURCE, "gemma3_text", known=True, vocab_size=int(c["vocab_size"]),  # type: ignore[call-overload]
                      hidden_size=int(c["hidden_size"]), intermediate_size=int(c["intermediate_size"]),  # type: ignore[call-overload]
                      n_blocks=int(c["num_hidden_layers"]), n_heads=int(c["num_attention_heads"]),  # type: ignore[call-overload]
                      n_kv_heads=int(c["num_key_value_heads"]), head_dim=int(c["head_dim"]),  # type: ignore[call-overload]
                      tied_embeddings=bool(c["tie_word_embeddings"]))


def qwen05b_config(**overrides: object):
    """transformers' Qwen2Config of the study's Qwen 0.5B (fp32, SDPA attention)."""
    from transformers import Qwen2Config

    config = Qwen2Config(**{**QWEN05B, **overrides})
    config._attn_implementation = "sdpa"
    return config


def qwen05b_facts() -> ModelFacts:
    """The testbed's model arithmetic for Qwen 0.5B (head dim = hidden / heads = 64)."""
    c = {k: int(v) for k, v in QWEN05B.items() if isinstance(v, int) and not isinstance(v, bool)}
    return ModelFacts(QWEN05B_SOURCE, "qwen2", known=True, vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
                      intermediate_size=c["intermediate_size"], n_blocks=c["num_hidden_layers"],
                      n_heads=c["num_attention_heads"], n_kv_heads=c["num_key_value_heads"],
                      head_dim=c["hidden_size"] // c["num_attention_heads"], tied_embeddings=True)


def build_qwen05b(*, seed: int = 0, **overrides: object) -> torch.nn.Module:
    """Qwen 0.5B with seeded random weights, fp32, on the CPU (`overrides` as for the config)."""
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    return Qwen2ForCausalLM(qwen05b_config(**overrides)).float().eval()


def build_gemma3_270m(*, seed: int = 0, **overrides: object) -> torch.nn.Module:
    """Gemma 3 270M with seeded random weights, fp32, on the CPU (`overrides` as for the config)."""
    from transformers import Gemma3ForCausalLM

    torch.manual_seed(seed)
    return Gemma3ForCausalLM(gemma3_270m_config(**overrides)).float().eval()


def with_lora(model: torch.nn.Module, lora: StudyLora):
    """`model` with peft LoRA adapters on `lora.targets`; only the adapters train."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    return get_peft_model(model, PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=0.0,
                                                target_modules=list(lora.targets), bias="none"))


def params(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters); tied weights count once."""
    seen: set[int] = set()
    total = trainable = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return total, trainable
