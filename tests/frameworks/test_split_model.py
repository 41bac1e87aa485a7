"""Split-FedLLM's model cut: the two parts reproduce the unsplit model, payload sizes, compression."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from frameworks.split.model import (
    ClientPart,
    CutActivations,
    ServerPart,
    check_cut_layer,
    pack_activations,
    pack_tensor,
    server_label_loss,
    split_points,
    split_step,
    unpack_activations,
    unpack_tensor,
)
from testbed.config.scenario import LoraConfig
from testbed.ml.modeling import attach_lora, load_base_model, load_tokenizer
from testbed.ml.task import TaskEncoder, causal_lm, label_loss, last_hidden, training_batch

LABELS = ("business", "sport", "tech")
TEXTS = (
    "Shares rose sharply after the bank reported record quarterly profits and raised its dividend.",
    "The striker scored twice.",
    "A new phone chip promises longer battery life, faster graphics and on-device speech recognition "
    "for the coming generation of handsets, the company said at its annual developer conference.",
    "Markets fell.",
)
HEADER_SLACK = 1024  # safetensors JSON header, generously


def _lora_model(model_dir, seed: int = 0):
    """LoRA r=4 on q/v with non-zero B matrices, so every A matrix gets a gradient too."""
    model = attach_lora(load_base_model(str(model_dir)), LoraConfig(r=4, alpha=8, targets=("q_proj", "v_proj")),
                        seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return model.train()


def _batch(model_dir, n: int = 4, max_tokens: int = 32):
    encoder = TaskEncoder(load_tokenizer(str(model_dir)), LABELS, max_tokens=max_tokens)
    examples = encoder.encode_many(TEXTS[:n], [LABELS[i % len(LABELS)] for i in range(n)])
    return training_batch(encoder, examples)


def _lora_params(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _unsplit(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = label_loss(model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in _lora_params(model).items()}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def _flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([grads[n].flatten() for n in sorted(grads)])


@pytest.fixture(scope="module")
def tiny(assets):
    model = _lora_model(assets.tiny)
    batch = _batch(assets.tiny)
    loss, grads = _unsplit(model, batch)
    return model, batch, loss, grads


def test_batch_is_right_padded_with_different_lengths(tiny):
    _, batch, _, _ = tiny
    lengths = batch["attention_mask"].sum(dim=1)
    assert len(set(lengths.tolist())) >= 3 and int(lengths.min()) < batch["input_ids"].shape[1]
    # right padding: every row is ones then zeros
    mask = batch["attention_mask"]
    assert torch.equal(mask, (torch.arange(mask.shape[1]) < lengths[:, None]).long())


def test_cut_layer_range(tiny):
    model = tiny[0]
    assert split_points(model) == 4
    assert check_cut_layer(model, 1) == 1 and check_cut_layer(model, 3) == 3
    for bad in (0, 4, -1, 7, 1.5, True):
        with pytest.raises(ValueError, match=r"cut_layer.*1 <= cut_layer < 4.*1\.\.3"):
            check_cut_layer(model, bad)
    with pytest.raises(ValueError, match="cut_layer"):
        ClientPart(model, 0)
    with pytest.raises(ValueError, match="cut_layer"):
        ServerPart(model, 4)


def test_parts_hold_disjoint_blocks_sharing_the_model(tiny):
    model = tiny[0]
    decoder = causal_lm(model).get_decoder()
    client, server = ClientPart(model, 1), ServerPart(model, 1)
    assert list(client.layers) == list(decoder.layers[:1]) and list(server.layers) == list(decoder.layers[1:])
    assert client.embed_tokens is decoder.embed_tokens and server.norm is decoder.norm
    assert server.lm_head is causal_lm(model).get_output_embeddings()
    client_lora = {id(p) for p in client.parameters() if p.requires_grad}
    server_lora = {id(p) for p in server.parameters() if p.requires_grad}
    assert not client_lora & server_lora
    assert len(client_lora) == 4 and len(server_lora) == 12  # A and B of q/v: 1 and 3 blocks
    assert client_lora | server_lora == {id(p) for p in _lora_params(model).values()}


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_forward_reproduces_the_decoder(tiny, cut):
    model, batch, _, _ = tiny
    ids, mask = batch["input_ids"], batch["attention_mask"]
    client, server = ClientPart(model, cut), ServerPart(model, cut)
    with torch.no_grad():
        acts = client(ids, mask)
        assert acts.hidden.shape == (*ids.shape, model.config.hidden_size)
        assert acts.position_ids is None and torch.equal(acts.attention_mask, mask)
        assert torch.allclose(server(acts.hidden, acts.attention_mask), last_hidden(model, ids, mask),
                              rtol=1e-5, atol=1e-6)
        # non-default positions travel with the activations and are honoured on both sides
        # (spread out: rotary attention only sees relative distances, so a plain shift changes nothing)
        pos = 3 * torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)
        acts = client(ids, mask, pos)
        ref = causal_lm(model).get_decoder()(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
        got = server(acts.hidden, acts.attention_mask, acts.position_ids)
        assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(got, last_hidden(model, ids, mask), atol=1e-3)
        # left padding too, where the padding mask changes the real tokens' outputs
        shift = (mask.shape[1] - mask.sum(dim=1)).tolist()
        left_ids = torch.stack([row.roll(s) for row, s in zip(ids, shift)])
        left_mask = torch.stack([row.roll(s) for row, s in zip(mask, shift)])
        acts = client(left_ids, left_mask)
        got = server(acts.hidden, acts.attention_mask)
        assert torch.allclose(got, last_hidden(model, left_ids, left_mask), rtol=1e-5, atol=1e-6)
        real = left_mask.bool()
        assert not torch.allclose(got[real], last_hidden(model, left_ids, torch.ones_like(left_mask))[real], atol=1e-3)


@pytest.mark.parametrize("cut", [1, 3])  # k = 1 and k = L - 1
def test_split_step_fp32_equals_unsplit_loss_and_gradients(tiny, cut):
    model, batch, ref_loss, ref_grads = tiny
    client, server = ClientPart(model, cut), ServerPart(model, cut)
    model.zero_grad(set_to_none=True)
    loss, up, down = split_step(client, server, batch, compression="fp32")
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=0)
    params = _lora_params(model)
    assert len(params) == 16
    for name, p in params.items():
        assert p.grad is not None, name
        assert float(ref_grads[name].abs().max()) > 0, name
        assert torch.allclose(p.grad, ref_grads[name], rtol=1e-5, atol=1e-8), name
    model.zero_grad(set_to_none=True)


def test_server_label_loss_equals_label_loss(tiny):
    model, batch, ref_loss, _ = tiny
    client, server = ClientPart(model, 2), ServerPart(model, 2)
    with torch.no_grad():
        acts = client(batch["input_ids"], batch["attention_mask"])
        loss = server_label_loss(server, acts.hidden, batch)
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=0)


def test_payload_bytes(tiny):
    model, batch, _, _ = tiny
    b, t = batch["input_ids"].shape
    c = model.config.hidden_size
    client, server = ClientPart(model, 2), ServerPart(model, 2)
    with torch.no_grad():
        acts = dataclasses.replace(client(batch["input_ids"], batch["attention_mask"]), labels=batch["labels"])
    extras = b * t * (1 + 4)  # uint8 mask + int32 labels
    per_value = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
    sizes = {}
    for comp, nbytes in per_value.items():
        scales = b * t * 4 if comp == "int8" else 0  # one fp32 scale per token
        up_expected = len(pack_activations(acts, dtype=comp))
        down_expected = len(pack_tensor(acts.hidden, dtype=comp))
        floor_up = b * t * c * nbytes + extras + scales
        assert floor_up <= up_expected <= floor_up + HEADER_SLACK
        assert b * t * c * nbytes + scales <= down_expected <= b * t * c * nbytes + scales + HEADER_SLACK
        model.zero_grad(set_to_none=True)
        _, up, down = split_step(client, server, batch, compression=comp)
        assert (up, down) == (up_expected, down_expected), comp
        sizes[comp] = up
    model.zero_grad(set_to_none=True)
    assert 0.49 < sizes["fp16"] / sizes["fp32"] < 0.52 and sizes["bf16"] == pytest.approx(sizes["fp16"], abs=64)
    assert 0.25 < sizes["int8"] / sizes["fp32"] < 0.30


def test_activation_payload_round_trip():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 8, generator=gen) * torch.tensor([1.0, 0.01, 100.0])[:, None, None]
    hidden[0, 0, 0] = 300.0  # an outlier channel in one token
    hidden[1, 4] = 0.0  # an all-zero token (padding)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    labels = torch.full((3, 5), -100)
    labels[:, 2] = 49_000
    pos = torch.arange(5).expand(3, 5) + 3
    acts = CutActivations(hidden, mask, pos, labels)

    back = unpack_activations(pack_activations(acts, dtype="fp32"))
    assert torch.equal(back.hidden, hidden) and torch.equal(back.attention_mask, mask)
    assert torch.equal(back.position_ids, pos) and torch.equal(back.labels, labels)
    assert back.attention_mask.dtype == torch.long and back.hidden.dtype == torch.float32
    plain = unpack_activations(pack_activations(CutActivations(hidden, mask), dtype="fp32"))
    assert plain.position_ids is None and plain.labels is None

    # int8: per-token scale, error at most half a step of that token's scale
    q = unpack_activations(pack_activations(acts, dtype="int8")).hidden
    step = hidden.abs().amax(dim=-1, keepdim=True) / 127
    assert bool(((q - hidden).abs() <= step / 2 + 1e-6 * step + 1e-12).all())
    assert torch.equal(q[1, 4], torch.zeros(8))
    # the 0.01-scale row keeps its own precision despite the 100-scale row beside it
    assert float((q[1] - hidden[1]).abs().max()) < 2e-4

    for comp, rel in (("fp16", 1e-3), ("bf16", 8e-3)):
        r = unpack_activations(pack_activations(acts, dtype=comp)).hidden
        assert bool(((r - hidden).abs() <= rel * hidden.abs() + 1e-30).all()), comp

    with pytest.raises(ValueError, match="compression"):
        pack_activations(acts, dtype="fp8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected 'tensor'"):
        unpack_tensor(pack_activations(acts, dtype="fp32"))


def test_gradient_payload_keeps_small_and_large_values_in_fp16():
    gen = torch.Generator().manual_seed(1)
    tiny_grad = torch.randn(2, 4, 16, generator=gen) * 1e-7  # below fp16's normal range
    assert float((tiny_grad.half().float() - tiny_grad).abs().max() / tiny_grad.abs().max()) > 1e-2
    for x in (tiny_grad, tiny_grad * 1e12):  # ~1e5 overflows a plain fp16 cast
        back = unpack_tensor(pack_tensor(x, dtype="fp16"))
        assert torch.isfinite(back).all()
        assert bool(((back - x).abs() <= 1e-3 * x.abs()).all())
    assert torch.equal(unpack_tensor(pack_tensor(tiny_grad, dtype="fp32")), tiny_grad)
    assert torch.equal(unpack_tensor(pack_tensor(torch.zeros(2, 3), dtype="fp16")), torch.zeros(2, 3))
    q = unpack_tensor(pack_tensor(tiny_grad, dtype="int8"))
    assert float((q - tiny_grad).abs().max()) <= float(tiny_grad.abs().max()) / 127 / 2 * 1.001


# Measured on the tiny model (k = 2, this batch, loss ~10.8): |loss - fp32 loss| 1.3e-5 (fp16),
# 1.1e-5 (bf16), 3.8e-4 (int8); cosine of the LoRA gradient to fp32's > 0.99999 for all three.
@pytest.mark.parametrize(("comp", "max_dloss", "min_cos"), [
    ("fp16", 1e-4, 0.9999), ("bf16", 5e-4, 0.9999), ("int8", 2e-3, 0.999),
])
def test_compressed_step_stays_close_to_fp32(tiny, comp, max_dloss, min_cos):
    model, batch, ref_loss, ref_grads = tiny
    client, server = ClientPart(model, 2), ServerPart(model, 2)
    model.zero_grad(set_to_none=True)
    loss, _, _ = split_step(client, server, batch, compression=comp)
    grads = {n: p.grad.clone() for n, p in _lora_params(model).items()}
    model.zero_grad(set_to_none=True)
    assert 0 < abs(float(loss - ref_loss)) < max_dloss
    cos = torch.nn.functional.cosine_similarity(_flat(grads), _flat(ref_grads), dim=0)
    assert float(cos) > min_cos


@pytest.mark.slow
def test_smollm2_split_step_equals_unsplit(assets):
    """The real 30-layer SmolLM2-135M cut after block 2, at a small batch (a few seconds on 2 cores)."""
    model = _lora_model(assets.smollm2)
    batch = _batch(assets.smollm2, n=2, max_tokens=16)
    ref_loss, ref_grads = _unsplit(model, batch)
    client, server = ClientPart(model, 2), ServerPart(model, 2)
    loss, up, down = split_step(client, server, batch, compression="fp32")
    assert split_points(model) == 30
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=0)
    for name, p in _lora_params(model).items():
        assert torch.allclose(p.grad, ref_grads[name], rtol=1e-5, atol=1e-8), name
    b, t = batch["input_ids"].shape
    assert b * t * 576 * 4 < up < b * t * 576 * 4 + b * t * 5 + HEADER_SLACK
    assert b * t * 576 * 4 < down < b * t * 576 * 4 + HEADER_SLACK
    # Compressed, on this batch (loss ~8.8): |dloss| 6.5e-4 (fp16) and 0.12 (int8), gradient cosine
    # 0.99999 and 0.982. Per-token int8 is far lossier here than on the tiny model: SmolLM2's residual
    # stream has outlier channels (|h| ~200 against a median of ~1) that set every token's scale.
    for comp, max_dloss, min_cos in (("fp16", 3e-3, 0.9999), ("int8", 0.4, 0.95)):
        model.zero_grad(set_to_none=True)
        loss_c, _, _ = split_step(client, server, batch, compression=comp)
        grads = {n: p.grad.clone() for n, p in _lora_params(model).items()}
        assert abs(float(loss_c - ref_loss)) < max_dloss, comp
        assert float(torch.nn.functional.cosine_similarity(_flat(grads), _flat(ref_grads), dim=0)) > min_cos, comp
