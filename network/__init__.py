"""The discrete-event network: pipes, flows and their max-min fair sharing on a simpy clock.

A pipe is one direction of one link, composed from parts: a capacity (constant rate, a
mahimahi opportunity trace or a piecewise-constant rate trace), propagation delay with
optional jitter, random loss, and scheduled outages. Imports nothing of the project, only
simpy, numpy and the standard library. See docs/network.md.
"""

from network.fairness import Share, max_min_rates, max_min_shares
from network.flows import Network, TransferRecord
from network.links import ConstantRate, Jitter, Outage, OutagePolicy, Pipe, mathis_wire_bytes_per_s
from network.overhead import NO_OVERHEAD, TCP_IP, ProtocolOverhead
from network.traces import (
    PACKET_BYTES,
    OpportunityTrace,
    RateTrace,
    ShiftedTrace,
    TraceError,
    load_5g_throughput,
    load_mahimahi,
    markov_rate_trace,
    parse_mahimahi,
    synthetic_trace,
)

__all__ = [
    "NO_OVERHEAD",
    "PACKET_BYTES",
    "TCP_IP",
    "ConstantRate",
    "Jitter",
    "Network",
    "OpportunityTrace",
    "Outage",
    "OutagePolicy",
    "Pipe",
    "ProtocolOverhead",
    "RateTrace",
    "Share",
    "ShiftedTrace",
    "TraceError",
    "TransferRecord",
    "load_5g_throughput",
    "load_mahimahi",
    "markov_rate_trace",
    "mathis_wire_bytes_per_s",
    "max_min_rates",
    "max_min_shares",
    "parse_mahimahi",
    "synthetic_trace",
]
