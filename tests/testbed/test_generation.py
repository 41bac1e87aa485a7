"""Greedy generation and its scores: ROUGE-L, exact match and the seeded evaluation subset."""

from __future__ import annotations

import pytest
import torch

from testbed.ml.generation import exact_match, generation_subset, greedy_ids, normalize, rouge_l
from testbed.ml.modeling import load_base_model


def test_rouge_l_is_the_lcs_f_measure():
    # LCS of "the cat sat" and "the cat sat down" is 3 words: P = 3/4, R = 3/3, F = 6/7
    assert rouge_l("the cat sat", "the cat sat down") == pytest.approx(6 / 7)
    assert rouge_l("Markets rally", "markets rallied") == pytest.approx(1.0)  # stemmed, case-folded
    assert rouge_l("anything", "") == 0.0


def test_exact_match_ignores_case_punctuation_and_spacing():
    assert normalize("  Dollar gains, on Greenspan!") == "dollar gains on greenspan"
    assert exact_match("Dollar gains on Greenspan", "dollar gains on  greenspan.") == 1.0
    assert exact_match("Dollar gains", "Dollar falls") == 0.0


def test_the_subset_is_seeded_sorted_and_capped():
    a = generation_subset(150, 32, seed=0)
    assert a == generation_subset(150, 32, seed=0) and a != generation_subset(150, 32, seed=1)
    assert len(a) == 32 and list(a) == sorted(set(a)) and max(a) < 150
    assert generation_subset(5, 32, seed=0) == (0, 1, 2, 3, 4)


def test_greedy_batches_equal_one_at_a_time(assets):
    model = load_base_model(str(assets.tiny)).eval()
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    together = greedy_ids(model, prompts, pad_id=0, eos_id=2, max_new_tokens=5, batch_size=3)
    alone = [greedy_ids(model, [p], pad_id=0, eos_id=2, max_new_tokens=5, batch_size=1)[0] for p in prompts]
    assert together == alone
    with torch.no_grad():  # the first token is the argmax after the prompt
        first = int(model(input_ids=torch.tensor([prompts[0]])).logits[0, -1].argmax())
    assert together[0][0] == first or together[0] == []
