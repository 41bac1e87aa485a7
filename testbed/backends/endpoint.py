"""The server's side of the wire: a small authenticated HTTP endpoint for client containers.

Direction as in real federated learning: the server listens, clients call in. Each client
worker (testbed/backends/http_worker.py) fetches its spec, registers as ready, long-polls
for its next command and posts back what it made; bodies are safetensors
(:mod:`testbed.backends.wire`), messages those of :mod:`testbed.backends.messages` (the endpoint
only queues them). Every request carries ``Authorization: Bearer <token>``, a random
per-run token handed to containers by environment variable; anything else gets 401.

Routes (``<cid>`` a client id; ``inc`` the container incarnation, see :meth:`Endpoint.reset`):

- ``GET  /health``                          200 ``ok``
- ``GET  /clients/<cid>/spec``              what the worker needs to build its client (WorkerSetup)
- ``POST /clients/<cid>/ready?inc=N``       Ready or SetupError
- ``GET  /clients/<cid>/next?inc=N&wait_s=S`` the next command (200), none yet (204),
                                            or 409 when this incarnation was replaced
- ``POST /clients/<cid>/result?inc=N``      Started | Done | Raised | Calibrated | Limits | Died
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from testbed.backends.wire import WireError, decode, encode

TOKEN_ENV = "TESTBED_TOKEN"
MAX_BODY_BYTES = 2 * 2**30
LONG_POLL_S = 20.0


class _Mailbox:
    """One client's commands down and messages up, for its current incarnation."""

    def __init__(self, spec: bytes) -> None:
        self.spec = spec
        self.incarnation: int | None = None  # None: accept any (clients started by someone else)
        self.down: deque[Any] = deque()
        self.up: deque[Any] = deque()
        self.first_request_t: float | None = None  # monotonic time of the incarnation's first request
        self.cond = threading.Condition()

    def current(self, inc: int | None) -> bool:
        return self.incarnation is None or inc == self.incarnation


class Endpoint:
    """Listens on ``host:port`` (port 0: a free one) once started; a context manager."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> None:
        if not 0 <= port < 65536:
            raise ValueError(f'"port" must be in 0..65535, got {port}.')
        self.host = host
        self.port = port
        self.token = token or secrets.token_urlsafe(32)
        self._boxes: dict[int, _Mailbox] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Endpoint:
        endpoint = self

        class Handler(_Handler):
            owner = endpoint

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="endpoint", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for box in self._boxes.values():
            with box.cond:
                box.incarnation = -1  # wakes long polls: their incarnation is gone
                box.cond.notify_all()

    def __enter__(self) -> Endpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the backend's side ----------------------------------------------------------------
    def register(self, cid: int, spec: Any) -> None:
        """What ``GET /clients/<cid>/spec`` answers (encoded once)."""
        self._boxes[cid] = _Mailbox(encode(spec))

    def reset(self, cid: int, incarnation: int | None) -> None:
        """A new container for the client: queues emptied, only `incarnation` heard from now
        on (None: any), so a dead container's late requests cannot take its successor's work."""
        box = self._boxes[cid]
        with box.cond:
            box.incarnation = incarnation
            box.down.clear()
            box.up.clear()
            box.first_request_t = None
            box.cond.notify_all()

    def send(self, cid: int, message: Any) -> None:
        box = self._boxes[cid]
        with box.cond:
            box.down.append(message)
            box.cond.notify_all()

    def post(self, cid: int, incarnation: int | None, message: Any) -> None:
        """Queue a message up as if the client's `incarnation` had posted it (the backend's
        own notes, e.g. that the container exited); dropped when that incarnation is gone."""
        box = self._boxes[cid]
        with box.cond:
            if box.current(incarnation):
                box.up.append(message)
                box.cond.notify_all()

    def receive(self, cid: int, timeout_s: float) -> Any | None:
        """The client's next message, or None after timeout_s."""
        box = self._boxes[cid]
        deadline = time.monotonic() + timeout_s
        with box.cond:
            while not box.up:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                box.cond.wait(left)
            return box.up.popleft()

    def first_request_t(self, cid: int) -> float | None:
        return self._boxes[cid].first_request_t

    # -- the handler's side ----------------------------------------------------------------
    def _box(self, cid: int, inc: int | None) -> _Mailbox | None:
        box = self._boxes.get(cid)
        if box is not None and box.first_request_t is None and box.current(inc):
            box.first_request_t = time.monotonic()
        return box

    def _next(self, box: _Mailbox, inc: int | None, wait_s: float) -> tuple[bool, Any]:
        """(still current, command or None)."""
        deadline = time.monotonic() + wait_s
        with box.cond:
            while True:
                if not box.current(inc):
                    return False, None
                if box.down:
                    return True, box.down.popleft()
                left = deadline - time.monotonic()
                if left <= 0:
                    return True, None
                box.cond.wait(left)

    def _up(self, box: _Mailbox, inc: int | None, message: Any) -> bool:
        with box.cond:
            if not box.current(inc):
                return False
            box.up.append(message)
            box.cond.notify_all()
            return True


class _Handler(BaseHTTPRequestHandler):
    owner: Endpoint
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # no access log on stderr

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "")
        expected = f"Bearer {self.owner.token}"
        return hmac.compare_digest(given.encode(), expected.encode())

    def _reply(self, status: HTTPStatus, body: bytes = b"", content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _route(self) -> tuple[str, int | None, dict[str, list[str]]] | None:
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        query = parse_qs(url.query)
        if parts == ["health"]:
            return "health", None, query
        if len(parts) == 3 and parts[0] == "clients" and parts[1].isdigit():
            return parts[2], int(parts[1]), query
        return None

    def _start(self) -> tuple[str, _Mailbox | None, int | None, dict] | None:
        if not self._authorized():  # its body is not read: the connection closes after the reply
            self.close_connection = True
            self._reply(HTTPStatus.UNAUTHORIZED, b"missing or wrong bearer token\n")
            return None
        route = self._route()
        if route is None:
            self._drain()
            self._reply(HTTPStatus.NOT_FOUND, b"no such route\n")
            return None
        name, cid, query = route
        inc = int(query["inc"][0]) if query.get("inc", [""])[0].lstrip("-").isdigit() else None
        box = self.owner._box(cid, inc) if cid is not None else None
        if cid is not None and box is None:
            self._drain()
            self._reply(HTTPStatus.NOT_FOUND, f"no client {cid}\n".encode())
            return None
        return name, box, inc, query

    def _drain(self) -> None:
        """Read an authenticated request's unused body, so the connection stays usable."""
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= MAX_BODY_BYTES:
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        started = self._start()
        if started is None:
            return
        name, box, inc, query = started
        if name == "health":
            self._reply(HTTPStatus.OK, b"ok\n")
        elif name == "spec":
            self._reply(HTTPStatus.OK, box.spec, "application/octet-stream")
        elif name == "next":
            wait_s = min(float(query.get("wait_s", [LONG_POLL_S])[0]), 60.0)
            current, command = self.owner._next(box, inc, wait_s)
            if not current:
                self._reply(HTTPStatus.CONFLICT, b"this incarnation was replaced\n")
            elif command is None:
                self._reply(HTTPStatus.NO_CONTENT)
            else:
                self._reply(HTTPStatus.OK, encode(command), "application/octet-stream")
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"no such route\n")

    def do_POST(self) -> None:  # noqa: N802
        started = self._start()
        if started is None:
            return
        name, box, inc, _ = started
        length = int(self.headers.get("Content-Length") or -1)
        if name not in ("ready", "result") or box is None:
            self._drain()
            self._reply(HTTPStatus.NOT_FOUND, b"no such route\n")
            return
        if not 0 <= length <= MAX_BODY_BYTES:
            self._reply(HTTPStatus.LENGTH_REQUIRED, b"a Content-Length up to 2 GiB is required\n")
            self.close_connection = True
            return
        try:
            message = decode(self.rfile.read(length))
        except WireError as exc:
            self._reply(HTTPStatus.BAD_REQUEST, f"{exc}\n".encode())
            return
        if self.owner._up(box, inc, message):
            self._reply(HTTPStatus.NO_CONTENT)
        else:
            self._reply(HTTPStatus.CONFLICT, b"this incarnation was replaced\n")
