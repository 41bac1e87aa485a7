"""What a round policy drives, and the interface every policy fills (Flower's strategy for the
round loop itself: synchronous rounds, a deadline with over-selection, FedBuff)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import simpy

from testbed.config.scenario import Scenario
from testbed.protocol import Framework
from testbed.results.recorder import RunRecorder
from testbed.sim.client import ClientProcess
from testbed.sim.recording import Recording
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
