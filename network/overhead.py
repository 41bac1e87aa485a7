"""Per-message wire overhead: how many bytes a payload costs on the link."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ProtocolOverhead:
    """Bytes a transport adds around a payload, per packet and per message."""

    mss_bytes: int = 1460  # payload carried by one packet
    header_bytes: int = 40  # transport + network headers per packet
    handshake_bytes: int = 0  # extra bytes per message (connection setup, framing)

    def __post_init__(self) -> None:
        _check_int(self.mss_bytes, "mss_bytes", minimum=1)
        _check_int(self.header_bytes, "header_bytes", minimum=0)
        _check_int(self.handshake_bytes, "handshake_bytes", minimum=0)

    def packets(self, payload_bytes: int) -> int:
        """Packets needed for the payload; an empty payload still sends one."""
        return max(1, math.ceil(payload_bytes / self.mss_bytes))

    def wire_bytes(self, payload_bytes: int) -> int:
        """Bytes on the wire for one message carrying `payload_bytes`."""
        _check_int(payload_bytes, "payload_bytes", minimum=0)
        headers_bytes = self.packets(payload_bytes) * self.header_bytes
        return payload_bytes + headers_bytes + self.handshake_bytes


def _check_int(value: int, name: str, *, minimum: int) -> None:
    """Raise ValueError naming `name` unless `value` is an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'"{name}" must be an int, got {value!r}')
    if value < minimum:
        raise ValueError(f'"{name}" must be >= {minimum}, got {value!r}')


NO_OVERHEAD = ProtocolOverhead(header_bytes=0, handshake_bytes=0)  # wire_bytes(n) == n
TCP_IP = ProtocolOverhead()  # 1460-byte segments, 20 B TCP + 20 B IPv4 headers
