"""Harvest source actions: create, update, patch, delete, show, list, clear, reindex."""
from __future__ import annotations

import datetime
from typing import Any, Optional

import pytest
import sqlalchemy as sa
from ckan import model
from ckan.lib import search
from ckan.plugins import toolkit
from ckan.tests import factories, helpers

from ckanext.harvest.model import (
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
    HarvestObjectExtra,
    HarvestSource,
)
from tests.support.marks import harvest_site

PLUGINS = "harvest test_harvester test_harvester2"
NOW = datetime.datetime.utcnow()

pytestmark = harvest_site(PLUGINS)


# Helpers ------------------------------------------------------------------


def _source_data(**overrides: Any) -> dict[str, Any]:
    data = {
        "url": "http://example.com/catalog",
        "name": "my-source",
        "title": "My source",
        "source_type": "test",
    }
    data.update(overrides)
    return data


def _create(**overrides: Any) -> dict[str, Any]:
    return helpers.call_action("harvest_source_create", **_source_data(**overrides))


def _row(source_id: str) -> Optional[HarvestSource]:
    model.Session.expire_all()
    return HarvestSource.get(source_id)


def _package(package_id: str) -> Optional[model.Package]:
    model.Session.expire_all()
    return model.Package.get(package_id)


def _scalar(sql: str, **params: Any) -> Any:
    return model.Session.execute(sa.text(sql), params).scalar()


def _count_rows(table: str, column: str, value: Any) -> int:
    return _scalar(
        'SELECT count(*) FROM "{}" WHERE "{}" = :value'.format(table, column),
        value=value,
    )


def _job(source_id: str, status: str = "Finished", **fields: Any) -> HarvestJob:
    job = HarvestJob(source_id=source_id, status=status, **fields)
    job.save()
    return job


def _object(job: HarvestJob, guid: str, package_id: Optional[str] = None,
            current: bool = False, **fields: Any) -> HarvestObject:
    obj = HarvestObject(
        guid=guid, job=job, package_id=package_id, current=current, **fields
    )
    obj.save()
    return obj


def _harvested(job: HarvestJob, guid: str, current: bool = True,
               **dataset_fields: Any) -> tuple[dict[str, Any], HarvestObject]:
    """A dataset imported by ``job``'s source (indexed with the harvest extras)."""
    dataset = factories.Dataset(**dataset_fields)
    obj = _object(
        job, guid, dataset["id"], current=current, state="COMPLETE",
        report_status="added", import_finished=datetime.datetime.utcnow(),
    )
    search.rebuild(dataset["id"])
    return dataset, obj


def _job_statuses(source_id: str) -> dict[str, str]:
    model.Session.expire_all()
    return {
        job.id: job.status
        for job in model.Session.query(HarvestJob).filter_by(source_id=source_id)
    }


def _search_ids(**params: Any) -> list[str]:
    sysadmin = factories.Sysadmin()
    result = helpers.call_action(
        "package_search", context={"user": sysadmin["name"], "ignore_auth": False},
        include_private=True, **params
    )
    return [dataset["id"] for dataset in result["results"]]


def _harvest_package_ids() -> set[str]:
    return {
        package_id for (package_id,) in model.Session.execute(
            sa.text("SELECT id FROM package WHERE type = 'harvest'")
        )
    }


def _source_ids() -> set[str]:
    return {
        source_id for (source_id,) in model.Session.execute(
            sa.text("SELECT id FROM harvest_source")
        )
    }


# harvest_source_create ----------------------------------------------------


class TestCreate:
    def test_creates_a_harvest_dataset_and_a_source_row_with_the_same_id(self):
        org = factories.Organization()

        result = _create(
            url="http://example.com/catalog  ", notes="About it", frequency="weekly",
            config='{"a": 1}', owner_org=org["id"],
        )

        package = _package(result["id"])
        assert package.type == "harvest"
        assert package.name == "my-source"
        assert package.title == "My source"
        assert package.notes == "About it"
        assert package.owner_org == org["id"]
        assert package.url == "http://example.com/catalog  "  # Q29: only the row is stripped
        assert package.extras == {
            "source_type": "test", "frequency": "WEEKLY", "config": '{"a": 1}',
        }
        row = _row(result["id"])
        assert row.url == "http://example.com/catalog"
        assert row.type == "test"
        assert row.title == "My source"
        assert row.frequency == "WEEKLY"
        assert row.config == '{"a": 1}'
        assert row.active is True
        assert row.description == ""  # notes are not copied

    def test_returns_the_show_schema_output_without_active(self):
        org = factories.Organization()

        result = _create(notes="About it", frequency="daily", owner_org=org["id"])

        assert result["type"] == "harvest"
        assert result["name"] == "my-source"
        assert result["title"] == "My source"
        assert result["url"] == "http://example.com/catalog"
        assert result["notes"] == "About it"
        assert result["source_type"] == "test"
        assert result["frequency"] == "DAILY"
        assert result["owner_org"] == org["id"]
        assert result["organization"]["id"] == org["id"]
        assert result["private"] is False
        assert result["state"] == "active"
        for key in ("id", "metadata_created", "metadata_modified", "creator_user_id"):
            assert key in result
        for key in ("resources", "tags", "groups"):
            assert result[key] == []
        for key in ("active", "author", "maintainer", "license_id", "version",
                    "num_resources", "num_tags"):
            assert key not in result
        assert _row(result["id"]).active is True

    def test_returns_the_status_of_the_new_source(self):
        result = _create()

        assert result["status"] == {
            "job_count": 0, "last_job": None, "total_datasets": 0,
        }
        assert _row(result["id"]) is not None

    def test_copies_the_config_keys_to_the_top_level_of_the_result(self):
        result = _create(config='{"a": 1, "b": ["x"]}')

        assert result["config"] == '{"a": 1, "b": ["x"]}'
        assert result["a"] == 1
        assert result["b"] == ["x"]
        assert _row(result["id"]).config == '{"a": 1, "b": ["x"]}'

    @pytest.mark.parametrize("missing", ["url", "name", "source_type"])
    def test_without_a_required_field_is_refused(self, missing):
        data = _source_data()
        del data[missing]

        with pytest.raises(toolkit.ValidationError) as error:
            helpers.call_action("harvest_source_create", **data)

        assert error.value.error_dict == {missing: ["Missing value"]}
        assert _harvest_package_ids() == set()
        assert _source_ids() == set()

    def test_unknown_source_type_is_refused_with_the_registered_types(self):
        with pytest.raises(toolkit.ValidationError) as error:
            _create(source_type="nope")

        assert error.value.error_dict == {
            "source_type": [
                "Unknown harvester type: nope. Registered types: ['test', 'test2']"
            ]
        }
        assert _source_ids() == set()

    def test_unknown_frequency_is_refused_quoting_the_submitted_value(self):
        with pytest.raises(toolkit.ValidationError) as error:
            _create(frequency="hourly")

        assert error.value.error_dict == {
            "frequency": ["Frequency hourly not recognised"]
        }
        assert _source_ids() == set()

    @pytest.mark.parametrize("submitted,stored", [
        ("Biweekly", "BIWEEKLY"), ("", "MANUAL"),
    ])
    def test_frequency_is_upper_cased_and_empty_means_manual(self, submitted, stored):
        result = _create(frequency=submitted)

        assert result["frequency"] == stored
        assert _package(result["id"]).extras["frequency"] == stored
        assert _row(result["id"]).frequency == stored

    def test_without_frequency_the_row_is_manual(self):
        result = _create()

        assert "frequency" not in _package(result["id"]).extras
        assert _row(result["id"]).frequency == "MANUAL"

    @pytest.mark.parametrize("config,reason", [
        ("[1, 2]", "the configuration must be a JSON object"),
        ("not json", "Expecting value: line 1 column 1 (char 0)"),
    ])
    def test_config_the_harvester_rejects_is_refused(self, config, reason):
        with pytest.raises(toolkit.ValidationError) as error:
            _create(config=config)

        assert error.value.error_dict == {
            "config": ["Error parsing the configuration options: " + reason]
        }
        assert _source_ids() == set()


class TestCreateDuplicateUrl:
    @pytest.mark.parametrize("existing,new,normalised", [
        ("http://example.com/catalog", "http://example.com:80/catalog",
         "http://example.com/catalog"),
        ("https://example.com/catalog", "https://example.com:443/catalog/",
         "https://example.com/catalog"),
        ("http://example.com/catalog/", "http://example.com/catalog",
         "http://example.com/catalog"),
        ("http://example.com/catalog", "http://example.com/catalog?page=2#top",
         "http://example.com/catalog"),
        ("http://example.com/catalog", "http://example.com/catalog;v=1",
         "http://example.com/catalog"),
    ])
    def test_same_normalised_url_and_config_is_refused(self, existing, new, normalised):
        first = _create(url=existing, name="first", config="")

        with pytest.raises(toolkit.ValidationError) as error:
            _create(url=new, name="second", config="")

        assert error.value.error_dict == {
            "url": [
                "There already is a Harvest Source for this URL (& config): "
                "url={} config=".format(normalised)
            ]
        }
        assert _source_ids() == {first["id"]}

    def test_same_url_and_same_json_config_is_refused(self):
        first = _create(name="first", config='{"a": 1}')

        with pytest.raises(toolkit.ValidationError) as error:
            _create(name="second", config='{"a": 1}')

        assert error.value.error_dict == {
            "url": [
                "There already is a Harvest Source for this URL (& config): "
                'url=http://example.com/catalog config={"a": 1}'
            ]
        }
        assert _source_ids() == {first["id"]}

    def test_same_url_with_another_config_is_allowed(self):
        first = _create(name="first", config='{"a": 1}')

        second = _create(name="second", config='{"a": 2}')

        assert _source_ids() == {first["id"], second["id"]}
        assert _row(second["id"]).config == '{"a": 2}'

    @pytest.mark.parametrize("other", [
        "http://example.com:8080/catalog", "http://example.com/catalog/other",
    ])
    def test_another_port_or_path_is_allowed(self, other):
        first = _create(name="first", config="")

        second = _create(url=other, name="second", config="")

        assert _source_ids() == {first["id"], second["id"]}

    @pytest.mark.parametrize("first_config", [None, ""])
    def test_request_without_config_never_conflicts(self, first_config):
        extra = {} if first_config is None else {"config": first_config}
        first = _create(name="first", **extra)

        second = _create(name="second")

        assert _source_ids() == {first["id"], second["id"]}

    def test_a_deleted_source_still_owns_its_url(self):
        first = _create(name="first", config="")
        helpers.call_action("harvest_source_delete", id=first["id"])

        with pytest.raises(toolkit.ValidationError) as error:
            _create(name="second", config="")

        assert list(error.value.error_dict) == ["url"]
        assert _source_ids() == {first["id"]}

    def test_updating_a_source_does_not_conflict_with_itself(self):
        source = _create(config="")

        result = helpers.call_action(
            "harvest_source_update", **_source_data(id=source["id"], config="",
                                                    title="Renamed")
        )

        assert result["title"] == "Renamed"
        assert _row(source["id"]).title == "Renamed"


# harvest_source_update / harvest_source_patch -----------------------------


class TestUpdate:
    def test_update_replaces_the_dataset_and_the_row_follows(self):
        source = _create(notes="About it", frequency="DAILY", config='{"a": 1}')

        result = helpers.call_action(
            "harvest_source_update", id=source["id"], name="my-source",
            url="http://example.org/other ", title="New title", source_type="test2",
            frequency="weekly", config='{"b": 2}',
        )

        assert result["title"] == "New title"
        assert result["source_type"] == "test2"
        assert result["frequency"] == "WEEKLY"
        assert result["b"] == 2 and "a" not in result
        assert not result["notes"]  # full replacement: not re-sent, so cleared
        package = _package(source["id"])
        assert not package.notes
        assert package.url == "http://example.org/other "
        assert package.extras == {
            "source_type": "test2", "frequency": "WEEKLY", "config": '{"b": 2}',
        }
        row = _row(source["id"])
        assert row.url == "http://example.org/other"
        assert row.title == "New title"
        assert row.type == "test2"
        assert row.frequency == "WEEKLY"
        assert row.config == '{"b": 2}'
        assert row.active is True

    def test_update_without_config_or_frequency_drops_them_from_the_dataset(self):
        source = _create(frequency="DAILY", config='{"a": 1}')

        result = helpers.call_action(
            "harvest_source_update", **_source_data(id=source["id"])
        )

        assert "a" not in result
        assert _package(source["id"]).extras == {"source_type": "test"}
        row = _row(source["id"])  # absent keys are not copied to the row
        assert row.frequency == "DAILY"
        assert row.config == '{"a": 1}'

    def test_update_by_name(self):
        source = _create()

        helpers.call_action(
            "harvest_source_update", **_source_data(id="my-source", title="By name")
        )

        assert _package(source["id"]).title == "By name"
        assert _row(source["id"]).title == "By name"

    def test_patch_changes_only_the_given_fields(self):
        source = _create(notes="About it", frequency="DAILY", config='{"a": 1}')

        result = helpers.call_action(
            "harvest_source_patch", id=source["id"], title="Patched"
        )

        assert result["title"] == "Patched"
        assert result["notes"] == "About it"
        assert result["frequency"] == "DAILY"
        assert result["config"] == '{"a": 1}'
        assert result["url"] == "http://example.com/catalog"
        package = _package(source["id"])
        assert package.notes == "About it"
        assert package.extras == {
            "source_type": "test", "frequency": "DAILY", "config": '{"a": 1}',
        }
        row = _row(source["id"])
        assert row.title == "Patched"
        assert row.url == "http://example.com/catalog"
        assert row.frequency == "DAILY"
        assert row.config == '{"a": 1}'
        assert row.type == "test"

    def test_patch_of_url_and_config_is_copied_to_the_row(self):
        source = _create(config='{"a": 1}')

        helpers.call_action(
            "harvest_source_patch", id=source["id"], url=" http://example.net/x ",
            config='{"c": 3}',
        )

        row = _row(source["id"])
        assert row.url == "http://example.net/x"
        assert row.config == '{"c": 3}'
        assert _package(source["id"]).extras["config"] == '{"c": 3}'

    @pytest.mark.parametrize("state", ["deleted", "inactive"])
    def test_leaving_state_active_aborts_only_new_jobs(self, state):
        source = _create()
        new = _job(source["id"], status="New")
        running = _job(source["id"], status="Running")
        finished = _job(source["id"], status="Finished")

        helpers.call_action("harvest_source_patch", id=source["id"], state=state)

        assert _package(source["id"]).state == state
        assert _row(source["id"]).active is False
        assert _job_statuses(source["id"]) == {
            new.id: "Aborted", running.id: "Running", finished.id: "Finished",
        }

    def test_back_to_active_reactivates_the_row(self):
        source = _create()
        helpers.call_action("harvest_source_patch", id=source["id"], state="inactive")

        helpers.call_action("harvest_source_patch", id=source["id"], state="active")

        assert _row(source["id"]).active is True

    def test_invalid_update_is_refused_and_changes_nothing(self):
        source = _create(frequency="DAILY")

        with pytest.raises(toolkit.ValidationError) as error:
            helpers.call_action(
                "harvest_source_patch", id=source["id"], frequency="hourly",
                title="Not saved",
            )

        assert error.value.error_dict == {
            "frequency": ["Frequency hourly not recognised"]
        }
        assert _package(source["id"]).title == "My source"
        row = _row(source["id"])
        assert row.frequency == "DAILY"
        assert row.title == "My source"

    def test_update_of_an_unknown_source_is_not_found(self):
        with pytest.raises(toolkit.ObjectNotFound):
            helpers.call_action("harvest_source_update", **_source_data(id="nope"))

        assert _source_ids() == set()


# harvest_source_delete ----------------------------------------------------


class TestDelete:
    @pytest.mark.parametrize("key", ["id", "name"])
    def test_deletes_the_dataset_deactivates_the_row_and_aborts_new_jobs(self, key):
        source = _create()
        new = _job(source["id"], status="New")
        running = _job(source["id"], status="Running")
        obj = _object(running, "guid-1")

        result = helpers.call_action("harvest_source_delete", id=source[key])

        assert result is None
        assert _package(source["id"]).state == "deleted"
        assert _row(source["id"]).active is False
        assert _job_statuses(source["id"]) == {new.id: "Aborted", running.id: "Running"}
        assert _count_rows("harvest_object", "id", obj.id) == 1

    def test_with_clear_source_the_harvested_datasets_are_purged(self):
        source = _create()
        job = _job(source["id"])
        dataset, _obj = _harvested(job, "guid-1")

        helpers.call_action(
            "harvest_source_delete", context={"clear_source": True}, id=source["id"]
        )

        assert _count_rows("package", "id", dataset["id"]) == 0
        assert _count_rows("harvest_object", "harvest_source_id", source["id"]) == 0
        assert _count_rows("harvest_job", "source_id", source["id"]) == 0
        assert _package(source["id"]).state == "deleted"
        assert _row(source["id"]).active is False
        assert _search_ids(q="id:{}".format(dataset["id"])) == []

    def test_delete_of_an_unknown_source_is_not_found(self):
        with pytest.raises(toolkit.ObjectNotFound):
            helpers.call_action("harvest_source_delete", id="nope")


# harvest_source_show / harvest_source_show_status -------------------------


class TestShow:
    @pytest.mark.parametrize("key", ["id", "name", "url"])
    def test_finds_a_source_by_id_name_or_url(self, key):
        source = _create(config='{"a": 1}')
        params = {
            "id": {"id": source["id"]}, "name": {"id": "my-source"},
            "url": {"url": "http://example.com/catalog"},
        }[key]

        result = helpers.call_action("harvest_source_show", **params)

        assert result["id"] == source["id"]
        assert result["type"] == "harvest"
        assert result["source_type"] == "test"
        assert result["a"] == 1
        assert result["active"] is True
        assert result["status"] == {
            "job_count": 0, "last_job": None, "total_datasets": 0,
        }

    def test_id_wins_over_url(self):
        first = _create(name="first")
        _create(name="second", url="http://example.org/second")

        result = helpers.call_action(
            "harvest_source_show", id=first["id"], url="http://example.org/second"
        )

        assert result["id"] == first["id"]

    @pytest.mark.parametrize("params", [
        {"id": "nope"}, {"url": "http://example.com/catalog/"},
    ])
    def test_unknown_id_or_url_is_not_found(self, params):
        _create()

        with pytest.raises(toolkit.ObjectNotFound):
            helpers.call_action("harvest_source_show", **params)

    def test_a_deleted_source_is_shown_inactive(self):
        source = _create()
        helpers.call_action("harvest_source_delete", id=source["id"])

        result = helpers.call_action("harvest_source_show", id=source["id"])

        assert result["state"] == "deleted"
        assert result["active"] is False
        assert _row(source["id"]).active is False


class TestShowStatus:
    def test_reports_the_job_count_and_the_most_recently_created_job(self):
        source = _create()
        _job(source["id"], created=NOW - datetime.timedelta(days=2))
        last = _job(source["id"], status="New", created=NOW - datetime.timedelta(days=1))

        result = helpers.call_action("harvest_source_show_status", id=source["id"])

        assert set(result) == {"job_count", "last_job", "total_datasets"}
        assert result["job_count"] == 2
        assert result["last_job"]["id"] == last.id
        assert result["last_job"]["status"] == "New"
        assert result["last_job"]["source_id"] == source["id"]
        assert "stats" in result["last_job"]
        assert result["total_datasets"] == 0

    def test_total_datasets_counts_current_active_public_datasets_only(self):
        org = factories.Organization()
        source = _create(owner_org=org["id"])
        other = _create(name="other", url="http://example.org/other")
        job = _job(source["id"])
        _harvested(job, "counted", owner_org=org["id"])
        _harvested(job, "old-version", current=False, owner_org=org["id"])
        _harvested(job, "private", owner_org=org["id"], private=True)
        deleted, _obj = _harvested(job, "deleted", owner_org=org["id"])
        helpers.call_action("package_delete", id=deleted["id"])
        _harvested(_job(other["id"]), "other-source")

        result = helpers.call_action("harvest_source_show_status", id=source["id"])

        assert result["total_datasets"] == 1
        assert result["job_count"] == 1

    def test_a_source_name_is_not_resolved(self):
        _create()

        with pytest.raises(toolkit.ObjectNotFound) as error:
            helpers.call_action("harvest_source_show_status", id="my-source")

        assert error.value.message == "Harvest source my-source does not exist"


# harvest_source_list ------------------------------------------------------


def _list(context: Optional[dict[str, Any]] = None, **params: Any) -> list[dict[str, Any]]:
    return helpers.call_action("harvest_source_list", context=context, **params)


def _set_row(source_id: str, **values: Any) -> None:
    model.Session.query(HarvestSource).filter_by(id=source_id).update(values)
    model.Session.commit()


class TestList:
    def test_returns_source_rows_with_the_legacy_status(self):
        source = _create(frequency="DAILY", config='{"a": 1}')

        result = _list()

        assert len(result) == 1
        item = result[0]
        assert set(item) == {
            "id", "url", "title", "description", "config", "created", "type",
            "active", "user_id", "publisher_id", "frequency", "next_run",
            "publisher_title", "status",
        }
        assert item["id"] == source["id"]
        assert item["url"] == "http://example.com/catalog"
        assert item["type"] == "test"
        assert item["frequency"] == "DAILY"
        assert item["config"] == '{"a": 1}'
        assert item["active"] is True
        assert item["publisher_title"] == ""
        assert item["next_run"] is None
        assert item["created"] == str(_row(source["id"]).created)
        assert item["status"] == {
            "job_count": 0, "next_harvest": "", "last_harvest_request": "",
            "msg": "No jobs yet",
        }

    def test_status_tells_scheduled_jobs_and_the_last_gather_finished(self):
        source = _create()
        gathered = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456)
        _job(source["id"], created=NOW - datetime.timedelta(days=1),
             gather_finished=gathered)
        _job(source["id"], status="New")

        (item,) = _list()

        assert item["status"] == {
            "job_count": 2, "next_harvest": "Scheduled",
            "last_harvest_request": "2024-05-06 07:08:09.123456",
        }

    def test_status_without_finished_or_new_jobs(self):
        source = _create()
        _job(source["id"], status="Running")

        (item,) = _list()

        assert item["status"] == {
            "job_count": 1, "next_harvest": "Not yet scheduled",
            "last_harvest_request": "Not yet harvested",
        }

    def test_newest_source_comes_first(self):
        ids = [_create(name="s{}".format(n), url="http://s{}.example.com".format(n))["id"]
               for n in range(3)]
        for age, source_id in enumerate(ids):
            _set_row(source_id, created=NOW - datetime.timedelta(days=age))

        result = _list()

        assert [item["id"] for item in result] == ids

    @pytest.mark.ckan_config("ckan.harvest.harvest_source_limit", "2")
    def test_is_limited_by_the_configured_number_of_sources(self):
        ids = [_create(name="s{}".format(n), url="http://s{}.example.com".format(n))["id"]
               for n in range(3)]
        for age, source_id in enumerate(ids):
            _set_row(source_id, created=NOW - datetime.timedelta(days=age))

        result = _list()

        assert [item["id"] for item in result] == ids[:2]

    def test_filters_by_organization_id(self):
        org = factories.Organization()
        other_org = factories.Organization()
        mine = _create(name="mine", owner_org=org["id"])
        _create(name="theirs", url="http://example.org/x", owner_org=other_org["id"])
        _create(name="unowned", url="http://example.org/y")

        result = _list(organization_id=org["id"])

        assert [item["id"] for item in result] == [mine["id"]]

    def test_only_active_skips_deactivated_sources(self):
        sysadmin = factories.Sysadmin()
        active = _create(name="active")
        gone = _create(name="gone", url="http://example.org/gone")
        helpers.call_action("harvest_source_delete", id=gone["id"])

        everything = _list(context={"user": sysadmin["name"]})
        result = _list(context={"user": sysadmin["name"]}, only_active="true")

        assert {item["id"] for item in everything} == {active["id"], gone["id"]}
        assert [item["id"] for item in result] == [active["id"]]

    def test_only_to_run_lists_scheduled_sources_that_are_due(self):
        def source(name, frequency, next_run):
            created = _create(name=name, url="http://{}.example.com".format(name),
                              frequency=frequency)
            _set_row(created["id"], next_run=next_run)
            return created["id"]

        due_never_run = source("never-run", "DAILY", None)
        due_past = source("past", "WEEKLY", NOW - datetime.timedelta(hours=1))
        source("future", "DAILY", NOW + datetime.timedelta(days=1))
        source("manual", "MANUAL", None)
        source("manual-past", "MANUAL", NOW - datetime.timedelta(days=1))

        result = _list(only_to_run=True)

        assert {item["id"] for item in result} == {due_never_run, due_past}

    def test_return_last_job_status_adds_the_last_job(self):
        source = _create()
        _job(source["id"], created=NOW - datetime.timedelta(days=1))
        last = _job(source["id"], status="New")

        (with_status,) = _list(return_last_job_status="true")
        (without,) = _list()

        assert with_status["last_job_status"]["id"] == last.id
        assert with_status["last_job_status"]["status"] == "New"
        assert "last_job_status" not in without

    @pytest.mark.parametrize("viewer,expected", [
        ("anonymous", {"public", "unowned"}),
        ("outsider", {"public", "unowned"}),
        ("member", {"public", "unowned", "private-1"}),
        ("editor", {"public", "unowned", "private-2"}),
        ("sysadmin", {"public", "unowned", "private-1", "private-2", "deleted"}),
    ])
    def test_lists_the_sources_the_caller_may_read(self, viewer, expected):
        users = {
            "outsider": factories.User(), "member": factories.User(),
            "editor": factories.User(), "sysadmin": factories.Sysadmin(),
        }
        org1 = factories.Organization(
            users=[{"name": users["member"]["name"], "capacity": "member"}]
        )
        org2 = factories.Organization(
            users=[{"name": users["editor"]["name"], "capacity": "editor"}]
        )
        ids = {}
        for name, extra in [
            ("public", {"owner_org": org1["id"]}),
            ("unowned", {}),
            ("private-1", {"owner_org": org1["id"], "private": True}),
            ("private-2", {"owner_org": org2["id"], "private": True}),
            ("deleted", {"owner_org": org1["id"]}),
        ]:
            ids[name] = _create(name=name, url="http://{}.example.com".format(name),
                                **extra)["id"]
        helpers.call_action("harvest_source_delete", id=ids["deleted"])
        user = "" if viewer == "anonymous" else users[viewer]["name"]

        result = _list(context={"user": user})

        names = {name for name, source_id in ids.items()
                 if source_id in {item["id"] for item in result}}
        assert names == expected
        assert len(result) == len(expected)


# harvest_source_clear / harvest_source_index_clear ------------------------


@pytest.fixture
def two_harvested_sources() -> dict[str, Any]:
    """Source A (2 datasets, history with errors) and source B (1 dataset),
    plus unrelated datasets, one of them in state ``to_delete``."""
    org = factories.Organization()
    group = factories.Group()
    a = _create(name="source-a", owner_org=org["id"])
    b = _create(name="source-b", url="http://example.org/b", owner_org=org["id"])
    job_a = _job(a["id"])
    HarvestGatherError(message="gather failed", job=job_a).save()
    d1, o1 = _harvested(
        job_a, "d1", owner_org=org["id"], groups=[{"id": group["id"]}],
        tags=[{"name": "trees"}], resources=[{"url": "http://example.com/r.csv"}],
    )
    old = _object(job_a, "d1", d1["id"], current=False)
    HarvestObjectError(message="bad", object=old, stage="Import").save()
    HarvestObjectExtra(key="k", value="v", object=old).save()
    d2, o2 = _harvested(job_a, "d2", owner_org=org["id"])
    job_b = _job(b["id"])
    d3, o3 = _harvested(job_b, "d3", owner_org=org["id"])
    unrelated = factories.Dataset()
    helpers.call_action(
        "package_relationship_create", subject=d1["id"], object=unrelated["id"],
        type="links_to",
    )
    to_delete = factories.Dataset()
    model.Session.execute(
        sa.text("UPDATE package SET state = 'to_delete' WHERE id = :id"),
        {"id": to_delete["id"]},
    )
    model.Session.commit()
    return {
        "a": a["id"], "b": b["id"], "job_a": job_a.id, "job_b": job_b.id,
        "d1": d1["id"], "d2": d2["id"], "d3": d3["id"], "o3": o3.id,
        "resource": d1["resources"][0]["id"], "group": group["id"],
        "unrelated": unrelated["id"], "to_delete": to_delete["id"],
    }


class TestClear:
    def test_hard_deletes_only_this_sources_datasets(self, two_harvested_sources):
        ids = two_harvested_sources

        result = helpers.call_action("harvest_source_clear", id=ids["a"])

        assert result == {"id": ids["a"]}
        assert _count_rows("package", "id", ids["d1"]) == 0
        assert _count_rows("package", "id", ids["d2"]) == 0
        assert _package(ids["d3"]).state == "active"
        assert _package(ids["unrelated"]).state == "active"
        assert _package(ids["to_delete"]).state == "to_delete"
        assert _package(ids["a"]).state == "active"  # the source dataset remains
        assert _row(ids["a"]).active is True

    def test_deletes_resources_tags_memberships_and_relationships(
        self, two_harvested_sources
    ):
        ids = two_harvested_sources

        helpers.call_action("harvest_source_clear", id=ids["a"])

        assert _count_rows("resource", "id", ids["resource"]) == 0
        assert _count_rows("package_tag", "package_id", ids["d1"]) == 0
        assert _count_rows("member", "table_id", ids["d1"]) == 0
        assert _count_rows("package_relationship", "subject_package_id", ids["d1"]) == 0
        assert _count_rows("group", "id", ids["group"]) == 1
        assert _count_rows("package_tag", "package_id", ids["d3"]) == 0  # had none

    def test_deletes_the_harvest_rows_of_this_source_only(self, two_harvested_sources):
        ids = two_harvested_sources

        helpers.call_action("harvest_source_clear", id=ids["a"])

        assert _count_rows("harvest_object", "harvest_source_id", ids["a"]) == 0
        assert _count_rows("harvest_job", "source_id", ids["a"]) == 0
        assert _count_rows("harvest_gather_error", "harvest_job_id", ids["job_a"]) == 0
        assert _scalar("SELECT count(*) FROM harvest_object_error") == 0
        assert _scalar("SELECT count(*) FROM harvest_object_extra") == 0
        assert _count_rows("harvest_job", "id", ids["job_b"]) == 1
        assert _count_rows("harvest_object", "id", ids["o3"]) == 1
        assert _count_rows("harvest_source", "id", ids["a"]) == 1

    def test_updates_the_search_index(self, two_harvested_sources):
        ids = two_harvested_sources

        helpers.call_action("harvest_source_clear", id=ids["a"])

        assert _search_ids(fq='harvest_source_id:"{}"'.format(ids["a"])) == []
        assert _search_ids(fq='harvest_source_id:"{}"'.format(ids["b"])) == [ids["d3"]]
        assert ids["a"] in _search_ids(fq="+dataset_type:harvest")
        shown = helpers.call_action("harvest_source_show", id=ids["a"])
        assert shown["status"]["job_count"] == 0

    @pytest.mark.ckan_config("ckan.auth.allow_dataset_collaborators", "true")
    def test_deletes_a_harvested_dataset_that_has_collaborators(self):
        source = _create()
        dataset, _obj = _harvested(_job(source["id"]), "shared")
        helpers.call_action(
            "package_collaborator_create", id=dataset["id"],
            user_id=factories.User()["id"], capacity="editor",
        )

        helpers.call_action("harvest_source_clear", id=source["id"])

        assert _count_rows("package", "id", dataset["id"]) == 0

    @pytest.mark.parametrize("value", ["source-a", "nope"])
    def test_needs_an_existing_source_id(self, two_harvested_sources, value):
        ids = two_harvested_sources

        with pytest.raises(toolkit.ObjectNotFound) as error:
            helpers.call_action("harvest_source_clear", id=value)

        assert error.value.message == "Harvest source {} does not exist".format(value)
        assert _count_rows("package", "id", ids["d1"]) == 1
        assert _count_rows("harvest_job", "source_id", ids["a"]) == 1


class TestIndexClear:
    def test_removes_this_sources_datasets_from_the_index_only(
        self, two_harvested_sources
    ):
        ids = two_harvested_sources

        result = helpers.call_action("harvest_source_index_clear", id=ids["a"])

        assert result == {"id": ids["a"]}
        assert _search_ids(fq='harvest_source_id:"{}"'.format(ids["a"])) == []
        assert _search_ids(fq='harvest_source_id:"{}"'.format(ids["b"])) == [ids["d3"]]
        assert _package(ids["d1"]).state == "active"  # the database is untouched
        assert _count_rows("harvest_object", "harvest_source_id", ids["a"]) == 3

    def test_unknown_source_is_not_found(self):
        with pytest.raises(toolkit.ObjectNotFound) as error:
            helpers.call_action("harvest_source_index_clear", id="nope")

        assert error.value.message == "Harvest source nope does not exist"


# harvest_source_job_history_clear -----------------------------------------


class TestJobHistoryClear:
    def test_deletes_every_job_object_and_error_but_keeps_the_datasets(
        self, two_harvested_sources
    ):
        ids = two_harvested_sources
        running = _job(ids["a"], status="Running")
        _object(running, "in-progress")

        result = helpers.call_action("harvest_source_job_history_clear", id=ids["a"])

        assert result == {"id": ids["a"]}
        assert _count_rows("harvest_job", "source_id", ids["a"]) == 0
        assert _count_rows("harvest_object", "harvest_source_id", ids["a"]) == 0
        assert _scalar("SELECT count(*) FROM harvest_gather_error") == 0
        assert _scalar("SELECT count(*) FROM harvest_object_error") == 0
        assert _scalar("SELECT count(*) FROM harvest_object_extra") == 0
        assert _package(ids["d1"]).state == "active"
        assert _package(ids["d2"]).state == "active"
        assert _count_rows("harvest_job", "id", ids["job_b"]) == 1
        assert _count_rows("harvest_object", "id", ids["o3"]) == 1
        status = helpers.call_action("harvest_source_show", id=ids["a"])["status"]
        assert status["job_count"] == 0

    def test_keep_current_keeps_running_jobs_and_jobs_with_a_current_object(self):
        source = _create()
        other = _create(name="other", url="http://example.org/other")
        dataset = factories.Dataset()
        with_current = _job(source["id"], created=NOW - datetime.timedelta(days=5))
        current = _object(with_current, "g1", dataset["id"], current=True)
        sibling = _object(with_current, "g2")  # not current, but its job has one
        superseded = _job(source["id"], created=NOW - datetime.timedelta(days=4))
        old = _object(superseded, "g1", dataset["id"])
        HarvestObjectError(message="bad", object=old, stage="Import").save()
        HarvestObjectExtra(key="k", value="v", object=old).save()
        HarvestGatherError(message="gather failed", job=superseded).save()
        gather_failed = _job(source["id"], created=NOW - datetime.timedelta(days=3))
        HarvestGatherError(message="gather failed", job=gather_failed).save()
        aborted_id = _job(source["id"], status="Aborted",
                          created=NOW - datetime.timedelta(days=2)).id
        running = _job(source["id"], status="Running",
                       created=NOW - datetime.timedelta(days=1))
        in_progress = _object(running, "g3")
        other_job = _job(other["id"])
        other_obj = _object(other_job, "g4")

        helpers.call_action(
            "harvest_source_job_history_clear", id=source["id"], keep_current=True
        )

        assert set(_job_statuses(source["id"])) == {with_current.id, running.id}
        remaining = {
            object_id for (object_id,) in model.Session.execute(
                sa.text("SELECT id FROM harvest_object")
            )
        }
        assert remaining == {current.id, sibling.id, in_progress.id, other_obj.id}
        assert _scalar("SELECT count(*) FROM harvest_object_error") == 0
        assert _scalar("SELECT count(*) FROM harvest_object_extra") == 0
        assert _scalar("SELECT count(*) FROM harvest_gather_error") == 0
        assert _count_rows("harvest_job", "id", other_job.id) == 1
        assert _count_rows("harvest_job", "id", aborted_id) == 0
        assert _package(dataset["id"]).state == "active"

    def test_unknown_source_is_not_found(self):
        with pytest.raises(toolkit.ObjectNotFound) as error:
            helpers.call_action("harvest_source_job_history_clear", id="nope")

        assert error.value.message == "Harvest source nope does not exist"


class TestSourcesJobHistoryClear:
    def test_clears_public_and_private_sources(self):
        org = factories.Organization()
        public = _create(name="public", owner_org=org["id"])
        private = _create(name="private", url="http://example.org/p",
                          owner_org=org["id"], private=True)
        _job(public["id"])
        _job(private["id"])
        sysadmin = factories.Sysadmin()

        result = helpers.call_action(
            "harvest_sources_job_history_clear",
            context={"user": sysadmin["name"], "ignore_auth": False},
        )

        assert sorted(item["id"] for item in result) == sorted(
            [public["id"], private["id"]]
        )
        assert _scalar("SELECT count(*) FROM harvest_job") == 0

    def test_keep_current_is_passed_on(self):
        source = _create()
        kept = _job(source["id"], created=NOW - datetime.timedelta(days=1))
        _object(kept, "g1", factories.Dataset()["id"], current=True)
        _job(source["id"])

        helpers.call_action("harvest_sources_job_history_clear", keep_current=True)

        assert set(_job_statuses(source["id"])) == {kept.id}

    def test_needs_a_sysadmin(self):
        org_admin = factories.User()
        org = factories.Organization(
            users=[{"name": org_admin["name"], "capacity": "admin"}]
        )
        source = _create(owner_org=org["id"])
        _job(source["id"])

        with pytest.raises(toolkit.NotAuthorized):
            helpers.call_action(
                "harvest_sources_job_history_clear",
                context={"user": org_admin["name"], "ignore_auth": False},
            )

        assert _count_rows("harvest_job", "source_id", source["id"]) == 1


# harvest_source_reindex / harvest_sources_reindex -------------------------


def _indexed(package_id: str) -> Optional[dict[str, Any]]:
    try:
        return search.show(package_id)
    except search.SearchError:
        return None


class TestReindex:
    def test_indexes_the_source_with_its_current_status(self):
        source = _create()
        _job(source["id"], status="New")  # the index does not know yet
        search.clear_all()

        result = helpers.call_action("harvest_source_reindex", id=source["id"])

        assert result is True
        found = helpers.call_action(
            "package_search", fq="+dataset_type:harvest"
        )["results"]
        assert [item["id"] for item in found] == [source["id"]]
        assert found[0]["source_type"] == "test"
        assert found[0]["status"]["job_count"] == 1
        assert found[0]["status"]["last_job"]["status"] == "New"

    def test_an_editor_of_the_source_may_reindex_it(self):
        editor = factories.User()
        org = factories.Organization(
            users=[{"name": editor["name"], "capacity": "editor"}]
        )
        source = _create(owner_org=org["id"])
        search.clear_all()
        context = {"user": editor["name"]}

        result = toolkit.get_action("harvest_source_reindex")(
            context, {"id": source["id"]}
        )

        assert result is True
        assert _indexed(source["id"]) is not None
        assert "ignore_auth" not in context  # Q24: the caller's context is untouched
        assert "validate" not in context and "use_cache" not in context

    @pytest.mark.parametrize("who", ["anonymous", "outsider"])
    def test_without_update_permission_is_refused(self, who):
        source = _create(owner_org=factories.Organization()["id"])
        search.clear_all()
        user = "" if who == "anonymous" else factories.User()["name"]

        with pytest.raises(toolkit.NotAuthorized):
            toolkit.get_action("harvest_source_reindex")(
                {"user": user}, {"id": source["id"]}
            )

        assert _indexed(source["id"]) is None

    def test_requires_an_id(self):
        with pytest.raises(toolkit.ValidationError) as error:
            helpers.call_action("harvest_source_reindex")

        assert error.value.error_dict == {"id": ["Missing value"]}


class TestSourcesReindex:
    def test_indexes_every_active_source(self):
        org = factories.Organization()
        public = _create(name="public")
        private = _create(name="private", url="http://example.org/p",
                          owner_org=org["id"], private=True)
        deleted = _create(name="deleted", url="http://example.org/d")
        helpers.call_action("harvest_source_delete", id=deleted["id"])
        search.clear_all()

        result = helpers.call_action("harvest_sources_reindex")

        assert result is True
        assert _indexed(public["id"]) is not None
        assert _indexed(private["id"]) is not None
        assert _indexed(deleted["id"]) is None

    def test_needs_a_sysadmin(self):
        source = _create()
        search.clear_all()

        with pytest.raises(toolkit.NotAuthorized):
            helpers.call_action(
                "harvest_sources_reindex",
                context={"user": factories.User()["name"], "ignore_auth": False},
            )

        assert _indexed(source["id"]) is None


# Q24: the caller's context --------------------------------------------------

_LEAKY_KEYS = {
    "extras_as_string", "ignore_auth", "validate", "use_cache", "schema",
    "return_error_summary", "defer_commit", "package",
}


class TestCallerContextIsNotMutated:
    @pytest.mark.parametrize("action", [
        "harvest_source_create", "harvest_source_update", "harvest_source_patch",
        "harvest_source_clear", "harvest_source_job_history_clear",
        "harvest_source_show_status", "harvest_source_reindex", "harvest_source_detach",
    ])
    def test_action_leaves_no_keys_in_the_callers_context(self, action):
        org_admin = factories.User()
        org = factories.Organization(
            users=[{"name": org_admin["name"], "capacity": "admin"}]
        )
        if action == "harvest_source_create":
            data = _source_data(owner_org=org["id"])
        else:
            source = _create(owner_org=org["id"])
            data = {"id": source["id"]}
            if action == "harvest_source_update":
                data = _source_data(id=source["id"], owner_org=org["id"])
            if action == "harvest_source_patch":
                data["title"] = "Patched"
        context = {"user": org_admin["name"]}

        toolkit.get_action(action)(context, data)

        assert _LEAKY_KEYS & set(context) == set()

    def test_a_reused_context_still_detects_a_duplicate_url(self):
        org_admin = factories.User()
        org = factories.Organization(
            users=[{"name": org_admin["name"], "capacity": "admin"}]
        )
        source = _create(owner_org=org["id"], config="")
        context = {"user": org_admin["name"]}
        toolkit.get_action("harvest_source_show_status")(context, {"id": source["id"]})

        with pytest.raises(toolkit.ValidationError) as error:
            toolkit.get_action("harvest_source_create")(
                context, _source_data(name="copy", owner_org=org["id"], config="")
            )

        assert list(error.value.error_dict) == ["url"]
        assert _source_ids() == {source["id"]}
