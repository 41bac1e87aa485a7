"""Scenario section `emulation`: the backend, how host time becomes device time, workers, limits, docker."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from testbed.config.node import Node


class DockerConfig(Node):
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


PROBE_MAX_CLIENTS = 8  # compute: predicted: clients its probe runs at once, at most (testbed.sim.probe)


class RayConfig(Node):
    """`backend: ray`: each client in a Ray actor, on a local Ray or a running cluster (docs/ray.md)."""

    # null: start a local Ray for the run; auto: join the cluster this machine belongs to
    # (`ray start` ran here); ray://host:port: join a remote cluster through Ray Client
    address: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is None or v == "auto" or v.startswith("ray://") or re.fullmatch(r"[\w.\-]+:\d+", v):
            return v
        raise ValueError(f"{v!r} is not a Ray address: use null (a local Ray), auto (the cluster `ray start` "
                         "made on this machine), ray://host:port (Ray Client) or host:port (the head's GCS)")


class EmulationConfig(Node):
    backend: Literal["inproc", "process", "docker", "ray"] = "process"
    # measured: every client's work runs for real and its measured time becomes device time;
    # predicted: nothing trains, every span comes from a cost table measured once on this host
    # for the scenario's model and shapes (testbed.sim.probe), for fleets of thousands
    compute: Literal["measured", "predicted"] = "measured"
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
    ray: RayConfig = RayConfig()  # backend: ray

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
