"""A small local CKAN action API, as downstream test suites run one.

It answers ``package_search`` (with or without an ``fq`` filter on
``metadata_modified``), ``package_show``, ``organization_show`` and
``group_show`` from the module-level :data:`DATASETS`, which tests change
between harvests. It listens on a free loopback port in a thread.
"""
from __future__ import annotations

import copy
import http.server
import json
import re
import threading
from typing import Any, Iterator, Optional
from urllib.parse import parse_qs, urlsplit

ORG = {"id": "aaaaaaaa-1111-4000-8000-000000000001", "name": "org1",
       "title": "Organisation 1", "type": "organization", "is_organization": True,
       "description": "", "image_url": "", "state": "active"}

INITIAL_DATASETS: list[dict[str, Any]] = [
    {
        "id": "dddddddd-0000-4000-8000-000000000001",
        "name": "dataset1",
        "title": "Dataset 1",
        "notes": "First version",
        "owner_org": ORG["id"],
        "private": False,
        "state": "active",
        "type": "dataset",
        "metadata_created": "2014-02-04T10:00:00.000000",
        "metadata_modified": "2014-02-05T12:00:00.000000",
        "tags": [{"name": "trees"}],
        "groups": [],
        "extras": [],
        "resources": [{"id": "eeeeeeee-0000-4000-8000-000000000001",
                       "url": "http://data.example.com/one.csv", "format": "CSV",
                       "name": "one"}],
    },
    {
        "id": "dddddddd-0000-4000-8000-000000000002",
        "name": "dataset2",
        "title": "Dataset 2",
        "notes": "Second dataset",
        "owner_org": ORG["id"],
        "private": False,
        "state": "active",
        "type": "dataset",
        "metadata_created": "2014-03-04T10:00:00.000000",
        "metadata_modified": "2014-03-05T12:00:00.000000",
        "tags": [],
        "groups": [],
        "extras": [],
        "resources": [],
    },
]

#: What the mock serves; tests change it between harvests (see :func:`reset`).
DATASETS: list[dict[str, Any]] = []

#: Every request path with its query, in order.
REQUESTS: list[str] = []

_SINCE = re.compile(r"metadata_modified:\[(\S+) TO \*\]")


def reset() -> None:
    """Serve the initial catalogue again and forget the requests."""
    DATASETS[:] = copy.deepcopy(INITIAL_DATASETS)
    REQUESTS.clear()


def _modified_since(fq: str) -> Optional[str]:
    match = _SINCE.search(fq)
    return match.group(1).rstrip("Z") if match else None


def _search(params: dict[str, str]) -> dict[str, Any]:
    datasets = list(DATASETS)
    since = _modified_since(params.get("fq", ""))
    if since is not None:
        datasets = [d for d in datasets if d["metadata_modified"] >= since]
    start = int(params.get("start", "0"))
    rows = int(params.get("rows", "10"))
    return {"count": len(datasets), "results": datasets[start:start + rows]}


def _show(params: dict[str, str]) -> Optional[dict[str, Any]]:
    for dataset in DATASETS:
        if params.get("id") in (dataset["id"], dataset["name"]):
            return dataset
    return None


def _org(params: dict[str, str]) -> Optional[dict[str, Any]]:
    return ORG if params.get("id") in (ORG["id"], ORG["name"]) else None


_ACTIONS = {
    "package_search": _search,
    "package_show": _show,
    "organization_show": _org,
    "group_show": lambda params: None,
}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        parts = urlsplit(self.path)
        REQUESTS.append(self.path)
        params = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        action = parts.path.rstrip("/").rsplit("/", 1)[-1]
        handler = _ACTIONS.get(action) if "/api/" in parts.path else None
        result = handler(params) if handler else None
        if result is None:
            self._answer(404, {"success": False, "error": {"message": "Not found"}})
        else:
            self._answer(200, {"success": True, "result": result})

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def serve() -> Iterator[str]:
    """Run the mock until the generator is closed; yields its base URL."""
    reset()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d/" % server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
