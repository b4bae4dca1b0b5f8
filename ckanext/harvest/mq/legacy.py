"""The publisher/consumer API of the original extension, over the queue backends.

Downstream code and tests use these objects through :mod:`ckanext.harvest.queue`
(which re-exports them): pika-style consumers (``consume``, ``basic_get``,
``basic_ack``, ``queue_purge``), publishers with ``send(body)``, the connections,
the queue names of a site, purging and the Redis resubmission of lost messages.

Every function that depends on configuration takes it as its first parameter,
``config``, and reads it when called: the facade passes its module attribute
``ckanext.harvest.queue.config``, which downstream suites patch with a plain
``dict``. Nothing here reads ``toolkit.config`` itself.

Like the rest of :mod:`ckanext.harvest.mq`, this module knows nothing of jobs,
objects or the database. It logs through the logger of the facade
(``ckanext.harvest.queue``), whose ``error`` method downstream tests patch.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Iterator, Mapping, Optional, Union

import pika
import redis as redis_py

from ckanext.harvest import mq, options
from ckanext.harvest.mq import amqp as mq_amqp
from ckanext.harvest.mq import redis as mq_redis
from ckanext.harvest.mq.base import Message, QueueBackend, QueueSpec

#: The facade's logger: code of the legacy API logs where it always did.
LOGGER_NAME = "ckanext.harvest.queue"
log = logging.getLogger(LOGGER_NAME)

# Broker settings of the original module, kept as names; values from one place.
PORT = mq_amqp.DEFAULT_PORT
USERID = str(options.declared_default(options.MQ_USER_ID))
PASSWORD = mq_amqp.DEFAULT_PASSWORD
HOSTNAME = mq_amqp.DEFAULT_HOST
VIRTUAL_HOST = str(options.declared_default(options.MQ_VIRTUAL_HOST))
MQ_TYPE = mq.REDIS
REDIS_PORT = mq_redis.DEFAULT_PORT
REDIS_DB = int(options.declared_default(options.MQ_REDIS_DB))
EXCHANGE_TYPE = mq_amqp.EXCHANGE_TYPE
EXCHANGE_NAME = mq_amqp.EXCHANGE_NAME

#: Redis: a message taken by nobody alive is re-queued after this many seconds.
GATHER_RESUBMIT_SECONDS = 7200
FETCH_RESUBMIT_SECONDS = 180


# -- configuration and names -----------------------------------------------------


def backend(config: Mapping[str, Any]) -> str:
    """The configured backend, ``'redis'`` or ``'amqp'``.

    :raises UnknownBackendError: ``not a valid queue type <value>``
    """
    try:
        return mq.backend_name(config)
    except mq.UnknownBackendError:
        raise mq.UnknownBackendError(
            "not a valid queue type %s" % config.get(options.MQ_TYPE, None)
        ) from None


def gather_spec(config: Mapping[str, Any]) -> QueueSpec:
    """The gather queue of the configured site."""
    return mq.gather_spec(mq.site_id(config))


def fetch_spec(config: Mapping[str, Any]) -> QueueSpec:
    """The fetch queue of the configured site."""
    return mq.fetch_spec(mq.site_id(config))


def _known_spec(config: Mapping[str, Any], routing_key: str) -> Optional[QueueSpec]:
    """The harvest queue of this site with ``routing_key``, if there is one."""
    for spec in (gather_spec(config), fetch_spec(config)):
        if spec.routing_key == routing_key:
            return spec
    return None


def _redis_spec(routing_key: str) -> QueueSpec:
    # The Redis backend keys everything by the routing key; the name is AMQP's.
    return QueueSpec(name=routing_key, routing_key=routing_key)


def open_queue(config: Mapping[str, Any], spec: QueueSpec) -> QueueBackend:
    """Connect to the configured broker; malformed Redis messages are logged here."""
    return mq.open_queue(config, spec, logger=log, heartbeat_ttl=consumer_timeout(config))


def consumer_timeout(config: Mapping[str, Any]) -> float:
    """``ckan.harvest.mq.consumer_timeout``: seconds of silence after which a
    Redis consumer counts as dead.

    :raises ValueError: not a whole number of seconds, 2 or more
    """
    raw = options.value(config, options.MQ_CONSUMER_TIMEOUT)
    try:
        seconds = int(str(raw).strip())
    except ValueError:
        seconds = 0
    if seconds < 2:
        raise ValueError("%s must be a whole number of seconds, 2 or more (got %r)"
                         % (options.MQ_CONSUMER_TIMEOUT, raw))
    return float(seconds)


# -- connections -------------------------------------------------------------------


#: A broker connection: pika's ``BlockingConnection`` or a redis-py client.
Connection = Union[pika.BlockingConnection, redis_py.Redis]


def get_connection(config: Mapping[str, Any]) -> Connection:
    """Return a new connection to the configured broker (pika or redis-py).

    :raises UnknownBackendError: ``not a valid queue type <value>``
    """
    if backend(config) == mq.AMQP:
        return get_connection_amqp(config)
    return get_connection_redis(config)


def get_connection_amqp(config: Mapping[str, Any]) -> pika.BlockingConnection:
    """Open a pika ``BlockingConnection`` with the ``ckan.harvest.mq.*`` settings."""
    return pika.BlockingConnection(mq_amqp.parameters(config))


def get_connection_redis(config: Mapping[str, Any]) -> redis_py.Redis:
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
        self._queue = mq_redis.RedisQueue(redis, _redis_spec(routing_key))

    def send(self, body: dict[str, Any], **kw: Any) -> None:
        """Append ``body``; on the gather queue an identical pending one is removed."""
        self._queue.publish(body)

    def close(self) -> None:
        """Nothing to release."""


#: A publisher of either backend (both have ``send(body)`` and ``close()``).
AnyPublisher = Union["Publisher", "RedisPublisher"]


def get_publisher(config: Mapping[str, Any], routing_key: str) -> AnyPublisher:
    """Return a publisher of ``routing_key`` on the configured broker.

    On AMQP the queue of a harvest routing key is declared and bound as well, so
    nothing is lost when no consumer ever ran.
    """
    if backend(config) == mq.AMQP:
        connection = get_connection_amqp(config)
        channel = connection.channel()
        mq_amqp.declare(channel, _known_spec(config, routing_key))
        channel.confirm_delivery()
        return Publisher(connection, channel, EXCHANGE_NAME, routing_key)
    return RedisPublisher(get_connection_redis(config), routing_key)


def get_gather_publisher(config: Mapping[str, Any]) -> AnyPublisher:
    """Publisher of the gather queue: ``send({"harvest_job_id": id})``."""
    return get_publisher(config, gather_spec(config).routing_key)


def get_fetch_publisher(config: Mapping[str, Any]) -> AnyPublisher:
    """Publisher of the fetch queue: ``send({"harvest_object_id": id})``."""
    return get_publisher(config, fetch_spec(config).routing_key)


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
        self._queue = mq_redis.RedisQueue(redis, _redis_spec(routing_key), logger=log)

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


#: A consumer of either backend (pika-channel-like).
AnyConsumer = Union["AmqpConsumer", "RedisConsumer"]


def get_consumer(config: Mapping[str, Any], queue_name: str,
                 routing_key: str) -> AnyConsumer:
    """Return a consumer of a queue on the configured broker."""
    if backend(config) == mq.AMQP:
        spec = QueueSpec(name=queue_name, routing_key=routing_key)
        return AmqpConsumer(mq_amqp.AmqpQueue(get_connection_amqp(config), spec))
    return RedisConsumer(get_connection_redis(config), routing_key)


def get_gather_consumer(config: Mapping[str, Any]) -> AnyConsumer:
    """Consumer of the gather queue."""
    spec = gather_spec(config)
    consumer = get_consumer(config, spec.name, spec.routing_key)
    log.debug("Gather queue consumer registered")
    return consumer


def get_fetch_consumer(config: Mapping[str, Any]) -> AnyConsumer:
    """Consumer of the fetch queue."""
    spec = fetch_spec(config)
    consumer = get_consumer(config, spec.name, spec.routing_key)
    log.debug("Fetch queue consumer registered")
    return consumer


# -- maintenance -------------------------------------------------------------------


def purge_queues(config: Mapping[str, Any]) -> None:
    """Drop every pending message of this site's gather and fetch queues.

    Nothing else is touched: other keys of the Redis database and other sites'
    queues survive. On Redis, messages taken but not acknowledged are dropped too.
    """
    name = backend(config)
    for spec, label in ((gather_spec(config), "gather"), (fetch_spec(config), "fetch")):
        with open_queue(config, spec) as queue:
            queue.purge()
        if name == mq.AMQP:
            log.info("AMQP queue purged: %s", spec.name)
        else:
            log.info("Redis %s queue purged", label)


def resubmit_jobs(config: Mapping[str, Any]) -> None:
    """Redis: re-queue the work that no live consumer holds any more.

    Messages held by dead consumers go back to the head of their queue at once;
    persistence markers with nobody behind them are re-queued once older than
    180 s (fetch) or 7200 s (gather). Does nothing on AMQP, whose broker
    re-delivers by itself.
    """
    if backend(config) != mq.REDIS:
        return
    client = get_connection_redis(config)
    mq_redis.recover(client, fetch_spec(config), FETCH_RESUBMIT_SECONDS, "Fetch Queue")
    mq_redis.recover(client, gather_spec(config), GATHER_RESUBMIT_SECONDS,
                     "Gather Queue")
