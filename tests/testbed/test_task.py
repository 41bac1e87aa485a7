"""Classification as generation: encoding, loss masking, label log-likelihood accuracy."""

from __future__ import annotations

import pytest
import torch

from testbed.modeling import load_base_model, load_tokenizer
from testbed.task import IGNORE_INDEX, TaskEncoder, evaluate, label_log_likelihoods, training_batch

LABELS = ("business", "entertainment", "politics", "sports", "tech")


@pytest.fixture(scope="module")
def encoder(assets):
    return TaskEncoder(load_tokenizer(str(assets.tiny)), LABELS, max_tokens=16)


def test_prompt_is_cut_to_max_tokens(encoder):
    long = encoder.encode("word " * 500, "tech")
    short = encoder.encode("a short one", "tech")
    head, tail = encoder._ids("Article:"), encoder._ids("\nTopic:")
    assert len(long.prompt_ids) == len(head) + 16 + len(tail)
    assert len(short.prompt_ids) < len(long.prompt_ids)
    assert long.label_index == LABELS.index("tech")
    assert encoder.single_token_labels


def test_training_batch_puts_the_loss_on_label_tokens_only(encoder):
    batch = [encoder.encode("markets fell", "business"), encoder.encode("a longer article about a match", "sports")]
    tb = training_batch(encoder, batch)
    assert tb["input_ids"].shape == tb["labels"].shape == tb["attention_mask"].shape
    for i, ex in enumerate(batch):
        supervised = (tb["labels"][i] != IGNORE_INDEX).nonzero().flatten().tolist()
        assert supervised == [len(ex.prompt_ids)]
        assert int(tb["labels"][i, supervised[0]]) == encoder.label_ids[ex.label_index][0]
    assert int(tb["attention_mask"][0].sum()) == len(batch[0].prompt_ids) + 1


def test_fast_and_general_scoring_agree(assets, encoder):
    model = load_base_model(str(assets.tiny))
    batch = [encoder.encode(t, lab) for t, lab in [("shares rose", "business"), ("the film won", "entertainment"),
                                                   ("vote today", "politics")]]
    from testbed.task import _multi_token_scores

    fast = label_log_likelihoods(model, encoder, batch)
    slow = _multi_token_scores(model, encoder, batch)
    assert torch.allclose(fast, slow, atol=1e-4)


def test_evaluate_reports_accuracy_and_true_label_nll(assets, encoder):
    model = load_base_model(str(assets.tiny))
    examples = [encoder.encode(f"text number {i}", LABELS[i % 5]) for i in range(10)]
    res = evaluate(model, encoder, examples, batch_size=4)
    scores = label_log_likelihoods(model, encoder, examples)
    truth = torch.tensor([ex.label_index for ex in examples])
    assert res.accuracy == pytest.approx(float((scores.argmax(1) == truth).float().mean()))
    assert res.loss == pytest.approx(float(-scores[torch.arange(10), truth].mean()), rel=1e-5)
    assert res.n_examples == 10


def test_label_loss_equals_the_models_own_loss(assets, encoder):
    from testbed.task import label_loss

    model = load_base_model(str(assets.tiny))
    batch = training_batch(encoder, [encoder.encode("markets fell", "business"),
                                     encoder.encode("a longer article about a match", "sports")])
    with torch.no_grad():
        assert float(label_loss(model, batch)) == pytest.approx(float(model(**batch).loss), rel=1e-5)
