"""Counts over the harvest tables: job statistics, error summaries, source status."""
from __future__ import annotations

from typing import Any, Sequence

from ckan import model
from sqlalchemy import func

from ckanext.harvest.model import (
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
    JobStatus,
    ReportStatus,
)

__all__ = [
    "source_status_summary",
    "source_status_summaries",
    "job_stats",
    "jobs_stats",
    "report_counts",
    "has_errors",
    "object_error_summary",
    "gather_error_summary",
]


def source_status_summary(source_id: str) -> dict[str, Any]:
    """The legacy status summary of a source (job count, next and last harvest)."""
    return source_status_summaries([source_id])[source_id]


def source_status_summaries(source_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The legacy status summaries of several sources, in two aggregate queries.

    :returns: ``{source id: summary}`` for every id of ``source_ids``
    """
    ids = list(dict.fromkeys(source_ids))
    counts = {
        source_id: (job_count, has_new)
        for source_id, job_count, has_new in model.Session.query(
            HarvestJob.source_id,
            func.count(HarvestJob.id),
            func.bool_or(HarvestJob.status == JobStatus.NEW.value),
        )
        .filter(HarvestJob.source_id.in_(ids))
        .group_by(HarvestJob.source_id)
    } if ids else {}
    # The latest finished job of each source (PostgreSQL's DISTINCT ON).
    last_finished = dict(
        model.Session.query(HarvestJob.source_id, HarvestJob.gather_finished)
        .filter(HarvestJob.source_id.in_([i for i in ids if i in counts]))
        .filter(HarvestJob.status == JobStatus.FINISHED.value)
        .distinct(HarvestJob.source_id)
        .order_by(HarvestJob.source_id, HarvestJob.created.desc())
    ) if counts else {}
    return {source_id: _summary(counts.get(source_id), source_id in last_finished,
                                last_finished.get(source_id)) for source_id in ids}


def _summary(counts: Any, finished: bool, gather_finished: Any) -> dict[str, Any]:
    if not counts:
        return {
            "job_count": 0, "next_harvest": "", "last_harvest_request": "",
            "msg": "No jobs yet",
        }
    job_count, has_new = counts
    return {
        "job_count": job_count,
        "next_harvest": "Scheduled" if has_new else "Not yet scheduled",
        "last_harvest_request": str(gather_finished) if finished else "Not yet harvested",
    }


def job_stats(job_id: str) -> dict[Any, int]:
    """The statistics of a job (README §4 of the spec).

    Counts by ``report_status`` (a ``None`` key for unprocessed objects); the
    number of objects with errors replaces ``errored`` when positive; gather
    errors are added to ``errored``.
    """
    return jobs_stats([job_id])[job_id]


def jobs_stats(job_ids: Sequence[str]) -> dict[str, dict[Any, int]]:
    """The statistics of several jobs (as :func:`job_stats`), in three
    aggregate queries whatever the number of jobs and objects.

    :returns: ``{job id: stats}`` for every id of ``job_ids``
    """
    result: dict[str, dict[Any, int]] = {
        job_id: {status.value: 0 for status in ReportStatus} for job_id in job_ids
    }
    if not result:
        return result
    ids = list(result)
    by_status = (
        model.Session.query(
            HarvestObject.harvest_job_id, HarvestObject.report_status,
            func.count(HarvestObject.id),
        )
        .filter(HarvestObject.harvest_job_id.in_(ids))
        .group_by(HarvestObject.harvest_job_id, HarvestObject.report_status)
    )
    for job_id, status, count in by_status:
        result[job_id][status] = count
    objects_with_errors = (
        model.Session.query(HarvestObject.harvest_job_id, func.count(HarvestObject.id))
        .filter(HarvestObject.harvest_job_id.in_(ids))
        .filter(has_errors())
        .group_by(HarvestObject.harvest_job_id)
    )
    for job_id, count in objects_with_errors:
        if count:
            result[job_id][ReportStatus.ERRORED.value] = count
    gather_errors = (
        model.Session.query(HarvestGatherError.harvest_job_id, func.count(HarvestGatherError.id))
        .filter(HarvestGatherError.harvest_job_id.in_(ids))
        .group_by(HarvestGatherError.harvest_job_id)
    )
    for job_id, count in gather_errors:
        result[job_id][ReportStatus.ERRORED.value] += count
    return result


def has_errors() -> Any:
    """The condition "this harvest object has errors" (a semi-join: much
    cheaper than a join and a distinct count on a job of many objects)."""
    return (
        model.Session.query(HarvestObjectError.id)
        .filter(HarvestObjectError.harvest_object_id == HarvestObject.id)
        .exists()
    )


def report_counts(job_id: str) -> dict[str, int]:
    """The lengths of the two lists of a job report: ``{'objects': objects
    with errors, 'gather': gather errors}``."""
    objects = (
        model.Session.query(func.count(HarvestObject.id))
        .filter(HarvestObject.harvest_job_id == job_id)
        .filter(has_errors())
        .scalar()
    )
    gather = (
        model.Session.query(func.count(HarvestGatherError.id))
        .filter(HarvestGatherError.harvest_job_id == job_id)
        .scalar()
    )
    return {"objects": int(objects or 0), "gather": int(gather or 0)}


def _error_summary(query: Any, message: Any, limit: int) -> list[dict[str, Any]]:
    rows = (
        query.with_entities(message, func.count(message).label("error_count"))
        .group_by(message)
        .order_by(func.count(message).desc())
        .limit(limit)
    )
    return [{"message": text, "error_count": count} for text, count in rows]


def object_error_summary(job_id: str, limit: int) -> list[dict[str, Any]]:
    """Object errors of a job grouped by message, most frequent first."""
    query = (
        model.Session.query(HarvestObjectError)
        .join(HarvestObject, HarvestObject.id == HarvestObjectError.harvest_object_id)
        .filter(HarvestObject.harvest_job_id == job_id)
    )
    return _error_summary(query, HarvestObjectError.message, limit)


def gather_error_summary(job_id: str, limit: int) -> list[dict[str, Any]]:
    """Gather errors of a job grouped by message, most frequent first."""
    query = model.Session.query(HarvestGatherError).filter(
        HarvestGatherError.harvest_job_id == job_id
    )
    return _error_summary(query, HarvestGatherError.message, limit)
