"""Counts over the harvest tables: job statistics, error summaries, source status."""
from __future__ import annotations

from typing import Any

from ckan import model
from sqlalchemy import distinct, func

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
    "job_stats",
    "object_error_summary",
    "gather_error_summary",
]


def source_status_summary(source_id: str) -> dict[str, Any]:
    """The legacy status summary of a source (job count, next and last harvest)."""
    jobs = model.Session.query(HarvestJob).filter(HarvestJob.source_id == source_id)
    job_count = jobs.count()
    if not job_count:
        return {
            "job_count": 0, "next_harvest": "", "last_harvest_request": "",
            "msg": "No jobs yet",
        }
    has_new = jobs.filter(HarvestJob.status == JobStatus.NEW.value).count() > 0
    last_finished = (
        jobs.filter(HarvestJob.status == JobStatus.FINISHED.value)
        .order_by(HarvestJob.created.desc())
        .first()
    )
    return {
        "job_count": job_count,
        "next_harvest": "Scheduled" if has_new else "Not yet scheduled",
        "last_harvest_request": (
            str(last_finished.gather_finished) if last_finished else "Not yet harvested"
        ),
    }


def job_stats(job_id: str) -> dict[Any, int]:
    """The statistics of a job (README §4 of the spec).

    Counts by ``report_status`` (a ``None`` key for unprocessed objects); the
    number of objects with errors replaces ``errored`` when positive; gather
    errors are added to ``errored``.
    """
    stats: dict[Any, int] = {status.value: 0 for status in ReportStatus}
    rows = (
        model.Session.query(HarvestObject.report_status, func.count(HarvestObject.id))
        .filter(HarvestObject.harvest_job_id == job_id)
        .group_by(HarvestObject.report_status)
    )
    stats.update({status: count for status, count in rows})
    objects_with_errors = (
        model.Session.query(func.count(distinct(HarvestObject.id)))
        .join(HarvestObjectError, HarvestObjectError.harvest_object_id == HarvestObject.id)
        .filter(HarvestObject.harvest_job_id == job_id)
        .scalar()
    )
    if objects_with_errors:
        stats[ReportStatus.ERRORED.value] = objects_with_errors
    gather_errors = (
        model.Session.query(func.count(HarvestGatherError.id))
        .filter(HarvestGatherError.harvest_job_id == job_id)
        .scalar()
    )
    stats[ReportStatus.ERRORED.value] += gather_errors or 0
    return stats


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
