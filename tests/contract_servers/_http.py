"""A JSON HTTP server in a daemon thread, on a free loopback port, with injectable failures."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass
class Reply:
    """What a contract server answers: status, JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Request:
    """One request as the server saw it (headers lower-cased)."""

    path: str
    headers: dict[str, str]
    body: bytes


class ContractServer:
    """Base of the contract servers: subclasses implement `handle` under `self.lock`.

    `fail_next(n, status, retry_after)` makes the next `n` requests fail with that status
    before any validation, as a rate limiter or a broken backend in front of the API would.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._failures: list[tuple[int, str | None]] = []
        self.requests: list[Request] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                )
                reply = server._dispatch(request)
                payload = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in (reply.headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: tests assert on recorded state, not on access logs."""

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ContractServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def fail_next(self, n: int, *, status: int = 429, retry_after: str | None = "1") -> None:
        """Answer the next `n` requests with `status` (and Retry-After, when given)."""
        with self.lock:
            self._failures.extend([(status, retry_after)] * n)

    def reset(self) -> None:
        with self.lock:
            self._failures.clear()
            self.requests.clear()
            self.clear()

    def clear(self) -> None:
        """Forget the API's own state (subclasses)."""

    def failure_reply(self, status: int, retry_after: str | None) -> Reply:
        """The body of an injected failure (subclasses shape it like their API)."""
        return Reply(status, {"error": "injected"})

    def handle(self, request: Request) -> Reply:
        raise NotImplementedError

    def _dispatch(self, request: Request) -> Reply:
        with self.lock:
            self.requests.append(request)
            if self._failures:
                status, retry_after = self._failures.pop(0)
                reply = self.failure_reply(status, retry_after)
                if retry_after is not None:
                    reply.headers = {**(reply.headers or {}), "Retry-After": retry_after}
                return reply
            return self.handle(request)
