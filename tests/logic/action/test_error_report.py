"""harvest_job_error_report and the streamed downloads of lib/error_report.

Real database; the errors are written through the model as the stages write them.
"""
from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
from typing import Any

import pytest
from ckan.plugins import toolkit
from ckan.tests import factories

from ckanext.harvest.lib import error_report
from ckanext.harvest.model import HarvestGatherError, HarvestObjectError
from tests.logic.action.test_jobs import (
    _call,
    _gather_error,
    _job,
    _object,
    _object_error,
    _source,
)
from tests.support.marks import harvest_site

pytestmark = harvest_site("harvest test_harvester test_harvester2")

T0 = datetime.datetime(2024, 5, 15, 12, 0, 0)


def _at(minutes: int) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=minutes)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@pytest.fixture
def job_with_errors():
    """A finished job: 2 gather errors, 3 objects (one with a dataset) with 4 errors."""
    dataset = factories.Dataset(owner_org=factories.Organization()["id"])
    job = _job(_source().id, status="Finished")
    _gather_error(job, "Remote unreachable", created=_at(0))
    _gather_error(job, "Bad page", created=_at(1))
    one = _object(job, guid="one", package_id=dataset["id"])
    two = _object(job, guid="two")
    _object(job, guid="clean")
    _object_error(one, "Invalid tag", stage="Import", created=_at(2))
    _object_error(two, "Invalid tag", stage="Import", created=_at(3))
    _object_error(two, "Could not fetch", stage="Fetch", created=_at(4))
    _object_error(one, "Remote unreachable", stage="Fetch", created=_at(5))
    return {"job": job, "one": one, "two": two, "dataset": dataset}


def test_report_groups_every_error_by_message(sysadmin, job_with_errors):
    report = _call("harvest_job_error_report", sysadmin, id=job_with_errors["job"].id)

    assert report["job_id"] == job_with_errors["job"].id
    assert report["groups"] == [
        {"group": _md5("Invalid tag"), "message": "Invalid tag", "count": 2,
         "stages": ["Import"]},
        {"group": _md5("Remote unreachable"), "message": "Remote unreachable",
         "count": 2, "stages": ["Fetch", "Gather"]},
        {"group": _md5("Bad page"), "message": "Bad page", "count": 1,
         "stages": ["Gather"]},
        {"group": _md5("Could not fetch"), "message": "Could not fetch", "count": 1,
         "stages": ["Fetch"]},
    ]
    assert report["total"] == 6


def test_report_rows_are_oldest_first_with_their_object_and_dataset(
        sysadmin, job_with_errors):
    job, one, two = (job_with_errors[k] for k in ("job", "one", "two"))
    dataset = job_with_errors["dataset"]

    errors = _call("harvest_job_error_report", sysadmin, id=job.id)["errors"]

    assert [(e["stage"], e["guid"], e["message"]) for e in errors] == [
        ("Gather", None, "Remote unreachable"), ("Gather", None, "Bad page"),
        ("Import", "one", "Invalid tag"), ("Import", "two", "Invalid tag"),
        ("Fetch", "two", "Could not fetch"), ("Fetch", "one", "Remote unreachable"),
    ]
    site = toolkit.config["ckan.site_url"].rstrip("/")
    assert errors[2] == {
        "job_id": job.id, "stage": "Import", "object_id": one.id, "guid": "one",
        "dataset_id": dataset["id"], "dataset_url": "%s/dataset/%s" % (site, dataset["name"]),
        "message": "Invalid tag", "created": _at(2).isoformat(),
    }
    assert errors[0]["object_id"] is None and errors[0]["dataset_url"] is None
    assert errors[3]["object_id"] == two.id and errors[3]["dataset_url"] is None


@pytest.mark.parametrize(("filters", "expected"), [
    ({"stage": "Gather"}, ["Remote unreachable", "Bad page"]),
    ({"stage": "Fetch"}, ["Could not fetch", "Remote unreachable"]),
    ({"group": _md5("Remote unreachable")}, ["Remote unreachable"] * 2),
    ({"stage": "Fetch", "group": _md5("Remote unreachable")}, ["Remote unreachable"]),
    ({"stage": "Validation"}, []),
    ({"limit": 2, "offset": 3}, ["Invalid tag", "Could not fetch"]),
])
def test_report_filters_and_pages(sysadmin, job_with_errors, filters, expected):
    report = _call("harvest_job_error_report", sysadmin, id=job_with_errors["job"].id,
                   **filters)

    assert [e["message"] for e in report["errors"]] == expected
    if "limit" not in filters:
        assert report["total"] == len(expected)


def test_report_groups_follow_the_stage_filter(sysadmin, job_with_errors):
    report = _call("harvest_job_error_report", sysadmin, id=job_with_errors["job"].id,
                   stage="Gather")

    assert [(g["message"], g["count"]) for g in report["groups"]] == [
        ("Bad page", 1), ("Remote unreachable", 1)]


@pytest.mark.parametrize("bad", [
    {"stage": "Gather\nImport"}, {"stage": "x" * 101}, {"stage": ["Gather"]},
    {"group": "not-a-group"}, {"group": _md5("x").upper()}, {"limit": 0},
    {"offset": -1},
])
def test_report_refuses_bad_filters(sysadmin, job_with_errors, bad):
    with pytest.raises(toolkit.ValidationError) as error:
        _call("harvest_job_error_report", sysadmin, id=job_with_errors["job"].id, **bad)
    assert set(error.value.error_dict) == set(bad)


def test_report_of_an_unknown_job_is_not_found(sysadmin):
    with pytest.raises(toolkit.ObjectNotFound):
        _call("harvest_job_error_report", sysadmin, id="no-such-job")


def _many_errors(count: int) -> Any:
    """A job with ``count`` object errors (a third with the same message) and a
    gather error, inserted in bulk."""
    job = _job(_source().id, status="Finished")
    obj = _object(job, guid="many")
    from ckan import model

    model.Session.bulk_save_objects([
        HarvestObjectError(harvest_object_id=obj.id, stage="Import", created=_at(n),
                           message="Same" if n % 3 == 0 else "Error %d" % n)
        for n in range(count)])
    model.Session.add(HarvestGatherError(harvest_job_id=job.id, message="Gathered",
                                         created=_at(-1)))
    model.Session.commit()
    return job


def test_csv_download_has_every_row_across_batches():
    count = error_report.BATCH * 2 + 7
    job = _many_errors(count)

    text = "".join(error_report.csv_chunks(error_report.iter_rows(job.id)))

    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(error_report.COLUMNS)
    assert len(rows) == count + 1
    assert rows[0]["stage"] == "Gather" and rows[0]["object_id"] == ""
    assert [r["message"] for r in rows[1:4]] == ["Same", "Error 1", "Error 2"]
    assert rows[-1]["message"] == "Error %d" % (count - 1)


def test_json_download_is_one_array_of_every_row():
    count = error_report.BATCH + 1
    job = _many_errors(count)

    chunks = list(error_report.json_chunks(error_report.iter_rows(job.id, stage="Import")))

    assert len(chunks) > 1
    rows = json.loads("".join(chunks))
    assert len(rows) == count
    assert set(rows[0]) == set(error_report.COLUMNS)
    assert {r["stage"] for r in rows} == {"Import"}


def test_downloads_of_a_job_without_errors():
    job = _job(_source().id, status="Finished")

    assert json.loads("".join(error_report.json_chunks(error_report.iter_rows(job.id)))) == []
    text = "".join(error_report.csv_chunks(error_report.iter_rows(job.id)))
    assert text == ",".join(error_report.COLUMNS) + "\r\n"
