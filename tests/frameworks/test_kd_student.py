"""The KD student: which blocks it keeps, and that keeping them all changes nothing."""

from __future__ import annotations

import pytest
import torch

from frameworks.kd.student import load_student, student_layers
from testbed.ml.modeling import load_base_model


@pytest.mark.parametrize(("spec", "expected"), [
    ("first:6", tuple(range(6))),
    ("every:3", (2, 5, 8, 11, 14, 17, 20, 23, 26, 29)),
    ("every:1", tuple(range(30))),
    ("0-7,28,29", (*range(8), 28, 29)),
    (" 3, 1-2 ", (1, 2, 3)),
])
def test_student_layer_specs(spec, expected):
    assert student_layers(spec, 30) == expected


@pytest.mark.parametrize(("spec", "message"), [
    ("first:0", "first:N with N >= 1"),
    ("first:31", "has 30 blocks"),
    ("every:x", "every:N"),
    ("0-40", "outside 0..29"),
    ("5-2", "outside"),
    ("a,b", "bad part 'a'"),
])
def test_bad_student_specs_say_what_was_expected(spec, message):
    with pytest.raises(ValueError, match=message):
        student_layers(spec, 30)


def test_a_student_keeps_the_chosen_blocks_and_all_blocks_is_the_model(assets):
    ids = torch.randint(0, 1000, (2, 12))
    full = load_base_model(str(assets.tiny))
    n = full.config.num_hidden_layers
    same = load_student(str(assets.tiny), f"first:{n}")
    with torch.no_grad():
        assert torch.equal(full(input_ids=ids).logits, same(input_ids=ids).logits)
    student = load_student(str(assets.tiny), "every:2")
    kept = student_layers("every:2", n)
    assert len(student.get_decoder().layers) == len(kept) == student.config.num_hidden_layers
    # the kept blocks are the full model's blocks, weights unchanged
    for new, old in enumerate(kept):
        a = student.get_decoder().layers[new].self_attn.q_proj.weight
        b = full.get_decoder().layers[old].self_attn.q_proj.weight
        assert torch.equal(a, b)
    with torch.no_grad():
        assert student(input_ids=ids).logits.shape == full(input_ids=ids).logits.shape
