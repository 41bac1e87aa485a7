"""The golden runs: scenarios whose tables guard the testbed's behaviour cell by cell.

Each case is a bundled scenario plus `--set` overrides, run under `framework.precision: fp32`
and `--replay-compute` of its recorded events (both make a run deterministic). `record.py`
writes `tests/golden/<case>/`; `tests/test_golden_runs.py` re-runs each case and compares.
A change that alters outputs on purpose regenerates them (`python -m tests.golden.record`)
and explains the diff in its commit.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from testbed.sim.replay import ComputeReplay

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent
SMOKE = ROOT / "scenarios" / "smoke.yaml"
OOM = ROOT / "scenarios" / "oom.yaml"
TABLES = ("rounds.csv", "client_rounds.csv", "events.csv")


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


class GoldenReplay(ComputeReplay):
    """A replay in which no span falls back to a fresh measurement.

    A span that the recorded run never finished (cut off by a round's close, the run's end or
    the client going offline) has no recorded duration, and a plain replay measures it anew:
    whether it then ends before the cut-off would vary from run to run. Here it takes the
    median recorded duration of the same client's spans of that label (else of that label),
    so the whole run is a function of the recorded file. `record.py` replays until the tables
    stop changing, so the golden file is a fixed point of this replay.
    """

    def lookup(self, rnd: int, client: int, label: str, host_s: float, device_s: float) -> tuple[float, float]:
        key = (rnd, client, label, self._seen[(rnd, client, label)])
        if key in self.durations:
            return super().lookup(rnd, client, label, host_s, device_s)
        self._seen[(rnd, client, label)] += 1
        same = [v for k, v in self.durations.items() if k[1] == client and k[2] == label] or \
               [v for k, v in self.durations.items() if k[2] == label]
        if not same:
            return host_s, device_s
        return statistics.median(v[0] for v in same), statistics.median(v[1] for v in same)


def run_case(case: Case, out: Path, replay_dir: Path | None) -> dict:
    """Run the case into `out`, replaying `replay_dir`'s compute with GoldenReplay (measured
    compute where `replay_dir` is None); its summary."""
    from testbed.config.scenario import load_scenario
    from testbed.sim.session import run_scenario

    scenario = load_scenario(case.scenario, case.all_overrides)
    with mock.patch("testbed.sim.session.ComputeReplay", GoldenReplay):
        return run_scenario(scenario, out, replay_dir=str(replay_dir) if replay_dir else None, quiet=True)
