"""Detaching a source's datasets: they become ordinary local datasets.

A detached dataset keeps its id, name, content and resources, loses its harvest
link (no harvest object points at it any more, so neither ``package_show`` nor
the search index carry ``harvest_object_id``, ``harvest_source_id`` or
``harvest_source_title``) and its stored ``harvest_*`` extras, and is never
written again by any job of any source.

How it is remembered, without a new table or column: each detached dataset gets
one *marker*, a ``harvest_object`` row that belongs to no job and no source
(``harvest_job_id`` and ``harvest_source_id`` NULL, ``current`` false, state
``COMPLETE``) with ``package_id`` set, and a ``harvest_object_extra`` row
``detached_from_source`` = the source's id. Belonging to no source, markers are
out of reach of everything that works per source (clearing, job history, the
source's deletion); the foreign key on ``package_id`` cascades, so purging the
dataset drops its marker. The objects that linked the dataset to sources keep
their history but lose their ``package_id``: clearing any of those sources no
longer finds the dataset.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import sqlalchemy as sa
from ckan import logic as ckan_logic
from ckan import model
from ckan.lib.search.index import PackageSearchIndex
from ckan.model.types import make_uuid
from ckan.plugins import toolkit

from ckanext.harvest.model import (
    HarvestJob,
    HarvestObject,
    HarvestObjectExtra,
    JobStatus,
    ObjectState,
    utcnow,
)

log = logging.getLogger(__name__)

#: The ``harvest_object_extra`` key of a detach marker; its value is the source id.
DETACHED_KEY = "detached_from_source"
#: Stored dataset extras with this prefix are harvest extras: removed on detach.
HARVEST_EXTRA_PREFIX = "harvest_"


class SourceBusy(Exception):
    """The source has a running job: detaching now could race with its imports."""


def detached_source(package_id: Any) -> Any:
    """SQL scalar: the id of the source the dataset ``package_id`` (a value or a
    column) was detached from, NULL when it is not detached."""
    return (
        sa.select(HarvestObjectExtra.value)
        .join(HarvestObject, HarvestObject.id == HarvestObjectExtra.harvest_object_id)
        .where(HarvestObject.package_id == package_id,
               HarvestObjectExtra.key == DETACHED_KEY)
        .limit(1)
        .scalar_subquery()
    )


def detached_from(package_id: Optional[str]) -> Optional[str]:
    """The id of the source the dataset was detached from, or None when it is
    not detached (one indexed lookup).

    Harvesters that write datasets themselves (not through
    ``HarvesterBase._create_or_update_package``) should skip a dataset for
    which this is not None.
    """
    if not package_id:
        return None
    return model.Session.execute(sa.select(detached_source(package_id))).scalar()


def is_detached(package_id: Optional[str]) -> bool:
    """Whether the dataset was detached from its harvest source."""
    return detached_from(package_id) is not None


def source_package_ids(source_id: str) -> list[str]:
    """The datasets a detach of the source takes: those linked to it by one of
    its objects, except the source itself and those whose current object
    belongs to another source."""
    owned_elsewhere = sa.exists().where(
        HarvestObject.package_id == model.Package.id,
        HarvestObject.current.is_(True),
        HarvestObject.harvest_source_id != source_id,
    )
    linked = sa.exists().where(
        HarvestObject.package_id == model.Package.id,
        HarvestObject.harvest_source_id == source_id,
    )
    rows = (
        model.Session.query(model.Package.id)
        .filter(linked, ~owned_elsewhere, model.Package.id != source_id)
        .order_by(model.Package.id)
    )
    return [package_id for (package_id,) in rows]


def _check_not_running(source_id: str) -> None:
    running = model.Session.query(HarvestJob.id).filter(
        HarvestJob.source_id == source_id, HarvestJob.status == JobStatus.RUNNING.value
    ).first()
    if running is not None:
        raise SourceBusy(
            "The source has a running job ({}): stop it or wait until it has "
            "finished, then detach".format(running[0])
        )


def _guids(package_ids: list[str]) -> dict[str, str]:
    """The guid of each dataset's latest object (what the marker records)."""
    rows = (
        model.Session.query(HarvestObject.package_id, HarvestObject.guid)
        .filter(HarvestObject.package_id.in_(package_ids))
        .order_by(HarvestObject.package_id, HarvestObject.current.desc(),
                  HarvestObject.import_finished.desc().nullslast())
    )
    guids: dict[str, str] = {}
    for package_id, guid in rows:
        guids.setdefault(package_id, guid or "")
    return guids


def _unlink(package_ids: list[str]) -> None:
    """Cut every object's link to the datasets (their history stays)."""
    model.Session.query(HarvestObject).filter(
        HarvestObject.package_id.in_(package_ids)
    ).update({"current": False, "package_id": None}, synchronize_session=False)


def _add_markers(source_id: str, package_ids: list[str], guids: dict[str, str]) -> None:
    # Core inserts: the ORM insists that an object has a job or a source.
    now = utcnow()
    objects, extras = [], []
    for package_id in package_ids:
        object_id = make_uuid()
        objects.append({
            "id": object_id, "guid": guids.get(package_id, ""), "current": False,
            "gathered": now, "import_finished": now, "package_id": package_id,
            "state": ObjectState.COMPLETE.value, "retry_times": 0,
        })
        extras.append({"id": make_uuid(), "harvest_object_id": object_id,
                       "key": DETACHED_KEY, "value": source_id})
    model.Session.execute(sa.insert(HarvestObject.__table__), objects)
    model.Session.execute(sa.insert(HarvestObjectExtra.__table__), extras)


def _remove_harvest_extras(package_ids: list[str]) -> None:
    """Drop the stored ``harvest_*`` extras (CKAN 2.11 rows, 2.12 JSON alike)."""
    for package_id in package_ids:
        package = model.Package.get(package_id)
        if package is None:
            continue
        for key in [k for k in package.extras if k.startswith(HARVEST_EXTRA_PREFIX)]:
            del package.extras[key]


def reindex(package_ids: list[str]) -> None:
    """Index the datasets again (one commit at the end)."""
    index_update_package = getattr(ckan_logic, "index_update_package", None)
    index = PackageSearchIndex()
    show_context: Any = {"ignore_auth": True, "validate": False, "use_cache": False}
    for package_id in package_ids:
        if index_update_package is not None:
            index_update_package({"ignore_auth": True}, package_id, True)
        else:  # CKAN 2.11
            package = toolkit.get_action("package_show")(dict(show_context),
                                                          {"id": package_id})
            index.index_package(package, defer_commit=True)
    if package_ids:
        index.commit()


def detach_source(source_id: str) -> int:
    """Detach the datasets of a source (see the module's docstring).

    One transaction for the database, then the datasets are indexed again.

    :returns: the number of datasets detached
    :raises SourceBusy: the source has a running job
    """
    _check_not_running(source_id)
    package_ids = source_package_ids(source_id)
    if not package_ids:
        return 0
    try:
        guids = _guids(package_ids)
        _unlink(package_ids)
        _add_markers(source_id, package_ids, guids)
        _remove_harvest_extras(package_ids)
        model.Session.commit()
    except Exception:
        model.Session.rollback()
        raise
    reindex(package_ids)
    log.info("Detached %d datasets from harvest source %s", len(package_ids), source_id)
    return len(package_ids)
