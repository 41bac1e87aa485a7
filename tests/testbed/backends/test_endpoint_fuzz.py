"""Fuzzing the endpoint with raw HTTP: arbitrary request lines, targets, query strings, headers
and bodies never get a 500, never put a traceback (or anything) on the server's stderr, and
the server answers a good request afterwards (hypothesis profiles: tests/conftest.py)."""

from __future__ import annotations

import contextlib
import io
import re
import socket
import time

from hypothesis import given, settings
from wire_trees import http_requests, recording_runners

from testbed.backends.endpoint import Endpoint
from testbed.backends.http_server import EndpointLimits
from testbed.backends.messages import Stop

STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")
# short waits, so that a fuzzed long poll or a request cut short costs little
LIMITS = EndpointLimits(max_connections=8, header_timeout_s=0.5, io_timeout_s=0.5, max_body_bytes=4096,
                        spool_bytes=256, max_wait_s=0.02)


def exchange(ep: Endpoint, request: bytes, timeout_s: float = 5.0) -> bytes:
    """Send `request`, end the sending side, and read everything the server says until it closes."""
    with socket.create_connection((ep.host, ep.port), timeout=timeout_s) as sock:
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before taking it all
            pass
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
    return out


def test_arbitrary_requests_never_get_a_500_nor_a_traceback_and_the_server_answers_after():
    statuses: dict[int, int] = {}
    stderr = io.StringIO()
    t0 = time.perf_counter()
    with Endpoint(limits=LIMITS) as ep, contextlib.redirect_stderr(stderr), recording_runners() as calls:
        ep.register(0, {"spec": "x"})

        @given(http_requests(ep.token))
        def check(request: bytes) -> None:
            ep.send(0, Stop())  # something for a fuzzed long poll to take
            reply = exchange(ep, request)
            codes = [int(c) for c in STATUS.findall(reply)]
            for code in codes:
                statuses[code] = statuses.get(code, 0) + 1
            assert 500 not in codes, (request[:300], reply[:300])
            assert b"Traceback" not in reply

        check()
        elapsed = time.perf_counter() - t0
        good = exchange(ep, f"GET /health HTTP/1.1\r\nAuthorization: Bearer {ep.token}\r\n\r\n".encode())
        deadline = time.monotonic() + 3
        while ep.connections()["active"] and time.monotonic() < deadline:
            time.sleep(0.02)
        left = ep.connections()
    print(f"\n{sum(statuses.values())} replies to fuzzed requests in {elapsed:.1f} s: {dict(sorted(statuses.items()))}"
          f"; connections {left}")
    assert good.startswith(b"HTTP/1.1 200 ")
    assert stderr.getvalue() == "" and calls == []
    assert left["active"] == 0 and left["peak_active"] <= LIMITS.max_connections
    assert sum(statuses.values()) >= settings().max_examples // 2
    assert {200, 204, 400, 401} <= set(statuses)  # the fuzzing reaches past authorization and routing
