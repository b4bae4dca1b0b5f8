"""Detaching a source's datasets (``harvest_source_detach``, lib/detaching.py).

In-process harvests with the test harvester (type ``test``) and HarvesterBase's own
``_create_or_update_package``; the two-CKAN end-to-end test, with real consumers, is
tests/harvesters/test_two_ckan_detach.py.
"""
from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from ckan import model
from ckan.plugins import toolkit
from ckan.tests import factories, helpers

from ckanext.harvest.lib import detaching, harvesters
from ckanext.harvest.model import (
    HarvestObject,
    HarvestObjectExtra,
    HarvestSource,
    JobStatus,
)
from ckanext.harvest.tests import factories as harvest_factories
from ckanext.harvest.tests.lib import run_harvest_job
from tests.harvesters.test_base import BaseTestHarvester as _Harvester
from tests.support.marks import harvest_site

pytestmark = harvest_site("harvest test_harvester")

HARVEST_FIELDS = ("harvest_object_id", "harvest_source_id", "harvest_source_title")


# --- helpers -----------------------------------------------------------------------


def _source(org_id: str, *guids: str, **fields: Any) -> dict[str, Any]:
    config = json.dumps({"datasets": [{"guid": g, "title": g.title()} for g in guids]})
    return harvest_factories.HarvestSource(owner_org=org_id, config=config, **fields)


def _harvest(source: dict[str, Any], config: Any = None) -> str:
    source_obj = HarvestSource.get(source["id"])
    if config is not None:
        source_obj.config = json.dumps(config)
        source_obj.save()
    job = harvest_factories.HarvestJobObj(source=source_obj)
    run_harvest_job(job, harvesters.find_harvester("test"))
    return job.id


def _extras(dataset: dict[str, Any]) -> dict[str, str]:
    return {extra["key"]: extra["value"] for extra in dataset.get("extras", [])}


def _show(name: str) -> dict[str, Any]:
    model.Session.remove()
    return toolkit.get_action("package_show")({"ignore_auth": True}, {"id": name})


def _indexed(source_id: str) -> set[str]:
    """Names of the datasets the index lists under the source (its page's query)."""
    result = helpers.call_action("package_search", include_private=True, rows=100,
                                 fq='+harvest_source_id:"{}"'.format(source_id))
    return {dataset["name"] for dataset in result["results"]}


def _current_objects(package_id: str) -> int:
    model.Session.remove()
    return model.Session.query(HarvestObject).filter(
        HarvestObject.package_id == package_id, HarvestObject.current.is_(True)).count()


def _detach(source_id: str, **context: Any) -> Any:
    return helpers.call_action("harvest_source_detach", context=context, id=source_id)


@pytest.fixture
def org() -> dict[str, Any]:
    return factories.Organization()


# --- what a detach does ---------------------------------------------------------------


def test_detach_cuts_the_link_and_keeps_the_datasets(org):
    source = _source(org["id"], "oak", "elm")
    _harvest(source)
    oak = _show("harvested-oak")
    assert _extras(oak)["harvest_source_id"] == source["id"]
    assert _indexed(source["id"]) == {"harvested-oak", "harvested-elm"}
    local = factories.Dataset(owner_org=org["id"], name="local-dataset")

    result = _detach(source["name"])

    assert result == {"id": source["id"], "detached": 2}
    after = _show("harvested-oak")
    for field in HARVEST_FIELDS:
        assert field not in after and field not in _extras(after)
    unchanged = ("id", "name", "title", "notes", "owner_org", "metadata_modified",
                 "resources", "state", "private")
    assert {k: after[k] for k in unchanged} == {k: oak[k] for k in unchanged}
    assert _current_objects(oak["id"]) == 0
    assert _indexed(source["id"]) == set()
    # Still found by a search, as an ordinary dataset.
    found = helpers.call_action("package_search", q="name:harvested-oak")
    assert [d["id"] for d in found["results"]] == [oak["id"]]
    assert detaching.detached_from(oak["id"]) == source["id"]
    assert detaching.detached_from(local["id"]) is None
    status = helpers.call_action("harvest_source_show_status", id=source["id"])
    assert status["total_datasets"] == 0


def test_the_source_is_indexed_again_with_its_new_count(org):
    source = _source(org["id"], "oak", "elm")
    _harvest(source)
    helpers.call_action("harvest_source_reindex", id=source["id"])
    assert _indexed_count_of_source(source["id"]) == 2

    _detach(source["id"])

    assert _indexed_count_of_source(source["id"]) == 0


def _indexed_count_of_source(source_id: str) -> int:
    """``total_datasets`` of the source's status, as its index entry has it."""
    result = helpers.call_action("package_search", fq="+dataset_type:harvest",
                                 q='id:"{}"'.format(source_id))
    (found,) = result["results"]
    status = found["status"]
    return int((json.loads(status) if isinstance(status, str) else status)["total_datasets"])


def test_stored_harvest_extras_are_removed_and_others_kept(org):
    source = _source(org["id"], "oak")
    _harvest(source)
    package = model.Package.get("harvested-oak")
    package.extras = {"harvest_url": "http://remote.example.org/dataset/oak",
                      "harvest_source_id": source["id"], "licence_note": "kept"}
    model.Session.commit()

    _detach(source["id"])

    model.Session.remove()
    assert dict(model.Package.get("harvested-oak").extras) == {"licence_note": "kept"}
    shown = _show("harvested-oak")
    assert _extras(shown) == {"licence_note": "kept"}


def test_marker_survives_clear_history_and_deletion_of_the_source(org):
    source = _source(org["id"], "oak", "elm")
    _harvest(source)
    oak_id = _show("harvested-oak")["id"]
    _detach(source["id"])

    helpers.call_action("harvest_source_job_history_clear", id=source["id"])
    helpers.call_action("harvest_source_clear", id=source["id"])
    helpers.call_action("harvest_source_delete", context={"clear_source": True},
                        id=source["id"])

    model.Session.remove()
    assert model.Package.get(oak_id).state == "active"
    assert model.Package.get("harvested-elm").state == "active"
    assert detaching.detached_from(oak_id) == source["id"]
    marker = model.Session.query(HarvestObject).filter(
        HarvestObject.package_id == oak_id).one()
    assert (marker.harvest_job_id, marker.harvest_source_id, marker.current) == (
        None, None, False)
    assert [(e.key, e.value) for e in model.Session.query(HarvestObjectExtra).filter(
        HarvestObjectExtra.harvest_object_id == marker.id)] == [
        ("detached_from_source", source["id"])]


def test_purging_a_detached_dataset_drops_its_marker(org):
    source = _source(org["id"], "oak")
    _harvest(source)
    oak_id = _show("harvested-oak")["id"]
    _detach(source["id"])

    helpers.call_action("dataset_purge", id=oak_id)

    model.Session.remove()
    assert model.Session.query(HarvestObject).filter(
        HarvestObject.package_id == oak_id).count() == 0
    assert model.Package.get(oak_id) is None


# --- later jobs leave detached datasets alone -----------------------------------------


def test_reharvest_of_the_source_leaves_detached_datasets_untouched(org):
    source = _source(org["id"], "oak")
    _harvest(source)
    before = _show("harvested-oak")
    _detach(source["id"])

    job_id = _harvest(source, {"datasets": [{"guid": "oak", "title": "Oak (revised)"},
                                            {"guid": "ash", "title": "Ash"}]})

    model.Session.remove()
    statuses = dict(model.Session.query(HarvestObject.guid, HarvestObject.report_status)
                    .filter(HarvestObject.harvest_job_id == job_id))
    assert statuses == {"oak": "not modified", "ash": "added"}
    after = _show("harvested-oak")
    assert (after["title"], after["metadata_modified"]) == (
        before["title"], before["metadata_modified"])
    assert _current_objects(before["id"]) == 0
    assert _indexed(source["id"]) == {"harvested-ash"}


def test_harvester_base_skips_a_detached_dataset_reported_not_modified(org):
    source = _source(org["id"], "oak")
    _harvest(source)
    before = _show("harvested-oak")
    _detach(source["id"])
    job = harvest_factories.HarvestJobObj(source=HarvestSource.get(source["id"]))
    obj = harvest_factories.HarvestObjectObj(job=job, guid="oak")
    remote = dict(before, title="Changed remotely",
                  metadata_modified="2999-01-01T00:00:00")

    result = _Harvester()._create_or_update_package(remote, obj, "package_show")

    assert result == "unchanged"
    after = _show("harvested-oak")
    assert (after["title"], after["metadata_modified"]) == (
        before["title"], before["metadata_modified"])
    assert _current_objects(before["id"]) == 0
    model.Session.remove()
    assert HarvestObject.get(obj.id).package_id is None


def test_harvester_base_still_updates_attached_datasets(org):
    # The control of the test above: the same call on a dataset not detached writes.
    source = _source(org["id"], "oak")
    _harvest(source)
    before = _show("harvested-oak")
    job = harvest_factories.HarvestJobObj(source=HarvestSource.get(source["id"]))
    obj = harvest_factories.HarvestObjectObj(job=job, guid="oak")
    remote = dict(before, title="Changed remotely",
                  metadata_modified="2999-01-01T00:00:00")

    assert _Harvester()._create_or_update_package(remote, obj, "package_show") is True

    assert _show("harvested-oak")["title"] == "Changed remotely"


# --- what is detached, and when ------------------------------------------------------


def test_datasets_now_owned_by_another_source_are_not_detached(org):
    first = _source(org["id"], "oak", "elm")
    _harvest(first)
    second = _source(org["id"], "elm")
    _harvest(second)  # takes over harvested-elm (the test harvester matches by guid)
    assert _extras(_show("harvested-elm"))["harvest_source_id"] == second["id"]

    result = _detach(first["id"])

    assert result["detached"] == 1
    assert _extras(_show("harvested-elm"))["harvest_source_id"] == second["id"]
    assert detaching.detached_from(_show("harvested-oak")["id"]) == first["id"]


def test_detach_twice_detaches_nothing_more(org):
    source = _source(org["id"], "oak")
    _harvest(source)
    _detach(source["id"])

    assert _detach(source["id"]) == {"id": source["id"], "detached": 0}
    model.Session.remove()
    markers = model.Session.query(HarvestObjectExtra).filter(
        HarvestObjectExtra.key == "detached_from_source").count()
    assert markers == 1


def test_a_running_job_is_refused_and_nothing_changes(org):
    source = _source(org["id"], "oak")
    _harvest(source)
    running = harvest_factories.HarvestJobObj(source=HarvestSource.get(source["id"]))
    running.status = JobStatus.RUNNING.value
    running.save()

    with pytest.raises(toolkit.ValidationError) as raised:
        _detach(source["id"])

    assert "running job" in str(raised.value.error_dict["id"][0])
    assert _current_objects(_show("harvested-oak")["id"]) == 1


@pytest.mark.parametrize("data", ({}, {"id": ""}))
def test_missing_id_is_a_validation_error(data):
    with pytest.raises(toolkit.ValidationError):
        helpers.call_action("harvest_source_detach", **data)


def test_unknown_source_is_not_found(org):
    dataset = factories.Dataset(owner_org=org["id"])
    for reference in ("no-such-source", dataset["id"]):
        with pytest.raises(toolkit.ObjectNotFound):
            _detach(reference)


def test_an_organisation_editor_may_detach_an_outsider_may_not(org):
    editor, outsider = factories.User(), factories.User()
    helpers.call_action("organization_member_create", id=org["id"],
                        username=editor["name"], role="editor")
    source = _source(org["id"], "oak")
    _harvest(source)

    with pytest.raises(toolkit.NotAuthorized):
        _detach(source["id"], user=outsider["name"], ignore_auth=False)
    assert _current_objects(_show("harvested-oak")["id"]) == 1

    assert _detach(source["id"], user=editor["name"], ignore_auth=False)["detached"] == 1


def test_markers_are_written_with_the_guid(org):
    source = _source(org["id"], "oak")
    _harvest(source)
    oak_id = _show("harvested-oak")["id"]

    _detach(source["id"])

    with model.meta.engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT guid, state, harvest_job_id FROM harvest_object "
            "WHERE package_id = :p"), {"p": oak_id}).all()
    assert [tuple(row) for row in rows] == [("oak", "COMPLETE", None)]
