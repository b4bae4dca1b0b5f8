"""The queue contract, run against every backend on the real brokers."""
from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from contextlib import closing
from typing import Any
from unittest import mock

import pika
import pytest

from ckanext.harvest import mq, queue
from tests.mq import (
    BROKERS,
    config_snapshot,
    delete_site,
    private_site,
    publish_raw,
    take,
)

# A consumer in another process: takes one fetch message, reports it, then hangs
# until it is killed (its Redis liveness key lives one second).
_DOOMED_CONSUMER = """
import json, sys, time
from ckanext.harvest import mq
config = json.loads(sys.argv[1])
backend = mq.open_queue(config, mq.fetch_spec(config["ckan.site_id"]), heartbeat_ttl=1.0)
message = backend.get()
print(message.body if message else "EMPTY", flush=True)
time.sleep(120)
"""


@pytest.fixture(params=BROKERS)
def broker(request, ckan_config, monkeypatch):
    with private_site(ckan_config, monkeypatch, request.param):
        yield request.param


@pytest.fixture
def redis_broker(ckan_config, monkeypatch):
    with private_site(ckan_config, monkeypatch, "redis"):
        yield "redis"


def open_fetch(**kwargs):
    return mq.open_queue(queue.config, queue._fetch_spec(), **kwargs)


def open_gather(**kwargs):
    return mq.open_queue(queue.config, queue._gather_spec(), **kwargs)


def test_published_messages_are_consumed_in_order_and_acknowledged(broker):
    publisher = queue.get_fetch_publisher()
    for object_id in ("o1", "o2", "o3"):
        publisher.send({"harvest_object_id": object_id})
    publisher.close()

    with open_fetch() as backend:
        received = []
        for message in backend.consume(idle_timeout=1.0):
            received.append(json.loads(message.body))
            backend.ack(message)

    assert received == [{"harvest_object_id": i} for i in ("o1", "o2", "o3")]
    with open_fetch() as backend:
        assert backend.get() is None


def test_message_bodies_are_json_objects_with_default_separators(broker):
    publisher = queue.get_gather_publisher()
    publisher.send({"harvest_job_id": "job-1"})
    publisher.close()

    with open_gather() as backend:
        message = take(backend)
        backend.ack(message)

    assert message.body == '{"harvest_job_id": "job-1"}'


def test_unacknowledged_message_returns_when_its_consumer_closes(broker):
    publisher = queue.get_fetch_publisher()
    publisher.send({"harvest_object_id": "o1"})
    publisher.close()
    first = open_fetch()
    assert take(first).body == '{"harvest_object_id": "o1"}'

    first.close()

    with open_fetch() as second:
        again = take(second)
        second.ack(again)
    assert again.body == '{"harvest_object_id": "o1"}'


def test_message_of_a_consumer_killed_without_ack_is_delivered_again(broker,
                                                                     ckan_config):
    publisher = queue.get_fetch_publisher()
    publisher.send({"harvest_object_id": "o-killed"})
    publisher.close()
    doomed = subprocess.Popen(
        [sys.executable, "-c", _DOOMED_CONSUMER,
         json.dumps(config_snapshot(ckan_config))],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert doomed.stdout.readline().strip() == '{"harvest_object_id": "o-killed"}'
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        doomed.stdout.close()

    deadline = time.monotonic() + 10
    with open_fetch() as backend:
        message = backend.get()
        while message is None and time.monotonic() < deadline:
            time.sleep(0.2)
            queue.resubmit_jobs()  # Redis recovery; the broker does it on AMQP
            message = backend.get()
        assert message is not None, "the killed consumer's message was lost"
        backend.ack(message)
    assert message.body == '{"harvest_object_id": "o-killed"}'


def test_reject_gives_the_message_back_for_immediate_redelivery(broker):
    publisher = queue.get_fetch_publisher()
    publisher.send({"harvest_object_id": "o1"})
    publisher.close()

    with open_fetch() as backend:
        backend.reject(take(backend))
        again = take(backend)
        backend.ack(again)

    assert again.body == '{"harvest_object_id": "o1"}'


def test_purge_empties_only_this_sites_harvest_queues(broker, ckan_config,
                                                      monkeypatch):
    for publisher, body in ((queue.get_gather_publisher(), {"harvest_job_id": "j"}),
                            (queue.get_fetch_publisher(), {"harvest_object_id": "o"})):
        publisher.send(body)
        publisher.close()
    other_config = dict(config_snapshot(ckan_config), **{"ckan.site_id": "other.site"})
    other = mq.open_queue(other_config, mq.gather_spec("other.site"))
    other.publish({"harvest_job_id": "other-job"})
    unrelated = ("ckanext-harvest:some-random-key", "some-unrelated-key")
    if broker == "redis":
        for key in unrelated:
            queue.get_connection_redis().set(key, "kept")

    try:
        queue.purge_queues()

        with open_gather() as gather, open_fetch() as fetch:
            assert gather.get() is None
            assert fetch.get() is None
        survivor = take(other)
        assert survivor.body == '{"harvest_job_id": "other-job"}'
        if broker == "redis":
            assert [queue.get_connection_redis().get(k) for k in unrelated] == [
                "kept", "kept"]
    finally:
        other.purge()
        other.close()
        delete_site(broker, "other.site")
        if broker == "redis":
            queue.get_connection_redis().delete(*unrelated)


def _dump(client, keys):
    return {key: client.dump(key) for key in keys}


def test_purge_leaves_every_key_of_other_sites_and_applications_intact(
        redis_broker, ckan_config):
    """Another site's queued, taken and marked messages, another application's
    lists holding harvest-like messages, keys that merely share the prefix: all
    byte-for-byte the same after this site's purge (even when this site's queue
    holds messages naming them)."""
    client = queue.get_connection_redis()
    mine = config_snapshot(ckan_config)
    site = mine["ckan.site_id"]
    other_site = site + "-other"
    theirs = dict(mine, **{"ckan.site_id": other_site})
    other_fetch = mq.open_queue(theirs, mq.fetch_spec(other_site))
    other_gather = mq.open_queue(theirs, mq.gather_spec(other_site))
    app_queue = f"rq:queue:{site}"  # another application's queue (unique to the test)
    foreign = {
        app_queue: ["list", '{"harvest_object_id": "theirs-1"}'],
        f"ckanext-harvest:{site}-app": ["string", "kept"],
        f"ckanext-harvest:{site}x:harvest_object_id": ["list", '{"a": 1}'],
        f"ckanext-harvest:{site}x:harvest_object_id:o1": ["string", "marker"],
        f"celery-{site}": ["list", '{"harvest_job_id": "their-job-1"}'],
    }
    try:
        for number in range(3):
            other_fetch.publish({"harvest_object_id": f"theirs-{number}"})
            other_gather.publish({"harvest_job_id": f"their-job-{number}"})
        taken = take(other_fetch)  # held, unacknowledged, in their processing list
        assert taken is not None
        for key, (kind, value) in foreign.items():
            if kind == "list":
                client.rpush(key, value)
            else:
                client.set(key, value)
        # This site's own queues, naming other sites' and applications' keys.
        for object_id in ("theirs-1", f"../../{app_queue}", "*", ""):
            publish_raw("redis", queue._fetch_spec(),
                        json.dumps({"harvest_object_id": object_id}))
        publish_raw("redis", queue._gather_spec(), '{"harvest_job_id": "their-job-1"}')
        others = sorted(set(client.scan_iter(match=f"ckanext-harvest:{other_site}:*"))
                        | set(foreign))
        before = _dump(client, others)
        assert all(before.values())

        queue.purge_queues()

        assert _dump(client, others) == before
        with open_fetch() as fetch, open_gather() as gather:
            assert fetch.get() is None and gather.get() is None
        other_fetch.ack(taken)
        assert [json.loads(take(other_fetch).body)["harvest_object_id"]
                for _ in range(2)] == ["theirs-1", "theirs-2"]
    finally:
        other_fetch.close()
        other_gather.close()
        delete_site("redis", other_site)
        client.delete(*foreign)


def test_queue_names_and_keys_are_namespaced_by_site_id(broker, ckan_config,
                                                        monkeypatch):
    monkeypatch.setitem(ckan_config, "ckan.site_id", "ns.example")

    assert queue.get_gather_queue_name() == "ckan.harvest.ns.example.gather"
    assert queue.get_fetch_queue_name() == "ckan.harvest.ns.example.fetch"
    assert queue.get_gather_routing_key() == "ckanext-harvest:ns.example:harvest_job_id"
    assert queue.get_fetch_routing_key() == "ckanext-harvest:ns.example:harvest_object_id"


def test_a_site_does_not_see_another_sites_messages(broker, ckan_config):
    mine = config_snapshot(ckan_config)
    theirs = dict(mine, **{"ckan.site_id": mine["ckan.site_id"] + ".other"})
    with mq.open_queue(theirs, mq.fetch_spec(theirs["ckan.site_id"])) as other:
        try:
            other.publish({"harvest_object_id": "theirs"})

            with open_fetch() as backend:
                assert backend.get() is None
            message = take(other)
            other.ack(message)
            assert message.body == '{"harvest_object_id": "theirs"}'
        finally:
                delete_site(broker, theirs["ckan.site_id"])


@pytest.mark.usefixtures("clean_db")
def test_malformed_messages_are_logged_and_skipped_by_the_consumer(broker, caplog):
    spec = queue._fetch_spec()
    for body in ("this is not JSON {", "{}", '{"harvest_object_id": null}',
                 '{"harvest_object_id": "no-such-object"}'):
        publish_raw(broker, spec, body)
    caplog.set_level(logging.INFO, logger="ckanext.harvest")

    queue.run_fetch_consumer(idle_timeout=1.0)

    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "Harvest object does not exist: no-such-object" in errors
    assert len(errors) == 4, errors
    with open_fetch() as backend:
        assert backend.get() is None


def test_redis_consumer_logs_null_id_as_concatenate_error_and_goes_on(redis_broker):
    spec = queue._fetch_spec()
    publish_raw("redis", spec, '{"harvest_object_id": null}')
    publish_raw("redis", spec, '{"harvest_object_id": "good"}')
    consumer = queue.get_fetch_consumer()

    with mock.patch("ckanext.harvest.queue.log.error") as log_error:
        method, header, body = next(consumer.consume(queue=spec.name))

    assert body == '{"harvest_object_id": "good"}'
    assert method.delivery_tag == body and header is consumer
    message = log_error.call_args[0][0]
    assert message.startswith("Redis Exception: ") and "concatenate" in message
    consumer.basic_ack(body)
    consumer.close()


def test_gather_messages_are_deduplicated_on_redis(redis_broker):
    publisher = queue.get_gather_publisher()
    for job_id in ("j1", "j2", "j1"):
        publisher.send({"harvest_job_id": job_id})

    pending = queue.get_connection_redis().lrange(queue.get_gather_routing_key(), 0, -1)

    assert pending == ['{"harvest_job_id": "j2"}', '{"harvest_job_id": "j1"}']


@pytest.mark.usefixtures("clean_db")
def test_idle_consumer_still_takes_the_next_message(broker, caplog):
    """Idle for longer than redis-py's 5 s socket timeout, then a message arrives."""
    caplog.set_level(logging.INFO, logger="ckanext.harvest")

    def publish_late() -> None:
        publisher = queue.get_fetch_publisher()
        publisher.send({"harvest_object_id": "late"})
        publisher.close()

    timer = threading.Timer(6.5, publish_late)
    started = time.monotonic()
    timer.start()
    try:
        handled = queue.run_fetch_consumer(stop_after=1)
    finally:
        timer.cancel()

    assert handled == 1
    assert time.monotonic() - started >= 6.5
    assert "Harvest object does not exist: late" in caplog.messages
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                and "does not exist" not in r.getMessage()]


def test_amqp_connection_survives_a_stage_longer_than_its_heartbeat(ckan_config,
                                                                    monkeypatch):
    """Without heartbeats the broker would drop the connection mid-stage and hand
    the message to another consumer while it is still being worked on."""
    with private_site(ckan_config, monkeypatch, "amqp"):
        parameters = mq.amqp.parameters(ckan_config)
        parameters.heartbeat = 1
        spec = queue._fetch_spec()
        backend = mq.amqp.AmqpQueue(pika.BlockingConnection(parameters), spec)
        backend.publish({"harvest_object_id": "slow"})

        with closing(backend.consume()) as messages:
            message = next(messages)
            time.sleep(4)  # a stage that does no I/O on the broker connection
            backend.ack(message)
        backend.close()

        with open_fetch() as other:
            assert take(other, timeout=0.5) is None


def test_stats_count_waiting_messages_and_live_consumers(broker):
    publisher = queue.get_fetch_publisher()
    for object_id in ("o1", "o2", "o3"):
        publisher.send({"harvest_object_id": object_id})
    publisher.close()

    with open_fetch() as observer:
        before = observer.stats()
        consumer = open_fetch()
        messages = consumer.consume(idle_timeout=5.0)
        taken = next(messages)
        during = observer.stats()
        messages.close()
        consumer.close()
        after = observer.stats()

    assert taken.body == '{"harvest_object_id": "o1"}'
    # An observer is no consumer; a message taken and not acknowledged is not
    # waiting; a closed consumer is gone and its message waits again.
    assert before == mq.QueueStats(depth=3, consumers=0)
    assert during == mq.QueueStats(depth=2, consumers=1)
    assert after == mq.QueueStats(depth=3, consumers=0)


@pytest.mark.parametrize("raw, seconds", [(None, 30.0), ("", 30.0), ("10", 10.0),
                                          (" 2 ", 2.0), (45, 45.0)])
def test_consumer_timeout_is_read_from_the_config(raw: Any, seconds: float) -> None:
    from ckanext.harvest.mq import legacy

    config = {} if raw is None else {"ckan.harvest.mq.consumer_timeout": raw}
    assert legacy.consumer_timeout(config) == seconds


@pytest.mark.parametrize("raw", ["1", "0", "-5", "ten", "2.5"])
def test_a_bad_consumer_timeout_is_refused_with_the_key_named(raw: str) -> None:
    from ckanext.harvest.mq import legacy

    with pytest.raises(ValueError, match="ckan.harvest.mq.consumer_timeout must be a "
                                         "whole number of seconds, 2 or more"):
        legacy.consumer_timeout({"ckan.harvest.mq.consumer_timeout": raw})


def test_a_consumer_opened_from_the_config_beats_with_its_consumer_timeout(
        redis_broker: str, monkeypatch: Any) -> None:
    from ckanext.harvest.mq import legacy
    from ckanext.harvest.mq import redis as mq_redis

    monkeypatch.setitem(queue.config, "ckan.harvest.mq.consumer_timeout", "7")
    backend = legacy.open_queue(queue.config, queue._fetch_spec())
    try:
        assert backend.get() is None  # registers the consumer (nothing queued)
        alive = mq_redis.alive_key(queue._fetch_spec(), backend.consumer_id)
        assert 5000 < backend.redis.pttl(alive) <= 7000
    finally:
        backend.close()
