"""Recovery of the stage drivers from lost database connections.

A database connection that breaks in the middle of a stage (server restarted,
connection terminated by an administrator, network cut) is not the record's fault:
harvesters catch such errors like any other and record them, which would end the
job or the object in error for good. The worker (:mod:`ckanext.harvest.lib.worker`)
notices them instead, with :func:`watching_connections`, and retries the message
after undoing what the failed attempt recorded (:func:`forget_gather_attempt`,
:func:`forget_fetch_attempt`).

Nothing here depends on configuration. Messages go to the logger of the facade,
``ckanext.harvest.queue``, where they always went.
"""
from __future__ import annotations

import datetime
import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import sqlalchemy as sa
from ckan import model
from sqlalchemy.exc import SQLAlchemyError

from ckanext.harvest.lib.stages import delete_job_objects
from ckanext.harvest.model import (
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
    ObjectState,
)
from ckanext.harvest.mq.legacy import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

#: Connection failures seen by this process (pre-ping reconnections excluded).
_lost_connections = [0]


def _count_lost_connection(context: Any) -> None:
    if context.is_disconnect and not getattr(context, "is_pre_ping", False):
        _lost_connections[0] += 1


def discard_session() -> None:
    """``model.Session.remove()``, also when the session's connection is dead.

    Removing a session rolls its transaction back: on a connection the server
    terminated, that raises (and, uncaught, would end the consumer). The
    connection is then invalidated instead, and the session goes all the same.
    """
    try:
        model.Session.remove()
    except SQLAlchemyError:
        try:
            model.Session().invalidate()
        finally:
            model.Session.remove()


@contextmanager
def watching_connections() -> Iterator[Callable[[], bool]]:
    """Yield a function telling whether a database connection broke since entry."""
    if not sa.event.contains(sa.engine.Engine, "handle_error", _count_lost_connection):
        sa.event.listen(sa.engine.Engine, "handle_error", _count_lost_connection)
    before = _lost_connections[0]
    yield lambda: _lost_connections[0] != before


def forget_gather_attempt(job_id: str, started: datetime.datetime) -> None:
    """Undo a gather that lost its database connection, so that it runs again:
    the job's objects and the gather errors of the attempt go, and the job is
    not gathered any more."""
    discard_session()
    job = HarvestJob.get(job_id)
    if job is None:
        return
    delete_job_objects(job.id)
    model.Session.query(HarvestGatherError).filter(
        HarvestGatherError.harvest_job_id == job_id,
        HarvestGatherError.created >= started,
    ).delete(synchronize_session=False)
    job.gather_started = None
    job.gather_finished = None
    job.save()
    log.warning("Harvest job %s: the database connection was lost while gathering; "
                "the gather will be retried", job_id)


def forget_fetch_attempt(object_id: str, started: datetime.datetime) -> bool:
    """Undo an unsuccessful fetch/import that lost its database connection: the
    object errors of the attempt go and the object is ``WAITING`` again.

    :returns: False when there was nothing to undo (the object ended ``COMPLETE``)
    """
    discard_session()
    obj = HarvestObject.get(object_id)
    if obj is None or obj.state == ObjectState.COMPLETE.value:
        return False
    model.Session.query(HarvestObjectError).filter(
        HarvestObjectError.harvest_object_id == object_id,
        HarvestObjectError.created >= started,
    ).delete(synchronize_session=False)
    obj.state = ObjectState.WAITING.value
    obj.report_status = None
    obj.save()
    log.warning("Harvest object %s: the database connection was lost during its "
                "stages; it will be retried (attempt %s)", object_id, obj.retry_times)
    return True
