"""Job actions: create, send, show, list, report, statistics, abort, jobs_run.

Every test runs against the real database, search index and Redis (the gather
queue is the Redis list ``ckanext-harvest:<site_id>:harvest_job_id``).
"""
from __future__ import annotations

import datetime
import json
from typing import Any, Optional

import pytest
import redis
import sqlalchemy as sa
from ckan import model
from ckan.plugins import toolkit
from freezegun import freeze_time

from ckanext.harvest.lib import hashes
from ckanext.harvest.logic import HarvestJobExists, HarvestSourceInactiveError
from ckanext.harvest.model import (
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
    HarvestSource,
)
from ckanext.harvest.tests import factories as harvest_factories
from tests.support.marks import harvest_site

pytestmark = harvest_site("harvest test_harvester test_harvester2")

NOW = datetime.datetime(2024, 5, 15, 12, 0, 0)
ZERO_STATS = {"added": 0, "updated": 0, "not modified": 0, "errored": 0, "deleted": 0}
JOB_COLUMNS = {
    "id", "created", "gather_started", "gather_finished", "finished", "source_id",
    "status",
}


# --- fixtures and helpers -----------------------------------------------------


@pytest.fixture
def gather_queue(ckan_config):
    """The messages waiting on this site's Redis gather list (emptied before/after)."""
    conn = redis.Redis.from_url(ckan_config["ckan.redis.url"], decode_responses=True)
    site = ckan_config["ckan.site_id"]
    key = "ckanext-harvest:{}:harvest_job_id".format(site)

    def _clear() -> None:
        for found in conn.scan_iter("ckanext-harvest:{}:*".format(site)):
            conn.delete(found)

    _clear()
    yield lambda: conn.lrange(key, 0, -1)
    _clear()
    conn.close()


def _call(name: str, user: dict[str, Any], context: Optional[dict[str, Any]] = None,
          **data: Any) -> Any:
    """Call an action through CKAN (auth checked) as ``user``."""
    full_context = dict(context or {}, user=user["name"])
    return toolkit.get_action(name)(full_context, data)


def _message(job_id: str) -> str:
    return json.dumps({"harvest_job_id": job_id})


def _source(**kwargs: Any) -> HarvestSource:
    return harvest_factories.HarvestSourceObj(**kwargs)


def _job(source_id: str, **fields: Any) -> HarvestJob:
    job = HarvestJob(source_id=source_id, **fields)
    job.save()
    return job


def _object(job: HarvestJob, guid: str = "guid", **fields: Any) -> HarvestObject:
    obj = HarvestObject(job=job, guid=guid, **fields)
    obj.save()
    return obj


def _object_error(obj: HarvestObject, message: str, **fields: Any) -> None:
    HarvestObjectError(object=obj, message=message, **fields).save()


def _gather_error(job: HarvestJob, message: str, **fields: Any) -> None:
    HarvestGatherError(job=job, message=message, **fields).save()


def _rows(sql: str, **params: Any) -> list[Any]:
    """Committed rows, read on a connection of their own."""
    with model.meta.engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params))


def _job_row(job_id: str) -> Any:
    return _rows(
        "select status, finished, gather_finished from harvest_job where id = :id",
        id=job_id,
    )[0]


def _jobs_of(source_id: str) -> list[Any]:
    return _rows(
        "select id, status from harvest_job where source_id = :id order by created",
        id=source_id,
    )


def _object_rows(job_id: str) -> dict[str, tuple[str, Optional[str]]]:
    rows = _rows(
        "select guid, state, report_status from harvest_object"
        " where harvest_job_id = :id",
        id=job_id,
    )
    return {row.guid: (row.state, row.report_status) for row in rows}


def _gather_errors(job_id: str) -> list[str]:
    rows = _rows(
        "select message from harvest_gather_error where harvest_job_id = :id",
        id=job_id,
    )
    return [row.message for row in rows]


def _next_run(source_id: str) -> Optional[datetime.datetime]:
    return _rows("select next_run from harvest_source where id = :id", id=source_id)[
        0
    ].next_run


def _deactivate(source: HarvestSource) -> None:
    source.active = False
    source.save()


# --- harvest_job_create -------------------------------------------------------


def test_job_create_for_a_missing_source_raises_not_found(sysadmin):
    with pytest.raises(toolkit.ObjectNotFound) as raised:
        _call("harvest_job_create", sysadmin, source_id="no-such-source", run=False)

    assert str(raised.value) == "Harvest source no-such-source does not exist"
    assert _rows("select id from harvest_job") == []


def test_job_create_for_an_inactive_source_raises_inactive_error(sysadmin):
    source = _source()
    _deactivate(source)

    with pytest.raises(HarvestSourceInactiveError) as raised:
        _call("harvest_job_create", sysadmin, source_id=source.id, run=False)

    assert str(raised.value) == "Can not create jobs on inactive sources"
    assert _jobs_of(source.id) == []


@pytest.mark.parametrize("status", ["New", "Running"])
def test_job_create_refuses_when_the_source_has_an_open_job(sysadmin, status):
    source = _source()
    existing = _job(source.id, status=status)

    with pytest.raises(HarvestJobExists) as raised:
        _call("harvest_job_create", sysadmin, source_id=source.id, run=False)

    assert str(raised.value) == "There already is an unrun job for this source"
    assert [(row.id, row.status) for row in _jobs_of(source.id)] == [
        (existing.id, status)
    ]


@pytest.mark.parametrize("status", ["Finished", "Aborted"])
def test_job_create_is_allowed_after_a_finished_or_aborted_job(sysadmin, status):
    source = _source()
    old = _job(source.id, status=status, created=NOW - datetime.timedelta(days=1))

    job = _call("harvest_job_create", sysadmin, source_id=source.id, run=False)

    assert job["status"] == "New"
    assert [(row.id, row.status) for row in _jobs_of(source.id)] == [
        (old.id, status), (job["id"], "New"),
    ]


@pytest.mark.parametrize("force, forced", [(True, True), ("true", True),
                                           (False, False), (None, False)])
def test_job_create_with_force_flags_the_job(sysadmin, force, forced):
    source = _source()
    data = {"source_id": source.id, "run": False}
    if force is not None:
        data["force"] = force

    job = _call("harvest_job_create", sysadmin, **data)

    assert hashes.is_forced(job["id"]) is forced


def test_job_create_refuses_a_force_that_is_not_a_boolean(sysadmin):
    source = _source()

    with pytest.raises(toolkit.ValidationError) as error:
        _call("harvest_job_create", sysadmin, source_id=source.id, run=False,
              force="sometimes")

    assert error.value.error_dict == {
        "force": ["force must be true or false, not 'sometimes'"]}
    assert _jobs_of(source.id) == []


@pytest.mark.parametrize("run", [False, "false", "False", "0"])
def test_job_create_with_a_false_run_leaves_the_job_new_and_unqueued(
    sysadmin, gather_queue, run
):
    source = _source()

    job = _call("harvest_job_create", sysadmin, source_id=source.id, run=run)

    assert job["status"] == "New"
    assert _job_row(job["id"]).status == "New"
    assert gather_queue() == []


@pytest.mark.parametrize("run", [True, "true", None])
def test_job_create_with_run_sends_the_job_to_the_gather_queue(
    sysadmin, gather_queue, run
):
    source = _source()
    data = {"source_id": source.id}
    if run is not None:
        data["run"] = run

    job = _call("harvest_job_create", sysadmin, **data)

    assert job["status"] == "Running"
    assert _job_row(job["id"]).status == "Running"
    assert gather_queue() == [_message(job["id"])]


def test_job_create_returns_stats_but_no_error_summaries(sysadmin):
    source = _source()
    context = {"user": sysadmin["name"]}

    job = toolkit.get_action("harvest_job_create")(
        context, {"source_id": source.id, "run": False}
    )

    assert set(job) == JOB_COLUMNS | {"stats"}
    assert job["source_id"] == source.id
    assert job["stats"] == ZERO_STATS
    assert job["gather_started"] is None and job["finished"] is None
    stored = _rows("select id, created from harvest_job where source_id = :id",
                   id=source.id)
    assert [(row.id, str(row.created)) for row in stored] == [
        (job["id"], job["created"])
    ]
    # Q24: the caller's context is not mutated
    assert "return_error_summary" not in context
    assert "return_stats" not in context


# --- harvest_job_create_all ---------------------------------------------------


def test_job_create_all_creates_jobs_for_active_sources_without_open_jobs(sysadmin):
    free = _source()
    busy = _source()
    busy_job = _job(busy.id, status="New")
    inactive = _source()
    _deactivate(inactive)

    created = _call("harvest_job_create_all", sysadmin, run=False)

    assert [(job["source_id"], job["status"]) for job in created] == [
        (free.id, "New")
    ]
    assert [(row.id, row.status) for row in _jobs_of(free.id)] == [
        (created[0]["id"], "New")
    ]
    assert [(row.id, row.status) for row in _jobs_of(busy.id)] == [
        (busy_job.id, "New")
    ]
    assert _jobs_of(inactive.id) == []


def test_job_create_all_runs_the_jobs_by_default(sysadmin, gather_queue):
    first = _source()
    second = _source()

    created = _call("harvest_job_create_all", sysadmin)

    by_source = {job["source_id"]: job for job in created}
    assert set(by_source) == {first.id, second.id}
    assert {job["status"] for job in created} == {"Running"}
    assert {_job_row(job["id"]).status for job in created} == {"Running"}
    assert sorted(gather_queue()) == sorted(_message(job["id"]) for job in created)


# --- harvest_send_job_to_gather_queue -----------------------------------------


def test_send_job_to_gather_queue_marks_it_running_and_publishes_it(
    sysadmin, gather_queue
):
    source = _source()
    job = _job(source.id, status="New")

    result = _call("harvest_send_job_to_gather_queue", sysadmin, id=job.id)

    assert result["id"] == job.id
    assert result["status"] == "Running"
    assert _job_row(job.id).status == "Running"
    assert gather_queue() == ['{"harvest_job_id": "%s"}' % job.id]


def test_send_job_to_gather_queue_without_id_raises_validation_error(
    sysadmin, gather_queue
):
    with pytest.raises(toolkit.ValidationError) as raised:
        _call("harvest_send_job_to_gather_queue", sysadmin)

    assert raised.value.error_dict == {"id": ["Missing value"]}
    assert gather_queue() == []


# Q26: an unreachable broker shows the source is checked before the broker is used.
@pytest.mark.ckan_config("ckan.harvest.mq.type", "amqp")
@pytest.mark.ckan_config("ckan.harvest.mq.hostname", "127.0.0.1")
@pytest.mark.ckan_config("ckan.harvest.mq.port", "1")
def test_send_job_of_an_inactive_source_raises_before_touching_the_broker(
    sysadmin, gather_queue
):
    source = harvest_factories.HarvestSource()
    job = _job(source["id"], status="New")
    toolkit.get_action("package_delete")({"ignore_auth": True}, {"id": source["id"]})
    assert _job_row(job.id).status == "Aborted"  # deleting the source aborts New jobs

    with pytest.raises(toolkit.ValidationError) as raised:
        _call("harvest_send_job_to_gather_queue", sysadmin, id=job.id)

    assert raised.value.error_dict == {"message": "Source is not active"}
    assert _job_row(job.id).status == "Aborted"
    assert gather_queue() == []


def test_send_job_of_an_inactive_source_publishes_nothing_on_redis(
    sysadmin, gather_queue
):
    source = harvest_factories.HarvestSource()
    job = _job(source["id"], status="Running")
    toolkit.get_action("package_delete")({"ignore_auth": True}, {"id": source["id"]})

    with pytest.raises(toolkit.ValidationError) as raised:
        _call("harvest_send_job_to_gather_queue", sysadmin, id=job.id)

    assert raised.value.error_dict == {"message": "Source is not active"}
    assert _job_row(job.id).status == "Running"
    assert gather_queue() == []


# --- harvest_job_show ---------------------------------------------------------


def test_job_show_returns_columns_stats_and_error_summaries(sysadmin):
    source = _source()
    job = _job(
        source.id, status="Running", gather_started=NOW,
        gather_finished=NOW + datetime.timedelta(minutes=1),
    )

    result = _call("harvest_job_show", sysadmin, id=job.id)

    assert set(result) == JOB_COLUMNS | {
        "stats", "object_error_summary", "gather_error_summary"
    }
    assert result["id"] == job.id
    assert result["source_id"] == source.id
    assert result["status"] == "Running"
    assert result["gather_started"] == str(NOW)
    assert result["gather_finished"] == "2024-05-15 12:01:00"
    assert result["finished"] is None
    assert result["stats"] == ZERO_STATS
    assert result["object_error_summary"] == []
    assert result["gather_error_summary"] == []


def test_job_show_matches_another_column_with_attr(sysadmin):
    source = _source()
    job = _job(source.id, status="Finished")

    result = _call("harvest_job_show", sysadmin, id=source.id, attr="source_id")

    assert result["id"] == job.id


def test_job_show_of_an_unknown_job_raises_not_found(sysadmin):
    with pytest.raises(toolkit.ObjectNotFound):
        _call("harvest_job_show", sysadmin, id="no-such-job")


# --- harvest_job_list ---------------------------------------------------------


@pytest.fixture
def listed_jobs() -> dict[str, Any]:
    """Two sources; jobs created one day apart, out of insertion order."""
    first = _source()
    second = _source()
    day = datetime.timedelta(days=1)
    return {
        "first": first.id,
        "second": second.id,
        "f_old": _job(first.id, status="Finished", created=NOW - 3 * day).id,
        "f_new": _job(first.id, status="Running", created=NOW - day).id,
        "f_mid": _job(first.id, status="Finished", created=NOW - 2 * day).id,
        "s_job": _job(second.id, status="Finished", created=NOW).id,
    }


@pytest.mark.parametrize(
    "filters, expected",
    [
        ({}, ["s_job", "f_new", "f_mid", "f_old"]),
        ({"source_id": "first"}, ["f_new", "f_mid", "f_old"]),
        ({"status": "Finished"}, ["s_job", "f_mid", "f_old"]),
        ({"source_id": "first", "status": "Finished"}, ["f_mid", "f_old"]),
        ({"source_id": "second", "status": "Running"}, []),
    ],
)
def test_job_list_filters_and_orders_newest_first(
    sysadmin, listed_jobs, filters, expected
):
    data = {
        key: listed_jobs[value] if key == "source_id" else value
        for key, value in filters.items()
    }
    context = {"user": sysadmin["name"]}

    result = toolkit.get_action("harvest_job_list")(context, data)

    assert [job["id"] for job in result] == [listed_jobs[name] for name in expected]
    for job in result:
        assert set(job) == JOB_COLUMNS | {"stats"}
    assert "return_error_summary" not in context  # Q24


# --- harvest_job_report -------------------------------------------------------


def test_job_report_lists_gather_errors_newest_first_and_object_errors_by_object(
    sysadmin,
):
    source = _source()
    job = _job(source.id, status="Finished")
    _gather_error(job, "older gather error", created=NOW - datetime.timedelta(hours=2))
    _gather_error(job, "newer gather error", created=NOW - datetime.timedelta(hours=1))
    _gather_error(job, "oldest gather error", created=NOW - datetime.timedelta(hours=3))
    one = _object(job, guid="one")
    two = _object(job, guid="two")
    _object(job, guid="clean")
    _object_error(one, "Could not fetch", stage="Fetch", line=3,
                  created=NOW - datetime.timedelta(minutes=2))
    _object_error(one, "Could not import", stage="Import",
                  created=NOW - datetime.timedelta(minutes=1))
    _object_error(two, "Invalid document", stage="Validation", line=12)

    report = _call("harvest_job_report", sysadmin, id=job.id)

    assert report["gather_errors"] == [
        {"message": "newer gather error"},
        {"message": "older gather error"},
        {"message": "oldest gather error"},
    ]
    assert report["object_errors"] == {
        one.id: {
            "guid": "one",
            "errors": [
                {"message": "Could not fetch", "line": 3, "type": "Fetch"},
                {"message": "Could not import", "line": None, "type": "Import"},
            ],
            "original_url": "http://remote.example.org/dataset/one",
        },
        two.id: {
            "guid": "two",
            "errors": [
                {"message": "Invalid document", "line": 12, "type": "Validation"}
            ],
            "original_url": "http://remote.example.org/dataset/two",
        },
    }
    assert list(report["object_errors"]) == sorted([one.id, two.id])


def test_job_report_of_an_unknown_job_raises_not_found(sysadmin):
    with pytest.raises(toolkit.ObjectNotFound):
        _call("harvest_job_report", sysadmin, id="no-such-job")


# --- statistics (README §4) ---------------------------------------------------


def test_stats_count_report_statuses_with_a_none_key_for_unprocessed_objects(
    sysadmin,
):
    source = _source()
    job = _job(source.id, status="Running")
    for guid, state, report_status in [
        ("a1", "COMPLETE", "added"),
        ("a2", "COMPLETE", "added"),
        ("u1", "COMPLETE", "updated"),
        ("d1", "COMPLETE", "deleted"),
        ("n1", "COMPLETE", "not modified"),
        ("w1", "WAITING", None),
        ("f1", "FETCH", None),
    ]:
        _object(job, guid=guid, state=state, report_status=report_status)

    result = _call("harvest_job_show", sysadmin, id=job.id)

    assert result["stats"] == {
        "added": 2, "updated": 1, "not modified": 1, "errored": 0, "deleted": 1,
        None: 2,
    }


def test_stats_errored_is_replaced_by_objects_with_errors_plus_gather_errors(
    sysadmin,
):
    source = _source()
    job = _job(source.id, status="Finished")
    with_errors = _object(job, guid="e1", state="ERROR", report_status="errored")
    _object_error(with_errors, "first problem")
    _object_error(with_errors, "second problem")
    also_with_errors = _object(job, guid="a1", state="COMPLETE", report_status="added")
    _object_error(also_with_errors, "a warning recorded as an error")
    for guid in ("e2", "e3", "e4"):
        _object(job, guid=guid, state="ERROR", report_status="errored")
    _gather_error(job, "gather problem 1")
    _gather_error(job, "gather problem 2")

    result = _call("harvest_job_show", sysadmin, id=job.id)

    # 4 errored objects are replaced by 2 objects having error rows, + 2 gather errors
    assert result["stats"] == {
        "added": 1, "updated": 0, "not modified": 0, "errored": 4, "deleted": 0,
    }


def test_stats_errored_without_object_errors_counts_reports_and_gather_errors(
    sysadmin,
):
    source = _source()
    job = _job(source.id, status="Finished")
    for guid in ("e1", "e2"):
        _object(job, guid=guid, state="ERROR", report_status="errored")
    _gather_error(job, "gather problem")

    result = _call("harvest_job_show", sysadmin, id=job.id)

    assert result["stats"] == dict(ZERO_STATS, errored=3)


def _job_with_many_errors() -> HarvestJob:
    source = _source()
    job = _job(source.id, status="Finished")
    first = _object(job, guid="first", state="ERROR", report_status="errored")
    second = _object(job, guid="second", state="ERROR", report_status="errored")
    for obj, message in [
        (first, "Timeout"), (second, "Timeout"), (second, "Timeout"),
        (first, "Bad XML"),
        (first, "No title"), (second, "No title"),
    ]:
        _object_error(obj, message)
    for message in ["Remote down", "Remote down", "Bad page"]:
        _gather_error(job, message)
    return job


def test_error_summaries_group_messages_most_frequent_first(sysadmin):
    job = _job_with_many_errors()

    result = _call("harvest_job_show", sysadmin, id=job.id)

    assert result["object_error_summary"] == [
        {"message": "Timeout", "error_count": 3},
        {"message": "No title", "error_count": 2},
        {"message": "Bad XML", "error_count": 1},
    ]
    assert result["gather_error_summary"] == [
        {"message": "Remote down", "error_count": 2},
        {"message": "Bad page", "error_count": 1},
    ]


def test_error_summaries_are_limited_by_the_context(sysadmin):
    job = _job_with_many_errors()

    result = _call(
        "harvest_job_show", sysadmin, context={"error_summmary_limit": 1}, id=job.id
    )

    assert result["object_error_summary"] == [{"message": "Timeout", "error_count": 3}]
    assert result["gather_error_summary"] == [
        {"message": "Remote down", "error_count": 2}
    ]


def test_error_summaries_default_to_twenty_messages(sysadmin):
    source = _source()
    job = _job(source.id, status="Finished")
    obj = _object(job, state="ERROR", report_status="errored")
    for index in range(25):
        _object_error(obj, "problem {:02d}".format(index))

    result = _call("harvest_job_show", sysadmin, id=job.id)

    assert len(result["object_error_summary"]) == 20
    assert {row["error_count"] for row in result["object_error_summary"]} == {1}


# --- harvest_job_abort --------------------------------------------------------


def _running_job_with_objects(source_id: str, **fields: Any) -> HarvestJob:
    job = _job(source_id, status="Running", gather_finished=NOW, **fields)
    for guid, state, report_status in [
        ("waiting", "WAITING", None),
        ("fetch", "FETCH", None),
        ("import", "IMPORT", "added"),
        ("complete", "COMPLETE", "updated"),
        ("error", "ERROR", "errored"),
    ]:
        _object(job, guid=guid, state=state, report_status=report_status)
    return job


ABORTED_OBJECTS = {
    "waiting": ("ERROR", None),
    "fetch": ("ERROR", None),
    "import": ("ERROR", "added"),
    "complete": ("COMPLETE", "updated"),
    "error": ("ERROR", "errored"),
}


def test_job_abort_by_job_id_finishes_it_and_errors_unfinished_objects(sysadmin):
    source = _source()
    job = _running_job_with_objects(source.id)

    result = _call("harvest_job_abort", sysadmin, id=job.id)

    assert result["id"] == job.id
    assert result["status"] == "Finished"
    assert result["finished"] is None
    row = _job_row(job.id)
    assert (row.status, row.finished) == ("Finished", None)
    assert _object_rows(job.id) == ABORTED_OBJECTS


@pytest.mark.parametrize(
    "param, reference",
    [("id", "id"), ("id", "name"), ("source_id", "id"), ("source_id", "name")],
)
def test_job_abort_by_source_aborts_its_latest_job(sysadmin, param, reference):
    source = harvest_factories.HarvestSource()
    older = _job(source["id"], status="Running",
                 created=NOW - datetime.timedelta(days=2))
    latest = _running_job_with_objects(
        source["id"], created=NOW - datetime.timedelta(days=1)
    )

    result = _call("harvest_job_abort", sysadmin, **{param: source[reference]})

    assert result["id"] == latest.id
    assert _job_row(latest.id).status == "Finished"
    assert _object_rows(latest.id) == ABORTED_OBJECTS
    assert _job_row(older.id).status == "Running"


def test_job_abort_source_id_takes_precedence_over_id(sysadmin):
    source = _source()
    other = _source()
    job = _job(source.id, status="Running")
    other_job = _job(other.id, status="Running")

    result = _call("harvest_job_abort", sysadmin, id=other_job.id, source_id=source.id)

    assert result["id"] == job.id
    assert _job_row(job.id).status == "Finished"
    assert _job_row(other_job.id).status == "Running"


def test_job_abort_of_a_finished_job_keeps_finished_and_errors_objects(sysadmin):
    source = _source()
    finished_at = NOW - datetime.timedelta(hours=1)
    job = _job(source.id, status="Finished", gather_finished=NOW, finished=finished_at)
    _object(job, guid="late", state="WAITING")

    result = _call("harvest_job_abort", sysadmin, id=job.id)

    assert (result["status"], result["finished"]) == ("Finished", str(finished_at))
    row = _job_row(job.id)
    assert (row.status, row.finished) == ("Finished", finished_at)
    assert _object_rows(job.id) == {"late": ("ERROR", None)}


def test_job_abort_of_a_source_without_jobs_raises_not_found(sysadmin):
    source = harvest_factories.HarvestSource()

    with pytest.raises(toolkit.ObjectNotFound) as raised:
        _call("harvest_job_abort", sysadmin, source_id=source["name"])

    assert str(raised.value) == "Error: source has no jobs"
    assert _jobs_of(source["id"]) == []


def test_job_abort_of_an_unknown_id_raises_not_found(sysadmin):
    source = _source()
    job = _job(source.id, status="Running")

    with pytest.raises(toolkit.ObjectNotFound):
        _call("harvest_job_abort", sysadmin, id="no-such-job-or-source")

    assert _job_row(job.id).status == "Running"


def test_job_abort_without_id_or_source_id_raises_validation_error(sysadmin):
    source = _source()
    job = _job(source.id, status="Running")

    with pytest.raises(toolkit.ValidationError):
        _call("harvest_job_abort", sysadmin)

    assert _job_row(job.id).status == "Running"


# --- harvest_abort_failed_jobs ------------------------------------------------


def _running_job_aged(days: float, frequency: str = "MANUAL") -> HarvestJob:
    source = _source(frequency=frequency)
    return _job(
        source.id, status="Running", created=NOW - datetime.timedelta(days=days)
    )


def test_abort_failed_jobs_without_running_jobs_says_so(sysadmin):
    finished = _job(_source().id, status="Finished",
                    created=NOW - datetime.timedelta(days=60))

    with freeze_time(NOW):
        result = _call("harvest_abort_failed_jobs", sysadmin, life_span=1)

    assert result == "There is no jobs to abort"
    assert _job_row(finished.id).status == "Finished"


@pytest.mark.parametrize(
    "frequency, age_days, aborted",
    [
        ("DAILY", 1.1, True),
        ("DAILY", 0.9, False),
        ("WEEKLY", 7.1, True),
        ("WEEKLY", 6.9, False),
        ("BIWEEKLY", 14.1, True),
        ("BIWEEKLY", 13.9, False),
        ("MONTHLY", 30.1, True),
        ("MONTHLY", 29.9, False),
        ("MANUAL", 3.1, True),
        ("MANUAL", 2.9, False),
        ("ALWAYS", 3.1, True),
        ("ALWAYS", 2.9, False),
    ],
)
def test_abort_failed_jobs_uses_the_life_span_of_the_source_frequency(
    sysadmin, frequency, age_days, aborted
):
    job = _running_job_aged(age_days, frequency)
    _object(job, guid="waiting", state="WAITING")

    with freeze_time(NOW):
        result = _call("harvest_abort_failed_jobs", sysadmin, life_span=3)

    assert result == "Done. Aborted jobs: {}".format(int(aborted))
    assert _job_row(job.id).status == ("Finished" if aborted else "Running")
    expected_state = "ERROR" if aborted else "WAITING"
    assert _object_rows(job.id) == {"waiting": (expected_state, None)}


# Q33: a missing, False or unparsable life span means 7 days
@pytest.mark.parametrize("life_span", ["missing", False, None, "", "seven"])
@pytest.mark.parametrize("age_days, aborted", [(7.1, True), (6.9, False)])
def test_abort_failed_jobs_defaults_the_life_span_to_seven_days(
    sysadmin, life_span, age_days, aborted
):
    job = _running_job_aged(age_days, "MANUAL")
    data = {} if life_span == "missing" else {"life_span": life_span}

    with freeze_time(NOW):
        result = _call("harvest_abort_failed_jobs", sysadmin, **data)

    assert result == "Done. Aborted jobs: {}".format(int(aborted))
    assert _job_row(job.id).status == ("Finished" if aborted else "Running")


def test_abort_failed_jobs_aborts_every_expired_job(sysadmin):
    expired = [_running_job_aged(10, "DAILY"), _running_job_aged(10, "MANUAL"),
               _running_job_aged(31, "MONTHLY")]
    young = _running_job_aged(0.5, "DAILY")

    with freeze_time(NOW):
        result = _call("harvest_abort_failed_jobs", sysadmin)

    assert result == "Done. Aborted jobs: 3"
    assert [_job_row(job.id).status for job in expired] == ["Finished"] * 3
    assert _job_row(young.id).status == "Running"


def test_abort_failed_jobs_include_only_considers_those_sources(sysadmin):
    included = _running_job_aged(10)
    other = _running_job_aged(10)
    third = _running_job_aged(10)

    with freeze_time(NOW):
        result = _call(
            "harvest_abort_failed_jobs", sysadmin,
            include="{}, {}".format(included.source_id, third.source_id),
            exclude=third.source_id,  # ignored when include is given
        )

    assert result == "Done. Aborted jobs: 2"
    assert _job_row(included.id).status == "Finished"
    assert _job_row(third.id).status == "Finished"
    assert _job_row(other.id).status == "Running"


def test_abort_failed_jobs_include_without_running_jobs_says_so(sysadmin):
    idle_source = _source()
    running = _running_job_aged(10)

    with freeze_time(NOW):
        result = _call("harvest_abort_failed_jobs", sysadmin, include=idle_source.id)

    assert result == "There is no jobs to abort"
    assert _job_row(running.id).status == "Running"


def test_abort_failed_jobs_exclude_skips_those_sources(sysadmin):
    excluded = _running_job_aged(10)
    second_excluded = _running_job_aged(10)
    other = _running_job_aged(10)

    with freeze_time(NOW):
        result = _call(
            "harvest_abort_failed_jobs", sysadmin,
            exclude="{},{}".format(excluded.source_id, second_excluded.source_id),
        )

    assert result == "Done. Aborted jobs: 1"
    assert _job_row(excluded.id).status == "Running"
    assert _job_row(second_excluded.id).status == "Running"
    assert _job_row(other.id).status == "Finished"


# --- harvest_jobs_run: finished detection -------------------------------------


def test_jobs_run_finishes_a_job_whose_objects_are_all_done(sysadmin, gather_queue):
    source = _source()
    gathered = NOW - datetime.timedelta(minutes=30)
    job = _job(source.id, status="Running", gather_started=gathered,
               gather_finished=gathered)
    latest_import = NOW - datetime.timedelta(minutes=5)
    _object(job, guid="done", state="COMPLETE", report_status="added",
            import_finished=NOW - datetime.timedelta(minutes=20))
    _object(job, guid="failed", state="ERROR", report_status="errored",
            import_finished=latest_import)
    _object(job, guid="fetch-failed", state="ERROR", report_status="errored")

    with freeze_time(NOW):
        result = _call("harvest_jobs_run", sysadmin)

    assert result == []
    row = _job_row(job.id)
    assert row.status == "Finished"
    assert row.finished == latest_import
    assert _gather_errors(job.id) == []


def test_jobs_run_uses_gather_finished_when_no_object_was_imported(
    sysadmin, gather_queue
):
    source = _source()
    gathered = NOW - datetime.timedelta(minutes=30, microseconds=-123456)
    job = _job(source.id, status="Running", gather_finished=gathered)
    _object(job, guid="fetch-failed", state="ERROR", report_status="errored")

    with freeze_time(NOW):
        _call("harvest_jobs_run", sysadmin)

    row = _job_row(job.id)
    assert row.status == "Finished"
    assert isinstance(row.finished, datetime.datetime)  # Q18: a datetime, not a str
    assert row.finished == gathered


def test_jobs_run_finishes_a_gathered_job_without_objects(sysadmin, gather_queue):
    source = _source()
    gathered = NOW - datetime.timedelta(minutes=1)
    job = _job(source.id, status="Running", gather_finished=gathered)

    with freeze_time(NOW):
        _call("harvest_jobs_run", sysadmin)

    row = _job_row(job.id)
    assert (row.status, row.finished) == ("Finished", gathered)


@pytest.mark.parametrize("state", ["WAITING", "FETCH", "IMPORT"])
def test_jobs_run_keeps_a_job_running_while_an_object_is_unfinished(
    sysadmin, gather_queue, state
):
    source = _source()
    job = _job(source.id, status="Running",
               gather_finished=NOW - datetime.timedelta(minutes=10))
    _object(job, guid="done", state="COMPLETE", report_status="added",
            import_finished=NOW - datetime.timedelta(minutes=5))
    _object(job, guid="pending", state=state)

    with freeze_time(NOW):
        _call("harvest_jobs_run", sysadmin)

    row = _job_row(job.id)
    assert (row.status, row.finished) == ("Running", None)


def test_jobs_run_never_finishes_a_job_that_was_not_gathered(sysadmin, gather_queue):
    source = _source()
    job = _job(source.id, status="Running", created=NOW - datetime.timedelta(days=3),
               gather_started=NOW - datetime.timedelta(days=3))
    _object(job, guid="done", state="COMPLETE", report_status="added",
            import_finished=NOW - datetime.timedelta(days=2))

    with freeze_time(NOW):
        _call("harvest_jobs_run", sysadmin)

    row = _job_row(job.id)
    assert (row.status, row.finished) == ("Running", None)


def test_jobs_run_with_source_id_only_looks_at_that_source(sysadmin, gather_queue):
    source = _source()
    other = _source()
    job = _job(source.id, status="Running", gather_finished=NOW)
    other_job = _job(other.id, status="Running", gather_finished=NOW)

    with freeze_time(NOW):
        _call("harvest_jobs_run", sysadmin, source_id=source.id)

    assert _job_row(job.id).status == "Finished"
    assert _job_row(other_job.id).status == "Running"


def _finished_by_jobs_run() -> tuple[dict[str, Any], str]:
    source = harvest_factories.HarvestSource(frequency="WEEKLY")
    job = _job(source["id"], status="Running", gather_finished=NOW)
    _object(job, guid="done", state="COMPLETE", report_status="added",
            import_finished=NOW)
    return source, job.id


def test_jobs_run_reindexes_the_source_after_finishing_a_job(sysadmin, gather_queue):
    source, job_id = _finished_by_jobs_run()

    _call("harvest_jobs_run", sysadmin, source_id=source["id"])

    assert _job_row(job_id).status == "Finished"
    indexed = toolkit.get_action("package_search")(
        {"ignore_auth": True},
        {"fq": '+dataset_type:harvest +id:"{}"'.format(source["id"])},
    )["results"]
    assert [pkg["id"] for pkg in indexed] == [source["id"]]
    last_job = indexed[0]["status"]["last_job"]
    assert (last_job["id"], last_job["status"]) == (job_id, "Finished")
    assert last_job["stats"]["added"] == 1


def test_source_show_after_jobs_run_keeps_the_harvest_fields_and_shows_the_status(
    sysadmin, gather_queue
):
    source, job_id = _finished_by_jobs_run()

    _call("harvest_jobs_run", sysadmin, source_id=source["id"])

    assert _job_row(job_id).status == "Finished"
    shown = toolkit.get_action("harvest_source_show")(
        {"ignore_auth": True}, {"id": source["id"]}
    )
    assert (shown["id"], shown["status"]["last_job"]["status"]) == (
        source["id"], "Finished"
    )
    assert shown["source_type"] == "test"
    assert shown["frequency"] == "WEEKLY"
    assert "author" not in shown  # dropped by the show schema
    package = toolkit.get_action("package_show")(
        {"ignore_auth": True}, {"id": source["id"]}
    )
    assert package["status"]["last_job"]["id"] == job_id
    assert package["source_type"] == "test"


def test_jobs_run_does_not_mutate_the_callers_context(sysadmin, gather_queue):
    source = _source()
    job = _job(source.id, status="Running", gather_finished=NOW)
    context = {"user": sysadmin["name"]}

    toolkit.get_action("harvest_jobs_run")(context, {})

    assert _job_row(job.id).status == "Finished"  # the source was reindexed
    assert "return_objects" not in context
    assert "ignore_auth" not in context


# --- harvest_jobs_run: timeouts -----------------------------------------------


def _idle_finished_job(source_id: str, idle: datetime.timedelta) -> dict[str, Any]:
    """A Running job whose objects are all done, idle for ``idle``."""
    created = NOW - idle - datetime.timedelta(hours=1)
    gathered = NOW - idle - datetime.timedelta(minutes=30)
    last_import = NOW - idle
    job = _job(source_id, status="Running", created=created, gather_started=created,
               gather_finished=gathered)
    _object(job, guid="done", state="COMPLETE", report_status="added",
            import_finished=last_import - datetime.timedelta(minutes=10))
    _object(job, guid="last", state="COMPLETE", report_status="added",
            import_finished=last_import)
    return {"job": job.id, "created": created, "gathered": gathered,
            "last": last_import}


# Q12 (real gather_finished in the message) and Q13 (timeout before completion)
@pytest.mark.ckan_config("ckan.harvest.timeout", "60")
def test_jobs_run_times_out_an_idle_job_before_checking_completion(
    sysadmin, gather_queue
):
    source = _source()
    idle = _idle_finished_job(source.id, datetime.timedelta(minutes=61))

    with freeze_time(NOW):
        _call("harvest_jobs_run", sysadmin)

    row = _job_row(idle["job"])
    assert row.status == "Finished"
    assert row.finished == NOW  # not the last import_finished: no completion
    assert _gather_errors(idle["job"]) == [
        "Job {} timeout (60 minutes)\n"
        "\tJob created: {}\n"
        "\tJob gather finished: {}\n"
        "\tJob last action time: {}\n".format(
            idle["job"], idle["created"], idle["gathered"], idle["last"]
        )
    ]


@pytest.mark.ckan_config("ckan.harvest.timeout", "60")
def test_jobs_run_times_out_a_job_stuck_in_gather(sysadmin, gather_queue):
    source = _source()
    created = NOW - datetime.timedelta(hours=3)
    job = _job(source.id, status="Running", created=created, gather_started=created)

    with freeze_time(NOW):
        _call("harvest_jobs_run", sysadmin)

    row = _job_row(job.id)
    assert (row.status, row.finished) == ("Finished", NOW)
    assert _gather_errors(job.id) == [
        "Job {id} timeout (60 minutes)\n"
        "\tJob created: {c}\n"
        "\tJob gather finished: None\n"
        "\tJob last action time: {c}\n".format(id=job.id, c=created)
    ]


@pytest.mark.ckan_config("ckan.harvest.timeout", "60")
def test_jobs_run_completes_a_job_active_within_the_timeout(sysadmin, gather_queue):
    source = _source()
    recent = _idle_finished_job(source.id, datetime.timedelta(minutes=59))

    with freeze_time(NOW):
        _call("harvest_jobs_run", sysadmin)

    row = _job_row(recent["job"])
    assert (row.status, row.finished) == ("Finished", recent["last"])
    assert _gather_errors(recent["job"]) == []


@pytest.mark.parametrize("timeout", [None, "0", 0])
def test_jobs_run_without_a_timeout_never_times_out(
    sysadmin, gather_queue, ckan_config, monkeypatch, timeout
):
    if timeout is None:
        monkeypatch.delitem(ckan_config, "ckan.harvest.timeout", raising=False)
    else:
        monkeypatch.setitem(ckan_config, "ckan.harvest.timeout", timeout)
    source = _source()
    old = _idle_finished_job(source.id, datetime.timedelta(days=30))

    with freeze_time(NOW):
        _call("harvest_jobs_run", sysadmin)

    row = _job_row(old["job"])
    assert (row.status, row.finished) == ("Finished", old["last"])
    assert _gather_errors(old["job"]) == []


# --- harvest_jobs_run: scheduling (README §5) ---------------------------------


@pytest.mark.parametrize(
    "frequency, days", [("DAILY", 1), ("WEEKLY", 7), ("BIWEEKLY", 14), ("ALWAYS", 0)]
)
def test_jobs_run_creates_and_runs_a_job_for_a_due_source(
    sysadmin, gather_queue, frequency, days
):
    source = _source(frequency=frequency)

    with freeze_time(NOW):
        _call("harvest_jobs_run", sysadmin)

    jobs = _jobs_of(source.id)
    assert [row.status for row in jobs] == ["Running"]
    assert gather_queue() == [_message(jobs[0].id)]
    assert _next_run(source.id) == NOW + datetime.timedelta(days=days)


@pytest.mark.parametrize(
    "today, days",
    [
        ("2023-02-10 08:30:00", 28),
        ("2024-02-10 08:30:00", 29),
        ("2024-04-10 08:30:00", 30),
        ("2024-01-10 08:30:00", 31),
        ("2024-12-31 23:00:00", 31),
        ("2100-02-10 08:30:00", 29),  # spec: leap year = year % 4 == 0
    ],
)
def test_jobs_run_schedules_monthly_sources_by_the_length_of_the_month(
    sysadmin, gather_queue, today, days
):
    source = _source(frequency="MONTHLY")
    now = datetime.datetime.fromisoformat(today)

    with freeze_time(now):
        _call("harvest_jobs_run", sysadmin)

    assert [row.status for row in _jobs_of(source.id)] == ["Running"]
    assert _next_run(source.id) == now + datetime.timedelta(days=days)


def test_jobs_run_schedules_a_source_whose_next_run_has_passed(
    sysadmin, gather_queue
):
    source = _source(frequency="WEEKLY")
    source.next_run = NOW - datetime.timedelta(minutes=1)
    source.save()

    with freeze_time(NOW):
        _call("harvest_jobs_run", sysadmin)

    assert [row.status for row in _jobs_of(source.id)] == ["Running"]
    assert _next_run(source.id) == NOW + datetime.timedelta(days=7)


def test_jobs_run_does_not_schedule_a_source_whose_next_run_is_ahead(
    sysadmin, gather_queue
):
    source = _source(frequency="DAILY")
    ahead = NOW + datetime.timedelta(minutes=1)
    source.next_run = ahead
    source.save()

    with freeze_time(NOW):
        _call("harvest_jobs_run", sysadmin)

    assert _jobs_of(source.id) == []
    assert _next_run(source.id) == ahead
    assert gather_queue() == []


def test_jobs_run_never_schedules_manual_sources(sysadmin, gather_queue):
    source = _source(frequency="MANUAL")

    with freeze_time(NOW):
        _call("harvest_jobs_run", sysadmin)

    assert _jobs_of(source.id) == []
    assert _next_run(source.id) is None
    assert gather_queue() == []


def test_jobs_run_never_schedules_inactive_sources(sysadmin, gather_queue):
    source = _source(frequency="DAILY")
    _deactivate(source)

    with freeze_time(NOW):
        _call("harvest_jobs_run", sysadmin)

    assert _jobs_of(source.id) == []
    assert _next_run(source.id) is None
    assert gather_queue() == []


# Q19: next_run moves on even though no job could be created
def test_jobs_run_advances_next_run_when_the_source_already_has_a_job(
    sysadmin, gather_queue
):
    source = _source(frequency="DAILY")
    existing = _job(source.id, status="New")

    with freeze_time(NOW):
        _call("harvest_jobs_run", sysadmin)

    assert [(row.id, row.status) for row in _jobs_of(source.id)] == [
        (existing.id, "New")
    ]
    assert _next_run(source.id) == NOW + datetime.timedelta(days=1)
    assert gather_queue() == []


def test_jobs_run_with_source_id_does_not_schedule(sysadmin, gather_queue):
    due = _source(frequency="DAILY")
    other = _source()

    with freeze_time(NOW):
        _call("harvest_jobs_run", sysadmin, source_id=other.id)

    assert _jobs_of(due.id) == []
    assert _next_run(due.id) is None
    assert gather_queue() == []
