"""AMQP (RabbitMQ) queue backend, on pika's ``BlockingConnection``.

Exchange ``ckan.harvest`` (direct, durable); one durable queue per harvest queue,
bound with its routing key. Publishers declare the queue too, so messages sent
before any consumer ever started are kept. Messages are persistent, publishes are
confirmed by the broker, consumers take one message at a time (prefetch 1) and
acknowledge it manually: the broker re-delivers whatever an aborted consumer held.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from typing import Any, Generator, Iterator, Mapping, Optional

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from ckanext.harvest.mq.base import (
    BLOCK_SECONDS,
    BrokerError,
    Message,
    QueueBackend,
    QueueSpec,
)

EXCHANGE_NAME = "ckan.harvest"
EXCHANGE_TYPE = "direct"
PERSISTENT = 2


def _as_int(value: Any, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def parameters(config: Mapping[str, Any]) -> pika.ConnectionParameters:
    """Return the connection parameters configured by ``ckan.harvest.mq.*``.

    :param config: CKAN's configuration mapping
    """
    credentials = pika.PlainCredentials(
        config.get("ckan.harvest.mq.user_id", None) or "guest",
        config.get("ckan.harvest.mq.password", None) or "guest",
    )
    return pika.ConnectionParameters(
        host=config.get("ckan.harvest.mq.hostname", None) or "localhost",
        port=_as_int(config.get("ckan.harvest.mq.port", None), 5672),
        virtual_host=config.get("ckan.harvest.mq.virtual_host", None) or "/",
        credentials=credentials,
        frame_max=10000,
    )


@contextmanager
def _broker_errors() -> Iterator[None]:
    """Turn pika connection and channel failures into :class:`BrokerError`."""
    try:
        yield
    except pika.exceptions.AMQPError as exc:
        raise BrokerError(f"AMQP connection failed: {exc!r}") from exc


def connect(config: Mapping[str, Any]) -> BlockingConnection:
    """Open a blocking connection to the configured broker.

    :raises BrokerError: the broker cannot be reached
    """
    with _broker_errors():
        return pika.BlockingConnection(parameters(config))


def declare(channel: BlockingChannel, spec: Optional[QueueSpec]) -> None:
    """Declare the exchange and, when ``spec`` is given, its queue and binding."""
    channel.exchange_declare(exchange=EXCHANGE_NAME, exchange_type=EXCHANGE_TYPE,
                             durable=True)
    if spec is not None:
        channel.queue_declare(queue=spec.name, durable=True)
        channel.queue_bind(queue=spec.name, exchange=EXCHANGE_NAME,
                           routing_key=spec.routing_key)


def persistent_properties() -> pika.BasicProperties:
    """Message properties of every harvest message (``delivery_mode=2``)."""
    return pika.BasicProperties(delivery_mode=PERSISTENT)


def _message(method: Any, properties: Any, body: Any) -> Message:
    text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
    return Message(body=text, tag=method.delivery_tag,
                   redelivered=bool(method.redelivered), method=method,
                   properties=properties)


class AmqpQueue(QueueBackend):
    """A harvest queue on RabbitMQ.

    :param connection: an open blocking connection, owned (closed) by this object
    :param spec: the queue; exchange, queue and binding are declared at once
    """

    def __init__(self, connection: BlockingConnection, spec: QueueSpec) -> None:
        self.connection = connection
        self.spec = spec
        with _broker_errors():
            self.channel = connection.channel()
            declare(self.channel, spec)
            self.channel.confirm_delivery()
            self.channel.basic_qos(prefetch_count=1)

    def publish(self, payload: Mapping[str, Any]) -> None:
        """Publish ``payload`` persistently and wait for the broker's confirmation."""
        with _broker_errors():
            self.channel.basic_publish(
                exchange=EXCHANGE_NAME,
                routing_key=self.spec.routing_key,
                body=json.dumps(dict(payload)),
                properties=persistent_properties(),
            )

    def get(self) -> Optional[Message]:
        """Take one message (``basic_get`` with manual acknowledgement)."""
        with _broker_errors():
            method, properties, body = self.channel.basic_get(self.spec.name,
                                                              auto_ack=False)
        if method is None:
            return None
        return _message(method, properties, body)

    def consume(self, idle_timeout: Optional[float] = None
                ) -> Generator[Message, None, None]:
        """Yield deliveries; wake up every :data:`BLOCK_SECONDS` while idle."""
        wait = BLOCK_SECONDS if idle_timeout is None else min(BLOCK_SECONDS,
                                                               idle_timeout)
        last = time.monotonic()
        deliveries = self.channel.consume(self.spec.name, inactivity_timeout=wait)
        try:
            while True:
                with _broker_errors():
                    method, properties, body = next(deliveries)
                if method is not None:
                    yield _message(method, properties, body)
                    last = time.monotonic()
                elif idle_timeout is not None and \
                        time.monotonic() - last >= idle_timeout:
                    return
        finally:
            self._cancel()

    def _cancel(self) -> None:
        """Stop consuming; prefetched but unacknowledged deliveries are requeued."""
        if self.channel.is_open:
            try:
                self.channel.cancel()
            except pika.exceptions.AMQPError:
                pass

    def ack(self, message: Message) -> None:
        """Acknowledge ``message`` by its delivery tag."""
        with _broker_errors():
            self.channel.basic_ack(delivery_tag=message.tag)

    def reject(self, message: Message) -> None:
        """Return ``message`` to the queue (``basic_nack`` with requeue)."""
        with _broker_errors():
            self.channel.basic_nack(delivery_tag=message.tag, requeue=True)

    def purge(self) -> int:
        """Purge the queue (declared first, so a new queue purges fine)."""
        with _broker_errors():
            frame = self.channel.queue_purge(queue=self.spec.name)
        return int(frame.method.message_count)

    def close(self) -> None:
        """Close the connection; the broker requeues unacknowledged messages."""
        if self.connection.is_open:
            try:
                self.connection.close()
            except pika.exceptions.AMQPError:
                pass
