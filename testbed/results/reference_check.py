"""Set the testbed's roofline device model beside published small-LLM decode speeds.

The testbed turns host compute time into device time with a roofline (testbed.host.calibration).
Here the same roofline predicts batch-1 decode speed on a device, and that prediction is
compared with speeds measured on the real device (the table "Measured small-LLM speed on
such devices" in REFERENCE.md). Nothing is fitted to the published figures: the ratios are
reported as they come out, to show how far the device profiles and the roofline are from
what real runtimes reach.

Decoding one token at batch 1 costs about 2*N FLOPs (a multiply-add per weight) and reads
every one of the N weights once, N * bytes_per_weight bytes. So

    tok/s = min(peak_gflops * 1e9 / (2 N), bandwidth_gbps * 1e9 / (N * bytes_per_weight))

Its arithmetic intensity is 2 / bytes_per_weight FLOP/B (4 for INT4). That is far below the
GPUs' ridge points (memory-bound), but not below every CPU's: a CPU whose FP32 roof over its
bandwidth is under 4 FLOP/B (Raspberry Pi 5: 60.4 / 17.07 = 3.5) comes out compute-bound.
The profiles' compute roofs are FP32 dense-GEMM rates; quantized CPU kernels (int8 dot
products on unpacked 4-bit weights) run at a different rate, so a CPU compute bound here is
the FP32 roofline's verdict, not a measured one. Left out: KV-cache reads (small at
short contexts), attention score FLOPs, and the scale/zero-point bytes of quantized formats
(q4_K_M and MLC q4f16 spend ~4.5-4.9 bits per weight, and some tensors stay at higher
precision), so the nominal bytes_per_weight makes the predictions slightly optimistic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich.table import Table

from device_profiles import DeviceProfile, get_device
from testbed.host.calibration import HostCalibration
from testbed.host.roofline import dilate, roofline_gflops
from testbed.ml.workload import forward_workload

BUNDLED_MODEL_PARAMS = 134_515_008  # SmolLM2-135M as bundled (tests/testbed/test_assets.py)

# Parameter counts of the published models (their Hugging Face configs / safetensors totals).
SMOLLM2_135M = 134_515_008
LLAMA_3_2_3B = 3_212_749_824
LLAMA_3_1_8B = 8_030_261_248
LLAMA_2_7B = 6_738_415_616
CODELLAMA_7B = 6_738_546_688
QWEN2_5_7B = 7_615_616_512

INT4_BYTES = 0.5  # nominal 4-bit weight, no scale overhead
INT3_BYTES = 0.375  # nominal 3-bit weight

Processor = Literal["cpu", "accelerator"]
Bound = Literal["compute", "memory"]


@dataclass(frozen=True)
class PublishedFigure:
    """One measured decode speed from REFERENCE.md and the conditions it was measured under."""

    device: str  # device profile name (device_profiles/devices/<name>.yaml)
    published_tok_s: float  # decode tokens/s at batch 1
    source: str  # where the figure comes from
    runtime: str  # inference runtime (and where it runs)
    model: str
    quantization: str
    model_params: int  # N, parameters of the model
    bytes_per_weight: float  # weight bytes per parameter as read during decode
    processor: Processor  # which of the profile's compute numbers applies
    note: str = ""  # how the figure maps onto the profile; assumptions


_JETSON_BENCH = "REFERENCE.md; jetson-generative-ai-playground docs/benchmarks.md"
_PI_BENCH = "REFERENCE.md; geerlingguy/ai-benchmarks"
_MLC_1359 = "REFERENCE.md; mlc-llm issue 1359"

PUBLISHED: tuple[PublishedFigure, ...] = (
    PublishedFigure("jetson-orin-nano", 41.0, _JETSON_BENCH, "MLC (GPU)", "SmolLM2-135M",
                    "INT4", SMOLLM2_135M, INT4_BYTES, "accelerator"),
    PublishedFigure("jetson-orin-nano-super", 64.5, _JETSON_BENCH, "MLC (GPU)", "SmolLM2-135M",
                    "INT4", SMOLLM2_135M, INT4_BYTES, "accelerator"),
    PublishedFigure("jetson-orin-nano", 27.7, _JETSON_BENCH, "MLC (GPU)", "Llama-3.2-3B",
                    "INT4", LLAMA_3_2_3B, INT4_BYTES, "accelerator"),
    PublishedFigure("jetson-orin-nano-super", 43.1, _JETSON_BENCH, "MLC (GPU)", "Llama-3.2-3B",
                    "INT4", LLAMA_3_2_3B, INT4_BYTES, "accelerator"),
    PublishedFigure("jetson-orin-nano", 14.2, _JETSON_BENCH, "MLC (GPU)", "Qwen2.5-7B",
                    "INT4", QWEN2_5_7B, INT4_BYTES, "accelerator"),
    PublishedFigure("jetson-orin-nano-super", 21.8, _JETSON_BENCH, "MLC (GPU)", "Qwen2.5-7B",
                    "INT4", QWEN2_5_7B, INT4_BYTES, "accelerator"),
    PublishedFigure("jetson-agx-orin", 47.0, "REFERENCE.md; jetson-containers issue 532",
                    "MLC (GPU)", "Llama-2-7B", "INT4 (assumed)", LLAMA_2_7B, INT4_BYTES,
                    "accelerator", note="quantization not stated in REFERENCE; MLC's usual q4f16"),
    PublishedFigure("raspberry-pi-5", 4.6, _PI_BENCH, "Ollama (CPU)", "llama3.2:3b",
                    "q4 (Ollama default q4_K_M)", LLAMA_3_2_3B, INT4_BYTES, "cpu"),
    PublishedFigure("raspberry-pi-5", 2.2, _PI_BENCH, "Ollama (CPU)", "llama3.1:8b",
                    "q4 (Ollama default q4_K_M)", LLAMA_3_1_8B, INT4_BYTES, "cpu"),
    PublishedFigure("galaxy-s24", 10.0, _MLC_1359, "MLC (Adreno GPU)", "Llama-2-7B", "q4",
                    LLAMA_2_7B, INT4_BYTES, "cpu",
                    note="measured on a Xiaomi 14; same SoC (Snapdragon 8 Gen 3) as galaxy-s24; "
                    "the profile has no GPU rate, so its CPU rate is the compute roof"),
    PublishedFigure("iphone-15-pro", 9.0, _MLC_1359, "MLC (GPU)", "CodeLlama-7B", "q3",
                    CODELLAMA_7B, INT3_BYTES, "cpu",
                    note="the profile has no GPU rate, so its CPU rate is the compute roof"),
)


@dataclass(frozen=True)
class Prediction:
    """A published decode speed beside the testbed's roofline prediction for it."""

    device: str  # device profile name
    device_display: str
    published_tok_s: float
    source: str
    runtime: str
    model: str
    quantization: str
    model_params: int
    bytes_per_weight: float
    processor: Processor
    peak_gflops: float  # the profile's compute roof used
    mem_bandwidth_gbps: float  # the profile's memory roof used
    predicted_tok_s: float  # roofline decode tokens/s at batch 1
    bound: Bound  # which roof limits the prediction
    ratio: float  # published / predicted (1 = exact; < 1: the runtime reaches less)
    note: str = ""


@dataclass(frozen=True)
class HostEstimate:
    """The bundled model's forward speed on this host, from the host calibration's roofline."""

    model_params: int
    precision: Literal["fp32", "bf16"]
    peak_gflops: float
    mem_bandwidth_gbps: float
    decode_tok_s: float  # batch 1, one token per forward
    decode_bound: Bound
    prefill_tokens: int
    prefill_tok_s: float  # tokens/s of one forward over prefill_tokens tokens
    prefill_bound: Bound


def decode_roofline(
    *, peak_gflops: float, mem_bandwidth_gbps: float, model_params: int,
    bytes_per_weight: float, tokens: int = 1,
) -> tuple[float, Bound]:
    """Tokens/s and the bound of a forward over ``tokens`` tokens (1: batch-1 decode).

    ``min(peak * 1e9 / (2 N), bw * 1e9 / (N * bytes_per_weight) * tokens)``; the bound is
    "compute" when the compute roof is the lower one (ties go to compute, as in dilate).
    """
    work = forward_workload(
        n_params=model_params, tokens=tokens, weight_bytes_per_param=bytes_per_weight
    )
    attainable = roofline_gflops(peak_gflops, mem_bandwidth_gbps, work.arithmetic_intensity)
    tok_s = attainable * 1e9 / (2.0 * model_params)
    bound: Bound = (
        "compute" if peak_gflops <= work.arithmetic_intensity * mem_bandwidth_gbps else "memory"
    )
    return tok_s, bound


def _device_roofs(profile: DeviceProfile, processor: Processor) -> tuple[float, float]:
    if profile.mem_bandwidth_gbps is None:
        raise ValueError(f"{profile.name}: no mem_bandwidth_gbps in the profile")
    if processor == "accelerator":
        if profile.accelerator_gflops is None:
            raise ValueError(f"{profile.name}: no accelerator_gflops in the profile")
        return profile.accelerator_gflops, profile.mem_bandwidth_gbps
    return profile.cpu_gflops, profile.mem_bandwidth_gbps


def predict(figure: PublishedFigure, host: HostCalibration) -> Prediction:
    """The testbed's prediction for one published figure.

    It goes the way the testbed times a client: the decode token's host time (from the host's
    own roofline, weights at the figure's bytes_per_weight) is dilated to the device with
    ``dilate``. The host's numbers cancel, so this equals ``decode_roofline`` on the device's
    roofs; going through ``dilate`` checks that the emulator's path gives that.
    """
    profile = get_device(figure.device)
    peak, bandwidth = _device_roofs(profile, figure.processor)
    work = forward_workload(
        n_params=figure.model_params, tokens=1, weight_bytes_per_param=figure.bytes_per_weight
    )
    host_tok_s, _ = decode_roofline(
        peak_gflops=host.gemm_gflops_fp32, mem_bandwidth_gbps=host.mem_bandwidth_gbps,
        model_params=figure.model_params, bytes_per_weight=figure.bytes_per_weight,
    )
    dilation = dilate(
        1.0 / host_tok_s, workload=work, host=host,
        device_gflops=peak, device_mem_bandwidth_gbps=bandwidth, precision="fp32",
    )
    tok_s = 1.0 / dilation.device_s
    return Prediction(
        device=figure.device, device_display=profile.display_name,
        published_tok_s=figure.published_tok_s, source=figure.source, runtime=figure.runtime,
        model=figure.model, quantization=figure.quantization,
        model_params=figure.model_params, bytes_per_weight=figure.bytes_per_weight,
        processor=figure.processor, peak_gflops=peak, mem_bandwidth_gbps=bandwidth,
        predicted_tok_s=tok_s, bound=dilation.bound, ratio=figure.published_tok_s / tok_s,
        note=figure.note,
    )


def host_estimate(
    host: HostCalibration, *, model_params: int = BUNDLED_MODEL_PARAMS,
    precision: Literal["fp32", "bf16"] = "fp32", prefill_tokens: int = 768,
) -> HostEstimate:
    """The bundled model's decode and prefill tokens/s on this host, from its calibration.

    Weights are read at ``precision`` (4 or 2 bytes); the host's memory roof is its measured
    copy rate (bytes read + written), which is what dilate uses too.
    """
    if precision == "bf16":
        if host.gemm_gflops_bf16 is None:
            raise ValueError('"precision" is "bf16" but the host calibration has no bf16 rate.')
        peak, weight_bytes = host.gemm_gflops_bf16, 2.0
    else:
        peak, weight_bytes = host.gemm_gflops_fp32, 4.0
    bw = host.mem_bandwidth_gbps
    decode, decode_bound = decode_roofline(
        peak_gflops=peak, mem_bandwidth_gbps=bw, model_params=model_params,
        bytes_per_weight=weight_bytes,
    )
    prefill, prefill_bound = decode_roofline(
        peak_gflops=peak, mem_bandwidth_gbps=bw, model_params=model_params,
        bytes_per_weight=weight_bytes, tokens=prefill_tokens,
    )
    return HostEstimate(model_params, precision, peak, bw, decode, decode_bound,
                        prefill_tokens, prefill, prefill_bound)


def compare_with_published(
    host: HostCalibration, *, model_params: int = BUNDLED_MODEL_PARAMS,
    figures: Sequence[PublishedFigure] = PUBLISHED,
) -> list[Prediction]:
    """The testbed's prediction beside every published figure, in ``figures`` order.

    Each figure's own model size and weight precision are used; ``model_params`` (the
    bundled model) is only checked here, for ``host_estimate``'s context line, so that the
    CLI can pass one value to both.
    """
    if model_params <= 0:
        raise ValueError(f'"model_params" must be > 0, got {model_params}.')
    return [predict(figure, host) for figure in figures]


def format_predictions(
    preds: Sequence[Prediction], host: HostEstimate | None = None
) -> Table:
    """A rich table of the predictions; ``host`` adds the host's own estimate as the caption."""
    table = Table(title="Roofline decode prediction vs published (batch 1)")
    for column, justify in (
        ("Device", "left"), ("Model", "left"), ("Quant", "left"), ("Runtime", "left"),
        ("Roofs GFLOP/s | GB/s", "right"), ("Predicted tok/s", "right"), ("Bound", "left"),
        ("Published tok/s", "right"), ("Published / predicted", "right"), ("Source", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for p in preds:
        source = p.source + (f" ({p.note})" if p.note else "")
        table.add_row(
            p.device, f"{p.model} ({p.model_params / 1e9:.2f}B)",
            f"{p.quantization}, {p.bytes_per_weight:g} B/w", p.runtime,
            f"{p.peak_gflops:g} {p.processor} | {p.mem_bandwidth_gbps:g}",
            f"{p.predicted_tok_s:.1f}", p.bound, f"{p.published_tok_s:g}", f"{p.ratio:.2f}",
            source,
        )
    if host is not None:
        table.caption = (
            f"This host ({host.precision}, {host.peak_gflops:.1f} GFLOP/s, "
            f"{host.mem_bandwidth_gbps:.1f} GB/s), {host.model_params / 1e6:.1f}M-param model: "
            f"decode {host.decode_tok_s:.1f} tok/s ({host.decode_bound}-bound), "
            f"{host.prefill_tokens}-token forward {host.prefill_tok_s:.0f} tok/s "
            f"({host.prefill_bound}-bound)"
        )
    return table
