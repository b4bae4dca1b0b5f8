"""Harvest jobs: creation, sending to the gather queue, abort, completion, schedule."""
from __future__ import annotations

import datetime
import logging
from typing import Any, Mapping, Optional

import sqlalchemy as sa
from ckan import model
from ckan.plugins import toolkit
from ckan.types import Context

from ckanext.harvest import options
from ckanext.harvest.lib import concurrency, schedule
from ckanext.harvest.lib.errors import HarvestJobExists, HarvestSourceInactiveError
from ckanext.harvest.model import (
    ErrorStage,
    Frequency,
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
    HarvestSource,
    JobStatus,
    ObjectState,
    ReportStatus,
    utcnow,
)

log = logging.getLogger(__name__)

_TERMINAL_OBJECT_STATES = (ObjectState.COMPLETE.value, ObjectState.ERROR.value)
_OPEN_JOB_STATES = (JobStatus.NEW.value, JobStatus.RUNNING.value)


def get_job_or_404(job_id: Any, attr: Optional[str] = None) -> HarvestJob:
    """Return the job, or raise ``ObjectNotFound``."""
    job = HarvestJob.get(job_id, attr=attr) if job_id else None
    if job is None:
        raise toolkit.ObjectNotFound()
    return job


def has_open_job(source_id: str) -> bool:
    """True when the source has a ``New`` or ``Running`` job."""
    return (
        model.Session.query(HarvestJob.id)
        .filter(HarvestJob.source_id == source_id)
        .filter(HarvestJob.status.in_(_OPEN_JOB_STATES))
        .first()
        is not None
    )


def create_job(source_id: str) -> HarvestJob:
    """Insert a ``New`` job for an active source without an open job.

    :raises ObjectNotFound: no such source
    :raises HarvestSourceInactiveError: the source is inactive
    :raises HarvestJobExists: the source has a ``New`` or ``Running`` job
    """
    source = HarvestSource.get(source_id)
    if source is None:
        raise toolkit.ObjectNotFound("Harvest source %s does not exist" % source_id)
    if not source.active:
        log.warning("Harvest job cannot be created for inactive source %s", source_id)
        raise HarvestSourceInactiveError("Can not create jobs on inactive sources")
    if has_open_job(source_id):
        log.warning("There is already an unrun job %s for this source", source_id)
        raise HarvestJobExists("There already is an unrun job for this source")
    job = HarvestJob(source_id=source_id)
    job.save()
    log.info("Harvest job saved %s", job.id)
    return job


def mark_running(job_id: str) -> HarvestJob:
    """Set a job ``Running`` and commit (before it is published)."""
    job = get_job_or_404(job_id)
    job.status = JobStatus.RUNNING.value
    job.save()
    return job


def mark_new(job_id: str) -> None:
    """Put a job that could not be queued back to ``New``."""
    model.Session.rollback()
    job = get_job_or_404(job_id)
    job.status = JobStatus.NEW.value
    job.save()


def abort_job(job: HarvestJob) -> HarvestJob:
    """Abort a job: ``Finished``, and its unfinished objects become ``ERROR``."""
    if job.status != JobStatus.FINISHED.value:
        job.status = JobStatus.FINISHED.value
        job.save()
    objects = model.Session.query(HarvestObject).filter(
        HarvestObject.harvest_job_id == job.id,
        HarvestObject.state.notin_(_TERMINAL_OBJECT_STATES),
    )
    for obj in objects:
        obj.state = ObjectState.ERROR.value
        obj.add()
    model.Session.commit()
    job_id = job.id
    model.Session.remove()
    return get_job_or_404(job_id)


def list_jobs(
    source_id: Optional[str], status: Optional[str], limit: Optional[int], offset: int = 0
) -> list[HarvestJob]:
    """Jobs, newest first (``harvest_job_list``).

    :param source_id: only the jobs of this source
    :param status: only the jobs with this status
    :param limit: at most this many (None: all)
    :param offset: skip this many first
    """
    query = model.Session.query(HarvestJob)
    if source_id:
        query = query.filter(HarvestJob.source_id == source_id)
    if status:
        query = query.filter(HarvestJob.status == status)
    # The id breaks ties: pages neither repeat nor skip jobs created together.
    query = query.order_by(HarvestJob.created.desc(), HarvestJob.id)
    return query.offset(offset).limit(limit).all()


def latest_job(source_id: str) -> Optional[HarvestJob]:
    """The most recently created job of a source."""
    return (
        model.Session.query(HarvestJob)
        .filter(HarvestJob.source_id == source_id)
        .order_by(HarvestJob.created.desc())
        .first()
    )


def error_free_conditions() -> list[Any]:
    """The SQL conditions on ``HarvestJob`` of a clean (error-free) job.

    A clean job is ``Finished``, was gathered, has no gather error and no
    object left non-current for a reason other than "not modified". Shared by
    :func:`last_error_free_job` and the retention of old jobs, which must never
    remove the job an incremental harvest compares against.
    """
    bad_objects = sa.exists().where(
        HarvestObject.harvest_job_id == HarvestJob.id,
        HarvestObject.current.is_(False),
        HarvestObject.report_status != ReportStatus.NOT_MODIFIED.value,
    )
    gather_errors = sa.exists().where(HarvestGatherError.harvest_job_id == HarvestJob.id)
    return [
        HarvestJob.gather_started.isnot(None),
        HarvestJob.status == JobStatus.FINISHED.value,
        ~gather_errors,
        ~bad_objects,
    ]


def last_error_free_job(source_id: Optional[str],
                        exclude_job_id: Optional[str] = None) -> Optional[HarvestJob]:
    """The most recently gathered clean job of a source (:func:`error_free_conditions`).

    :param source_id: the source (None: jobs without a source)
    :param exclude_job_id: never return this job (the one being run)
    """
    query = model.Session.query(HarvestJob).filter(
        HarvestJob.source_id == source_id, *error_free_conditions())
    if exclude_job_id is not None:
        query = query.filter(HarvestJob.id != exclude_job_id)
    return query.order_by(HarvestJob.gather_started.desc()).first()


def running_jobs(source_id: Optional[str] = None) -> list[HarvestJob]:
    """Every ``Running`` job, optionally of one source."""
    query = model.Session.query(HarvestJob).filter(
        HarvestJob.status == JobStatus.RUNNING.value
    )
    if source_id:
        query = query.filter(HarvestJob.source_id == source_id)
    return query.all()


def timeout_minutes(config: Optional[Mapping[str, Any]] = None) -> int:
    """``ckan.harvest.timeout`` in minutes; 0 means no timeout.

    :param config: where to read it (CKAN's configuration by default)
    """
    settings = toolkit.config if config is None else config
    return int(settings.get(options.TIMEOUT) or 0)


def close_if_timed_out(job: HarvestJob, timeout: int) -> bool:
    """Finish a job idle for longer than ``timeout`` minutes, with a gather error.

    Its objects still ``WAITING``, ``FETCH`` or ``IMPORT`` (their consumers are
    gone, or will skip them: the job is finished) become ``ERROR`` with an object
    error saying so: nothing is left in limbo. Job, gather error and objects are
    committed together: nobody sees the job finished with objects unfinished.

    :returns: True when the job was closed
    """
    last = job.get_last_action_time()
    now = utcnow()
    if not timeout or last is None or now - last <= datetime.timedelta(minutes=timeout):
        return False
    job.status = JobStatus.FINISHED.value
    job.finished = now
    model.Session.add(job)
    message = (
        "Job {id} timeout ({timeout} minutes)\n"
        "\tJob created: {created}\n"
        "\tJob gather finished: {gather_finished}\n"
        "\tJob last action time: {last}\n"
    ).format(
        id=job.id, timeout=timeout, created=job.created,
        gather_finished=job.gather_finished, last=last,
    )
    model.Session.add(HarvestGatherError(message=message, job=job))
    unfinished = _error_unfinished_objects(
        job, "Job {} timed out ({} minutes without activity) before this object "
        "was processed".format(job.id, timeout))
    log.warning("Harvest job %s timed out (%s minutes without activity); %d "
                "unfinished object(s) set to ERROR", job.id, timeout, unfinished)
    return True


def _error_unfinished_objects(job: HarvestJob, message: str) -> int:
    """Set the job's unfinished objects ``ERROR`` / ``errored`` with an object
    error ``message`` (stage ``Fetch``); commit (with what the session holds
    already). Returns how many there were."""
    table = HarvestObject.__table__
    ids = [row[0] for row in model.Session.execute(
        sa.update(table)
        .where(table.c.harvest_job_id == job.id)
        .where(table.c.state.notin_(_TERMINAL_OBJECT_STATES))
        .values(state=ObjectState.ERROR.value,
                report_status=ReportStatus.ERRORED.value)
        .returning(table.c.id)
    )]
    for object_id in ids:
        model.Session.add(HarvestObjectError(harvest_object_id=object_id,
                                             message=message, stage=ErrorStage.FETCH.value))
    model.Session.commit()
    return len(ids)


def close_if_finished(job: HarvestJob) -> bool:
    """Finish a gathered job whose objects are all ``COMPLETE`` or ``ERROR``.

    :returns: True when the job was closed
    """
    if not job.gather_finished:
        return False
    unfinished = (
        model.Session.query(HarvestObject.id)
        .filter(HarvestObject.harvest_job_id == job.id)
        .filter(HarvestObject.state.notin_(_TERMINAL_OBJECT_STATES))
        .count()
    )
    if unfinished:
        return False
    last_import = (
        model.Session.query(sa.func.max(HarvestObject.import_finished))
        .filter(HarvestObject.harvest_job_id == job.id)
        .scalar()
    )
    job.status = JobStatus.FINISHED.value
    job.finished = last_import or job.gather_finished
    job.save()
    return True


def _days_in_month(year: int, month: int) -> int:
    """Days of the month, with the original's leap-year rule (``year % 4 == 0``)."""
    if month == 2:
        return 29 if year % 4 == 0 else 28
    return 30 if month in (4, 6, 9, 11) else 31


def next_run_after(frequency: str, now: datetime.datetime) -> datetime.datetime:
    """When a source with this frequency runs next.

    :raises Exception: for an unknown (or MANUAL) frequency
    """
    days = {
        Frequency.ALWAYS.value: 0,
        Frequency.DAILY.value: 1,
        Frequency.WEEKLY.value: 7,
        Frequency.BIWEEKLY.value: 14,
    }
    if frequency == Frequency.MONTHLY.value:
        return now + datetime.timedelta(days=_days_in_month(now.year, now.month))
    if frequency not in days:
        raise Exception("Frequency {} not recognised".format(frequency))
    return now + datetime.timedelta(days=days[frequency])


def sources_due() -> list[HarvestSource]:
    """Active sources due by their frequency (next run due, or never computed);
    the sources with a cron schedule are not among them."""
    return [source for source, expression in _due_sources(utcnow()) if not expression]


def _due_sources(now: datetime.datetime) -> list[tuple[HarvestSource, Optional[str]]]:
    """``(source, schedule or None)`` of the active sources whose next run is due
    or was never computed, by frequency or by schedule, the longest due first."""
    rows = (
        model.Session.query(HarvestSource, model.Package)
        .outerjoin(model.Package, model.Package.id == HarvestSource.id)
        .filter(HarvestSource.active.is_(True))
        .filter((HarvestSource.next_run <= now) | (HarvestSource.next_run.is_(None)))
        .order_by(HarvestSource.next_run.asc().nullsfirst(), HarvestSource.created)
    )
    due = []
    for source, package in rows:
        expression = schedule.source_schedule(package)
        if expression or source.frequency != Frequency.MANUAL.value:
            due.append((source, expression))
    return due


def _start_due_job(context: Context, source_id: str, due: datetime.datetime) -> None:
    """Create the job of a due source and start it, or, under a cap on running
    jobs, let it wait for a slot (:mod:`.concurrency`)."""
    capped = concurrency.max_running_jobs() > 0
    data = {"source_id": source_id, "run": not capped}
    try:
        job = toolkit.get_action("harvest_job_create")(Context(context), data)
    except HarvestJobExists:
        log.info("Trying to rerun job for %s skipping", source_id)
        return
    if capped:
        concurrency.wait_for_slot(job["id"], due)


def _next_scheduled_run(source: HarvestSource, expression: str) -> Optional[datetime.datetime]:
    """The next due time of a scheduled source (None: its schedule is invalid)."""
    try:
        return schedule.next_due(schedule.normalize(expression), utcnow(), schedule.timezone())
    except schedule.ScheduleError as e:
        log.error("Harvest source %s is not scheduled: %s", source.id, e)
        return None


def make_scheduled_jobs(context: Context) -> None:
    """Create and run the jobs of every due source, then move ``next_run`` on.

    By frequency: ``next_run`` moves on even when the source already had an
    open job (as the original). By schedule: a job starts once for the due
    time that passed (however many passed), and ``next_run`` becomes the next
    due time after now; a schedule without a ``next_run`` yet only gets one.
    """
    with concurrency.exclusive("schedule"):
        for source, expression in _due_sources(utcnow()):
            if not expression:
                _start_due_job(context, source.id, source.next_run or utcnow())
                source.next_run = next_run_after(source.frequency or "", utcnow())
            else:
                next_run = _next_scheduled_run(source, expression)
                if next_run is None:
                    continue
                if source.next_run is not None:
                    _start_due_job(context, source.id, source.next_run)
                source.next_run = next_run
            source.save()
