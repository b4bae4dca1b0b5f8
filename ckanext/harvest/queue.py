"""Stage drivers and the legacy queue API of the harvest framework.

Two queues carry the work: *gather* (one message per harvest job) and *fetch* (one
message per harvest object; its consumer runs the fetch and the import stage).
The brokers live behind :mod:`ckanext.harvest.mq`; this module keeps the public
names of the original extension as a facade over it and drives the stages:

* :func:`gather_callback` / :func:`fetch_callback` handle one message each, with the
  pika-style signature ``(channel, method, header, body)``;
* :func:`run_gather_consumer` / :func:`run_fetch_consumer` are the long-running
  consumer loops (``ckan harvester gather-consumer`` / ``fetch-consumer``).

A message is acknowledged only once the work it asked for is committed. A message
delivered again (after a consumer died) is handled idempotently: a job already
gathered is not gathered again (its objects still ``WAITING`` and not queued are
re-sent) and an object already ``COMPLETE`` or ``ERROR`` is skipped. An exception
raised by a harvester is recorded as a gather or object error and the consumer
goes on with the next message.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import time
from contextlib import closing, contextmanager
from typing import Any, Callable, Iterator, Optional

import pika
import redis as redis_py
import sqlalchemy as sa
from ckan import model
from ckan.plugins.toolkit import config
from sqlalchemy.exc import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    PendingRollbackError,
    SQLAlchemyError,
)

from ckanext.harvest import mq
from ckanext.harvest.lib import harvesters
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
from ckanext.harvest.mq import amqp as mq_amqp
from ckanext.harvest.mq import redis as mq_redis
from ckanext.harvest.mq.base import Message, QueueBackend, QueueSpec

# ``config`` and ``log`` are read at call time through this module: downstream
# test suites patch them (``...queue.config``, ``...queue.log.error``).
log = logging.getLogger(__name__)

__all__ = [
    "get_gather_publisher",
    "get_gather_consumer",
    "get_fetch_publisher",
    "get_fetch_consumer",
    "get_harvester",
]

PORT = 5672
USERID = "guest"
PASSWORD = "guest"
HOSTNAME = "localhost"
VIRTUAL_HOST = "/"
MQ_TYPE = "redis"

REDIS_PORT = 6379
REDIS_DB = 0

EXCHANGE_TYPE = "direct"
EXCHANGE_NAME = "ckan.harvest"

#: Redis: a message taken by nobody alive is re-queued after this many seconds.
GATHER_RESUBMIT_SECONDS = 7200
FETCH_RESUBMIT_SECONDS = 180
#: A fetch message delivered this many times marks its object ``ERROR``.
MAX_FETCH_RETRIES = 5
#: Pause before a message is given back after a database error (no busy loop).
RETRY_DELAY_SECONDS = 1.0
#: Pause before reconnecting to a broker that dropped the connection.
RECONNECT_DELAY_SECONDS = 2.0

_FINAL_STATES = (ObjectState.COMPLETE.value, ObjectState.ERROR.value)


# -- configuration and names -----------------------------------------------------


def _backend() -> str:
    try:
        return mq.backend_name(config)
    except mq.UnknownBackendError:
        raise mq.UnknownBackendError(
            "not a valid queue type %s" % config.get("ckan.harvest.mq.type", None)
        ) from None


def _gather_spec() -> QueueSpec:
    return mq.gather_spec(mq.site_id(config))


def _fetch_spec() -> QueueSpec:
    return mq.fetch_spec(mq.site_id(config))


def _known_spec(routing_key: str) -> Optional[QueueSpec]:
    """The harvest queue of this site with ``routing_key``, if there is one."""
    for spec in (_gather_spec(), _fetch_spec()):
        if spec.routing_key == routing_key:
            return spec
    return None


def _spec_for(routing_key: str) -> QueueSpec:
    """The harvest queue with ``routing_key``, or an ad-hoc one for other keys."""
    return _known_spec(routing_key) or QueueSpec(name=routing_key,
                                                 routing_key=routing_key)


def _open(spec: QueueSpec) -> QueueBackend:
    return mq.open_queue(config, spec, logger=log)


def get_gather_queue_name() -> str:
    """``ckan.harvest.<site_id>.gather``"""
    return _gather_spec().name


def get_fetch_queue_name() -> str:
    """``ckan.harvest.<site_id>.fetch``"""
    return _fetch_spec().name


def get_gather_routing_key() -> str:
    """``ckanext-harvest:<site_id>:harvest_job_id``"""
    return _gather_spec().routing_key


def get_fetch_routing_key() -> str:
    """``ckanext-harvest:<site_id>:harvest_object_id``"""
    return _fetch_spec().routing_key


# -- connections -------------------------------------------------------------------


def get_connection() -> Any:
    """Return a new connection to the configured broker (pika or redis-py).

    :raises UnknownBackendError: ``not a valid queue type <value>``
    """
    if _backend() == mq.AMQP:
        return get_connection_amqp()
    return get_connection_redis()


def get_connection_amqp() -> pika.BlockingConnection:
    """Open a pika ``BlockingConnection`` with the ``ckan.harvest.mq.*`` settings."""
    return pika.BlockingConnection(mq_amqp.parameters(config))


def get_connection_redis() -> redis_py.Redis:
    """Return a redis-py client (``ckan.redis.url`` unless an mq hostname is set)."""
    return mq_redis.connect(config)


# -- publishers --------------------------------------------------------------------


class Publisher:
    """AMQP publisher of one routing key (legacy API)."""

    def __init__(self, connection: Any, channel: Any, exchange: str,
                 routing_key: str) -> None:
        self.connection = connection
        self.channel = channel
        self.exchange = exchange
        self.routing_key = routing_key

    def send(self, body: dict[str, Any], **kw: Any) -> Any:
        """Publish ``body`` as JSON, persistently."""
        return self.channel.basic_publish(
            self.exchange, self.routing_key, json.dumps(body),
            properties=mq_amqp.persistent_properties(), **kw,
        )

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


class RedisPublisher:
    """Redis publisher of one routing key (legacy API)."""

    def __init__(self, redis: redis_py.Redis, routing_key: str) -> None:
        self.redis = redis
        self.routing_key = routing_key
        self._queue = mq_redis.RedisQueue(redis, _spec_for(routing_key))

    def send(self, body: dict[str, Any], **kw: Any) -> None:
        """Append ``body``; on the gather queue an identical pending one is removed."""
        self._queue.publish(body)

    def close(self) -> None:
        """Nothing to release."""


def get_publisher(routing_key: str) -> Any:
    """Return a publisher of ``routing_key`` on the configured broker.

    On AMQP the queue of a harvest routing key is declared and bound as well, so
    nothing is lost when no consumer ever ran.
    """
    if _backend() == mq.AMQP:
        connection = get_connection_amqp()
        channel = connection.channel()
        mq_amqp.declare(channel, _known_spec(routing_key))
        channel.confirm_delivery()
        return Publisher(connection, channel, EXCHANGE_NAME, routing_key)
    return RedisPublisher(get_connection_redis(), routing_key)


def get_gather_publisher() -> Any:
    """Publisher of the gather queue: ``send({"harvest_job_id": id})``."""
    return get_publisher(get_gather_routing_key())


def get_fetch_publisher() -> Any:
    """Publisher of the fetch queue: ``send({"harvest_object_id": id})``."""
    return get_publisher(get_fetch_routing_key())


# -- consumers ---------------------------------------------------------------------


class FakeMethod:
    """Stand-in for a pika method frame: the Redis "delivery tag" is the body."""

    def __init__(self, message: Any) -> None:
        self.delivery_tag = message


class RedisConsumer:
    """Redis consumer of one routing key, with a pika-channel-like API."""

    def __init__(self, redis: redis_py.Redis, routing_key: str) -> None:
        self.redis = redis
        self.routing_key = routing_key
        self.message_key = routing_key.split(":")[-1]
        self._queue = mq_redis.RedisQueue(redis, _spec_for(routing_key), logger=log)

    def consume(self, queue: Optional[str] = None,
                **kwargs: Any) -> Iterator[tuple[FakeMethod, RedisConsumer, str]]:
        """Yield ``(FakeMethod(body), self, body)`` forever (``queue`` is ignored)."""
        for message in self._queue.consume():
            yield FakeMethod(message.body), self, message.body

    def persistance_key(self, message: str) -> str:
        """Return ``<routing key>:<id>``, the key marking ``message`` as taken."""
        return self.routing_key + ":" + json.loads(message)[self.message_key]

    def basic_ack(self, message: Optional[str]) -> None:
        """Acknowledge the message whose body (delivery tag) is ``message``."""
        if message is None:  # what basic_get returns for an empty queue
            return
        self._queue.ack(Message(body=message, tag=message))

    def basic_get(self, queue: Optional[str] = None
                  ) -> tuple[FakeMethod, RedisConsumer, Optional[str]]:
        """Take one message; the body is None when the queue is empty."""
        message = self._queue.get()
        body = message.body if message is not None else None
        return FakeMethod(body), self, body

    def queue_purge(self, queue: Optional[str] = None) -> int:
        """Drop this queue's messages; returns how many."""
        return self._queue.purge()

    def close(self) -> None:
        """Give unacknowledged messages back and stop the liveness heartbeat."""
        self._queue.close()


class AmqpConsumer:
    """AMQP consumer: the pika channel, harvest queue declared, prefetch 1.

    Every pika channel method is available; ``consume``, ``basic_get`` and
    ``queue_purge`` default to the harvest queue.
    """

    def __init__(self, queue: mq_amqp.AmqpQueue) -> None:
        self._queue = queue
        self.connection = queue.connection
        self.channel = queue.channel

    def consume(self, queue: Optional[str] = None,
                **kwargs: Any) -> Iterator[tuple[Any, Any, bytes]]:
        """Yield ``(method, properties, body)`` forever, surviving idle periods."""
        for message in self._queue.consume():
            yield message.method, message.properties, message.body.encode("utf-8")

    def basic_ack(self, delivery_tag: int = 0, multiple: bool = False) -> None:
        """Acknowledge a delivery (safe while :meth:`consume` is running)."""
        if multiple:
            self.channel.basic_ack(delivery_tag=delivery_tag, multiple=True)
        else:
            self._queue.ack(Message(body="", tag=delivery_tag))

    def basic_get(self, queue: Optional[str] = None, auto_ack: bool = False) -> Any:
        """``basic_get`` on ``queue`` (default: the harvest queue)."""
        return self.channel.basic_get(queue or self._queue.spec.name, auto_ack=auto_ack)

    def queue_purge(self, queue: Optional[str] = None) -> Any:
        """Purge ``queue`` (default: the harvest queue)."""
        return self.channel.queue_purge(queue or self._queue.spec.name)

    def close(self) -> None:
        """Close the connection; unacknowledged messages return to the queue."""
        self._queue.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.channel, name)


def get_consumer(queue_name: str, routing_key: str) -> Any:
    """Return a consumer of a queue on the configured broker."""
    if _backend() == mq.AMQP:
        spec = QueueSpec(name=queue_name, routing_key=routing_key)
        return AmqpConsumer(mq_amqp.AmqpQueue(get_connection_amqp(), spec))
    return RedisConsumer(get_connection_redis(), routing_key)


def get_gather_consumer() -> Any:
    """Consumer of the gather queue."""
    consumer = get_consumer(get_gather_queue_name(), get_gather_routing_key())
    log.debug("Gather queue consumer registered")
    return consumer


def get_fetch_consumer() -> Any:
    """Consumer of the fetch queue."""
    consumer = get_consumer(get_fetch_queue_name(), get_fetch_routing_key())
    log.debug("Fetch queue consumer registered")
    return consumer


# -- maintenance -------------------------------------------------------------------


def purge_queues() -> None:
    """Drop every pending message of this site's gather and fetch queues.

    Nothing else is touched: other keys of the Redis database and other sites'
    queues survive. On Redis, messages taken but not acknowledged are dropped too.
    """
    backend = _backend()
    for spec, label in ((_gather_spec(), "gather"), (_fetch_spec(), "fetch")):
        with _open(spec) as queue:
            queue.purge()
        if backend == mq.AMQP:
            log.info("AMQP queue purged: %s", spec.name)
        else:
            log.info("Redis %s queue purged", label)


def resubmit_jobs() -> None:
    """Redis: re-queue the work that no live consumer holds any more.

    Messages held by dead consumers go back to the head of their queue at once;
    persistence markers with nobody behind them are re-queued once older than
    180 s (fetch) or 7200 s (gather). Does nothing on AMQP, whose broker
    re-delivers by itself.
    """
    if _backend() != mq.REDIS:
        return
    client = get_connection_redis()
    mq_redis.recover(client, _fetch_spec(), FETCH_RESUBMIT_SECONDS, "Fetch Queue")
    mq_redis.recover(client, _gather_spec(), GATHER_RESUBMIT_SECONDS, "Gather Queue")


def resubmit_objects() -> None:
    """Redis: re-send ``WAITING`` objects of gathered jobs that are not queued.

    Jobs whose gather message is still queued or being handled are left out:
    their objects are being published.

    Does nothing on AMQP (its queue contents cannot be listed).
    """
    if _backend() != mq.REDIS:
        return
    client = get_connection_redis()
    queued = mq_redis.queued_ids(client, _fetch_spec())
    # A job whose gather message is still pending or being handled is publishing
    # its objects right now (gather_finished is set before that): its gather
    # consumer, or the redelivery of its message, sends them.
    gathering = mq_redis.queued_ids(client, _gather_spec())
    waiting = (
        model.Session.query(HarvestObject.id)
        .join(HarvestJob, HarvestObject.harvest_job_id == HarvestJob.id)
        .filter(HarvestObject.state == ObjectState.WAITING.value)
        .filter(HarvestJob.gather_finished.isnot(None))
        .filter(HarvestJob.id.notin_(gathering))
        .order_by(HarvestObject.gathered)
    )
    missing = [object_id for (object_id,) in waiting if object_id not in queued]
    if not missing:
        return
    publisher = get_fetch_publisher()
    try:
        for object_id in missing:
            publisher.send({"harvest_object_id": object_id})
            log.debug("Re-sent object %s to the fetch queue", object_id)
    finally:
        publisher.close()


# -- harvesters and stages ---------------------------------------------------------


def get_harvester(source_type: str) -> Any:
    """Return the first ``IHarvester`` plugin named ``source_type``, or None."""
    return harvesters.find_harvester(source_type)


def _harvesters_named(source_type: str) -> list[Any]:
    return [h for h in harvesters.all_harvesters()
            if harvesters.harvester_name(h) == source_type]


def _delete_objects(job: HarvestJob) -> None:
    """Delete the job's objects (their extras and errors go by cascade); commit."""
    model.Session.query(HarvestObject).filter(
        HarvestObject.harvest_job_id == job.id
    ).delete(synchronize_session=False)
    model.Session.commit()


def gather_stage(harvester: Any, job: HarvestJob) -> Any:
    """Run ``harvester.gather_stage(job)`` with the job's gather timestamps.

    ``gather_finished`` is set and saved even when the harvester raises; then the
    objects of the job are deleted and the exception propagates.

    :returns: what the harvester returned (a list of object ids on success)
    """
    job.gather_started = utcnow()
    job.save()
    try:
        return harvester.gather_stage(job)
    except BaseException:
        model.Session.rollback()
        _delete_objects(job)
        raise
    finally:
        job.gather_finished = utcnow()
        job.save()


def _report_status(obj: HarvestObject) -> str:
    if obj.state == ObjectState.ERROR.value:
        return ReportStatus.ERRORED.value
    if obj.current is False:
        return ReportStatus.DELETED.value
    same_package = model.Session.query(HarvestObject).filter(
        HarvestObject.package_id == obj.package_id
    ).count()
    return (ReportStatus.UPDATED if same_package >= 2 else ReportStatus.ADDED).value


def _import(harvester: Any, obj: HarvestObject) -> bool:
    """Run the import stage; returns False when the object is done ("unchanged")."""
    obj.import_started = utcnow()
    obj.state = ObjectState.IMPORT.value
    obj.save()
    result = harvester.import_stage(obj)
    obj.import_finished = utcnow()
    if result:
        obj.state = ObjectState.COMPLETE.value
        if result == "unchanged":
            obj.report_status = ReportStatus.NOT_MODIFIED.value
            obj.save()
            return False
    else:
        obj.state = ObjectState.ERROR.value
    # Saved with the report status: a crash in between would leave a finished
    # object without one, and its redelivery is skipped as already done.
    return True


def fetch_and_import_stages(harvester: Any, obj: HarvestObject) -> None:
    """Run the fetch stage of ``obj``, then its import stage if fetch returned True.

    Sets the state, timestamps and report status of the object (each step
    committed; the final state together with the report status). Exceptions
    raised by the harvester propagate.
    """
    obj.fetch_started = utcnow()
    obj.state = ObjectState.FETCH.value
    obj.save()
    result = harvester.fetch_stage(obj)
    obj.fetch_finished = utcnow()
    obj.save()
    if result is True:
        if not _import(harvester, obj):
            return
    elif result == "unchanged":
        obj.state = ObjectState.COMPLETE.value
        obj.report_status = ReportStatus.NOT_MODIFIED.value
        obj.save()
        return
    else:
        obj.state = ObjectState.ERROR.value
    model.Session.flush()
    obj.report_status = _report_status(obj)
    obj.save()


# -- lost database connections ----------------------------------------------------
#
# A database connection that breaks in the middle of a stage (server restarted,
# connection terminated by an administrator, network cut) is not the record's fault:
# harvesters catch such errors like any other and record them, which would end the
# job or the object in error for good. The stage drivers notice them instead and
# retry the message, after undoing what the failed attempt recorded.

#: Connection failures seen by this process (pre-ping reconnections excluded).
_lost_connections = [0]


def _count_lost_connection(context: Any) -> None:
    if context.is_disconnect and not getattr(context, "is_pre_ping", False):
        _lost_connections[0] += 1


def _discard_session() -> None:
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
def _watching_connections() -> Iterator[Callable[[], bool]]:
    """Yield a function telling whether a database connection broke since entry."""
    if not sa.event.contains(sa.engine.Engine, "handle_error", _count_lost_connection):
        sa.event.listen(sa.engine.Engine, "handle_error", _count_lost_connection)
    before = _lost_connections[0]
    yield lambda: _lost_connections[0] != before


def _forget_gather_attempt(job_id: str, started: datetime.datetime) -> None:
    """Undo a gather that lost its database connection, so that it runs again:
    the job's objects and the gather errors of the attempt go, and the job is
    not gathered any more."""
    _discard_session()
    job = HarvestJob.get(job_id)
    if job is None:
        return
    _delete_objects(job)
    model.Session.query(HarvestGatherError).filter(
        HarvestGatherError.harvest_job_id == job_id,
        HarvestGatherError.created >= started,
    ).delete(synchronize_session=False)
    job.gather_started = None
    job.gather_finished = None
    job.save()
    log.warning("Harvest job %s: the database connection was lost while gathering; "
                "the gather will be retried", job_id)


def _forget_fetch_attempt(object_id: str, started: datetime.datetime) -> bool:
    """Undo an unsuccessful fetch/import that lost its database connection: the
    object errors of the attempt go and the object is ``WAITING`` again.

    :returns: False when there was nothing to undo (the object ended ``COMPLETE``)
    """
    _discard_session()
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


def _run_gather(harvester: Any, job: HarvestJob) -> Any:
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


def _publish_objects(ids: list[str]) -> None:
    publisher = get_fetch_publisher()
    try:
        for object_id in ids:
            publisher.send({"harvest_object_id": object_id})
    finally:
        publisher.close()


def _resend_waiting_objects(job: HarvestJob) -> None:
    """Gather message for a job gathered already (a redelivery): do not gather
    again, but make sure its ``WAITING`` objects are on the fetch queue, in case
    the previous attempt died before publishing them all."""
    waiting = [object_id for (object_id,) in model.Session.query(HarvestObject.id)
               .filter(HarvestObject.harvest_job_id == job.id)
               .filter(HarvestObject.state == ObjectState.WAITING.value)
               .order_by(HarvestObject.gathered)]
    if waiting and _backend() == mq.REDIS:
        queued = mq_redis.queued_ids(get_connection_redis(), _fetch_spec())
        waiting = [object_id for object_id in waiting if object_id not in queued]
    log.info("Harvest job %s was gathered already; %d waiting object(s) re-sent",
             job.id, len(waiting))
    if waiting:
        _publish_objects(waiting)


def _gather_job(job: HarvestJob) -> Optional[bool]:
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
        _delete_objects(job)
    ids = _run_gather(harvester, job)
    if not isinstance(ids, list):
        log.error("Gather stage failed")
        return False
    if not ids:
        log.error("No harvest objects to fetch")
        return False
    _publish_objects(_limit_objects(job, ids))
    return None


def _limit_objects(job: HarvestJob, ids: list[str]) -> list[str]:
    """At most ``ckan.harvest.max_objects_per_job`` objects; drop the others.

    The dropped objects are deleted and a gather error says so: the job is not
    error-free, so an incremental harvester gathers them again next time.
    """
    limit = config.get("ckan.harvest.max_objects_per_job")
    if not limit or len(ids) <= limit:
        return ids
    kept, dropped = ids[:limit], ids[limit:]
    for start in range(0, len(dropped), 1000):
        model.Session.query(HarvestObject).filter(
            HarvestObject.id.in_(dropped[start:start + 1000])
        ).delete(synchronize_session=False)
    HarvestGatherError.create(
        "The harvester gathered {} objects, more than the {} a job may have "
        "(ckan.harvest.max_objects_per_job): the first {} are harvested, the "
        "other {} are left for the next job".format(
            len(ids), limit, len(kept), len(dropped)), job)
    log.warning("Job %s limited to %d of %d objects", job.id, limit, len(ids))
    return kept


def _load_target(
    cls: Any, target_id: str, what: str, delivery: _Delivery
) -> tuple[Any, Optional[bool]]:
    """Load the job or object a message names.

    When it cannot be loaded the message is settled here: given back when the
    database failed (outcome None), dropped when the row does not exist
    (outcome False).
    """
    try:
        found = cls.get(target_id)
    except DatabaseError:
        log.exception("Could not load harvest %s %s", what, target_id)
        _discard_session()
        delivery.reject()
        return None, None
    if found is None:
        log.error("Harvest %s does not exist: %s", what, target_id)
        delivery.ack()
        return None, False
    return found, None


def _handle_gather(body: Any, delivery: _Delivery) -> Optional[bool]:
    job_id = _message_id(body, "harvest_job_id", "No harvest job id received")
    if job_id is None:
        delivery.ack()
        return False
    job, outcome = _load_target(HarvestJob, job_id, "job", delivery)
    if job is None:
        return outcome
    if job.gather_finished is not None:
        _resend_waiting_objects(job)
        delivery.ack()
        return False
    started = utcnow()
    with _watching_connections() as connection_lost:
        try:
            result = _gather_job(job)
        except Exception:
            # Once the connection broke, whatever follows (PendingRollbackError,
            # errors of the harvester) is its consequence: the attempt is undone.
            if not connection_lost():
                raise
    if connection_lost():
        _forget_gather_attempt(job_id, started)
        delivery.reject()
        return None
    _discard_session()
    delivery.ack()
    return result


def _may_fetch(obj: HarvestObject) -> bool:
    """Count the attempt; refuse objects retried too often or of finished jobs."""
    obj.retry_times = (obj.retry_times or 0) + 1
    obj.save()
    if obj.retry_times >= MAX_FETCH_RETRIES:
        obj.state = ObjectState.ERROR.value
        obj.save()
        log.error("Too many consecutive retries for object %s", obj.id)
        return False
    job = obj.job
    if job is not None and job.status == JobStatus.FINISHED.value:
        obj.state = ObjectState.ERROR.value
        obj.report_status = ReportStatus.ERRORED.value
        obj.save()
        log.error("Job %s was aborted or timed out, object %s set to error",
                  job.id, obj.id)
        return False
    return True


def _record_object_failure(obj: HarvestObject, exc: Exception) -> None:
    """Turn an exception of a stage into an object error; the object ends ERROR."""
    model.Session.rollback()
    importing = obj.state == ObjectState.IMPORT.value
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


def _run_object_stages(harvester: Any, obj: HarvestObject) -> None:
    object_id = obj.id  # reading it after a failed commit would query again
    try:
        fetch_and_import_stages(harvester, obj)
    except Exception as exc:
        log.exception("Harvest object %s: stage raised", object_id)
        _record_object_failure(obj, exc)


@contextmanager
def _exclusive(object_id: str) -> Iterator[bool]:
    """Hold a PostgreSQL advisory lock on an object while it is processed.

    Yields False when another consumer holds it: the message is a duplicate of one
    being handled right now (re-sent, or re-delivered by a broker that lost sight
    of the first consumer). The lock lives on a connection of its own, so that the
    stages' commits and rollbacks do not touch it; it goes when that connection
    closes, e.g. when the consumer dies.
    """
    connection = model.meta.engine.connect()
    key = {"id": object_id}
    locked = False
    try:
        locked = bool(connection.execute(
            sa.text("SELECT pg_try_advisory_lock(hashtextextended(:id, 0))"), key
        ).scalar())
        yield locked
    finally:
        try:
            if locked:
                connection.execute(
                    sa.text("SELECT pg_advisory_unlock(hashtextextended(:id, 0))"), key)
        except DatabaseError:
            connection.invalidate()  # ending the database session releases the lock
        finally:
            connection.close()


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
    with _watching_connections() as connection_lost:
        try:
            for harvester in _harvesters_named(source_type) if source_type else []:
                _run_object_stages(harvester, obj)
        except Exception:
            # As in _handle_gather: a consequence of the lost connection.
            if not connection_lost():
                raise
    if connection_lost() and _forget_fetch_attempt(object_id, started):
        delivery.reject()
        return None
    _discard_session()
    delivery.ack()
    return None


def _handle_fetch(body: Any, delivery: _Delivery) -> Optional[bool]:
    object_id = _message_id(body, "harvest_object_id", "No harvest object id received")
    if object_id is None:
        delivery.ack()
        return False
    log.info("Received harvest object id: %s", object_id)
    obj, outcome = _load_target(HarvestObject, object_id, "object", delivery)
    if obj is None:
        return outcome
    if _skip_if_done(obj, delivery):
        return False
    with _exclusive(object_id) as locked:
        if not locked:
            log.info("Harvest object %s is being processed by another consumer; "
                     "message given back", object_id)
            _discard_session()
            delivery.reject()
            return None
        model.Session.refresh(obj)  # it may have been finished before we locked it
        if _skip_if_done(obj, delivery):
            return False
        return _fetch_object(obj, delivery)


def gather_callback(channel: Any, method: Any, header: Any, body: Any) -> Optional[bool]:
    """Handle one gather message ``{"harvest_job_id": ...}``.

    Gathers the job with its harvester and publishes one fetch message per object
    created; acknowledges the message once done. A job that cannot be loaded
    because of a database error is left unacknowledged.
    """
    return _handle_gather(body, _legacy_delivery(channel, method))


def fetch_callback(channel: Any, method: Any, header: Any, body: Any) -> Optional[bool]:
    """Handle one fetch message ``{"harvest_object_id": ...}``.

    Runs the fetch and import stages of the object with every harvester named
    like its source type, then acknowledges the message.
    """
    return _handle_fetch(body, _legacy_delivery(channel, method))


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
        _discard_session()
        delivery.reject()
    except Exception:
        log.exception("Unexpected error while handling %.200r; message dropped",
                      message.body)
        _discard_session()
        delivery.ack()


def _consume(spec: QueueSpec, handler: _Handler, stop_after: Optional[int],
             idle_timeout: Optional[float], progress: list[int]) -> None:
    """Consume on one broker connection, counting handled messages in ``progress``."""
    with _open(spec) as queue, closing(queue.consume(idle_timeout)) as messages:
        for message in messages:
            _handle(queue, message, handler)
            progress[0] += 1
            if stop_after is not None and progress[0] >= stop_after:
                return


def _run_consumer(spec: QueueSpec, handler: _Handler, stop_after: Optional[int],
                  idle_timeout: Optional[float]) -> int:
    logging.getLogger("amqplib").setLevel(logging.INFO)
    progress = [0]
    while stop_after is None or progress[0] < stop_after:
        try:
            _consume(spec, handler, stop_after, idle_timeout, progress)
            break
        except mq.BrokerError as exc:
            log.warning("Queue broker connection lost (%s); reconnecting in %s s",
                        exc, RECONNECT_DELAY_SECONDS)
            time.sleep(RECONNECT_DELAY_SECONDS)
    return progress[0]


def run_gather_consumer(stop_after: Optional[int] = None,
                        idle_timeout: Optional[float] = None) -> int:
    """Consume the gather queue: gather each job and queue its objects.

    Runs forever by default; idle periods and broken messages are normal, and a
    lost broker connection is re-opened.

    :param stop_after: return after handling this many messages
    :param idle_timeout: return after this many seconds without a message
    :returns: the number of messages handled
    """
    return _run_consumer(_gather_spec(), _handle_gather, stop_after, idle_timeout)


def run_fetch_consumer(stop_after: Optional[int] = None,
                       idle_timeout: Optional[float] = None) -> int:
    """Consume the fetch queue: fetch and import each object.

    :param stop_after: return after handling this many messages
    :param idle_timeout: return after this many seconds without a message
    :returns: the number of messages handled
    """
    return _run_consumer(_fetch_spec(), _handle_fetch, stop_after, idle_timeout)
