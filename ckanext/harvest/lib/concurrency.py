"""A cap on the number of jobs running at once (``ckan.harvest.max_running_jobs``).

Without a cap (the default) jobs start as in the original: no job ever waits
(``harvest_jobs_run`` only looks for waiting jobs, finding none). With a cap,
a job that should start (scheduled, or asked for with ``run``) is *waiting for
a slot*: it is created ``New`` but not sent to the
gather queue, and carries a marker with its due time. Whenever a slot may have
freed (``ckan harvester run``, a new job), the waiting jobs are sent, oldest
due first, while fewer than the cap are ``Running``.

The marker is a row of CKAN's own ``task_status`` table (entity = the job,
task type ``harvest_slot``, key ``due``, value = the due time), so the harvest
tables keep their schema. A job created with ``run=False`` has no marker and
stays ``New`` until someone sends it, as in the original. A marker goes when
its job is sent; markers of jobs no longer ``New`` otherwise (aborted,
deleted, sent by hand) are ignored, and dropped at the next dispatch. If
sending fails (broker down), the job is ``New`` again with its marker: it keeps
its place.

Dispatching holds a PostgreSQL advisory lock, so that two ``run`` processes (or
a ``run`` and a click on *Reharvest*) never start more jobs than the cap.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
from typing import Any, Iterator, Mapping, Optional, Sequence

import sqlalchemy as sa
from ckan import model
from ckan.plugins import toolkit
from ckan.types import Context

from ckanext.harvest import options
from ckanext.harvest.model import HarvestJob, JobStatus, utcnow

log = logging.getLogger(__name__)

TASK_TYPE = "harvest_slot"
ENTITY_TYPE = "harvest_job"
_KEY = "due"
#: Sorts as the time it stands for (fixed width, microseconds included).
_DUE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

_task = model.TaskStatus
_table = model.task_status_table


def max_running_jobs(config: Optional[Mapping[str, Any]] = None) -> int:
    """The cap; 0 means no limit (``ckan.harvest.max_running_jobs``)."""
    settings = toolkit.config if config is None else config
    return max(int(options.value(settings, options.MAX_RUNNING_JOBS) or 0), 0)


@contextlib.contextmanager
def exclusive(name: str) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock named ``name`` (waiting for it if need be).

    The lock lives on a connection of its own: the work inside may commit the
    session as often as it likes.
    """
    with model.meta.engine.connect() as connection:
        key = {"name": "ckanext-harvest:" + name}
        connection.execute(sa.text("SELECT pg_advisory_lock(hashtextextended(:name, 0))"),
                           key)
        try:
            yield
        finally:
            connection.execute(
                sa.text("SELECT pg_advisory_unlock(hashtextextended(:name, 0))"), key)


def wait_for_slot(job_id: str, due: Optional[datetime.datetime]) -> None:
    """Mark a ``New`` job as waiting for a slot, due at ``due`` (naive UTC); commit."""
    now = utcnow()
    model.Session.add(_task(entity_id=job_id, entity_type=ENTITY_TYPE, task_type=TASK_TYPE,
                            key=_KEY, value=(due or now).strftime(_DUE_FORMAT),
                            state="waiting", last_updated=now))
    model.Session.commit()


def _waiting_query() -> Any:
    return (
        model.Session.query(HarvestJob.id, _task.value)
        .join(_task, sa.and_(_task.entity_id == HarvestJob.id, _task.task_type == TASK_TYPE,
                             _task.key == _KEY))
        .filter(HarvestJob.status == JobStatus.NEW.value)
        .order_by(_task.value, HarvestJob.created, HarvestJob.id)
    )


def waiting_job_ids(limit: Optional[int] = None) -> list[str]:
    """The jobs waiting for a slot, oldest due first."""
    return [job_id for job_id, _ in _waiting_query().limit(limit)]


def positions(job_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """``{job id: (position, number waiting)}`` of those of ``job_ids`` that wait.

    Position 1 is the next job to start.
    """
    if not job_ids:
        return {}
    order = waiting_job_ids()
    wanted = set(job_ids)
    return {job_id: (index, len(order))
            for index, job_id in enumerate(order, start=1) if job_id in wanted}


def running_count() -> int:
    """How many jobs are ``Running`` (each holds a slot)."""
    return int(model.Session.query(sa.func.count(HarvestJob.id))
               .filter(HarvestJob.status == JobStatus.RUNNING.value).scalar() or 0)


def free_slots(cap: int) -> Optional[int]:
    """Slots free under ``cap`` (None: no cap, no limit)."""
    if not cap:
        return None
    return max(cap - running_count(), 0)


def _drop_stale_markers() -> None:
    """Forget the markers of jobs no longer ``New`` (or deleted)."""
    new_jobs = sa.select(HarvestJob.id).where(HarvestJob.status == JobStatus.NEW.value)
    model.Session.execute(
        sa.delete(_table)
        .where(_table.c.task_type == TASK_TYPE)
        .where(_table.c.entity_id.notin_(new_jobs))
    )
    model.Session.commit()


def start_waiting_jobs(context: Context) -> list[str]:
    """Send waiting jobs to the gather queue while slots are free, oldest due first.

    With no cap (any more), every waiting job is sent.

    :returns: the ids of the jobs sent
    """
    started: list[str] = []
    with exclusive("slots"):
        _drop_stale_markers()
        free = free_slots(max_running_jobs())
        if free == 0:
            return started
        for job_id in waiting_job_ids(free):
            sent = _send(context, job_id)
            if sent is None:
                break
            if sent:
                started.append(job_id)
    return started


def _send(context: Context, job_id: str) -> Optional[bool]:
    """Send one waiting job: True when sent, False when it cannot start (its
    source is inactive), None when the broker failed (stop for now)."""
    try:
        toolkit.get_action("harvest_send_job_to_gather_queue")(
            Context(context, ignore_auth=True), {"id": job_id})
    except toolkit.ValidationError as e:
        # Its source is not active: leave it for an operator (abort, reactivate).
        log.warning("Job %s waits for a slot but cannot start: %s", job_id, e)
        model.Session.rollback()
        return False
    except Exception:  # noqa: BLE001 - the broker: the job stays New and waits
        log.exception("Job %s could not be sent to the gather queue; it keeps waiting",
                      job_id)
        return None
    model.Session.execute(sa.delete(_table).where(_table.c.task_type == TASK_TYPE)
                          .where(_table.c.entity_id == job_id))
    model.Session.commit()
    log.info("Job %s got a slot and was sent to the gather queue", job_id)
    return True
