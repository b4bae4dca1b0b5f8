"""The harvest ORM classes: defaults, lookups, relationships and helpers."""
from __future__ import annotations

import datetime

import pytest
import sqlalchemy as sa
from ckan import model

from ckanext.harvest import model as harvest_model
from ckanext.harvest.model import (
    UPDATE_FREQUENCIES,
    HarvestGatherError,
    HarvestJob,
    HarvestLog,
    HarvestObject,
    HarvestObjectError,
    HarvestObjectExtra,
    HarvestSource,
    clean_harvest_log,
)

pytestmark = pytest.mark.usefixtures("clean_db")


def make_source(**kwargs) -> HarvestSource:
    values = {"url": "http://remote.example.org/", "type": "test"}
    values.update(kwargs)
    source = HarvestSource(**values)
    source.save()
    return source


def make_job(source: HarvestSource, **kwargs) -> HarvestJob:
    job = HarvestJob(source=source, **kwargs)
    job.save()
    return job


def make_package(name: str) -> model.Package:
    package = model.Package(name=name, type="dataset")
    package.save()
    return package


def count(table: str) -> int:
    return model.Session.execute(sa.text("SELECT count(*) FROM " + table)).scalar()


def test_update_frequencies_in_form_order():
    assert UPDATE_FREQUENCIES == [
        "MANUAL", "MONTHLY", "WEEKLY", "BIWEEKLY", "DAILY", "ALWAYS"
    ]


def test_source_orm_defaults_are_applied_on_insert():
    before = datetime.datetime.utcnow()

    source = make_source()

    row = model.Session.execute(
        sa.text("SELECT * FROM harvest_source WHERE id = :id"), {"id": source.id}
    ).mappings().one()
    assert len(row["id"]) == 36
    assert (row["title"], row["description"], row["config"]) == ("", "", "")
    assert (row["user_id"], row["publisher_id"]) == ("", "")
    assert row["active"] is True
    assert row["frequency"] == "MANUAL"
    assert row["next_run"] is None
    assert before <= row["created"] <= datetime.datetime.utcnow()


def test_job_and_object_defaults():
    job = make_job(make_source())
    obj = HarvestObject(guid="g1", job=job)
    obj.save()

    assert job.status == "New"
    assert job.created is not None and job.finished is None
    assert obj.state == "WAITING"
    assert obj.current is False
    assert obj.retry_times == 0
    assert obj.report_status is None
    assert obj.gathered is not None


def test_before_insert_listener_copies_the_source_from_the_job():
    source = make_source()
    job = make_job(source)

    obj = HarvestObject(guid="g1", job=job)
    obj.save()

    stored = model.Session.execute(
        sa.text("SELECT harvest_source_id FROM harvest_object WHERE id = :id"),
        {"id": obj.id},
    ).scalar()
    assert stored == source.id
    assert obj in source.objects


def test_object_without_job_or_source_is_refused():
    obj = HarvestObject(guid="orphan")
    model.Session.add(obj)

    with pytest.raises(Exception, match="You must define a Harvest Job"):
        model.Session.commit()
    model.Session.rollback()
    assert count("harvest_object") == 0


def test_get_by_id_and_by_other_attribute():
    source = make_source(url="http://a.example.org")

    assert HarvestSource.get(source.id) is source
    assert HarvestSource.get("http://a.example.org", attr="url") is source
    assert HarvestSource.get("missing") is None
    assert HarvestSource.get("missing", default="fallback") == "fallback"


def test_filter_returns_a_query():
    make_source(url="http://a", frequency="DAILY")
    make_source(url="http://b", frequency="DAILY")
    make_source(url="http://c")

    assert HarvestSource.filter(frequency="DAILY").count() == 2
    assert {s.url for s in HarvestSource.filter(frequency="MANUAL")} == {"http://c"}


def test_as_dict_renders_datetimes_with_str_in_column_order():
    source = make_source()
    source.created = datetime.datetime(2016, 6, 3, 10, 59, 40, 961657)
    source.save()

    as_dict = source.as_dict()

    assert list(as_dict) == [
        "id", "url", "title", "description", "config", "created", "type",
        "active", "user_id", "publisher_id", "frequency", "next_run",
    ]
    assert as_dict["created"] == "2016-06-03 10:59:40.961657"


def test_repr_and_str():
    source = make_source(title="T")

    expected = "<HarvestSource id=%s title=T url=http://remote.example.org/ active=True>"
    assert repr(source) == expected % source.id
    assert str(source) == repr(source)


def test_source_jobs_are_ordered_by_creation_and_filterable_by_status():
    source = make_source()
    first = make_job(source, status="Finished",
                     created=datetime.datetime(2020, 1, 1))
    second = make_job(source, created=datetime.datetime(2021, 1, 1))

    model.Session.expire_all()
    assert source.jobs == [first, second]
    assert source.get_jobs() == [first, second]
    assert source.get_jobs(status="New") == [second]


def test_last_action_time_prefers_last_import_then_gather_then_gathered():
    job = make_job(make_source(), created=datetime.datetime(2020, 1, 1))
    assert job.get_last_action_time() == datetime.datetime(2020, 1, 1)

    HarvestObject(guid="a", job=job, gathered=datetime.datetime(2020, 1, 2)).save()
    assert job.get_last_action_time() == datetime.datetime(2020, 1, 2)

    job.gather_finished = datetime.datetime(2020, 1, 3)
    job.save()
    assert job.get_last_action_time() == datetime.datetime(2020, 1, 3)

    for day, state in ((4, "ERROR"), (5, "COMPLETE"), (6, "ERROR")):
        HarvestObject(guid="d%s" % day, job=job, state=state,
                      import_finished=datetime.datetime(2020, 1, day)).save()
    assert job.get_last_finished_object().guid == "d5"
    assert job.get_last_action_time() == datetime.datetime(2020, 1, 5)


def test_gather_errors_newest_first_and_logged(caplog):
    job = make_job(make_source())

    HarvestGatherError.create("second", job)
    HarvestGatherError.create("first", job)
    first = HarvestGatherError.get("first", attr="message")
    first.created = datetime.datetime(2020, 1, 1)
    first.save()

    assert [e.message for e in job.get_gather_errors()] == ["second", "first"]
    assert "first" in caplog.text
    assert count("harvest_gather_error") == 2


def test_object_error_defaults_to_fetch_stage():
    obj = HarvestObject(guid="g", job=make_job(make_source()))
    obj.save()

    HarvestObjectError.create("boom", obj)
    HarvestObjectError.create("bad line", obj, stage="Import", line=7)

    model.Session.expire_all()
    assert sorted((e.message, e.stage, e.line) for e in obj.errors) == [
        ("bad line", "Import", 7), ("boom", "Fetch", None),
    ]


def test_object_extras_relationship_and_orphan_removal():
    obj = HarvestObject(
        guid="g", job=make_job(make_source()),
        extras=[HarvestObjectExtra(key="status", value="new")],
    )
    obj.save()
    assert count("harvest_object_extra") == 1

    obj.extras = []
    obj.save()

    assert count("harvest_object_extra") == 0


def test_purging_a_package_cascades_to_its_harvest_objects_at_db_level():
    package = make_package("harvested")
    obj = HarvestObject(guid="g", job=make_job(make_source()), package_id=package.id)
    obj.save()
    HarvestObjectError.create("e", obj)
    obj_id = obj.id
    model.Session.remove()

    with model.meta.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM package WHERE id = :id"), {"id": package.id})

    assert HarvestObject.get(obj_id) is None
    assert count("harvest_object_error") == 0
    assert count("harvest_job") == 1


def test_package_backref_lists_harvest_objects():
    package = make_package("harvested")
    obj = HarvestObject(guid="g", job=make_job(make_source()), package=package)
    obj.save()

    assert package.harvest_objects == [obj]


def test_clean_harvest_log_deletes_rows_up_to_the_cut_off(caplog):
    old = datetime.datetime(2020, 1, 1)
    HarvestLog(content="old", level="INFO", created=old).save()
    HarvestLog(content="new", level="ERROR").save()

    clean_harvest_log(old)

    assert [r.content for r in model.Session.query(HarvestLog)] == ["new"]
    assert "Harvest log table clean-up finished successfully" in caplog.text


def test_log_level_outside_the_enum_is_refused_by_the_database():
    HarvestLog(content="x", level="TRACE").add()

    with pytest.raises(sa.exc.DataError):
        model.Session.commit()
    model.Session.rollback()


def test_legacy_table_aliases():
    assert harvest_model.harvest_object_table is HarvestObject.__table__
    assert harvest_model.harvest_log_table.name == "harvest_log"
