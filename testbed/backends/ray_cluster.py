"""The Ray cluster as the ray backend sees it: joining it (a local Ray, `auto`, Ray Client or
a GCS address; a bounded wait and one-line errors), its nodes, where each client's actor goes
and what it reserves there, and what Ray's exceptions say about an actor's death.

Placement: each client on the node with the fewest clients per slot (a node's CPUs / the
clients' threads), reserving its threads and RAM budget (Ray's `num_cpus` and `memory`:
admission hints, not cgroup limits), or its share of a node that cannot hold every client's.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from dataclasses import dataclass
from typing import Any

from testbed.config.scenario import ScenarioError
from testbed.config.extras import MissingExtra, require
from testbed.protocol import ClientSpec

_CONNECT_TIMEOUT_S = 10.0  # an address that does not accept a connection by then is not answering


def import_ray() -> Any:
    """The ray module, or a ScenarioError saying how to install it (the `ray` extra)."""
    try:
        return require("ray")
    except MissingExtra as exc:
        raise ScenarioError(str(exc)) from None


# --- placement ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RayNode:
    node_id: str
    cpus: float
    memory_bytes: float


@dataclass(frozen=True)
class Placement:
    node_id: str
    num_cpus: float  # Ray's CPU reservation
    memory_bytes: int  # Ray's memory reservation (0: none asked)


def node_slots(node: RayNode, threads: int) -> int:
    """Calls computing at once on the node: one per `threads` CPUs, at least one."""
    return max(1, int(node.cpus // threads))


def plan_placement(specs: list[ClientSpec], nodes: list[RayNode], budgets: dict[int, int],
                   threads: int) -> dict[int, Placement]:
    """Each client on the node with the fewest clients per slot (ties: the earlier node),
    reserving its threads and budget, or its share of the node where the node holds less."""
    load = {n.node_id: [] for n in nodes}
    for spec in sorted(specs, key=lambda s: s.client_id):
        best = min(nodes, key=lambda n: (len(load[n.node_id]) + 1) / node_slots(n, threads))
        load[best.node_id].append(spec)
    plan = {}
    for node in nodes:
        here = load[node.node_id]
        asked = sum(budgets.get(s.client_id, 0) for s in here)
        for spec in here:
            cpus = int(min(spec.threads, node.cpus / len(here)) * 10_000) / 10_000  # Ray's precision
            budget = budgets.get(spec.client_id, 0)
            memory = budget if asked <= node.memory_bytes else int(budget * node.memory_bytes / asked)
            plan[spec.client_id] = Placement(node.node_id, cpus, memory)
    return plan


# --- connecting and reading Ray's answers ------------------------------------------------------


def connect(ray: Any, address: str | None, preload: tuple[str, ...] = ()) -> bool:
    """Join Ray at `address` (None: start a local one with this host's cores, whose workers
    import `preload` as they start); True where this made the connection (close() ends it),
    False where this process had one already (a test's cluster). A ScenarioError, in a
    bounded time, where the address does not answer."""
    if ray.is_initialized():
        return False
    options = {"log_to_driver": False, "logging_level": logging.ERROR, "ignore_reinit_error": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ray's tips about future defaults
        if address is None:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False,
                     _system_config={"preload_python_modules": list(preload)}, **options)
            return True
        try:
            if address != "auto":  # bounded: Ray's own waits for a silent address take minutes
                host, _, port = address.removeprefix("ray://").rpartition(":")
                socket.create_connection((host, int(port)), timeout=_CONNECT_TIMEOUT_S).close()
            ray.init(address=address, **options)
        except (Exception, SystemExit) as exc:  # Ray exits the process where the GCS never answers
            why = " ".join(str(exc).split())[:160] or type(exc).__name__
            raise ScenarioError(f"emulation.ray.address: {address} did not answer ({why}): start the cluster "
                                "(`ray start --head`) or set it to null for a local Ray") from None
    return True


def alive_nodes(ray: Any) -> list[RayNode]:
    """The cluster's alive nodes that have CPUs."""
    return [RayNode(n["NodeID"], float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("memory", 0)))
            for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]


def death_of(ray: Any, exc: BaseException) -> tuple[str, str]:
    """(cause, detail) of an actor's death as Ray tells it: oom, killed or crashed."""
    text = str(exc)
    if isinstance(exc, ray.exceptions.OutOfMemoryError) or "memory monitor" in text or "low on memory" in text:
        cause = "oom"
    else:
        cause = "killed" if "ray.kill" in text else "crashed"
    because = next((line.strip() for line in text.splitlines() if "dead because" in line), "")
    return cause, f"{first_line(exc)} {because}".strip()


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
