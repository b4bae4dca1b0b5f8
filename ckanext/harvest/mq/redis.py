"""Redis queue backend: a reliable queue on plain Redis lists.

Keys, for a queue whose routing key is ``RK = ckanext-harvest:<site_id>:<id key>``
(``<id key>`` is ``harvest_job_id`` or ``harvest_object_id``) and
``P = ckanext-harvest:<site_id>``:

``RK`` (list)
    pending messages (JSON text), consumed from the left.
``RK:<id>`` (string)
    persistence marker of a message being processed: ``str(datetime.now())``
    (local time), set when a consumer takes the message, deleted on ack.
``P:processing:<id key>:<consumer id>`` (list)
    messages taken by one consumer and not yet acknowledged. Messages move
    atomically from ``RK`` to this list (``BLMOVE``), so a consumer killed at any
    moment loses nothing.
``P:consumers:<id key>`` (set)
    ids of the consumers that may own a processing list.
``P:alive:<consumer id>`` (string with a TTL)
    refreshed by a daemon thread while the consumer is open. When it has expired
    the consumer is dead and :func:`recover` puts its processing list back at the
    head of ``RK``.
"""
from __future__ import annotations

import datetime
import json
import logging
import threading
import uuid
import weakref
from contextlib import contextmanager
from typing import Any, Generator, Iterator, Mapping, Optional

import redis as redis_py
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ckanext.harvest import options
from ckanext.harvest.mq.base import (
    BrokerError,
    IdleClock,
    Message,
    QueueBackend,
    QueueSpec,
    QueueStats,
    as_int,
)

log = logging.getLogger(__name__)

#: Seconds after which a consumer that stopped refreshing its liveness key is dead.
HEARTBEAT_TTL = 30.0
#: Broker settings with no declared default (they differ between backends).
DEFAULT_HOST = "localhost"
DEFAULT_PORT = 6379

# Pops every element of KEYS[1]; deletes the persistence marker of each
# (ARGV[2] .. ':' .. <id>, ARGV[1] naming the id key); returns how many it popped.
_PURGE_SCRIPT = """
local popped = 0
while true do
  local body = redis.call('LPOP', KEYS[1])
  if not body then break end
  popped = popped + 1
  local ok, message = pcall(cjson.decode, body)
  if ok and type(message) == 'table' and type(message[ARGV[1]]) == 'string' then
    redis.call('DEL', ARGV[2] .. ':' .. message[ARGV[1]])
  end
end
return popped
"""

_MARKER_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S")


def _text(value: Any) -> str:
    """Decode a Redis reply (the client may or may not decode responses itself)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _texts(values: Any) -> list[str]:
    return [_text(value) for value in values]


def connect(config: Mapping[str, Any]) -> redis_py.Redis:
    """Return a Redis client for the harvest queues.

    ``ckan.redis.url`` is used unless ``ckan.harvest.mq.hostname`` is set; then
    the ``ckan.harvest.mq.*`` host, port, password and database options apply.

    :param config: CKAN's configuration mapping
    """
    hostname = config.get(options.MQ_HOSTNAME, None)
    url = config.get(options.REDIS_URL, None)
    if not hostname and url:
        return redis_py.Redis.from_url(url, decode_responses=True, encoding="utf-8")
    return redis_py.Redis(
        host=hostname or DEFAULT_HOST,
        port=as_int(config.get(options.MQ_PORT, None), DEFAULT_PORT),
        password=config.get(options.MQ_PASSWORD, None) or None,
        db=as_int(options.value(config, options.MQ_REDIS_DB), 0),
        decode_responses=True,
        encoding="utf-8",
    )


@contextmanager
def _broker_errors() -> Iterator[None]:
    """Turn Redis connection failures into :class:`BrokerError`."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise BrokerError(f"Redis connection failed: {exc}") from exc


def marker_key(spec: QueueSpec, body: str) -> str:
    """Return the persistence marker key of a message body.

    Built by concatenation on purpose: a body whose id is not a string (e.g.
    ``null``) raises ``TypeError: can only concatenate str ...``.

    :raises Exception: the body is not JSON, not an object, or lacks the id
    """
    return spec.routing_key + ":" + json.loads(body)[spec.message_key]


def _try_marker_key(spec: QueueSpec, body: str) -> Optional[str]:
    try:
        return marker_key(spec, body)
    except Exception:  # noqa: BLE001 - malformed body: there is no marker to touch
        return None


def _prefix(spec: QueueSpec) -> str:
    return spec.routing_key.rsplit(":", 1)[0]


def registry_key(spec: QueueSpec) -> str:
    """Key of the set of consumer ids that may own a processing list of ``spec``."""
    return f"{_prefix(spec)}:consumers:{spec.message_key}"


def processing_key(spec: QueueSpec, consumer_id: str) -> str:
    """Key of the list of messages taken, and not yet acknowledged, by a consumer."""
    return f"{_prefix(spec)}:processing:{spec.message_key}:{consumer_id}"


def alive_key(spec: QueueSpec, consumer_id: str) -> str:
    """Key whose existence says that a consumer is alive."""
    return f"{_prefix(spec)}:alive:{consumer_id}"


def now_marker() -> str:
    """Return the value of a persistence marker: local time, ``str(datetime.now())``."""
    return str(datetime.datetime.now())


def parse_marker(value: str) -> Optional[datetime.datetime]:
    """Parse a persistence marker leniently (with or without microseconds).

    :returns: a naive local datetime, or None when the value is unreadable
    """
    for fmt in _MARKER_FORMATS:
        try:
            return datetime.datetime.strptime(value, fmt)
        except ValueError:
            continue
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone().replace(tzinfo=None)
    return parsed


class _Heartbeat:
    """Keeps a consumer's liveness key (and registration) fresh from a thread."""

    def __init__(self, client: redis_py.Redis, spec: QueueSpec, consumer_id: str,
                 ttl: float) -> None:
        self._client = client
        self._alive = alive_key(spec, consumer_id)
        self._registry = registry_key(spec)
        self._member = consumer_id
        self._ttl_ms = max(int(ttl * 1000), 100)
        self._interval = max(ttl / 5.0, 0.05)
        self._stopped = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def beat(self) -> None:
        """Refresh the liveness key, then (re-)register the consumer."""
        pipe = self._client.pipeline(transaction=True)
        pipe.set(self._alive, "1", px=self._ttl_ms)
        pipe.sadd(self._registry, self._member)
        pipe.execute()

    def start(self) -> None:
        """Register now and keep refreshing in a daemon thread until :meth:`stop`."""
        with _broker_errors():
            self.beat()
        self._thread = threading.Thread(
            target=self._run, name=f"harvest-heartbeat-{self._member}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self.beat()
            except redis_py.RedisError as exc:
                log.warning("Could not refresh consumer liveness key: %s", exc)

    def stop(self) -> None:
        """Stop refreshing; the liveness key then expires on its own."""
        self._stopped.set()


class RedisQueue(QueueBackend):
    """A harvest queue on Redis lists (see the module docstring for the keys).

    :param client: a redis-py client created with ``decode_responses=True``
    :param spec: the queue
    :param logger: where malformed messages are reported
    :param heartbeat_ttl: seconds of silence after which this consumer counts as dead
    """

    def __init__(self, client: redis_py.Redis, spec: QueueSpec, *,
                 logger: Optional[logging.Logger] = None,
                 heartbeat_ttl: float = HEARTBEAT_TTL) -> None:
        self.redis = client
        self.spec = spec
        self.consumer_id = uuid.uuid4().hex
        self.processing_key = processing_key(spec, self.consumer_id)
        self._log = logger or log
        self._heartbeat_ttl = heartbeat_ttl
        self._heartbeat: Optional[_Heartbeat] = None

    # -- publishing ------------------------------------------------------------

    def publish(self, payload: Mapping[str, Any]) -> None:
        """Append ``payload``; on the gather queue, identical pending ones go first."""
        body = json.dumps(dict(payload))
        with _broker_errors():
            pipe = self.redis.pipeline(transaction=True)
            if self.spec.deduplicate:
                pipe.lrem(self.spec.routing_key, 0, body)
            pipe.rpush(self.spec.routing_key, body)
            pipe.execute()

    # -- taking ----------------------------------------------------------------

    def _register(self) -> None:
        if self._heartbeat is None:
            heartbeat = _Heartbeat(self.redis, self.spec, self.consumer_id,
                                   self._heartbeat_ttl)
            heartbeat.start()
            self._heartbeat = heartbeat
            weakref.finalize(self, heartbeat.stop)

    def get(self) -> Optional[Message]:
        """Move the next message to this consumer's processing list and return it.

        Unlike :meth:`consume`, a malformed body is returned as is (without a
        persistence marker): callers of ``basic_get`` report it themselves.
        """
        self._register()
        with _broker_errors():
            reply = self.redis.lmove(self.spec.routing_key, self.processing_key,
                                     "LEFT", "RIGHT")
            if reply is None:
                return None
            body = _text(reply)
            key = _try_marker_key(self.spec, body)
            if key is not None:
                self.redis.set(key, now_marker())
        return Message(body=body, tag=body)

    def _accept(self, body: str) -> Optional[Message]:
        """Mark a taken message, or drop it (logged) when it is malformed."""
        try:
            key = marker_key(self.spec, body)
        except Exception as exc:  # noqa: BLE001 - any malformed body is skipped
            # Pre-formatted: tests inspect the first argument of log.error.
            self._log.error("Redis Exception: %s" % exc)
            self.redis.lrem(self.processing_key, -1, body)
            return None
        self.redis.set(key, now_marker())
        return Message(body=body, tag=body)

    def consume(self, idle_timeout: Optional[float] = None
                ) -> Generator[Message, None, None]:
        """Yield messages, blocking at most :data:`BLOCK_SECONDS` per Redis call.

        Malformed messages (not JSON, no id, id not a string) are logged as
        ``Redis Exception: <error>`` and dropped.
        """
        self._register()
        clock = IdleClock(idle_timeout)
        while (wait := clock.next_wait()) is not None:
            wait = max(wait, 0.01)
            with _broker_errors():
                # redis-py annotates the timeout as int; Redis >= 6 takes seconds
                # as a float.
                reply = self.redis.blmove(self.spec.routing_key, self.processing_key,
                                          wait, "LEFT", "RIGHT")  # type: ignore[arg-type]
                message = self._accept(_text(reply)) if reply is not None else None
            if message is None:
                continue
            yield message
            clock.activity()

    # -- settling --------------------------------------------------------------

    def ack(self, message: Message) -> None:
        """Forget ``message``: remove it from the processing list and its marker."""
        key = _try_marker_key(self.spec, message.body)
        with _broker_errors():
            pipe = self.redis.pipeline(transaction=True)
            pipe.lrem(self.processing_key, -1, message.body)
            if key is not None:
                pipe.delete(key)
            pipe.execute()

    def reject(self, message: Message) -> None:
        """Put ``message`` back at the head of the queue."""
        key = _try_marker_key(self.spec, message.body)
        with _broker_errors():
            pipe = self.redis.pipeline(transaction=True)
            pipe.lrem(self.processing_key, -1, message.body)
            pipe.lpush(self.spec.routing_key, message.body)
            if key is not None:
                pipe.delete(key)
            pipe.execute()

    # -- housekeeping ----------------------------------------------------------

    def purge(self) -> int:
        """Drop the pending messages, and the unacknowledged ones of every consumer.

        Only this site's keys of this queue are touched.
        """
        args = (self.spec.message_key, self.spec.routing_key)
        with _broker_errors():
            script = self.redis.register_script(_PURGE_SCRIPT)
            dropped = int(script(keys=[self.spec.routing_key], args=args))
            for member in _texts(self.redis.smembers(registry_key(self.spec))):
                key = processing_key(self.spec, member)
                dropped += int(script(keys=[key], args=args))
        return dropped

    def stats(self) -> QueueStats:
        """Pending messages, and the registered consumers whose liveness key lives."""
        with _broker_errors():
            depth = int(self.redis.llen(self.spec.routing_key))
            members = _texts(self.redis.smembers(registry_key(self.spec)))
            alive = 0
            if members:
                pipe = self.redis.pipeline(transaction=False)
                for member in members:
                    pipe.exists(alive_key(self.spec, member))
                alive = sum(1 for found in pipe.execute() if found)
        return QueueStats(depth=depth, consumers=alive)

    def close(self) -> None:
        """Stop the heartbeat and give unacknowledged messages back to the queue."""
        if self._heartbeat is None:
            return
        self._heartbeat.stop()
        self._heartbeat = None
        try:
            requeue_list(self.redis, self.spec, self.processing_key)
            pipe = self.redis.pipeline(transaction=True)
            pipe.srem(registry_key(self.spec), self.consumer_id)
            pipe.delete(alive_key(self.spec, self.consumer_id))
            pipe.execute()
        except redis_py.RedisError as exc:
            log.warning("Could not release consumer %s cleanly (it will be "
                        "recovered once it counts as dead): %s", self.consumer_id, exc)


# -- recovery (``resubmit_jobs``) and inspection (``resubmit_objects``) ----------


def requeue_list(client: redis_py.Redis, spec: QueueSpec, key: str) -> int:
    """Move every message of the processing list ``key`` back to the queue head.

    The original order is kept; the messages' markers are deleted.

    :returns: the number of messages moved
    """
    moved = 0
    while True:
        reply = client.lmove(key, spec.routing_key, "RIGHT", "LEFT")
        if reply is None:
            return moved
        moved += 1
        marker = _try_marker_key(spec, _text(reply))
        if marker is not None:
            client.delete(marker)


def _requeue_dead(client: redis_py.Redis, spec: QueueSpec) -> tuple[list[str], int]:
    """Re-queue the work of dead consumers.

    :returns: the ids of the live consumers and the number of messages re-queued
    """
    live = []
    total = 0
    registry = registry_key(spec)
    for member in sorted(_texts(client.smembers(registry))):
        if client.exists(alive_key(spec, member)):
            live.append(member)
            continue
        moved = requeue_list(client, spec, processing_key(spec, member))
        client.srem(registry, member)
        total += moved
        if moved:
            log.info("Re-queued %d unacknowledged message(s) of dead consumer %s on %s",
                     moved, member, spec.routing_key)
    return live, total


def _ids_of(spec: QueueSpec, bodies: list[str]) -> set[str]:
    ids = set()
    for body in bodies:
        key = _try_marker_key(spec, body)
        if key is not None:
            ids.add(key[len(spec.routing_key) + 1:])
    return ids


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _marker_is_stale(client: redis_py.Redis, key: str, max_age: float,
                     label: str) -> bool:
    reply = client.get(key)
    if reply is None:
        log.info("%s: Redis cannot get value for key %s", label, key)
        return False
    value = _text(reply)
    taken = parse_marker(value)
    if taken is None:
        log.warning("%s: unreadable persistence marker %s = %r, re-queueing",
                    label, key, value)
        return True
    return (datetime.datetime.now() - taken).total_seconds() > max_age


def _requeue_stale_markers(client: redis_py.Redis, spec: QueueSpec, max_age: float,
                           busy: set[str], label: str) -> int:
    """Re-queue ids whose marker is older than ``max_age`` and that nobody holds."""
    requeued = 0
    prefix = spec.routing_key + ":"
    for reply in client.scan_iter(match=_glob_escape(prefix) + "*", count=500):
        key = _text(reply)
        object_id = key[len(prefix):]
        if object_id in busy or not _marker_is_stale(client, key, max_age, label):
            continue
        client.rpush(spec.routing_key, json.dumps({spec.message_key: object_id}))
        client.delete(key)
        requeued += 1
        log.info("%s: re-queued %s (persistence marker older than %s s)",
                 label, object_id, max_age)
    return requeued


def recover(client: redis_py.Redis, spec: QueueSpec, max_age: float,
            label: str = "Queue") -> int:
    """Re-deliver lost work of ``spec``.

    1. The processing lists of dead consumers go back to the head of the queue.
    2. A persistence marker older than ``max_age`` seconds whose id no live
       consumer holds (e.g. left by an older version, which kept no processing
       lists) is turned back into a message. Work held by a live consumer is
       never duplicated, however long it takes.

    :param max_age: seconds (compared with ``total_seconds()``)
    :param label: prefix of the log messages, e.g. ``Fetch Queue``
    :returns: the number of messages re-queued
    """
    with _broker_errors():
        live, moved = _requeue_dead(client, spec)
        busy = _ids_of(spec, [
            body for member in live
            for body in _texts(client.lrange(processing_key(spec, member), 0, -1))
        ])
        return moved + _requeue_stale_markers(client, spec, max_age, busy, label)


def queued_ids(client: redis_py.Redis, spec: QueueSpec) -> set[str]:
    """Return the ids of the messages pending or being processed on ``spec``."""
    with _broker_errors():
        bodies = _texts(client.lrange(spec.routing_key, 0, -1))
        for member in _texts(client.smembers(registry_key(spec))):
            bodies.extend(_texts(client.lrange(processing_key(spec, member), 0, -1)))
    return _ids_of(spec, bodies)
