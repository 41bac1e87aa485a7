"""Scenario sections `server` and `fleet`: the devices, and the links that join them to the server."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from testbed.config.node import Node


class LinkSpec(Node):
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


class ServerLinkConfig(Node):
    rate_mbps: float = Field(1000.0, gt=0)  # capacity of the server's access link, each direction
    rtt_ms: float = Field(2.0, ge=0)  # round-trip propagation delay it adds


class ServerConfig(Node):
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where server-side models run
    link: ServerLinkConfig = ServerLinkConfig()


class FleetEntry(Node):
    device: str  # a device profile name (see `testbed profiles`)
    link: str | LinkSpec  # a link profile name, or an inline {down_mbps, up_mbps, rtt_ms}
    count: int = Field(1, gt=0)
    memory_limit_mb: float | None = Field(None, gt=0)  # overrides this entry's app RAM budget (MiB)
