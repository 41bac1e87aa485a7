"""What a round policy drives, and the interface every policy fills (Flower's strategy for the
round loop itself: synchronous rounds, a deadline with over-selection, FedBuff)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import simpy

from testbed.config.scenario import Scenario
from testbed.protocol import FitIns, Framework
from testbed.results.recorder import RunRecorder
from testbed.sim.client import ClientProcess
from testbed.sim.ledger import Ledger
from testbed.sim.recording import Recording
from testbed.sim.resume import Checkpoints
from testbed.sim.selection import Selection
from testbed.sim.server import Server

OnRound = Callable[[dict[str, Any]], None]


@dataclass
class SimParts:
    """The actors on the one clock, built once the runner has started."""

    scenario: Scenario
    env: simpy.Environment
    framework: Framework
    selection: Selection
    clients: ClientProcess
    server: Server
    recording: Recording
    recorder: RunRecorder
    evaluate: Callable[[int], tuple[dict, float]]  # round -> (metrics, host seconds)
    progress: Callable[[str], None]
    ledger: Ledger  # what entered the clock: recorded, or replayed up to a resumed run's checkpoint
    checkpoints: Checkpoints

    def configure_fit(self, rnd: int, client_ids: list[int]) -> tuple[int, dict[int, FitIns]]:
        """(call index, what each client is sent): the framework's configure_fit, recorded in
        the ledger (replayed from it while a resumed run catches up)."""
        return self.ledger.configure_fit(self.framework.configure_fit, rnd, client_ids)

    def evaluates(self, rnd: int) -> bool:
        """Whether round `rnd`'s model is evaluated (eval.every, and always the last round)."""
        return rnd % self.scenario.eval.every == 0 or rnd == self.scenario.framework.rounds


class RoundPolicy(ABC):
    """Runs `framework.rounds` rounds (or server versions), writing one rounds.csv row each."""

    kind: ClassVar[str]  # its `policy.kind`
    # whether the data-parallel group may evaluate between rounds (FedBuff: client work may be queued there)
    group_may_evaluate: ClassVar[bool] = True

    def __init__(self, parts: SimParts) -> None:
        self.parts = parts

    @abstractmethod
    def run(self, on_round: OnRound | None) -> None:
        """Every round of the run, calling `on_round` with each new rounds.csv row."""
