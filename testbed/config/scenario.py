"""The scenario: a YAML file validated into frozen, typed configuration.

Every node rejects unknown keys; every problem is reported as ``file: field: problem``
(:class:`ScenarioError`). ``--set key.sub=value`` overrides are applied to the raw
mapping before validation, so they are validated exactly like the file itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_KD_PUBLIC_SIZE = 200  # public examples held out when kd leaves dataset.public_size unset


class ScenarioError(ValueError):
    """Bad scenario input; the message reads ``file: field: problem``."""


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatasetConfig(_Node):
    name: str | None = "bbc-news"  # a bundled dataset (bbc-news), or null when `path` is given
    path: str | None = None  # bring your own data: a CSV/TSV/JSONL file
    text: str = "text"  # text column of `path`
    label: str = "label"  # label column of `path`
    max_tokens: int = Field(96, gt=0)  # article tokens kept per example (sequence length)
    test_size: int = Field(150, gt=0)  # held-out examples for evaluation (fixed per seed)
    public_size: int | None = Field(None, ge=0)  # unlabeled public examples; null: 200 under kd, else 0

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        if self.path is not None:
            return self.model_copy(update={"name": None}) if self.name == "bbc-news" else self
        if self.name is None:
            raise ValueError("give a dataset `name` (bbc-news) or a `path` to a CSV/JSONL file")
        return self


class PartitionConfig(_Node):
    kind: Literal["iid", "dirichlet"] = "dirichlet"  # how training data is split over clients
    alpha: float = Field(0.5, gt=0)  # Dirichlet concentration (smaller = more skewed labels)
    min_per_client: int = Field(8, ge=1)  # every client gets at least this many examples


class LoraConfig(_Node):
    r: int = Field(8, gt=0)  # adapter rank
    alpha: float = Field(16, gt=0)  # scaling numerator (scale = alpha / r)
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: tuple[str, ...] = ("q_proj", "v_proj")  # module names that get adapters

    @field_validator("targets")
    @classmethod
    def _non_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("needs at least one target module name")
        return v


class SplitOptions(_Node):
    """Split-FedLLM: the client holds embeddings + blocks [0, cut_layer), the server the rest."""

    cut_layer: int = Field(2, ge=1)  # blocks on the client (must leave at least one on the server)
    compression: Literal["fp32", "fp16", "bf16", "int8"] = "fp32"  # activations up / gradients down
    quantization: Literal["none", "int8", "int4"] = "none"  # the client's frozen weights (QLoRA-like)
    variant: Literal["v1", "v2"] = "v2"  # v1: a server-side adapter per client; v2: one shared


class KDOptions(_Node):
    """KD-FedLLM: clients' students share top-k logits on public data; the server's model
    (the teacher) distils from their aggregate and sends its own logits back."""

    student_layers: str = "every:1"  # blocks of the server model the student keeps (first:N, every:N, 0-7,29)
    student_quantization: Literal["none", "int8", "int4"] = "int8"  # the student's frozen blocks (weight-only)
    student_targets: tuple[str, ...] = ()  # the student's LoRA targets (empty: framework.lora.targets)
    student_lr: float | None = Field(None, gt=0)  # the student's learning rate (null: framework.lr)
    student_checkpointing: bool = True  # activation checkpointing: ~1.2 GB less at ~1.3x the training time
    top_k: int = Field(8, ge=0)  # logits kept per position (0: the full vocabulary)
    positions: Literal["answer", "all"] = "answer"  # the answer position of each public prompt, or every token
    temperature: float = Field(2.0, gt=0)  # distillation temperature (both directions)
    public_batch: int = Field(32, gt=0)  # public examples per round (seeded choice from the public set)
    weighting: Literal["samples", "confidence"] = "samples"  # client weight in the aggregate
    server_steps: int = Field(8, ge=0)  # teacher distillation steps per round (batches of framework.batch_size)
    client_distill_steps: int = Field(2, ge=0)  # student steps on the teacher's logits per round
    client_distill_from_round: int = Field(2, ge=1)  # first round whose clients get the teacher's logits
    onnx: bool = True  # students produce their logits with onnxruntime (else torch)
    onnx_int8: bool = False  # int8 dynamic quantization of the exported student
    onnx_optimize: bool = False  # ORT graph optimizations (faster, but folds quantized weights to fp32 copies)
    eval_students: bool = True  # students evaluate themselves on the test set in evaluation rounds

    @field_validator("student_layers")
    @classmethod
    def _layer_spec(cls, v: str) -> str:
        from testbed.config.student_layers import student_layers

        student_layers(v, 10**6)  # the syntax; the block count is checked against the model at set-up
        return v


class FrameworkConfig(_Node):
    name: str = "fedllm"  # fedllm | kd | split
    rounds: int = Field(3, gt=0)
    clients_per_round: int = Field(4, gt=0)  # K clients selected each round (seeded)
    local_steps: int = Field(8, gt=0)  # optimizer steps per client per round
    batch_size: int = Field(8, gt=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1.0e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lora: LoraConfig = LoraConfig()
    fedprox_mu: float = Field(0.0, ge=0)  # FedProx proximal term (0 = FedAvg)
    # autocast dtype of client and server compute; auto = bf16 where this CPU has native bf16
    # and a training step of this model measured faster in it (testbed.host.precision), at run start
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    split: SplitOptions = SplitOptions()
    kd: KDOptions = KDOptions()


class LinkSpec(_Node):
    """An inline link, when a catalog link class does not fit. A direction's trace (a
    mahimahi file) replaces its constant rate."""

    down_mbps: float | None = Field(None, gt=0)
    up_mbps: float | None = Field(None, gt=0)
    rtt_ms: float = Field(0.0, ge=0)
    loss_rate: float = Field(0.0, ge=0, lt=1)  # random packet loss (retransmissions + TCP's rate cap)
    trace_down: str | None = None  # mahimahi trace file for the downlink
    trace_up: str | None = None  # mahimahi trace file for the uplink

    @model_validator(mode="after")
    def _rate_or_trace(self) -> LinkSpec:
        for direction in ("down", "up"):
            if getattr(self, f"{direction}_mbps") is None and getattr(self, f"trace_{direction}") is None:
                raise ValueError(f"give {direction}_mbps or trace_{direction}")
        return self


class ServerLinkConfig(_Node):
    rate_mbps: float = Field(1000.0, gt=0)  # capacity of the server's access link, each direction
    rtt_ms: float = Field(2.0, ge=0)  # round-trip propagation delay it adds


class ServerConfig(_Node):
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where server-side models run
    link: ServerLinkConfig = ServerLinkConfig()


class FleetEntry(_Node):
    device: str  # a device profile name (see `testbed profiles`)
    link: str | LinkSpec  # a link profile name, or an inline {down_mbps, up_mbps, rtt_ms}
    count: int = Field(1, gt=0)
    memory_limit_mb: float | None = Field(None, gt=0)  # overrides this entry's app RAM budget (MiB)


class DockerConfig(_Node):
    """`backend: docker`: one container per client (docs/docker.md)."""

    image: str = "fedge-testbed:latest"  # built by compose/build_base.sh (no registry needed)
    network: Literal["host", "internal"] = "host"  # host: endpoint on 127.0.0.1; internal: not implemented yet
    server: Literal["container", "host"] = "container"  # where `testbed run` runs the round loop
    clients: Literal["start", "external"] = "start"  # start: the testbed starts them; external: docker compose did
    port: int = Field(0, ge=0, le=65535)  # the server endpoint's port (0: a free one)
    start_timeout_s: float = Field(600.0, gt=0)  # from starting a client container to its worker being ready

    @field_validator("network")
    @classmethod
    def _host_only(cls, v: str) -> str:
        if v == "internal":
            raise ValueError("internal (a Docker network the run creates) is not implemented yet; use host "
                             "(every container on the host's network, the server endpoint on 127.0.0.1)")
        return v


class EmulationConfig(_Node):
    backend: Literal["inproc", "process", "docker"] = "process"
    time: Literal["dilate", "throttle"] = "dilate"  # how host time becomes device time
    enforce_memory: bool = True  # cgroup memory limit = the device's app RAM budget
    # process backend: a worker process per client, a pool of `parallel_clients` workers each
    # hosting several clients (their frozen weights shared), or data_parallel: one client at a
    # time on `threads_per_client` single-thread processes that split its batches
    # (testbed/ml/dataparallel.py). auto = pool where no per-client limit applies (enforce_memory
    # false, time dilate), data_parallel instead where that pool would run one client at a time
    # on several threads and the framework supports it; else one per client
    workers: Literal["auto", "per_client", "pool", "data_parallel"] = "auto"
    threads_per_client: int = Field(1, gt=0)  # torch threads of each client worker (capped by device cores)
    parallel_clients: int | Literal["auto"] = "auto"  # client workers computing at once on the host
    use_accelerator: bool = True  # convert time with the device's accelerator where it has one
    protocol_overhead: bool = True  # TCP/IP header bytes on the wire (reported apart from payload)
    client_timeout_s: float = Field(1800.0, gt=0)  # host seconds before a silent worker is killed
    memory_limit_mb: float | None = Field(None, gt=0)  # overrides every device's app RAM budget
    docker: DockerConfig = DockerConfig()  # backend: docker

    @field_validator("parallel_clients")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v <= 0:
            raise ValueError("must be a positive integer or 'auto'")
        return v

    @property
    def pooled(self) -> bool:
        """Whether the process backend pools clients into fewer worker processes."""
        if self.workers == "auto":
            return not self.enforce_memory and self.time == "dilate"
        return self.workers == "pool"

    @model_validator(mode="after")
    def _pool_without_per_client_limits(self) -> EmulationConfig:
        if self.workers in ("pool", "data_parallel") and (self.enforce_memory or self.time == "throttle"):
            raise ValueError(f"workers: {self.workers} shares processes between clients, so it cannot hold "
                             "per-client limits: it needs enforce_memory: false and time: dilate")
        if self.workers == "data_parallel" and self.threads_per_client < 2:
            raise ValueError("workers: data_parallel splits each batch across threads_per_client processes: "
                             "it needs threads_per_client >= 2")
        return self

    @model_validator(mode="after")
    def _throttle_needs_processes(self) -> EmulationConfig:
        if self.time == "throttle" and self.backend not in ("process", "docker"):
            raise ValueError("time: throttle needs backend: process or docker (a CPU quota applies to a "
                             "process or a container)")
        return self


class AvailabilityConfig(_Node):
    """When clients are online (testbed/config/availability.py) and how often a selected one drops."""

    kind: Literal["always", "diurnal", "fedscale"] = "always"
    period_s: float = Field(86400.0, gt=0)  # diurnal: the cycle
    on_fraction: float = Field(0.5, gt=0, le=1)  # diurnal: share of each cycle a client is online
    path: str | None = None  # fedscale: the availability JSON
    dropout: float = Field(0.0, ge=0, lt=1)  # probability a selected client drops out before its upload

    @model_validator(mode="after")
    def _path_for_fedscale(self) -> AvailabilityConfig:
        if self.kind == "fedscale" and not self.path:
            raise ValueError("kind: fedscale needs `path` (a FedScale availability JSON)")
        return self


class PolicyConfig(_Node):
    """How a round closes. wait_all: when every selected client has arrived or failed.
    deadline: select ceil((1 + over_selection) x clients_per_round), keep the first
    clients_per_round arrivals (or what arrived by deadline_s), discard the rest.
    fedbuff: asynchronous buffered aggregation (fedllm only): `concurrency` clients train at
    once, each from the global version current when it starts; every `buffer_size` arrivals
    make a new server version (a "round"), updates weighted by n_samples x (1 + staleness)^-exponent."""

    kind: Literal["wait_all", "deadline", "fedbuff"] = "wait_all"
    deadline_s: float | None = Field(None, gt=0)  # simulated seconds after the round starts
    over_selection: float = Field(0.0, ge=0)  # extra share of clients selected under `deadline`
    buffer_size: int | None = Field(None, gt=0)  # fedbuff: updates per server step (null: clients_per_round)
    concurrency: int | None = Field(None, gt=0)  # fedbuff: clients training at once (null: clients_per_round)
    staleness_exponent: float = Field(0.5, ge=0)  # fedbuff: weight x (1 + staleness)^-exponent
    max_staleness: int | None = Field(None, ge=0)  # fedbuff: older updates are discarded (cause stale)


class NetworkConfig(_Node):
    on_outage: Literal["stall", "fail"] = "fail"  # a transfer over a link that goes down
    outage_timeout_s: float = Field(60.0, gt=0)  # stall: give up after this long
    outages: tuple[tuple[float, float], ...] = ()  # every client's link down over [t1, t2) (simulated s)

    @field_validator("outages")
    @classmethod
    def _ordered(cls, v: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
        for t1, t2 in v:
            if not 0 <= t1 < t2:
                raise ValueError(f"each outage is [t1, t2] with 0 <= t1 < t2 (simulated seconds), got [{t1}, {t2}]")
        return v


class KillFault(_Node):
    round: int = Field(gt=0)  # round in which the client's worker is killed mid-fit
    client: int = Field(ge=0)  # client id (position in the expanded fleet)


class FaultsConfig(_Node):
    kill: tuple[KillFault, ...] = ()  # SIGKILL these clients' workers mid-round


class EvalConfig(_Node):
    before_training: bool = True  # evaluate the initial global model (round 0)
    every: int = Field(1, gt=0)  # evaluate after every n-th round (and always after the last)
    batch_size: int = Field(16, gt=0)


class Scenario(_Node):
    name: str = "scenario"
    seed: int = 0
    model: str = "smollm2-135m"  # bundled name, local Hugging Face folder, or hub id
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
    output: str = "runs/scenario"

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
            raise ValueError(
                f"framework.clients_per_round={self.framework.clients_per_round} exceeds the fleet size {n}"
            )
        for i, k in enumerate(self.faults.kill):
            if k.client >= n:
                raise ValueError(f"faults.kill.{i}.client={k.client} is not a client id (fleet has {n})")
        if self.faults.kill and self.emulation.backend == "docker" and self.emulation.docker.clients == "external":
            raise ValueError("faults.kill needs client containers the testbed starts "
                             "(emulation.docker.clients: start), not external ones")
        return self

    @model_validator(mode="after")
    def _fedbuff_for_fedllm(self) -> Scenario:
        """Buffered asynchronous rounds exchange whole adapters: fedllm only."""
        if self.policy.kind == "fedbuff" and self.framework.name != "fedllm":
            problem = ValueError("fedbuff applies to fedllm (split and kd exchange per step / per public "
                                 "batch and keep synchronous rounds)")
            raise ValidationError.from_exception_data("Scenario", [
                {"type": "value_error", "loc": ("policy", "kind"), "input": self.policy.kind,
                 "ctx": {"error": problem}},
            ])
        return self

    @model_validator(mode="after")
    def _public_set(self) -> Scenario:
        """`dataset.public_size: null` -> a public set only where the framework uses one."""
        size = self.dataset.public_size
        if size is None:
            size = DEFAULT_KD_PUBLIC_SIZE if self.framework.name == "kd" else 0
            object.__setattr__(self, "dataset", self.dataset.model_copy(update={"public_size": size}))
        if self.framework.name == "kd" and size < self.framework.kd.public_batch:
            raise ValueError(f"dataset.public_size={size} is smaller than framework.kd.public_batch="
                             f"{self.framework.kd.public_batch}: kd needs that many public examples per round")
        return self

    @property
    def n_clients(self) -> int:
        return sum(e.count for e in self.fleet)


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.sub=value`` (``fleet.0.count=3`` indexes lists) to a raw mapping."""
    if "=" not in assignment:
        raise ScenarioError(f"--set {assignment}: expected key=value")
    key, _, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ScenarioError(f"--set {assignment}: empty key component")
    value = yaml.safe_load(text) if text.strip() else ""
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        node = _step_into(node, part, parts[i + 1], key)
    _assign(node, parts[-1], value, key)


def _step_into(node: Any, part: str, next_part: str, key: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, key)]
    if not isinstance(node, dict):
        raise ScenarioError(f"--set {key}: '{part}' is inside a value that is not a mapping or list")
    if node.get(part) is None:
        node[part] = [] if next_part.isdigit() else {}
    return node[part]


def _assign(node: Any, part: str, value: Any, key: str) -> None:
    if isinstance(node, list):
        node[_index(node, part, key)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise ScenarioError(f"--set {key}: cannot set '{part}' inside a scalar")


def _index(node: list[Any], part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ScenarioError(f"--set {key}: '{part}' is not an index of a list of length {len(node)}")
    return int(part)


def _union_noise(e: dict, errors: list[dict]) -> bool:
    """For `link: name | {...}` given a mapping, "should be a valid string" only adds noise."""
    loc = e["loc"]
    return (e["type"] == "string_type" and loc[-1] == "str"
            and any(o is not e and o["loc"][: len(loc) - 1] == loc[:-1] for o in errors))


def format_validation_error(source: str, err: ValidationError) -> str:
    lines = []
    errors = err.errors()
    for e in errors:
        if _union_noise(e, errors):
            continue
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{source}: {loc or '(top level)'}: {msg}")
    return "\n".join(lines)


def read_raw(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ScenarioError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ScenarioError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: expected a mapping of scenario fields at the top level")
    return raw


def load_scenario(path: str | Path, overrides: list[str] = ()) -> Scenario:
    """Read, override and validate a scenario; profile names are checked too."""
    path = Path(path)
    raw = read_raw(path)
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate_raw(raw, str(path))


def validate_raw(raw: dict[str, Any], source: str) -> Scenario:
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as err:
        raise ScenarioError(format_validation_error(source, err)) from None
    check_references(scenario, source)
    return scenario


def _trace_problems(link: LinkSpec, field: str) -> list[str]:
    from network import TraceError, load_mahimahi

    problems = []
    for direction in ("down", "up"):
        path = getattr(link, f"trace_{direction}")
        if path is None:
            continue
        try:
            load_mahimahi(Path(path).expanduser())
        except (TraceError, OSError) as exc:
            problems.append(f"{field}.trace_{direction}: {exc}")
    return problems


def check_references(scenario: Scenario, source: str) -> None:
    """Names that point elsewhere (profiles, files, frameworks) must resolve."""
    from device_profiles import ProfileError, get_device, get_link
    from testbed.config.registry import framework_names

    problems = []
    if scenario.framework.name not in framework_names():
        problems.append(
            f"framework.name: unknown framework '{scenario.framework.name}'; "
            f"supported: {', '.join(framework_names())}"
        )
    for i, entry in enumerate(scenario.fleet):
        try:
            get_device(entry.device)
        except ProfileError as exc:
            problems.append(f"fleet.{i}.device: {exc}")
        if isinstance(entry.link, str):
            try:
                get_link(entry.link)
            except ProfileError as exc:
                problems.append(f"fleet.{i}.link: {exc}")
        else:
            problems.extend(_trace_problems(entry.link, f"fleet.{i}.link"))
    if scenario.dataset.path is not None and not Path(scenario.dataset.path).expanduser().is_file():
        problems.append(f"dataset.path: file not found: {scenario.dataset.path}")
    if scenario.availability.kind == "fedscale":
        from testbed.config.availability import AvailabilityError, load_fedscale

        try:
            load_fedscale(scenario.availability.path, 1)
        except AvailabilityError as exc:
            problems.append(f"availability.path: {exc}")
    if problems:
        raise ScenarioError("\n".join(f"{source}: {p}" for p in problems))
