"""The CKAN-to-CKAN harvester (source type ``ckan``).

It lists the datasets of a remote CKAN through its action API (``package_search``,
100 rows a page), stores each remote dataset dict as the content of a harvest object
at gather, and imports it at import, keeping the remote dataset id as the local one.
The objects of a search page are committed before the next page is read, so the
gather holds one page and the ids in memory, whatever the size of the remote. A bad
search page fails the whole gather and deletes the objects of the pages before it
(nothing is imported from a partial listing); a bad answer while importing a dataset
fails that dataset only.

This module is the harvester class and its three stages; its parts live beside it:

* :mod:`.ckan_http`: the HTTP client (retrying guarded session, size and time
  limits, 404 as :class:`ContentNotFoundError`, other failures as
  :class:`ContentFetchError`) and the checks of the remote's answers (JSON, the
  action API ``success`` flag, the shape of search pages and datasets);
* :mod:`.ckan_config`: validation of the source configuration;
* :mod:`.ckan_import`: the import steps mapping the remote groups and
  organization and adding the source's defaults (a mixin of the class);
* :mod:`.ckan_auth`: the chained auth functions of the ``read_only`` option.

A stage (gather or import) opens one HTTP session and closes it when it ends, so
pages share pooled connections and nothing outlives the stage.

Test suites (ours and downstream ones) patch names of this module, which are
therefore read here at call time and handed down (:func:`_http_settings`):
``config`` (the size, time, tags and resources limits), ``requests.get`` (when it
is not the function it was at import time, requests go through it instead of the
session, without retries, so that the patch intercepts them) and the retry policy
:data:`HTTP_RETRIES`, :data:`HTTP_BACKOFF_FACTOR`, :data:`RETRY_STATUSES`.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
from typing import Any, Iterator, Optional, cast
from urllib.parse import urlencode

import requests
from ckan import model
from ckan import plugins as p
from ckan.plugins import toolkit
from ckan.plugins.toolkit import config
from ckan.types import Context
from sqlalchemy.exc import SQLAlchemyError

from ckanext.harvest.harvesters import ckan_auth, ckan_config, ckan_http
from ckanext.harvest.harvesters.base import IMPORT_STAGE, HarvesterBase, check_http_url
from ckanext.harvest.harvesters.ckan_http import (
    HTTP_BACKOFF_FACTOR,
    HTTP_RETRIES,
    RETRY_STATUSES,
    ContentFetchError,
    ContentNotFoundError,
    RemoteResourceError,
    RemoteResourceNotFoundError,
    SearchError,
)
from ckanext.harvest.harvesters.ckan_import import ImportStepsMixin, source_of
from ckanext.harvest.lib import removals
from ckanext.harvest.lib.stages import delete_job_objects
from ckanext.harvest.model import HarvestJob, HarvestObject

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

SEARCH_ROWS = 100
INCREMENTAL_MARGIN = datetime.timedelta(hours=1)


def _http_settings() -> ckan_http.HttpSettings:
    """This module's ``config``, ``requests.get`` and retry policy, as they are now."""
    return ckan_http.HttpSettings(
        limits=config, get=requests.get, retries=HTTP_RETRIES,
        backoff_factor=HTTP_BACKOFF_FACTOR, retry_statuses=RETRY_STATUSES,
    )


def _check_remote_dataset(package_dict: Any) -> None:
    """Refuse a remote dataset of the wrong shape or beyond the limits of ``config``.

    :raises ValueError: with a message for the object error
    """
    ckan_http.check_remote_dataset(package_dict, config)


class CKANHarvester(ImportStepsMixin, HarvesterBase):
    """Harvests the datasets of a remote CKAN instance through its action API."""

    p.implements(p.IAuthFunctions)

    config: Optional[dict[str, Any]] = None
    api_version = 2
    action_api_version = 3
    _session: Optional[requests.Session] = None
    _in_stage = False

    # --- IAuthFunctions ------------------------------------------------------

    def get_auth_functions(self) -> dict[str, Any]:
        """Chained auth functions enforcing the ``read_only`` source option."""
        return dict(ckan_auth.AUTH_FUNCTIONS)

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
        return ckan_config.validate_config(config)

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

        Objects are created and committed page by page. A job that has objects
        already (a gather of it was interrupted) keeps them: their guids are
        skipped and their ids come first in the result.

        :param harvest_job: the job being gathered
        :returns: ids of the job's harvest objects; ``[]`` when nothing changed or
            the remote has no datasets; None when the search failed (a gather error
            is recorded and the job is left without objects)
        """
        toolkit.requires_ckan_version("2.0")
        source = source_of(harvest_job)
        self._set_config(source.config)
        base_url = source.url.rstrip("/")
        if not self._harvest_user_is_valid(harvest_job):
            return None
        with self._http_session():
            ids = self._gather_objects(harvest_job, base_url, self._filter_terms())
            if ids is not None and self.delete_missing_enabled(harvest_job):
                ids = ids + self._gather_removals(harvest_job, base_url,
                                                  self._filter_terms())
        return ids

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
        self._set_config(source_of(harvest_object.job).config)
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
        """Share one pooled, retrying HTTP session between a stage's requests
        (opened by the first one: most imports make none)."""
        self._in_stage = True
        try:
            yield
        finally:
            session, self._session, self._in_stage = self._session, None, False
            if session is not None:
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
        if self._session is None and self._in_stage:
            self._session = ckan_http.new_session(_http_settings())
        return ckan_http.get_content(self._session, url, self._request_headers(),
                                     _http_settings())

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

    def _gather_objects(
        self, harvest_job: HarvestJob, base_url: str, fq_terms: list[str]
    ) -> Optional[list[str]]:
        """Objects of the remote datasets to import; None after recording a gather
        error (the job then has no object)."""
        since_term = self._modified_since_term(harvest_job)
        try:
            if since_term:
                try:
                    return self._objects_of_search(harvest_job, base_url,
                                                   fq_terms + [since_term])
                except SearchError as e:
                    log.info("Incremental search failed (%s); searching everything", e)
            ids = self._objects_of_search(harvest_job, base_url, fq_terms)
        except SearchError as e:
            self._save_gather_error(
                "Unable to search remote CKAN for datasets:%s url:%s"
                "terms:%s" % (e, base_url, fq_terms),
                harvest_job,
            )
            return None
        except SQLAlchemyError as e:
            log.exception("Could not create the harvest objects of job %s", harvest_job.id)
            self._save_gather_error("%r" % e, harvest_job)
            return None
        if not ids and not _job_objects(harvest_job.id)[0]:  # none unchanged either
            self._save_gather_error("No datasets found at CKAN: %s" % base_url, harvest_job)
        return ids

    def _objects_of_search(
        self, harvest_job: HarvestJob, base_url: str, fq_terms: list[str]
    ) -> list[str]:
        """Create the objects of the search's datasets as the pages come, one
        commit a page: only ids stay in memory, whatever the size of the remote.

        Guids that have an object in the job already (a gather of the same job
        interrupted before) are skipped, and the ids of those objects come first
        in the list: one object per remote dataset and job.

        :returns: ids of the job's objects
        :raises SearchError: a bad page; the job's objects are deleted first, so
            that nothing is imported from a partial listing
        :raises SQLAlchemyError: likewise, when the objects cannot be written
        """
        job_id = harvest_job.id
        ids, existing = _job_objects(job_id)
        try:
            for page in self._gather_pages(base_url, fq_terms):
                ids.extend(self._create_page_objects(page, harvest_job, existing))
        except (SearchError, SQLAlchemyError):
            model.Session.rollback()
            delete_job_objects(job_id)
            raise
        return ids

    def _create_page_objects(self, page: list[dict[str, Any]], job: HarvestJob,
                             existing: set[str]) -> list[str]:
        """One object per dataset of ``page`` (but the guids in ``existing``),
        committed; the ids of those to import (an unchanged dataset's object is
        finished at once, see :meth:`_create_hashed_objects`). Nothing of the page
        stays referenced: the commit expires the job, which drops its pending
        ``objects``."""
        return self._create_hashed_objects(
            [(dataset["id"], json.dumps(dataset)) for dataset in page
             if dataset["id"] not in existing], job)

    def _search_for_datasets(
        self, remote_ckan_base_url: str, fq_terms: Optional[list[str]] = None
    ) -> list[dict[str, Any]]:
        """Every dataset of the remote search, without duplicates, in one list.

        The gather reads the pages one by one instead (:meth:`_search_pages`);
        this list is kept for subclasses and tests. A subclass overriding it is
        still obeyed by the gather (which then holds the list in memory).

        :raises SearchError: on any bad page (nothing is returned then)
        """
        return [dataset for page in self._search_pages(remote_ckan_base_url, fq_terms)
                for dataset in page]

    def _gather_pages(
        self, base_url: str, fq_terms: list[str]
    ) -> Iterator[list[dict[str, Any]]]:
        """The pages the gather reads: :meth:`_search_pages`, unless
        :meth:`_search_for_datasets` was overridden (by a subclass, or patched by
        a test); its list is then used, a page (100 datasets) at a time."""
        method = getattr(self._search_for_datasets, "__func__", None)
        if method is _DEFAULT_SEARCH_FOR_DATASETS:
            return self._search_pages(base_url, fq_terms)
        datasets = self._search_for_datasets(base_url, fq_terms)
        return (datasets[start:start + SEARCH_ROWS]
                for start in range(0, len(datasets), SEARCH_ROWS))

    def _search_pages(
        self, remote_ckan_base_url: str, fq_terms: Optional[list[str]] = None
    ) -> Iterator[list[dict[str, Any]]]:
        """The datasets of the remote search, a page (100) at a time, each dataset
        once; the search ends at the first page without a dataset not seen before.

        :raises SearchError: on a bad page (the pages before it were yielded)
        """
        base_search_url = remote_ckan_base_url + self._get_search_api_offset()
        params = {"rows": str(SEARCH_ROWS), "start": "0", "sort": "id asc"}
        if fq_terms:
            params["fq"] = " ".join(fq_terms)
        seen: set[str] = set()
        while True:
            url = base_search_url + "?" + urlencode(params)
            page, count = self._get_search_page(remote_ckan_base_url, url)
            new = _unseen(page, seen)
            if not new:
                return
            yield new
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
            answer = ckan_http.parse_json(content, "Response from remote CKAN")
            what = "The answer of remote CKAN search at URL %r" % url
            result = ckan_http.action_result(answer, what)
        except ValueError as e:
            raise SearchError(str(e)) from None
        return ckan_http.search_page(result, url)

    # --- datasets missing at the source (delete_missing) ---------------------------

    def _gather_removals(
        self, harvest_job: HarvestJob, base_url: str, fq_terms: list[str]
    ) -> list[str]:
        """List the ids of every remote dataset (``fl=id``, cheap) and report them
        (:meth:`record_seen_identifiers`); withdrawn datasets listed again are
        gathered (``package_show``) to be restored.

        A listing that fails or comes short of the remote's ``count`` reports
        nothing: no dataset counts as missing after an incomplete listing.

        :returns: ids of the objects of the datasets to restore
        """
        try:
            seen = self._list_remote_ids(base_url, fq_terms)
            restored = self._gather_reappeared(harvest_job, base_url, seen)
        except SearchError as e:
            self._save_gather_error(
                "Could not list the remote datasets, no removal was checked: %s" % e,
                harvest_job)
            return []
        self.record_seen_identifiers(harvest_job, seen)
        return restored

    def _list_remote_ids(self, base_url: str, fq_terms: list[str]) -> set[str]:
        """The ids of the remote search, every page, nothing but ids.

        :raises SearchError: a bad page, or fewer ids than the remote counts
        """
        params = {"rows": str(SEARCH_ROWS), "start": "0", "sort": "id asc", "fl": "id"}
        if fq_terms:
            params["fq"] = " ".join(fq_terms)
        search_url = base_url + self._get_search_api_offset() + "?"
        seen: set[str] = set()
        count: Optional[int] = None
        while True:
            page, count = self._get_search_page(base_url, search_url + urlencode(params))
            new = {dataset["id"] for dataset in page} - seen
            if not new:
                break
            seen |= new
            params["start"] = str(_next_start(int(params["start"]), len(page), count))
        if count is not None and len(seen) < count:
            raise SearchError("the remote counts %d datasets, %d were listed"
                              % (count, len(seen)))
        return seen

    def _gather_reappeared(
        self, harvest_job: HarvestJob, base_url: str, seen: set[str]
    ) -> list[str]:
        """Objects of the withdrawn datasets listed again by the remote (but not
        gathered already by this job), their content from ``package_show``.

        :raises SearchError: a remote dataset could not be read
        """
        _, gathered = _job_objects(harvest_job.id)
        wanted = sorted((removals.withdrawn_guids(harvest_job.source_id) & seen)
                        - gathered)
        objects = []
        for guid in wanted:
            url = "%s%s/package_show?%s" % (base_url, self._get_action_api_offset(),
                                            urlencode({"id": guid}))
            try:
                answer = ckan_http.parse_json(self._get_content(url),
                                              "Response from remote CKAN")
                dataset = ckan_http.action_result(answer, "The remote dataset %s" % guid)
            except (ContentFetchError, ValueError) as e:
                raise SearchError("Could not read remote dataset %s: %s" % (guid, e)) \
                    from None
            objects.append(HarvestObject(guid=guid, job=harvest_job,
                                         content=json.dumps(dataset)))
        model.Session.add_all(objects)
        model.Session.flush()
        ids = [obj.id for obj in objects]
        model.Session.commit()
        return ids

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

    # --- the harvest user ------------------------------------------------------

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


_DEFAULT_SEARCH_FOR_DATASETS = CKANHarvester._search_for_datasets


def _unseen(page: list[dict[str, Any]], seen: set[str]) -> list[dict[str, Any]]:
    """The datasets of ``page`` whose id is not in ``seen`` (then added to it)."""
    new = []
    for dataset in page:
        if dataset["id"] not in seen:
            seen.add(dataset["id"])
            new.append(dataset)
    return new


def _job_objects(job_id: str) -> tuple[list[str], set[str]]:
    """Ids and guids of the objects a job has already, oldest first."""
    rows = (model.Session.query(HarvestObject.id, HarvestObject.guid)
            .filter(HarvestObject.harvest_job_id == job_id)
            .order_by(HarvestObject.gathered).all())
    return [object_id for object_id, _ in rows], {guid for _, guid in rows if guid}


def _next_start(start: int, page_length: int, count: Optional[int]) -> int:
    """Offset of the next search page.

    Normally ``start + 100``. A remote whose ``ckan.search.rows_max`` is below 100
    returns shorter pages while its ``count`` says more remain: then advance by
    what was received, or datasets would be skipped.
    """
    if page_length < SEARCH_ROWS and count is not None and start + page_length < count:
        return start + page_length
    return start + SEARCH_ROWS
