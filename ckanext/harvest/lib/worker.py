"""The harvest worker: message handling and the consumer loops.

Two queues carry the work: *gather* (one message per harvest job) and *fetch* (one
message per harvest object; its consumer runs the fetch and the import stage).

* :func:`gather_callback` / :func:`fetch_callback` handle one message each, with the
  pika-style signature ``(channel, method, header, body)`` after the config;
* :func:`run_gather_consumer` / :func:`run_fetch_consumer` are the long-running
  consumer loops (``ckan harvester gather-consumer`` / ``fetch-consumer``);
* :func:`resubmit_objects` re-sends ``WAITING`` objects missing from the queue.

The stages themselves run through :mod:`ckanext.harvest.lib.stages`.

A message is acknowledged only once the work it asked for is committed. A message
delivered again (after a consumer died) is handled idempotently: a job already
gathered is not gathered again (its objects still ``WAITING`` and not queued are
re-sent) and an object already ``COMPLETE`` or ``ERROR`` is skipped. An exception
raised by a harvester is recorded as a gather or object error and the consumer
goes on with the next message. A database connection lost midway is handled by
:mod:`ckanext.harvest.lib.recovery`.

Configuration: every function here that depends on it takes it as its first
parameter, ``config``; nothing reads ``toolkit.config``. The facade
:mod:`ckanext.harvest.queue` passes its module attribute ``config``, read at call
time, so that a downstream suite patching ``ckanext.harvest.queue.config`` changes
the broker, the site and the limits used here. The broker is reached through
:mod:`ckanext.harvest.mq.legacy`. Everything logs through the facade's logger
(``ckanext.harvest.queue``), whose ``error`` method downstream tests patch.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import threading
import time
from contextlib import closing, contextmanager
from typing import Any, Callable, Iterator, Mapping, Optional

import sqlalchemy as sa
from ckan import model
from sqlalchemy import orm
from sqlalchemy.exc import DatabaseError, InterfaceError, OperationalError, PendingRollbackError
from sqlalchemy.orm.attributes import set_committed_value

from ckanext.harvest import mq, options
from ckanext.harvest.interfaces import IHarvester
from ckanext.harvest.lib import removals
from ckanext.harvest.lib.recovery import (
    discard_session,
    forget_fetch_attempt,
    forget_gather_attempt,
    watching_connections,
)
from ckanext.harvest.lib.stages import (
    delete_job_objects,
    fetch_and_import_stages,
    gather_stage,
    get_harvester,
    harvesters_named,
    import_raised,
    session_has_changes,
)
from ckanext.harvest.model import (
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
    JobStatus,
    ObjectState,
    ReportStatus,
    utcnow,
)
from ckanext.harvest.mq import legacy
from ckanext.harvest.mq import redis as mq_redis
from ckanext.harvest.mq.base import Message, MessageKey, QueueBackend, QueueSpec

log = logging.getLogger(legacy.LOGGER_NAME)

Config = Mapping[str, Any]

#: A fetch message delivered this many times marks its object ``ERROR``.
MAX_FETCH_RETRIES = 5
#: Pause before a message is given back after a database error (no busy loop).
RETRY_DELAY_SECONDS = 1.0
#: Pause before reconnecting to a broker that dropped the connection.
RECONNECT_DELAY_SECONDS = 2.0

_FINAL_STATES = (ObjectState.COMPLETE.value, ObjectState.ERROR.value)


# -- publishing objects ------------------------------------------------------------


def _publish_objects(config: Config, ids: list[str], resent: bool = False) -> None:
    publisher = legacy.get_fetch_publisher(config)
    try:
        for object_id in ids:
            publisher.send({MessageKey.OBJECT.value: object_id})
            if resent:
                log.debug("Re-sent object %s to the fetch queue", object_id)
    finally:
        publisher.close()


def _resend_waiting_objects(config: Config, job: HarvestJob) -> None:
    """Gather message for a job gathered already (a redelivery): do not gather
    again, but make sure its ``WAITING`` objects are on the fetch queue, in case
    the previous attempt died before publishing them all."""
    waiting = [object_id for (object_id,) in model.Session.query(HarvestObject.id)
               .filter(HarvestObject.harvest_job_id == job.id)
               .filter(HarvestObject.state == ObjectState.WAITING.value)
               .order_by(HarvestObject.gathered)]
    if waiting and legacy.backend(config) == mq.REDIS:
        queued = mq_redis.queued_ids(legacy.get_connection_redis(config),
                                     legacy.fetch_spec(config))
        waiting = [object_id for object_id in waiting if object_id not in queued]
    log.info("Harvest job %s was gathered already; %d waiting object(s) re-sent",
             job.id, len(waiting))
    if waiting:
        _publish_objects(config, waiting)


def resubmit_objects(config: Config) -> None:
    """Redis: re-send ``WAITING`` objects of gathered jobs that are not queued.

    Jobs whose gather message is still queued or being handled are left out:
    their objects are being published.

    Does nothing on AMQP (its queue contents cannot be listed).
    """
    if legacy.backend(config) != mq.REDIS:
        return
    client = legacy.get_connection_redis(config)
    queued = mq_redis.queued_ids(client, legacy.fetch_spec(config))
    # A job whose gather message is still pending or being handled is publishing
    # its objects right now (gather_finished is set before that): its gather
    # consumer, or the redelivery of its message, sends them.
    gathering = mq_redis.queued_ids(client, legacy.gather_spec(config))
    waiting = (
        model.Session.query(HarvestObject.id)
        .join(HarvestJob, HarvestObject.harvest_job_id == HarvestJob.id)
        .filter(HarvestObject.state == ObjectState.WAITING.value)
        .filter(HarvestJob.gather_finished.isnot(None))
        .filter(HarvestJob.id.notin_(gathering))
        .order_by(HarvestObject.gathered)
    )
    missing = [object_id for (object_id,) in waiting if object_id not in queued]
    if missing:
        _publish_objects(config, missing, resent=True)


# -- message handling --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Delivery:
    """How to settle the message being handled."""

    ack: Callable[[], None]
    reject: Callable[[], None]


def _legacy_delivery(channel: Any, method: Any) -> _Delivery:
    # The original API leaves a message unacknowledged when it cannot be handled.
    return _Delivery(ack=lambda: channel.basic_ack(method.delivery_tag),
                     reject=lambda: None)


def _message_id(body: Any, key: str, missing: str) -> Optional[str]:
    """Return the id carried by ``body``, or None (logged) for a malformed message."""
    try:
        payload = json.loads(body)
    except (TypeError, ValueError):
        log.error("Malformed message (not JSON) ignored: %.200r", body)
        return None
    if not isinstance(payload, dict):
        log.error("Malformed message (not a JSON object) ignored: %.200r", body)
        return None
    if key not in payload:
        log.error(missing)
        return None
    value = payload[key]
    if not isinstance(value, str) or not value:
        log.error("Malformed message (%s is not an id) ignored: %.200r", key, body)
        return None
    return value


def _record_gather_error(job: HarvestJob, exc: BaseException) -> None:
    HarvestGatherError.create(
        "Gather stage failed: %s: %s" % (type(exc).__name__, exc), job
    )


def _run_gather(harvester: IHarvester, job: HarvestJob) -> Any:
    """Gather; a harvester exception becomes a gather error (result None)."""
    try:
        return gather_stage(harvester, job)
    except Exception as exc:
        log.exception("Gather stage of job %s raised", job.id)
        _record_gather_error(job, exc)
        return None
    except BaseException as exc:
        _record_gather_error(job, exc)
        raise


def _gather_job(config: Config, job: HarvestJob) -> Optional[bool]:
    source_type = job.source.type if job.source else None
    harvester = get_harvester(source_type) if source_type else None
    if harvester is None:
        HarvestGatherError.create(
            "System error - No harvester could be found for source type %s"
            % source_type, job,
        )
        job.status = JobStatus.FINISHED.value
        job.save()
        return None
    if job.gather_started is not None:
        log.warning("Job %s was partly gathered before; deleting its objects", job.id)
        delete_job_objects(job.id)
    ids = _run_gather(harvester, job)
    if not isinstance(ids, list):
        log.error("Gather stage failed")
        return False
    if not ids:
        if _has_objects(job.id):
            log.info("Job %s: every object was finished at gather (unchanged)", job.id)
        else:
            log.error("No harvest objects to fetch")
        return False
    _publish_objects(config, _limit_objects(config, job, ids))
    return None


def _has_objects(job_id: str) -> bool:
    return model.Session.query(
        sa.exists().where(HarvestObject.harvest_job_id == job_id)).scalar()


def _limit_objects(config: Config, job: HarvestJob, ids: list[str]) -> list[str]:
    """At most ``ckan.harvest.max_objects_per_job`` objects; drop the others.

    The dropped objects are deleted and a gather error says so: the job is not
    error-free, so an incremental harvester gathers them again next time.
    """
    limit = options.value(config, options.MAX_OBJECTS_PER_JOB)
    if not limit or len(ids) <= limit:
        return ids
    kept, dropped = ids[:limit], ids[limit:]
    for start in range(0, len(dropped), 1000):
        model.Session.query(HarvestObject).filter(
            HarvestObject.id.in_(dropped[start:start + 1000])
        ).delete(synchronize_session=False)
    HarvestGatherError.create(
        "The harvester gathered {} objects, more than the {} a job may have "
        "({}): the first {} are harvested, the other {} are left for the next "
        "job".format(len(ids), limit, options.MAX_OBJECTS_PER_JOB, len(kept),
                     len(dropped)), job)
    log.warning("Job %s limited to %d of %d objects", job.id, limit, len(ids))
    return kept


def _load_target(
    load: Callable[[str], Any], target_id: str, what: str, delivery: _Delivery
) -> tuple[Any, Optional[bool]]:
    """Load (``load(target_id)``) the job or object a message names.

    When it cannot be loaded the message is settled here: given back when the
    database failed (outcome None), dropped when the row does not exist
    (outcome False).
    """
    try:
        found = load(target_id)
    except DatabaseError:
        log.exception("Could not load harvest %s %s", what, target_id)
        discard_session()
        delivery.reject()
        return None, None
    if found is None:
        log.error("Harvest %s does not exist: %s", what, target_id)
        delivery.ack()
        return None, False
    return found, None


def _handle_gather(config: Config, body: Any, delivery: _Delivery) -> Optional[bool]:
    job_id = _message_id(body, MessageKey.JOB.value, "No harvest job id received")
    if job_id is None:
        delivery.ack()
        return False
    job, outcome = _load_target(HarvestJob.get, job_id, "job", delivery)
    if job is None:
        return outcome
    if job.gather_finished is not None:
        _resend_waiting_objects(config, job)
        delivery.ack()
        return False
    started = utcnow()
    with watching_connections() as connection_lost:
        try:
            result = _gather_job(config, job)
        except Exception:
            # Once the connection broke, whatever follows (PendingRollbackError,
            # errors of the harvester) is its consequence: the attempt is undone.
            if not connection_lost():
                raise
    if connection_lost():
        forget_gather_attempt(job_id, started)
        delivery.reject()
        return None
    discard_session()
    delivery.ack()
    return result


def _may_fetch(obj: HarvestObject) -> bool:
    """Count the attempt; refuse objects retried too often or of finished jobs.

    The count is committed with the next step: the refusal here, or the object's
    move to ``FETCH`` (one commit less per object).
    """
    obj.retry_times = (obj.retry_times or 0) + 1
    if obj.retry_times >= MAX_FETCH_RETRIES:
        obj.state = ObjectState.ERROR.value
        obj.save()
        log.error("Too many consecutive retries for object %s", obj.id)
        return False
    job = obj.job
    if job is not None and job.status == JobStatus.FINISHED.value \
            and not removals.is_withdrawal(obj):  # approved after the job finished
        obj.state = ObjectState.ERROR.value
        obj.report_status = ReportStatus.ERRORED.value
        obj.save()
        log.error("Job %s was aborted or timed out, object %s set to error",
                  job.id, obj.id)
        return False
    return True


def _record_object_failure(obj: HarvestObject, exc: Exception) -> None:
    """Turn an exception of a stage into an object error; the object ends ERROR."""
    importing = import_raised(obj)  # its move to IMPORT is not committed
    model.Session.rollback()
    stage = "Import" if importing else "Fetch"
    HarvestObjectError.create(
        "%s stage failed: %s: %s" % (stage, type(exc).__name__, exc), obj, stage
    )
    if importing:
        obj.import_finished = utcnow()
    else:
        obj.fetch_finished = utcnow()
    obj.state = ObjectState.ERROR.value
    obj.report_status = ReportStatus.ERRORED.value
    obj.save()


def _run_object_stages(harvester: IHarvester, obj: HarvestObject) -> None:
    object_id = obj.id  # reading it after a failed commit would query again
    try:
        fetch_and_import_stages(harvester, obj, save_fetch=_save_fetch)
    except Exception as exc:
        log.exception("Harvest object %s: stage raised", object_id)
        _record_object_failure(obj, exc)


_TRY_LOCK = sa.text("SELECT pg_try_advisory_lock(hashtextextended(:id, 0))")
_UNLOCK = sa.text("SELECT pg_advisory_unlock(hashtextextended(:id, 0))")
_LOCK_TIMEOUT = sa.text("SET lock_timeout = '10s'")
#: The move to FETCH (the only write of the lock connection) does not wait for
#: its WAL to reach the disk: lost only if PostgreSQL itself crashes within
#: the next fraction of a second, and then the object is simply fetched as if
#: that attempt had not started (its message is still unacknowledged). The
#: dataset's own commit, on the session's connection, stays synchronous (and
#: makes the earlier move durable with it).
_ASYNC_COMMIT = sa.text("SET synchronous_commit = off")


class _LockConnection(threading.local):
    """The connection a consumer thread holds its object locks on, kept from one
    message to the next (a pool checkout with its pre-ping and reset per message
    cost more than the lock itself). Autocommit: it is never in a transaction."""

    engine: Any = None
    connection: Optional[sa.engine.Connection] = None
    pid: int = 0

    def get(self) -> tuple[sa.engine.Connection, bool]:
        """The connection, and whether it was held already (may have gone stale)."""
        held = self.current()
        if held is not None:
            return held, True
        if self.connection is not None and self.pid != os.getpid():
            # A forked process shares the parent's socket: never use nor close it.
            _ABANDONED.append(self.connection)
            self.connection = None
        self.drop()  # closed, invalidated, or of another engine
        engine = model.meta.engine
        connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        # Its writes (_save_fetch) never wait long for a row lock of this process.
        connection.execute(_LOCK_TIMEOUT)
        connection.execute(_ASYNC_COMMIT)
        self.connection, self.engine, self.pid = connection, engine, os.getpid()
        return connection, False

    def current(self) -> Optional[sa.engine.Connection]:
        """The connection if this thread holds one for the current engine."""
        held = self.connection
        if (held is None or self.engine is not model.meta.engine
                or self.pid != os.getpid() or held.closed or held.invalidated):
            return None
        return held

    def drop(self) -> None:
        """Forget the connection; closing it ends its database session, which
        releases whatever lock it still held."""
        connection, self.connection = self.connection, None
        if connection is not None:
            try:
                connection.invalidate()
                connection.close()
            except Exception:  # noqa: BLE001 - it is being thrown away
                log.debug("Lock connection discarded", exc_info=True)


_lock_connection = _LockConnection()
_ABANDONED: list[sa.engine.Connection] = []


def _try_lock(key: dict[str, str]) -> tuple[sa.engine.Connection, bool]:
    """Try the lock; the connection kept from the previous message may have died
    meanwhile (e.g. the database restarted): then once more on a new one."""
    while True:
        connection, reused = _lock_connection.get()
        try:
            return connection, bool(connection.execute(_TRY_LOCK, key).scalar())
        except DatabaseError:
            _lock_connection.drop()
            if not reused:
                raise


@contextmanager
def _exclusive(object_id: str) -> Iterator[bool]:
    """Hold a PostgreSQL advisory lock on an object while it is processed.

    Yields False when another consumer holds it: the message is a duplicate of one
    being handled right now (re-sent, or re-delivered by a broker that lost sight
    of the first consumer). The lock lives on a connection of its own (one per
    consumer thread, kept across messages), so that the stages' commits and
    rollbacks do not touch it; it goes when that connection closes, e.g. when
    the consumer dies.
    """
    key = {"id": object_id}
    connection, locked = _try_lock(key)
    try:
        yield locked
    finally:
        if locked:
            try:
                connection.execute(_UNLOCK, key)
            except DatabaseError:
                _lock_connection.drop()  # ending its session releases the lock


#: What the move to ``FETCH`` changes (:func:`_save_fetch`).
_FETCH_MOVE = ("state", "fetch_started", "retry_times")


def _save_fetch(obj: HarvestObject) -> None:
    """Commit the object's move to ``FETCH`` (with its attempt count) on the
    connection holding its lock: one autocommitted statement, while the session
    keeps its transaction (no commit, no new connection checkout with its
    pre-ping). When the session has anything else to commit, ``obj.save()``."""
    connection = _lock_connection.current()
    pending: set[str] = set(sa.inspect(obj).committed_state) - set(_FETCH_MOVE)
    if connection is None or pending or session_has_changes(besides=obj):
        obj.save()
        return
    values = {key: getattr(obj, key) for key in _FETCH_MOVE}
    table = HarvestObject.__table__
    connection.execute(sa.update(table).where(table.c.id == obj.id).values(**values))
    for key, value in values.items():
        set_committed_value(obj, key, value)


def _skip_if_done(obj: HarvestObject, delivery: _Delivery) -> bool:
    if obj.state not in _FINAL_STATES:
        return False
    log.info("Harvest object %s is %s already; message ignored", obj.id, obj.state)
    delivery.ack()
    return True


def _fetch_object(obj: HarvestObject, delivery: _Delivery) -> Optional[bool]:
    """Run the stages of an object this consumer holds the lock of."""
    if not _may_fetch(obj):
        delivery.ack()
        return False
    object_id = obj.id
    source_type = obj.source.type if obj.source else None
    started = utcnow()
    with watching_connections() as connection_lost:
        try:
            found = harvesters_named(source_type) if source_type else []
            if not found:
                obj.save()  # the attempt counted by _may_fetch
            for harvester in found:
                _run_object_stages(harvester, obj)
        except Exception:
            # As in _handle_gather: a consequence of the lost connection.
            if not connection_lost():
                raise
    if connection_lost() and forget_fetch_attempt(object_id, started):
        delivery.reject()
        return None
    discard_session()
    delivery.ack()
    return None


def _handle_fetch(config: Config, body: Any, delivery: _Delivery) -> Optional[bool]:
    """Handle one fetch message (``config`` unused: the handlers share a shape)."""
    object_id = _message_id(body, MessageKey.OBJECT.value,
                            "No harvest object id received")
    if object_id is None:
        delivery.ack()
        return False
    log.info("Received harvest object id: %s", object_id)
    with _exclusive(object_id) as locked:
        if not locked:
            log.info("Harvest object %s is being processed by another consumer; "
                     "message given back", object_id)
            discard_session()
            delivery.reject()
            return None
        # Loaded once locked (a consumer that held it may have finished it), with
        # its job and source: one query instead of three.
        obj, outcome = _load_target(_load_object, object_id, "object", delivery)
        if obj is None:
            return outcome
        if _skip_if_done(obj, delivery):
            return False
        return _fetch_object(obj, delivery)


def _load_object(object_id: str) -> Optional[HarvestObject]:
    return model.Session.query(HarvestObject).options(
        orm.joinedload(HarvestObject.job), orm.joinedload(HarvestObject.source),
    ).filter(HarvestObject.id == object_id).populate_existing().first()


def gather_callback(config: Config, channel: Any, method: Any, header: Any,
                    body: Any) -> Optional[bool]:
    """Handle one gather message ``{"harvest_job_id": ...}``.

    Gathers the job with its harvester and publishes one fetch message per object
    created; acknowledges the message once done. A job that cannot be loaded
    because of a database error is left unacknowledged.
    """
    return _handle_gather(config, body, _legacy_delivery(channel, method))


def fetch_callback(config: Config, channel: Any, method: Any, header: Any,
                   body: Any) -> Optional[bool]:
    """Handle one fetch message ``{"harvest_object_id": ...}``.

    Runs the fetch and import stages of the object with every harvester named
    like its source type, then acknowledges the message.
    """
    return _handle_fetch(config, body, _legacy_delivery(channel, method))


# -- consumer loops ----------------------------------------------------------------

_Handler = Callable[[Any, _Delivery], Optional[bool]]


def _reject_later(queue: QueueBackend, message: Message) -> None:
    time.sleep(RETRY_DELAY_SECONDS)
    queue.reject(message)


def _handle(queue: QueueBackend, message: Message, handler: _Handler) -> None:
    """Handle one message; whatever goes wrong, the consumer survives."""
    delivery = _Delivery(ack=lambda: queue.ack(message),
                         reject=lambda: _reject_later(queue, message))
    try:
        handler(message.body, delivery)
    except mq.BrokerError:
        raise
    except (OperationalError, InterfaceError, PendingRollbackError):
        log.exception("Database unavailable while handling %.200r; it will be "
                      "retried", message.body)
        discard_session()
        delivery.reject()
    except Exception:
        log.exception("Unexpected error while handling %.200r; message dropped",
                      message.body)
        discard_session()
        delivery.ack()


def _consume(config: Config, spec: QueueSpec, handler: _Handler,
             stop_after: Optional[int], idle_timeout: Optional[float],
             progress: list[int]) -> None:
    """Consume on one broker connection, counting handled messages in ``progress``."""
    with legacy.open_queue(config, spec) as queue, \
            closing(queue.consume(idle_timeout)) as messages:
        for message in messages:
            _handle(queue, message, handler)
            progress[0] += 1
            if stop_after is not None and progress[0] >= stop_after:
                return


def _run_consumer(config: Config, spec: QueueSpec, handler: _Handler,
                  stop_after: Optional[int], idle_timeout: Optional[float]) -> int:
    logging.getLogger("amqplib").setLevel(logging.INFO)
    progress = [0]
    while stop_after is None or progress[0] < stop_after:
        try:
            _consume(config, spec, handler, stop_after, idle_timeout, progress)
            break
        except mq.BrokerError as exc:
            log.warning("Queue broker connection lost (%s); reconnecting in %s s",
                        exc, RECONNECT_DELAY_SECONDS)
            time.sleep(RECONNECT_DELAY_SECONDS)
    return progress[0]


def run_gather_consumer(config: Config, stop_after: Optional[int] = None,
                        idle_timeout: Optional[float] = None) -> int:
    """Consume the gather queue: gather each job and queue its objects.

    Runs forever by default; idle periods and broken messages are normal, and a
    lost broker connection is re-opened.

    :param config: the configuration (broker, site, limits)
    :param stop_after: return after handling this many messages
    :param idle_timeout: return after this many seconds without a message
    :returns: the number of messages handled
    """
    return _run_consumer(config, legacy.gather_spec(config),
                         functools.partial(_handle_gather, config),
                         stop_after, idle_timeout)


def run_fetch_consumer(config: Config, stop_after: Optional[int] = None,
                       idle_timeout: Optional[float] = None) -> int:
    """Consume the fetch queue: fetch and import each object.

    Parameters and return value as :func:`run_gather_consumer`.
    """
    return _run_consumer(config, legacy.fetch_spec(config),
                         functools.partial(_handle_fetch, config),
                         stop_after, idle_timeout)
