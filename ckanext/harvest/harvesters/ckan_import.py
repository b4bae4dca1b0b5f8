"""The steps of the CKAN harvester's import that adapt a remote dataset to this site.

:class:`ImportStepsMixin` gives ``CKANHarvester`` its methods that, before the
dataset is written, map the remote groups (``remote_groups``) and organization
(``remote_orgs``) to local ones, creating them from the remote's
``group_show``/``organization_show`` in ``create`` mode, and add the source's
``default_tags``, ``default_groups`` and ``default_extras``. They keep their
names on the class, so subclasses override them as before (``_get_group``,
``_get_organization`` ...).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional, cast
from urllib.parse import urlencode

from ckan import model
from ckan.plugins import toolkit
from ckan.types import Context
from sqlalchemy.exc import IntegrityError

from ckanext.harvest.harvesters.ckan_config import show_default_group
from ckanext.harvest.harvesters.ckan_http import (
    ContentFetchError,
    ContentNotFoundError,
    RemoteResourceError,
    RemoteResourceNotFoundError,
    action_result,
    parse_json,
)
from ckanext.harvest.model import HarvestJob, HarvestObject, HarvestSource

__all__ = ["ImportStepsMixin", "source_of"]

# The harvester's logger: ``ckan.harvest.log_scope`` selects it by that name.
log = logging.getLogger("ckanext.harvest.harvesters.ckanharvester")

ONLY_LOCAL = "only_local"
CREATE = "create"
REMOTE_MODES = (ONLY_LOCAL, CREATE)
GROUP_DROP_KEYS = ("packages", "created", "users", "groups", "tags", "extras",
                   "display_name")
ORG_DROP_KEYS = GROUP_DROP_KEYS + ("type",)


def source_of(harvest_job: Optional[HarvestJob]) -> HarvestSource:
    """The source of a job (every job the framework runs has one)."""
    if harvest_job is None or harvest_job.source is None:
        raise ValueError("Harvest job without a source")
    return harvest_job.source


class ImportStepsMixin:
    """Groups, organization and defaults of a remote dataset (see the module doc)."""

    config: Optional[dict[str, Any]]
    #: The job of the object being imported, and the one of ``_lookup_cache``.
    _current_job_id: Optional[str] = None
    _cached_job_id: Optional[str] = None
    _lookup_cache: dict[Any, Any]

    if TYPE_CHECKING:  # provided by CKANHarvester and HarvesterBase
        def _get_user_name(self) -> str: ...
        def _get_content(self, url: str) -> str: ...
        def _get_action_api_offset(self) -> str: ...

    def _context(self) -> Context:
        return cast(Context, {
            "model": model, "session": model.Session, "user": self._get_user_name(),
        })

    def _source_url(self, harvest_object: HarvestObject) -> str:
        return source_of(harvest_object.job).url.rstrip("/")

    def _add_default_tags(self, package_dict: dict[str, Any]) -> None:
        default_tags = (self.config or {}).get("default_tags", [])
        if not default_tags:
            return
        tags = package_dict.setdefault("tags", [])
        for tag in default_tags:
            if tag not in tags:
                tags.append(tag)

    # --- groups ------------------------------------------------------------------

    def _set_groups(self, package_dict: dict[str, Any], harvest_object: HarvestObject) -> None:
        """Map the remote groups to local ones (``remote_groups``), or drop them."""
        self._current_job_id = harvest_object.harvest_job_id
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
        """The local group with the remote group's id, else its name (id and name)."""
        for key in ("id", "name"):
            if remote_group.get(key):
                local = self._local_group(remote_group[key], organization=False)
                if local is not None:
                    return local
        return None

    def _local_group(self, name_or_id: str, organization: bool) -> Optional[dict[str, Any]]:
        """Id and name of a local group or organization, looked up once per job.

        A direct lookup: ``group_show``/``organization_show`` would also count
        the group's datasets with a search, for every harvested dataset.
        """
        cache = self._job_cache()
        key = ("organization" if organization else "group", name_or_id)
        if key not in cache:
            group = model.Group.get(name_or_id)
            if group is None or bool(group.is_organization) != organization:
                return None  # not cached: it may be created by this job
            cache[key] = {"id": group.id, "name": group.name}
        return cache[key]

    def _job_cache(self) -> dict[Any, Any]:
        """Lookups valid for the job being imported (emptied when the job changes)."""
        current = self._current_job_id
        if current is None:  # not importing a job: nothing to share
            return {}
        if self._cached_job_id != current:
            self._lookup_cache = {}
            self._cached_job_id = current
        return self._lookup_cache

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
        try:
            created = toolkit.get_action("group_create")(self._context(), group)
        except (toolkit.ValidationError, IntegrityError):
            # Created meanwhile by another consumer importing the same job?
            model.Session.rollback()
            existing = self._find_local_group(remote_group)
            if existing is None:
                raise
            return existing
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
            result = action_result(parse_json(self._get_content(url), what), what)
        except ContentNotFoundError as e:
            raise RemoteResourceNotFoundError(message) from e
        except (ContentFetchError, ValueError) as e:
            raise RemoteResourceError(message) from e
        if not isinstance(result, dict):
            raise RemoteResourceError(message) from ValueError(
                "The answer of %s has no object as result" % url)
        return result

    # --- organization ------------------------------------------------------------

    def _owner_org(self, package_dict: dict[str, Any], harvest_object: HarvestObject) -> Any:
        """The remote organization mapped locally (``remote_orgs``), else the source's."""
        # The source dataset's row: a package_show here would also compute the
        # source's status for every imported dataset (half the import time).
        self._current_job_id = harvest_object.harvest_job_id
        cache = self._job_cache()
        if "source organization" not in cache:
            source_package = model.Package.get(source_of(harvest_object.job).id)
            cache["source organization"] = source_package.owner_org if source_package else None
        local_org = cache["source organization"]
        mode = (self.config or {}).get("remote_orgs")
        remote_org = package_dict.get("owner_org")
        if mode not in REMOTE_MODES or not remote_org:
            return local_org
        return self._local_org_id(remote_org, mode, harvest_object) or local_org

    def _local_org_id(
        self, remote_org: str, mode: str, harvest_object: HarvestObject
    ) -> Optional[str]:
        local = self._local_group(remote_org, organization=True)
        if local is not None:
            return local["id"]
        log.info("Organization %s is not available locally", remote_org)
        if mode != CREATE:
            return None
        missing = self._job_cache().setdefault("missing remote organizations", set())
        if remote_org in missing:
            return None
        try:
            org = self._get_organization(self._source_url(harvest_object), remote_org)
            for key in ORG_DROP_KEYS:
                org.pop(key, None)
            created = toolkit.get_action("organization_create")(self._context(), org)
        except (RemoteResourceNotFoundError, toolkit.ValidationError, IntegrityError):
            # Created meanwhile by another consumer importing the same job?
            model.Session.rollback()
            local = self._local_group(remote_org, organization=True)
            if local is not None:
                return local["id"]
            log.error("Could not get remote org %s", remote_org)
            missing.add(remote_org)
            return None
        except RemoteResourceError as e:
            raise RemoteResourceError("%s %s: %s" % (e, remote_org, e.__cause__)) from e
        log.info("Organization %s has been newly created", created["name"])
        return created["id"]

    # --- defaults ----------------------------------------------------------------

    def _add_default_groups(self, package_dict: dict[str, Any]) -> None:
        config = self.config or {}
        if not config.get("default_groups"):
            return
        group_dicts = config.get("default_group_dicts")
        if group_dicts is None:  # configuration stored without validate_config
            group_dicts = [show_default_group(self._context(), name)
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


def _placeholders(
    package_dict: dict[str, Any], harvest_object: HarvestObject
) -> dict[str, Any]:
    """Values available to ``default_extras`` strings, e.g. ``{dataset_id}``."""
    job = harvest_object.job
    source = source_of(job)
    assert job is not None
    return {
        "harvest_source_id": source.id,
        "harvest_source_url": source.url.strip("/"),
        "harvest_source_title": source.title,
        "harvest_job_id": job.id,
        "harvest_object_id": harvest_object.id,
        "dataset_id": package_dict["id"],
    }
