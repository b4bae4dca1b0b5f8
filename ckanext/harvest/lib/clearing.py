"""Clearing harvest sources: their datasets, and their job history."""
from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from ckan import model

from ckanext.harvest.model import (
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
    HarvestObjectExtra,
    JobStatus,
)

log = logging.getLogger(__name__)

# Rows referring to a package or resource without a foreign key (``member`` is
# polymorphic) or in tables of older CKANs; skipped when the table is absent.
# Tables with a foreign key to ``package`` / ``resource`` are found in the
# database itself, so new CKAN tables (e.g. ``package_member``) are covered.
_PACKAGE_CHILDREN = (
    ("member", "table_id"),
    ("package_tag_revision", "package_id"),
    ("member_revision", "table_id"),
    ("package_extra_revision", "package_id"),
    ("package_relationship_revision", "subject_package_id"),
    ("package_relationship_revision", "object_package_id"),
    ("package_revision", "id"),
)
_RESOURCE_CHILDREN = (("resource_revision", "id"),)

_REFERENCING = sa.text(
    "SELECT cl.relname, att.attname FROM pg_constraint c"
    " JOIN pg_class cl ON cl.oid = c.conrelid"
    " JOIN pg_attribute att ON att.attrelid = c.conrelid AND att.attnum = c.conkey[1]"
    " WHERE c.contype = 'f' AND c.confrelid = CAST(:target AS regclass)"
)


def _referencing(conn: Any, target: str) -> list[tuple[str, str]]:
    """(table, column) of the foreign keys pointing at ``target``, harvest ones aside."""
    rows = conn.execute(_REFERENCING, {"target": target})
    return sorted(
        (table, column) for table, column in rows
        if not table.startswith("harvest_") and table != target
    )


def _source_package_ids(conn: Any, source_id: str) -> list[str]:
    rows = conn.execute(
        sa.text(
            "SELECT DISTINCT package_id FROM harvest_object"
            " WHERE harvest_source_id = :source AND package_id IS NOT NULL"
        ),
        {"source": source_id},
    )
    return [package_id for (package_id,) in rows]


def _delete_where_in(conn: Any, table: str, column: str, ids: list[str]) -> None:
    statement = sa.text(
        'DELETE FROM "{}" WHERE "{}" IN :ids'.format(table, column)
    ).bindparams(sa.bindparam("ids", expanding=True))
    conn.execute(statement, {"ids": ids})


def _delete_children(conn: Any, children: Any, ids: list[str], skip: str = "") -> None:
    tables = set(sa.inspect(conn).get_table_names())
    for table, column in children:
        if table in tables and table != skip:
            _delete_where_in(conn, table, column, ids)


def _purge_packages(conn: Any, package_ids: list[str]) -> None:
    resource_ids = [
        rid for (rid,) in conn.execute(
            sa.text("SELECT id FROM resource WHERE package_id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": package_ids},
        )
    ]
    if resource_ids:
        children = _referencing(conn, "resource") + list(_RESOURCE_CHILDREN)
        _delete_children(conn, children, resource_ids)
        _delete_where_in(conn, "resource", "id", resource_ids)
    children = _referencing(conn, "package") + list(_PACKAGE_CHILDREN)
    _delete_children(conn, children, package_ids, skip="resource")
    _delete_where_in(conn, "package", "id", package_ids)


def _delete_source_harvest_rows(conn: Any, source_id: str) -> None:
    params = {"source": source_id}
    objects = "SELECT id FROM harvest_object WHERE harvest_source_id = :source"
    jobs = "SELECT id FROM harvest_job WHERE source_id = :source"
    for statement in (
        "DELETE FROM harvest_object_error WHERE harvest_object_id IN (%s)" % objects,
        "DELETE FROM harvest_object_extra WHERE harvest_object_id IN (%s)" % objects,
        "DELETE FROM harvest_object WHERE harvest_source_id = :source",
        "DELETE FROM harvest_gather_error WHERE harvest_job_id IN (%s)" % jobs,
        "DELETE FROM harvest_job WHERE source_id = :source",
    ):
        conn.execute(sa.text(statement), params)


def clear_source(source_id: str) -> int:
    """Hard-delete the datasets harvested by a source and its whole history.

    Only this source's datasets are deleted (the original deleted every
    package in state ``to_delete``). The source dataset and its
    ``harvest_source`` row stay.

    :returns: the number of datasets deleted
    """
    model.Session.remove()
    with model.meta.engine.begin() as conn:
        package_ids = [
            pid for pid in _source_package_ids(conn, source_id) if pid != source_id
        ]
        _delete_source_harvest_rows(conn, source_id)
        if package_ids:
            _purge_packages(conn, package_ids)
    log.info("Cleared source %s: %d datasets deleted", source_id, len(package_ids))
    return len(package_ids)


def _delete_objects(object_ids: Any) -> None:
    session = model.Session
    for entity, column in (
        (HarvestObjectError, HarvestObjectError.harvest_object_id),
        (HarvestObjectExtra, HarvestObjectExtra.harvest_object_id),
        (HarvestObject, HarvestObject.id),
    ):
        session.query(entity).filter(column.in_(object_ids)).delete(
            synchronize_session=False
        )


def _delete_jobs(job_ids: Any) -> None:
    session = model.Session
    session.query(HarvestGatherError).filter(
        HarvestGatherError.harvest_job_id.in_(job_ids)
    ).delete(synchronize_session=False)
    session.query(HarvestJob).filter(HarvestJob.id.in_(job_ids)).delete(
        synchronize_session=False
    )


def clear_job_history(source_id: str, keep_current: bool) -> None:
    """Delete the jobs, objects and errors of a source; datasets are kept.

    With ``keep_current``, running jobs and jobs that still hold a current
    object are kept, with their current objects.
    """
    session = model.Session
    objects = session.query(HarvestObject.id).filter(
        HarvestObject.harvest_source_id == source_id
    )
    jobs = session.query(HarvestJob.id).filter(HarvestJob.source_id == source_id)
    if keep_current:
        jobs_with_current = session.query(HarvestObject.harvest_job_id).filter(
            HarvestObject.harvest_source_id == source_id,
            HarvestObject.current.is_(True),
            HarvestObject.harvest_job_id.isnot(None),
        )
        running = session.query(HarvestJob.id).filter(
            HarvestJob.source_id == source_id,
            HarvestJob.status == JobStatus.RUNNING.value,
        )
        objects = objects.filter(
            HarvestObject.current.isnot(True),
            HarvestObject.harvest_job_id.notin_(running.scalar_subquery()),
            HarvestObject.harvest_job_id.notin_(jobs_with_current.scalar_subquery()),
        )
    _delete_objects([object_id for (object_id,) in objects])
    if keep_current:
        remaining = session.query(HarvestObject.harvest_job_id).filter(
            HarvestObject.harvest_source_id == source_id,
            HarvestObject.harvest_job_id.isnot(None),
        )
        jobs = jobs.filter(
            HarvestJob.status != JobStatus.RUNNING.value,
            HarvestJob.id.notin_(remaining.scalar_subquery()),
        )
    _delete_jobs([job_id for (job_id,) in jobs])
    session.commit()
