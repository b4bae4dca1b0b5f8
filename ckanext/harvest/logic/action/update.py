"""Update actions of the harvest API (sources, jobs, objects, scheduling)."""
from __future__ import annotations

import datetime
import logging
from typing import Any

from ckan import model
from ckan.lib.search.index import PackageSearchIndex
from ckan.plugins import toolkit
from ckan.plugins.toolkit import config
from ckan.types import Context, DataDict

from ckanext.harvest.constants import DATASET_TYPE_NAME
from ckanext.harvest.lib import (
    clearing,
    concurrency,
    detaching,
    jobs,
    objects,
    removals,
    sources,
    stalls,
)
from ckanext.harvest.lib.mail import (  # noqa: F401 - public names of this module
    get_mail_extra_vars,
    prepare_error_mail,
    prepare_summary_mail,
    send_error_email,
    send_mail,
    send_status_mail,
    send_summary_email,
)
from ckanext.harvest.logic.action.get import harvest_source_show
from ckanext.harvest.logic.dictization import harvest_job_dictize
from ckanext.harvest.logic.types import SourceDetached, SourceRef
from ckanext.harvest.model import Frequency, HarvestJob
from ckanext.harvest.mq import MessageKey

# ``config`` is read at call time through this module (downstream tests patch
# ``...logic.action.update.config``): the timeout and the status e-mails of
# ``harvest_jobs_run`` follow it.
log = logging.getLogger(__name__)

__all__ = [
    "harvest_source_update",
    "harvest_source_clear",
    "harvest_source_detach",
    "harvest_source_index_clear",
    "harvest_source_job_history_clear",
    "harvest_sources_job_history_clear",
    "harvest_source_reindex",
    "harvest_sources_reindex",
    "harvest_send_job_to_gather_queue",
    "harvest_job_abort",
    "harvest_abort_failed_jobs",
    "harvest_jobs_run",
    "harvest_objects_import",
    "harvest_job_approve_removals",
]

_FREQUENCY_LIFE_SPAN = {
    Frequency.DAILY.value: 1,
    Frequency.WEEKLY.value: 7,
    Frequency.BIWEEKLY.value: 14,
    Frequency.MONTHLY.value: 30,
}
DEFAULT_LIFE_SPAN = 7


def harvest_source_update(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """Update a harvest source (full replacement, like ``package_update``).

    The fields are those of ``harvest_source_create``; like the others, a
    ``schedule`` left out is removed (``harvest_source_patch`` keeps it).

    :param id: the id or name of the source
    :returns: the updated source dataset
    """
    data_dict = dict(data_dict, type=DATASET_TYPE_NAME)
    context = Context(context, extras_as_string=True)  # type: ignore[assignment]
    return toolkit.get_action("package_update")(context, data_dict)


def harvest_source_clear(context: Context, data_dict: DataDict) -> SourceRef:
    """Delete the datasets harvested by a source, and its jobs and objects.

    :param id: the source id
    :returns: ``{'id': <source id>}``
    """
    toolkit.check_access("harvest_source_clear", Context(context), data_dict)
    source = sources.get_source_or_404(data_dict.get("id"))
    toolkit.get_action("harvest_source_index_clear")(Context(context), {"id": source.id})
    clearing.clear_source(source.id)
    toolkit.get_action("harvest_source_reindex")(Context(context), {"id": source.id})
    return {"id": source.id}


def harvest_source_detach(context: Context, data_dict: DataDict) -> SourceDetached:
    """Detach the datasets of a source: they become ordinary local datasets.

    Their harvest link and their stored ``harvest_*`` extras are removed, their
    content stays, and no later job of any source updates or deletes them
    (docs/web-interface.rst, *Deleting a source*). The source itself is not
    changed.

    :param id: the id or name of the source
    :returns: ``{'id': <source id>, 'detached': <number of datasets>}``
    :raises ValidationError: no ``id``, or the source has a running job
    :raises ObjectNotFound: no such source
    """
    reference = data_dict.get("id")
    if not reference or not isinstance(reference, str):
        raise toolkit.ValidationError({"id": ["Missing value"]})
    toolkit.check_access("harvest_source_detach", Context(context), {"id": reference})
    package = model.Package.get(reference)
    source = sources.get_source_or_404(package.id if package else reference)
    try:
        detached = detaching.detach_source(source.id)
    except detaching.SourceBusy as e:
        raise toolkit.ValidationError({"id": [str(e)]}) from None
    # The source's own index entry carries its status (its dataset count).
    toolkit.get_action("harvest_source_reindex")(Context(context), {"id": source.id})
    return {"id": source.id, "detached": detached}


def harvest_source_index_clear(context: Context, data_dict: DataDict) -> SourceRef:
    """Remove the datasets of a source from the search index.

    :param id: the source id
    """
    toolkit.check_access("harvest_source_clear", Context(context), data_dict)
    source = sources.get_source_or_404(data_dict.get("id"))
    sources.index_clear(source.id)
    return {"id": source.id}


def harvest_source_job_history_clear(
    context: Context, data_dict: DataDict
) -> dict[str, str]:
    """Delete the jobs and objects of a source (its datasets stay).

    :param id: the source id
    :param keep_current: keep the jobs and objects of the current datasets
    """
    toolkit.check_access("harvest_source_clear", Context(context), data_dict)
    source = sources.get_source_or_404(data_dict.get("id"))
    clearing.clear_job_history(
        source.id, toolkit.asbool(data_dict.get("keep_current", False))
    )
    toolkit.get_action("harvest_source_reindex")(Context(context), {"id": source.id})
    return {"id": source.id}


def harvest_sources_job_history_clear(
    context: Context, data_dict: DataDict
) -> list[dict[str, str]]:
    """Clear the job history of every source, private ones included.

    :param keep_current: keep the jobs and objects of the current datasets
    """
    toolkit.check_access("harvest_sources_clear", Context(context), data_dict)
    results = []
    for source_id in sources.active_source_ids():
        try:
            results.append(toolkit.get_action("harvest_source_job_history_clear")(
                Context(context),
                {"id": source_id, "keep_current": data_dict.get("keep_current")},
            ))
        except toolkit.ObjectNotFound:
            continue
    return results


@toolkit.side_effect_free
def harvest_source_reindex(context: Context, data_dict: DataDict) -> bool:
    """Re-index a source dataset (needs update permission on it).

    :param id: the source id or name
    """
    source_id = toolkit.get_or_bust(data_dict, "id")
    if not context.get("ignore_auth"):
        toolkit.check_access("harvest_source_update", Context(context), {"id": source_id})
    sources.reindex_source(source_id, context)
    return True


@toolkit.side_effect_free
def harvest_sources_reindex(context: Context, data_dict: DataDict) -> bool:
    """Re-index every active source dataset (sysadmins)."""
    toolkit.check_access("harvest_sources_reindex", Context(context), data_dict)
    for source_id in sources.active_source_ids():
        sources.reindex_source(source_id, {"defer_commit": True})  # type: ignore[arg-type]
    PackageSearchIndex().commit()
    return True


def harvest_send_job_to_gather_queue(
    context: Context, data_dict: DataDict
) -> dict[str, Any]:
    """Mark a job ``Running`` and publish it on the gather queue.

    :param id: the job id
    :raises ValidationError: the source is not active
    """
    from ckanext.harvest import queue

    job_id = toolkit.get_or_bust(data_dict, "id")
    job = toolkit.get_action("harvest_job_show")(Context(context), {"id": job_id})
    toolkit.check_access("harvest_send_job_to_gather_queue", Context(context), job)
    source = harvest_source_show(
        Context(context, ignore_auth=True), {"id": job["source_id"]}  # type: ignore[arg-type]
    )
    if not source["active"]:
        raise toolkit.ValidationError("Source is not active")
    jobs.mark_running(job_id)
    try:
        publisher = queue.get_gather_publisher()
        try:
            publisher.send({MessageKey.JOB.value: job_id})
        finally:
            publisher.close()
    except Exception:
        # Not queued: leave the job New so that it does not block the source.
        jobs.mark_new(job_id)
        raise
    log.info("Sent job %s to the gather queue", job_id)
    return harvest_job_dictize(jobs.get_job_or_404(job_id), Context(context))


def _job_to_abort(context: Context, data_dict: DataDict) -> HarvestJob:
    reference = data_dict.get("source_id") or data_dict.get("id")
    if not reference:
        raise toolkit.ValidationError({"id": ["Missing value"]})
    try:
        source = harvest_source_show(Context(context, ignore_auth=True), {"id": reference})
    except toolkit.ObjectNotFound:
        return jobs.get_job_or_404(reference)
    job = jobs.latest_job(source["id"])
    if job is None:
        raise toolkit.ObjectNotFound("Error: source has no jobs")
    return job


def harvest_job_abort(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """Stop a job: it becomes ``Finished``; unfinished objects become ``ERROR``.

    :param id: the job id, or a source id or name (its latest job)
    :param source_id: a source id or name (its latest job)
    """
    job = _job_to_abort(context, data_dict)
    toolkit.check_access(
        "harvest_job_abort", Context(context), {"id": job.id, "source_id": job.source_id}
    )
    aborted = jobs.abort_job(job)
    log.info("Harvest job %s aborted", aborted.id)
    return harvest_job_dictize(aborted, Context(context))


def _life_span(value: Any) -> int:
    """Days a job may run; missing, false or unparsable means 7 (quirk Q33)."""
    try:
        return int(value) or DEFAULT_LIFE_SPAN
    except (TypeError, ValueError):
        return DEFAULT_LIFE_SPAN


def _id_list(value: Any) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _job_life_span(frequency: Any, life_span: int) -> int:
    """Days a job of a source with this frequency may run.

    :raises Exception: for an unknown frequency
    """
    if frequency in _FREQUENCY_LIFE_SPAN:
        return _FREQUENCY_LIFE_SPAN[frequency]
    if frequency in (Frequency.MANUAL.value, Frequency.ALWAYS.value):
        return life_span
    raise Exception("Frequency {} not recognised".format(frequency))


def _running_job_summaries(include: list[str]) -> list[tuple[str, str, Any, Any]]:
    """(job id, source id, created, frequency) of the running jobs to consider.

    Plain values: aborting a job resets the session, which would detach
    model objects still to be looked at.
    """
    return [
        (job.id, job.source_id or "", job.created, job.source.frequency if job.source else None)
        for job in jobs.running_jobs()
        if not include or job.source_id in include
    ]


def harvest_abort_failed_jobs(context: Context, data_dict: DataDict) -> str:
    """Abort running jobs older than their source's life span (sysadmins).

    :param life_span: days for MANUAL and ALWAYS sources (default 7)
    :param include: comma-separated source ids to consider exclusively
    :param exclude: comma-separated source ids to skip
    """
    toolkit.check_access("harvest_abort_failed_jobs", Context(context), data_dict)
    life_span = _life_span(data_dict.get("life_span"))
    include = _id_list(data_dict.get("include"))
    exclude = [] if include else _id_list(data_dict.get("exclude"))
    running = _running_job_summaries(include)
    if not running:
        return "There is no jobs to abort"
    aborted = 0
    for job_id, source_id, created, frequency in running:
        days = _job_life_span(frequency, life_span)
        if source_id in exclude:
            log.info("Excluding source: %s", source_id)
            continue
        if created and created < jobs.utcnow() - datetime.timedelta(days=days):
            result = toolkit.get_action("harvest_job_abort")(Context(context), {"id": job_id})
            log.info("Aborted job %s: %s", job_id, result["status"])
            aborted += 1
        else:
            log.info("%s running less then %s days. Skipping...", job_id, days)
    return "Done. Aborted jobs: {}".format(aborted)


def _calculate_next_run(frequency: str) -> datetime.datetime:
    """When a source with this frequency runs next (from now)."""
    return jobs.next_run_after(frequency, jobs.utcnow())


def _make_scheduled_jobs(context: Context, data_dict: DataDict) -> None:
    """Create the jobs of every due scheduled source."""
    jobs.make_scheduled_jobs(context)


def _finish_job(context: Context, job: HarvestJob) -> None:
    source_id = job.source_id or ""
    toolkit.get_action("harvest_source_reindex")(
        Context(context, ignore_auth=True), {"id": source_id}
    )
    status = toolkit.get_action("harvest_source_show_status")(
        Context(context, ignore_auth=True), {"id": source_id}
    )
    send_status_mail(Context(context), source_id, status, config)


def harvest_jobs_run(context: Context, data_dict: DataDict) -> list[Any]:
    """Start scheduled jobs and close the running ones that are done (cron).

    Then, under ``ckan.harvest.max_running_jobs``, the jobs waiting for a slot
    start, oldest due first, as far as slots are free.

    :param source_id: only look at the jobs of this source (no scheduling)
    :returns: an empty list
    """
    from ckanext.harvest import queue

    toolkit.check_access("harvest_jobs_run", Context(context), data_dict)
    source_id = data_dict.get("source_id")
    if not source_id:
        _make_scheduled_jobs(context, data_dict)
    timeout = jobs.timeout_minutes(config)
    running = jobs.running_jobs(source_id)
    # Before the timeout check: a stall is reported before the timeout ends the job.
    stalls.check_jobs(context, running, config)
    for job in running:
        if jobs.close_if_timed_out(job, timeout):
            continue
        if jobs.close_if_finished(job):
            _finish_job(context, job)
    concurrency.start_waiting_jobs(context)
    queue.resubmit_jobs()
    queue.resubmit_objects()
    return []


def harvest_objects_import(context: Context, data_dict: DataDict) -> int:
    """Run the import stage again for current objects (sysadmins).

    :param guid: the objects with this guid
    :param source_id: the objects of this source
    :param harvest_object_id: this object
    :param package_id: the objects of this dataset (id or name)
    :returns: the number of objects imported
    """
    toolkit.check_access("harvest_objects_import", Context(context), data_dict)
    to_import = objects.objects_to_import(data_dict, Context(context))
    for obj in to_import:
        objects.reimport(obj)
    model.Session.commit()
    return len(to_import)


def harvest_job_approve_removals(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """Withdraw the datasets whose removal a job's circuit breaker held back.

    The held withdrawals become objects of the job, queued on the fetch queue
    and performed by the fetch consumer (even though the job is finished).
    Approving a second time finds nothing held and does nothing.

    :param id: the job id
    :returns: ``{"job_id": ..., "approved": <number of withdrawals queued>}``
    :raises ObjectNotFound: no such job
    :raises NotAuthorized: the user may not update the job's source
    """
    from ckanext.harvest import queue

    job_id = toolkit.get_or_bust(data_dict, "id")
    job = jobs.get_job_or_404(job_id)
    toolkit.check_access("harvest_job_approve_removals", Context(context), {"id": job.id})
    object_ids = removals.approve(job)
    if object_ids:
        publisher = queue.get_fetch_publisher()
        try:
            for object_id in object_ids:
                publisher.send({MessageKey.OBJECT.value: object_id})
        finally:
            publisher.close()
    log.info("Harvest job %s: %d held removal(s) approved", job.id, len(object_ids))
    return {"job_id": job.id, "approved": len(object_ids)}
