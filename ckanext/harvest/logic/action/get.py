"""Read actions of the harvest API."""
from __future__ import annotations

import logging
from typing import Any, Optional, cast

from ckan import model
from ckan.plugins import toolkit
from ckan.plugins.toolkit import config
from ckan.types import Context, DataDict

from ckanext.harvest import options
from ckanext.harvest.lib import (
    error_report,
    harvesters,
    health,
    jobs,
    objects,
    preview,
    progress,
    removals,
    schedule,
    secret_config,
    sources,
    stalls,
)
from ckanext.harvest.logic import schema
from ckanext.harvest.logic.dictization import (
    harvest_job_dictize,
    harvest_jobs_dictize,
    harvest_log_dictize,
    harvest_object_dictize,
    harvest_sources_dictize,
)
from ckanext.harvest.logic.types import (
    HarvesterInfo,
    JobReport,
    Recipient,
    SourceStatus,
)
from ckanext.harvest.logic.validators import check_params
from ckanext.harvest.model import HarvestLog, HarvestSource, JobStatus, LogLevel

# ``config`` is read at call time through this module (downstream tests patch
# ``...logic.action.get.config``).
log = logging.getLogger(__name__)

__all__ = [
    "harvest_source_show",
    "harvest_source_show_status",
    "harvest_source_list",
    "harvest_job_show",
    "harvest_job_report",
    "harvest_job_error_report",
    "harvest_source_preview",
    "harvest_job_list",
    "harvest_object_show",
    "harvest_object_list",
    "harvesters_info_show",
    "harvest_log_list",
    "harvest_job_removals_show",
    "harvest_get_notifications_recipients",
    "harvest_job_progress",
    "harvest_health_show",
    "harvest_schedule_preview",
]


@toolkit.side_effect_free
def harvest_source_show(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """Return a harvest source dataset (with ``status`` and ``active``).

    :param id: the id or name of the source
    :param url: the exact URL of the source, used when ``id`` is not given
    :returns: the source dataset dict
    :raises ObjectNotFound: no such source
    """
    check_params(data_dict, schema.harvest_source_show_params_schema(), context)
    data_dict = dict(data_dict)
    if not data_dict.get("id") and data_dict.get("url"):
        source = HarvestSource.get(data_dict["url"], attr="url")
        if source is None:
            raise toolkit.ObjectNotFound()
        data_dict["id"] = source.id
    package = toolkit.get_action("package_show")(context, data_dict)
    package["active"] = package.get("state") == "active"
    return package


@toolkit.side_effect_free
def harvest_source_show_status(context: Context, data_dict: DataDict) -> SourceStatus:
    """Return the job count, the last job and the number of datasets of a source.

    :param id: the id of the source (names are not resolved)
    :returns: ``{'job_count', 'last_job', 'total_datasets'}``
    """
    toolkit.check_access("harvest_source_show_status", Context(context), data_dict)
    status = sources.source_status(data_dict.get("id"))
    last_job = status["last_job"]
    return {
        "job_count": status["job_count"],
        "last_job": harvest_job_dictize(last_job, context) if last_job else None,
        "total_datasets": status["total_datasets"],
    }


@toolkit.side_effect_free
def harvest_source_list(context: Context, data_dict: DataDict) -> list[dict[str, Any]]:
    """List the harvest sources the caller may read, newest first.

    :param organization_id: only the sources of this organisation (id)
    :param only_active: only active sources
    :param only_to_run: only scheduled sources that are due
    :param return_last_job_status: add each source's last job
    :param limit: at most this many (default and most:
        ``ckan.harvest.harvest_source_limit``)
    :param offset: skip this many first (default 0)
    :returns: a list of source dicts
    """
    params = check_params(data_dict, schema.harvest_source_list_params_schema(), context)
    last_job_status = toolkit.asbool(data_dict.get("return_last_job_status", False))
    limit, offset = _page(params, options.SOURCE_LIMIT)
    found = sources.list_sources(context.get("user"), data_dict, limit, offset)
    return [
        secret_config.redact_source_dict(source_dict, context.get("user"))
        for source_dict in harvest_sources_dictize(found, context, last_job_status)
    ]


def _page(params: dict[str, Any], option: str) -> tuple[Optional[int], int]:
    """``(limit, offset)`` of a list action: ``limit`` is at most the value of
    ``option`` (0: no bound), which is also its default."""
    maximum = int(options.value(config, option) or 0)
    limit = params.get("limit")
    if maximum:
        limit = min(limit or maximum, maximum)
    return limit, params.get("offset", 0)


@toolkit.side_effect_free
def harvest_job_show(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """Return a harvest job with its statistics.

    :param id: the job id
    :param attr: match this column instead of ``id``
    """
    toolkit.check_access("harvest_job_show", Context(context), data_dict)
    job = jobs.get_job_or_404(data_dict.get("id"), data_dict.get("attr"))
    return harvest_job_dictize(job, context)


@toolkit.side_effect_free
def harvest_job_report(context: Context, data_dict: DataDict) -> JobReport:
    """Return the gather errors and per-object errors of a job.

    :param id: the job id
    :param limit: at most this many gather errors and objects with errors
        (default and most: ``ckan.harvest.job_report_limit``)
    :param offset: skip this many first, in each list (default 0)
    """
    toolkit.check_access("harvest_job_show", Context(context), data_dict)
    params = check_params(data_dict, schema.harvest_job_report_params_schema(), context)
    job = jobs.get_job_or_404(data_dict.get("id"))
    limit, offset = _page(params, options.JOB_REPORT_LIMIT)
    return cast(JobReport, objects.job_report(job, limit, offset))


@toolkit.side_effect_free
def harvest_job_error_report(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """Return every error of a job, grouped by message, and a page of them.

    Gather errors have stage ``Gather``; object errors keep their own stage.
    The whole report, unpaginated, is a download of the job page (CSV or JSON)
    and ``ckan harvester job errors JOB``.

    :param id: the job id
    :param stage: only the errors of this stage (e.g. ``Gather``, ``Fetch``,
        ``Import``)
    :param group: only the errors of this message group (a ``group`` of the
        result's ``groups``)
    :param limit: errors in the page (default and most:
        ``ckan.harvest.job_report_limit``)
    :param offset: skip this many first (default 0)
    :returns: ``job_id``; ``groups``: every message group (of ``stage``) with
        ``group``, ``message``, ``count`` and ``stages``, most frequent first;
        ``total``: the errors that the filters select; ``errors``: the page of
        them, oldest first, each with ``job_id``, ``stage``, ``object_id``,
        ``guid``, ``dataset_id``, ``dataset_url``, ``message`` and ``created``
    :raises ObjectNotFound: no such job
    """
    toolkit.check_access("harvest_job_error_report", Context(context), data_dict)
    params = check_params(data_dict, schema.harvest_job_error_report_params_schema(),
                          context)
    job = jobs.get_job_or_404(data_dict.get("id"))
    limit, offset = _page(params, options.JOB_REPORT_LIMIT)
    stage, group = params.get("stage"), params.get("group")
    return {
        "job_id": job.id,
        "groups": error_report.groups(job.id, stage),
        "total": error_report.count(job.id, stage, group),
        "errors": error_report.page(job.id, stage, group, limit, offset),
    }


def harvest_source_preview(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """Show what a job of a source would do with its first records, writing
    nothing (a dry run: see ``docs/ckan-harvester.rst``).

    The harvester's gather stage runs, then fetch and import for up to
    ``limit`` objects, in a database transaction that is always rolled back;
    nothing is indexed, queued, mailed or logged to the database.

    :param id: the id or name of a saved source; without it, the fields of
        ``harvest_source_create`` describe a source not saved yet
    :param limit: records to fetch and import (default 20, at most 100)
    :returns: ``source_id`` (None for a new source), ``gathered``,
        ``gather_errors``, ``limit`` and ``records``: for each, ``guid``,
        ``outcome`` (``create``, ``update``, ``not modified``, ``withdraw`` or
        ``error``), ``errors``, ``dataset`` and, for an update, ``changes``
        (``field``, ``change``, ``old``, ``new``)
    :raises ObjectNotFound: no such source
    :raises ValidationError: a bad ``limit``, an invalid new source, or a
        source no harvester handles
    """
    toolkit.check_access("harvest_source_preview", Context(context), data_dict)
    params = check_params(data_dict, schema.harvest_source_preview_params_schema(), context)
    limit = params.get("limit", preview.DEFAULT_LIMIT)
    source_id = None
    new_source = None
    if data_dict.get("id"):
        package = model.Package.get(data_dict["id"])  # an id or a name
        source_id = sources.get_source_or_404(package.id if package else data_dict["id"]).id
    else:
        new_source = {k: v for k, v in data_dict.items() if k not in ("limit", "id")}
    try:
        result = preview.preview_source(source_id, limit, new_source, context.get("user"))
    except preview.PreviewError as error:
        raise toolkit.ValidationError({"source_type": [str(error)]}) from None
    return dict(result, source_id=source_id)


@toolkit.side_effect_free
def harvest_job_list(context: Context, data_dict: DataDict) -> list[dict[str, Any]]:
    """List jobs, newest first (with statistics, without error summaries).

    :param source_id: only the jobs of this source
    :param status: only the jobs with this status
    :param limit: at most this many (default and most:
        ``ckan.harvest.job_list_limit``)
    :param offset: skip this many first (default 0)
    """
    toolkit.check_access("harvest_job_list", Context(context), data_dict)
    params = check_params(data_dict, schema.harvest_job_list_params_schema(), context)
    limit, offset = _page(params, options.JOB_LIST_LIMIT)
    found = jobs.list_jobs(params.get("source_id"), params.get("status"), limit, offset)
    return harvest_jobs_dictize(found, Context(context, return_error_summary=False))


@toolkit.side_effect_free
def harvest_object_show(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """Return a harvest object.

    :param id: the object id (or the value of ``attr``, e.g. a guid)
    :param attr: column to match instead of ``id``
    :param dataset_id: a dataset id or name: its current object
    """
    toolkit.check_access("harvest_object_show", Context(context), data_dict)
    if data_dict.get("id"):
        obj = objects.get_object_or_404(data_dict["id"], data_dict.get("attr"))
    elif data_dict.get("dataset_id"):
        obj = objects.current_object_of_dataset(data_dict["dataset_id"])
    else:
        raise toolkit.ValidationError(
            'Please provide either an "id" or a "dataset_id" parameter'
        )
    return harvest_object_dictize(obj, context)


@toolkit.side_effect_free
def harvest_object_list(context: Context, data_dict: DataDict) -> list[str]:
    """Return the ids of the objects of a source.

    :param source_id: the source id (all sources when omitted)
    :param only_current: only current objects (default True)
    :param limit: at most this many, in id order (default and most:
        ``ckan.harvest.object_list_limit``)
    :param offset: skip this many first (default 0)
    """
    toolkit.check_access("harvest_object_list", Context(context), data_dict)
    params = check_params(data_dict, schema.harvest_object_list_params_schema(), context)
    only_current = toolkit.asbool(data_dict.get("only_current", True))
    limit, offset = _page(params, options.OBJECT_LIST_LIMIT)
    return objects.object_ids(data_dict.get("source_id"), only_current, limit, offset)


@toolkit.side_effect_free
def harvesters_info_show(context: Context, data_dict: DataDict) -> list[HarvesterInfo]:
    """Describe every loaded harvester (``info()`` plus ``show_config``)."""
    toolkit.check_access("harvesters_info_show", Context(context), data_dict)
    available: list[HarvesterInfo] = []
    for harvester in harvesters.all_harvesters():
        if not harvesters.harvester_name(harvester):
            continue
        info = cast(HarvesterInfo, dict(harvester.info()))
        info["show_config"] = info.get("form_config_interface", "") == "Text"
        available.append(info)
    return available


def _int_or(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


@toolkit.side_effect_free
def harvest_log_list(context: Context, data_dict: DataDict) -> list[dict[str, Any]]:
    """Return records of the harvest database log, newest first.

    :param level: only records of this level
    :param limit: how many (default 100); ``per_page`` overrides it
    :param offset: how many to skip (default 0)
    """
    toolkit.check_access("harvest_log_list", Context(context), data_dict)
    limit = _int_or(data_dict.get("per_page") or data_dict.get("limit", 100), 100)
    offset = _int_or(data_dict.get("offset", 0), 0)
    query = model.Session.query(HarvestLog)
    if data_dict.get("level"):
        level = str(data_dict["level"]).upper()
        if level not in LogLevel.__members__:
            raise toolkit.ValidationError({"level": [
                "Unknown log level: {} (one of {})".format(
                    level, ", ".join(LogLevel.__members__))
            ]})
        query = query.filter(HarvestLog.level == level)
    rows = query.order_by(HarvestLog.created.desc()).offset(offset).limit(limit)
    return [harvest_log_dictize(row, context) for row in rows]


def harvest_get_notifications_recipients(
    context: Context, data_dict: DataDict
) -> list[Recipient]:
    """Who receives the status e-mails of a source (chain it to change that).

    :param source_id: the source id
    :returns: sysadmins then the source organisation's admins, with e-mails
    """
    toolkit.check_access("harvest_get_notifications_recipients", Context(context), data_dict)
    site_user = toolkit.get_action("get_site_user")({"ignore_auth": True}, {})
    own_context: Any = {"user": site_user["name"], "ignore_auth": True}
    recipients: list[Recipient] = [
        {"name": user.name, "email": user.email}
        for user in model.Session.query(model.User).filter(
            model.User.sysadmin.is_(True), model.User.state == "active"
        )
        if user.email and user.email.strip()
    ]
    source = toolkit.get_action("harvest_source_show")(
        dict(own_context), {"id": data_dict["source_id"]}
    )
    if source.get("organization"):
        recipients.extend(_org_admins(own_context, source["organization"]["id"]))
    return recipients


def _org_admins(context: Context, org_id: str) -> list[Recipient]:
    members = toolkit.get_action("member_list")(
        Context(context), {"id": org_id, "object_type": "user", "capacity": "admin"}
    )
    admins: list[Recipient] = []
    for user_id, _type, _capacity in members:
        user = toolkit.get_action("user_show")(Context(context), {"id": user_id})
        if (user.get("email") or "").strip():
            admins.append({"name": user["name"], "email": user["email"]})
    return admins


@toolkit.side_effect_free
def harvest_job_removals_show(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """How many withdrawals of datasets missing at the source a job holds back
    (its circuit breaker tripped) until approved
    (``harvest_job_approve_removals``).

    :param id: the job id
    :returns: ``{"job_id": ..., "held": <number>}``
    :raises ObjectNotFound: no such job
    """
    toolkit.check_access("harvest_job_removals_show", Context(context), data_dict)
    job = jobs.get_job_or_404(data_dict.get("id"))
    return {"job_id": job.id, "held": removals.held_count(job.id)}


@toolkit.side_effect_free
def harvest_job_progress(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """Return how far a job got: objects done of total, rate, ETA and stall.

    The rate is the objects done per minute since the gather started; the ETA
    (seconds) the objects left at that rate, None while gathering or before
    anything is done. ``stalled``: ``ckan harvester run`` found the job's
    objects unmoved for ``ckan.harvest.stall_minutes`` (Running jobs only).

    :param id: the job id
    :returns: ``{id, source_id, status, total, done, gathering, percent,
        elapsed_seconds, rate_per_minute, eta_seconds, states, stalled,
        stalled_since, last_moved}``
    :raises ObjectNotFound: no such job
    """
    job = jobs.get_job_or_404(toolkit.get_or_bust(data_dict, "id"))
    toolkit.check_access("harvest_job_progress", Context(context), {"id": job.id})
    result = progress.job_progress(job).as_dict()
    state = stalls.states_of([job.id]).get(job.id)
    running = job.status == JobStatus.RUNNING.value
    stalled = bool(running and state and state.stalled_since)
    result.update(
        source_id=job.source_id,
        stalled=stalled,
        stalled_since=_iso(state.stalled_since) if stalled and state else None,
        last_moved=_iso(state.last_moved) if running and state else None,
    )
    return result


def _iso(moment: Any) -> Optional[str]:
    return moment.isoformat() if moment else None


@toolkit.side_effect_free
def harvest_health_show(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """Return the health of the harvesting (sysadmins).

    :returns: ``{sources: [{id, name, title, active, frequency, next_run,
        last_success, consecutive_failures, last_duration_seconds,
        running_job, waiting, stalled, state, ...}], jobs: {status: count},
        queues: {gather|fetch: {depth, consumers} or None}, timeline: {start,
        end, jobs: [{id, source_id, source, state, start, end}]}}``
    """
    toolkit.check_access("harvest_health_show", Context(context), data_dict)
    timeline = health.timeline()
    return {
        "sources": [row.as_dict() for row in health.source_rows()],
        "jobs": health.job_counts(),
        "queues": {name: (None if stats is None else
                          {"depth": stats.depth, "consumers": stats.consumers})
                   for name, stats in health.queue_stats(config).items()},
        "timeline": {
            "start": timeline["start"].isoformat(),
            "end": timeline["end"].isoformat(),
            "jobs": [dict(job, start=job["start"].isoformat(), end=job["end"].isoformat())
                     for job in timeline["jobs"]],
        },
    }


@toolkit.side_effect_free
def harvest_schedule_preview(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """The next run times of a cron schedule (the preview of the source form).

    :param schedule: a cron expression of five fields, e.g. ``0 3 * * *``
    :param count: how many run times, 1 to 10 (default 3)
    :returns: ``{"schedule": <the expression, single-spaced>, "timezone":
        <ckan.harvest.timezone>, "next_runs": [<ISO 8601 times in that zone>]}``
    :raises ValidationError: an invalid expression, count or time zone
    """
    toolkit.check_access("harvest_schedule_preview", Context(context), data_dict)
    data = check_params(data_dict, schema.harvest_schedule_preview_params_schema(), context)
    try:
        return schedule.preview(data.get("schedule"), jobs.utcnow(), data.get("count", 3))
    except schedule.ScheduleError as e:
        raise toolkit.ValidationError({"schedule": [str(e)]}) from None
