"""The HTTP client of the CKAN harvester, and the checks of what a remote CKAN answers.

Transport
---------
A stage's requests share the ``requests.Session`` of :func:`new_session`, whose
guarded adapter (:class:`.netguard.GuardedAdapter`: non-public hosts are refused,
also on redirects) carries urllib3's ``Retry``: connection errors, a failed read
and the statuses in :data:`RETRY_STATUSES` are retried up to :data:`HTTP_RETRIES`
times with exponential backoff. Every request has the connect and read timeouts
of :func:`.netguard.http_timeout`; answers larger than
``ckan.harvest.max_response_size`` bytes or taking longer than
``ckan.harvest.max_response_seconds`` to arrive are refused.

What varies is handed in by the caller as :class:`HttpSettings`, read at call
time: the CKAN harvester passes the ``config``, ``requests.get`` and retry
constants of its own module, which test suites patch
(``ckanext.harvest.harvesters.ckanharvester``). When the ``get`` handed in is
not ``requests.get`` as imported (a test patched it), the request is made with
``get(url, headers=..., timeout=...)`` instead of the session, so that the patch
intercepts it (no retries on that path). The ``responses`` library patches the
transport adapter and so intercepts both paths.

Answers
-------
:func:`get_content` turns every failure into :class:`ContentFetchError` (404:
:class:`ContentNotFoundError`); :func:`parse_json`, :func:`action_result`,
:func:`search_page` and :func:`check_remote_dataset` refuse answers that are not
JSON, not a successful action API answer, or not of the expected shape.
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Callable, Iterator, Mapping, Optional

import requests
import urllib3.exceptions
from urllib3.util.retry import Retry

from ckanext.harvest import options
from ckanext.harvest.lib import netguard

__all__ = [
    "HTTP_BACKOFF_FACTOR",
    "HTTP_RETRIES",
    "RETRY_STATUSES",
    "ContentFetchError",
    "ContentNotFoundError",
    "HttpSettings",
    "RemoteResourceError",
    "RemoteResourceNotFoundError",
    "SearchError",
    "action_result",
    "check_remote_dataset",
    "get_content",
    "new_session",
    "parse_json",
    "search_page",
]

#: Retries of a request after a connection error or a status in RETRY_STATUSES.
HTTP_RETRIES = 3
#: Retry n waits HTTP_BACKOFF_FACTOR * 2 ** (n - 1) seconds (the first retry: none).
HTTP_BACKOFF_FACTOR = 0.5
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_CHUNK_BYTES = 64 * 1024
_EXCERPT_CHARS = 500

# requests.get as imported: anything else means a test patched it (see module doc).
_REQUESTS_GET = requests.get


class ContentFetchError(Exception):
    """A remote request failed."""


class ContentNotFoundError(ContentFetchError):
    """The remote answered 404."""


class RemoteResourceError(Exception):
    """The remote returned something unusable."""


class RemoteResourceNotFoundError(RemoteResourceError):
    """The remote says the group or organization does not exist (404)."""


class SearchError(Exception):
    """The remote package search failed."""


class _ResponseTooLarge(Exception):
    """The remote answer exceeds ``max_response_size`` or ``max_response_seconds``."""


@dataclasses.dataclass(frozen=True)
class HttpSettings:
    """What a request depends on, as the caller reads it at call time.

    :param limits: the configuration holding ``ckan.harvest.max_response_size``,
        ``max_response_seconds``, ``max_tags_per_dataset`` and
        ``max_resources_per_dataset`` (a plain dict without them: no limit)
    :param get: ``requests.get``, or what a test patched it with
    """

    limits: Mapping[str, Any]
    get: Callable[..., Any]
    retries: int = HTTP_RETRIES
    backoff_factor: float = HTTP_BACKOFF_FACTOR
    retry_statuses: frozenset[int] = RETRY_STATUSES


# --- transport --------------------------------------------------------------------


def new_session(settings: HttpSettings) -> requests.Session:
    """A guarded session retrying idempotent requests (see the module docstring)."""
    retry = Retry(
        total=settings.retries,
        connect=settings.retries,
        read=1,  # a read error may take the read timeout: retry it once only
        status=settings.retries,
        other=0,
        backoff_factor=settings.backoff_factor,
        status_forcelist=settings.retry_statuses,
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,  # the last answer's status is reported below
        respect_retry_after_header=False,  # a remote must not stall us for hours
    )
    # Refuses non-public hosts (SSRF), also on redirects: docs/security.rst.
    return netguard.new_session(max_retries=retry)


def get_content(session: Optional[requests.Session], url: str,
                headers: dict[str, str], settings: HttpSettings) -> str:
    """Body of a successful GET of ``url``.

    :param session: the stage's session; None: one is opened for this request
    :raises ContentNotFoundError: the remote answered 404
    :raises ContentFetchError: any other failure (HTTP status, network,
        timeout, truncated or oversized answer)
    """
    try:
        if session is not None:
            return _http_get(session, url, headers, settings)
        with new_session(settings) as own_session:
            return _http_get(own_session, url, headers, settings)
    except requests.exceptions.HTTPError as e:
        status = e.response.status_code if e.response is not None else None
        error = ContentNotFoundError if status == 404 else ContentFetchError
        raise error("HTTP error: %s %s" % (status, url)) from e
    except requests.exceptions.RequestException as e:
        raise ContentFetchError("Request error: %s" % e) from e
    except _ResponseTooLarge as e:
        raise ContentFetchError("Answer too large or too slow: %s %s" % (e, url)) from e
    except Exception as e:  # noqa: BLE001 - reported, with its cause, as a fetch error
        raise ContentFetchError("HTTP general exception: %s" % e) from e


def _http_get(session: requests.Session, url: str, headers: dict[str, str],
              settings: HttpSettings) -> str:
    """GET ``url``; return the body as text. Raises requests' exceptions."""
    if settings.get is not _REQUESTS_GET:  # patched by a test suite
        response = settings.get(url, headers=headers, timeout=netguard.http_timeout())
        response.raise_for_status()
        return response.text
    with session.get(url, headers=headers, timeout=netguard.http_timeout(),
                     stream=True) as response:
        response.raise_for_status()
        return _read_text(response, settings.limits)


def _read_text(response: requests.Response, limits: Mapping[str, Any]) -> str:
    """Read a streamed body within ``max_response_size`` / ``max_response_seconds``
    (0: no limit)."""
    # A test may patch ``config`` with a plain dict: a missing limit is no limit.
    max_bytes = limits.get(options.MAX_RESPONSE_SIZE) or 0
    max_seconds = limits.get(options.MAX_RESPONSE_SECONDS) or 0
    too_large = "more than %d bytes (%s)" % (max_bytes, options.MAX_RESPONSE_SIZE)
    declared = response.headers.get("Content-Length", "")
    if max_bytes and declared.isdigit() and int(declared) > max_bytes:
        raise _ResponseTooLarge(too_large)
    deadline = time.monotonic() + max_seconds
    chunks: list[bytes] = []
    size = 0
    for chunk in _chunks_as_they_arrive(response):
        size += len(chunk)
        if max_bytes and size > max_bytes:
            raise _ResponseTooLarge(too_large)
        if max_seconds and time.monotonic() > deadline:
            raise _ResponseTooLarge("not received within %d seconds (%s)"
                                    % (max_seconds, options.MAX_RESPONSE_SECONDS))
        chunks.append(chunk)
    return _decode(b"".join(chunks), response.encoding)


def _chunks_as_they_arrive(response: requests.Response) -> Iterator[bytes]:
    """The body in the pieces the network delivers (at most _CHUNK_BYTES each).

    ``iter_content(n)`` waits for ``n`` bytes: a remote dripping a byte at a time
    would keep it (and the time limit's check) waiting for the whole answer.
    urllib3's ``read1`` returns what has arrived.
    """
    raw = response.raw
    if not hasattr(raw, "read1"):  # urllib3 < 2.3, or a test double
        yield from response.iter_content(_CHUNK_BYTES)
        return
    try:
        while True:
            chunk = raw.read1(_CHUNK_BYTES, decode_content=True)
            if not chunk:
                return
            yield chunk
    except urllib3.exceptions.ProtocolError as e:  # as iter_content reports it
        raise requests.exceptions.ChunkedEncodingError(e) from e
    except urllib3.exceptions.DecodeError as e:
        raise requests.exceptions.ContentDecodingError(e) from e
    except urllib3.exceptions.ReadTimeoutError as e:
        raise requests.exceptions.ConnectionError(e) from e


def _decode(body: bytes, encoding: Optional[str]) -> str:
    try:
        return body.decode(encoding or "utf-8", errors="replace")
    except LookupError:  # unknown charset announced by the remote
        return body.decode("utf-8", errors="replace")


# --- answers ----------------------------------------------------------------------


def _excerpt(content: Any) -> str:
    """``repr`` of the start of a (possibly huge) remote answer."""
    if isinstance(content, (str, bytes)) and len(content) > _EXCERPT_CHARS:
        return "%r... (%d characters)" % (content[:_EXCERPT_CHARS], len(content))
    return repr(content)


def parse_json(content: Any, what: str) -> Any:
    """Decoded JSON answer; ValueError when it is not JSON.

    :param what: names the answer in error messages
    """
    try:
        return json.loads(content)
    except (TypeError, ValueError, RecursionError):
        raise ValueError("%s was not JSON: %s" % (what, _excerpt(content))) from None


def action_result(answer: Any, what: str) -> Any:
    """``result`` of a decoded action API answer.

    :param what: names the answer in error messages
    :raises ValueError: not an action API answer, or ``success`` is not true
    """
    if not isinstance(answer, dict) or "success" not in answer:
        raise ValueError("%s is not a CKAN action API answer: %s" % (what, _excerpt(answer)))
    if answer["success"] is not True:
        raise ValueError("%s reports a failure: %s" % (what, _excerpt(answer.get("error"))))
    if "result" not in answer:
        raise ValueError("%s has no result" % what)
    return answer["result"]


def search_page(answer: Any, url: str) -> tuple[list[dict[str, Any]], Optional[int]]:
    """The datasets and the total ``count`` of a ``package_search`` result.

    :raises SearchError: no list of results, or a dataset without an id
    """
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list):
        raise SearchError(
            "Unexpected answer of remote CKAN search at URL %r: no list of results" % url
        )
    for dataset in results:
        if not isinstance(dataset, dict) or not isinstance(dataset.get("id"), str):
            raise SearchError(
                "Unexpected answer of remote CKAN search at URL %r: dataset without "
                "an id: %s" % (url, _excerpt(dataset))
            )
    count = answer.get("count")
    return results, count if isinstance(count, int) else None


#: Fields of a remote dataset that must be lists of objects, and strings.
_LIST_FIELDS = ("tags", "resources", "extras", "groups")
_TEXT_FIELDS = ("id", "name", "title", "notes", "url", "version", "author",
                "maintainer", "license_id")


def check_remote_dataset(package_dict: Any, limits: Mapping[str, Any]) -> None:
    """Refuse a remote dataset of the wrong shape or beyond the size limits.

    :param limits: the configuration holding ``ckan.harvest.max_tags_per_dataset``
        and ``max_resources_per_dataset`` (missing: no limit)
    :raises ValueError: with a message for the object error
    """
    if not isinstance(package_dict, dict):
        raise ValueError("Invalid remote dataset: not a JSON object")
    for field in _TEXT_FIELDS:
        if not isinstance(package_dict.get(field, ""), (str, type(None))):
            raise ValueError("Invalid remote dataset: %s must be a string" % field)
    for field in _LIST_FIELDS:
        value = package_dict.get(field) or []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ValueError("Invalid remote dataset: %s must be a list of objects" % field)
    for field, option in (("tags", options.MAX_TAGS_PER_DATASET),
                          ("resources", options.MAX_RESOURCES_PER_DATASET)):
        limit = limits.get(option)
        count = len(package_dict.get(field) or [])
        if limit and count > limit:
            raise ValueError(
                "Remote dataset has too many %s: %d (at most %d, see %s)"
                % (field, count, limit, option))
