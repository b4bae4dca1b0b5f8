"""Dictization of harvest sources, jobs, objects, log records and errors.

The counts (job statistics, error summaries, source status) are queried by
:mod:`ckanext.harvest.lib.stats`.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable

from ckan import model
from ckan.plugins import toolkit
from ckan.types import Context

from ckanext.harvest.lib import stats
from ckanext.harvest.model import HarvestJob, HarvestLog, HarvestObject, HarvestSource

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
            Context(context), {"id": source.id}
        )
        out["last_job_status"] = status["last_job"]
    return out


def _get_source_status(source: HarvestSource, context: Context) -> dict[str, Any]:
    """The legacy status summary of a source (job count, next and last harvest)."""
    return stats.source_status_summary(source.id)


def harvest_job_dictize(job: HarvestJob, context: Context) -> dict[str, Any]:
    """Return a job as a dict with ``stats`` and error summaries (unless disabled)."""
    out = job.as_dict()
    if context.get("return_stats", True):
        out["stats"] = stats.job_stats(job.id)
    if context.get("return_error_summary", True):
        limit = context.get("error_summmary_limit", DEFAULT_ERROR_SUMMARY_LIMIT)
        out["object_error_summary"] = stats.object_error_summary(job.id, limit)
        out["gather_error_summary"] = stats.gather_error_summary(job.id, limit)
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
