"""Start-up decisions made once, before the first round: where each client's work runs (the
worker layout and its backend), the precision the clients train in, and the server's
starting state."""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable

from testbed.backends import Backend, make_backend
from testbed.config.fleet import FleetClient
from testbed.config.scenario import Scenario, ScenarioError
from testbed.ml.taskdata import build_task_data
from testbed.protocol import ClientSpec, Failure, Framework


def client_specs(scenario: Scenario, clients: list[FleetClient], model_dir: str) -> list[ClientSpec]:
    data = build_task_data(scenario)
    if data.notice:  # the server's start-up says it once; client workers build the same data silently
        _to_stderr(data.notice)
    if scenario.task.generative:
        line = truncation_line(scenario, model_dir, data)
        if line:
            _to_stderr(line)
    threads = scenario.emulation.threads_per_client
    return [ClientSpec(c.client_id, scenario, model_dir, data.client_indices[c.client_id],
                       threads=min(c.device.cpu_cores, threads)) for c in clients]


def truncation_line(scenario: Scenario, model_dir: str, data) -> str | None:
    """What encoding cuts, over every set the run encodes (each client's partition, the test and
    public sets), said once at start-up; None where nothing is cut."""
    from testbed.ml.tasks import scenario_encoder

    encoder = scenario_encoder(scenario, model_dir, data.dataset.labels)
    for indices in (*data.client_indices, data.splits.test, data.splits.public):
        encoder.encode_examples(data.at(indices))
    return encoder.truncation.line(scenario.task.kind, scenario.dataset.max_tokens)


def worker_layout(scenario: Scenario, client_class: type) -> str:
    """`emulation.workers` resolved: per_client, pool or data_parallel (process backend)."""
    if scenario.emulation.backend != "process":
        return "per_client"
    emu, fw = scenario.emulation, scenario.framework
    problem = None
    if not client_class.data_parallel:
        problem = f"framework {fw.name} does not split its clients' work across ranks"
    elif fw.batch_size < emu.threads_per_client:
        problem = f"framework.batch_size={fw.batch_size} has fewer rows than the {emu.threads_per_client} ranks"
    elif fw.lora.dropout > 0:
        problem = "framework.lora.dropout > 0 draws from each rank's random stream in another order"
    if emu.workers == "data_parallel":
        if problem:
            raise ScenarioError(f"emulation.workers: data_parallel: {problem}")
        return "data_parallel"
    if not emu.pooled:
        return "per_client"
    one_at_a_time = emu.parallel_clients == 1 or (
        emu.parallel_clients == "auto" and len(os.sched_getaffinity(0)) // emu.threads_per_client <= 1)
    if emu.workers == "auto" and emu.threads_per_client >= 2 and one_at_a_time and problem is None:
        return "data_parallel"
    return "pool"


def build_backend(scenario: Scenario, layout: str, client_class: type, specs: list[ClientSpec],
                  clients: list[FleetClient], progress: Callable[[str], None] | None = None) -> Backend:
    """The scenario's backend, after removing what killed runs left on this host (their cgroups
    and temporary folders: testbed.host.cleanup); `progress` (default: stderr) gets that notice."""
    from testbed.host.cleanup import remove_stale

    remove_stale(progress or _to_stderr)
    emu = scenario.emulation
    return make_backend(
        emu.backend, client_class, specs, threads=emu.threads_per_client,
        parallel=None if emu.parallel_clients == "auto" else emu.parallel_clients,
        memory_limits_bytes={c.client_id: int(c.memory_budget_mb * 2**20) for c in clients},
        enforce_memory=emu.enforce_memory, cpu_quotas=emu.time == "throttle", timeout_s=emu.client_timeout_s,
        pool=layout == "pool", data_parallel=layout == "data_parallel",
        run_id=f"{scenario.name}-{int(time.time())}",
    )


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def choose_precision(scenario: Scenario, framework: type[Framework], *, layout: str, model_dir: str,
                     progress: Callable[[str], None]) -> tuple[Scenario, float | None]:
    """Resolve `framework.precision` (auto) before anything reads it: the scenario as run, and
    where clients train under bf16 autocast, the measured speed-up of a real training step
    (testbed.host.precision): bf16 spans are dilated with it."""
    from testbed.host.precision import choose, native_bf16
    from testbed.ml.assets import cache_dir

    fw = scenario.framework
    speedup = None
    if not framework.client_autocast:  # only the server's evaluation would use it
        precision = "bf16" if fw.precision == "bf16" or (fw.precision == "auto" and native_bf16()) else "fp32"
    else:
        if fw.precision != "fp32":
            progress("measuring a training step in fp32 and bf16 (once per host, model and shape)")
        threads = 1 if layout == "data_parallel" else scenario.emulation.threads_per_client
        precision, speedup = choose(scenario, model_dir, cache=cache_dir(),
                                    threads=threads)  # a data-parallel rank runs one thread
    return scenario.model_copy(update={"framework": fw.model_copy(update={"precision": precision})}), speedup


def adopt_client_state(framework: Framework, backend: Backend) -> None:
    """Where the server left its model unloaded (its evaluation runs on the clients' group),
    its starting state is a client's freshly built one (Framework.client_initial_state);
    if that call fails, the server builds its own."""
    call = framework.client_initial_state()
    if call is None:
        return
    answer = backend.submit(min(backend.specs), 0, *call).result()
    framework.adopt_initial_state(None if isinstance(answer, Failure) else answer)


def warn_unthrottled(clients: list[FleetClient], throttled: dict[int, float]) -> None:
    fast = [c.name for c in clients if c.client_id not in throttled]
    if fast:
        warnings.warn(f"time: throttle: not throttled, time dilated instead (device at least as fast as "
                      f"this host, or no cgroups): {', '.join(fast)}", stacklevel=3)
