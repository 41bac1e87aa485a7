"""Loading the base model: memory-mapped frozen weights, identical to transformers' loader."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from testbed.ml.modeling import load_base_model, mapped_base_model


def _file_mappings(path: Path) -> list[tuple[int, int]]:
    """Address ranges of this process mapped from `path` (/proc/self/maps)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path.resolve())):
            lo, hi = line.split()[0].split("-")
            ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


@pytest.mark.parametrize("overrides", [{}, {"num_hidden_layers": 1}])
def test_mapped_model_gives_the_same_logits_as_transformers(assets, overrides):
    mapped = load_base_model(str(assets.tiny), **overrides)
    reference = AutoModelForCausalLM.from_pretrained(str(assets.tiny), **overrides).eval()
    ids = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(mapped(input_ids=ids).logits, reference(input_ids=ids).logits)
    assert len(mapped.model.layers) == len(reference.model.layers)
    assert not any(p.requires_grad for p in mapped.parameters())


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps")
def test_frozen_weights_live_in_the_file_mapping(assets):
    path = Path(assets.tiny) / "model.safetensors"
    model = load_base_model(str(assets.tiny))
    ranges = _file_mappings(path)
    assert ranges, "model.safetensors is not mapped"
    weights = [p for p in model.parameters()]
    inside = [any(lo <= w.data_ptr() < hi for lo, hi in ranges) for w in weights]
    assert all(inside), f"{inside.count(False)} of {len(weights)} weights are private copies"
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_writes_to_a_mapped_weight_stay_in_the_process(assets):
    path = Path(assets.tiny) / "model.safetensors"
    model = load_base_model(str(assets.tiny))
    before = load_file(path)["model.norm.weight"].clone()
    with torch.no_grad():
        model.model.norm.weight.add_(1.0)
    assert torch.equal(load_file(path)["model.norm.weight"], before)


def test_a_file_in_another_dtype_goes_through_transformers(assets, tmp_path):
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(assets.tiny) / name, tmp_path / name)
    weights = {k: v.to(torch.bfloat16) for k, v in load_file(Path(assets.tiny) / "model.safetensors").items()}
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    assert mapped_base_model(str(tmp_path), torch.float32) is None
    assert mapped_base_model(str(tmp_path), torch.bfloat16) is not None
    assert load_base_model(str(tmp_path)).model.norm.weight.dtype == torch.float32
