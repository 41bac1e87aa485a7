"""The published measurements of EdgeFlowerTune and the arithmetic that sets the testbed's
predictions beside them (benchmarks/real_devices.py measures; this module only counts).

Every figure carries the file and line it comes from, in the study's repository
github.com/Edge-Intelligence-Lab/EdgeFlowerTune at commit c5f9bdd. PROFILE is
docs/original/current_system_and_device_profile_20260421.md, REPORT is docs/original/report.md.

A row is one client's published average in one run (per-client tables) or one run's published
average (the three-phone validation). `fit` rows (the FedAvg WikiText run) set each runtime's
training efficiency; every other row is held out.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace

PROFILE = "docs/original/current_system_and_device_profile_20260421.md"
REPORT = "docs/original/report.md"
FEDAVG_WIKI = "configs/classic_fl_gemma3_fedavg_lora_eight_client_formal_seq64_wikitext_b8_r250.yaml"
SPLIT_WIKI = "legacy_split/configs/splitlora_gemma270m_eight_client_wikitext_seq64_b8_l10_r100.yaml"

PHONE, JETSON = "phone", "jetson"
# Runtimes: the phones' C++ client (BLAS off, CPU) and the Jetsons' PyTorch on the GPU; the
# split clients are the C++ client on every device (SPLIT_WIKI:72).
CPP_CPU, TORCH_GPU = "C++ CPU (BLAS off)", "PyTorch CUDA"

# Shapes of a local step: (batch, seq, micro-batches accumulated).
PHONE_B8 = (8, 64, 1)  # FEDAVG_WIKI:41,43 (batch 8, seq 64)
JETSON_MB1 = (1, 64, 8)  # FEDAVG_WIKI:23,42 (jetson_batch_size 1, jetson_grad_accum_steps 8)
VALIDATION_B1 = (1, 128, 1)  # REPORT:70-71 (batch 1, max_seq_len 128)


@dataclass(frozen=True)
class Row:
    run: str  # which published run
    client: str  # client id or device class
    device: str  # PHONE | JETSON
    runtime: str  # CPP_CPU | TORCH_GPU
    shape: tuple[int, int, int]  # (batch, seq, accumulation) of a local step
    step_s: float | None  # published mean seconds per local step
    rss_mb: float | None  # published mean RSS, MB
    up_bytes: float | None  # published upload bytes per client-round
    source: str  # file:line of this row
    fit: bool = False  # used to fit the runtime efficiency
    rss_comparable: bool = True  # False where the published RSS leaves the model's memory out
    bytes_comparable: bool = True  # False where the published payload depends on unknown token counts
    rank: int = 8  # LoRA rank of the uploaded adapter
    split: bool = False  # SplitLoRA: the client holds the embeddings only and uploads activations


def _clients(run, fit, line0, data, device, runtime, shape, up, rss_ok=True):
    return [Row(run, cid, device, runtime, shape, step, rss, up, f"{PROFILE}:{line0 + i}", fit, rss_ok)
            for i, (cid, rss, step) in enumerate(data)]


_JET_UP = (23_650_560 - 5 * 2_960_640) / 3  # PROFILE:222 total of 8 clients less 5 phones (REPORT:150)
_PHONE_UP = 2_960_640.0  # REPORT:150 (PROFILE:221 rounds it to 2.961 MB)
_SPLIT_UP = 13.353e6  # PROFILE:226, 325-332 (13.353 MB per client-round, 10 local steps)

ROWS: tuple[Row, ...] = (
    *_clients("FedAvg WikiText", True, 260, [("jetson_121", 731.2, 11.3659), ("jetson_151", 606.6, 14.1289),
              ("jetson_88", 589.4, 11.8274)], JETSON, TORCH_GPU, JETSON_MB1, _JET_UP, rss_ok=False),
    *_clients("FedAvg WikiText", True, 263, [("nova_19", 1070.6, 170.1887), ("nova_252", 1070.6, 174.3541),
              ("nova_49", 1065.6, 170.3717), ("nova_72", 1069.2, 170.5589), ("nova_78", 1071.3, 170.6399)],
              PHONE, CPP_CPU, PHONE_B8, _PHONE_UP),
    *_clients("FedAvg MMLU", False, 295, [("jetson_121", 601.3, 10.8456), ("jetson_151", 622.5, 12.3349),
              ("jetson_88", 805.4, 10.3642)], JETSON, TORCH_GPU, JETSON_MB1, _JET_UP, rss_ok=False),
    *_clients("FedAvg MMLU", False, 298, [("nova_19", 1072.4, 167.5717), ("nova_252", 1071.8, 171.0454),
              ("nova_49", 1069.3, 168.0978), ("nova_72", 1070.8, 167.7521), ("nova_78", 1072.3, 167.3728)],
              PHONE, CPP_CPU, PHONE_B8, _PHONE_UP),
    *[replace(r, split=True) for r in _clients("SplitLoRA WikiText l10", False, 325, [
        ("jetson_121", 1390.6, 0.1957), ("jetson_151", 1391.1, 0.1956), ("jetson_88", 1391.1, 0.1956)],
        JETSON, CPP_CPU, PHONE_B8, _SPLIT_UP)],
    *[replace(r, split=True) for r in _clients("SplitLoRA WikiText l10", False, 328, [
        ("nova_19", 1155.2, 0.1951), ("nova_252", 1155.1, 0.1961), ("nova_49", 1155.3, 0.1970),
        ("nova_72", 1155.6, 0.1972), ("nova_78", 1154.9, 0.1949)], PHONE, CPP_CPU, PHONE_B8, _SPLIT_UP)],
    # The three-phone validation (REPORT: batch 1, seq 128, local_steps 1 unless said; no RSS).
    Row("3-phone FedAvg b1 s128", "nova x3", PHONE, CPP_CPU, VALIDATION_B1, 229.5, None, 2_960_640, f"{REPORT}:149-150"),
    Row("3-phone FedProx b1 s128", "nova x3", PHONE, CPP_CPU, VALIDATION_B1, 457.3 / 2, None, 2_960_640,
        f"{REPORT}:194,223-224 (457.3 s for 2 local steps)"),
    Row("3-phone local-only b1 s128", "nova x3", PHONE, CPP_CPU, VALIDATION_B1, 226.5, None, 2_960_640,
        f"{REPORT}:465-466"),
    Row("3-phone FlexLoRA b1 s128", "nova_19 r4", PHONE, CPP_CPU, VALIDATION_B1, None, None, 1_486_080,
        f"{REPORT}:294", rank=4),
    Row("3-phone FlexLoRA b1 s128", "nova_72 r8", PHONE, CPP_CPU, VALIDATION_B1, None, None, 2_960_640,
        f"{REPORT}:295"),
    Row("3-phone FlexLoRA b1 s128", "nova_49 r16", PHONE, CPP_CPU, VALIDATION_B1, None, None, 5_909_760,
        f"{REPORT}:296", rank=16),
    Row("3-phone FlexLoRA b1 s128", "nova x3 (r4/8/16)", PHONE, CPP_CPU, VALIDATION_B1, 269.1, None, None,
        f"{REPORT}:298 (mean over ranks 4, 8, 16; predicted at r8)"),
    Row("3-phone SplitLoRA b1 s128", "nova x3", PHONE, CPP_CPU, VALIDATION_B1, None, None, 185_751.56,
        f"{REPORT}:387 (pad_to_max_seq_len false: bytes follow each prompt's token count)",
        bytes_comparable=False, split=True),
)


@dataclass(frozen=True)
class Prediction:
    """The testbed's numbers for one row."""

    step_s: float | None  # device seconds per local step, from sourced device numbers alone
    rss_mb: float | None  # peak RSS of the memory model, MiB (the study reports RSS in MB of 2^20 bytes)
    up_bytes: float  # upload bytes per client-round as the framework serialises them


def ratio(predicted: float | None, published: float | None) -> float | None:
    if predicted is None or published is None or published == 0:
        return None
    return predicted / published


def fit_efficiency(rows: list[Row], preds: list[Prediction]) -> dict[str, float]:
    """Each runtime's training efficiency: the median of sourced-prediction / published step
    time over its `fit` rows (a runtime slower than the host's PyTorch gets < 1)."""
    by_runtime: dict[str, list[float]] = {}
    for row, pred in zip(rows, preds, strict=True):
        r = ratio(pred.step_s, row.step_s)
        if row.fit and r is not None:
            by_runtime.setdefault(row.runtime, []).append(r)
    return {rt: statistics.median(v) for rt, v in by_runtime.items()}


def fitted_step_s(row: Row, pred: Prediction, efficiency: dict[str, float]) -> float | None:
    """The step time once the runtime's fitted efficiency divides the device's rate."""
    if pred.step_s is None or row.runtime not in efficiency:
        return None
    return pred.step_s / efficiency[row.runtime]


def held_out_medians(rows: list[Row], preds: list[Prediction], efficiency: dict[str, float]) -> tuple[float, float]:
    """(median fitted step-time ratio, median RSS ratio) over the rows not used to fit
    (RSS only where the published RSS covers what the memory model counts)."""
    steps = [ratio(fitted_step_s(r, p, efficiency), r.step_s) for r, p in zip(rows, preds, strict=True) if not r.fit]
    rss = [ratio(p.rss_mb, r.rss_mb) for r, p in zip(rows, preds, strict=True) if not r.fit and r.rss_comparable]
    return _median([s for s in steps if s is not None]), _median([s for s in rss if s is not None])


def bytes_max_error_pct(rows: list[Row], preds: list[Prediction]) -> float:
    """Largest |predicted / published - 1| of the upload bytes, in %, over comparable rows."""
    errs = [abs(p.up_bytes / r.up_bytes - 1.0) * 100.0 for r, p in zip(rows, preds, strict=True)
            if r.up_bytes is not None and r.bytes_comparable]
    return max(errs) if errs else math.nan


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan
