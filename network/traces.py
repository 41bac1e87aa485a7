"""Link capacity traces, in one place: their types, reading them from files, making them.

The trace types live in `network.trace_types`, the mahimahi and 5Gophers readers in
`network.trace_files`, the seeded generators in `network.trace_synthetic`; this module
gathers them so that ``from network.traces import ...`` keeps working.
"""

from network.trace_files import (
    FIVE_G_COLUMNS,
    load_5g_throughput,
    load_mahimahi,
    parse_mahimahi,
)
from network.trace_synthetic import markov_rate_trace, synthetic_trace
from network.trace_types import (
    BITS_PER_MBIT,
    EPS_MS,
    PACKET_BYTES,
    OpportunityTrace,
    RateTrace,
    ShiftedTrace,
    TraceError,
)

__all__ = [
    "BITS_PER_MBIT",
    "EPS_MS",
    "FIVE_G_COLUMNS",
    "PACKET_BYTES",
    "OpportunityTrace",
    "RateTrace",
    "ShiftedTrace",
    "TraceError",
    "load_5g_throughput",
    "load_mahimahi",
    "markov_rate_trace",
    "parse_mahimahi",
    "synthetic_trace",
]
