"""Crash safety: consumers killed with ``kill -9`` in the middle of a job.

A job of a few hundred objects runs through real consumer processes (see
``test_end_to_end.py`` for the harness). The gather consumer is killed once while it
gathers, the fetch consumer several times while it fetches and imports; each is
restarted at once. ``ckan harvester run`` runs periodically, as cron would: on Redis
it re-queues what a dead consumer held once the consumer's liveness key expired
(``ckan.harvest.mq.consumer_timeout``: 10 s here, 30 s by default); RabbitMQ
re-delivers by itself when the connection drops.

In the end the job must be ``Finished`` with every object ``COMPLETE`` and reported
``added``, exactly one dataset and one current object per guid: nothing lost,
nothing duplicated. The numbers (kills, what each kill interrupted, redeliveries,
duplicates) are printed (``pytest -s``).

Where a kill lands is a matter of timing, so the last tests stop a delivery
in-process at the two precise points after which a redelivery must still end well:
right after the object's ``COMPLETE`` state was committed, and right after the
dataset was committed but before the object was linked to it.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable

import pytest
import sqlalchemy as sa
from ckan import model

from ckanext.harvest import queue
from ckanext.harvest.model import HarvestJob, HarvestObject, HarvestSource
from tests.support.marks import harvest_site
from tests.support.site import (
    BACKENDS,
    QUICK_RECOVERY,
    Consumer,
    HarvestSite,
    datasets,
    job_stats,
)

pytestmark = harvest_site()

OBJECTS = 300
#: The fetch consumer is killed each time it has completed this many more objects.
FETCH_KILL_STEP = 40
FETCH_KILLS = 4
#: Bound of the whole job, from its creation. Usually ~20 s on RabbitMQ and ~35 s
#: on Redis, whose recovery waits for the 10 s liveness TTL of a dead consumer to
#: expire (once after the gather kill, once after the last fetch kill).
JOB_TIMEOUT = 240.0
#: How long to wait for the gather stage to begin (to kill it midway).
GATHER_WATCH_TIMEOUT = 60.0
#: How long the gather stage may run before it is stopped and killed.
GATHER_RUN_SECONDS = 0.05

_GATHERED = sa.text("SELECT count(*) FROM harvest_object WHERE harvest_job_id = :job")
_GATHER_STARTED = sa.text("SELECT gather_started FROM harvest_job WHERE id = :job")
_GATHER_FINISHED = sa.text("SELECT gather_finished FROM harvest_job WHERE id = :job")


def _lock_objects(connection: sa.Connection) -> None:
    """Take an EXCLUSIVE lock on ``harvest_object`` (held until commit)."""
    connection.execute(sa.text("SET LOCAL lock_timeout = '30s'"))
    connection.execute(sa.text("LOCK TABLE harvest_object IN EXCLUSIVE MODE"))


def _create_job_and_kill_gather_midway(site: HarvestSite, gather: Consumer,
                                       source_name: str, source_id: str
                                       ) -> tuple[str, str]:
    """Create a job and kill the gather consumer while it is gathering it.

    An EXCLUSIVE lock on ``harvest_object`` holds the gather consumer on its first
    insert; the lock is released for a moment (objects are inserted one per
    transaction), taken again, and the consumer is killed while it waits for it,
    certainly mid-gather. The lock is released right after the kill.

    :returns: the job id and what the kill interrupted, for the report
    """
    deadline = time.monotonic() + GATHER_WATCH_TIMEOUT
    with site.engine.connect() as connection:
        # Explicit transactions: SQLAlchemy 1.4 (CKAN 2.11) has no Connection.commit.
        transaction = connection.begin()
        _lock_objects(connection)
        try:
            # ``ckan harvester job`` itself does not write harvest objects.
            job_id = site.create_job(source_name, source_id)
            while connection.execute(_GATHER_STARTED, {"job": job_id}).scalar() is None:
                gather.check_alive()
                if time.monotonic() > deadline:
                    pytest.fail("gather stage did not start\n"
                                + site.diagnostics(job_id))
                time.sleep(0.01)
        finally:
            transaction.commit()
        time.sleep(GATHER_RUN_SECONDS)
        transaction = connection.begin()
        _lock_objects(connection)
        try:
            gathered = connection.execute(_GATHERED, {"job": job_id}).scalar()
            finished = connection.execute(_GATHER_FINISHED, {"job": job_id}).scalar()
            gather.kill9()
        finally:
            transaction.commit()
    if finished is None:
        return job_id, f"mid-gather, {gathered}/{OBJECTS} objects gathered"
    return job_id, (f"after the gather stage ({gathered} objects), while publishing "
                    "or later")


def _held_by_dead_consumers(site: HarvestSite) -> set[str]:
    """Redis, no fetch consumer running: the object ids in processing lists."""
    if site.backend != "redis":
        return set()
    client = site.redis()
    pattern = site.redis_prefix + "processing:harvest_object_id:*"
    return {json.loads(body)["harvest_object_id"]
            for key in client.scan_iter(match=pattern, count=500)
            for body in client.lrange(key, 0, -1)}


def _unsettled(site: HarvestSite, job_id: str) -> dict[str, tuple[str, str]]:
    """Objects a fetch consumer was working on: ``id -> (guid, phase)``."""
    rows = site.query(
        "SELECT id, guid, state FROM harvest_object "
        "WHERE harvest_job_id = :job AND (state IN ('FETCH', 'IMPORT') "
        "OR (state = 'COMPLETE' AND report_status IS NULL) "
        "OR (state = 'WAITING' AND retry_times > 0))", job=job_id)
    labels = {"COMPLETE": "COMPLETE, report_status not saved yet",
              "WAITING": "WAITING, attempt counted"}
    return {object_id: (guid, labels.get(state, state))
            for object_id, guid, state in rows}


class FetchKiller:
    """Kills (``kill -9``) and restarts the fetch consumer every ``step`` objects.

    Records what each kill interrupted (objects in a stage; on Redis also the
    messages left in the dead consumer's processing list).
    """

    def __init__(self, site: HarvestSite, fetch: Consumer, job_id: str,
                 step: int, times: int) -> None:
        self.site, self.fetch, self.job_id = site, fetch, job_id
        self.step, self.times = step, times
        self.kills: list[dict[str, Any]] = []
        self.interrupted: dict[str, tuple[str, str]] = {}
        self._base = 0

    def __call__(self) -> None:
        if len(self.kills) >= self.times or not self.fetch.running:
            return
        complete = self.site.scalar(
            "SELECT count(*) FROM harvest_object WHERE harvest_job_id = :job "
            "AND state = 'COMPLETE'", job=self.job_id)
        if complete - self._base < self.step:
            return
        self.fetch.kill9()
        caught = self._caught()
        self.kills.append({
            "complete": complete,
            "caught": [f"{guid}: {phase}" for guid, phase in caught.values()]
            or ["no object in a stage (message just taken, or between two)"],
        })
        self.fetch.start()
        self._base = complete

    def _caught(self) -> dict[str, tuple[str, str]]:
        caught = _unsettled(self.site, self.job_id)
        for object_id in _held_by_dead_consumers(self.site) - set(caught):
            row = self.site.query("SELECT guid, state, retry_times FROM harvest_object "
                                  "WHERE id = :id", id=object_id)[0]
            caught[object_id] = (row.guid, f"taken, {row.state}, "
                                           f"retry_times {row.retry_times}")
        caught = {key: value for key, value in caught.items()
                  if key not in self.interrupted}
        self.interrupted.update(caught)
        return caught

    def outcome(self) -> dict[str, str]:
        """``guid -> "<phase when killed> -> <state>/<report_status>/<retry_times>"``"""
        outcome = {}
        for object_id, (guid, phase) in self.interrupted.items():
            rows = self.site.query("SELECT state, report_status, retry_times "
                                   "FROM harvest_object WHERE id = :id", id=object_id)
            outcome[guid] = f"{phase} -> " + ("/".join(map(str, rows[0])) if rows
                                               else "object gone")
        return outcome


def _inspect(site: HarvestSite, job_id: str, source_id: str) -> dict[str, Any]:
    """Everything the verdict needs, from the database."""
    guids = [f"g{i}" for i in range(1, OBJECTS + 1)]
    expected_names = {f"harvested-{guid}" for guid in guids}
    states = site.object_states(job_id)
    reports = site.report_statuses(job_id)
    per_guid = dict(site.query("SELECT guid, count(*) FROM harvest_object "
                               "WHERE harvest_job_id = :job GROUP BY guid", job=job_id))
    harvested = site.harvested_datasets()
    current = site.current_objects_per_guid(source_id)
    linked, distinct_linked = site.query(
        "SELECT count(package_id), count(DISTINCT package_id) FROM harvest_object "
        "WHERE harvest_job_id = :job", job=job_id)[0]
    return {
        "states": states,
        "reports": reports,
        "retries": dict(site.query(
            "SELECT retry_times, count(*) FROM harvest_object WHERE harvest_job_id = "
            ":job GROUP BY retry_times ORDER BY retry_times", job=job_id)),
        "datasets": len(harvested),
        "dataset states": set(harvested.values()),
        "source objects": site.scalar(
            "SELECT count(*) FROM harvest_object WHERE harvest_source_id = :s",
            s=source_id),
        "duplicates": {
            "datasets beyond one per guid": len(set(harvested) - expected_names),
            "guids with >1 object in the job": sum(1 for n in per_guid.values() if n > 1),
            "guids with >1 current object": sum(1 for n in current.values() if n > 1),
            "objects sharing a dataset": linked - distinct_linked,
        },
        "losses": {
            "guids without dataset": len(expected_names - set(harvested)),
            "guids without object": len(set(guids) - set(per_guid)),
            "guids without current object": len(set(guids) - set(current)),
            "objects not COMPLETE": OBJECTS - states.get("COMPLETE", 0),
            "objects without report_status": reports.get(None, 0),
        },
        "unreported": [tuple(row) for row in site.query(
            "SELECT guid, state, retry_times FROM harvest_object WHERE "
            "harvest_job_id = :job AND report_status IS NULL", job=job_id)],
        "stats": job_stats(job_id),
    }


def _problems(found: dict[str, Any], fetch_kills: int) -> list[str]:
    problems = []
    if fetch_kills < 3:
        problems.append(f"the job ended after only {fetch_kills} fetch kill(s)")
    if any(found["duplicates"].values()):
        problems.append(f"duplicates: {found['duplicates']}")
    if any(found["losses"].values()):
        problems.append(f"losses: {found['losses']}")
    if found["source objects"] != OBJECTS:
        problems.append(f"{found['source objects']} objects for the source (the "
                        "partial gather's objects should have been deleted)")
    if found["dataset states"] != {"active"}:
        problems.append(f"dataset states {found['dataset states']}")
    if found["stats"] != {"added": OBJECTS, "updated": 0, "not modified": 0,
                          "deleted": 0, "errored": 0}:
        problems.append(f"job statistics {found['stats']}")
    if found["unreported"]:
        problems.append("objects left without report_status (guid, state, "
                        f"retry_times): {found['unreported']}")
    return problems


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_consumers_during_a_job(backend, make_site):  # noqa: F811
    site = make_site(backend, "crash", QUICK_RECOVERY)
    gather = site.consumer("gather")
    fetch = site.consumer("fetch")
    gather.start()
    source_id = site.create_source("crash-source", {"datasets": datasets(OBJECTS)})
    started = time.monotonic()

    # 1. The gather consumer dies while gathering; a new one takes over.
    job_id, gather_kill = _create_job_and_kill_gather_midway(
        site, gather, "crash-source", source_id)
    gather.start()
    fetch.start()

    # 2. The fetch consumer dies every FETCH_KILL_STEP completed objects.
    killer = FetchKiller(site, fetch, job_id, FETCH_KILL_STEP, FETCH_KILLS)
    took = site.wait_until_finished(job_id, timeout=JOB_TIMEOUT, on_tick=killer)
    elapsed = time.monotonic() - started

    # 3. Nothing lost, nothing duplicated.
    found = _inspect(site, job_id, source_id)
    print(
        f"\n[{backend}] crash test, {OBJECTS} objects: gather consumer kill -9 x1 "
        f"({gather_kill}); fetch consumer kill -9 x{fetch.kills} at "
        f"{[kill['complete'] for kill in killer.kills]} COMPLETE objects; consumer "
        f"starts: gather {gather.starts}, fetch {fetch.starts}; `harvester run` "
        f"calls: {site.runs}\n"
        f"[{backend}] fetch kills caught: {[kill['caught'] for kill in killer.kills]}\n"
        f"[{backend}] interrupted objects, phase -> state/report_status/retry_times "
        f"now: {killer.outcome()}\n"
        f"[{backend}] object states {found['states']}; report_status "
        f"{found['reports']}; retry_times histogram {found['retries']}; datasets "
        f"harvested-*: {found['datasets']}; objects of the source: "
        f"{found['source objects']}\n"
        f"[{backend}] duplicates {found['duplicates']}\n"
        f"[{backend}] losses {found['losses']}\n"
        f"[{backend}] job Finished {elapsed:.1f} s after its creation ({took:.1f} s "
        f"after the gather kill)"
    )

    problems = _problems(found, fetch.kills)
    assert not problems, "\n".join(problems) + "\n" + site.diagnostics(job_id)
    assert site.job(job_id).finished is not None

    site.check_consumers()
    gather.stop()
    fetch.stop()
    assert site.pending_messages() == 0, site.queue_report()


# --- deterministic crash points, in-process -----------------------------------------


class _Killed(BaseException):
    """Stands for the consumer process dying at this point: nothing catches it."""


class _Channel:
    """Records the acknowledgements of the (pika-style) callbacks."""

    def __init__(self) -> None:
        self.acked: list[Any] = []

    def basic_ack(self, delivery_tag: Any) -> None:
        self.acked.append(delivery_tag)


class _Method:
    def __init__(self, delivery_tag: Any) -> None:
        self.delivery_tag = delivery_tag


def _gathered_object(guid: str) -> str:
    """A running job of a ``test`` source, gathered: returns its one object's id."""
    source = HarvestSource(url=f"http://{uuid.uuid4().hex}.example.org/", type="test",
                           config=json.dumps({"datasets": [{"guid": guid,
                                                             "title": guid}]}))
    source.save()
    job = HarvestJob(source=source, status="Running")
    job.save()
    (object_id,) = queue.gather_stage(queue.get_harvester("test"), job)
    model.Session.remove()
    return object_id


def _deliver(object_id: str) -> list[Any]:
    """Hand the object's fetch message to ``fetch_callback``; returns the acks."""
    body = json.dumps({"harvest_object_id": object_id})
    channel = _Channel()
    queue.fetch_callback(channel, _Method(body), None, body)
    return channel.acked


def _die_once(monkeypatch: pytest.MonkeyPatch, before: bool,
              when: Callable[[HarvestObject], bool]) -> None:
    """Make ``HarvestObject.save`` kill the "process" once, before or after saving."""
    original = HarvestObject.save
    armed = [True]

    def save(self: HarvestObject) -> None:
        die = armed[0] and when(self)
        if die and before:
            armed[0] = False
            raise _Killed()
        original(self)
        if die:
            armed[0] = False
            raise _Killed()

    monkeypatch.setattr(HarvestObject, "save", save)


def _crash_then_redeliver(monkeypatch: pytest.MonkeyPatch, guid: str, before: bool,
                          when: Callable[[HarvestObject], bool]) -> HarvestObject:
    """Deliver once, dying at the crash point; then deliver the message again.

    If the code never reaches the crash point (the window does not exist), the
    first delivery completes and the second one is a plain duplicate delivery.
    """
    object_id = _gathered_object(guid)
    with monkeypatch.context() as patch:
        _die_once(patch, before, when)
        try:
            _deliver(object_id)
        except _Killed:  # died: the message is not acknowledged ...
            pass
    model.Session.remove()  # ... and whatever was not committed is lost

    acked = _deliver(object_id)  # the broker delivers the message again

    assert acked == [json.dumps({"harvest_object_id": object_id})]
    model.Session.remove()
    return HarvestObject.get(object_id)


def _harvested(guid: str) -> list[Any]:
    return model.Session.query(model.Package.name, model.Package.state).filter(
        model.Package.name == f"harvested-{guid}").all()


def test_redelivery_after_a_crash_right_after_the_complete_commit(monkeypatch):
    """Killed once the object is ``COMPLETE`` but before its report status is saved.

    The redelivered message must not leave the object without a report status
    (the job statistics would miss it).
    """
    obj = _crash_then_redeliver(
        monkeypatch, "c1", before=False,
        when=lambda o: o.state == "COMPLETE" and o.report_status is None)

    assert (obj.state, obj.current) == ("COMPLETE", True)
    assert obj.report_status == "added", (
        f"redelivered object left with report_status {obj.report_status!r}")
    assert _harvested("c1") == [("harvested-c1", "active")]


def test_redelivery_after_a_crash_between_the_dataset_and_object_commits(monkeypatch):
    """Killed after the import created the dataset, before the object was linked.

    The redelivered message must import the object again without a duplicate and
    without failing on the dataset left by the first attempt.
    """
    obj = _crash_then_redeliver(
        monkeypatch, "d1", before=True,
        when=lambda o: o.state == "IMPORT" and bool(o.current) and bool(o.package_id))

    errors = [error.message for error in obj.errors]
    assert (obj.state, obj.report_status, errors) == ("COMPLETE", "added", [])
    assert obj.current is True
    assert _harvested("d1") == [("harvested-d1", "active")]
