"""Helpers for the queue tests: real brokers, each test in a private site namespace.

Queue names and Redis keys are namespaced by ``ckan.site_id``; giving every test
its own site id keeps tests independent of each other and of anything else using
the same Redis database or RabbitMQ server at the same time.
"""
from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any, Iterator, Optional

import pika

from ckanext.harvest import mq, queue
from ckanext.harvest.mq.base import Message, QueueBackend, QueueSpec

BROKERS = ("redis", "amqp")


def config_snapshot(ckan_config: Any) -> dict[str, Any]:
    """The configuration the queue layer reads, as a plain dict."""
    keys = [key for key in ckan_config if key.startswith("ckan.harvest.mq.")]
    keys += ["ckan.redis.url", "ckan.site_id"]
    return {key: ckan_config.get(key) for key in keys}


def delete_site(broker: str, site: str) -> None:
    """Remove every trace of ``site`` from the broker."""
    if broker == "redis":
        client = queue.get_connection_redis()
        for key in client.scan_iter(match=f"ckanext-harvest:{site}:*", count=500):
            client.delete(key)
        return
    connection = queue.get_connection_amqp()
    try:
        channel = connection.channel()
        for spec in (mq.gather_spec(site), mq.fetch_spec(site)):
            channel.queue_delete(queue=spec.name)
    finally:
        connection.close()


@contextlib.contextmanager
def private_site(ckan_config: Any, monkeypatch: Any, broker: str,
                 site: Optional[str] = None) -> Iterator[str]:
    """Use ``broker`` and a fresh site id for the duration of the block."""
    site = site or f"test.ckan.net.{uuid.uuid4().hex[:10]}"
    monkeypatch.setitem(ckan_config, "ckan.harvest.mq.type", broker)
    monkeypatch.setitem(ckan_config, "ckan.site_id", site)
    try:
        yield site
    finally:
        delete_site(broker, site)


def publish_raw(broker: str, spec: QueueSpec, body: str) -> None:
    """Publish ``body`` exactly as given (possibly not JSON at all)."""
    if broker == "redis":
        queue.get_connection_redis().rpush(spec.routing_key, body)
        return
    connection = queue.get_connection_amqp()
    try:
        channel = connection.channel()
        mq.amqp.declare(channel, spec)
        channel.basic_publish(mq.amqp.EXCHANGE_NAME, spec.routing_key, body,
                              properties=pika.BasicProperties(delivery_mode=2))
    finally:
        connection.close()


def take(backend: QueueBackend, timeout: float = 5.0) -> Optional[Message]:
    """Poll ``backend.get()`` for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        message = backend.get()
        if message is not None or time.monotonic() > deadline:
            return message
        time.sleep(0.05)
