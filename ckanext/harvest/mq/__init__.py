"""Queue backends of the harvest framework (Redis and AMQP).

The backend is chosen in one place, :func:`backend_name`, from
``ckan.harvest.mq.type``.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

from ckanext.harvest import options
from ckanext.harvest.mq import amqp, redis
from ckanext.harvest.mq.base import (
    BrokerError,
    Message,
    MessageKey,
    QueueBackend,
    QueueSpec,
    QueueStats,
)

__all__ = [
    "REDIS",
    "AMQP",
    "UnknownBackendError",
    "BrokerError",
    "Message",
    "MessageKey",
    "QueueBackend",
    "QueueSpec",
    "QueueStats",
    "backend_name",
    "site_id",
    "gather_spec",
    "fetch_spec",
    "open_queue",
]

REDIS = "redis"
AMQP = "amqp"

# The original extension accepted this misspelling; configurations in the wild use it.
_ALIASES = {"redis": REDIS, "amqp": AMQP, "ampq": AMQP}


class UnknownBackendError(ValueError):
    """``ckan.harvest.mq.type`` names no known queue backend."""


def backend_name(config: Mapping[str, Any]) -> str:
    """Return the queue backend configured: ``'redis'`` or ``'amqp'``.

    :param config: CKAN's configuration mapping
    :raises UnknownBackendError: for any other value
    """
    value = str(options.value(config, options.MQ_TYPE)).strip().lower()
    try:
        return _ALIASES[value]
    except KeyError:
        raise UnknownBackendError(
            f"Unknown queue backend {options.MQ_TYPE} = {value!r}: use 'redis' or "
            "'amqp'"
        ) from None


def site_id(config: Mapping[str, Any]) -> str:
    """Return the site id that namespaces queue names and Redis keys."""
    return str(config.get(options.SITE_ID, None) or "default")


def gather_spec(site: str) -> QueueSpec:
    """Names of the gather queue of ``site`` (one message per harvest job)."""
    return QueueSpec(name=f"ckan.harvest.{site}.gather",
                     routing_key=f"ckanext-harvest:{site}:{MessageKey.JOB.value}")


def fetch_spec(site: str) -> QueueSpec:
    """Names of the fetch queue of ``site`` (one message per harvest object)."""
    return QueueSpec(name=f"ckan.harvest.{site}.fetch",
                     routing_key=f"ckanext-harvest:{site}:{MessageKey.OBJECT.value}")


def open_queue(config: Mapping[str, Any], spec: QueueSpec, *,
               logger: Optional[logging.Logger] = None,
               heartbeat_ttl: Optional[float] = None) -> QueueBackend:
    """Connect to the configured broker and return the backend of one queue.

    The one place where the backend is chosen.

    :param config: CKAN's configuration mapping
    :param spec: the queue, e.g. ``gather_spec(site_id(config))``
    :param logger: Redis only: where malformed messages are reported
    :param heartbeat_ttl: Redis only: seconds after which a silent consumer is dead
    :raises UnknownBackendError: ``ckan.harvest.mq.type`` is not valid
    :raises BrokerError: the broker cannot be reached (AMQP)
    """
    if backend_name(config) == AMQP:
        return amqp.AmqpQueue(amqp.connect(config), spec)
    options: dict[str, Any] = {"logger": logger}
    if heartbeat_ttl is not None:
        options["heartbeat_ttl"] = heartbeat_ttl
    return redis.RedisQueue(redis.connect(config), spec, **options)
