"""Classification as generation: encoding, loss masking, label log-likelihood accuracy."""

from __future__ import annotations

import pytest
import torch

from testbed.ml.modeling import load_base_model, load_tokenizer
from testbed.ml.task import IGNORE_INDEX, TaskEncoder, evaluate, label_log_likelihoods, training_batch

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


@pytest.mark.parametrize("max_tokens", [1, 16, 96, 400])
def test_prefix_tokenization_equals_cutting_the_whole_text(assets, max_tokens):
    from testbed.ml.data import load_dataset

    tok = load_tokenizer(str(assets.tiny))  # SmolLM2's byte-level BPE
    enc = TaskEncoder(tok, LABELS, max_tokens=max_tokens)
    texts = [ex.text for ex in load_dataset(name="bbc-news").examples]
    texts += ["", "word", "  spaced   out  ", "x" * 5000, "tab\tand\nnew  line " * 200, "don't stop 1234567 " * 90]
    whole = [enc._ids(" " + t)[:max_tokens] for t in texts]  # what the prefix shortcut must equal
    assert enc._leading_ids([" " + t for t in texts]) == whole
    assert [len(ex.prompt_ids) for ex in enc.encode_many(texts, ["tech"] * len(texts))] == \
        [len(enc._ids("Article:")) + len(w) + len(enc._ids("\nTopic:")) for w in whole]


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
    from testbed.ml.task import _multi_token_scores

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
    from testbed.ml.task import label_loss

    model = load_base_model(str(assets.tiny))
    batch = training_batch(encoder, [encoder.encode("markets fell", "business"),
                                     encoder.encode("a longer article about a match", "sports")])
    with torch.no_grad():
        assert float(label_loss(model, batch)) == pytest.approx(float(model(**batch).loss), rel=1e-5)
