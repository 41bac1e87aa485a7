"""Typed, validated device and link profiles.

A profile is data with a source: every number in a YAML file says where it comes from
(`sources`), how it was obtained (`notes`), and whether it was computed or assumed rather
than published (`derived`). The models here only validate; reading files is in catalog.py.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationInfo, field_validator, model_validator

NAME_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"  # kebab-case, e.g. "jetson-orin-nano"

PositiveInt = Annotated[int, Strict(), Field(gt=0, le=2**31 - 1)]
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]  # strict: accepts int, rejects "8" and true
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0)]
Fraction = Annotated[float, Strict(), Field(ge=0, lt=1)]
Text = Annotated[str, Strict(), Field(min_length=1)]
Name = Annotated[str, Strict(), Field(pattern=NAME_PATTERN)]


class ProfileError(ValueError):
    """A profile that cannot be loaded or found; the message reads ``file: field: problem`` on
    one line. `path` is the profile file at fault (None for a name that is not in the catalog)."""

    def __init__(self, message: str, path: object = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)


class _Profile(BaseModel):
    """Fields and checks shared by device and link profiles."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: Name  # kebab-case; equals the YAML file's stem
    display_name: Text  # human-readable name for tables and reports
    sources: tuple[Text, ...] = Field(min_length=1)  # where each number comes from
    notes: Text  # how derived numbers were obtained; gaps and assumptions
    derived: tuple[str, ...]  # fields whose values are computed or assumed, not published
    # Fields whose value is an estimate rather than a figure measured for this device or link
    # (carried over or scaled from a sibling, or a different load); `notes` gives the derivation.
    estimated: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _name_matches_file(cls, value: str, info: ValidationInfo) -> str:
        stem = (info.context or {}).get("stem")
        if stem is not None and value != stem:
            raise ValueError(f"must equal the file name stem {stem!r}, got {value!r}")
        return value

    @field_validator("derived", "estimated")
    @classmethod
    def _derived_are_fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in cls.model_fields]
        if unknown:
            raise ValueError(f"not a field of this profile: {', '.join(unknown)}")
        if len(set(value)) != len(value):
            raise ValueError("lists a field more than once")
        return value

    @model_validator(mode="after")
    def _estimated_are_set(self) -> _Profile:
        unset = [name for name in self.estimated if getattr(self, name) is None]
        if unset:
            raise ValueError(f"estimated: {', '.join(unset)} is null; only a given value can be an estimate")
        return self


class DeviceProfile(_Profile):
    """An edge device: compute, memory and power as the emulator uses them."""

    cpu_cores: PositiveInt  # cores the client's compute threads run on (big cores only)
    cpu_gflops: PositiveFloat  # sustained FP32 dense-GEMM GFLOP/s of those cores together
    accelerator: Text | None  # GPU/NPU description; None when the device has none
    accelerator_gflops: PositiveFloat | None  # sustained FP32 GFLOP/s usable for training
    ram_gb: PositiveFloat  # physical RAM of the modelled variant, GiB
    app_ram_budget_mb: PositiveInt  # RAM one client process may use, MiB (README policy)
    mem_bandwidth_gbps: PositiveFloat | None  # DRAM bandwidth, GB/s (10^9 bytes/s)
    power_w: PositiveFloat | None  # typical board/SoC power under load, W
    # The training runtime a profile models and its efficiency next to PyTorch on the host:
    # device time is divided by it (1.0 when null: the device trains as the host's PyTorch does).
    training_runtime: Text | None = None  # e.g. "PyTorch CUDA, micro-batch 1", "C++ kernels, BLAS off"
    training_efficiency: PositiveFloat | None = None  # fraction of the roofline rate that runtime attains

    @field_validator("accelerator_gflops")
    @classmethod
    def _accelerator_named(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and "accelerator" in info.data and info.data["accelerator"] is None:
            raise ValueError("is set but accelerator is null; name the accelerator")
        return value

    @field_validator("training_efficiency")
    @classmethod
    def _runtime_named(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and "training_runtime" in info.data and info.data["training_runtime"] is None:
            raise ValueError("is set but training_runtime is null; name the runtime it measures")
        return value

    @field_validator("app_ram_budget_mb")
    @classmethod
    def _budget_fits_ram(cls, value: int, info: ValidationInfo) -> int:
        ram_gb: Any = info.data.get("ram_gb")
        if ram_gb is not None and value > ram_gb * 1024:
            raise ValueError(f"{value} MB exceeds ram_gb ({ram_gb} GB = {ram_gb * 1024:g} MB)")
        return value


class LinkProfile(_Profile):
    """A network access link class: per-direction rate, round-trip time and loss."""

    down_mbps: PositiveFloat  # mean downlink rate, Mbit/s (10^6 bit/s)
    up_mbps: PositiveFloat  # mean uplink rate, Mbit/s
    rtt_ms: NonNegativeFloat  # base round-trip propagation delay, ms
    loss_rate: Fraction  # packet loss probability, 0 <= loss_rate < 1
    trace_down: Text | None = None  # mahimahi downlink trace; relative to the YAML file
    trace_up: Text | None = None  # mahimahi uplink trace; relative to the YAML file
    # The radio's data-transfer power, P = up x up_Mbps + down x down_Mbps + base (Huang et
    # al.'s linear model); all three null where the link class has no sourced figure. Zero is a
    # real figure: a radio whose power does not depend on the rate, or a wired link (no radio).
    radio_up_mw_per_mbps: NonNegativeFloat | None  # mW per Mbit/s of uplink throughput
    radio_down_mw_per_mbps: NonNegativeFloat | None  # mW per Mbit/s of downlink throughput
    radio_base_mw: NonNegativeFloat | None  # mW while transferring, whatever the rate
    # The radio's tail: after a transfer it stays in a high-power state for radio_tail_s at
    # radio_tail_mw (RRC inactivity timers, docs/energy.md); both null or both set.
    radio_tail_s: NonNegativeFloat | None = None
    radio_tail_mw: NonNegativeFloat | None = Field(default=None, validate_default=True)

    @field_validator("radio_base_mw")
    @classmethod
    def _radio_model_complete(cls, value: float | None, info: ValidationInfo) -> float | None:
        given = {name: info.data[name] for name in RADIO_FIELDS[:2] if name in info.data}
        given["radio_base_mw"] = value
        if len(given) == len(RADIO_FIELDS) and len({v is None for v in given.values()}) > 1:
            missing = [name for name, v in given.items() if v is None]
            raise ValueError(f"the radio power model needs all of {', '.join(RADIO_FIELDS)} or none; "
                             f"null: {', '.join(missing)}")
        return value

    @field_validator("radio_tail_mw")
    @classmethod
    def _radio_tail_complete(cls, value: float | None, info: ValidationInfo) -> float | None:
        if "radio_tail_s" not in info.data:  # itself invalid: reported on its own
            return value
        if (info.data["radio_tail_s"] is None) != (value is None):
            raise ValueError("radio_tail_s and radio_tail_mw must both be set or both be null")
        if value is not None and "radio_base_mw" in info.data and info.data["radio_base_mw"] is None:
            raise ValueError("a radio tail needs the radio power model (radio_base_mw and the rest)")
        return value


RADIO_FIELDS = ("radio_up_mw_per_mbps", "radio_down_mw_per_mbps", "radio_base_mw")
TAIL_FIELDS = ("radio_tail_s", "radio_tail_mw")
