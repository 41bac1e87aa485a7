"""The discrete-event network: pipes, flows and their max-min fair sharing on a simpy clock.

Imports nothing of the project, only simpy and the standard library.
"""

from network.fairness import max_min_rates
from network.flows import Network, Pipe, TransferRecord
from network.overhead import NO_OVERHEAD, TCP_IP, ProtocolOverhead

__all__ = [
    "NO_OVERHEAD",
    "TCP_IP",
    "Network",
    "Pipe",
    "ProtocolOverhead",
    "TransferRecord",
    "max_min_rates",
]
