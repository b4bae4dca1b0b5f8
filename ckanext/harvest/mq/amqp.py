"""AMQP (RabbitMQ) queue backend, on pika's ``BlockingConnection``.

Exchange ``ckan.harvest`` (direct, durable); one durable queue per harvest queue,
bound with its routing key. Publishers declare the queue too, so messages sent
before any consumer ever started are kept. Messages are persistent, publishes are
confirmed by the broker, consumers take one message at a time (prefetch 1) and
acknowledge it manually: the broker re-delivers whatever an aborted consumer held.
While a consumer handles a message, a small I/O thread keeps the connection alive
(heartbeats), so a long stage does not lose its connection and its message.
"""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from queue import Empty, Queue
from typing import Any, Callable, Generator, Iterator, Mapping, NoReturn, Optional

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from ckanext.harvest import options
from ckanext.harvest.mq.base import (
    BLOCK_SECONDS,
    BrokerError,
    IdleClock,
    Message,
    QueueBackend,
    QueueSpec,
    QueueStats,
    as_int,
)

EXCHANGE_NAME = "ckan.harvest"
EXCHANGE_TYPE = "direct"
#: Broker settings with no declared default (they differ between backends).
DEFAULT_HOST = "localhost"
DEFAULT_PORT = 5672
DEFAULT_PASSWORD = "guest"
PERSISTENT = 2


def parameters(config: Mapping[str, Any]) -> pika.ConnectionParameters:
    """Return the connection parameters configured by ``ckan.harvest.mq.*``.

    :param config: CKAN's configuration mapping
    """
    credentials = pika.PlainCredentials(
        options.value(config, options.MQ_USER_ID),
        config.get(options.MQ_PASSWORD, None) or DEFAULT_PASSWORD,
    )
    return pika.ConnectionParameters(
        host=config.get(options.MQ_HOSTNAME, None) or DEFAULT_HOST,
        port=as_int(config.get(options.MQ_PORT, None), DEFAULT_PORT),
        virtual_host=options.value(config, options.MQ_VIRTUAL_HOST),
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


class _Pump:
    """Drives a connection's I/O from a thread while the caller handles a message.

    pika's ``BlockingConnection`` answers broker heartbeats only while its I/O
    loop runs. Without this thread a stage lasting a few minutes would get the
    connection closed by the broker, and its message delivered to another
    consumer while it is still being worked on. Deliveries are passed to the
    consuming thread through :attr:`inbox`; channel operations of that thread go
    through :meth:`call`.
    """

    def __init__(self, connection: BlockingConnection, channel: BlockingChannel,
                 queue_name: str) -> None:
        self._connection = connection
        self.inbox: Queue[Any] = Queue()
        self._stopping = threading.Event()
        self.consumer_tag = channel.basic_consume(queue_name, self._on_message)
        self.thread = threading.Thread(target=self._run, name="harvest-amqp-io",
                                       daemon=True)
        self.thread.start()

    def _on_message(self, channel: Any, method: Any, properties: Any,
                    body: bytes) -> None:
        self.inbox.put((method, properties, body))

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._connection.process_data_events(time_limit=BLOCK_SECONDS)
        except Exception as exc:  # noqa: BLE001 - re-raised in the consuming thread
            self.inbox.put(exc)

    def call(self, operation: Callable[[], Any]) -> Any:
        """Run ``operation`` on the I/O thread and return its result."""
        done = threading.Event()
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = operation()
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                outcome["error"] = exc
            finally:
                done.set()

        with _broker_errors():
            self._connection.add_callback_threadsafe(run)
        while not done.wait(BLOCK_SECONDS):
            if not self.thread.is_alive():
                raise BrokerError("AMQP connection I/O stopped")
        if "error" in outcome:
            _reraise(outcome["error"])
        return outcome.get("result")

    def stop(self) -> None:
        """Stop the I/O thread: the caller's thread owns the connection again."""
        self._stopping.set()
        if self.thread.is_alive():
            try:
                self._connection.add_callback_threadsafe(lambda: None)
            except pika.exceptions.AMQPError:
                pass
            self.thread.join()


def _reraise(error: BaseException) -> NoReturn:
    if isinstance(error, pika.exceptions.AMQPError):
        raise BrokerError(f"AMQP connection failed: {error!r}") from error
    raise error


def _deliveries(pump: _Pump, idle_timeout: Optional[float]
                ) -> Generator[Message, None, None]:
    clock = IdleClock(idle_timeout)
    while (wait := clock.next_wait()) is not None:
        try:
            item = pump.inbox.get(timeout=wait)
        except Empty:
            continue
        if isinstance(item, BaseException):
            _reraise(item)
        yield _message(*item)
        clock.activity()


class AmqpQueue(QueueBackend):
    """A harvest queue on RabbitMQ.

    :param connection: an open blocking connection, owned (closed) by this object
    :param spec: the queue; exchange, queue and binding are declared at once
    """

    def __init__(self, connection: BlockingConnection, spec: QueueSpec) -> None:
        self.connection = connection
        self.spec = spec
        self._pump: Optional[_Pump] = None
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
        """Yield deliveries; wake up every :data:`BLOCK_SECONDS` while idle.

        While the generator is active the connection is driven by an I/O thread
        (see :class:`_Pump`); :meth:`ack` and :meth:`reject` are handed to it.
        """
        with _broker_errors():
            pump = _Pump(self.connection, self.channel, self.spec.name)
        self._pump = pump
        try:
            yield from _deliveries(pump, idle_timeout)
        finally:
            self._pump = None
            pump.stop()
            self._settle_leftovers(pump)

    def _settle_leftovers(self, pump: _Pump) -> None:
        """Give back deliveries never handed out, and cancel the subscription."""
        if not self.channel.is_open:
            return
        try:
            while True:
                item = pump.inbox.get_nowait()
                if isinstance(item, tuple):
                    self.channel.basic_nack(delivery_tag=item[0].delivery_tag,
                                            requeue=True)
        except Empty:
            pass
        try:
            self.channel.basic_cancel(pump.consumer_tag)
        except pika.exceptions.AMQPError:
            pass

    def _call(self, operation: Callable[[], Any]) -> Any:
        """Run a channel operation on the thread that currently owns the connection."""
        pump = self._pump
        if pump is not None and pump.thread.is_alive():
            return pump.call(operation)
        with _broker_errors():
            return operation()

    def ack(self, message: Message) -> None:
        """Acknowledge ``message`` by its delivery tag."""
        self._call(lambda: self.channel.basic_ack(delivery_tag=message.tag))

    def reject(self, message: Message) -> None:
        """Return ``message`` to the queue (``basic_nack`` with requeue)."""
        self._call(lambda: self.channel.basic_nack(delivery_tag=message.tag,
                                                   requeue=True))

    def purge(self) -> int:
        """Purge the queue (declared first, so a new queue purges fine)."""
        with _broker_errors():
            frame = self.channel.queue_purge(queue=self.spec.name)
        return int(frame.method.message_count)

    def stats(self) -> QueueStats:
        """The broker's counts of ready messages and consumers of the queue."""
        def declare_again() -> Any:
            return self.channel.queue_declare(queue=self.spec.name, durable=True)

        frame = self._call(declare_again)
        return QueueStats(depth=int(frame.method.message_count),
                          consumers=int(frame.method.consumer_count))

    def close(self) -> None:
        """Close the connection; the broker requeues unacknowledged messages."""
        if self._pump is not None:
            self._pump.stop()
            self._pump = None
        if self.connection.is_open:
            try:
                self.connection.close()
            except pika.exceptions.AMQPError:
                pass
