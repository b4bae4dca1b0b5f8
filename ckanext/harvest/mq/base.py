"""The queue backend protocol shared by the Redis and AMQP implementations.

A backend object is bound to one queue (gather or fetch) of one site. It moves
JSON messages and knows nothing about jobs, objects or the database: the stage
drivers in :mod:`ckanext.harvest.lib.worker` decide when a message is acknowledged.

Delivery is *at least once*: a message taken with :meth:`QueueBackend.get` or
:meth:`QueueBackend.consume` stays owned by its consumer until
:meth:`QueueBackend.ack`; if the consumer closes or dies first, the message is
delivered again (AMQP: by the broker; Redis: see :mod:`ckanext.harvest.mq.redis`).
"""
from __future__ import annotations

import abc
import dataclasses
import enum
import time
from typing import Any, Generator, Mapping, Optional

#: How long one blocking wait for a message lasts, in seconds. Must stay well below
#: the 5 s socket timeout redis-py gives connections made from ``ckan.redis.url``.
BLOCK_SECONDS = 1.0


class BrokerError(Exception):
    """The broker connection failed; the caller may reconnect and go on."""


def as_int(value: Any, default: int) -> int:
    """An integer setting (a port, a database number); ``default`` when unset or
    not a number."""
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


class IdleClock:
    """How long a consumer may block for its next message, given its idle timeout.

    :param idle_timeout: seconds without a message after which the consumer
        stops (None: never)
    """

    def __init__(self, idle_timeout: Optional[float]) -> None:
        self.idle_timeout = idle_timeout
        self.last = time.monotonic()

    def next_wait(self) -> Optional[float]:
        """Seconds to block (at most :data:`BLOCK_SECONDS`); None once idle too long."""
        if self.idle_timeout is None:
            return BLOCK_SECONDS
        remaining = self.idle_timeout - (time.monotonic() - self.last)
        return min(BLOCK_SECONDS, remaining) if remaining > 0 else None

    def activity(self) -> None:
        """A message arrived: the idle time starts again."""
        self.last = time.monotonic()


class MessageKey(str, enum.Enum):
    """The key of the one id a harvest message carries (and the end of its
    queue's routing key)."""

    JOB = "harvest_job_id"
    OBJECT = "harvest_object_id"


@dataclasses.dataclass(frozen=True)
class QueueSpec:
    """Names of one harvest queue.

    :param name: AMQP queue name, e.g. ``ckan.harvest.<site_id>.gather``
    :param routing_key: AMQP routing key and Redis list key, e.g.
        ``ckanext-harvest:<site_id>:harvest_job_id``
    """

    name: str
    routing_key: str

    @property
    def message_key(self) -> str:
        """The body key holding the id: ``harvest_job_id`` or ``harvest_object_id``."""
        return self.routing_key.rsplit(":", 1)[-1]

    @property
    def deduplicate(self) -> bool:
        """Whether identical pending messages are collapsed (the gather queue)."""
        return self.message_key == MessageKey.JOB


@dataclasses.dataclass(frozen=True)
class Message:
    """A message taken from a queue.

    :param body: the JSON text as published
    :param tag: what :meth:`QueueBackend.ack` needs (AMQP delivery tag; Redis: body)
    :param redelivered: the broker says it delivered this message before
    :param method: AMQP method frame (None on Redis)
    :param properties: AMQP message properties (None on Redis)
    """

    body: str
    tag: Any
    redelivered: bool = False
    method: Any = None
    properties: Any = None


@dataclasses.dataclass(frozen=True)
class QueueStats:
    """What a queue looks like right now (the health page and the metrics).

    :param depth: messages waiting to be taken
    :param consumers: consumer processes alive on the queue (AMQP: the
        broker's count; Redis: consumers whose liveness key has not expired)
    """

    depth: int
    consumers: int


class QueueBackend(abc.ABC):
    """One queue on one broker connection: publish, get, consume, ack, purge, close."""

    spec: QueueSpec

    @abc.abstractmethod
    def publish(self, payload: Mapping[str, Any]) -> None:
        """Send ``payload`` as JSON text; durable once this returns.

        :param payload: e.g. ``{"harvest_job_id": "<id>"}``
        :raises BrokerError: the broker could not take the message
        """

    @abc.abstractmethod
    def get(self) -> Optional[Message]:
        """Take the next message without waiting.

        :returns: the message (to be acknowledged), or None when the queue is empty
        """

    @abc.abstractmethod
    def consume(self, idle_timeout: Optional[float] = None
                ) -> Generator[Message, None, None]:
        """Yield messages as they arrive, one at a time.

        Waiting on an empty queue is normal and never raises.

        :param idle_timeout: stop after this many seconds without a message
            (None: never stop)
        :raises BrokerError: the broker connection was lost
        """

    @abc.abstractmethod
    def ack(self, message: Message) -> None:
        """Confirm that ``message`` was processed: it will not be delivered again."""

    @abc.abstractmethod
    def reject(self, message: Message) -> None:
        """Give ``message`` back to the queue to be delivered again soon."""

    @abc.abstractmethod
    def purge(self) -> int:
        """Drop every pending message of this queue.

        :returns: the number of messages dropped
        """

    @abc.abstractmethod
    def stats(self) -> QueueStats:
        """Count the waiting messages and the live consumers of this queue."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection; unacknowledged messages return to the queue."""

    def __enter__(self) -> QueueBackend:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
