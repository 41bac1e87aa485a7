"""The whole scenario: every section together, and the checks that span sections."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator

from testbed.config.dataset import DatasetConfig, PartitionConfig
from testbed.config.emulation import EmulationConfig
from testbed.config.framework import FrameworkConfig
from testbed.config.node import Node
from testbed.config.output import OutputConfig, default_output
from testbed.config.paths import PATH_PREFIXES, TRACE_FIELDS, absolute
from testbed.config.rounds import AvailabilityConfig, EvalConfig, FaultsConfig, GenerateConfig, NetworkConfig, PolicyConfig
from testbed.config.task import TaskConfig
from testbed.config.topology import FleetEntry, ServerConfig
from testbed.config.wiretypes import wire_type

# bundled dataset -> the task kinds it serves (bbc-news: topic labels or article text; bbc-headlines:
# article body -> its headline, grouped by topic)
BUNDLED_KINDS = {"bbc-news": ("classification", "language_modeling"), "bbc-headlines": ("instruction",)}
DEFAULT_KD_PUBLIC_SIZE = 200  # public examples held out when kd leaves dataset.public_size unset
MAX_SEED = 2**32 - 1  # numpy's legacy seeds; seed x 1_000_003 (protocol.client_round_seed) stays in int64


def field_error(loc: tuple[str | int, ...], value: object, message: str) -> ValidationError:
    """A check that spans sections, reported at the field it is about."""
    return ValidationError.from_exception_data("Scenario", [
        {"type": "value_error", "loc": loc, "input": value, "ctx": {"error": ValueError(message)}},
    ])


def _absolute_traces(entry: FleetEntry, cwd: Path) -> FleetEntry:
    link = entry.link
    if isinstance(link, str):
        return entry
    update = {key: absolute(getattr(link, key), cwd) for key in TRACE_FIELDS
              if getattr(link, key) is not None and not Path(getattr(link, key)).is_absolute()}
    return entry.model_copy(update={"link": link.model_copy(update=update)}) if update else entry


@wire_type("Scenario")
class Scenario(Node):
    name: str = "scenario"
    seed: int = Field(0, ge=0, le=MAX_SEED)
    model: str = "smollm2-135m"  # bundled name, local Hugging Face folder, or hub id
    task: TaskConfig = TaskConfig()
    dataset: DatasetConfig = DatasetConfig()
    partition: PartitionConfig = PartitionConfig()
    framework: FrameworkConfig = FrameworkConfig()
    server: ServerConfig = ServerConfig()
    fleet: tuple[FleetEntry, ...]
    emulation: EmulationConfig = EmulationConfig()
    eval: EvalConfig = EvalConfig()
    faults: FaultsConfig = FaultsConfig()
    availability: AvailabilityConfig = AvailabilityConfig()
    policy: PolicyConfig = PolicyConfig()
    network: NetworkConfig = NetworkConfig()
    output: OutputConfig = Field(default_factory=default_output)  # the run folder (+ tracking): config/output.py

    @field_validator("fleet")
    @classmethod
    def _fleet_non_empty(cls, v: tuple[FleetEntry, ...]) -> tuple[FleetEntry, ...]:
        if not v:
            raise ValueError("needs at least one client entry")
        return v

    @model_validator(mode="after")
    def _enough_clients(self) -> Scenario:
        n = sum(e.count for e in self.fleet)
        if self.framework.clients_per_round > n:
            raise field_error(("framework", "clients_per_round"), self.framework.clients_per_round,
                              f"framework.clients_per_round={self.framework.clients_per_round} exceeds the fleet size {n}")
        for i, k in enumerate(self.faults.kill):
            if k.client >= n:
                raise field_error(("faults", "kill", i, "client"), k.client,
                                  f"faults.kill.{i}.client={k.client} is not a client id (fleet has {n})")
        if self.faults.kill and self.emulation.backend == "docker" and self.emulation.docker.clients == "external":
            raise field_error(("faults", "kill"), None, "faults.kill needs client containers the testbed starts "
                                                        "(emulation.docker.clients: start), not external ones")
        return self

    @model_validator(mode="after")
    def _fedbuff_for_fedllm(self) -> Scenario:
        """Buffered asynchronous rounds exchange whole adapters: fedllm only."""
        if self.policy.kind == "fedbuff" and self.framework.name != "fedllm":
            raise field_error(("policy", "kind"), self.policy.kind,
                              "fedbuff applies to fedllm (split and kd exchange per step / per public "
                              "batch and keep synchronous rounds)")
        return self

    @model_validator(mode="after")
    def _public_set(self) -> Scenario:
        """`dataset.public_size: null` -> a public set only where the framework uses one."""
        size = self.dataset.public_size
        if size is None:
            size = DEFAULT_KD_PUBLIC_SIZE if self.framework.name == "kd" else 0
            object.__setattr__(self, "dataset", self.dataset.model_copy(update={"public_size": size}))
        if self.framework.name == "kd" and size < self.framework.kd.public_batch:
            raise field_error(("dataset", "public_size"), size,
                              f"dataset.public_size={size} is smaller than framework.kd.public_batch="
                              f"{self.framework.kd.public_batch}: kd needs that many public examples per round")
        return self

    @model_validator(mode="after")
    def _task_and_data(self) -> Scenario:
        """A bundled dataset serves the kinds it has columns for; instruction-only limits; the
        generation default of the task's kind."""
        kind, ds = self.task.kind, self.dataset
        if ds.path is None and ds.name in BUNDLED_KINDS and kind not in BUNDLED_KINDS[ds.name]:
            other = [n for n, kinds in BUNDLED_KINDS.items() if kind in kinds]
            raise field_error(("dataset", "name"), ds.name,
                              f"dataset {ds.name} serves task.kind {' or '.join(BUNDLED_KINDS[ds.name])}, not {kind}"
                              + (f"; for {kind} use {', '.join(other)}" if other else ""))
        for name in ("max_prompt_tokens", "max_response_tokens"):
            value = getattr(ds, name)
            if value is not None and kind != "instruction":
                raise field_error(("dataset", name), value, f"dataset.{name} applies to task.kind instruction")
            if value is not None and value >= ds.max_tokens:
                raise field_error(("dataset", name), value,
                                  f"dataset.{name}={value} must be below dataset.max_tokens={ds.max_tokens} "
                                  "(the whole sequence)")
        if self.eval.generate is None:
            default = GenerateConfig() if kind == "instruction" else GenerateConfig(samples=0)
            object.__setattr__(self, "eval", self.eval.model_copy(update={"generate": default}))
        elif kind == "classification" and self.eval.generate.samples:
            raise field_error(("eval", "generate"), None, "eval.generate applies to generative tasks "
                              "(task.kind instruction or language_modeling); classification scores labels")
        return self

    @model_validator(mode="after")
    def _absolute_paths(self) -> Scenario:
        """Paths still relative once validated (a scenario built in memory) are relative to the
        current directory; a file's were placed by its loader, `output` places its own."""
        cwd = Path.cwd()
        if self.model.startswith(PATH_PREFIXES) and not Path(self.model).is_absolute():
            object.__setattr__(self, "model", absolute(self.model, cwd))
        for section in ("dataset", "availability"):
            node = getattr(self, section)
            if node.path is not None and not Path(node.path).is_absolute():
                object.__setattr__(self, section, node.model_copy(update={"path": absolute(node.path, cwd)}))
        fleet = tuple(_absolute_traces(entry, cwd) for entry in self.fleet)
        if fleet != self.fleet:
            object.__setattr__(self, "fleet", fleet)
        return self

    @property
    def n_clients(self) -> int:
        return sum(e.count for e in self.fleet)
