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

A route takes only its own query parameters, each once: ``inc`` a non-negative integer,
``wait_s`` seconds as plain digits (``nan``, ``inf``, a sign or an exponent are refused),
clamped to ``limits.max_wait_s`` (60 s by default); anything else is a 400 with one line, and a
posted body must decode (testbed.backends.wire) to one of the messages a worker may post
(``WORKER_POSTS``). Connections, time and body sizes are bounded by the server underneath
(:mod:`testbed.backends.http_server`, :class:`EndpointLimits`).
"""

from __future__ import annotations

import hmac
import re
import secrets
import sys
import threading
import time
from collections import deque
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from testbed.backends.http_server import BoundedHTTPServer, EndpointLimits, LimitedHandler, RequestError
from testbed.backends.messages import WORKER_POSTS
from testbed.backends.wire import WireError, decode, decode_file, encode

TOKEN_ENV = "TESTBED_TOKEN"
LONG_POLL_S = 20.0  # a long poll's wait without a wait_s


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

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 limits: EndpointLimits = EndpointLimits()) -> None:
        if not 0 <= port < 65536:
            raise ValueError(f'"port" must be in 0..65535, got {port}.')
        self.host = host
        self.port = port
        self.token = token or secrets.token_urlsafe(32)
        self.limits = limits
        self._boxes: dict[int, _Mailbox] = {}
        self._server: BoundedHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Endpoint:
        endpoint = self

        class Handler(_Handler):
            owner = endpoint

        self._server = BoundedHTTPServer((self.host, self.port), Handler, self.limits)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="endpoint", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def connections(self) -> dict[str, int]:
        """Connections served now, at most at once so far, served in all, and refused for want
        of a slot (503)."""
        server = self._server
        if server is None:
            return {"active": 0, "peak_active": 0, "served": 0, "refused": 0}
        return {"active": server.active, "peak_active": server.peak_active, "served": server.served,
                "refused": server.refused}

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


class _Handler(LimitedHandler):
    owner: Endpoint

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def _handle(self, method: str) -> None:
        """Answer the request: what the route gives, one line for a refusal, never a traceback."""
        try:
            status, body, content_type = self._answer(method)
        except RequestError as exc:
            status, body, content_type = exc.status, f"{int(exc.status)} {exc}\n".encode(), "text/plain"
        except Exception as exc:  # a fault of the endpoint's own: one line here and in the reply
            print(f"endpoint: {method} {self.path[:80]!r}: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
            self.close_connection = True
            status, body, content_type = HTTPStatus.INTERNAL_SERVER_ERROR, b"500 internal error\n", "text/plain"
        self.reply(status, body, content_type)

    def _answer(self, method: str) -> tuple[HTTPStatus, bytes, str]:
        if not self._authorized():  # nothing more is read: the connection closes after the reply
            self.close_connection = True
            raise RequestError(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token")
        name, cid, query = _route(self.path)
        if (method, name) not in _ROUTES:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no route {method} {name}")
        params = _query(query, _ROUTES[(method, name)], self.limits.max_wait_s)
        if name == "health":
            return HTTPStatus.OK, b"ok\n", "text/plain"
        inc = params.get("inc")
        box = self.owner._box(cid, inc)
        if box is None:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no client {cid}")
        if name == "spec":
            return HTTPStatus.OK, box.spec, "application/octet-stream"
        if name == "next":
            current, command = self.owner._next(box, inc, params.get("wait_s", LONG_POLL_S))
            if not current:
                return HTTPStatus.CONFLICT, b"409 this incarnation was replaced\n", "text/plain"
            if command is None:
                return HTTPStatus.NO_CONTENT, b"", "text/plain"
            return HTTPStatus.OK, encode(command), "application/octet-stream"
        message = self._message()
        if self.owner._up(box, inc, message):
            return HTTPStatus.NO_CONTENT, b"", "text/plain"
        return HTTPStatus.CONFLICT, b"409 this incarnation was replaced\n", "text/plain"

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "")
        expected = f"Bearer {self.owner.token}"
        return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())

    def _message(self) -> Any:
        """The posted body as one of the messages a worker may post."""
        body = self.read_body(self.body_length())
        try:
            message = decode(body) if isinstance(body, bytes) else decode_file(body)
        except WireError as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(exc).splitlines()[0][:300]) from None
        finally:
            if not isinstance(body, bytes):
                body.close()
        if type(message) not in WORKER_POSTS:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"a worker may not post a {type(message).__name__}")
        return message


# (method, route) -> the query parameters it takes (_query parses them)
_ROUTES: dict[tuple[str, str], tuple[str, ...]] = {
    ("GET", "health"): (), ("GET", "spec"): ("inc",), ("GET", "next"): ("inc", "wait_s"),
    ("POST", "ready"): ("inc",), ("POST", "result"): ("inc",),
}
_CLIENT_PATH = re.compile(r"/clients/([0-9]{1,9})/([a-z]{1,16})")
_INTEGER = re.compile(r"[0-9]{1,9}")
_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")


def _route(target: str) -> tuple[str, int | None, str]:
    """(route name, client id or None, query string) of a request target; 404 otherwise."""
    path, _, query = target.partition("?")
    if path == "/health":
        return "health", None, query
    found = _CLIENT_PATH.fullmatch(path)
    if found is None:
        raise RequestError(HTTPStatus.NOT_FOUND, "no such route")
    return found[2], int(found[1]), query


def _query(query: str, allowed: tuple[str, ...], max_wait_s: float) -> dict[str, Any]:
    """The query's parameters, each named by the route, given once and well-formed: `inc` a
    non-negative integer, `wait_s` seconds as digits (no sign, exponent, nan or inf), clamped
    to `max_wait_s`; 400 otherwise."""
    params: dict[str, Any] = {}
    for part in query.split("&") if query else ():
        name, sep, raw = part.partition("=")
        if name not in allowed or not sep:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown query parameter {name[:40]!r}")
        if name in params:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"query parameter {name} given twice")
        value = unquote(raw, errors="replace")
        if name == "inc" and _INTEGER.fullmatch(value):
            params[name] = int(value)
        elif name == "wait_s" and _SECONDS.fullmatch(value):
            params[name] = min(float(value), max_wait_s)
        else:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"query parameter {name}: {value[:40]!r} is not "
                               + ("a non-negative integer" if name == "inc" else "a number of seconds >= 0"))
    return params
