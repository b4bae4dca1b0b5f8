"""Stage drivers of ckanext.harvest.queue against PostgreSQL and the real brokers."""
from __future__ import annotations

import datetime
import json
import logging
import time
import uuid
from typing import Any, Callable
from unittest import mock

import pytest
import sqlalchemy as sa
from ckan import model
from sqlalchemy.exc import DatabaseError, OperationalError

from ckanext.harvest import mq, queue
from ckanext.harvest.lib import worker
from ckanext.harvest.model import (
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
    HarvestSource,
    JobStatus,
    ObjectState,
    ReportStatus,
)
from ckanext.harvest.mq import legacy
from ckanext.harvest.mq import redis as mq_redis
from tests.mq import BROKERS, config_snapshot, delete_site, private_site, take
from tests.support.marks import harvest_site

pytestmark = harvest_site(index=False)


@pytest.fixture(autouse=True)
def redis_site(ckan_config, monkeypatch):
    """Redis (the default broker) in a private site namespace."""
    with private_site(ckan_config, monkeypatch, "redis") as site:
        yield site


@pytest.fixture
def harvester() -> Any:
    return queue.get_harvester("test")


# -- helpers ---------------------------------------------------------------------


def make_source(source_type: str = "test", **config: Any) -> HarvestSource:
    source = HarvestSource(url=f"http://{uuid.uuid4().hex}.example.org/",
                           type=source_type, config=json.dumps(config))
    source.save()
    return source


def make_job(source: HarvestSource, status: str = JobStatus.RUNNING.value,
             **fields: Any) -> HarvestJob:
    job = HarvestJob(source=source, status=status, **fields)
    job.save()
    return job


def make_object(job: HarvestJob, guid: str = "g1", **fields: Any) -> HarvestObject:
    obj = HarvestObject(guid=guid, job=job,
                        content=json.dumps({"guid": guid, "title": guid}), **fields)
    obj.save()
    return obj


def object_for(source_type: str = "test", guid: str = "g1", job_fields: Any = None,
               **config: Any) -> HarvestObject:
    job = make_job(make_source(source_type, **config), **(job_fields or {}))
    return make_object(job, guid)


def fresh(cls: Any, id_: str) -> Any:
    model.Session.remove()
    return cls.get(id_)


def send(routing: str, **body: str) -> None:
    publisher = (queue.get_gather_publisher() if routing == "gather"
                 else queue.get_fetch_publisher())
    publisher.send(body)
    publisher.close()


def deliver_fetch() -> Any:
    """Take one fetch message the way downstream tests do and handle it."""
    consumer = queue.get_fetch_consumer()
    reply = consumer.basic_get(queue=queue.get_fetch_queue_name())
    return queue.fetch_callback(consumer, *reply)


def deliver_gather() -> Any:
    consumer = queue.get_gather_consumer()
    reply = consumer.basic_get(queue=queue.get_gather_queue_name())
    return queue.gather_callback(consumer, *reply)


def redis() -> Any:
    return queue.get_connection_redis()


def fetch_queue_ids() -> list[str]:
    """Ids pending on the Redis fetch queue, in order."""
    bodies = redis().lrange(queue.get_fetch_routing_key(), 0, -1)
    return [json.loads(body)["harvest_object_id"] for body in bodies]


def nothing_in_flight() -> bool:
    """No fetch or gather message pending or taken-but-unacknowledged, no marker."""
    specs = (queue._fetch_spec(), queue._gather_spec())
    markers = [key for spec in specs
               for key in redis().scan_iter(match=spec.routing_key + ":*")]
    return not markers and not any(mq_redis.queued_ids(redis(), s) for s in specs)


# -- fetch_and_import_stages -----------------------------------------------------


def test_new_dataset_is_imported_complete_and_added(harvester):
    obj = object_for(guid="new-one")

    queue.fetch_and_import_stages(harvester, obj)

    obj = fresh(HarvestObject, obj.id)
    assert (obj.state, obj.report_status, obj.current) == (
        ObjectState.COMPLETE.value, ReportStatus.ADDED.value, True)
    assert obj.fetch_started <= obj.fetch_finished <= obj.import_started \
        <= obj.import_finished
    assert model.Package.get(obj.package_id).name == "harvested-new-one"


def test_dataset_imported_again_is_reported_updated(harvester):
    first = object_for(guid="again")
    queue.fetch_and_import_stages(harvester, first)
    second = make_object(make_job(first.source), guid="again")

    queue.fetch_and_import_stages(harvester, second)

    second = fresh(HarvestObject, second.id)
    assert second.state == ObjectState.COMPLETE.value
    assert second.report_status == ReportStatus.UPDATED.value
    assert second.package_id == HarvestObject.get(first.id).package_id


def test_object_left_non_current_by_import_is_reported_deleted(harvester):
    obj = object_for(**{"import": {"g1": "delete"}})

    queue.fetch_and_import_stages(harvester, obj)

    obj = fresh(HarvestObject, obj.id)
    assert (obj.state, obj.report_status) == (
        ObjectState.COMPLETE.value, ReportStatus.DELETED.value)


def test_import_unchanged_completes_as_not_modified(harvester):
    obj = object_for(**{"import": {"g1": "unchanged"}})

    queue.fetch_and_import_stages(harvester, obj)

    obj = fresh(HarvestObject, obj.id)
    assert (obj.state, obj.report_status) == (
        ObjectState.COMPLETE.value, ReportStatus.NOT_MODIFIED.value)
    assert obj.import_started is not None and obj.import_finished is not None


def test_import_failure_ends_in_error_errored(harvester):
    obj = object_for(**{"import": {"g1": "error"}})

    queue.fetch_and_import_stages(harvester, obj)

    obj = fresh(HarvestObject, obj.id)
    assert (obj.state, obj.report_status) == (
        ObjectState.ERROR.value, ReportStatus.ERRORED.value)
    assert obj.import_finished is not None
    assert [e.message for e in obj.errors] == ["Import failed on purpose"]


def test_fetch_unchanged_completes_without_import(harvester):
    obj = object_for(fetch={"g1": "unchanged"})

    queue.fetch_and_import_stages(harvester, obj)

    obj = fresh(HarvestObject, obj.id)
    assert (obj.state, obj.report_status) == (
        ObjectState.COMPLETE.value, ReportStatus.NOT_MODIFIED.value)
    assert obj.fetch_finished is not None
    assert obj.import_started is None and obj.import_finished is None


def test_fetch_failure_ends_in_error_errored_without_import(harvester):
    obj = object_for(fetch={"g1": "error"})

    queue.fetch_and_import_stages(harvester, obj)

    obj = fresh(HarvestObject, obj.id)
    assert (obj.state, obj.report_status) == (
        ObjectState.ERROR.value, ReportStatus.ERRORED.value)
    assert obj.import_started is None


def test_fetch_and_import_stages_lets_harvester_exceptions_through(harvester):
    obj = object_for(fetch={"g1": "raise"})

    with pytest.raises(RuntimeError, match="Fetch stage raised on purpose"):
        queue.fetch_and_import_stages(harvester, obj)

    assert fresh(HarvestObject, obj.id).state == ObjectState.FETCH.value


# -- fetch_callback ----------------------------------------------------------------


def test_fetch_callback_runs_the_stages_then_acknowledges():
    obj = object_for(fetch={"g1": "unchanged"})
    send("fetch", harvest_object_id=obj.id)

    deliver_fetch()

    obj = fresh(HarvestObject, obj.id)
    assert (obj.state, obj.retry_times) == (ObjectState.COMPLETE.value, 1)
    assert nothing_in_flight()


def test_fetch_callback_errors_an_object_at_its_fifth_attempt(caplog):
    obj = object_for(fetch={"g1": "unchanged"})
    obj.retry_times = 4
    obj.save()
    send("fetch", harvest_object_id=obj.id)

    assert deliver_fetch() is False

    obj = fresh(HarvestObject, obj.id)
    assert (obj.state, obj.retry_times, obj.report_status) == (
        ObjectState.ERROR.value, 5, None)
    assert obj.fetch_started is None
    assert f"Too many consecutive retries for object {obj.id}" in caplog.messages
    assert nothing_in_flight()


def test_fetch_callback_processes_an_object_below_the_retry_limit():
    obj = object_for(fetch={"g1": "unchanged"})
    obj.retry_times = 3
    obj.save()
    send("fetch", harvest_object_id=obj.id)

    deliver_fetch()

    obj = fresh(HarvestObject, obj.id)
    assert (obj.state, obj.retry_times) == (ObjectState.COMPLETE.value, 4)


def test_fetch_callback_errors_objects_of_a_finished_job(caplog):
    obj = object_for(job_fields={"status": JobStatus.FINISHED.value})
    send("fetch", harvest_object_id=obj.id)

    assert deliver_fetch() is False

    obj = fresh(HarvestObject, obj.id)
    assert (obj.state, obj.report_status) == (
        ObjectState.ERROR.value, ReportStatus.ERRORED.value)
    assert obj.fetch_started is None
    assert (f"Job {obj.harvest_job_id} was aborted or timed out, object {obj.id} "
            "set to error") in caplog.messages
    assert nothing_in_flight()


def test_fetch_callback_leaves_object_waiting_when_no_harvester_matches():
    obj = object_for(source_type="no-such-harvester")
    send("fetch", harvest_object_id=obj.id)

    deliver_fetch()

    obj = fresh(HarvestObject, obj.id)
    assert (obj.state, obj.retry_times) == (ObjectState.WAITING.value, 1)
    assert nothing_in_flight()


@pytest.mark.parametrize("state", [ObjectState.COMPLETE.value, ObjectState.ERROR.value])
def test_fetch_callback_skips_a_redelivered_finished_object(state):
    obj = object_for()
    obj.state, obj.retry_times = state, 1
    obj.save()
    send("fetch", harvest_object_id=obj.id)

    assert deliver_fetch() is False

    obj = fresh(HarvestObject, obj.id)
    assert (obj.state, obj.retry_times, obj.fetch_started) == (state, 1, None)
    assert nothing_in_flight()


def test_fetch_callback_acknowledges_unknown_objects(caplog):
    send("fetch", harvest_object_id="no-such-object")

    assert deliver_fetch() is False

    assert "Harvest object does not exist: no-such-object" in caplog.messages
    assert nothing_in_flight()


def test_fetch_callback_acknowledges_a_message_without_id(caplog):
    redis().rpush(queue.get_fetch_routing_key(), json.dumps({"other": 1}))

    assert deliver_fetch() is False

    assert "No harvest object id received" in caplog.messages
    assert nothing_in_flight()


@pytest.mark.parametrize("stage", ["fetch", "import"])
def test_stage_exception_is_recorded_and_the_message_acknowledged(stage):
    obj = object_for(**{stage: {"g1": "raise"}})
    send("fetch", harvest_object_id=obj.id)

    deliver_fetch()

    obj = fresh(HarvestObject, obj.id)
    assert (obj.state, obj.report_status) == (
        ObjectState.ERROR.value, ReportStatus.ERRORED.value)
    [error] = obj.errors
    assert error.stage == stage.capitalize()
    assert "RuntimeError" in error.message
    assert f"{stage.capitalize()} stage raised on purpose" in error.message
    assert nothing_in_flight()


def test_fetch_consumer_goes_on_after_a_stage_exception():
    source = make_source(fetch={"bad": "raise", "good": "unchanged"})
    job = make_job(source)
    bad, good = make_object(job, "bad"), make_object(job, "good")
    send("fetch", harvest_object_id=bad.id)
    send("fetch", harvest_object_id=good.id)

    bad_id, good_id = bad.id, good.id  # the consumer's rollback expires them

    assert queue.run_fetch_consumer(stop_after=2) == 2

    assert fresh(HarvestObject, bad_id).state == ObjectState.ERROR.value
    assert fresh(HarvestObject, good_id).state == ObjectState.COMPLETE.value
    assert nothing_in_flight()


def test_fetch_consumer_gives_back_a_message_on_database_error(monkeypatch):
    def broken_get(*args: Any, **kwargs: Any) -> Any:
        raise DatabaseError("SELECT", {}, Exception("database is gone"))

    monkeypatch.setattr(worker, "RETRY_DELAY_SECONDS", 0)
    monkeypatch.setattr(worker, "_load_object", broken_get)
    send("fetch", harvest_object_id="some-object")

    assert queue.run_fetch_consumer(stop_after=1) == 1

    assert fetch_queue_ids() == ["some-object"]


@pytest.mark.parametrize("error, requeued", [
    (OperationalError("UPDATE", {}, Exception("server closed the connection")), True),
    (ValueError("a bug in the framework"), False),
])
def test_fetch_consumer_survives_errors_outside_the_stages(error, requeued,
                                                           monkeypatch, caplog):
    def broken(obj: Any) -> bool:
        raise error

    obj = object_for()
    monkeypatch.setattr(worker, "RETRY_DELAY_SECONDS", 0)
    monkeypatch.setattr(worker, "_may_fetch", broken)
    send("fetch", harvest_object_id=obj.id)

    assert queue.run_fetch_consumer(stop_after=1) == 1

    assert fetch_queue_ids() == ([obj.id] if requeued else [])
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)
    assert fresh(HarvestObject, obj.id).state == ObjectState.WAITING.value


# -- a database connection lost in the middle of a stage -------------------------


def _terminate_own_connection() -> Exception:
    """Have PostgreSQL terminate the session's connection (``pg_terminate_backend``,
    as an administrator or a server restart would); returns the error raised."""
    try:
        model.Session.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
    except OperationalError as exc:
        model.Session.rollback()
        return exc
    raise AssertionError("the connection survived pg_terminate_backend")


def _losing_the_connection_once(stage: Callable[[Any], Any],
                                record_error: Callable[[Any, Exception], None]
                                ) -> tuple[Callable[[Any], Any], list[str]]:
    """A stage whose first call loses its database connection and, like the CKAN
    harvester, records the error and gives up; later calls run ``stage``."""
    calls: list[str] = []

    def wrapper(target: Any) -> Any:
        calls.append(target.id)
        if len(calls) > 1:
            return stage(target)
        record_error(target, _terminate_own_connection())
        return None

    return wrapper, calls


def test_import_that_lost_its_database_connection_is_retried(harvester, monkeypatch):
    import_stage, calls = _losing_the_connection_once(
        harvester.import_stage,
        lambda obj, exc: HarvestObjectError.create(str(exc), obj, "Import"))
    monkeypatch.setattr(harvester, "import_stage", import_stage)
    monkeypatch.setattr(worker, "RETRY_DELAY_SECONDS", 0)
    obj = object_for(guid="db-lost")
    send("fetch", harvest_object_id=obj.id)

    assert queue.run_fetch_consumer(stop_after=2, idle_timeout=10) == 2

    obj = fresh(HarvestObject, obj.id)
    assert calls == [obj.id, obj.id]
    assert (obj.state, obj.report_status, obj.retry_times) == (
        ObjectState.COMPLETE.value, ReportStatus.ADDED.value, 2)
    assert obj.errors == []  # the first attempt's error went with it
    assert model.Session.query(model.Package).filter_by(
        name="harvested-db-lost").count() == 1
    assert nothing_in_flight()


def test_gather_that_lost_its_database_connection_is_retried(harvester, monkeypatch):
    gather_stage, calls = _losing_the_connection_once(
        harvester.gather_stage,
        lambda job, exc: HarvestGatherError.create(repr(exc), job))
    monkeypatch.setattr(harvester, "gather_stage", gather_stage)
    monkeypatch.setattr(worker, "RETRY_DELAY_SECONDS", 0)
    job = make_job(make_source(datasets=[{"guid": "g1"}, {"guid": "g2"}]))
    send("gather", harvest_job_id=job.id)

    assert queue.run_gather_consumer(stop_after=2, idle_timeout=10) == 2

    job = fresh(HarvestJob, job.id)
    assert calls == [job.id, job.id]
    assert job.gather_errors == []
    assert sorted(o.guid for o in job.objects) == ["g1", "g2"]
    assert job.gather_started <= job.gather_finished
    assert sorted(fetch_queue_ids()) == sorted(o.id for o in job.objects)


def test_an_object_that_ends_complete_despite_a_lost_connection_is_kept(
        harvester, monkeypatch):
    original = harvester.import_stage

    def import_stage(obj: Any) -> Any:
        _terminate_own_connection()  # lost, but the stage goes on and succeeds
        return original(obj)

    monkeypatch.setattr(harvester, "import_stage", import_stage)
    obj = object_for(guid="survivor")
    send("fetch", harvest_object_id=obj.id)

    assert queue.run_fetch_consumer(stop_after=1, idle_timeout=10) == 1

    obj = fresh(HarvestObject, obj.id)
    assert (obj.state, obj.report_status, obj.retry_times) == (
        ObjectState.COMPLETE.value, ReportStatus.ADDED.value, 1)
    assert nothing_in_flight()


def _terminate_behind_the_session() -> None:
    """Terminate the session's connection from another one: the session learns it
    only at its next statement (here: the stage driver's own commit)."""
    _terminate(model.Session.execute(sa.text("SELECT pg_backend_pid()")).scalar())


def _terminate(pid: int) -> None:
    """End the database session ``pid`` and wait until it is gone."""
    with model.meta.engine.connect() as other:
        other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        # A loaded machine may take seconds to end the backend.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            alive = other.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                {"pid": pid}).scalar()
            # pg_stat_activity is a snapshot taken once per transaction
            other.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
            if not alive:
                return
            time.sleep(0.05)
    raise AssertionError("the connection survived pg_terminate_backend")


def _imported_at_the_second_delivery(guid: str, calls: list[str],
                                     monkeypatch: Any) -> HarvestObject:
    """Send an object's message and consume twice: the first delivery fails (as
    the test arranged), the second imports it. Returns the object, reloaded."""
    monkeypatch.setattr(worker, "RETRY_DELAY_SECONDS", 0)
    obj = object_for(guid=guid)
    send("fetch", harvest_object_id=obj.id)

    assert queue.run_fetch_consumer(stop_after=2, idle_timeout=10) == 2

    obj = fresh(HarvestObject, obj.id)
    assert calls == [obj.id, obj.id]
    assert (obj.state, obj.report_status) == (
        ObjectState.COMPLETE.value, ReportStatus.ADDED.value)
    assert nothing_in_flight()
    return obj


def test_connection_lost_at_the_drivers_own_commit_is_retried(harvester, monkeypatch,
                                                                caplog):
    """Found by the faults suite: the commit after the fetch stage failed, then
    reading the expired object raised PendingRollbackError, which dropped the
    message and left the object in FETCH (the job could never finish)."""
    original = harvester.fetch_stage
    calls: list[str] = []

    def fetch_stage(obj: Any) -> Any:
        calls.append(obj.id)
        if len(calls) == 1:
            _terminate_behind_the_session()
        return original(obj)

    monkeypatch.setattr(harvester, "fetch_stage", fetch_stage)

    obj = _imported_at_the_second_delivery("driver-commit", calls, monkeypatch)

    assert obj.retry_times == 2
    assert obj.errors == []
    assert not any("message dropped" in message for message in caplog.messages)


def test_consumer_survives_when_its_session_connection_is_dead_too(harvester,
                                                                   monkeypatch):
    """Found by the faults suite: every connection of the consumer terminated at
    once; the lock's failed, and removing the session (its rollback on a dead
    connection) raised in turn, which ended the consumer process."""
    original = worker._exclusive
    calls: list[str] = []

    def exclusive(object_id: str) -> Any:
        calls.append(object_id)
        if len(calls) == 1:
            _terminate_behind_the_session()  # the session holds a transaction
            raise OperationalError("SELECT pg_try_advisory_lock", {},
                                   Exception("server closed the connection"))
        return original(object_id)

    monkeypatch.setattr(worker, "_exclusive", exclusive)

    _imported_at_the_second_delivery("all-connections-lost", calls, monkeypatch)


def _lock_connection_pid() -> int:
    connection = worker._lock_connection.connection
    assert connection is not None
    return connection.execute(sa.text("SELECT pg_backend_pid()")).scalar()


def test_the_lock_connection_is_kept_and_replaced_when_it_died(monkeypatch, caplog):
    """One lock connection per consumer thread, from one message to the next; one
    that died in between (database restarted) is replaced at once, without
    giving the message back."""
    monkeypatch.setattr(worker, "RETRY_DELAY_SECONDS", 30)  # a give-back would show
    objects = [object_for(guid="kept-%d" % i) for i in range(3)]
    for obj in objects:
        send("fetch", harvest_object_id=obj.id)

    assert queue.run_fetch_consumer(stop_after=1, idle_timeout=10) == 1
    first = _lock_connection_pid()
    assert queue.run_fetch_consumer(stop_after=1, idle_timeout=10) == 1
    assert _lock_connection_pid() == first
    _terminate(first)
    started = time.monotonic()
    assert queue.run_fetch_consumer(stop_after=1, idle_timeout=10) == 1

    assert time.monotonic() - started < 20
    assert _lock_connection_pid() != first
    for obj in objects:
        done = fresh(HarvestObject, obj.id)
        assert (done.state, done.report_status, done.retry_times) == (
            ObjectState.COMPLETE.value, ReportStatus.ADDED.value, 1)
    assert not any("Database unavailable" in message for message in caplog.messages)
    assert nothing_in_flight()


def test_the_consumer_commits_the_move_to_fetch_before_the_fetch_stage(harvester,
                                                                       monkeypatch):
    """Written on the lock connection (the session keeps its transaction), but
    committed all the same: another connection sees FETCH and the attempt."""
    original = harvester.fetch_stage
    seen: list[tuple[str, int, bool]] = []

    def fetch_stage(obj: Any) -> Any:
        with model.meta.engine.connect() as other:
            row = other.execute(sa.text(
                "SELECT state, retry_times, fetch_started IS NOT NULL AS started"
                " FROM harvest_object WHERE id = :id"), {"id": obj.id}).one()
        seen.append(tuple(row))
        return original(obj)

    monkeypatch.setattr(harvester, "fetch_stage", fetch_stage)
    obj = object_for(guid="fetch-committed")
    object_id = obj.id
    send("fetch", harvest_object_id=object_id)

    assert queue.run_fetch_consumer(stop_after=1, idle_timeout=10) == 1

    assert seen == [("FETCH", 1, True)]
    done = fresh(HarvestObject, object_id)
    assert (done.state, done.report_status, done.retry_times) == (
        ObjectState.COMPLETE.value, ReportStatus.ADDED.value, 1)
    assert done.fetch_started is not None and done.fetch_finished is not None


# -- one consumer at a time per object ---------------------------------------------


def _lock_object(object_id: str) -> Any:
    """Take the object's advisory lock as a consumer handling it would; returns the
    connection holding it."""
    connection = model.meta.engine.connect()
    assert connection.execute(sa.text(
        "SELECT pg_try_advisory_lock(hashtextextended(:id, 0))"), {"id": object_id}
    ).scalar()
    return connection


def test_duplicate_message_of_an_object_being_processed_is_given_back(monkeypatch):
    monkeypatch.setattr(worker, "RETRY_DELAY_SECONDS", 0)
    obj = object_for(guid="busy")
    send("fetch", harvest_object_id=obj.id)
    other_consumer = _lock_object(obj.id)
    try:
        assert queue.run_fetch_consumer(stop_after=1, idle_timeout=10) == 1

        busy = fresh(HarvestObject, obj.id)
        assert (busy.state, busy.retry_times) == (ObjectState.WAITING.value, 0)
        assert fetch_queue_ids() == [obj.id]  # given back, not dropped
    finally:
        other_consumer.invalidate()  # the other consumer is gone: so is its lock
        other_consumer.close()

    assert queue.run_fetch_consumer(stop_after=1, idle_timeout=10) == 1

    done = fresh(HarvestObject, obj.id)
    assert (done.state, done.report_status, done.retry_times) == (
        ObjectState.COMPLETE.value, ReportStatus.ADDED.value, 1)
    assert nothing_in_flight()


def test_an_object_finished_while_waiting_for_its_lock_is_not_processed_again():
    obj = object_for(guid="raced")
    send("fetch", harvest_object_id=obj.id)
    original = worker._exclusive

    def finished_meanwhile(object_id: str) -> Any:
        # The other consumer completes the object while we wait for the lock.
        model.Session.execute(sa.text(
            "UPDATE harvest_object SET state = 'COMPLETE', report_status = 'added' "
            "WHERE id = :id"), {"id": object_id})
        model.Session.commit()
        return original(object_id)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(worker, "_exclusive", finished_meanwhile)
        assert queue.run_fetch_consumer(stop_after=1, idle_timeout=10) == 1

    obj = fresh(HarvestObject, obj.id)
    assert (obj.state, obj.report_status, obj.retry_times) == (
        ObjectState.COMPLETE.value, ReportStatus.ADDED.value, 0)
    assert model.Session.query(model.Package).filter_by(
        name="harvested-raced").count() == 0
    assert nothing_in_flight()


# -- gather_callback -------------------------------------------------------------


def test_gather_callback_gathers_and_queues_one_fetch_message_per_object():
    job = make_job(make_source(datasets=[{"guid": "g1"}, {"guid": "g2"}]))
    send("gather", harvest_job_id=job.id)

    deliver_gather()

    job = fresh(HarvestJob, job.id)
    objects = sorted(job.objects, key=lambda o: o.guid)
    assert [(o.guid, o.state) for o in objects] == [
        ("g1", ObjectState.WAITING.value), ("g2", ObjectState.WAITING.value)]
    assert fetch_queue_ids() == [o.id for o in objects]
    assert job.status == JobStatus.RUNNING.value
    assert job.gather_started <= job.gather_finished
    assert not redis().lrange(queue.get_gather_routing_key(), 0, -1)


@pytest.mark.ckan_config("ckan.harvest.max_objects_per_job", 3)
def test_gather_callback_limits_the_objects_of_a_job():
    job = make_job(make_source(datasets=[{"guid": f"g{i}"} for i in range(5)]))
    send("gather", harvest_job_id=job.id)

    deliver_gather()

    job = fresh(HarvestJob, job.id)
    assert len(job.objects) == 3
    assert sorted(fetch_queue_ids()) == sorted(o.id for o in job.objects)
    assert [e.message for e in job.gather_errors] == [
        "The harvester gathered 5 objects, more than the 3 a job may have "
        "(ckan.harvest.max_objects_per_job): the first 3 are harvested, the other 2 "
        "are left for the next job"]


def test_gather_callback_without_harvester_finishes_the_job_with_an_error():
    job = make_job(make_source(source_type="no-such-harvester"))
    send("gather", harvest_job_id=job.id)

    deliver_gather()

    job = fresh(HarvestJob, job.id)
    assert [e.message for e in job.gather_errors] == [
        "System error - No harvester could be found for source type "
        "no-such-harvester"]
    assert job.status == JobStatus.FINISHED.value
    assert job.finished is None and job.gather_finished is None
    assert nothing_in_flight()


def test_gather_exception_is_recorded_and_the_jobs_objects_deleted():
    job = make_job(make_source(gather="raise"))
    make_object(job, "left-over")
    send("gather", harvest_job_id=job.id)

    assert deliver_gather() is False

    job = fresh(HarvestJob, job.id)
    [error] = job.gather_errors
    assert "RuntimeError: Gather stage raised on purpose" in error.message
    assert job.objects == []
    assert job.gather_finished is not None
    assert job.status == JobStatus.RUNNING.value
    assert nothing_in_flight()


def test_gather_returning_none_records_nothing(caplog):
    job = make_job(make_source(gather="none"))
    send("gather", harvest_job_id=job.id)

    assert deliver_gather() is False

    job = fresh(HarvestJob, job.id)
    assert job.gather_errors == [] and job.gather_finished is not None
    assert "Gather stage failed" in caplog.messages
    assert nothing_in_flight()


def test_gather_error_recorded_by_the_harvester_is_kept():
    job = make_job(make_source(gather="error"))
    send("gather", harvest_job_id=job.id)

    assert deliver_gather() is False

    job = fresh(HarvestJob, job.id)
    assert [e.message for e in job.gather_errors] == ["Gather stage failed on purpose"]


def test_gather_with_nothing_to_fetch(caplog):
    job = make_job(make_source(datasets=[]))
    send("gather", harvest_job_id=job.id)

    assert deliver_gather() is False

    assert "No harvest objects to fetch" in caplog.messages
    assert fresh(HarvestJob, job.id).gather_finished is not None
    assert nothing_in_flight()


@pytest.mark.parametrize("body, logged", [
    ({"harvest_job_id": "no-such-job"}, "Harvest job does not exist: no-such-job"),
    ({"something": "else"}, "No harvest job id received"),
])
def test_gather_callback_acknowledges_messages_it_cannot_use(body, logged, caplog):
    redis().rpush(queue.get_gather_routing_key(), json.dumps(body))

    assert deliver_gather() is False

    assert logged in caplog.messages
    assert nothing_in_flight()


def test_redelivered_gather_of_a_gathered_job_only_resends_unqueued_objects():
    job = make_job(make_source(datasets=[{"guid": "g1"}]),
                   gather_started=datetime.datetime.utcnow(),
                   gather_finished=datetime.datetime.utcnow())
    queued, lost = make_object(job, "queued"), make_object(job, "lost")
    make_object(job, "done", state=ObjectState.COMPLETE.value)
    send("fetch", harvest_object_id=queued.id)
    send("gather", harvest_job_id=job.id)

    assert deliver_gather() is False

    assert sorted(o.guid for o in fresh(HarvestJob, job.id).objects) == [
        "done", "lost", "queued"]
    assert fetch_queue_ids() == [queued.id, lost.id]
    assert not redis().lrange(queue.get_gather_routing_key(), 0, -1)


def test_partly_gathered_job_is_gathered_afresh():
    job = make_job(make_source(datasets=[{"guid": "g1"}]),
                   gather_started=datetime.datetime.utcnow())
    stale = make_object(job, "stale")
    send("gather", harvest_job_id=job.id)

    deliver_gather()

    job = fresh(HarvestJob, job.id)
    assert [o.guid for o in job.objects] == ["g1"]
    assert HarvestObject.get(stale.id) is None
    assert fetch_queue_ids() == [job.objects[0].id]


def test_gather_stage_deletes_objects_and_sets_gather_finished_on_exception(harvester):
    job = make_job(make_source(gather="raise"))
    make_object(job, "left-over")

    with pytest.raises(RuntimeError):
        queue.gather_stage(harvester, job)

    job = fresh(HarvestJob, job.id)
    assert job.objects == []
    assert job.gather_started <= job.gather_finished


def test_gather_consumer_goes_on_after_a_gather_exception():
    bad = make_job(make_source(gather="raise"))
    good = make_job(make_source(datasets=[{"guid": "g1"}]))
    send("gather", harvest_job_id=bad.id)
    send("gather", harvest_job_id=good.id)

    assert queue.run_gather_consumer(stop_after=2) == 2

    assert len(fresh(HarvestJob, bad.id).gather_errors) == 1
    assert fetch_queue_ids() == [o.id for o in fresh(HarvestJob, good.id).objects]


@pytest.mark.parametrize("broker", BROKERS)
def test_a_harvest_runs_through_both_consumers(broker, ckan_config, monkeypatch):
    with private_site(ckan_config, monkeypatch, broker):
        job = make_job(make_source(datasets=[{"guid": "e2e-new"}, {"guid": "e2e-same"}],
                                   fetch={"e2e-same": "unchanged"}))
        send("gather", harvest_job_id=job.id)

        assert queue.run_gather_consumer(stop_after=1) == 1
        assert queue.run_fetch_consumer(stop_after=2) == 2

        job = fresh(HarvestJob, job.id)
        assert sorted((o.guid, o.state, o.report_status) for o in job.objects) == [
            ("e2e-new", "COMPLETE", "added"), ("e2e-same", "COMPLETE", "not modified")]
        with legacy.open_queue(queue.config, queue._fetch_spec()) as fetch:
            assert take(fetch, timeout=0.2) is None


def _nothing_left(broker: str) -> bool:
    """Nothing pending on either queue (and, on Redis, nothing unacknowledged)."""
    if broker == "redis":
        return nothing_in_flight()
    with legacy.open_queue(queue.config, queue._fetch_spec()) as fetch, \
            legacy.open_queue(queue.config, queue._gather_spec()) as gather:
        return take(fetch, timeout=0.2) is None and take(gather, timeout=0.2) is None


@pytest.mark.parametrize("broker", BROKERS)
def test_legacy_consumer_api_drives_the_callbacks(broker, ckan_config, monkeypatch):
    """``consume``/``basic_get`` + callbacks, as downstream code uses them."""
    with private_site(ckan_config, monkeypatch, broker):
        job = make_job(make_source(datasets=[{"guid": "g1"}], fetch={"g1": "unchanged"}))
        send("gather", harvest_job_id=job.id)
        gather_consumer = queue.get_gather_consumer()
        fetch_consumer = queue.get_fetch_consumer()

        deliveries = gather_consumer.consume(queue=queue.get_gather_queue_name())
        queue.gather_callback(gather_consumer, *next(deliveries))
        deliveries.close()
        reply = fetch_consumer.basic_get(queue=queue.get_fetch_queue_name())
        queue.fetch_callback(fetch_consumer, *reply)
        gather_consumer.close()
        fetch_consumer.close()

        [obj] = fresh(HarvestJob, job.id).objects
        assert (obj.state, obj.report_status) == ("COMPLETE", "not modified")
        assert _nothing_left(broker)


# -- resubmit_jobs / resubmit_objects --------------------------------------------


def _marker(routing_key: str, id_: str, age: datetime.timedelta,
            fmt: str = "%Y-%m-%d %H:%M:%S.%f") -> str:
    key = f"{routing_key}:{id_}"
    redis().set(key, (datetime.datetime.now() - age).strftime(fmt))
    return key


def test_resubmit_jobs_requeues_old_markers_nobody_holds():
    fetch_key, gather_key = queue.get_fetch_routing_key(), queue.get_gather_routing_key()
    stale = [
        _marker(fetch_key, "o-old", datetime.timedelta(seconds=181)),
        # Q35: a day and 10 s is old, although timedelta.seconds == 10.
        _marker(fetch_key, "o-day", datetime.timedelta(days=1, seconds=10)),
        # Q35: a marker written with zero microseconds still parses.
        _marker(fetch_key, "o-whole", datetime.timedelta(seconds=600),
                fmt="%Y-%m-%d %H:%M:%S"),
        _marker(gather_key, "j-old", datetime.timedelta(seconds=7201)),
    ]
    recent = [_marker(fetch_key, "o-new", datetime.timedelta(seconds=100)),
              _marker(gather_key, "j-new", datetime.timedelta(seconds=3600))]

    queue.resubmit_jobs()

    assert sorted(fetch_queue_ids()) == ["o-day", "o-old", "o-whole"]
    assert redis().lrange(gather_key, 0, -1) == ['{"harvest_job_id": "j-old"}']
    assert [redis().exists(k) for k in stale + recent] == [0, 0, 0, 0, 1, 1]


def test_resubmit_jobs_requeues_the_work_of_dead_consumers_at_once():
    spec = queue._fetch_spec()
    body = '{"harvest_object_id": "o-dead"}'
    # What a consumer killed while processing leaves behind (no liveness key).
    redis().sadd(mq_redis.registry_key(spec), "dead-consumer")
    redis().rpush(mq_redis.processing_key(spec, "dead-consumer"), body)
    redis().set(spec.routing_key + ":o-dead", mq_redis.now_marker())
    send("fetch", harvest_object_id="o-pending")

    queue.resubmit_jobs()

    assert fetch_queue_ids() == ["o-dead", "o-pending"]
    assert not redis().exists(mq_redis.processing_key(spec, "dead-consumer"),
                              spec.routing_key + ":o-dead")
    assert not redis().sismember(mq_redis.registry_key(spec), "dead-consumer")


def test_resubmit_jobs_leaves_the_work_of_live_consumers_alone():
    send("fetch", harvest_object_id="o-busy")
    consumer = queue.get_fetch_consumer()
    method, _, body = consumer.basic_get()
    redis().set(consumer.persistance_key(body),
                str(datetime.datetime.now() - datetime.timedelta(hours=1)))

    queue.resubmit_jobs()

    assert fetch_queue_ids() == []
    assert mq_redis.queued_ids(redis(), queue._fetch_spec()) == {"o-busy"}
    consumer.basic_ack(method.delivery_tag)
    consumer.close()
    assert nothing_in_flight()


def test_resubmit_jobs_does_nothing_on_amqp(ckan_config, monkeypatch):
    key = _marker(queue.get_fetch_routing_key(), "o-old", datetime.timedelta(hours=1))
    monkeypatch.setitem(ckan_config, "ckan.harvest.mq.type", "amqp")

    queue.resubmit_jobs()

    assert redis().exists(key)


def test_resubmit_jobs_acts_when_the_queue_type_is_not_set(ckan_config, monkeypatch):
    monkeypatch.delitem(ckan_config, "ckan.harvest.mq.type", raising=False)
    _marker(queue.get_fetch_routing_key(), "o-old", datetime.timedelta(hours=1))

    queue.resubmit_jobs()

    assert fetch_queue_ids() == ["o-old"]


def test_resubmit_objects_resends_waiting_objects_missing_from_the_queue(caplog):
    gathered = make_job(make_source(), gather_finished=datetime.datetime.utcnow())
    lost = make_object(gathered, "lost")
    queued = make_object(gathered, "queued")
    make_object(gathered, "done", state=ObjectState.COMPLETE.value)
    make_object(make_job(make_source()), "still-gathering")
    send("fetch", harvest_object_id=queued.id)
    caplog.set_level(logging.DEBUG, logger="ckanext.harvest.queue")

    queue.resubmit_objects()

    assert fetch_queue_ids() == [queued.id, lost.id]
    assert f"Re-sent object {lost.id} to the fetch queue" in caplog.messages


def test_resubmit_objects_leaves_out_a_job_whose_objects_are_being_published():
    """The gather consumer sets gather_finished, then publishes: a cron run in
    between must not send the same objects a second time."""
    publishing = make_job(make_source(), gather_finished=datetime.datetime.utcnow())
    unpublished = make_object(publishing, "unpublished")
    send("gather", harvest_job_id=publishing.id)
    gather_consumer = queue.get_gather_consumer()
    _, _, body = gather_consumer.basic_get()  # taken, not acknowledged yet

    queue.resubmit_objects()

    assert fetch_queue_ids() == []
    gather_consumer.basic_ack(body)  # the gather is over: its objects are fair game
    queue.resubmit_objects()
    assert fetch_queue_ids() == [unpublished.id]


def test_resubmit_objects_does_nothing_on_amqp(ckan_config, monkeypatch):
    gathered = make_job(make_source(), gather_finished=datetime.datetime.utcnow())
    make_object(gathered, "lost")
    monkeypatch.setitem(ckan_config, "ckan.harvest.mq.type", "amqp")

    queue.resubmit_objects()

    monkeypatch.setitem(ckan_config, "ckan.harvest.mq.type", "redis")
    assert fetch_queue_ids() == []


# -- facade ----------------------------------------------------------------------


def test_get_connection_rejects_an_unknown_queue_type(ckan_config, monkeypatch):
    monkeypatch.setitem(ckan_config, "ckan.harvest.mq.type", "carrier-pigeon")

    with pytest.raises(mq.UnknownBackendError, match="not a valid queue type"):
        queue.get_connection()


@pytest.fixture
def patched_site(ckan_config: Any) -> Any:
    """A plain dict patched over ``queue.config`` (as downstream suites do), naming
    a site of its own on the same Redis."""
    site = f"test.ckan.net.{uuid.uuid4().hex[:10]}"
    settings = dict(config_snapshot(ckan_config), **{"ckan.site_id": site,
                                                     "ckan.harvest.mq.type": "redis"})
    try:
        with mock.patch("ckanext.harvest.queue.config", settings):
            yield site
    finally:
        delete_site("redis", site)


def _pending(site: str, key: str) -> list[str]:
    bodies = redis().lrange(f"ckanext-harvest:{site}:{key}", 0, -1)
    return [json.loads(body)[key] for body in bodies]


def test_a_patched_config_reaches_publishers_consumers_and_purge(patched_site):
    send("gather", harvest_job_id="j-1")
    send("fetch", harvest_object_id="o-1")
    assert (_pending(patched_site, "harvest_job_id"),
            _pending(patched_site, "harvest_object_id")) == (["j-1"], ["o-1"])

    consumer = queue.get_fetch_consumer()
    method, _, body = consumer.basic_get(queue=queue.get_fetch_queue_name())
    assert json.loads(body) == {"harvest_object_id": "o-1"}
    consumer.basic_ack(method.delivery_tag)
    consumer.close()
    queue.purge_queues()

    assert (_pending(patched_site, "harvest_job_id"),
            _pending(patched_site, "harvest_object_id")) == ([], [])
    assert not redis().exists(f"ckanext-harvest:{patched_site}:harvest_object_id:o-1")


def test_a_patched_config_reaches_the_consumer_loops_and_resubmission(patched_site):
    job = make_job(make_source(datasets=[{"guid": "p1"}, {"guid": "p2"}]))
    send("gather", harvest_job_id=job.id)

    assert queue.run_gather_consumer(stop_after=1, idle_timeout=10) == 1
    objects = fresh(HarvestJob, job.id).objects
    assert sorted(_pending(patched_site, "harvest_object_id")) == sorted(
        o.id for o in objects)
    redis().delete(f"ckanext-harvest:{patched_site}:harvest_object_id")
    queue.resubmit_objects()  # both objects WAITING, neither queued: re-sent
    assert sorted(_pending(patched_site, "harvest_object_id")) == sorted(
        o.id for o in objects)
    assert queue.run_fetch_consumer(stop_after=2, idle_timeout=10) == 2

    assert {o.state for o in fresh(HarvestJob, job.id).objects} == {
        ObjectState.COMPLETE.value}
    assert fetch_queue_ids() == []  # the site of ckan's own config saw nothing


@pytest.mark.parametrize("call", [
    queue.get_connection, queue.get_gather_publisher, queue.get_fetch_consumer,
    queue.purge_queues, queue.resubmit_jobs, queue.resubmit_objects,
    lambda: queue.run_gather_consumer(stop_after=1, idle_timeout=1),
    lambda: queue.run_fetch_consumer(stop_after=1, idle_timeout=1),
])
def test_a_patched_queue_type_reaches_every_entry_point(call):
    with mock.patch("ckanext.harvest.queue.config", {"ckan.harvest.mq.type": "x"}):
        with pytest.raises(mq.UnknownBackendError, match=r"\bx\b"):
            call()


def test_get_harvester_finds_plugins_by_name():
    assert queue.get_harvester("test").info()["name"] == "test"
    assert queue.get_harvester("no-such-harvester") is None


def test_legacy_constants_and_exports():
    assert (queue.PORT, queue.USERID, queue.PASSWORD, queue.HOSTNAME,
            queue.VIRTUAL_HOST, queue.MQ_TYPE, queue.REDIS_PORT, queue.REDIS_DB,
            queue.EXCHANGE_TYPE, queue.EXCHANGE_NAME) == (
        5672, "guest", "guest", "localhost", "/", "redis", 6379, 0, "direct",
        "ckan.harvest")
    assert set(queue.__all__) == {"get_gather_publisher", "get_gather_consumer",
                                  "get_fetch_publisher", "get_fetch_consumer",
                                  "get_harvester"}
