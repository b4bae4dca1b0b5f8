"""A fault-injecting HTTP proxy in front of the remote CKAN.

The harvest source points at the proxy; the proxy forwards every request to the
remote CKAN, unless it is told to misbehave. Modes (:class:`Mode`):

``ok``
    forward (the remote answers).
``slow``
    wait :attr:`FaultProxy.delay` seconds, then forward.
``error``
    answer ``500 Internal Server Error`` at once, without asking the remote.
``hang``
    read the request and answer nothing, for :attr:`FaultProxy.hang_seconds`
    (longer than the harvester's read timeout), then drop the connection.
``close``
    read the request and close the connection without a word.
``flaky``
    the first request for each URL fails (alternately ``500`` and a closed
    connection); a retry of the same URL is forwarded.

A mode applies to the requests whose path contains :attr:`FaultProxy.only` (all
requests when it is empty); the others are forwarded. Every request is counted by
the mode that handled it, and logged (time, path, outcome) for the assertions.
"""
from __future__ import annotations

import dataclasses
import enum
import http.client
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import urlsplit

#: Request headers not passed on to the remote, and answer headers not passed back.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
               "te", "trailer", "upgrade", "host", "content-length"}
UPSTREAM_TIMEOUT = 120.0


class Mode(str, enum.Enum):
    OK = "ok"
    SLOW = "slow"
    ERROR = "error"
    HANG = "hang"
    CLOSE = "close"
    FLAKY = "flaky"


@dataclasses.dataclass(frozen=True)
class Request:
    at: float
    path: str
    outcome: str  # "forwarded 200", "error 500", "hang", "close"


class FaultProxy:
    """A threaded HTTP proxy to ``upstream`` on a free loopback port."""

    def __init__(self, upstream: str, hang_seconds: float = 10.0,
                 delay: float = 0.5) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.hang_seconds = hang_seconds
        self.delay = delay
        self.mode = Mode.OK
        self.only = ""
        self._changed = threading.Event()
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.requests: list[Request] = []
        self._server = _QuietServer(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        self.set(Mode.OK)
        self._server.shutdown()
        self._server.server_close()

    # -- control --------------------------------------------------------------------

    def set(self, mode: Mode, only: str = "") -> None:
        """Switch to ``mode`` for paths containing ``only`` (all when empty).

        Requests hanging in the previous mode are released (their connection is
        dropped) when the mode changes.
        """
        with self._lock:
            self.mode, self.only = mode, only
            self._seen.clear()
            changed, self._changed = self._changed, threading.Event()
        changed.set()

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.requests.clear()

    def injected(self) -> int:
        """Requests that were not forwarded (500s, hangs, closes)."""
        with self._lock:
            return sum(n for outcome, n in self.counts.items()
                       if not outcome.startswith("forwarded"))

    def served(self, path_part: str) -> int:
        """Requests forwarded with a 200 whose path contains ``path_part``."""
        with self._lock:
            return sum(1 for r in self.requests
                       if path_part in r.path and r.outcome == "forwarded 200")

    # -- request handling (proxy threads) ------------------------------------------------

    def decide(self, path: str) -> tuple[Mode, threading.Event]:
        with self._lock:
            mode = self.mode if self.only in path else Mode.OK
            if mode is Mode.FLAKY:
                first = path not in self._seen
                self._seen.add(path)
                if not first:
                    mode = Mode.OK
                else:
                    mode = Mode.ERROR if len(self._seen) % 2 else Mode.CLOSE
            return mode, self._changed

    def record(self, path: str, outcome: str) -> None:
        with self._lock:
            self.counts[outcome.split()[0] if not outcome.startswith("forwarded")
                        else "forwarded"] += 1
            self.requests.append(Request(time.monotonic(), path, outcome))

    def forward(self, method: str, path: str, headers: dict[str, str],
                body: Optional[bytes]) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port,
                                                timeout=UPSTREAM_TIMEOUT)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()


class _QuietServer(ThreadingHTTPServer):
    proxy: FaultProxy

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # dropped connections are the point of this server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _QuietServer

    @property
    def proxy(self) -> FaultProxy:
        return self.server.proxy

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # counted and logged by the proxy itself

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        mode, changed = self.proxy.decide(self.path)
        if mode is Mode.ERROR:
            self.proxy.record(self.path, "error 500")
            self._answer(500, [("Content-Type", "application/json")],
                         b'{"success": false, "error": {"message": "injected"}}')
        elif mode is Mode.HANG:
            self.proxy.record(self.path, "hang")
            changed.wait(self.proxy.hang_seconds)
            self._drop()
        elif mode is Mode.CLOSE:
            self.proxy.record(self.path, "close")
            self._drop()
        else:
            if mode is Mode.SLOW:
                time.sleep(self.proxy.delay)
            self._forward(body)

    def _forward(self, body: Optional[bytes]) -> None:
        headers = {key: value for key, value in self.headers.items()
                   if key.lower() not in _HOP_BY_HOP}
        try:
            status, answer_headers, content = self.proxy.forward(
                self.command, self.path, headers, body)
        except (OSError, http.client.HTTPException) as exc:
            self.proxy.record(self.path, f"upstream-failed {exc!r}")
            self._drop()
            return
        self.proxy.record(self.path, f"forwarded {status}")
        self._answer(status, [(key, value) for key, value in answer_headers
                              if key.lower() not in _HOP_BY_HOP], content)

    def _answer(self, status: int, headers: list[tuple[str, str]],
                content: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the connection was dropped on purpose, or by the client

    def _drop(self) -> None:
        """Close the connection at once (RST), nothing answered."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

