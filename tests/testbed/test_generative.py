"""Instruction and language-modelling encoders: what is supervised, what is cut, how they score."""

from __future__ import annotations

import math

import pytest
import torch

from testbed.ml.data import ChatTurn, Example
from testbed.ml.generative import InstructionEncoder, LanguageModelEncoder, token_nll
from testbed.ml.modeling import load_base_model, load_tokenizer
from testbed.ml.task import IGNORE_INDEX, training_batch

HEADLINE = "Article: {prompt}\nHeadline:"


@pytest.fixture(scope="module")
def tok(assets):
    return load_tokenizer(str(assets.tiny))


@pytest.fixture(scope="module")
def model(assets):
    return load_base_model(str(assets.tiny)).eval()


def test_the_loss_covers_the_response_and_its_end_token_only(tok):
    enc = InstructionEncoder(tok, max_tokens=64, template="plain", prompt=HEADLINE)
    [ex] = enc.encode_examples([Example("Shares rose on Monday.", "Markets up")])
    response = tok(" Markets up", add_special_tokens=False)["input_ids"]
    assert list(ex.target_ids) == response + [tok.eos_token_id]
    assert tok.decode(list(ex.prompt_ids)) == "Article: Shares rose on Monday.\nHeadline:"
    batch = training_batch(enc, [ex])
    supervised = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX].tolist()
    assert supervised == list(ex.target_ids)
    assert int((batch["labels"][0] != IGNORE_INDEX).sum()) == len(response) + 1


def test_the_prompt_is_cut_and_the_template_kept(tok):
    enc = InstructionEncoder(tok, max_tokens=32, template="plain", prompt=HEADLINE)
    long, short = enc.encode_examples([Example("word " * 200, "A headline"), Example("Brief.", "B")])
    assert len(long.prompt_ids) + len(long.target_ids) == 32
    assert tok.decode(list(long.prompt_ids)).endswith("\nHeadline:")
    assert tok.decode(list(long.prompt_ids)).startswith("Article: word word")
    assert enc.truncation.examples == 2 and enc.truncation.prompts_cut == 1 and enc.truncation.responses_cut == 0
    assert "1 of 2 prompts" in enc.truncation.line("instruction", 32)


def test_max_prompt_and_response_tokens_refine_the_budget(tok):
    enc = InstructionEncoder(tok, max_tokens=64, template="plain", prompt="{prompt}", max_prompt_tokens=5,
                             max_response_tokens=3)
    [ex] = enc.encode_examples([Example("one two three four five six seven eight", "a b c d e f")])
    assert len(ex.prompt_ids) == 5 and len(ex.target_ids) == 3 + 1
    assert enc.truncation.responses_cut == 1 and enc.truncation.prompts_cut == 1


def test_chat_template_renders_turns_and_auto_picks_it(tok):
    assert tok.chat_template  # the bundled tokenizers carry ChatML
    enc = InstructionEncoder(tok, max_tokens=96, template="auto", prompt="{prompt}")
    [ex] = enc.encode_examples([Example("Hi", "Hello!", turns=(ChatTurn("system", "Be brief."), ChatTurn("user", "Hi")))])
    text = tok.decode(list(ex.prompt_ids) + list(ex.target_ids))
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" \
                   "<|im_start|>assistant\nHello!<|im_end|>"


def test_chat_without_a_template_is_refused(tok):
    class NoChat:
        chat_template = None
        eos_token_id = pad_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1] * len(text.split())}

    with pytest.raises(ValueError, match="no chat template"):
        InstructionEncoder(NoChat(), max_tokens=16, template="chat", prompt="{prompt}")
    assert not InstructionEncoder(NoChat(), max_tokens=16, template="auto", prompt="{prompt}").chat


def test_language_modelling_joins_texts_into_whole_blocks(tok):
    enc = LanguageModelEncoder(tok, max_tokens=8)
    texts = ["alpha beta gamma delta", "epsilon zeta eta theta iota kappa lambda"]
    stream = []
    for t in texts:
        stream += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    blocks = enc.encode_examples([Example(t) for t in texts])
    assert [list(b.target_ids) for b in blocks] == [stream[i:i + 8] for i in range(0, len(stream) // 8 * 8, 8)]
    assert all(b.prompt_ids == () for b in blocks)
    assert enc.truncation.tokens_dropped == len(stream) % 8
    batch = training_batch(enc, blocks)
    assert int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) == 7 * len(blocks)  # every token but the first


def test_perplexity_is_the_exponent_of_the_mean_token_loss(tok, model):
    enc = LanguageModelEncoder(tok, max_tokens=16)
    blocks = enc.encode_examples([Example("the quick brown fox jumps over the lazy dog " * 6)])
    scores = enc.score(model, blocks, batch_size=2)
    metrics = enc.metrics(scores.sums)
    batch = training_batch(enc, blocks)
    with torch.no_grad():
        reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          labels=batch["labels"]).loss.item()
    assert scores.sums["tokens"] == 15 * len(blocks)
    assert metrics["eval_loss"] == pytest.approx(reference, rel=1e-4)
    assert metrics["perplexity"] == pytest.approx(math.exp(reference), rel=1e-4)
    assert "rouge_l" not in metrics  # nothing generated


def test_token_nll_sums_what_the_mean_loss_averages(tok, model):
    enc = InstructionEncoder(tok, max_tokens=48, template="plain", prompt=HEADLINE)
    examples = enc.encode_examples([Example("Rates held.", "Bank holds rates"), Example("Team wins cup.", "Cup win")])
    batch = training_batch(enc, examples)
    with torch.no_grad():
        total, count = token_nll(model, batch)
        mean = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert count == sum(len(e.target_ids) for e in examples)
    assert total / count == pytest.approx(float(mean), rel=1e-4)


def test_score_generates_for_the_chosen_positions(tok, model):
    enc = InstructionEncoder(tok, max_tokens=48, template="plain", prompt=HEADLINE)
    examples = enc.encode_examples([Example(f"Story number {i}.", f"Headline {i}") for i in range(4)])
    scores = enc.score(model, examples, batch_size=3, generate=[1, 3], max_new_tokens=4)
    assert [g["reference"] for g in scores.generations] == ["Headline 1", "Headline 3"]
    assert scores.sums["generated"] == 2
    metrics = enc.metrics(scores.sums)
    assert metrics["rouge_l"] == pytest.approx(sum(g["rouge_l"] for g in scores.generations) / 2)
    assert 0.0 <= metrics["exact_match"] <= 1.0
    assert all(g["prompt"].endswith("\nHeadline:") for g in scores.generations)
