"""Long lists: the bounds and pages of the list actions (issue 14).

``harvest_source_list``, ``harvest_job_list``, ``harvest_object_list`` and
``harvest_job_report`` return at most a declared number of rows by default
(``ckan.harvest.harvest_source_limit``, ``job_list_limit``,
``object_list_limit``, ``job_report_limit``) and accept ``limit`` (at most
that number) and ``offset``. Statistics and status summaries of many jobs and
sources are counted together, with the same results as one at a time.
"""
from __future__ import annotations

import datetime
from typing import Any

import pytest
from ckan.plugins import toolkit

from ckanext.harvest.lib import stats
from ckanext.harvest.model import (
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
    HarvestSource,
)
from ckanext.harvest.tests import factories as harvest_factories
from tests.support.marks import harvest_site

pytestmark = harvest_site("harvest test_harvester", index=False)

START = datetime.datetime(2025, 3, 1, 8, 0, 0)


def _call(name: str, **data: Any) -> Any:
    return toolkit.get_action(name)({"ignore_auth": True, "user": ""}, data)


def _source(n: int = 0) -> HarvestSource:
    return harvest_factories.HarvestSourceObj(url="http://paging-%d.example.org/" % n)


def _jobs(source: HarvestSource, count: int) -> list[str]:
    """``count`` finished jobs, one minute apart; their ids newest first."""
    ids = []
    for n in range(count):
        job = HarvestJob(source_id=source.id, status="Finished",
                         created=START + datetime.timedelta(minutes=n))
        job.save()
        ids.append(job.id)
    return list(reversed(ids))


def _object(job_id: str, source_id: str, guid: str, **fields: Any) -> HarvestObject:
    obj = HarvestObject(job=HarvestJob.get(job_id), harvest_source_id=source_id, guid=guid,
                        **fields)
    obj.save()
    return obj


def _errored_objects(job_id: str, source_id: str, count: int) -> list[str]:
    """``count`` objects with two errors each; their ids in id order."""
    ids = []
    for n in range(count):
        obj = _object(job_id, source_id, "bad-%d" % n, state="ERROR",
                      report_status="errored")
        for line in (1, 2):
            HarvestObjectError(harvest_object_id=obj.id, message="Bad %d" % n, line=line,
                               stage="Import").save()
        ids.append(obj.id)
    return sorted(ids)


# --- harvest_job_list ----------------------------------------------------------


def test_job_list_returns_every_job_by_default():
    source = _source()
    newest_first = _jobs(source, 5)

    found = _call("harvest_job_list", source_id=source.id)

    assert [job["id"] for job in found] == newest_first


@pytest.mark.ckan_config("ckan.harvest.job_list_limit", "3")
def test_job_list_is_bounded_by_the_declared_limit_and_pages_with_offset():
    source = _source()
    newest_first = _jobs(source, 7)

    first = _call("harvest_job_list", source_id=source.id)
    second = _call("harvest_job_list", source_id=source.id, offset=3)
    third = _call("harvest_job_list", source_id=source.id, offset="6", limit="100")

    assert [job["id"] for job in first] == newest_first[:3]
    assert [job["id"] for job in second] == newest_first[3:6]
    assert [job["id"] for job in third] == newest_first[6:]
    assert HarvestJob.filter(source_id=source.id).count() == 7


def test_job_list_limit_and_offset_give_a_page():
    source = _source()
    newest_first = _jobs(source, 6)

    page = _call("harvest_job_list", source_id=source.id, limit=2, offset=2)

    assert [job["id"] for job in page] == newest_first[2:4]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": "two"}, {"offset": -1},
                                    {"offset": "x"}, {"source_id": ["a", "b"]}])
def test_job_list_refuses_bad_paging_parameters(params):
    with pytest.raises(toolkit.ValidationError) as raised:
        _call("harvest_job_list", **params)

    assert set(raised.value.error_dict) == set(params)


def test_job_list_counts_the_statistics_of_every_job_as_job_show_does():
    source = _source()
    newest, older, empty = _jobs(source, 3)
    _object(newest, source.id, "a", state="COMPLETE", report_status="added")
    _object(newest, source.id, "u", state="COMPLETE", report_status="updated")
    _object(newest, source.id, "w", state="WAITING")
    _errored_objects(newest, source.id, 2)
    _object(older, source.id, "n", state="COMPLETE", report_status="not modified")
    HarvestGatherError(harvest_job_id=older, message="Gather failed").save()

    listed = {job["id"]: job["stats"] for job in _call("harvest_job_list",
                                                       source_id=source.id)}

    for job_id in (newest, older, empty):
        assert listed[job_id] == _call("harvest_job_show", id=job_id)["stats"]
    assert listed[newest] == {"added": 1, "updated": 1, "not modified": 0, "errored": 2,
                              "deleted": 0, None: 1}
    assert listed[older]["errored"] == 1 and listed[older]["not modified"] == 1
    assert listed[empty] == stats.job_stats(empty)


# --- harvest_object_list -------------------------------------------------------


@pytest.mark.ckan_config("ckan.harvest.object_list_limit", "4")
def test_object_list_is_bounded_and_pages_in_id_order():
    source = _source()
    (job_id,) = _jobs(source, 1)
    ids = sorted(_object(job_id, source.id, "g%d" % n, current=True).id for n in range(10))

    first = _call("harvest_object_list", source_id=source.id)
    rest = [_call("harvest_object_list", source_id=source.id, offset=offset)
            for offset in (4, 8)]
    small = _call("harvest_object_list", source_id=source.id, limit=3, offset=1)

    assert first == ids[:4]
    assert rest == [ids[4:8], ids[8:]]
    assert small == ids[1:4]


def test_object_list_returns_every_current_object_by_default():
    source = _source()
    (job_id,) = _jobs(source, 1)
    current = {_object(job_id, source.id, "c%d" % n, current=True).id for n in range(5)}
    _object(job_id, source.id, "old", current=False)

    found = _call("harvest_object_list", source_id=source.id)

    assert set(found) == current and found == sorted(found)


# --- harvest_job_report --------------------------------------------------------


@pytest.mark.ckan_config("ckan.harvest.job_report_limit", "3")
def test_job_report_is_bounded_by_objects_and_gather_errors():
    source = _source()
    (job_id,) = _jobs(source, 1)
    errored = _errored_objects(job_id, source.id, 5)
    _object(job_id, source.id, "fine", state="COMPLETE", report_status="added")
    for n in range(4):
        HarvestGatherError(harvest_job_id=job_id, message="Gather %d" % n,
                           created=START + datetime.timedelta(seconds=n)).save()

    report = _call("harvest_job_report", id=job_id)
    rest = _call("harvest_job_report", id=job_id, offset=3)

    assert set(report) == {"gather_errors", "object_errors"}
    assert list(report["object_errors"]) == errored[:3]
    assert list(rest["object_errors"]) == errored[3:]
    # Every error of an object is on the page of the object.
    for entry in list(report["object_errors"].values()) + list(rest["object_errors"].values()):
        assert [error["line"] for error in entry["errors"]] == [1, 2]
    assert report["gather_errors"] == [{"message": "Gather %d" % n} for n in (3, 2, 1)]
    assert rest["gather_errors"] == [{"message": "Gather 0"}]


def test_job_report_limit_gives_a_page_of_each_list():
    source = _source()
    (job_id,) = _jobs(source, 1)
    errored = _errored_objects(job_id, source.id, 4)
    HarvestGatherError(harvest_job_id=job_id, message="Only one").save()

    report = _call("harvest_job_report", id=job_id, limit=2, offset=1)

    assert list(report["object_errors"]) == errored[1:3]
    assert report["object_errors"][errored[1]]["guid"].startswith("bad-")
    assert report["gather_errors"] == []


def test_job_report_by_default_returns_every_object_with_errors():
    source = _source()
    (job_id,) = _jobs(source, 1)
    errored = _errored_objects(job_id, source.id, 6)

    report = _call("harvest_job_report", id=job_id)

    assert list(report["object_errors"]) == errored
    assert stats.report_counts(job_id) == {"objects": 6, "gather": 0}


def test_job_report_refuses_a_bad_limit():
    source = _source()
    (job_id,) = _jobs(source, 1)

    with pytest.raises(toolkit.ValidationError):
        _call("harvest_job_report", id=job_id, limit=-5)


# --- harvest_source_list -------------------------------------------------------


@pytest.mark.ckan_config("ckan.harvest.harvest_source_limit", "2")
def test_source_list_pages_within_the_source_limit():
    made = [_source(n) for n in range(5)]
    newest_first = [source.id for source in sorted(
        made, key=lambda s: (s.created, s.id), reverse=True)]

    pages = [[s["id"] for s in _call("harvest_source_list", offset=offset)]
             for offset in (0, 2, 4)]
    capped = _call("harvest_source_list", limit=50)

    assert pages == [newest_first[:2], newest_first[2:4], newest_first[4:]]
    assert len(capped) == 2


def test_source_list_status_summaries_match_each_source():
    idle, scheduled, harvested = _source(1), _source(2), _source(3)
    HarvestJob(source_id=scheduled.id, status="New").save()
    finished = HarvestJob(source_id=harvested.id, status="Finished",
                          gather_finished=START, created=START)
    finished.save()
    HarvestJob(source_id=harvested.id, status="Finished", gather_finished=None,
               created=START - datetime.timedelta(days=1)).save()

    listed = {s["id"]: s["status"] for s in _call("harvest_source_list")}

    assert listed[idle.id] == {"job_count": 0, "next_harvest": "",
                               "last_harvest_request": "", "msg": "No jobs yet"}
    assert listed[scheduled.id] == {"job_count": 1, "next_harvest": "Scheduled",
                                    "last_harvest_request": "Not yet harvested"}
    assert listed[harvested.id] == {"job_count": 2, "next_harvest": "Not yet scheduled",
                                    "last_harvest_request": str(START)}
    for source_id, status in listed.items():
        assert status == stats.source_status_summary(source_id)
