"""The generative task kinds: instruction tuning and language modelling.

Instruction: a prompt rendered by the model's chat template (``task.template: chat``) or by
``task.prompt`` (``plain``), then the response and the end-of-sequence token; the loss covers
the response tokens (and the end token) only. The user's prompt is what gets cut: the template
around it always stays, so the model always sees where the response begins. Budgets:
``dataset.max_tokens`` for the whole sequence; ``max_response_tokens`` (default half of it) for
the response, ``max_prompt_tokens`` (default what is left) for the prompt.

Language modelling: the texts of a set (a client's partition, the test set) joined with the
end-of-sequence token between them and cut into blocks of ``max_tokens``; the loss covers every
token but each block's first; the tail shorter than a block is dropped (counted as truncated).

Both score the held-out set by mean negative log-likelihood per supervised token and its
perplexity, plus greedy generations scored by ROUGE-L and exact match (testbed.ml.generation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from testbed.ml.task import (
    IGNORE_INDEX,
    EncodedExample,
    Encoder,
    Scores,
    autocast,
    head_logits,
    last_hidden,
    leading_ids,
    split_template,
    training_batch,
)

CHAT_MARKER = "\u2063PROMPT\u2063"  # stands for the user's prompt while the chat template is rendered


@dataclass
class Truncation:
    """What encoding cut, counted over every example encoded by one encoder."""

    examples: int = 0
    prompts_cut: int = 0
    responses_cut: int = 0
    tokens_dropped: int = 0  # language modelling: tails shorter than a block

    def line(self, kind: str, max_tokens: int) -> str | None:
        """One line for the console, or None where nothing was cut."""
        if kind == "language_modeling":
            return (f"language modelling: {self.tokens_dropped:,} tokens of {self.examples:,} texts did not fill a "
                    f"block of {max_tokens} and were dropped") if self.tokens_dropped else None
        if not (self.prompts_cut or self.responses_cut):
            return None
        return (f"truncated to dataset.max_tokens={max_tokens}: {self.prompts_cut:,} of {self.examples:,} prompts, "
                f"{self.responses_cut:,} responses")


class GenerativeEncoder(Encoder):
    """What instruction and language-modelling encoders share: scoring and distillation positions."""

    def __init__(self, tokenizer, *, max_tokens: int) -> None:
        if max_tokens <= 1:
            raise ValueError(f'"max_tokens" must be > 1, got {max_tokens}')
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.truncation = Truncation()

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def kd_sequence(self, ex: EncodedExample) -> list[int]:
        """The prompt and the reference, teacher-forced (the last reference token predicts nothing)."""
        return list(ex.prompt_ids) + list(ex.target_ids[:-1])

    def kd_positions(self, ex: EncodedExample, positions: str) -> list[int]:
        """Every position that predicts a reference token."""
        n = len(ex.prompt_ids)
        return list(range(max(n - 1, 0), n + len(ex.target_ids) - 1))

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        loss = sums["nll"] / sums["tokens"]
        out = {"eval_loss": loss, "perplexity": math.exp(min(loss, 700.0))}
        if sums.get("generated"):
            out["rouge_l"] = sums["rouge_l"] / sums["generated"]
            out["exact_match"] = sums["exact_match"] / sums["generated"]
        return out

    @torch.no_grad()
    def score(self, model, examples: Sequence[EncodedExample], *, batch_size: int, precision: str = "fp32",
              generate: Sequence[int] = (), max_new_tokens: int = 0) -> Scores:
        model.eval()
        nll, tokens = 0.0, 0
        with autocast(precision, next(model.parameters()).device.type):
            for start in range(0, len(examples), batch_size):
                batch = training_batch(self, examples[start:start + batch_size])
                total, count = token_nll(model, batch)
                nll, tokens = nll + total, tokens + count
        sums = {"nll": nll, "tokens": float(tokens)}
        generations: list[dict[str, Any]] = []
        if generate and max_new_tokens:
            from testbed.ml.generation import generate_and_score

            generations = generate_and_score(model, self, [examples[i] for i in generate], batch_size=batch_size,
                                             max_new_tokens=max_new_tokens, precision=precision)
            sums.update(generated=float(len(generations)), rouge_l=sum(g["rouge_l"] for g in generations),
                        exact_match=sum(g["exact_match"] for g in generations))
        return Scores(sums, generations)

    def generation_prompt(self, ex: EncodedExample) -> tuple[list[int], list[int]]:
        """(prompt ids, reference ids) of a generation: the example's prompt and target."""
        return list(ex.prompt_ids), [t for t in ex.target_ids if t != self.eos_id]


def token_nll(model, batch: dict[str, torch.Tensor]) -> tuple[float, int]:
    """Summed negative log-likelihood of the supervised tokens of `batch`, and their count."""
    labels = batch["labels"]
    hidden = last_hidden(model, batch["input_ids"], batch["attention_mask"])  # (B, T, C)
    rows, cols = (labels[:, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)
    if len(rows) == 0:
        return 0.0, 0
    logits = head_logits(model, hidden[rows, cols])  # (N, V)
    loss = F.cross_entropy(logits.float(), labels[rows, cols + 1].to(logits.device), reduction="sum")
    return float(loss), len(rows)


class InstructionEncoder(GenerativeEncoder):
    """Prompt -> response pairs (testbed.ml.data.Example: `text` or chat `turns`, `label`)."""

    kind = "instruction"

    def __init__(self, tokenizer, *, max_tokens: int, template: str = "auto", prompt: str,
                 max_prompt_tokens: int | None = None, max_response_tokens: int | None = None) -> None:
        super().__init__(tokenizer, max_tokens=max_tokens)
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if template == "chat" and not has_chat:
            raise ValueError("task.template: chat, but the model's tokenizer has no chat template; "
                             "use template: plain")
        self.chat = template == "chat" or (template == "auto" and has_chat)
        self.max_response = max_response_tokens or max_tokens // 2
        self.max_prompt = max_prompt_tokens
        head, lead, tail = split_template(prompt)
        self._plain = (self._ids(head), lead, self._ids(tail))
        self._response_lead = "" if self.chat or not tail or tail[-1].isspace() else " "

    def _frame(self, ex) -> tuple[list[int], str, list[int], str]:
        """(ids before the user's prompt, the lead joined to it, ids after it, the prompt text)."""
        if not self.chat:
            text = ex.text if not ex.turns else "\n\n".join(f"{t.role}: {t.content}" for t in ex.turns)
            head, lead, tail = self._plain
            return head, lead, tail, text
        turns = [{"role": t.role, "content": t.content} for t in ex.turns] or [{"role": "user", "content": ex.text}]
        last_user = max(i for i, t in enumerate(turns) if t["role"] == "user")
        text = turns[last_user]["content"]
        turns[last_user] = {"role": "user", "content": CHAT_MARKER}
        rendered = self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        before, _, after = rendered.partition(CHAT_MARKER)
        return self._ids(before), "", self._ids(after), text

    def encode_examples(self, examples: Sequence[Any]) -> list[EncodedExample]:
        frames = [self._frame(ex) for ex in examples]
        responses = leading_ids(self.tokenizer, [self._response_lead + ex.label for ex in examples],
                                self.max_response + 1)
        bodies = leading_ids(self.tokenizer, [lead + text for _, lead, _, text in frames], self.max_tokens + 1)
        out = []
        for (head, _, tail, _), response, body in zip(frames, responses, bodies, strict=True):
            target = response[:self.max_response] + [self.eos_id]
            budget = self.max_tokens - len(target) - len(head) - len(tail)
            if self.max_prompt is not None:
                budget = min(budget, self.max_prompt)
            budget = max(budget, 1)
            self.truncation.examples += 1
            self.truncation.prompts_cut += len(body) > budget
            self.truncation.responses_cut += len(response) > self.max_response
            out.append(EncodedExample(tuple(head + body[:budget] + tail), -1, tuple(target)))
        return out


class LanguageModelEncoder(GenerativeEncoder):
    """Plain texts (Example.text), joined and cut into blocks of max_tokens."""

    kind = "language_modeling"

    def encode_examples(self, examples: Sequence[Any]) -> list[EncodedExample]:
        stream: list[int] = []
        if examples:
            for ids in self.tokenizer([ex.text for ex in examples], add_special_tokens=False)["input_ids"]:
                stream += list(ids) + [self.eos_id]
        n_blocks = len(stream) // self.max_tokens
        self.truncation.examples += len(examples)
        self.truncation.tokens_dropped += len(stream) - n_blocks * self.max_tokens
        return [EncodedExample((), -1, tuple(stream[b * self.max_tokens:(b + 1) * self.max_tokens]))
                for b in range(n_blocks)]

    def generation_prompt(self, ex: EncodedExample) -> tuple[list[int], list[int]]:
        """The block's first half as the prompt, its second half as the reference."""
        half = len(ex.target_ids) // 2
        return list(ex.target_ids[:half]), list(ex.target_ids[half:])
