"""A fast fake remote CKAN for the gather benchmark (``bench/gather_memory.py``).

It speaks enough of the CKAN action API for the CKAN harvester's gather:
``package_search`` (``rows``, ``start``, ``sort``, ``fq``), ``package_show``,
``organization_show`` / ``group_show`` and ``status_show``. The catalogue size is
part of the URL, so that one server serves remotes of every size::

    http://127.0.0.1:<port>/n/<N>[/<anything>]/api/3/action/package_search?...

is a remote CKAN of ``N`` datasets (the optional ``<anything>`` gives distinct
source URLs for the same catalogue). Datasets are generated on the fly from their
number, deterministically, and never kept: a page of 100 costs what its JSON
costs. Each one looks like those of ``dev/make_catalogue.py`` (3 resources, 4
tags, 4 extras, an organisation; about 4 KB of JSON in ``package_show`` form).
Dataset ids are UUIDs ordered like the dataset numbers, so the only order served
(``sort=id asc``, whatever is asked) is also the numbering. Filters (``fq``) are
accepted and ignored: every dataset matches.

Standalone: ``python bench/fake_remote.py [--port 5102]`` (Ctrl-C to stop).
"""
from __future__ import annotations

import argparse
import http.server
import json
import re
import threading
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

ORGANISATIONS = ("environment-agency", "transport-office", "health-institute",
                 "statistics-bureau", "city-council", "energy-board")
TAGS = ("air", "water", "roads", "budget", "census", "energy", "schools", "health",
        "transport", "climate", "open-data", "statistics")
FORMATS = ("CSV", "JSON", "XLSX", "PDF", "GeoJSON")
MODIFIED = "2026-11-30T09:00:00.000000"
MAX_ROWS = 1000

_PATH = re.compile(r"^/n/(\d+)(?:/[^/]+)?/api/\d/action/(\w+)$")


def dataset_id(number: int) -> str:
    """The UUID of dataset ``number``; ids sort like the numbers."""
    return "%08x-0000-4000-8000-%012x" % (number, number)


def organisation(number: int) -> dict[str, Any]:
    name = ORGANISATIONS[number % len(ORGANISATIONS)]
    return {
        "id": "%08x-0000-4000-9000-000000000000" % (number % len(ORGANISATIONS)),
        "name": name, "title": name.replace("-", " ").title(), "type": "organization",
        "description": "Publisher of the %s datasets." % name, "image_url": "",
        "created": "2026-01-01T00:00:00.000000", "is_organization": True,
        "approval_status": "approved", "state": "active",
    }


def _resource(number: int, index: int, name: str) -> dict[str, Any]:
    fmt = FORMATS[(number + index) % len(FORMATS)]
    return {
        "id": "%08x-%04x-4000-a000-%012x" % (number, index, number),
        "package_id": dataset_id(number), "name": "%s part %d" % (name, index + 1),
        "description": "Part %d of %s, as published by the source system, with the "
                       "columns documented in the data dictionary." % (index + 1, name),
        "format": fmt, "url": "https://data.example.org/%s/%d.%s"
                              % (name, index, fmt.lower()),
        "mimetype": None, "size": 1024 * (number % 977 + index), "hash": "",
        "created": "2026-01-01T00:00:00.000000", "last_modified": None,
        "metadata_modified": MODIFIED, "position": index, "state": "active",
        "url_type": None, "cache_url": None, "datastore_active": False,
    }


def dataset(number: int) -> dict[str, Any]:
    """Dataset ``number`` in ``package_show`` form (about 4 KB of JSON)."""
    org = organisation(number)
    name = "dataset-%07d" % number
    year = 2000 + number % 26
    tags = [TAGS[(number + k * 5) % len(TAGS)] for k in range(4)]
    return {
        "id": dataset_id(number), "name": name, "type": "dataset",
        "title": "Dataset %d: %s figures for %d" % (number, tags[0], year),
        "notes": ("Figures on %s collected by the %s in %d. Each release replaces the "
                  "previous one; see the resources for the methodology and the "
                  "quality report." % (", ".join(tags), org["title"], year)),
        "author": "Data team", "author_email": "data@example.org",
        "maintainer": "Open data office", "maintainer_email": "open@example.org",
        "license_id": "cc-by", "license_title": "Creative Commons Attribution",
        "url": "https://www.example.org/%s" % name, "version": "1.%d" % (number % 7),
        "state": "active", "private": False, "isopen": True,
        "metadata_created": "2026-01-01T00:00:00.000000", "metadata_modified": MODIFIED,
        "creator_user_id": "00000000-0000-4000-b000-000000000001",
        "owner_org": org["id"], "organization": org, "groups": [],
        "tags": [{"id": "%08x-0000-4000-c000-000000000000" % TAGS.index(tag),
                  "name": tag, "display_name": tag, "state": "active",
                  "vocabulary_id": None} for tag in tags],
        "extras": [{"key": "frequency", "value": "annual"},
                   {"key": "region", "value": "region-%d" % (number % 13)},
                   {"key": "year", "value": str(year)},
                   {"key": "source_system", "value": "catalogue-%d" % (number % 3)}],
        "resources": [_resource(number, index, name) for index in range(3)],
        "num_resources": 3, "num_tags": 4, "relationships_as_object": [],
        "relationships_as_subject": [],
    }


def search(size: int, params: dict[str, list[str]]) -> dict[str, Any]:
    """The ``package_search`` result for ``params`` on a remote of ``size`` datasets."""
    rows = min(int(params.get("rows", ["10"])[0]), MAX_ROWS)
    start = int(params.get("start", ["0"])[0])
    numbers = range(max(start, 0), min(start + rows, size))
    return {"count": size, "sort": "id asc", "facets": {}, "search_facets": {},
            "results": [dataset(number) for number in numbers]}


def _number_of(identifier: str) -> Optional[int]:
    match = re.match(r"^(?:dataset-)?([0-9a-f]{8})-0000-4000-8000-|^dataset-(\d{7})$",
                     identifier)
    if not match:
        return None
    return int(match.group(1), 16) if match.group(1) else int(match.group(2))


def answer(size: int, action: str, params: dict[str, list[str]]) -> tuple[int, Any]:
    """HTTP status and body of ``action`` on a remote of ``size`` datasets."""
    identifier = params.get("id", [""])[0]
    if action == "package_search":
        return 200, search(size, params)
    if action == "status_show":
        return 200, {"ckan_version": "2.12.0", "site_url": "", "extensions": []}
    if action == "package_show":
        number = _number_of(identifier)
        if number is not None and 0 <= number < size:
            return 200, dataset(number)
    if action in ("organization_show", "group_show"):
        for index, name in enumerate(ORGANISATIONS):
            org = organisation(index)
            if identifier in (name, org["id"]):
                return 200, org
    return 404, None


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the harvester pools connections

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        url = urlsplit(self.path)
        match = _PATH.match(url.path)
        if match:
            status, result = answer(int(match.group(1)), match.group(2),
                                    parse_qs(url.query))
        else:
            status, result = 404, None
        if status == 200:
            body = {"help": "", "success": True, "result": result}
        else:
            body = {"help": "", "success": False,
                    "error": {"__type": "Not Found Error", "message": "Not found"}}
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class FakeRemote(http.server.ThreadingHTTPServer):
    daemon_threads = True

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, size: int, suffix: str = "") -> str:
        """Base URL of a remote of ``size`` datasets (distinct for each ``suffix``)."""
        return "http://127.0.0.1:%d/n/%d%s" % (self.port, size,
                                                "/" + suffix if suffix else "")


def serve(port: int = 0) -> FakeRemote:
    """Start a fake remote on 127.0.0.1 (``port`` 0: any free one) in a daemon thread;
    ``shutdown()`` and ``server_close()`` stop it."""
    server = FakeRemote(("127.0.0.1", port), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True,
                     name="fake-remote").start()
    return server


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5102)
    args = parser.parse_args(argv)
    server = FakeRemote(("127.0.0.1", args.port), _Handler)
    print("fake remote CKAN: %s (any size N)" % server.url(2000), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
