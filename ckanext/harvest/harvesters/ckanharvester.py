"""The CKAN-to-CKAN harvester (source type ``ckan``).

It lists the datasets of a remote CKAN through its action API (``package_search``,
100 rows a page), stores each remote dataset dict as the content of a harvest object
at gather, and imports it at import, keeping the remote dataset id as the local one.

HTTP layer
----------
Every remote request goes through :meth:`CKANHarvester._get_content`, which uses a
``requests.Session`` whose HTTP adapter carries urllib3's ``Retry``: connection
errors, a failed read and the statuses in :data:`RETRY_STATUSES` are retried up to
:data:`HTTP_RETRIES` times with exponential backoff; every request has the connect
and read timeouts ``ckan.harvest.http_connect_timeout`` and
``ckan.harvest.http_read_timeout`` (:func:`.netguard.http_timeout`); answers
larger than ``ckan.harvest.max_response_size`` bytes or taking longer than
``ckan.harvest.max_response_seconds`` to arrive are refused.
A stage (gather or import) opens one session and closes it when it ends, so pages
share pooled connections and nothing outlives the stage.

Test suites (ours and downstream ones) patch
``ckanext.harvest.harvesters.ckanharvester.requests.get``. When ``requests.get`` is
not the function it was at import time, the request is made with
``requests.get(url, headers=..., timeout=netguard.http_timeout())`` instead of the session, so
the patch intercepts it (no retries on that path). The ``responses`` library
patches the transport adapter and so intercepts both paths.

Every answer is checked: HTTP status (404 raises :class:`ContentNotFoundError`,
other errors :class:`ContentFetchError`), JSON, the action API ``success`` flag and
the shape of the result. A bad search page fails the whole gather before any harvest
object is created; a bad answer while importing a dataset fails that dataset only.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import time
from typing import Any, Iterator, Optional, cast
from urllib.parse import urlencode

import requests
import urllib3.exceptions
from ckan import model
from ckan import plugins as p
from ckan.plugins import toolkit
from ckan.plugins.toolkit import config
from ckan.types import AuthResult, Context, DataDict
from sqlalchemy.exc import SQLAlchemyError
from urllib3.util.retry import Retry

from ckanext.harvest.harvesters.base import (
    IMPORT_STAGE,
    USER_NAME_OPTION,
    HarvesterBase,
    check_http_url,
)
from ckanext.harvest.lib import netguard
from ckanext.harvest.model import HarvestJob, HarvestObject, HarvestSource

__all__ = [
    "CKANHarvester",
    "ContentFetchError",
    "ContentNotFoundError",
    "RemoteResourceError",
    "RemoteResourceNotFoundError",
    "SearchError",
]

# ``config``, ``requests``, ``model``, ``toolkit`` and ``log`` are read at call
# time through this module: downstream test suites patch them (e.g.
# ``...ckanharvester.requests.get``, ``...ckanharvester.config``).
log = logging.getLogger(__name__)

#: The options of the limits of every remote request (config_declaration.yaml).
MAX_SIZE_OPTION = "ckan.harvest.max_response_size"
MAX_SECONDS_OPTION = "ckan.harvest.max_response_seconds"
#: The options limiting the tags and resources of one remote dataset.
MAX_TAGS_OPTION = "ckan.harvest.max_tags_per_dataset"
MAX_RESOURCES_OPTION = "ckan.harvest.max_resources_per_dataset"
#: Retries of a request after a connection error or a status in RETRY_STATUSES.
HTTP_RETRIES = 3
#: Retry n waits HTTP_BACKOFF_FACTOR * 2 ** (n - 1) seconds (the first retry: none).
HTTP_BACKOFF_FACTOR = 0.5
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_CHUNK_BYTES = 64 * 1024
_EXCERPT_CHARS = 500

SEARCH_ROWS = 100
ONLY_LOCAL = "only_local"
CREATE = "create"
REMOTE_MODES = (ONLY_LOCAL, CREATE)
INCREMENTAL_MARGIN = datetime.timedelta(hours=1)
GROUP_DROP_KEYS = ("packages", "created", "users", "groups", "tags", "extras",
                   "display_name")
ORG_DROP_KEYS = GROUP_DROP_KEYS + ("type",)

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


# --- validation of the source configuration -------------------------------------

_BOOLEAN_OPTIONS = ("read_only", "force_all")


def _check_api_version(config: dict[str, Any]) -> None:
    if "api_version" in config:
        try:
            int(config["api_version"])
        except (TypeError, ValueError):
            raise ValueError("api_version must be an integer") from None


def _check_default_tags(config: dict[str, Any]) -> None:
    if "default_tags" not in config:
        return
    tags = config["default_tags"]
    if not isinstance(tags, list):
        raise ValueError("default_tags must be a list")
    if tags and not isinstance(tags[0], dict):
        raise ValueError("default_tags must be a list of dictionaries")


def _check_default_groups(config: dict[str, Any]) -> bool:
    """Resolve ``default_groups`` into ``default_group_dicts``; True if done."""
    if "default_groups" not in config:
        return False
    groups = config["default_groups"]
    if not isinstance(groups, list):
        raise ValueError("default_groups must be a *list* of group names/ids")
    if groups and not isinstance(groups[0], str):
        raise ValueError("default_groups must be a list of group names/ids (i.e. strings)")
    context = cast(Context, {
        "model": model, "session": model.Session, "user": _request_user_name(),
    })
    config["default_group_dicts"] = [
        _show_default_group(context, group) for group in groups
    ]
    return True


def _show_default_group(context: Context, name_or_id: str) -> dict[str, Any]:
    try:
        return toolkit.get_action("group_show")(dict(context), {
            "id": name_or_id, "include_datasets": False, "include_users": False,
        })
    except toolkit.ObjectNotFound:
        raise ValueError("Default group not found") from None


def _check_other_options(config: dict[str, Any]) -> None:
    if "default_extras" in config and not isinstance(config["default_extras"], dict):
        raise ValueError("default_extras must be a dictionary")
    for kind in ("organizations", "groups"):
        if ("%s_filter_include" % kind in config
                and "%s_filter_exclude" % kind in config):
            raise ValueError(
                "Harvest configuration cannot contain both %s_filter_include and "
                "%s_filter_exclude" % (kind, kind)
            )
    if config.get("user"):
        _check_user_exists(config["user"])
    for key in _BOOLEAN_OPTIONS:
        if key in config and not isinstance(config[key], bool):
            raise ValueError("%s must be boolean" % key)


def _check_user_exists(name: str) -> None:
    context = cast(Context, {
        "model": model, "session": model.Session, "ignore_auth": True,
    })
    try:
        toolkit.get_action("user_show")(context, {"id": name})
    except toolkit.ObjectNotFound:
        raise ValueError("User not found") from None


def _request_user_name() -> str:
    """Name of the user of the current web request ('' outside a request)."""
    try:
        return toolkit.g.user or ""
    except (AttributeError, RuntimeError):
        return ""


# --- HTTP -------------------------------------------------------------------------


def _new_session() -> requests.Session:
    """A session retrying idempotent requests (see the module docstring)."""
    retry = Retry(
        total=HTTP_RETRIES,
        connect=HTTP_RETRIES,
        read=1,  # a read error may take the read timeout: retry it once only
        status=HTTP_RETRIES,
        other=0,
        backoff_factor=HTTP_BACKOFF_FACTOR,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,  # the last answer's status is reported below
        respect_retry_after_header=False,  # a remote must not stall us for hours
    )
    # Refuses non-public hosts (SSRF), also on redirects: docs/security.rst.
    adapter = netguard.GuardedAdapter(max_retries=retry)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _http_get(session: requests.Session, url: str, headers: dict[str, str]) -> str:
    """GET ``url``; return the body as text. Raises requests' exceptions."""
    if requests.get is not _REQUESTS_GET:  # patched by a test suite
        response = requests.get(url, headers=headers, timeout=netguard.http_timeout())
        response.raise_for_status()
        return response.text
    with session.get(url, headers=headers, timeout=netguard.http_timeout(),
                     stream=True) as response:
        response.raise_for_status()
        return _read_text(response)


def _read_text(response: requests.Response) -> str:
    """Read a streamed body within ``max_response_size`` / ``max_response_seconds``
    (0: no limit)."""
    # A test may patch ``config`` with a plain dict: a missing limit is no limit.
    max_bytes = config.get(MAX_SIZE_OPTION) or 0
    max_seconds = config.get(MAX_SECONDS_OPTION) or 0
    too_large = "more than %d bytes (%s)" % (max_bytes, MAX_SIZE_OPTION)
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
                                    % (max_seconds, MAX_SECONDS_OPTION))
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


def _excerpt(content: Any) -> str:
    """``repr`` of the start of a (possibly huge) remote answer."""
    if isinstance(content, (str, bytes)) and len(content) > _EXCERPT_CHARS:
        return "%r... (%d characters)" % (content[:_EXCERPT_CHARS], len(content))
    return repr(content)


def _parse_json(content: Any, what: str) -> Any:
    """Decoded JSON answer; ValueError when it is not JSON.

    :param what: names the answer in error messages
    """
    try:
        return json.loads(content)
    except (TypeError, ValueError, RecursionError):
        raise ValueError("%s was not JSON: %s" % (what, _excerpt(content))) from None


#: Fields of a remote dataset that must be lists of objects, and strings.
_LIST_FIELDS = ("tags", "resources", "extras", "groups")
_TEXT_FIELDS = ("id", "name", "title", "notes", "url", "version", "author",
                "maintainer", "license_id")


def _check_remote_dataset(package_dict: Any) -> None:
    """Refuse a remote dataset of the wrong shape or beyond the size limits.

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
    for field, option in (("tags", MAX_TAGS_OPTION), ("resources", MAX_RESOURCES_OPTION)):
        limit = config.get(option)
        count = len(package_dict.get(field) or [])
        if limit and count > limit:
            raise ValueError(
                "Remote dataset has too many %s: %d (at most %d, see %s)"
                % (field, count, limit, option))


def _action_result(answer: Any, what: str) -> Any:
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


def _search_page(answer: Any, url: str) -> tuple[list[dict[str, Any]], Optional[int]]:
    """The datasets and the total ``count`` of a ``package_search`` result."""
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


# --- read_only: auth functions registered by the plugin ----------------------------


def _harvest_user_of_read_only(package_id: str) -> tuple[bool, Optional[str]]:
    """Whether the dataset was harvested by a ``read_only`` source, and its user."""
    row = (
        model.Session.query(HarvestSource.config)
        .join(HarvestObject, HarvestObject.harvest_source_id == HarvestSource.id)
        .filter(HarvestObject.package_id == package_id)
        .filter(HarvestObject.current.is_(True))
        .first()
    )
    try:
        source_config = json.loads(row[0]) if row and row[0] else {}
    except ValueError:
        return False, None
    if not isinstance(source_config, dict) or source_config.get("read_only") is not True:
        return False, None
    return True, source_config.get("user") or config.get(USER_NAME_OPTION) or None


def _read_only_denial(package_ref: Any, user: Optional[str]) -> Optional[AuthResult]:
    """A refusal when ``user`` may not edit the read-only harvested dataset."""
    package = model.Package.get(package_ref) if isinstance(package_ref, str) else None
    if package is None:
        return None
    read_only, harvest_user = _harvest_user_of_read_only(package.id)
    if not read_only or (user and user == harvest_user):
        return None
    return {
        "success": False,
        "msg": "Dataset %s is harvested read-only: only the harvest user and "
               "sysadmins may change it" % package.name,
    }


@toolkit.chained_auth_function
@toolkit.auth_allow_anonymous_access
def package_update(next_auth: Any, context: Context, data_dict: DataDict) -> AuthResult:
    """Refuse changes to datasets harvested by a ``read_only`` source.

    ``package_patch``, ``package_delete``, ``package_revise`` and the resource
    and resource view auth functions all delegate to this one. Sysadmins never
    reach it; the harvest user of the source is let through.
    """
    data_dict = data_dict or {}
    denial = _read_only_denial(
        data_dict.get("id") or data_dict.get("name"), context.get("user")
    )
    return denial or next_auth(context, data_dict)


def _bulk_auth(next_auth: Any, context: Context, data_dict: DataDict) -> AuthResult:
    for package_ref in (data_dict or {}).get("datasets") or []:
        denial = _read_only_denial(package_ref, context.get("user"))
        if denial:
            return denial
    return next_auth(context, data_dict)


@toolkit.chained_auth_function
def bulk_update_private(next_auth: Any, context: Context, data_dict: DataDict) -> AuthResult:
    """Refuse bulk changes including read-only harvested datasets."""
    return _bulk_auth(next_auth, context, data_dict)


@toolkit.chained_auth_function
def bulk_update_public(next_auth: Any, context: Context, data_dict: DataDict) -> AuthResult:
    """Refuse bulk changes including read-only harvested datasets."""
    return _bulk_auth(next_auth, context, data_dict)


@toolkit.chained_auth_function
def bulk_update_delete(next_auth: Any, context: Context, data_dict: DataDict) -> AuthResult:
    """Refuse bulk deletions including read-only harvested datasets."""
    return _bulk_auth(next_auth, context, data_dict)


_AUTH_FUNCTIONS = {
    "package_update": package_update,
    "bulk_update_private": bulk_update_private,
    "bulk_update_public": bulk_update_public,
    "bulk_update_delete": bulk_update_delete,
}


# --- the harvester ----------------------------------------------------------------


class CKANHarvester(HarvesterBase):
    """Harvests the datasets of a remote CKAN instance through its action API."""

    p.implements(p.IAuthFunctions)

    config: Optional[dict[str, Any]] = None
    api_version = 2
    action_api_version = 3
    _session: Optional[requests.Session] = None

    # --- IAuthFunctions ------------------------------------------------------

    def get_auth_functions(self) -> dict[str, Any]:
        """Chained auth functions enforcing the ``read_only`` source option."""
        return dict(_AUTH_FUNCTIONS)

    # --- IHarvester ------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Describe the harvester (source type ``ckan``)."""
        return {
            "name": "ckan",
            "title": "CKAN",
            "description": "Harvests remote CKAN instances",
            "form_config_interface": "Text",
        }

    def validate_config(self, config: Optional[str]) -> Optional[str]:
        """Check the JSON configuration of a source.

        :param config: the configuration string (may be empty)
        :returns: the configuration, re-serialised with ``default_group_dicts``
            when ``default_groups`` is given
        :raises ValueError: with the message of the first failed check
        """
        if not config:
            return config
        config_obj = json.loads(config)
        if not isinstance(config_obj, dict):
            raise ValueError("the configuration must be a JSON object")
        _check_api_version(config_obj)
        _check_default_tags(config_obj)
        if _check_default_groups(config_obj):
            config = json.dumps(config_obj)
        _check_other_options(config_obj)
        return config

    def validate_source_url(self, url: str) -> None:
        """Accept only URLs this harvester can fetch: ``http(s)://host/...``.

        :param url: the URL of a source being created or updated
        :raises ValueError: with the reason the URL is refused
        """
        check_http_url(url)

    def get_original_url(self, harvest_object_id: str) -> Optional[str]:
        """URL of the remote ``package_show`` of a harvested dataset.

        :param harvest_object_id: id of the harvest object
        :returns: the URL, or None for an unknown object
        """
        obj = HarvestObject.get(harvest_object_id)
        source = obj and (obj.source or (obj.job.source if obj.job else None))
        if not source:
            return None
        return "%s%s/package_show?%s" % (
            source.url.rstrip("/"), self._get_action_api_offset(),
            urlencode({"id": obj.guid}),
        )

    def gather_stage(self, harvest_job: HarvestJob) -> Optional[list[str]]:
        """List the remote datasets (all, or those modified since the last clean job).

        :param harvest_job: the job being gathered
        :returns: ids of the new harvest objects; ``[]`` when nothing changed or
            the remote has no datasets; None when the search failed (a gather error
            is recorded and no object is created)
        """
        toolkit.requires_ckan_version("2.0")
        source = _source_of(harvest_job)
        self._set_config(source.config)
        base_url = source.url.rstrip("/")
        if not self._harvest_user_is_valid(harvest_job):
            return None
        with self._http_session():
            datasets = self._gather_datasets(harvest_job, base_url, self._filter_terms())
        if datasets is None:
            return None
        return self._create_objects(datasets, harvest_job)

    def fetch_stage(self, harvest_object: HarvestObject) -> bool:
        """Nothing to do: the content was stored at gather."""
        return True

    def import_stage(self, harvest_object: HarvestObject) -> Any:
        """Create or update the local copy of a remote dataset.

        :param harvest_object: object whose content is the remote dataset dict
        :returns: True (written or skipped), ``'unchanged'``, or a falsy value
            after recording an ``Import`` object error
        """
        if not harvest_object:
            log.error("No harvest object received")
            return False
        if harvest_object.content is None:
            self._save_object_error(
                "Empty content for object %s" % harvest_object.id,
                harvest_object, IMPORT_STAGE,
            )
            return False
        self._set_config(_source_of(harvest_object.job).config)
        try:
            with self._http_session():
                return self._import(harvest_object)
        except toolkit.ValidationError as e:
            model.Session.rollback()
            self._save_object_error(
                "Invalid package with GUID %s: %r" % (harvest_object.guid, e.error_dict),
                harvest_object, IMPORT_STAGE,
            )
        except Exception as e:  # noqa: BLE001 - any failure is this object's error
            model.Session.rollback()
            log.exception("Could not import harvest object %s", harvest_object.id)
            self._save_object_error("%s" % e, harvest_object, IMPORT_STAGE)
        return None

    def modify_package_dict(
        self, package_dict: dict[str, Any], harvest_object: HarvestObject
    ) -> dict[str, Any]:
        """Hook for subclasses: change the dataset dict just before it is written.

        :param package_dict: the dataset about to be created or updated
        :param harvest_object: the object being imported (its ``content`` is the
            untouched remote dict)
        :returns: the dataset dict to write
        """
        return package_dict

    # --- configuration -------------------------------------------------------

    def _set_config(self, config_str: Optional[str]) -> None:
        if config_str:
            self.config = json.loads(config_str)
            if "api_version" in self.config:
                self.api_version = int(self.config["api_version"])
            # Option names only: values may be secrets (api_key).
            log.debug("Using config options: %s", sorted(self.config))
        else:
            self.config = {}

    def _get_user_name(self) -> str:
        """The ``user`` of the source configuration, else the default harvest user."""
        configured = (self.config or {}).get("user")
        return configured or super()._get_user_name()

    def _harvest_user_is_valid(self, harvest_job: HarvestJob) -> bool:
        name = (self.config or {}).get("user")
        if not name:
            return True
        user = model.User.get(name)
        if user is None or user.state != model.State.ACTIVE:
            self._save_gather_error(
                "The harvest user %s of the source configuration does not exist" % name,
                harvest_job,
            )
            return False
        return True

    def _get_action_api_offset(self) -> str:
        return "/api/%d/action" % self.action_api_version

    def _get_search_api_offset(self) -> str:
        return "%s/package_search" % self._get_action_api_offset()

    # --- HTTP ----------------------------------------------------------------

    @contextlib.contextmanager
    def _http_session(self) -> Iterator[None]:
        """Share one pooled, retrying HTTP session between a stage's requests."""
        session = _new_session()
        self._session = session
        try:
            yield
        finally:
            self._session = None
            session.close()

    def _request_headers(self) -> dict[str, str]:
        config = self.config or {}
        headers = {}
        if "user_agent" in config:
            headers["User-Agent"] = str(config["user_agent"])
        if config.get("api_key"):
            headers["Authorization"] = config["api_key"]
        return headers

    def _get_content(self, url: str) -> str:
        """Body of a successful GET of ``url``.

        :raises ContentNotFoundError: the remote answered 404
        :raises ContentFetchError: any other failure (HTTP status, network,
            timeout, truncated or oversized answer)
        """
        headers = self._request_headers()
        try:
            if self._session is not None:
                return _http_get(self._session, url, headers)
            with _new_session() as session:
                return _http_get(session, url, headers)
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

    # --- gather ----------------------------------------------------------------

    def _filter_terms(self) -> list[str]:
        config = self.config or {}
        terms = []
        for kind, field in (("organizations", "organization"), ("groups", "groups")):
            include = config.get("%s_filter_include" % kind, [])
            exclude = config.get("%s_filter_exclude" % kind, [])
            if include:
                terms.append(" OR ".join("%s:%s" % (field, name) for name in include))
            elif exclude:
                terms.extend("-%s:%s" % (field, name) for name in exclude)
        return terms

    def _modified_since_term(self, harvest_job: HarvestJob) -> Optional[str]:
        if (self.config or {}).get("force_all"):
            return None
        previous = self.last_error_free_job(harvest_job)
        if previous is None or previous.gather_started is None:
            return None
        since = (previous.gather_started - INCREMENTAL_MARGIN).isoformat()
        return "metadata_modified:[%sZ TO *]" % since

    def _gather_datasets(
        self, harvest_job: HarvestJob, base_url: str, fq_terms: list[str]
    ) -> Optional[list[dict[str, Any]]]:
        """Remote datasets to import; None after recording a gather error."""
        since_term = self._modified_since_term(harvest_job)
        if since_term:
            try:
                return self._search_for_datasets(base_url, fq_terms + [since_term])
            except SearchError as e:
                log.info("Incremental search failed (%s); searching everything", e)
        try:
            datasets = self._search_for_datasets(base_url, fq_terms)
        except SearchError as e:
            self._save_gather_error(
                "Unable to search remote CKAN for datasets:%s url:%s"
                "terms:%s" % (e, base_url, fq_terms),
                harvest_job,
            )
            return None
        if not datasets:
            self._save_gather_error("No datasets found at CKAN: %s" % base_url, harvest_job)
        return datasets

    def _search_for_datasets(
        self, remote_ckan_base_url: str, fq_terms: Optional[list[str]] = None
    ) -> list[dict[str, Any]]:
        """Every dataset of the remote search, page by page, without duplicates.

        :raises SearchError: on any bad page (nothing is returned then)
        """
        base_search_url = remote_ckan_base_url + self._get_search_api_offset()
        params = {"rows": str(SEARCH_ROWS), "start": "0", "sort": "id asc"}
        if fq_terms:
            params["fq"] = " ".join(fq_terms)
        datasets: list[dict[str, Any]] = []
        seen: set[str] = set()
        while True:
            url = base_search_url + "?" + urlencode(params)
            page, count = self._get_search_page(remote_ckan_base_url, url)
            new = [dataset for dataset in page if dataset["id"] not in seen]
            if not new:
                return datasets
            seen.update(dataset["id"] for dataset in new)
            datasets.extend(new)
            params["start"] = str(_next_start(int(params["start"]), len(page), count))

    def _get_search_page(
        self, base_url: str, url: str
    ) -> tuple[list[dict[str, Any]], Optional[int]]:
        try:
            content = self._get_content(url)
        except ContentFetchError as e:
            raise SearchError(
                "Error sending request to search remote CKAN instance %s using URL %r. "
                "Error: %s" % (base_url, url, e)
            ) from e
        try:
            answer = _parse_json(content, "Response from remote CKAN")
            result = _action_result(answer, "The answer of remote CKAN search at URL %r" % url)
        except ValueError as e:
            raise SearchError(str(e)) from None
        return _search_page(result, url)

    def _create_objects(
        self, datasets: list[dict[str, Any]], harvest_job: HarvestJob
    ) -> Optional[list[str]]:
        """One harvest object per remote dataset, committed all together."""
        objects: dict[str, HarvestObject] = {}
        try:
            for dataset in datasets:
                if dataset["id"] in objects:
                    continue
                obj = HarvestObject(guid=dataset["id"], job=harvest_job,
                                    content=json.dumps(dataset))
                model.Session.add(obj)
                objects[dataset["id"]] = obj
            model.Session.commit()
        except SQLAlchemyError as e:
            model.Session.rollback()
            log.exception("Could not create the harvest objects of job %s", harvest_job.id)
            self._save_gather_error("%r" % e, harvest_job)
            return None
        return [obj.id for obj in objects.values()]

    # --- import ----------------------------------------------------------------

    def _import(self, harvest_object: HarvestObject) -> Any:
        package_dict = json.loads(harvest_object.content or "")
        _check_remote_dataset(package_dict)
        if package_dict.get("type") == "harvest":
            log.warning("Remote dataset is a harvest source, ignoring...")
            return True
        self._add_default_tags(package_dict)
        self._set_groups(package_dict, harvest_object)
        package_dict["owner_org"] = self._owner_org(package_dict, harvest_object)
        self._add_default_groups(package_dict)
        self._add_default_extras(package_dict, harvest_object)
        for resource in package_dict.get("resources", []):
            resource.pop("url_type", None)
            resource.pop("revision_id", None)
        package_dict = self.modify_package_dict(package_dict, harvest_object)
        if not self._harvest_user_may_write(package_dict, harvest_object):
            return False
        return self._create_or_update_package(
            package_dict, harvest_object, package_dict_form="package_show"
        )

    def _context(self) -> Context:
        return cast(Context, {
            "model": model, "session": model.Session, "user": self._get_user_name(),
        })

    def _source_url(self, harvest_object: HarvestObject) -> str:
        return _source_of(harvest_object.job).url.rstrip("/")

    def _add_default_tags(self, package_dict: dict[str, Any]) -> None:
        default_tags = (self.config or {}).get("default_tags", [])
        if not default_tags:
            return
        tags = package_dict.setdefault("tags", [])
        for tag in default_tags:
            if tag not in tags:
                tags.append(tag)

    # groups

    def _set_groups(self, package_dict: dict[str, Any], harvest_object: HarvestObject) -> None:
        """Map the remote groups to local ones (``remote_groups``), or drop them."""
        mode = (self.config or {}).get("remote_groups")
        if mode not in REMOTE_MODES:
            package_dict.pop("groups", None)
            return
        groups = []
        for remote_group in package_dict.get("groups") or []:
            local = self._find_local_group(remote_group)
            if local is None and mode == CREATE:
                local = self._create_remote_group(remote_group, harvest_object)
            if local is None:
                log.info("Group %s is not available locally", remote_group.get("name"))
                continue
            groups.append({"id": local["id"], "name": local["name"]})
        package_dict["groups"] = groups

    def _find_local_group(self, remote_group: dict[str, Any]) -> Optional[dict[str, Any]]:
        for key in ("id", "name"):
            if not remote_group.get(key):
                continue
            try:
                return toolkit.get_action("group_show")(self._context(), {
                    "id": remote_group[key], "include_datasets": False,
                    "include_users": False,
                })
            except toolkit.ObjectNotFound:
                continue
        return None

    def _create_remote_group(
        self, remote_group: dict[str, Any], harvest_object: HarvestObject
    ) -> Optional[dict[str, Any]]:
        try:
            group = self._get_group(self._source_url(harvest_object), remote_group)
        except RemoteResourceNotFoundError:
            log.error("Could not get remote group %s", remote_group.get("name"))
            return None
        except RemoteResourceError as e:
            raise RemoteResourceError("%s %s: %s" % (
                e, remote_group.get("name") or remote_group.get("id"), e.__cause__
            )) from e
        for key in GROUP_DROP_KEYS:
            group.pop(key, None)
        created = toolkit.get_action("group_create")(self._context(), group)
        log.info("Group %s has been newly created", created["name"])
        return created

    def _get_group(self, base_url: str, group: dict[str, Any]) -> dict[str, Any]:
        """Remote ``group_show`` of ``group['id']``.

        :raises RemoteResourceNotFoundError: the remote answered 404
        :raises RemoteResourceError: any other failure
        """
        url = "%s%s/group_show?%s" % (
            base_url.rstrip("/"), self._get_action_api_offset(), urlencode({"id": group["id"]})
        )
        return self._get_remote_dict(url, "Could not fetch/decode remote group")

    def _get_organization(self, base_url: str, org_name: str) -> dict[str, Any]:
        """Remote ``organization_show`` of ``org_name`` (``group_show`` if not found).

        :raises RemoteResourceNotFoundError: both endpoints answered 404
        :raises RemoteResourceError: any other failure
        """
        url = "%s%s/organization_show?%s" % (
            base_url.rstrip("/"), self._get_action_api_offset(), urlencode({"id": org_name})
        )
        try:
            return self._get_remote_dict(url, "Could not fetch/decode remote organization")
        except RemoteResourceNotFoundError:
            # CKANs without organization_show keep organizations as groups.
            return self._get_group(base_url, {"id": org_name})

    def _get_remote_dict(self, url: str, message: str) -> dict[str, Any]:
        try:
            what = "The answer of %s" % url
            result = _action_result(_parse_json(self._get_content(url), what), what)
        except ContentNotFoundError as e:
            raise RemoteResourceNotFoundError(message) from e
        except (ContentFetchError, ValueError) as e:
            raise RemoteResourceError(message) from e
        if not isinstance(result, dict):
            raise RemoteResourceError(message) from ValueError(
                "The answer of %s has no object as result" % url)
        return result

    # organization

    def _owner_org(self, package_dict: dict[str, Any], harvest_object: HarvestObject) -> Any:
        """The remote organization mapped locally (``remote_orgs``), else the source's."""
        # The source dataset's row: a package_show here would also compute the
        # source's status for every imported dataset (half the import time).
        source_package = model.Package.get(_source_of(harvest_object.job).id)
        local_org = source_package.owner_org if source_package else None
        mode = (self.config or {}).get("remote_orgs")
        remote_org = package_dict.get("owner_org")
        if mode not in REMOTE_MODES or not remote_org:
            return local_org
        return self._local_org_id(remote_org, mode, harvest_object) or local_org

    def _local_org_id(
        self, remote_org: str, mode: str, harvest_object: HarvestObject
    ) -> Optional[str]:
        try:
            return toolkit.get_action("organization_show")(self._context(), {
                "id": remote_org, "include_datasets": False, "include_users": False,
            })["id"]
        except toolkit.ObjectNotFound:
            log.info("Organization %s is not available locally", remote_org)
        if mode != CREATE:
            return None
        try:
            org = self._get_organization(self._source_url(harvest_object), remote_org)
            for key in ORG_DROP_KEYS:
                org.pop(key, None)
            created = toolkit.get_action("organization_create")(self._context(), org)
        except (RemoteResourceNotFoundError, toolkit.ValidationError):
            log.error("Could not get remote org %s", remote_org)
            return None
        except RemoteResourceError as e:
            raise RemoteResourceError("%s %s: %s" % (e, remote_org, e.__cause__)) from e
        log.info("Organization %s has been newly created", created["name"])
        return created["id"]

    # defaults

    def _add_default_groups(self, package_dict: dict[str, Any]) -> None:
        config = self.config or {}
        if not config.get("default_groups"):
            return
        group_dicts = config.get("default_group_dicts")
        if group_dicts is None:  # configuration stored without validate_config
            context = cast(Context, {
                "model": model, "session": model.Session, "user": self._get_user_name(),
            })
            group_dicts = [_show_default_group(context, name)
                           for name in config["default_groups"]]
        groups = package_dict.setdefault("groups", [])
        present = {group.get("id") for group in groups}
        for group in group_dicts:
            if group["id"] not in present:
                groups.append(group)
                present.add(group["id"])

    def _add_default_extras(
        self, package_dict: dict[str, Any], harvest_object: HarvestObject
    ) -> None:
        config = self.config or {}
        default_extras = config.get("default_extras", {})
        if not default_extras:
            return
        override = config.get("override_extras", False)
        extras = package_dict.setdefault("extras", [])
        placeholders = _placeholders(package_dict, harvest_object)
        for key, value in default_extras.items():
            existing = [extra for extra in extras if extra.get("key") == key]
            if existing and not override:
                continue
            for extra in existing:
                extras.remove(extra)
            if isinstance(value, str):
                value = value.format(**placeholders)
            extras.append({"key": key, "value": value})

    # user

    def _harvest_user_may_write(
        self, package_dict: dict[str, Any], harvest_object: HarvestObject
    ) -> bool:
        """With a ``user`` option, check that user's right to write the dataset."""
        user = (self.config or {}).get("user")
        if not user:
            return True
        context = cast(Context, {"model": model, "session": model.Session, "user": user})
        try:
            self._find_existing_package(package_dict)
        except toolkit.ObjectNotFound:
            action, data_dict = "package_create", dict(package_dict)
        else:
            # With the dataset in the context, only the groups it joins are checked.
            context["package"] = model.Package.get(package_dict["id"])
            action = "package_update"
            data_dict = {"id": package_dict["id"], "groups": package_dict.get("groups", [])}
        try:
            toolkit.check_access(action, context, data_dict)
        except toolkit.NotAuthorized as e:
            self._save_object_error(
                "The harvest user %s may not write dataset %s: %s"
                % (user, harvest_object.guid, e),
                harvest_object, IMPORT_STAGE,
            )
            return False
        return True


def _source_of(harvest_job: Optional[HarvestJob]) -> HarvestSource:
    """The source of a job (every job the framework runs has one)."""
    if harvest_job is None or harvest_job.source is None:
        raise ValueError("Harvest job without a source")
    return harvest_job.source


def _next_start(start: int, page_length: int, count: Optional[int]) -> int:
    """Offset of the next search page.

    Normally ``start + 100``. A remote whose ``ckan.search.rows_max`` is below 100
    returns shorter pages while its ``count`` says more remain: then advance by
    what was received, or datasets would be skipped.
    """
    if page_length < SEARCH_ROWS and count is not None and start + page_length < count:
        return start + page_length
    return start + SEARCH_ROWS


def _placeholders(
    package_dict: dict[str, Any], harvest_object: HarvestObject
) -> dict[str, Any]:
    """Values available to ``default_extras`` strings, e.g. ``{dataset_id}``."""
    job = harvest_object.job
    source = _source_of(job)
    assert job is not None
    return {
        "harvest_source_id": source.id,
        "harvest_source_url": source.url.strip("/"),
        "harvest_source_title": source.title,
        "harvest_job_id": job.id,
        "harvest_object_id": harvest_object.id,
        "dataset_id": package_dict["id"],
    }
