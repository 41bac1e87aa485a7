"""The published measurements of EdgeFlowerTune and the arithmetic that sets the testbed's
predictions beside them (benchmarks/real_devices.py measures; this module only counts).

Every figure carries the file and line it comes from, in the study's repository
github.com/Edge-Intelligence-Lab/EdgeFlowerTune at commit c5f9bdd. PROFILE is
docs/original/current_system_and_device_profile_20260421.md, REPORT is docs/original/report.md.

A row is one client's published average in one run (per-client tables) or one run's published
average (the three-phone validation). `fit` rows (the FedAvg WikiText run) set each runtime's
training efficiency; every other row is held out. The C++ split client's rows are fitted
leave-one-group-out instead: the phones' rows with the efficiency fitted on the Jetsons' rows
and the other way round, so each of them is held out from the number that predicts it; so is
their RSS term, the process memory the memory model does not count (published - predicted).

The SplitLoRA table's "step" column (PROFILE:325-332, 0.195 s on every device) is not the
client's: the splitlora server (src/lshaped/server/run_server.py:96-99) logs the metrics of its
own suffix step (src/lshaped/server/gemma_suffix_trainer.py:248, 321-331: `mean_step_time_sec`
is the server's elapsed time of one local step's forward and backward, averaged over the ten at
363-372) into the per-client metrics row (:415-446, the server's fields after the client's).
The client's own time is its `client_round_time_sec` (PROFILE:323-332 fourth column; the client
measures it from before the first of its ten encode steps to the end of serialising them,
clients/cpp/src/split_flower_client.cpp:478, 483-499, 508-543, 552, 595). A split row's
`step_s` is that time / 10; the server's figure is kept as `server_step_s`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

PROFILE = "docs/original/current_system_and_device_profile_20260421.md"
REPORT = "docs/original/report.md"
FEDAVG_WIKI = "configs/classic_fl_gemma3_fedavg_lora_eight_client_formal_seq64_wikitext_b8_r250.yaml"
SPLIT_WIKI = "legacy_split/configs/splitlora_gemma270m_eight_client_wikitext_seq64_b8_l10_r100.yaml"

PHONE, JETSON = "phone", "jetson"
# Runtimes: the phones' C++ client (BLAS off, CPU) and the Jetsons' PyTorch on the GPU; the
# split clients are the C++ client on every device (SPLIT_WIKI:72).
CPP_CPU, TORCH_GPU = "C++ CPU (BLAS off)", "PyTorch CUDA"
# The split client's step is copies, not GEMMs (prefix_encoder.cpp:466-517: token ids, an
# embedding-row gather, the payload arrays; split_flower_client.cpp:201-216, 511-542: appended
# and serialised): a runtime apart from the GEMM kernels the FedAvg rows fit.
CPP_SPLIT = "C++ split client (copies)"

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
    server_step_s: float | None = None  # SplitLoRA: the published server-side suffix step, s (not a client time)


def _clients(run, fit, line0, data, device, runtime, shape, up, rss_ok=True):
    return [Row(run, cid, device, runtime, shape, step, rss, up, f"{PROFILE}:{line0 + i}", fit, rss_ok)
            for i, (cid, rss, step) in enumerate(data)]


_JET_UP = (23_650_560 - 5 * 2_960_640) / 3  # PROFILE:222 total of 8 clients less 5 phones (REPORT:150)
_PHONE_UP = 2_960_640.0  # REPORT:150 (PROFILE:221 rounds it to 2.961 MB)
_SPLIT_UP = 13.353e6  # PROFILE:226, 325-332 (13.353 MB per client-round, 10 local steps)
SPLIT_LOCAL_STEPS = 10  # SPLIT_WIKI:19


def _split(run, line0, data, device):
    """Split rows: (client, mean RSS MB, server step s, client_round_time s) per PROFILE line;
    the client's step is its round time over the ten local steps."""
    return [Row(run, cid, device, CPP_SPLIT, PHONE_B8, client_round / SPLIT_LOCAL_STEPS, rss, _SPLIT_UP,
                f"{PROFILE}:{line0 + i}", split=True, server_step_s=server)
            for i, (cid, rss, server, client_round) in enumerate(data)]


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
    *_split("SplitLoRA WikiText l10", 325, [("jetson_121", 1390.6, 0.1957, 0.045), ("jetson_151", 1391.1, 0.1956, 0.046),
            ("jetson_88", 1391.1, 0.1956, 0.046)], JETSON),
    *_split("SplitLoRA WikiText l10", 328, [("nova_19", 1155.2, 0.1951, 0.090), ("nova_252", 1155.1, 0.1961, 0.082),
            ("nova_49", 1155.3, 0.1970, 0.087), ("nova_72", 1155.6, 0.1972, 0.088),
            ("nova_78", 1154.9, 0.1949, 0.085)], PHONE),
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
    Row("3-phone SplitLoRA b1 s128", "nova x3", PHONE, CPP_SPLIT, VALIDATION_B1, None, None, 185_751.56,
        f"{REPORT}:387 (pad_to_max_seq_len false: bytes follow each prompt's token count)",
        bytes_comparable=False, split=True),
)


def split_step_payload_bytes(batch: int, seq: int, hidden: int) -> int:
    """One local step's payload as the study's split client holds and sends it
    (clients/cpp/src/prefix_encoder.cpp:629-635; split_flower_client.cpp:511-542): activation
    f32 [B,S,H], target embedding f32 [B,H], attention mask and target ids i32 [B,S], valid
    lengths i32 [B]."""
    return 4 * (batch * seq * hidden + batch * hidden + 2 * batch * seq + batch)


def split_client_held_bytes(batch: int, seq: int, hidden: int, local_steps: int = SPLIT_LOCAL_STEPS) -> float:
    """Payload bytes the split client holds, averaged over its RSS samples: it samples RSS after
    each local step and reports their mean (split_flower_client.cpp:495-498, 553-556); after
    step k it holds the round's batch appended so far, k steps (AppendBatch, :201-216, 492), and
    that step's own batch, still in scope (:485-487), so k + 1 steps' payloads."""
    per_step = split_step_payload_bytes(batch, seq, hidden)
    return per_step * statistics.fmean(k + 1 for k in range(1, local_steps + 1))


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


# The runtimes fitted leave-one-group-out across device classes rather than on the `fit` rows.
LEAVE_ONE_GROUP_OUT = (CPP_SPLIT,)


@dataclass(frozen=True)
class Fit:
    """Fitted training efficiencies: one per runtime from the `fit` rows, and for the runtimes
    in LEAVE_ONE_GROUP_OUT one per (runtime, device) fitted on that runtime's other devices."""

    by_runtime: dict[str, float]
    by_runtime_device: dict[tuple[str, str], float] = field(default_factory=dict)
    # (runtime, device) -> MiB of process memory the memory model does not count, added to the
    # predicted RSS of a LEAVE_ONE_GROUP_OUT runtime's rows; fitted on the other devices' rows
    rss_extra_mib: dict[tuple[str, str], float] = field(default_factory=dict)

    def for_row(self, row: Row) -> float | None:
        if row.runtime in LEAVE_ONE_GROUP_OUT:
            return self.by_runtime_device.get((row.runtime, row.device))
        return self.by_runtime.get(row.runtime)


def _ratios(rows: list[Row], preds: list[Prediction], keep) -> list[float]:
    out = [ratio(p.step_s, r.step_s) for r, p in zip(rows, preds, strict=True) if keep(r)]
    return [x for x in out if x is not None]


def fit_efficiency(rows: list[Row], preds: list[Prediction]) -> Fit:
    """Each runtime's training efficiency: the median of sourced-prediction / published step
    time over its `fit` rows (a runtime slower than the host's PyTorch gets < 1); for a
    LEAVE_ONE_GROUP_OUT runtime, each device's value is that median over the runtime's rows on
    the other devices, so no row is predicted by a number fitted on it. The same runtimes' RSS
    terms (fit_rss_extra_mib) are fitted alongside."""
    by_runtime: dict[str, float] = {}
    for rt in {r.runtime for r in rows if r.fit and r.runtime not in LEAVE_ONE_GROUP_OUT}:
        by_runtime[rt] = statistics.median(_ratios(rows, preds, lambda r, rt=rt: r.fit and r.runtime == rt) or [math.nan])
    by_device: dict[tuple[str, str], float] = {}
    for rt in LEAVE_ONE_GROUP_OUT:
        for dev in sorted({r.device for r in rows if r.runtime == rt and r.step_s is not None}):
            others = _ratios(rows, preds, lambda r, rt=rt, dev=dev: r.runtime == rt and r.device != dev)
            if others:
                by_device[(rt, dev)] = statistics.median(others)
    return Fit({k: v for k, v in by_runtime.items() if not math.isnan(v)}, by_device, fit_rss_extra_mib(rows, preds))


def fit_rss_extra_mib(rows: list[Row], preds: list[Prediction]) -> dict[tuple[str, str], float]:
    """For each LEAVE_ONE_GROUP_OUT runtime and device: the median of published - predicted RSS
    (MiB) over that runtime's comparable RSS rows on the other devices, the process memory the
    memory model does not count (the C++ split client's tokenizer and platform memory, sizes
    not published); no row's term is fitted on that row's device."""
    out: dict[tuple[str, str], float] = {}
    pairs = [(r, p) for r, p in zip(rows, preds, strict=True)
             if r.runtime in LEAVE_ONE_GROUP_OUT and r.rss_comparable and r.rss_mb is not None and p.rss_mb is not None]
    for rt in LEAVE_ONE_GROUP_OUT:
        for dev in sorted({r.device for r in rows if r.runtime == rt}):
            gaps = [r.rss_mb - p.rss_mb for r, p in pairs if r.runtime == rt and r.device != dev]
            if gaps:
                out[(rt, dev)] = statistics.median(gaps)
    return out


def fitted_rss_mb(row: Row, pred: Prediction, fit: Fit) -> float | None:
    """The predicted RSS plus the row's fitted unmodelled process memory (none outside
    LEAVE_ONE_GROUP_OUT: the FedAvg rows' RSS is not fitted)."""
    if pred.rss_mb is None:
        return None
    return pred.rss_mb + fit.rss_extra_mib.get((row.runtime, row.device), 0.0)


def fitted_step_s(row: Row, pred: Prediction, fit: Fit) -> float | None:
    """The step time once the runtime's fitted efficiency divides the device's rate."""
    eff = fit.for_row(row)
    if pred.step_s is None or eff is None:
        return None
    return pred.step_s / eff


def held_out_medians(rows: list[Row], preds: list[Prediction], fit: Fit) -> tuple[float, float]:
    """(median fitted step-time ratio, median fitted RSS ratio) over the rows not used to fit
    (RSS only where the published RSS covers what the memory model counts)."""
    steps = [ratio(fitted_step_s(r, p, fit), r.step_s) for r, p in zip(rows, preds, strict=True) if not r.fit]
    rss = [ratio(fitted_rss_mb(r, p, fit), r.rss_mb) for r, p in zip(rows, preds, strict=True) if not r.fit and r.rss_comparable]
    return _median([s for s in steps if s is not None]), _median([s for s in rss if s is not None])


def bytes_max_error_pct(rows: list[Row], preds: list[Prediction]) -> float:
    """Largest |predicted / published - 1| of the upload bytes, in %, over comparable rows."""
    errs = [abs(p.up_bytes / r.up_bytes - 1.0) * 100.0 for r, p in zip(rows, preds, strict=True)
            if r.up_bytes is not None and r.bytes_comparable]
    return max(errs) if errs else math.nan


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan
