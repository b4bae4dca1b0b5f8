"""The queue API of the original extension: a facade, no logic of its own.

Two queues carry the work: *gather* (one message per harvest job) and *fetch* (one
message per harvest object; its consumer runs the fetch and the import stage).
The names downstream code imports live on here; the work is done elsewhere:

* brokers, connections, publishers, consumers, queue names, purging and the Redis
  resubmission of lost messages: :mod:`ckanext.harvest.mq.legacy`;
* the message handlers (:func:`gather_callback`, :func:`fetch_callback`), the
  consumer loops and the re-sending of ``WAITING`` objects:
  :mod:`ckanext.harvest.lib.worker`;
* the stage drivers (:func:`gather_stage`, :func:`fetch_and_import_stages`):
  :mod:`ckanext.harvest.lib.stages`.

``config`` and ``log`` are module attributes that downstream suites patch
(``mock.patch("ckanext.harvest.queue.config", {...})``,
``...queue.log.error``). Every function below that depends on configuration
reads ``config`` from this module when it is called and passes it down, so a
patch reaches the broker, the site namespace and the limits; ``log`` is the very
logger the moved code uses.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import pika
import redis as redis_py
from ckan.plugins.toolkit import config

from ckanext.harvest.lib import stages, worker
from ckanext.harvest.mq import legacy
from ckanext.harvest.mq.base import QueueSpec

log = logging.getLogger(__name__)

__all__ = [
    "get_gather_publisher",
    "get_gather_consumer",
    "get_fetch_publisher",
    "get_fetch_consumer",
    "get_harvester",
]

# Names of the original module, defined once where they belong.
PORT = legacy.PORT
USERID = legacy.USERID
PASSWORD = legacy.PASSWORD
HOSTNAME = legacy.HOSTNAME
VIRTUAL_HOST = legacy.VIRTUAL_HOST
MQ_TYPE = legacy.MQ_TYPE
REDIS_PORT = legacy.REDIS_PORT
REDIS_DB = legacy.REDIS_DB
EXCHANGE_TYPE = legacy.EXCHANGE_TYPE
EXCHANGE_NAME = legacy.EXCHANGE_NAME

Publisher = legacy.Publisher
RedisPublisher = legacy.RedisPublisher
FakeMethod = legacy.FakeMethod
RedisConsumer = legacy.RedisConsumer
AmqpConsumer = legacy.AmqpConsumer

get_harvester = stages.get_harvester
gather_stage = stages.gather_stage
fetch_and_import_stages = stages.fetch_and_import_stages


def _gather_spec() -> QueueSpec:
    return legacy.gather_spec(config)


def _fetch_spec() -> QueueSpec:
    return legacy.fetch_spec(config)


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


def get_connection() -> legacy.Connection:
    """A new connection to the configured broker (:func:`legacy.get_connection`)."""
    return legacy.get_connection(config)


def get_connection_amqp() -> pika.BlockingConnection:
    """A pika ``BlockingConnection`` with the ``ckan.harvest.mq.*`` settings."""
    return legacy.get_connection_amqp(config)


def get_connection_redis() -> redis_py.Redis:
    """A redis-py client (``ckan.redis.url`` unless an mq hostname is set)."""
    return legacy.get_connection_redis(config)


def get_publisher(routing_key: str) -> legacy.AnyPublisher:
    """A publisher of ``routing_key`` on the configured broker."""
    return legacy.get_publisher(config, routing_key)


def get_gather_publisher() -> legacy.AnyPublisher:
    """Publisher of the gather queue: ``send({"harvest_job_id": id})``."""
    return legacy.get_gather_publisher(config)


def get_fetch_publisher() -> legacy.AnyPublisher:
    """Publisher of the fetch queue: ``send({"harvest_object_id": id})``."""
    return legacy.get_fetch_publisher(config)


def get_consumer(queue_name: str, routing_key: str) -> legacy.AnyConsumer:
    """A consumer of a queue on the configured broker."""
    return legacy.get_consumer(config, queue_name, routing_key)


def get_gather_consumer() -> legacy.AnyConsumer:
    """Consumer of the gather queue."""
    return legacy.get_gather_consumer(config)


def get_fetch_consumer() -> legacy.AnyConsumer:
    """Consumer of the fetch queue."""
    return legacy.get_fetch_consumer(config)


def purge_queues() -> None:
    """Drop every pending message of this site's gather and fetch queues."""
    legacy.purge_queues(config)


def resubmit_jobs() -> None:
    """Redis: re-queue the work that no live consumer holds any more."""
    legacy.resubmit_jobs(config)


def resubmit_objects() -> None:
    """Redis: re-send ``WAITING`` objects of gathered jobs that are not queued."""
    worker.resubmit_objects(config)


def gather_callback(channel: Any, method: Any, header: Any, body: Any) -> Optional[bool]:
    """Handle one gather message ``{"harvest_job_id": ...}``: gather, queue objects."""
    return worker.gather_callback(config, channel, method, header, body)


def fetch_callback(channel: Any, method: Any, header: Any, body: Any) -> Optional[bool]:
    """Handle one fetch message ``{"harvest_object_id": ...}``: fetch and import."""
    return worker.fetch_callback(config, channel, method, header, body)


def run_gather_consumer(stop_after: Optional[int] = None,
                        idle_timeout: Optional[float] = None) -> int:
    """Consume the gather queue: :func:`.worker.run_gather_consumer`."""
    return worker.run_gather_consumer(config, stop_after, idle_timeout)


def run_fetch_consumer(stop_after: Optional[int] = None,
                       idle_timeout: Optional[float] = None) -> int:
    """Consume the fetch queue: :func:`.worker.run_fetch_consumer`."""
    return worker.run_fetch_consumer(config, stop_after, idle_timeout)
