"""Dictization of harvest sources, jobs, objects, log records and errors."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable

from ckan import model
from ckan.plugins import toolkit
from ckan.types import Context
from sqlalchemy import distinct, func

from ckanext.harvest.model import (
    HarvestGatherError,
    HarvestJob,
    HarvestLog,
    HarvestObject,
    HarvestObjectError,
    HarvestSource,
    JobStatus,
    ReportStatus,
)

DEFAULT_ERROR_SUMMARY_LIMIT = 20


def harvest_source_dictize(
    source: HarvestSource, context: Context, last_job_status: bool = False
) -> dict[str, Any]:
    """Return the ``harvest_source`` row as a dict, with the legacy ``status``."""
    out = source.as_dict()
    publisher = model.Group.get(source.publisher_id) if source.publisher_id else None
    out["publisher_title"] = publisher.title if publisher else ""
    out["status"] = _get_source_status(source, context)
    if last_job_status:
        status = toolkit.get_action("harvest_source_show_status")(
            dict(context), {"id": source.id}
        )
        out["last_job_status"] = status["last_job"]
    return out


def _get_source_status(source: HarvestSource, context: Context) -> dict[str, Any]:
    """The legacy status summary of a source (job count, next and last harvest)."""
    jobs = model.Session.query(HarvestJob).filter(HarvestJob.source_id == source.id)
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


def harvest_job_dictize(job: HarvestJob, context: Context) -> dict[str, Any]:
    """Return a job as a dict with ``stats`` and error summaries (unless disabled)."""
    out = job.as_dict()
    if context.get("return_stats", True):
        out["stats"] = job_stats(job.id)
    if context.get("return_error_summary", True):
        limit = context.get("error_summmary_limit", DEFAULT_ERROR_SUMMARY_LIMIT)
        out["object_error_summary"] = object_error_summary(job.id, limit)
        out["gather_error_summary"] = gather_error_summary(job.id, limit)
    return out


def harvest_object_dictize(obj: HarvestObject, context: Context) -> dict[str, Any]:
    """Return an object as a dict with its errors and extras."""
    out = obj.as_dict()
    out["source"] = obj.harvest_source_id
    out["job"] = obj.harvest_job_id
    if obj.package:
        out["package"] = obj.package.id
    out["errors"] = [error.as_dict() for error in obj.errors]
    out["extras"] = {extra.key: extra.value for extra in obj.extras}
    return out


def harvest_log_dictize(obj: HarvestLog, context: Context) -> dict[str, Any]:
    """Return a log record as ``{content, level, created}``."""
    out = obj.as_dict()
    out.pop("id", None)
    return out


def harvest_error_dictize(rows: Iterable[Any], context: Context) -> list[dict[str, Any]]:
    """Return error rows as dicts."""
    return [OrderedDict(row.as_dict()) for row in rows]
