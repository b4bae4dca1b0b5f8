"""Queue backends of the harvest framework (Redis and AMQP).

The backend is chosen in one place, :func:`backend_name`, from
``ckan.harvest.mq.type``.
"""
from __future__ import annotations

from typing import Any, Mapping

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
    value = str(config.get("ckan.harvest.mq.type") or REDIS).strip().lower()
    try:
        return _ALIASES[value]
    except KeyError:
        raise UnknownBackendError(
            f"Unknown queue backend ckan.harvest.mq.type = {value!r}: use 'redis' or "
            "'amqp'"
        ) from None
