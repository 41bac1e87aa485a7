"""The endpoint holds up against clients that misbehave (testbed.backends.endpoint,
testbed.backends.http_server): a flood of half-open connections, a long poll's wait that is not
a number, a body past the limit, malformed parameters, lengths and messages."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from testbed.backends.endpoint import Endpoint
from testbed.backends.http_server import EndpointLimits
from testbed.backends.messages import Done, Exited, Started, Stop
from testbed.backends.wire import encode
from testbed.protocol import Payload, StepRes


def raw(ep: Endpoint, request: bytes, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """Send `request` as it is; (status, body) of the reply."""
    with socket.create_connection((ep.host, ep.port), timeout=timeout_s) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(head.split(b" ", 2)[1]), body


def get(ep: Endpoint, target: str, *, token: str | None = None, extra: str = "") -> tuple[int, bytes]:
    token = ep.token if token is None else token
    return raw(ep, f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{extra}"
                   "Connection: close\r\n\r\n".encode())


def post(ep: Endpoint, target: str, body: bytes, *, headers: str | None = None) -> tuple[int, bytes]:
    headers = f"Content-Length: {len(body)}\r\n" if headers is None else headers
    return raw(ep, f"POST {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ep.token}\r\n{headers}"
                   "Connection: close\r\n\r\n".encode() + body)


def answered_within(ep: Endpoint, seconds: float) -> float | None:
    """Seconds until an authenticated /health is answered 200 (refusals and resets retried)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        try:
            if get(ep, "/health", extra="")[0] == 200:
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.05)
    return None


@pytest.fixture
def quiet(capsys):
    """The server writes nothing to stderr (no traceback, no access log)."""
    yield
    assert capsys.readouterr().err == ""


# --- connections ------------------------------------------------------------------------------


def test_300_half_open_connections_hold_at_most_the_pool_and_the_server_answers_after(quiet):
    limits = EndpointLimits(max_connections=16, header_timeout_s=2.0)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], threading.active_count())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with Endpoint(limits=limits) as ep:
        time.sleep(0.05)
        baseline = threading.active_count()  # this thread, the sampler, the accept loop
        peak[0] = baseline
        socks = []
        try:
            t0 = time.monotonic()
            for i in range(300):
                s = socket.create_connection((ep.host, ep.port), timeout=5)
                if i % 2:  # half a header, then silence
                    s.sendall(b"GET /health HTTP/1.1\r\nAuthoriz")
                socks.append(s)
            flood_s = time.monotonic() - t0
            time.sleep(0.2)
            during = ep.connections()
            took = answered_within(ep, 8.0)  # the flood's sockets are all still open
            t1 = time.monotonic()
            while ep.connections()["active"] and time.monotonic() - t1 < 3.0:
                time.sleep(0.05)
            threads_after = threading.active_count()
        finally:
            for s in socks:
                s.close()
            stop.set()
    print(f"\nflood of 300 in {flood_s:.2f} s: baseline {baseline} threads, peak {peak[0]}, connections {during}, "
          f"a request answered after {took:.2f} s, {threads_after} threads once they timed out")
    assert peak[0] <= baseline + limits.max_connections
    assert during["peak_active"] <= limits.max_connections
    assert during["served"] + during["refused"] == 300 and during["refused"] >= 300 - 4 * limits.max_connections
    if flood_s < limits.header_timeout_s - 0.3:  # the pool was full when the request came
        assert during["active"] == limits.max_connections
    assert took is not None and took < limits.header_timeout_s + 3.0
    assert threads_after <= baseline  # the half-open ones timed out and let their threads go


def test_a_stalled_connection_is_closed_after_the_header_timeout(quiet):
    with Endpoint(limits=EndpointLimits(header_timeout_s=0.5)) as ep:
        with socket.create_connection((ep.host, ep.port), timeout=5) as sock:
            t0 = time.monotonic()
            for _ in range(8):  # a byte every 0.1 s: never idle for long, but never done either
                try:
                    sock.sendall(b"G")
                except OSError:
                    break
                time.sleep(0.1)
            sock.settimeout(3)
            try:
                rest = sock.recv(100)
            except ConnectionResetError:
                rest = b""
            assert rest == b"" and time.monotonic() - t0 < 2.5  # closed, without a reply
        assert ep.connections()["active"] == 0


# --- long polls ---------------------------------------------------------------------------------


@pytest.mark.parametrize("wait_s", ["nan", "NaN", "inf", "-inf", "-1", "1e3", "0x10", "", "1e400",
                                    "9999999999", "%6E%61%6E", "\u0661", "1.5.5"])
def test_a_wait_that_is_not_plain_seconds_is_a_400_and_takes_no_command(wait_s, quiet):
    with Endpoint() as ep:
        ep.register(0, {"spec": 1})
        ep.reset(0, 1)
        ep.send(0, Stop())
        status, body = get(ep, f"/clients/0/next?inc=1&wait_s={wait_s}")
        assert status == 400 and body.count(b"\n") == 1 and b"wait_s" in body
        status, body = get(ep, "/clients/0/next?inc=1&wait_s=0")  # the command is still there
        assert status == 200
        from testbed.backends.wire import decode

        assert decode(body) == Stop()


def test_a_huge_wait_is_clamped_to_the_maximum(quiet):
    with Endpoint(limits=EndpointLimits(max_wait_s=0.3)) as ep:
        ep.register(0, {})
        t0 = time.monotonic()
        assert get(ep, "/clients/0/next?wait_s=999999999")[0] == 204
        assert 0.25 < time.monotonic() - t0 < 3.0


# --- bodies -------------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_a_413_unread_and_the_server_keeps_serving(quiet):
    with Endpoint(limits=EndpointLimits(max_body_bytes=1024)) as ep:
        ep.register(0, {})
        fits = encode(Started(7))
        assert len(fits) <= 1024
        assert post(ep, "/clients/0/result", b"\x00" * 1025)[0] == 413
        assert post(ep, "/clients/0/result", b"\x00" * 10_000_000)[0] == 413
        assert ep.receive(0, 0.05) is None
        assert post(ep, "/clients/0/result", fits)[0] == 204
        assert ep.receive(0, 1) == Started(7)
        assert get(ep, "/health")[0] == 200


def test_a_body_past_the_spool_threshold_is_read_through_a_file(monkeypatch, quiet):
    import tempfile

    spooled = []
    real = tempfile.TemporaryFile
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda *a, **k: spooled.append(1) or real(*a, **k))
    done = Done(StepRes(payloads=(Payload("activations_up", bytes(range(256)) * 400),)))
    with Endpoint(limits=EndpointLimits(spool_bytes=4096)) as ep:
        ep.register(0, {})
        assert post(ep, "/clients/0/result", encode(Started(1)))[0] == 204
        assert spooled == []
        assert post(ep, "/clients/0/result", encode(done))[0] == 204
        assert spooled == [1]
        assert ep.receive(0, 1) == Started(1) and ep.receive(0, 1) == done


@pytest.mark.parametrize("headers", ["", "Content-Length: abc\r\n", "Content-Length: -5\r\n",
                                     "Content-Length: 1\r\nContent-Length: 1\r\n", "Content-Length: 1e3\r\n",
                                     "Transfer-Encoding: chunked\r\n", "Content-Length: 99999999999999999999\r\n"])
def test_a_post_without_one_plain_length_is_refused(headers, quiet):
    with Endpoint() as ep:
        ep.register(0, {})
        status, body = post(ep, "/clients/0/result", b"x", headers=headers)
        assert status in (400, 413) and body.count(b"\n") == 1
        assert ep.receive(0, 0.05) is None


def test_only_what_a_worker_may_post_is_taken(quiet):
    with Endpoint() as ep:
        ep.register(0, {})
        assert post(ep, "/clients/0/result", encode(Exited(137, True)))[0] == 400  # the backend's own note
        assert post(ep, "/clients/0/result", encode(Stop()))[0] == 400
        assert post(ep, "/clients/0/result", encode({"ok": 1}))[0] == 400
        assert post(ep, "/clients/0/result", b"\xff" * 64)[0] == 400
        assert ep.receive(0, 0.05) is None


# --- parameters and routes -------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "status"), [
    ("/clients/0/next?inc=abc", 400), ("/clients/0/next?inc=-1", 400), ("/clients/0/next?inc=1&inc=1", 400),
    ("/clients/0/next?foo=1", 400), ("/clients/0/next?inc", 400), ("/clients/0/spec?wait_s=1", 400),
    ("/clients/0/next?inc=99999999999", 400), ("/clients/0/next?inc=%ff", 400), ("/health?x=1", 400),
    ("/clients/0/next?&", 400), ("/clients/\u00b2/spec", 404), ("/clients/0/spec/", 404), ("//[x", 404),
    ("/clients/99999999999/spec", 404), ("/clients/1/spec", 404), ("/clients/0/nope", 404), ("*", 404),
])
def test_a_bad_parameter_or_route_is_a_one_line_refusal(target, status, quiet):
    with Endpoint() as ep:
        ep.register(0, {})
        got, body = get(ep, target)
        assert got == status and body.count(b"\n") == 1 and b"Traceback" not in body
        assert get(ep, "/health")[0] == 200


def test_malformed_requests_get_a_4xx_or_501_never_a_500(quiet):
    with Endpoint() as ep:
        for request in (b"\r\n\r\n", b"GARBAGE\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                        b"PUT /health HTTP/1.1\r\n\r\n", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
                        b"GET /health HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",
                        b"GET /health HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\r\n\r\n"):
            try:
                status, _ = raw(ep, request)
            except (OSError, IndexError, ValueError):  # closed without a reply: also fine
                continue
            assert 400 <= status < 500 or status == 501, (request[:40], status)
        assert get(ep, "/health")[0] == 200
