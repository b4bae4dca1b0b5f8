"""Dictization of harvest sources, jobs, objects, log records and errors.

The counts (job statistics, error summaries, source status) are queried by
:mod:`ckanext.harvest.lib.stats`.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable, Sequence

from ckan import model
from ckan.plugins import toolkit
from ckan.types import Context

from ckanext.harvest.lib import concurrency, stats
from ckanext.harvest.model import HarvestJob, HarvestLog, HarvestObject, HarvestSource, JobStatus

DEFAULT_ERROR_SUMMARY_LIMIT = 20


def harvest_source_dictize(
    source: HarvestSource, context: Context, last_job_status: bool = False
) -> dict[str, Any]:
    """Return the ``harvest_source`` row as a dict, with the legacy ``status``."""
    return harvest_sources_dictize([source], context, last_job_status)[0]


def harvest_sources_dictize(
    sources: Sequence[HarvestSource], context: Context, last_job_status: bool = False
) -> list[dict[str, Any]]:
    """Several sources as :func:`harvest_source_dictize`, their status
    summaries counted together."""
    summaries = stats.source_status_summaries([source.id for source in sources])
    out = []
    for source in sources:
        source_dict = source.as_dict()
        publisher = model.Group.get(source.publisher_id) if source.publisher_id else None
        source_dict["publisher_title"] = publisher.title if publisher else ""
        source_dict["status"] = summaries[source.id]
        if last_job_status:
            status = toolkit.get_action("harvest_source_show_status")(
                Context(context), {"id": source.id}
            )
            source_dict["last_job_status"] = status["last_job"]
        out.append(source_dict)
    return out


def harvest_job_dictize(job: HarvestJob, context: Context) -> dict[str, Any]:
    """Return a job as a dict with ``stats`` and error summaries (unless disabled)."""
    return harvest_jobs_dictize([job], context)[0]


def harvest_jobs_dictize(jobs: Sequence[HarvestJob], context: Context) -> list[dict[str, Any]]:
    """Several jobs as :func:`harvest_job_dictize`, their statistics counted
    together (three aggregate queries, not three per job).

    A job waiting for a slot (``ckan.harvest.max_running_jobs``) also has
    ``waiting_for_slot``: ``{"position": <1 = next to start>, "waiting": <jobs
    waiting>}``; other jobs have no such key."""
    with_stats = context.get("return_stats", True)
    all_stats = stats.jobs_stats([job.id for job in jobs]) if with_stats else {}
    waiting = concurrency.positions(
        [job.id for job in jobs if job.status == JobStatus.NEW.value])
    out = []
    for job in jobs:
        job_dict = job.as_dict()
        if job.id in waiting:
            position, count = waiting[job.id]
            job_dict["waiting_for_slot"] = {"position": position, "waiting": count}
        if with_stats:
            job_dict["stats"] = all_stats[job.id]
        if context.get("return_error_summary", True):
            limit = context.get("error_summmary_limit", DEFAULT_ERROR_SUMMARY_LIMIT)
            job_dict["object_error_summary"] = stats.object_error_summary(job.id, limit)
            job_dict["gather_error_summary"] = stats.gather_error_summary(job.id, limit)
        out.append(job_dict)
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
