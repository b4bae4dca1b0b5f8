"""The ``harvest`` plugin's CKAN hooks: search, index, show, facets, dataset form."""
from __future__ import annotations

import datetime
import json
import logging
from collections import OrderedDict
from typing import Any

import pytest
import sqlalchemy as sa
from ckan import model
from ckan import plugins as p
from ckan.lib import search
from ckan.plugins import toolkit
from ckan.tests import factories, helpers

from ckanext.harvest.logic import schema as harvest_schema
from ckanext.harvest.model import HarvestJob, HarvestObject, HarvestSource
from ckanext.harvest.plugin import Harvest

pytestmark = [
    pytest.mark.ckan_config("ckan.plugins", "harvest test_harvester test_harvester2"),
    pytest.mark.usefixtures("with_plugins"),
]

with_db = pytest.mark.usefixtures("clean_db", "clean_index")

HARVEST_FACETS = OrderedDict([("frequency", "Frequency"), ("source_type", "Type")])


@pytest.fixture
def plugin() -> Harvest:
    return p.get_plugin("harvest")


def _source(**overrides: Any) -> dict[str, Any]:
    data = {
        "url": "http://example.com/catalog", "name": "my-source",
        "title": "My source", "source_type": "test",
    }
    data.update(overrides)
    return helpers.call_action("harvest_source_create", **data)


def _job(source_id: str) -> HarvestJob:
    job = HarvestJob(source_id=source_id, status="Finished")
    job.save()
    return job


def _object(job: HarvestJob, package_id: str, current: bool = True,
            finished: Any = None) -> HarvestObject:
    obj = HarvestObject(
        guid="guid", job=job, package_id=package_id, current=current,
        state="COMPLETE", import_finished=finished or datetime.datetime.utcnow(),
    )
    obj.save()
    return obj


def _extras(dataset: dict[str, Any]) -> dict[str, str]:
    return {extra["key"]: extra["value"] for extra in dataset.get("extras", [])}


def _sorted(extras: list[dict[str, str]]) -> list[dict[str, str]]:
    return sorted(extras, key=lambda extra: extra["key"])


def _search(**params: Any) -> list[str]:
    result = helpers.call_action("package_search", **params)
    return [dataset["id"] for dataset in result["results"]]


# Plugin wiring --------------------------------------------------------------


class TestPlugin:
    def test_is_the_non_fallback_dataset_form_of_type_harvest(self, plugin):
        assert isinstance(plugin, Harvest)
        assert plugin.startup is False
        assert Harvest.startup is False
        assert plugin.is_fallback() is False
        assert plugin.package_types() == ["harvest"]

    def test_names_its_templates(self, plugin):
        assert plugin.package_form() == "source/new_source_form.html"
        assert plugin.search_template() == "source/search.html"
        assert plugin.read_template() == "source/read.html"
        assert plugin.new_template() == "source/new.html"
        assert plugin.edit_template() == "source/edit.html"

    def test_template_variables_name_the_dataset_type(self, plugin, test_request_context):
        with test_request_context():
            plugin.setup_template_variables({}, {})

            assert toolkit.c.dataset_type == "harvest"

    def test_schemas_are_the_harvest_source_schemas(self, plugin):
        create = plugin.create_package_schema()

        assert "id" not in create
        assert set(create) == set(harvest_schema.harvest_source_create_package_schema())
        assert set(plugin.update_package_schema()) == set(create) | {"id"}
        assert set(plugin.show_package_schema()) == set(
            harvest_schema.harvest_source_show_package_schema()
        )

    def test_create_schema_accepts_an_id_during_startup(self, plugin, monkeypatch):
        monkeypatch.setattr(plugin, "startup", True)

        schema = plugin.create_package_schema()

        assert schema["id"] == [toolkit.get_validator("unicode_safe")]

    def test_each_test_harvester_plugin_registers_its_own_type(self):
        names = [info["name"] for info in helpers.call_action("harvesters_info_show")]

        assert p.get_plugin("test_harvester") is not p.get_plugin("test_harvester2")
        assert names == ["test", "test2"]


class TestFacets:
    @pytest.mark.parametrize("method,args", [
        ("dataset_facets", ("harvest",)),
        ("organization_facets", ("organization", "harvest")),
    ])
    def test_harvest_search_facets_replace_all_others(self, plugin, method, args):
        facets = OrderedDict([("tags", "Tags"), ("groups", "Groups")])

        result = getattr(plugin, method)(facets, *args)

        assert result == HARVEST_FACETS
        assert list(result.items()) == list(HARVEST_FACETS.items())
        assert facets == OrderedDict([("tags", "Tags"), ("groups", "Groups")])

    @pytest.mark.parametrize("method,args", [
        ("dataset_facets", ("dataset",)),
        ("organization_facets", ("organization", None)),
    ])
    def test_other_searches_keep_their_facets(self, plugin, method, args):
        facets = OrderedDict([("tags", "Tags")])

        result = getattr(plugin, method)(facets, *args)

        assert result is facets
        assert result == OrderedDict([("tags", "Tags")])


# before_dataset_search --------------------------------------------------------


class TestSearchHook:
    @pytest.mark.parametrize("params,fq", [
        ({}, " -dataset_type:harvest"),
        ({"fq": "tags:trees"}, "tags:trees -dataset_type:harvest"),
        ({"fq": "+dataset_type:harvest"}, "+dataset_type:harvest"),
        ({"fq": "dataset_type:harvest +organization:x"},
         "dataset_type:harvest +organization:x"),
    ])
    def test_adds_the_exclusion_unless_harvest_sources_are_asked_for(
        self, plugin, params, fq
    ):
        params = dict(params, q="*:*")

        result = plugin.before_dataset_search(params)

        assert result["fq"] == fq
        assert result["q"] == "*:*"

    def test_the_legacy_name_delegates(self, plugin):
        result = plugin.before_search({"fq": "tags:trees"})

        assert result["fq"] == "tags:trees -dataset_type:harvest"

    @with_db
    def test_ordinary_searches_hide_harvest_sources(self):
        source = _source()
        dataset = factories.Dataset()

        result = helpers.call_action("package_search")

        assert [item["id"] for item in result["results"]] == [dataset["id"]]
        assert result["count"] == 1
        assert _search(q="name:my-source") == []
        assert model.Package.get(source["id"]).state == "active"

    @with_db
    @pytest.mark.parametrize("fq", ["dataset_type:harvest", "+dataset_type:harvest"])
    def test_a_search_for_the_harvest_type_finds_the_sources(self, fq):
        source = _source()
        factories.Dataset()

        result = _search(fq=fq)

        assert result == [source["id"]]


# before_dataset_index -----------------------------------------------------------


@with_db
class TestIndexHook:
    def test_package_show_of_a_harvested_dataset_shows_the_harvest_extras(self):
        source = _source()
        dataset = factories.Dataset(extras=[{"key": "own", "value": "kept"}])
        obj = _object(_job(source["id"]), dataset["id"])
        search.rebuild(dataset["id"])

        result = helpers.call_action("package_show", id=dataset["id"])

        assert _extras(result) == {
            "own": "kept",
            "harvest_object_id": obj.id,
            "harvest_source_id": source["id"],
            "harvest_source_title": "My source",
        }
        model.Session.expire_all()
        assert model.Package.get(dataset["id"]).extras == {"own": "kept"}

    def test_a_search_on_the_source_id_finds_its_datasets(self):
        source = _source()
        other = _source(name="other", url="http://example.org/other")
        dataset = factories.Dataset()
        _object(_job(source["id"]), dataset["id"])
        factories.Dataset()
        search.rebuild(dataset["id"])

        found = _search(fq='harvest_source_id:"{}"'.format(source["id"]))

        assert found == [dataset["id"]]
        assert _search(fq='harvest_source_id:"{}"'.format(other["id"])) == []

    def test_the_current_object_imported_last_provides_the_extras(self):
        source = _source()
        dataset = factories.Dataset()
        job = _job(source["id"])
        now = datetime.datetime.utcnow()
        _object(job, dataset["id"], finished=now - datetime.timedelta(days=2))
        latest = _object(job, dataset["id"], finished=now - datetime.timedelta(days=1))
        _object(job, dataset["id"], current=False, finished=now)
        search.rebuild(dataset["id"])

        result = helpers.call_action("package_show", id=dataset["id"])

        assert _extras(result)["harvest_object_id"] == latest.id

    def test_a_dataset_without_current_object_gets_no_harvest_extras(self):
        source = _source()
        dataset = factories.Dataset()
        _object(_job(source["id"]), dataset["id"], current=False)
        search.rebuild(dataset["id"])

        result = helpers.call_action("package_show", id=dataset["id"])

        assert _extras(result) == {}
        assert _search(fq='harvest_source_id:"{}"'.format(source["id"])) == []

    def test_existing_keys_are_overwritten_and_top_level_fields_only_added(
        self, plugin
    ):
        source = _source()
        dataset = factories.Dataset()
        obj = _object(_job(source["id"]), dataset["id"])
        pkg_dict = {
            "id": dataset["id"],
            "harvest_source_title": "already indexed",
            "data_dict": json.dumps({
                "id": dataset["id"],
                "extras": [{"key": "harvest_object_id", "value": "old"},
                           {"key": "other", "value": "x"}],
            }),
            "validated_data_dict": json.dumps({
                "id": dataset["id"], "harvest_source_id": "old",
            }),
        }

        result = plugin.before_dataset_index(pkg_dict)

        data_dict = json.loads(result["data_dict"])
        assert set(data_dict) == {"id", "extras"}
        assert _sorted(data_dict["extras"]) == [
            {"key": "harvest_object_id", "value": obj.id},
            {"key": "harvest_source_id", "value": source["id"]},
            {"key": "harvest_source_title", "value": "My source"},
            {"key": "other", "value": "x"},
        ]
        validated = json.loads(result["validated_data_dict"])
        assert set(validated) == {"id", "harvest_source_id", "extras"}
        assert validated["harvest_source_id"] == source["id"]
        assert _sorted(validated["extras"]) == [
            {"key": "harvest_object_id", "value": obj.id},
            {"key": "harvest_source_title", "value": "My source"},
        ]
        assert result["harvest_object_id"] == obj.id
        assert result["harvest_source_id"] == source["id"]
        assert result["harvest_source_title"] == "already indexed"

    def test_a_status_dict_is_indexed_as_json(self, plugin):
        status = {"job_count": 1, "last_job": None, "total_datasets": 0}

        result = plugin.before_dataset_index({"id": "not-harvested", "status": status})

        assert result == {"id": "not-harvested", "status": json.dumps(status)}

    def test_a_status_that_cannot_be_serialised_is_dropped(self, plugin):
        result = plugin.before_index({"id": "not-harvested", "status": {"x": object()}})

        assert result == {"id": "not-harvested"}


# after_dataset_show / create / update ----------------------------------------------


@with_db
class TestShowAndWriteHooks:
    @pytest.mark.parametrize("use_cache", [True, False])
    def test_a_source_is_shown_with_its_status(self, use_cache):
        source = _source()
        _job(source["id"])

        result = helpers.call_action(
            "package_show", context={"use_cache": use_cache}, id=source["id"]
        )

        assert set(result["status"]) == {"job_count", "last_job", "total_datasets"}
        assert result["status"]["job_count"] == 1
        assert result["status"]["total_datasets"] == 0

    def test_an_ordinary_dataset_gets_no_status(self):
        dataset = factories.Dataset()

        result = helpers.call_action("package_show", id=dataset["id"])

        assert "status" not in result

    def test_a_source_dataset_without_its_row_is_shown_without_status(self, caplog):
        source = _source()
        model.Session.execute(
            sa.text("DELETE FROM harvest_source WHERE id = :id"), {"id": source["id"]}
        )
        model.Session.commit()

        with caplog.at_level(logging.ERROR, logger="ckanext.harvest"):
            result = helpers.call_action(
                "package_show", context={"use_cache": False}, id=source["id"]
            )

        assert "status" not in result
        assert result["id"] == source["id"]
        assert "Harvest source not found for dataset {}".format(source["id"]) in (
            caplog.messages
        )

    def test_updating_a_source_dataset_without_its_row_is_not_found(self):
        source = _source()
        model.Session.execute(
            sa.text("DELETE FROM harvest_source WHERE id = :id"), {"id": source["id"]}
        )
        model.Session.commit()

        with pytest.raises(toolkit.ObjectNotFound) as error:
            helpers.call_action("harvest_source_patch", id=source["id"], title="New")

        assert error.value.message == "Harvest source {} does not exist".format(
            source["id"]
        )
        with model.meta.engine.connect() as connection:  # nothing was committed
            title = connection.execute(
                sa.text("SELECT title FROM package WHERE id = :id"), {"id": source["id"]}
            ).scalar()
        assert title == "My source"

    def test_no_row_is_created_during_startup(self, plugin, monkeypatch):
        monkeypatch.setattr(plugin, "startup", True)

        result = _source(id="fixed-source-id")

        assert result["id"] == "fixed-source-id"
        assert model.Package.get("fixed-source-id").type == "harvest"
        model.Session.expire_all()
        assert HarvestSource.get("fixed-source-id") is None

    def test_ordinary_datasets_get_no_source_row(self):
        dataset = factories.Dataset(url="http://example.com/data")

        helpers.call_action("package_patch", id=dataset["id"], title="New")
        helpers.call_action("package_delete", id=dataset["id"])

        assert model.Session.query(HarvestSource).count() == 0
