"""The golden runs: scenarios whose tables guard the testbed's behaviour cell by cell.

Each case is a bundled scenario plus `--set` overrides, run under `framework.precision: fp32`
and `--replay-compute` of its recorded events (both make a run deterministic). `record.py`
writes `tests/golden/<case>/`; `tests/test_golden_runs.py` re-runs each case and compares.
A change that alters outputs on purpose regenerates them (`python -m tests.golden.record`)
and explains the diff in its commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent
SMOKE = ROOT / "scenarios" / "smoke.yaml"
OOM = ROOT / "scenarios" / "oom.yaml"
TABLES = ("rounds.csv", "client_rounds.csv", "events.csv")
# facts measured on the host, not decided by the simulation: left out of the comparison
HOST_COLUMNS_PREFIX = "host_"
HOST_COLUMNS = frozenset({"peak_rss_mb", "over_memory_budget", "onnx_export_s"})


@dataclass(frozen=True)
class Case:
    name: str
    scenario: Path
    overrides: tuple[str, ...] = ()
    docker: bool = False  # needs a Docker engine and the fedge-testbed image
    cgroups: bool = False  # needs cgroup memory limits (the OOM kill)

    @property
    def all_overrides(self) -> list[str]:
        return ["framework.precision=fp32", *self.overrides]

    @property
    def folder(self) -> Path:
        return GOLDEN / self.name


CASES = (
    Case("fedllm", SMOKE),
    Case("kd", SMOKE, ("framework.name=kd",)),
    Case("split_v1", SMOKE, ("framework.name=split", "framework.split.variant=v1")),
    Case("split_v2", SMOKE, ("framework.name=split", "framework.split.variant=v2")),
    Case("fedbuff", SMOKE, ("policy.kind=fedbuff", "framework.rounds=4", "policy.buffer_size=2",
                            "policy.concurrency=3")),
    Case("availability", SMOKE, ("availability.kind=fedscale", f"availability.path={GOLDEN / 'avail.json'}",
                                 "availability.dropout=0.5", "framework.rounds=4")),
    Case("deadline", SMOKE, ("policy.kind=deadline", "policy.over_selection=0.5", "framework.rounds=2")),
    Case("oom", OOM, cgroups=True),
    Case("docker", SMOKE, ("emulation.backend=docker",), docker=True),
)
