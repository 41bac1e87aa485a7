"""Greedy generation on held-out prompts, scored by ROUGE-L and exact match.

The evaluation subset is fixed for a run: ``eval.generate.samples`` positions of the test set
drawn once from the scenario's seed (:func:`generation_subset`), so every round and every
framework generates for the same prompts. Generation is greedy (no sampling: the score is a
function of the model), stops at the end-of-sequence token or after ``max_new_tokens``, and
runs on left-padded batches with the model's KV cache (Hugging Face ``generate``).

ROUGE-L is the F-measure of the longest common subsequence of words (the ``rouge-score``
package, Porter stemming on); exact match compares the texts lower-cased with punctuation and
extra whitespace removed. Both are per example, averaged over the subset.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from testbed.ml.task import EncodedExample, autocast

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def generation_subset(n_examples: int, samples: int, seed: int) -> tuple[int, ...]:
    """`samples` positions of a held-out set of `n_examples`, seeded, sorted."""
    k = min(samples, n_examples)
    rng = np.random.default_rng([seed, 0x67656E])
    return tuple(sorted(int(i) for i in rng.choice(n_examples, size=k, replace=False)))


def normalize(text: str) -> str:
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def exact_match(reference: str, output: str) -> float:
    return float(normalize(reference) == normalize(output))


@functools.cache
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(reference: str, output: str) -> float:
    """ROUGE-L F-measure of `output` against `reference` (0 where either has no words)."""
    return float(_scorer().score(reference, output)["rougeL"].fmeasure)


@torch.no_grad()
def greedy_ids(model, prompts: Sequence[Sequence[int]], *, pad_id: int, eos_id: int, max_new_tokens: int,
               batch_size: int, precision: str = "fp32") -> list[list[int]]:
    """The greedy continuation of each prompt (ids, the end token excluded)."""
    device = next(model.parameters()).device
    out: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = [list(p) or [eos_id] for p in prompts[start:start + batch_size]]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, p in enumerate(chunk):  # left padding: every row's next token is at the end
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p):] = 1
        with autocast(precision, device.type):
            generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                       max_new_tokens=max_new_tokens, eos_token_id=eos_id, pad_token_id=pad_id,
                                       num_beams=1, temperature=None, top_p=None, top_k=None)
        for row in generated[:, width:].tolist():
            out.append(row[:row.index(eos_id)] if eos_id in row else row)
    return out


def generate_and_score(model, encoder, examples: Sequence[EncodedExample], *, batch_size: int, max_new_tokens: int,
                       precision: str = "fp32") -> list[dict[str, Any]]:
    """For each example: its prompt, reference, greedy output, ROUGE-L and exact match."""
    pairs = [encoder.generation_prompt(ex) for ex in examples]
    outputs = greedy_ids(model, [p for p, _ in pairs], pad_id=encoder.pad_id, eos_id=encoder.eos_id,
                         max_new_tokens=max_new_tokens, batch_size=batch_size, precision=precision)
    decode = encoder.tokenizer.decode
    rows = []
    for (prompt, reference), output in zip(pairs, outputs, strict=True):
        ref_text, out_text = decode(reference, skip_special_tokens=True).strip(), \
            decode(output, skip_special_tokens=True).strip()
        rows.append({"prompt": decode(prompt), "reference": ref_text, "output": out_text,
                     "rouge_l": rouge_l(ref_text, out_text), "exact_match": exact_match(ref_text, out_text)})
    return rows
