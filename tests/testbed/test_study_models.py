"""testbed/ml/study_models.py: the study's models from their published configuration."""

from __future__ import annotations

import pytest

from testbed.ml.memory_need import lora_params
from testbed.ml.study_models import (
    ATTENTION,
    FEDAVG_LORA,
    GEMMA3_270M,
    VALIDATION_LORA,
    build_gemma3_270m,
    build_qwen05b,
    gemma3_270m_facts,
    params,
    qwen05b_facts,
    with_lora,
)


def test_gemma3_270m_is_the_published_architecture() -> None:
    model = build_gemma3_270m(vocab_size=256)  # the vocabulary only changes the embedding's rows
    config = model.config
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (640, 2048, 18)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 1, 256)
    assert config.sliding_window == 512 and config.tie_word_embeddings
    total, _ = params(model)
    # the testbed's arithmetic counts two norms a block; Gemma 3 has four and q/k norms (+1,792 a block)
    assert total == gemma3_270m_facts().n_params - (262_144 - 256) * 640 + 18 * (2 * 640 + 2 * 256)
    assert GEMMA3_270M["vocab_size"] * 640 + total - 256 * 640 == 268_098_176  # the full model


def test_the_studys_lora_adapters_train_alone() -> None:
    model = with_lora(build_gemma3_270m(vocab_size=256), FEDAVG_LORA)
    _, trainable = params(model)
    assert trainable == lora_params(gemma3_270m_facts(), FEDAVG_LORA.config(), ATTENTION, 18) == 737_280
    assert (FEDAVG_LORA.alpha, VALIDATION_LORA.alpha) == (32.0, 16.0)  # the two configs differ in alpha only
    assert FEDAVG_LORA.targets == VALIDATION_LORA.targets == ("q_proj", "k_proj", "v_proj", "o_proj")


def test_qwen05b_config_and_its_adapter() -> None:
    model = with_lora(build_qwen05b(num_hidden_layers=2, vocab_size=256), FEDAVG_LORA)
    _, trainable = params(model)
    facts = qwen05b_facts()
    assert trainable == lora_params(facts, FEDAVG_LORA.config(), ATTENTION, 2) == 2 * 45_056
    assert lora_params(facts, FEDAVG_LORA.config(), ATTENTION, 24) * 4 == 4_325_376  # fp32 bytes, 24 blocks
    assert facts.n_params == pytest.approx(494e6, rel=1e-3)
