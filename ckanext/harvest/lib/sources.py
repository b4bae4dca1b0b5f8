"""Harvest sources: the ``harvest_source`` side of source datasets, status, clearing."""
from __future__ import annotations

import json
import logging
from typing import Any, Optional

import sqlalchemy as sa
from ckan import logic as ckan_logic
from ckan import model
from ckan.lib.search import SearchIndexError
from ckan.lib.search.common import make_connection
from ckan.lib.search.index import PackageSearchIndex
from ckan.plugins import toolkit
from ckan.types import Context

from ckanext.harvest import options
from ckanext.harvest.constants import DATASET_TYPE_NAME
from ckanext.harvest.lib import schedule
from ckanext.harvest.model import (
    Frequency,
    HarvestJob,
    HarvestObject,
    HarvestSource,
    JobStatus,
    utcnow,
)

log = logging.getLogger(__name__)

_COPIED_ON_CREATE = (
    "active", "title", "description", "user_id", "publisher_id", "config", "frequency",
)
_COPIED_ON_UPDATE = ("title", "description", "user_id", "publisher_id", "frequency")


def get_source_or_404(source_id: Any) -> HarvestSource:
    """Return the ``harvest_source`` row, or raise ``ObjectNotFound``."""
    source = HarvestSource.get(source_id) if source_id else None
    if source is None:
        raise toolkit.ObjectNotFound("Harvest source %s does not exist" % source_id)
    return source


def create_source_object(data: dict[str, Any]) -> HarvestSource:
    """Add the ``harvest_source`` row of a newly created source dataset."""
    source = HarvestSource(
        id=data["id"], url=data["url"].strip(), type=data["source_type"]
    )
    for field in _COPIED_ON_CREATE:
        if data.get(field) is not None:
            setattr(source, field, data[field])
    source.active = data.get("state") != "deleted"
    schedule.update_next_run(source, data, utcnow())
    source.add()
    # Visible to the package_show that package_create runs before committing.
    model.Session.flush()
    return source


def update_source_object(data: dict[str, Any]) -> HarvestSource:
    """Copy an updated source dataset onto its ``harvest_source`` row."""
    source = HarvestSource.get(data["id"])
    if source is None:
        raise toolkit.ObjectNotFound("Harvest source %s does not exist" % data["id"])
    if data.get("url") is not None:
        source.url = data["url"].strip()
    for field in _COPIED_ON_UPDATE:
        if data.get(field) is not None:
            setattr(source, field, data[field])
    if "source_type" in data:
        source.type = data["source_type"]
    if "config" in data:
        source.config = data["config"]
    if "state" in data:
        source.active = data["state"] == "active"
    schedule.update_next_run(source, data, utcnow())
    source.add()
    if not source.active:
        abort_new_jobs(source.id, commit=False)
    _forget_removed_extras(source.id)
    return source


def _forget_removed_extras(package_id: str) -> None:
    """Reload the extras of an updated source dataset on CKAN 2.11.

    There extras are rows in a collection of the package. One that the update
    deleted (an emptied ``schedule``) stays in the collection already loaded
    in the session, which does not expire on commit, so a later reader in the
    same session (``harvest_jobs_run`` after a patch) would still see it.
    CKAN 2.12 keeps extras in a column of the package: nothing to do.
    """
    if not hasattr(model.Package, "_extras"):
        return
    package = model.Session.get(model.Package, package_id)
    if package is not None:
        model.Session.flush()
        model.Session.expire(package, ["_extras"])


def deactivate_source(source_id: str) -> None:
    """Mark a deleted source dataset's row inactive and abort its ``New`` jobs."""
    source = HarvestSource.get(source_id)
    if source is None:
        raise toolkit.ObjectNotFound("Harvest source %s does not exist" % source_id)
    source.active = False
    source.save()
    abort_new_jobs(source_id, commit=True)


def abort_new_jobs(source_id: str, commit: bool) -> None:
    """Set every ``New`` job of the source to ``Aborted``."""
    jobs = model.Session.query(HarvestJob).filter(
        HarvestJob.source_id == source_id, HarvestJob.status == JobStatus.NEW.value
    )
    for job in jobs:
        job.status = JobStatus.ABORTED.value
        job.add()
    if commit:
        model.Session.commit()


def source_status(source_id: str) -> dict[str, Any]:
    """Return ``{job_count, last_job, total_datasets}`` of a source.

    ``last_job`` is the ``HarvestJob`` (or None): the action dictizes it.
    """
    source = get_source_or_404(source_id)
    jobs = model.Session.query(HarvestJob).filter(HarvestJob.source_id == source.id)
    last_job = jobs.order_by(HarvestJob.created.desc()).first()
    # A semi-join, not a join and a distinct count: a source has many objects.
    harvested = (
        model.Session.query(HarvestObject.id)
        .filter(HarvestObject.package_id == model.Package.id)
        .filter(HarvestObject.harvest_source_id == source.id)
        .filter(HarvestObject.current.is_(True))
        .exists()
    )
    total = (
        model.Session.query(sa.func.count(model.Package.id))
        .filter(harvested)
        .filter(model.Package.state == "active")
        .filter(model.Package.private.is_(False))
        .scalar()
    )
    return {
        "job_count": jobs.count(),
        "last_job": last_job,
        "total_datasets": total or 0,
    }


def index_clear(source_id: str) -> None:
    """Remove the datasets of a source from the search index."""
    query = ' +harvest_source_id:"{}" +site_id:"{}" '.format(
        source_id, toolkit.config.get(options.SITE_ID)
    )
    commit = toolkit.asbool(toolkit.config.get(options.SOLR_COMMIT, "true"))
    try:
        conn = make_connection()
        conn.delete(q=query, commit=commit)
    except Exception as e:
        log.exception("Could not clear the search index of source %s", source_id)
        raise SearchIndexError(e) from e


def _reindex_legacy(package_id: str, context: Context) -> None:
    """CKAN 2.11: index the raw dataset dict; the indexer validates it itself."""
    show_context = {"ignore_auth": True, "validate": False, "use_cache": False}
    package = toolkit.get_action("package_show")(show_context, {"id": package_id})
    try:
        config = json.loads(package.get("config") or "{}")
    except ValueError:
        config = {}
    for key in config if isinstance(config, dict) else ():
        package.pop(key, None)
    PackageSearchIndex().index_package(
        package, defer_commit=context.get("defer_commit", False)
    )


def reindex_source(source_id: str, context: Context) -> None:
    """Re-index the source dataset itself (with its status).

    CKAN 2.12 indexes a dataset with both its default-schema and its
    custom-schema (shown) dicts: its own helper builds them.
    """
    package = model.Package.get(source_id)
    if package is None:
        raise toolkit.ObjectNotFound("Harvest source %s does not exist" % source_id)
    index_update_package = getattr(ckan_logic, "index_update_package", None)
    if index_update_package is None:
        _reindex_legacy(package.id, context)
        return
    index_update_package(
        {"ignore_auth": True}, package.id, context.get("defer_commit", False)
    )


def active_source_ids() -> list[str]:
    """Ids of every active source dataset."""
    rows = model.Session.query(model.Package.id).filter(
        model.Package.type == DATASET_TYPE_NAME, model.Package.state == "active"
    )
    return [package_id for (package_id,) in rows]


def _user_org_ids(user: model.User) -> list[str]:
    return [org.id for org in user.get_groups("organization")]


def visible_sources_query(user_name: Any) -> Any:
    """Harvest sources the user may read (quirk Q6 decision).

    Anonymous: public active sources; members: also their organisations'
    sources; sysadmins: all.
    """
    query = model.Session.query(HarvestSource).join(
        model.Package, model.Package.id == HarvestSource.id
    )
    user = model.User.get(user_name) if user_name else None
    if user is not None and user.sysadmin:
        return query
    public = sa.and_(model.Package.private.is_(False), model.Package.state == "active")
    org_ids = _user_org_ids(user) if user is not None else []
    if org_ids:
        return query.filter(
            sa.or_(
                public,
                sa.and_(
                    model.Package.owner_org.in_(org_ids),
                    model.Package.state != "deleted",
                ),
            )
        )
    return query.filter(public)


def list_sources(
    user_name: Any, data_dict: dict[str, Any], limit: Optional[int], offset: int = 0
) -> list[HarvestSource]:
    """Sources visible to the user, filtered as ``harvest_source_list`` says.

    :param limit: at most this many (``ckan.harvest.harvest_source_limit``)
    :param offset: skip this many first
    """
    query = visible_sources_query(user_name)
    if data_dict.get("organization_id"):
        query = query.filter(model.Package.owner_org == data_dict["organization_id"])
    if toolkit.asbool(data_dict.get("only_active", False)):
        query = query.filter(HarvestSource.active.is_(True))
    if toolkit.asbool(data_dict.get("only_to_run", False)):
        query = query.filter(HarvestSource.frequency != Frequency.MANUAL.value).filter(
            sa.or_(
                HarvestSource.next_run.is_(None),
                HarvestSource.next_run <= utcnow(),
            )
        )
    query = query.order_by(HarvestSource.created.desc(), HarvestSource.id)
    return query.offset(offset).limit(limit).all()
