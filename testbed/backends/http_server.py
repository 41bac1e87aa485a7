"""The endpoint's HTTP server: a bounded number of connections, each with its time limits.

A client container is not trusted to behave: what listens on 127.0.0.1 must hold up against
a half-open connection, a slow sender, a flood of connections, a huge or malformed request.
:class:`BoundedHTTPServer` serves each connection on its own thread but never more than
``max_connections`` at once; a connection past that is answered ``503`` at once (its worker
retries) and closed, so the thread count stays bounded. :class:`LimitedHandler` gives each
request ``header_timeout_s`` to deliver its request line and headers (in total, however
slowly the bytes trickle, and also for a kept-alive connection's next request) and each
later read or write ``io_timeout_s``; a body past ``max_body_bytes`` is refused (413) before
it is read, and one past ``spool_bytes`` is read into a temporary file rather than memory.
Errors are answered with one line of text; nothing is written to stderr but one line for a
fault of the server's own. The limits are an :class:`EndpointLimits`, whose defaults are
those of a run.
"""

from __future__ import annotations

import io
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import IO, Any

_BUSY = b"503 endpoint busy: too many connections, retry\n"
_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 1\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY), _BUSY))
_CHUNK_BYTES = 2**20
_LINGER_S = 1.0  # after refusing a body unread: how long it is drained, so the reply is not lost to a reset
_LINGER_BYTES = 16 * 2**20


@dataclass(frozen=True)
class EndpointLimits:
    """What the endpoint lets a connection have (constructor defaults: those of a run)."""

    max_connections: int = 256  # served at once, one thread each; past it: 503 and closed
    header_timeout_s: float = 10.0  # to send a request's line and headers, in total
    io_timeout_s: float = 60.0  # for each read of a body and each write of a reply
    max_body_bytes: int = 2 * 2**30  # a POST body past it: 413, unread
    spool_bytes: int = 64 * 2**20  # a body past it is read into a temporary file, not memory
    max_wait_s: float = 60.0  # a long poll's wait_s is clamped to it
    backlog: int = 128  # connections the kernel holds before they are accepted

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_body_bytes", "backlog"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f'"{name}" must be a positive integer, got {getattr(self, name)!r}.')
        if not isinstance(self.spool_bytes, int) or self.spool_bytes < 0:
            raise ValueError(f'"spool_bytes" must be a non-negative integer, got {self.spool_bytes!r}.')
        for name in ("header_timeout_s", "io_timeout_s", "max_wait_s"):
            value = getattr(self, name)
            if not 0 < value < float("inf"):
                raise ValueError(f'"{name}" must be > 0 and finite, got {value!r}.')


class RequestError(Exception):
    """A request the endpoint refuses: its status and one line saying why."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class BoundedHTTPServer(HTTPServer):
    """An HTTP server of at most ``limits.max_connections`` connection threads."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[LimitedHandler], limits: EndpointLimits) -> None:
        self.limits = limits
        self.request_queue_size = limits.backlog
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._lock = threading.Lock()
        self.active = 0  # connections being served now
        self.peak_active = 0
        self.refused = 0  # connections answered 503 for want of a free slot
        self.served = 0  # connections given a slot
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        with self._lock:
            self.active += 1
            self.served += 1
            self.peak_active = max(self.peak_active, self.active)
        thread = threading.Thread(target=self._serve, args=(request, client_address), daemon=True,
                                  name="endpoint-connection")
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: refuse this one
            self._release()
            self._refuse(request)

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._release()

    def _release(self) -> None:
        with self._lock:
            self.active -= 1
        self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        with self._lock:
            self.refused += 1
        try:
            request.setblocking(False)
            request.send(_REFUSAL)
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A peer that went away is no news; anything else is one line, never a traceback."""
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, OSError):
            print(f"endpoint: {client_address}: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)


class _TimedReader(io.RawIOBase):
    """The connection's bytes, each read given what is left of the handler's time."""

    def __init__(self, handler: LimitedHandler) -> None:
        self.handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self.handler._recv_into(buffer)


class LimitedHandler(BaseHTTPRequestHandler):
    """A request handler under the server's :class:`EndpointLimits`."""

    server: BoundedHTTPServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.limits = self.server.limits
        self._deadline: float | None = None  # while reading a request's head
        self._unread_body = False
        self.rfile.close()  # the buffered reader the base class made; ours times every read
        self.rfile = io.BufferedReader(_TimedReader(self), 64 * 1024)

    def _recv_into(self, buffer: Any) -> int:
        timeout = self.limits.io_timeout_s
        if self._deadline is not None:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request's head took too long")
            timeout = min(timeout, left)
        self.connection.settimeout(timeout)
        return self.connection.recv_into(buffer)

    def handle_one_request(self) -> None:
        self._deadline = time.monotonic() + self.limits.header_timeout_s
        self._unread_body = False
        super().handle_one_request()
        if self._unread_body:  # the next request would start inside this one's body
            self.close_connection = True

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self._deadline = None  # the head is in: reads and writes from here get io_timeout_s each
        self.connection.settimeout(self.limits.io_timeout_s)
        if ok and self._declared_length() != 0:
            self._unread_body = True
        return ok

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self._unread_body:
                self._linger()

    def _linger(self) -> None:
        """The reply was sent with the body unread: stop sending, then drain what the peer
        still sends for a moment, so that closing does not reset the reply away."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            deadline, drained = time.monotonic() + _LINGER_S, 0
            while drained < _LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # no access log, no error log: the reply says it

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """One line of text (the base class writes an HTML page)."""
        try:
            status = HTTPStatus(code)
            line = message or status.phrase
        except ValueError:
            status, line = code, message or "error"
        self.close_connection = True
        self.reply(status, f"{int(code)} {line}\n".encode("latin-1", "replace"))

    def reply(self, status: HTTPStatus | int, body: bytes = b"", content_type: str = "text/plain") -> None:
        self.connection.settimeout(self.limits.io_timeout_s)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    # -- the body ----------------------------------------------------------------------------
    def _declared_length(self) -> int | None:
        """The Content-Length (0 without one); None when it cannot be trusted."""
        if self.headers.get("Transfer-Encoding") is not None:
            return None
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return 0
        if len(values) > 1 or not values[0].strip().isascii() or not values[0].strip().isdigit() \
                or len(values[0].strip()) > 15:
            return None
        return int(values[0].strip())

    def body_length(self) -> int:
        """The request's body length, checked against the limit before a byte is read."""
        length = self._declared_length()
        if length is None:
            self.close_connection = True
            raise RequestError(HTTPStatus.BAD_REQUEST, "one plain Content-Length is required (no chunked bodies)")
        if length > self.limits.max_body_bytes:
            self.close_connection = True
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"a body of {length} bytes is over the limit of {self.limits.max_body_bytes}")
        return length

    def read_body(self, length: int) -> bytes | IO[bytes]:
        """The body: bytes up to ``spool_bytes``, else an open temporary file holding it."""
        self._unread_body = False
        if length <= self.limits.spool_bytes:
            data = self.rfile.read(length)
            if len(data) != length:
                self.close_connection = True
                raise RequestError(HTTPStatus.BAD_REQUEST, f"the body ended after {len(data)} of {length} bytes")
            return data
        spool = tempfile.TemporaryFile(prefix="testbed-endpoint-")
        try:
            left = length
            while left:
                chunk = self.rfile.read(min(left, _CHUNK_BYTES))
                if not chunk:
                    self.close_connection = True
                    raise RequestError(HTTPStatus.BAD_REQUEST,
                                       f"the body ended after {length - left} of {length} bytes")
                spool.write(chunk)
                left -= len(chunk)
            spool.seek(0)
            return spool
        except BaseException:
            spool.close()
            raise
