"""HTTP front end (``http.server``) and command line entry point."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from .app import Reply, SolrApp
from .core import CoreRegistry
from .schema import load_schema

log = logging.getLogger(__name__)


class SolrHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server bound to a :class:`SolrApp`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: SolrApp) -> None:
        """Listen on ``address`` and serve ``app``."""
        super().__init__(address, SolrRequestHandler)
        self.app = app

    @property
    def base_url(self) -> str:
        """``http://host:port/solr``."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/solr"


class SolrRequestHandler(BaseHTTPRequestHandler):
    """Reads requests and writes :class:`Reply` objects."""

    protocol_version = "HTTP/1.1"
    server_version = "ckanext-harvest-dev-solr/1.0"

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        """Handle GET."""
        self._serve()

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        """Handle POST."""
        self._serve()

    def _serve(self) -> None:
        """Dispatch to the app and send its reply."""
        url = urlsplit(self.path)
        body = self._read_body()
        app: SolrApp = self.server.app  # type: ignore[attr-defined]
        reply = app.handle(url.path, url.query, body,
                           self.headers.get("Content-Type", ""))
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        """Write status, headers and body."""
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def _read_body(self) -> bytes:
        """Read a Content-Length or chunked request body."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        """Decode a ``Transfer-Encoding: chunked`` body."""
        chunks: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Route access logs to :mod:`logging` at debug level."""
        log.debug("%s - %s", self.address_string(), format % args)


def make_server(host: str = "127.0.0.1", port: int = 8983,
                schema_path: Path | None = None,
                schema_version: str | None = None) -> SolrHTTPServer:
    """Create (but do not start) a server; ``port=0`` picks a free port."""
    schema = load_schema(schema_path, schema_version)
    return SolrHTTPServer((host, port), SolrApp(CoreRegistry(schema)))


def serve_in_thread(host: str = "127.0.0.1", port: int = 0,
                    schema_path: Path | None = None
                    ) -> tuple[SolrHTTPServer, threading.Thread]:
    """Start a server in a daemon thread (for tests); stop with shutdown()."""
    server = make_server(host, port, schema_path)
    thread = threading.Thread(target=server.serve_forever,
                              name="dev-solr", daemon=True)
    thread.start()
    return server, thread


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line options."""
    parser = argparse.ArgumentParser(
        prog="python -m dev.solr_server",
        description="Solr-compatible in-memory server for CKAN development")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8983)
    parser.add_argument("--schema", type=Path, default=None,
                        help="schema.xml (default: the installed CKAN's)")
    parser.add_argument("--schema-version", default=None,
                        help="serve the schema as ckan-VERSION (e.g. 2.11)")
    parser.add_argument("--pidfile", type=Path, default=None)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler: leave ``serve_forever`` via SystemExit."""
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """Run the server in the foreground until SIGTERM/SIGINT."""
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s [%(name)s] "
                               "%(message)s")
    server = make_server(args.host, args.port, args.schema,
                         args.schema_version)
    signal.signal(signal.SIGTERM, _terminate)
    if args.pidfile:
        args.pidfile.write_text(f"{os.getpid()}\n")
    log.info("Dev Solr listening on %s (schema %s)", server.base_url,
             server.app.registry.schema.name)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        log.info("Shutting down")
    finally:
        server.server_close()
        if args.pidfile and args.pidfile.exists():
            args.pidfile.unlink()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
