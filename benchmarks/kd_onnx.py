"""The KD student's logits on ONNX Runtime against torch, on the bundled model.

    python benchmarks/kd_onnx.py                          # the default student (all blocks, int8), 32 prompts
    python benchmarks/kd_onnx.py --quantization none --optimize --threads 2 --positions all

Exports the LoRA student once (timed), then for torch, ORT fp32 and ORT int8 (dynamic
quantization) times the top-k logits of a public batch (median of --repeats runs, same
thread count), and prints top-1 agreement and KL(torch || ORT) over the ORT top-k support,
plus the time to take new adapter weights (no re-export) and the process RSS growth.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from frameworks.kd.framework import encode_public, ort_agreement, position_logits, prompt_batch  # noqa: E402
from frameworks.kd.logits import top_k_of  # noqa: E402
from frameworks.kd.onnx_student import OrtStudent  # noqa: E402
from frameworks.kd.student import load_student  # noqa: E402
from frameworks.training import quantize_blocks  # noqa: E402
from testbed.config.scenario import KDOptions, LoraConfig, load_scenario  # noqa: E402
from testbed.ml.assets import resolve_model  # noqa: E402
from testbed.ml.modeling import attach_lora, load_tokenizer  # noqa: E402
from testbed.ml.task import TaskEncoder  # noqa: E402
from testbed.ml.taskdata import build_task_data  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--student", default="every:1")
    p.add_argument("--quantization", choices=("none", "int8", "int4"), default="int8",
                   help="the student's frozen blocks (kd.student_quantization)")
    p.add_argument("--optimize", action="store_true", help="ORT graph optimizations on (kd.onnx_optimize)")
    p.add_argument("--positions", choices=("answer", "all"), default="answer")
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--public", type=int, default=32, help="public prompts per batch")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    return p.parse_args(argv)


def median_s(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model_dir = resolve_model(args.model)
    scenario = load_scenario(REPO / "scenarios" / "kd_quickstart.yaml", [f"model={args.model}"])
    data = build_task_data(scenario)
    encoder = TaskEncoder(load_tokenizer(model_dir), data.dataset.labels, max_tokens=scenario.dataset.max_tokens)
    public = encode_public(encoder, data.at(data.splits.public[: args.public]))
    ids, mask = prompt_batch(encoder, public)
    opts = KDOptions(top_k=args.top_k, positions=args.positions)
    student = load_student(model_dir, args.student)
    quantize_blocks(student, args.quantization)
    model = attach_lora(student, LoraConfig(), seed=0)
    proc = psutil.Process()
    print(f"student {args.student} ({args.quantization} blocks, ORT optimize={args.optimize}): {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"{args.public} prompts x {ids.shape[1]} tokens, positions {args.positions}, k={args.top_k}, "
          f"{args.threads} thread(s)")

    def torch_topk():
        with torch.no_grad():
            return top_k_of(position_logits(model, encoder, public, opts), args.top_k, opts.temperature)

    torch_s = median_s(torch_topk, args.repeats)
    print(f"{'torch':<12} {torch_s * 1000:8.1f} ms per batch")
    for int8 in (False, True):
        rss0 = proc.memory_info().rss
        ort = OrtStudent(model, k=args.top_k, temperature=opts.temperature, all_positions=args.positions == "all",
                         int8=int8, threads=args.threads, optimize=args.optimize)
        first = ort.refresh()
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.01)  # new adapters, as after a round of training
        update = ort.refresh()
        ort_s = median_s(lambda ort=ort: ort.topk(ids, mask), args.repeats)
        agree = ort_agreement(ort, model, encoder, public, opts)
        name = "ORT int8" if int8 else "ORT fp32"
        print(f"{name:<12} {ort_s * 1000:8.1f} ms per batch ({torch_s / ort_s:.2f}x torch); export "
              f"{first.export_s:.1f} s once, new adapters {update.refresh_s * 1000:.2f} ms; top-1 agreement "
              f"{agree['ort_top1_agreement']:.3f}, KL {agree['ort_kl']:.4f}; RSS +{(proc.memory_info().rss - rss0) / 2**20:.0f} MiB")
        del ort
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
