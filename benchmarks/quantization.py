"""What weight-only quantization saves in memory and costs in quality, on the bundled models.

For SmolLM2-135M and the tiny random Llama, at fp32, int8 (per channel) and int4 (group-wise,
asymmetric, group 64; plus group 32 for comparison), prints:
    memory   of the full model, and of the split client's share (embeddings + first k blocks)
    quality  relative weight error of the quantized linears; zero-shot accuracy and mean
             true-label NLL on the quickstart's held-out BBC News articles, like the testbed
             evaluates (label log-likelihood after ``Article: ... Topic:``); per-token NLL of
             the articles themselves (general LM quality, the sensitive measure)
    time     wall seconds of one evaluation batch (forward, with on-the-fly dequantization),
             best of 5 rounds in which the variants take turns, and the dequantize and forward
             times of one MLP layer (best of 100); timings on one thread, as a client runs

    python benchmarks/quantization.py [--models smollm2-135m tiny-llama] [--k 4] [--n-test 100]

SmolLM2 was decoded from a Q4_1 GGUF (asymmetric int4, groups of 32), so its weights already
sit on that grid: int4 at group 32 reproduces them almost exactly, while group 64 does not.
The tiny model's weights are random and on no grid, which makes its weight error the honest
one; its accuracy is chance level whatever the scheme. Judge damage by the article NLL: the
zero-shot label scores of an untuned model are badly calibrated, and a perturbation of the
weights can move them either way (int4 g64 raised SmolLM2's zero-shot accuracy from 0.47 to
0.67 while costing +0.42 nats per article token).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from testbed.config.scenario import load_scenario  # noqa: E402
from testbed.ml.assets import resolve_model  # noqa: E402
from testbed.ml.modeling import load_base_model, load_tokenizer  # noqa: E402
from testbed.ml.quantize import QuantizedLinear, format_memory_report, model_memory_bytes, quantize_model  # noqa: E402
from testbed.ml.task import IGNORE_INDEX, EncodedExample, TaskEncoder, evaluate, label_log_likelihoods  # noqa: E402
from testbed.ml.taskdata import build_task_data  # noqa: E402


@dataclass(frozen=True)
class Variant:
    label: str
    scheme: str  # none | int8 | int4
    group_size: int = 64


VARIANTS = (Variant("fp32", "none"), Variant("int8", "int8"), Variant("int4 g64", "int4", 64),
            Variant("int4 g32", "int4", 32))


def client_share(model, k: int) -> nn.Module:
    """The split client's part of a causal LM: token embeddings and the first `k` decoder blocks."""
    decoder = model.get_decoder()
    return nn.ModuleDict({"embed_tokens": decoder.embed_tokens, "layers": nn.ModuleList(decoder.layers[:k])})


def relative_weight_error(reference: nn.Module, quantized: nn.Module) -> float:
    """||W_q - W|| / ||W|| over all quantized linears (0 when nothing is quantized)."""
    ref = dict(reference.named_modules())
    num = den = 0.0
    for name, layer in quantized.named_modules():
        if isinstance(layer, QuantizedLinear):
            w = ref[name].weight
            num += float((layer.dequantize() - w).square().sum())
            den += float(w.square().sum())
    return (num / den) ** 0.5 if den else 0.0


def held_out_examples(model_dir: str, n_test: int) -> tuple[TaskEncoder, list[EncodedExample], int]:
    scenario = load_scenario(REPO / "scenarios" / "quickstart.yaml")
    data = build_task_data(scenario)
    encoder = TaskEncoder(load_tokenizer(model_dir), data.dataset.labels, max_tokens=scenario.dataset.max_tokens)
    idx = data.splits.test[:n_test]
    return encoder, encoder.encode_many(data.texts(idx), data.labels(idx)), scenario.eval.batch_size


def prompts_batch(batch: list[EncodedExample], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) right-padded prompt ids and their attention mask."""
    width = max(len(ex.prompt_ids) for ex in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, ex in enumerate(batch):
        ids[i, : len(ex.prompt_ids)] = torch.tensor(ex.prompt_ids)
        mask[i, : len(ex.prompt_ids)] = 1
    return ids, mask


@torch.no_grad()
def article_nll(model, encoder: TaskEncoder, examples: list[EncodedExample], *, batch_size: int) -> float:
    """Mean next-token NLL over the articles' prompt tokens (general LM quality, nats/token)."""
    total, n_tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        ids, mask = prompts_batch(examples[start : start + batch_size], encoder.pad_id)
        labels = ids.masked_fill(mask == 0, IGNORE_INDEX)  # (B, T)
        n = int((labels[:, 1:] != IGNORE_INDEX).sum())
        total += float(model(input_ids=ids, attention_mask=mask, labels=labels).loss) * n
        n_tokens += n
    return total / n_tokens


def forward_s(models: dict[str, nn.Module], encoder: TaskEncoder, batch: list[EncodedExample], *,
              rounds: int = 5) -> dict[str, float]:
    """Best wall time of one evaluation forward per model, the models taking turns each round
    (so that load from other processes hits every model alike; the minimum resists it)."""
    times: dict[str, list[float]] = {label: [] for label in models}
    for _ in range(rounds):
        for label, model in models.items():
            t0 = time.perf_counter()
            label_log_likelihoods(model, encoder, batch)
            times[label].append(time.perf_counter() - t0)
    return {label: min(ts) for label, ts in times.items()}


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Time as a client worker runs (the quickstart's threads_per_client: 1); one thread also
    suffers less from other load than two threads that wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def best_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@torch.no_grad()
def print_layer_timing(models: dict[str, nn.Module], n_tokens: int, *, repeats: int = 100) -> None:
    """Dequantize and forward times of block 0's MLP up-projection, best of `repeats`: the
    cost of dequantizing on the fly next to the matmul it feeds, robust to other load."""
    layers = {label: m.get_decoder().layers[0].mlp.up_proj for label, m in models.items()}
    some = next(iter(layers.values()))
    x = torch.randn(n_tokens, some.in_features)  # (N, I)
    print(f"\nmlp.up_proj ({some.out_features}x{some.in_features}), {n_tokens} tokens, 1 thread, best of {repeats}")
    print(f"{'model':<9}  {'dequantize ms':>13}  {'forward ms':>10}")
    for label, layer in layers.items():
        deq_ms = 1e3 * best_s(layer.dequantize, repeats) if isinstance(layer, QuantizedLinear) else 0.0
        print(f"{label:<9}  {deq_ms:>13.3f}  {1e3 * best_s(lambda layer=layer: layer(x), repeats):>10.3f}")


@dataclass(frozen=True)
class Row:
    label: str
    weight_error: float  # relative, over the quantized linears
    accuracy: float
    label_nll: float  # nats per example
    article_nll: float  # nats per token
    forward_s: float  # one evaluation batch, best of several


def print_quality(rows: list[Row], n: int, encoder: TaskEncoder, batch_size: int) -> None:
    print(f"\nheld-out BBC News: {n} articles, {encoder.max_tokens} tokens, batch {batch_size}; NLL in nats "
          "(label: per example, article: per token); forward: one batch, 1 thread, best of 5 interleaved")
    print(f"{'model':<9}  {'rel W err':>9}  {'accuracy':>8}  {'label NLL':>9}  {'dNLL':>7}  "
          f"{'article NLL':>11}  {'dNLL':>7}  {'forward s':>9}")
    base = rows[0]
    for r in rows:
        print(f"{r.label:<9}  {r.weight_error:>9.4f}  {r.accuracy:>8.3f}  {r.label_nll:>9.4f}  "
              f"{r.label_nll - base.label_nll:>+7.4f}  {r.article_nll:>11.4f}  "
              f"{r.article_nll - base.article_nll:>+7.4f}  {r.forward_s:>9.3f}")


def bench_model(name: str, *, k: int, n_test: int) -> None:
    model_dir = resolve_model(name)
    encoder, examples, batch_size = held_out_examples(model_dir, n_test)
    reference = load_base_model(model_dir)
    models = {v.label: quantize_model(load_base_model(model_dir), v.scheme, group_size=v.group_size) for v in VARIANTS}
    with one_thread():
        times = forward_s(models, encoder, examples[:batch_size])
    rows = []
    for label, model in models.items():
        res = evaluate(model, encoder, examples, batch_size=batch_size)
        nll = article_nll(model, encoder, examples, batch_size=batch_size)
        rows.append(Row(label, relative_weight_error(reference, model), res.accuracy, res.loss, nll, times[label]))
    n_layers = len(reference.get_decoder().layers)
    print(f"\n=== {name} ({sum(p.numel() for p in reference.parameters()) / 1e6:.1f}M params, {n_layers} blocks)")
    full = {label: model_memory_bytes(m) for label, m in models.items()}
    share = {label: model_memory_bytes(client_share(m, k)) for label, m in models.items()}
    print(f"\nfull model\n{format_memory_report(full)}")
    print(f"\nclient share: embeddings + first {k} of {n_layers} blocks\n{format_memory_report(share)}")
    print_quality(rows, len(examples), encoder, batch_size)
    with one_thread():
        print_layer_timing(models, sum(len(ex.prompt_ids) for ex in examples[:batch_size]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "tiny-llama"])
    ap.add_argument("--k", type=int, default=4, help="decoder blocks on the split client")
    ap.add_argument("--n-test", type=int, default=100, help="held-out articles to evaluate")
    args = ap.parse_args()
    if args.k <= 0 or args.n_test <= 0:
        ap.error('"--k" and "--n-test" must be > 0')
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models:
        bench_model(name, k=args.k, n_test=args.n_test)
    return 0


if __name__ == "__main__":
    sys.exit(main())
