"""Scenario sections on how rounds unfold: `availability`, `policy`, `network`, `faults` and `eval`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from testbed.config.node import Node


class AvailabilityConfig(Node):
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


class PolicyConfig(Node):
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


class NetworkConfig(Node):
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


class KillFault(Node):
    round: int = Field(gt=0)  # round in which the client's worker is killed mid-fit
    client: int = Field(ge=0)  # client id (position in the expanded fleet)


class FaultsConfig(Node):
    kill: tuple[KillFault, ...] = ()  # SIGKILL these clients' workers mid-round


class GenerateConfig(Node):
    """Greedy generation on a fixed, seeded subset of the held-out set (generative tasks)."""

    samples: int = Field(32, ge=0)  # held-out examples generated for (0: none)
    max_new_tokens: int = Field(32, gt=0)


class EvalConfig(Node):
    before_training: bool = True  # evaluate the initial global model (round 0)
    every: int = Field(1, gt=0)  # evaluate after every n-th round (and always after the last)
    batch_size: int = Field(16, gt=0)
    # null: 32 samples of 32 new tokens for instruction tasks, none for language modelling
    generate: GenerateConfig | None = None
