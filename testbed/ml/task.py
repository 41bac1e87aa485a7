"""The learning task's common ground, and classification as generation.

Every task kind encodes an example as prompt tokens followed by target tokens
(:class:`EncodedExample`); training puts the loss on the target tokens only
(:func:`training_batch`, :func:`label_loss`), so the frameworks train any kind the same way.
The kinds differ in how they encode and how they score (:class:`Encoder`); the generative
kinds live in testbed.ml.generative.

Classification: an example becomes ``task.prompt`` with the text (cut to max_tokens) in
place of ``{text}`` (by default ``Article: <text>\\nTopic:``), followed by `` <label>``.
Accuracy compares the log-likelihood of every label after the prompt (the highest wins);
held-out loss is the mean negative log-likelihood of the true label's tokens.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
CLASSIFICATION_PROMPT = "Article: {text}\nTopic:"
CHARS_PER_TOKEN_BOUND = 8  # English BPE averages ~4.5 characters a token: 8 x max_tokens is plenty


@dataclass(frozen=True)
class EncodedExample:
    prompt_ids: tuple[int, ...]  # prompt tokens, ending just before the target
    label_index: int = -1  # classification: index into TaskEncoder.labels; -1 for generative kinds
    target_ids: tuple[int, ...] = ()  # the supervised tokens after the prompt (a label, a response, a block)


@dataclass
class Scores:
    """An evaluation's additive sums (combined across data-parallel ranks by adding) and the
    generations it made; Encoder.metrics turns the sums into the rounds table's metrics."""

    sums: dict[str, float]
    generations: list[dict[str, Any]] = field(default_factory=list)


class Encoder(ABC):
    """A task kind's encoding and scoring, behind one interface for the frameworks."""

    kind: str
    tokenizer: Any
    pad_id: int

    @abstractmethod
    def encode_examples(self, examples: Sequence[Any]) -> list[EncodedExample]:
        """testbed.ml.data.Example rows -> encoded examples (language modelling: blocks)."""

    @abstractmethod
    def score(self, model, examples: Sequence[EncodedExample], *, batch_size: int, precision: str = "fp32",
              generate: Sequence[int] = (), max_new_tokens: int = 0) -> Scores:
        """Held-out sums of `examples`; `generate`: positions in `examples` to generate for."""

    @abstractmethod
    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """The rounds table's metrics from (combined) sums."""

    def kd_sequence(self, ex: EncodedExample) -> list[int]:
        """The tokens fed for distillation: the prompt, and (generative kinds) the reference
        teacher-forced after it."""
        return list(ex.prompt_ids)

    def kd_positions(self, ex: EncodedExample, positions: str) -> list[int]:
        """Positions in kd_sequence(ex) whose logits are distilled."""
        n = len(ex.prompt_ids)
        return [n - 1] if positions == "answer" else list(range(n))


def leading_ids(tokenizer, texts: list[str], max_tokens: int) -> list[list[int]]:
    """The first max_tokens token ids of each text. Articles run to thousands of tokens, so
    a prefix of whole words (CHARS_PER_TOKEN_BOUND x max_tokens characters, cut where a word
    ends before whitespace) is tokenized first, all texts in one batch: byte-level BPE never
    merges across that boundary, so its ids begin the text's ids. A whole text only where
    its prefix holds fewer tokens than needed."""
    prefixes = [t[: _word_end_before(t, CHARS_PER_TOKEN_BOUND * max_tokens)] for t in texts]
    ids = tokenizer(prefixes, add_special_tokens=False)["input_ids"] if prefixes else []
    return [row[:max_tokens] if len(row) >= max_tokens or len(p) == len(t)
            else tokenizer(t, add_special_tokens=False)["input_ids"][:max_tokens]
            for row, p, t in zip(ids, prefixes, texts, strict=True)]


def split_template(template: str) -> tuple[str, str, str]:
    """(head, lead, tail) of a one-placeholder prompt template: the text goes between head and
    tail, after `lead` (the head's trailing space, which byte-level BPE joins to the text's
    first word: ``Article: {text}`` tokenizes as ``Article:`` + `` <text>``)."""
    from testbed.config.task import placeholder_of

    marker = "{" + placeholder_of(template) + "}"
    head, _, tail = template.partition(marker)
    head, tail = head.replace("{{", "{").replace("}}", "}"), tail.replace("{{", "{").replace("}}", "}")
    if head.endswith(" "):
        return head[:-1], " ", tail
    return head, "", tail


class TaskEncoder(Encoder):
    """Classification: turns (text, label) pairs into token ids; one per (tokenizer, label
    set, length, prompt)."""

    kind = "classification"

    def __init__(self, tokenizer, labels: Sequence[str], *, max_tokens: int, cache=None,
                 prompt: str = CLASSIFICATION_PROMPT) -> None:
        """`cache`: a testbed.ml.tokencache.TokenCache for this tokenizer and max_tokens, or None."""
        if max_tokens <= 0:
            raise ValueError(f'"max_tokens" must be > 0, got {max_tokens}')
        self.cache = cache
        self.tokenizer = tokenizer
        self.labels = tuple(labels)
        self.max_tokens = max_tokens
        head, self._lead, tail = split_template(prompt)
        self._head = self._ids(head) if head else []
        self._tail = self._ids(tail) if tail else []
        self.label_ids = tuple(tuple(self._ids(" " + label)) for label in self.labels)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, text: str, label: str) -> EncodedExample:
        return self.encode_many([text], [label])[0]

    def encode_many(self, texts: Sequence[str], labels: Sequence[str]) -> list[EncodedExample]:
        spaced = [self._lead + t for t in texts]
        bodies = self.cache.ids(spaced, self._leading_ids) if self.cache is not None else self._leading_ids(spaced)
        out = []
        for body, label in zip(bodies, labels, strict=True):
            index = self.labels.index(label)
            out.append(EncodedExample(tuple(self._head + body + self._tail), index, self.label_ids[index]))
        return out

    def encode_examples(self, examples: Sequence[Any]) -> list[EncodedExample]:
        return self.encode_many([ex.text for ex in examples], [ex.label for ex in examples])

    def _leading_ids(self, texts: list[str]) -> list[list[int]]:
        return leading_ids(self.tokenizer, texts, self.max_tokens)

    @property
    def single_token_labels(self) -> bool:
        return all(len(ids) == 1 for ids in self.label_ids)

    def score(self, model, examples: Sequence[EncodedExample], *, batch_size: int, precision: str = "fp32",
              generate: Sequence[int] = (), max_new_tokens: int = 0) -> Scores:
        res = evaluate(model, self, examples, batch_size=batch_size, precision=precision)
        return Scores({"nll": res.loss * res.n_examples, "correct": res.accuracy * res.n_examples,
                       "n": float(res.n_examples)})

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        n = sums["n"]
        return {"eval_loss": sums["nll"] / n, "accuracy": sums["correct"] / n}


def _word_end_before(text: str, limit: int) -> int:
    """The largest cut <= limit where a word ends and whitespace follows (len(text) where the
    text is no longer than limit; 0 where no word ends before it)."""
    if len(text) <= limit:
        return len(text)
    cut = limit
    while cut > 0 and not (text[cut].isspace() and not text[cut - 1].isspace()):
        cut -= 1
    return cut


def _right_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def training_batch(encoder: TaskEncoder, batch: Sequence[EncodedExample]) -> dict[str, torch.Tensor]:
    """input_ids/attention_mask/labels (B, T) with the loss on the label tokens only."""
    rows = [list(ex.prompt_ids) + list(ex.target_ids) for ex in batch]
    ids, mask = _right_pad(rows, encoder.pad_id)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for i, ex in enumerate(batch):
        start, end = len(ex.prompt_ids), len(rows[i])
        labels[i, start:end] = ids[i, start:end]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def causal_lm(model):
    """The Hugging Face causal LM inside a PEFT wrapper (LoRA layers are injected in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def last_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, C) final hidden states of the decoder, before the LM head."""
    decoder = causal_lm(model).get_decoder()
    device = next(model.parameters()).device
    return decoder(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).last_hidden_state


def head_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """(N, V) logits of the rows of `hidden` (N, C) only: the LM head is a fifth of the
    model's FLOPs at this size, and full (B, T, V) logits dominate activation memory."""
    return causal_lm(model).get_output_embeddings()(hidden)


def label_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of the supervised (label) tokens; equals the model's own loss."""
    labels = batch["labels"]  # (B, T)
    hidden = last_hidden(model, batch["input_ids"], batch["attention_mask"])  # (B, T, C)
    rows, cols = (labels[:, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)  # position p predicts p + 1
    logits = head_logits(model, hidden[rows, cols])  # (N, V)
    return F.cross_entropy(logits.float(), labels[rows, cols + 1].to(logits.device))


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean NLL of the true label's tokens
    accuracy: float  # share of examples whose true label has the highest log-likelihood
    n_examples: int


@torch.no_grad()
def label_log_likelihoods(model, encoder: TaskEncoder, batch: Sequence[EncodedExample]) -> torch.Tensor:
    """(B, n_labels) summed log-probabilities of each label's tokens after each prompt."""
    if encoder.single_token_labels:
        ids, mask = _right_pad([list(ex.prompt_ids) for ex in batch], encoder.pad_id)
        hidden = last_hidden(model, ids, mask)  # (B, T, C)
        last = (mask.sum(dim=1) - 1).to(hidden.device)  # (B,)
        logits = head_logits(model, hidden[torch.arange(len(batch), device=hidden.device), last])  # (B, V)
        logp = F.log_softmax(logits.float(), dim=-1)  # (B, V)
        return logp[:, [ids_[0] for ids_ in encoder.label_ids]].cpu()
    return _multi_token_scores(model, encoder, batch)


def _multi_token_scores(model, encoder: TaskEncoder, batch: Sequence[EncodedExample]) -> torch.Tensor:
    scores = torch.empty(len(batch), len(encoder.labels))
    for j, label in enumerate(encoder.label_ids):
        rows = [list(ex.prompt_ids) + list(label) for ex in batch]
        ids, mask = _right_pad(rows, encoder.pad_id)
        device = next(model.parameters()).device
        logp = F.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), dim=-1)
        logp = logp.cpu()
        for i, ex in enumerate(batch):
            pos = torch.arange(len(ex.prompt_ids) - 1, len(rows[i]) - 1)
            scores[i, j] = logp[i, pos, torch.tensor(label)].sum()
    return scores


def evaluate(
    model, encoder: TaskEncoder, examples: Sequence[EncodedExample], *, batch_size: int, precision: str = "fp32"
) -> EvalResult:
    model.eval()
    correct, nll = 0, 0.0
    with autocast(precision, next(model.parameters()).device.type):
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            scores = label_log_likelihoods(model, encoder, batch)  # (B, n_labels)
            truth = torch.tensor([ex.label_index for ex in batch])
            correct += int((scores.argmax(dim=1) == truth).sum())
            nll -= float(scores[torch.arange(len(batch)), truth].sum())
    n = len(examples)
    return EvalResult(loss=nll / n, accuracy=correct / n, n_examples=n)


def autocast(precision: str, device_type: str = "cpu"):
    """bf16 autocast when asked; a no-op context for fp32."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")
