"""Object actions: create, show, list, re-import; and harvesters_info_show."""
from __future__ import annotations

import datetime
import hashlib
import json
from typing import Any, Optional

import pytest
import sqlalchemy as sa
from ckan import model
from ckan.plugins import get_plugin, toolkit
from ckan.tests import factories

from ckanext.harvest.model import (
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
    HarvestSource,
)
from ckanext.harvest.tests import factories as harvest_factories
from ckanext.harvest.tests.harvesters import MockHarvester
from tests.support.marks import harvest_site

pytestmark = harvest_site("harvest test_harvester test_harvester2")

NOW = datetime.datetime(2024, 5, 15, 12, 0, 0)
OBJECT_KEYS = {
    "id", "guid", "current", "gathered", "fetch_started", "content",
    "fetch_finished", "import_started", "import_finished", "state",
    "metadata_modified_date", "retry_times", "harvest_job_id", "harvest_source_id",
    "package_id", "report_status", "source", "job", "errors", "extras",
}


# --- helpers ------------------------------------------------------------------


@pytest.fixture
def job() -> HarvestJob:
    return harvest_factories.HarvestJobObj()


def _call(name: str, user: dict[str, Any], context: Optional[dict[str, Any]] = None,
          **data: Any) -> Any:
    """Call an action through CKAN (auth checked) as ``user``."""
    return toolkit.get_action(name)(dict(context or {}, user=user["name"]), data)


def _rows(sql: str, **params: Any) -> list[Any]:
    """Committed rows, read on a connection of their own."""
    with model.meta.engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params))


def _object(job: HarvestJob, guid: str, **fields: Any) -> HarvestObject:
    obj = HarvestObject(job=job, guid=guid, **fields)
    obj.save()
    return obj


def _dataset_name(guid: str) -> str:
    """The name the test harvester gives the dataset of ``guid``."""
    return "harvested-" + guid


def _harvested(job: HarvestJob, guid: str, current: bool = True,
               title: str = "Old title", **fields: Any) -> HarvestObject:
    """A dataset named as the test harvester names it, and its harvest object.

    Re-importing the object sets the dataset title to ``New <guid>``.
    """
    dataset = factories.Dataset(name=_dataset_name(guid), title=title)
    return _object(
        job, guid, current=current, package_id=dataset["id"], state="COMPLETE",
        content=json.dumps({"guid": guid, "title": "New " + guid}), **fields,
    )


def _titles() -> dict[str, str]:
    rows = _rows("select name, title from package where type = 'dataset'")
    return {row.name: row.title for row in rows}


def _object_count() -> int:
    return _rows("select count(*) as n from harvest_object")[0].n


# --- harvest_object_create ----------------------------------------------------


def test_object_create_stores_the_object_and_its_extras(sysadmin, job):
    dataset = factories.Dataset()

    result = _call(
        "harvest_object_create", sysadmin, job_id=job.id, guid="remote-1",
        content="<xml/>", package_id=dataset["id"],
        extras={"original_format": "xml", "remote_id": "42"},
    )

    assert set(result) == OBJECT_KEYS | {"package"}
    assert (result["guid"], result["content"], result["state"]) == (
        "remote-1", "<xml/>", "WAITING"
    )
    assert (result["job"], result["source"]) == (job.id, job.source_id)
    assert result["package"] == dataset["id"]
    assert result["extras"] == {"original_format": "xml", "remote_id": "42"}
    assert result["current"] is False
    row = _rows(
        "select guid, harvest_job_id, harvest_source_id, package_id, state, current"
        " from harvest_object where id = :id", id=result["id"],
    )[0]
    assert tuple(row) == ("remote-1", job.id, job.source_id, dataset["id"],
                          "WAITING", False)
    extras = _rows(
        "select key, value from harvest_object_extra where harvest_object_id = :id",
        id=result["id"],
    )
    assert sorted(tuple(extra) for extra in extras) == [
        ("original_format", "xml"), ("remote_id", "42")
    ]


def test_object_create_ignores_the_state(sysadmin, job):
    result = _call("harvest_object_create", sysadmin, job_id=job.id, guid="g",
                   state="COMPLETE")

    assert result["state"] == "WAITING"
    states = _rows("select state from harvest_object where id = :id", id=result["id"])
    assert [row.state for row in states] == ["WAITING"]


def test_object_create_without_job_id_raises_validation_error(sysadmin, job):
    with pytest.raises(toolkit.ValidationError) as raised:
        _call("harvest_object_create", sysadmin, guid="g")

    assert list(raised.value.error_dict) == ["job_id"]
    assert _object_count() == 0


def test_object_create_with_an_unknown_job_raises_validation_error(sysadmin, job):
    with pytest.raises(toolkit.ValidationError) as raised:
        _call("harvest_object_create", sysadmin, job_id="no-such-job", guid="g")

    assert raised.value.error_dict == {
        "job_id": ["Harvest Job with id 'no-such-job' does not exist."]
    }
    assert _object_count() == 0


@pytest.mark.parametrize(
    "extras, message",
    [
        (["a", "b"], "extras must be a dict"),
        ("a=b", "extras must be a dict"),
        ({"count": 1}, "extras must be a dict of strings"),
        ({"ok": "yes", "nested": {"a": "b"}}, "extras must be a dict of strings"),
    ],
)
def test_object_create_rejects_extras_that_are_not_a_dict_of_strings(
    sysadmin, job, extras, message
):
    with pytest.raises(toolkit.ValidationError) as raised:
        _call("harvest_object_create", sysadmin, job_id=job.id, extras=extras)

    assert raised.value.error_dict == {"extras": [message]}
    assert _object_count() == 0


def test_object_create_with_an_unknown_source_raises_validation_error(sysadmin, job):
    with pytest.raises(toolkit.ValidationError) as raised:
        _call("harvest_object_create", sysadmin, job_id=job.id, source_id="nope")

    assert raised.value.error_dict == {
        "source_id": ["Harvest Source with id 'nope' does not exist."]
    }
    assert _object_count() == 0


# --- harvest_object_show ------------------------------------------------------


def test_object_show_by_id_returns_the_object_with_errors_and_extras(sysadmin, job):
    created = _call("harvest_object_create", sysadmin, job_id=job.id, guid="g",
                    extras={"k": "v"})
    HarvestObjectError.create("broken", HarvestObject.get(created["id"]), "Import",
                              line=7)

    result = _call("harvest_object_show", sysadmin, id=created["id"])

    assert result["id"] == created["id"]
    assert set(result) == OBJECT_KEYS  # no "package": the object has none
    assert result["extras"] == {"k": "v"}
    assert [
        (error["message"], error["stage"], error["line"]) for error in result["errors"]
    ] == [("broken", "Import", 7)]
    assert set(result["errors"][0]) == {
        "id", "harvest_object_id", "message", "stage", "line", "created"
    }


def test_object_show_by_guid_with_attr(sysadmin, job):
    _object(job, "other-guid")
    wanted = _object(job, "wanted-guid")

    result = _call("harvest_object_show", sysadmin, id="wanted-guid", attr="guid")

    assert (result["id"], result["guid"]) == (wanted.id, "wanted-guid")


@pytest.mark.parametrize("reference", ["id", "name"])
def test_object_show_by_dataset_returns_its_latest_current_object(
    sysadmin, job, reference
):
    dataset = factories.Dataset()
    hour = datetime.timedelta(hours=1)
    _object(job, "g", package_id=dataset["id"], current=True,
            import_finished=NOW - 2 * hour)
    latest_current = _object(job, "g", package_id=dataset["id"], current=True,
                             import_finished=NOW - hour)
    _object(job, "g", package_id=dataset["id"], current=False, import_finished=NOW)

    result = _call("harvest_object_show", sysadmin, dataset_id=dataset[reference])

    assert result["id"] == latest_current.id
    assert result["package"] == dataset["id"]


def test_object_show_without_id_or_dataset_raises_validation_error(sysadmin):
    with pytest.raises(toolkit.ValidationError) as raised:
        _call("harvest_object_show", sysadmin)

    assert raised.value.error_dict == {
        "message": 'Please provide either an "id" or a "dataset_id" parameter'
    }


@pytest.mark.parametrize(
    "data, message",
    [
        ({"id": "no-such-object"}, "Harvest object not found"),
        ({"id": "no-such-guid", "attr": "guid"}, "Harvest object not found"),
        ({"dataset_id": "no-such-dataset"}, "Dataset not found"),
    ],
)
def test_object_show_of_something_missing_raises_not_found(
    sysadmin, job, data, message
):
    _object(job, "existing")

    with pytest.raises(toolkit.ObjectNotFound) as raised:
        _call("harvest_object_show", sysadmin, **data)

    assert str(raised.value) == message


def test_object_show_of_a_dataset_without_current_object_raises_not_found(
    sysadmin, job
):
    dataset = factories.Dataset()
    _object(job, "g", package_id=dataset["id"], current=False)

    with pytest.raises(toolkit.ObjectNotFound) as raised:
        _call("harvest_object_show", sysadmin, dataset_id=dataset["name"])

    assert str(raised.value) == "Harvest object not found"


# --- harvest_object_list ------------------------------------------------------


@pytest.fixture
def listed_objects() -> dict[str, str]:
    first = harvest_factories.HarvestJobObj()
    second = harvest_factories.HarvestJobObj()
    return {
        "first_source": first.source_id,
        "c1": _object(first, "c1", current=True).id,
        "c2": _object(first, "c2", current=True).id,
        "old": _object(first, "old", current=False).id,
        "other": _object(second, "other", current=True).id,
    }


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"source_id": "first_source"}, {"c1", "c2"}),
        ({"source_id": "first_source", "only_current": False}, {"c1", "c2", "old"}),
        ({"source_id": "first_source", "only_current": "false"}, {"c1", "c2", "old"}),
        ({"source_id": "first_source", "only_current": "true"}, {"c1", "c2"}),
        ({}, {"c1", "c2", "other"}),
    ],
)
def test_object_list_returns_ids_of_current_objects_unless_told_otherwise(
    sysadmin, listed_objects, data, expected
):
    if "source_id" in data:
        data = dict(data, source_id=listed_objects["first_source"])

    result = _call("harvest_object_list", sysadmin, **data)

    assert sorted(result) == sorted(listed_objects[name] for name in expected)


# --- harvest_objects_import ---------------------------------------------------


@pytest.fixture
def two_sources() -> dict[str, Any]:
    """Two sources, each with a harvested dataset; one superseded object."""
    first = harvest_factories.HarvestJobObj()
    second = harvest_factories.HarvestJobObj()
    a = _harvested(first, "a")
    return {
        "first": first,
        "second": second,
        "a": a,
        "b": _harvested(first, "b"),
        "c": _harvested(second, "c"),
        "stale": _object(first, "a", current=False, state="COMPLETE",
                         package_id=a.package_id,
                         content=json.dumps({"title": "Stale"})),
    }


def _expected_titles(updated: set[str]) -> dict[str, str]:
    return {
        _dataset_name(guid): ("New " + guid if guid in updated else "Old title")
        for guid in ("a", "b", "c")
    }


def test_objects_import_by_guid_imports_the_current_object_of_that_guid(
    sysadmin, two_sources
):
    count = _call("harvest_objects_import", sysadmin, guid="a")

    assert count == 1
    assert _titles() == _expected_titles({"a"})


def test_objects_import_by_source_imports_its_current_objects(sysadmin, two_sources):
    count = _call("harvest_objects_import", sysadmin,
                  source_id=two_sources["first"].source_id)

    assert count == 2
    assert _titles() == _expected_titles({"a", "b"})


def test_objects_import_of_an_unknown_source_raises_not_found(sysadmin, two_sources):
    with pytest.raises(toolkit.ObjectNotFound) as raised:
        _call("harvest_objects_import", sysadmin, source_id="no-such-source")

    assert str(raised.value) == "Harvest source no-such-source does not exist"
    assert _titles() == _expected_titles(set())


def test_objects_import_of_an_inactive_source_raises(sysadmin, two_sources):
    source = HarvestSource.get(two_sources["first"].source_id)
    source.active = False
    source.save()

    with pytest.raises(Exception, match="^This harvest source is not active$"):
        _call("harvest_objects_import", sysadmin, source_id=source.id)

    assert _titles() == _expected_titles(set())


def test_objects_import_by_object_id_imports_even_a_superseded_object(
    sysadmin, two_sources
):
    stale = two_sources["stale"]

    count = _call("harvest_objects_import", sysadmin, harvest_object_id=stale.id)

    assert count == 1
    assert _titles() == dict(_expected_titles(set()), **{"harvested-a": "Stale"})
    current = _rows("select id from harvest_object where guid = 'a' and current")
    assert [row.id for row in current] == [stale.id]


@pytest.mark.parametrize("reference", ["id", "name"])
def test_objects_import_by_package_imports_its_current_objects(
    sysadmin, two_sources, reference
):
    dataset = model.Package.get(two_sources["b"].package_id)
    value = dataset.id if reference == "id" else dataset.name

    count = _call("harvest_objects_import", sysadmin, package_id=value)

    assert count == 1
    assert _titles() == _expected_titles({"b"})


def test_objects_import_by_package_ignores_a_deleted_package(sysadmin, two_sources):
    package_id = two_sources["b"].package_id
    toolkit.get_action("package_delete")({"ignore_auth": True}, {"id": package_id})

    count = _call("harvest_objects_import", sysadmin, package_id=package_id)

    assert count == 0
    assert _titles() == _expected_titles(set())


def test_objects_import_without_parameters_imports_every_current_object(
    sysadmin, two_sources
):
    count = _call("harvest_objects_import", sysadmin)

    assert count == 3
    assert _titles() == _expected_titles({"a", "b", "c"})


def test_objects_import_skips_objects_whose_dataset_is_gone(sysadmin, two_sources):
    toolkit.get_action("package_delete")(
        {"ignore_auth": True}, {"id": two_sources["c"].package_id}
    )
    _object(two_sources["second"], "no-dataset", current=True,
            content=json.dumps({"title": "Created"}))

    count = _call("harvest_objects_import", sysadmin)

    assert count == 2
    assert _titles() == _expected_titles({"a", "b"})


def test_objects_import_without_dataset_join_includes_objects_without_dataset(
    sysadmin, two_sources
):
    _object(two_sources["second"], "no-dataset", current=True,
            content=json.dumps({"title": "Created"}))

    count = _call("harvest_objects_import", sysadmin, context={"join_datasets": False})

    assert count == 4
    assert _titles() == dict(
        _expected_titles({"a", "b", "c"}), **{"harvested-no-dataset": "Created"}
    )


def _ids_with_distinct_segments(count: int) -> list[str]:
    """Object ids whose md5 hex digests start with different digits."""
    chosen: dict[str, str] = {}
    for index in range(100):
        candidate = "segment-object-{:03d}".format(index)
        first = hashlib.md5(candidate.encode("utf-8")).hexdigest()[0]
        chosen.setdefault(first, candidate)
        if len(chosen) == count:
            break
    return list(chosen.values())


def test_objects_import_with_segments_imports_only_matching_objects(sysadmin):
    job = harvest_factories.HarvestJobObj()
    inside, outside_1, outside_2 = _ids_with_distinct_segments(3)
    for object_id, guid in [(inside, "a"), (outside_1, "b"), (outside_2, "c")]:
        _harvested(job, guid, id=object_id)
    segment = hashlib.md5(inside.encode("utf-8")).hexdigest()[0]
    unused = next(digit for digit in "0123456789abcdef" if digit not in {
        hashlib.md5(i.encode("utf-8")).hexdigest()[0] for i in (inside, outside_1,
                                                               outside_2)
    })

    count = _call("harvest_objects_import", sysadmin,
                  context={"segments": segment + unused})

    assert count == 1
    assert _titles() == _expected_titles({"a"})


def test_objects_import_calls_import_stage_with_force_import(
    sysadmin, two_sources, monkeypatch
):
    seen: list[tuple[str, Any]] = []
    harvester = get_plugin("test_harvester")
    monkeypatch.setattr(harvester, "force_import", False, raising=False)

    def _record(harvest_object: HarvestObject) -> bool:
        seen.append((harvest_object.guid, harvester.force_import))
        return True

    monkeypatch.setattr(harvester, "import_stage", _record)

    count = _call("harvest_objects_import", sysadmin, guid="c")

    assert count == 1
    assert seen == [("c", True)]
    assert _titles() == _expected_titles(set())  # the recording stage changes nothing


# --- harvesters_info_show -----------------------------------------------------


def test_harvesters_info_show_describes_every_harvester(sysadmin):
    result = _call("harvesters_info_show", sysadmin)

    assert sorted(result, key=lambda info: info["name"]) == [
        {"name": "test", "title": "Test", "description": "Harvester for tests",
         "show_config": False},
        {"name": "test2", "title": "Test 2",
         "description": "Second harvester for tests",
         "form_config_interface": "Text", "show_config": True},
    ]


@pytest.mark.parametrize(
    "interface, show_config", [(None, False), ("Text", True), ("Textarea", False)]
)
def test_harvesters_info_show_adds_show_config_without_mutating_info(
    sysadmin, monkeypatch, interface, show_config
):
    info = {"name": "test", "title": "Test", "description": "Shared dict"}
    if interface:
        info["form_config_interface"] = interface
    original = dict(info)
    monkeypatch.setattr(MockHarvester, "info", lambda self: info)

    result = _call("harvesters_info_show", sysadmin)

    assert dict(original, show_config=show_config) in result
    assert info == original  # Q66: the harvester's own dict is left alone
