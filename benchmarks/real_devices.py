"""Fidelity against real devices: predict EdgeFlowerTune's phone/Jetson federated-LoRA
measurements with the testbed's own models and report the error.

    python benchmarks/real_devices.py [--quick]

For every published row (benchmarks/real_devices_study.py, each with its file:line), the
testbed predicts:

- device seconds per local step: a real training step of Gemma 3 270M (random weights, the
  study's configuration, testbed/ml/study_models.py) at the row's shape, timed on this host,
  converted by the testbed's roofline (testbed.host.roofline.dilate, as DeviceTime does) with
  the device profile's sourced numbers (hi-nova-9-pro: CPU; jetson-nano: its GPU for the
  PyTorch clients, its CPU for the C++ split clients). A split client's step is its embedding
  lookup and packing (memory-bound copies), compared with the client's own published round
  time over its ten steps (the study's "step" column there is its server's suffix step);
- peak RSS: the testbed's memory model (testbed.ml.memory_need: fp32 weights held, 16 B per
  LoRA parameter, one fp32 hidden state per token per block, the worker runtime); for the
  split client, the embeddings, the runtime and the payloads the study's client holds when it
  samples its RSS;
- upload bytes per client-round: the adapter as the framework serialises it
  (testbed.ml.modeling.serialize) or, for SplitLoRA, 10 steps of cut activations as
  frameworks/split packs them (pack_activations).

It prints the prediction from sourced numbers alone first, then fits one training efficiency
per runtime on the FedAvg WikiText run and tests it on every other row; the C++ split client's
efficiency is fitted leave-one-group-out (on the Jetsons for the phones, on the phones for the
Jetsons), and so is an additive RSS term for it: the process memory the memory model does not
count (its tokenizer, the platform's process memory), the median published - predicted RSS of
the other device class's split rows. The shapes take
turns step by step and the host is calibrated before and after them (the mean is used), so a
shared host's changing load falls on all alike. --quick times one step per shape (two of the
Jetson's eight micro-batches, scaled) instead of a warm-up and two timed passes; it takes
about 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.real_devices_study import (
    CPP_CPU,
    CPP_SPLIT,
    JETSON,
    JETSON_MB1,
    LEAVE_ONE_GROUP_OUT,
    PHONE_B8,
    ROWS,
    SPLIT_LOCAL_STEPS,
    TORCH_GPU,
    VALIDATION_B1,
    Fit,
    Prediction,
    Row,
    bytes_max_error_pct,
    fit_efficiency,
    fitted_rss_mb,
    fitted_step_s,
    held_out_medians,
    ratio,
    split_client_held_bytes,
    split_step_payload_bytes,
)
from device_profiles import get_device
from frameworks.split.model import CutActivations, pack_activations
from testbed.host.calibration import HostCalibration, calibrate_host
from testbed.host.roofline import dilate
from testbed.ml import memory_need
from testbed.ml.modeling import adapter_state, serialize
from testbed.ml.study_models import (
    FEDAVG_LORA,
    GEMMA3_270M_SOURCE,
    QWEN05B_SOURCE,
    StudyLora,
    build_gemma3_270m,
    gemma3_270m_facts,
    params,
    qwen05b_facts,
    with_lora,
)
from testbed.ml.workload import Workload, lora_training_workload

PHONE_PROFILE, JETSON_PROFILE = "hi-nova-9-pro", "jetson-nano"


def _batch(model, batch: int, seq: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (batch, seq), generator=g)


def time_step(model, opt, shape: tuple[int, int, int], *, timed_micro: int, seed: int) -> float:
    """Host seconds of one local step at (batch, seq, accumulation): forward and backward of
    each micro-batch, then one AdamW step. `timed_micro` < accumulation times that many
    micro-batches and scales them to the whole step."""
    batch, seq, accum = shape
    timed = min(timed_micro, accum)
    ids = _batch(model, batch, seq, seed)
    t0 = time.perf_counter()
    for _ in range(timed):
        model(input_ids=ids, labels=ids).loss.backward()
    t_micro = time.perf_counter() - t0
    t1 = time.perf_counter()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return t_micro * accum / timed + time.perf_counter() - t1


def time_steps(model, shapes, *, quick: bool) -> dict[tuple[int, int, int], float]:
    """Median host seconds per shape; the shapes take turns (one step each per pass), so a
    changing load on a shared host falls on all of them alike. Full: a warm-up pass and two
    timed passes; quick: one pass, two micro-batches of an accumulated step."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    model.train()
    passes = 1 if quick else 3
    runs: dict[tuple[int, int, int], list[float]] = {s: [] for s in shapes}
    for rep in range(passes):
        for shape in shapes:
            runs[shape].append(time_step(model, opt, shape, timed_micro=2 if quick else shape[2], seed=rep))
    return {s: statistics.median(v[1:] if len(v) > 2 else v) for s, v in runs.items()}


def adapter_bytes(base, rank: int) -> int:
    """Serialised size of the study's q/k/v/o adapter at `rank` (the model is unwrapped after)."""
    peft_model = with_lora(base, StudyLora(rank, FEDAVG_LORA.alpha, FEDAVG_LORA.targets, FEDAVG_LORA.source))
    n = len(serialize(adapter_state(peft_model)))
    peft_model.unload()
    return n


def split_step(base, shape: tuple[int, int, int], *, repeats: int = 50) -> tuple[float, int]:
    """(host seconds, upload bytes) of one split client step with the cut before the first
    block: the client embeds the batch and packs the cut activations, mask and labels for the
    upload, the work the study's client times as its round (median of `repeats` after a
    warm-up: one step is about a millisecond)."""
    batch, seq, _ = shape
    ids = _batch(base, batch, seq, 0)
    embed = base.get_input_embeddings()

    def step() -> bytes:
        acts = CutActivations(hidden=embed(ids), attention_mask=torch.ones_like(ids), labels=ids)
        return pack_activations(acts)

    runs = []
    with torch.no_grad():
        packed = step()
        for _ in range(repeats):
            t0 = time.perf_counter()
            packed = step()
            runs.append(time.perf_counter() - t0)
    return statistics.median(runs), len(packed)


def split_workload(batch: int, seq: int, hidden: int) -> Workload:
    """A split client step is copies: one multiply per embedded number (the row gather scales,
    prefix_encoder.cpp:554-563) and each payload byte read once and written once."""
    return Workload(flops=float(batch * seq * hidden), bytes_moved=2.0 * split_step_payload_bytes(batch, seq, hidden))


def rss_mib(*, weights_params: int, trainable: int, tokens: int, blocks: int) -> float:
    """The memory model's peak: fp32 weights, LoRA state, activations, worker runtime."""
    facts = gemma3_270m_facts()
    activations = tokens * facts.hidden_size * max(1, blocks) * 4.0
    return ((weights_params * 4.0 + trainable * memory_need.TRAINABLE_BYTES + activations) / memory_need.MIB
            + memory_need.WORKER_RUNTIME_MB)


def device_s(host_s: float, work: Workload, host: HostCalibration, row: Row) -> float:
    profile = get_device(PHONE_PROFILE if row.device != JETSON else JETSON_PROFILE)
    gpu = row.runtime == TORCH_GPU
    gflops = profile.accelerator_gflops if gpu and profile.accelerator_gflops else profile.cpu_gflops
    return dilate(host_s, workload=work, host=host, device_gflops=gflops,
                  device_mem_bandwidth_gbps=profile.mem_bandwidth_gbps or 1.0).device_s


def measure(quick: bool) -> tuple[HostCalibration, dict]:
    threads = torch.get_num_threads()
    before = calibrate_host(threads=threads, seconds=1.0 if quick else 2.0)
    base = build_gemma3_270m(seed=0)
    n_base, _ = params(base)
    m: dict = {"n_base": n_base, "bytes": {r: adapter_bytes(base, r) for r in (4, 8, 16)}}
    model = with_lora(base, FEDAVG_LORA)
    m["n_params"], m["n_trainable"] = params(model)
    m["host_s"] = time_steps(model, (PHONE_B8, JETSON_MB1, VALIDATION_B1), quick=quick)
    m["split_host_s"], m["split_bytes"] = {}, {}
    for shape in (PHONE_B8, VALIDATION_B1):
        m["split_host_s"][shape], m["split_bytes"][shape] = split_step(model.get_base_model(), shape)
    after = calibrate_host(threads=threads, seconds=1.0 if quick else 2.0)  # the load may have changed
    host = replace(before, gemm_gflops_fp32=(before.gemm_gflops_fp32 + after.gemm_gflops_fp32) / 2,
                   mem_bandwidth_gbps=(before.mem_bandwidth_gbps + after.mem_bandwidth_gbps) / 2)
    m["gemm_gflops"] = (before.gemm_gflops_fp32, after.gemm_gflops_fp32)
    return host, m


def predict(row: Row, host: HostCalibration, m: dict) -> Prediction:
    facts = gemma3_270m_facts()
    batch, seq, accum = row.shape
    if row.split:
        embed = facts.embed_params
        step = device_s(m["split_host_s"][row.shape], split_workload(batch, seq, facts.hidden_size), host, row)
        # the memory model's embeddings and runtime, plus the payloads the study's client holds
        # when it samples RSS (in place of the model's one hidden state)
        held = split_client_held_bytes(batch, seq, facts.hidden_size) / memory_need.MIB
        return Prediction(step if row.step_s is not None else None,
                          rss_mib(weights_params=embed, trainable=0, tokens=0, blocks=0) + held,
                          float(SPLIT_LOCAL_STEPS * m["split_bytes"][row.shape]))
    work = lora_training_workload(n_params=m["n_params"], n_trainable=m["n_trainable"], tokens=batch * seq * accum)
    step = device_s(m["host_s"][row.shape], work, host, row)
    trainable = m["n_trainable"] * row.rank // 8
    rss = rss_mib(weights_params=m["n_base"], trainable=trainable, tokens=batch * seq, blocks=facts.n_blocks)
    return Prediction(step if row.step_s is not None else None, rss, float(m["bytes"][row.rank]))


def _f(x: float | None, fmt: str = ".3g") -> str:
    return "-" if x is None else format(x, fmt)


def print_table(title: str, rows: list[Row], preds: list[Prediction], eff: Fit | None) -> None:
    print(f"\n{title}")
    print(f"{'run':<27} {'client':<18} {'step pub s':>10} {'pred s':>9} {'ratio':>7} {'rss pub':>8} {'pred':>7} "
          f"{'ratio':>6} {'up pub B':>11} {'pred B':>11} {'err %':>6}  source")
    for r, p in zip(rows, preds, strict=True):
        step = fitted_step_s(r, p, eff) if eff is not None else p.step_s
        rss = fitted_rss_mb(r, p, eff) if eff is not None else p.rss_mb
        rss_r = ratio(rss, r.rss_mb) if r.rss_comparable else None
        err = None if r.up_bytes is None or not r.bytes_comparable else (p.up_bytes / r.up_bytes - 1) * 100
        note = "" if r.rss_comparable or r.rss_mb is None else " [rss: CUDA memory outside]"
        note += "" if r.bytes_comparable else " [bytes: per-prompt lengths]"
        note += "" if r.server_step_s is None else f" [client round / 10; {r.server_step_s:.4g} s = server step]"
        print(f"{r.run:<27} {r.client:<18} {_f(r.step_s, '.4g'):>10} {_f(step):>9} {_f(ratio(step, r.step_s)):>7} "
              f"{_f(r.rss_mb, '.5g'):>8} {_f(rss, '.5g'):>7} {_f(rss_r, '.3f'):>6} {_f(r.up_bytes, '.0f'):>11} "
              f"{p.up_bytes:>11.0f} {_f(err, '+.2f'):>6}  {r.source}{note}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one timed step per shape (about 3 minutes on 2 cores)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    host, m = measure(args.quick)
    rows = list(ROWS)
    preds = [predict(r, host, m) for r in rows]
    print(f"EdgeFlowerTune (github.com/Edge-Intelligence-Lab/EdgeFlowerTune c5f9bdd) against the testbed; "
          f"model {GEMMA3_270M_SOURCE}: {m['n_params']:,} parameters, {m['n_trainable']:,} LoRA")
    print(f"host: {host.cpu_model}, {host.threads} threads, fp32 GEMM {host.gemm_gflops_fp32:.1f} GFLOP/s "
          f"(mean of {m['gemm_gflops'][0]:.1f} before and {m['gemm_gflops'][1]:.1f} after the steps), "
          f"copy {host.mem_bandwidth_gbps:.1f} GB/s; host s/step: "
          + ", ".join(f"b{b} s{s} x{a}: {v:.2f}" for (b, s, a), v in m["host_s"].items())
          + "; split client step (embed and pack) b8 s64: " + f"{m['split_host_s'][PHONE_B8] * 1e3:.2f} ms")
    print("energy per step: not published (PROFILE:139: no board power on the Jetsons; no phone power figure)")
    print("download bytes: not published (PROFILE:218-227 gives uploads only)")
    qwen = qwen05b_facts()
    qwen_lora = memory_need.lora_params(qwen, FEDAVG_LORA.config(), FEDAVG_LORA.targets, qwen.n_blocks)
    print(f"other study models, no published timings: Qwen 0.5B ({QWEN05B_SOURCE}): {qwen.n_params:,} parameters "
          f"(biases aside), LoRA r8 q/k/v/o {qwen_lora:,} = {4 * qwen_lora:,} B fp32; Gemma 3 1B: its configuration "
          "is not in the repository (read from the model folder at run time), not built")
    print_table("1. From sourced device numbers alone (no fitting)", rows, preds, None)
    fit = fit_efficiency(rows, preds)
    print("\nfitted training efficiency (on the FedAvg WikiText rows): "
          + ", ".join(f"{rt}: {v:.4f}" for rt, v in fit.by_runtime.items()))
    print("fitted leave-one-group-out: " + ", ".join(
        f"{rt} for the {dev} rows {v:.4f} (fitted on the other devices' rows)" for (rt, dev), v in fit.by_runtime_device.items()))
    print("fitted leave-one-group-out, process memory the memory model does not count (MiB added to the split "
          "client's predicted RSS: its Hugging Face tokenizer and the platform's process memory, sizes not "
          "published; median published - predicted RSS): " + ", ".join(
              f"{rt} for the {dev} rows {v:.1f} (fitted on the other devices' rows)"
              for (rt, dev), v in fit.rss_extra_mib.items()))
    if CPP_CPU not in fit.by_runtime:
        print("no C++ rows to fit", file=sys.stderr)
    groups = {"2a. Fitted rows (FedAvg WikiText)": lambda r: r.fit,
              "2b. Held-out rows": lambda r: not r.fit and r.runtime not in LEAVE_ONE_GROUP_OUT,
              f"2c. Held-out rows, {CPP_SPLIT} fitted leave-one-group-out (each device class with the "
              "other's efficiency and RSS term)": lambda r: r.runtime in LEAVE_ONE_GROUP_OUT}
    for title, keep in groups.items():
        idx = [i for i, r in enumerate(rows) if keep(r)]
        print_table(title, [rows[i] for i in idx], [preds[i] for i in idx], fit)
    print(f"\nsplit client memory: the embeddings ({gemma3_270m_facts().embed_params:,} fp32), the worker runtime "
          f"({memory_need.WORKER_RUNTIME_MB:.0f} MiB) and {split_client_held_bytes(8, 64, 640) / memory_need.MIB:.2f} "
          "MiB of payloads held when RSS is sampled (split_flower_client.cpp:201-216, 485-498, 553-556); not counted, "
          "no size published: the packed WikiText shard (int32 ids, prefix_encoder.cpp:126-128, 140-201) and the "
          "Hugging Face tokenizer (tokenizer_hf.cpp:18-32, the model folder's tokenizer.json): these and the "
          "platform's process memory are the fitted term above")
    for name, keep in (("FedAvg MMLU", lambda r: r.run == "FedAvg MMLU"),
                       ("3-phone validation", lambda r: r.run.startswith("3-phone")),
                       ("SplitLoRA client", lambda r: r.runtime == CPP_SPLIT)):
        sub = [(r, p) for r, p in zip(rows, preds, strict=True) if keep(r)]
        st, rs = held_out_medians([r for r, _ in sub], [p for _, p in sub], fit)
        print(f"held-out medians, {name}: step {st:.3f}, rss {rs:.3f}")
    step_med, rss_med = held_out_medians(rows, preds, fit)
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    print(f"held-out median step-time ratio: {step_med:.3f}")
    print(f"held-out median rss ratio: {rss_med:.3f}")
    print(f"bytes max error %: {bytes_max_error_pct(rows, preds):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
