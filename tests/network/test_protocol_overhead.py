"""Wire bytes of a message under each protocol overhead."""

import pytest

from network import NO_OVERHEAD, TCP_IP, ProtocolOverhead


def test_no_overhead_sends_the_payload_only() -> None:
    assert [NO_OVERHEAD.wire_bytes(n) for n in (0, 1, 1460, 10**9)] == [0, 1, 1460, 10**9]


@pytest.mark.parametrize(
    ("payload_bytes", "expected_wire_bytes"),
    [
        (0, 40),  # an empty message is still one header-only packet
        (1, 41),
        (1460, 1500),  # one full segment
        (1461, 1541),  # spills into a second packet
        (1_000_000, 1_027_400),  # ceil(1e6 / 1460) = 685 packets * 40 B
    ],
)
def test_tcp_ip_adds_one_header_per_segment(payload_bytes: int, expected_wire_bytes: int) -> None:
    assert TCP_IP.wire_bytes(payload_bytes) == expected_wire_bytes


def test_handshake_is_added_once_per_message() -> None:
    overhead = ProtocolOverhead(mss_bytes=1000, header_bytes=50, handshake_bytes=300)

    assert overhead.wire_bytes(2500) == 2500 + 3 * 50 + 300


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"mss_bytes": 0}, "mss_bytes"),
        ({"header_bytes": -1}, "header_bytes"),
        ({"handshake_bytes": -5}, "handshake_bytes"),
        ({"mss_bytes": 1.5}, "mss_bytes"),
    ],
)
def test_bad_overhead_names_the_field(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=f'"{name}"'):
        ProtocolOverhead(**kwargs)  # type: ignore[arg-type]


def test_negative_payload_is_rejected() -> None:
    with pytest.raises(ValueError, match='"payload_bytes" must be >= 0, got -3'):
        TCP_IP.wire_bytes(-3)
