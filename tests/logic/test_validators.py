"""Validators and converters of harvest source datasets and harvest objects."""
from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import sqlalchemy as sa
from ckan import model
from ckan.lib.navl.dictization_functions import Invalid
from ckan.tests import helpers

from ckanext.harvest.logic import validators
from ckanext.harvest.model import HarvestJob, HarvestSource

PLUGINS = "harvest ckan_harvester test_harvester test_harvester2"

pytestmark = [
    pytest.mark.ckan_config("ckan.plugins", PLUGINS),
    pytest.mark.usefixtures("with_plugins"),
]

with_db = pytest.mark.usefixtures("clean_db", "clean_index")


def _create(**overrides: Any) -> dict[str, Any]:
    data = {
        "url": "http://example.com/catalog", "name": "my-source",
        "source_type": "test",
    }
    data.update(overrides)
    return helpers.call_action("harvest_source_create", **data)


def _row(source_id: str) -> HarvestSource:
    model.Session.expire_all()
    return HarvestSource.get(source_id)


# harvest_source_url_validator ---------------------------------------------


def _validate_url(url: str, context: Any = None, **fields: Any) -> Any:
    data = {("url",): url}
    data.update({(key,): value for key, value in fields.items()})
    return validators.harvest_source_url_validator(("url",), data, {}, context or {})


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/", "The URL must start with http:// or https://"),
        ("file:///etc/passwd", "The URL must start with http:// or https://"),
        ("example.com/catalog", "The URL must start with http:// or https://"),
        ("javascript:alert(1)", "The URL must start with http:// or https://"),
        ("http:///catalog", "The URL has no host name"),
        ("http://[::1/", "The URL is not valid: Invalid IPv6 URL"),
        ("https://user:secret@example.com/", "The URL must not contain a user name"),
        ("https://token@example.com/", "The URL must not contain a user name"),
    ],
)
def test_urls_the_ckan_harvester_cannot_fetch_are_refused_with_a_clear_message(
    url, message
):
    with pytest.raises(Invalid) as error:
        _validate_url(url, source_type="ckan")
    assert error.value.error.startswith(message)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("basic\ttest",
         "The URL must not contain control characters (such as line breaks or tabs)"),
        ("x" * 2049, "The URL is too long (at most 2048 characters)"),
        ("  ", "Missing value"),
        (["http://example.com/"], "The URL must be a text, not list"),
    ],
)
def test_what_is_no_url_for_any_harvester_is_refused(url, message):
    with pytest.raises(Invalid) as error:
        _validate_url(url, source_type="test")
    assert error.value.error == message


@with_db
@pytest.mark.parametrize("url", ["basic_test", "ftp://example.com/", "http://[::1/"])
def test_a_harvester_without_url_rules_accepts_labels_and_other_schemes(url):
    assert _validate_url(url, source_type="test") == url


@with_db
class TestUrlValidator:
    def test_a_new_url_is_returned_unchanged(self):
        _create(config="")

        result = _validate_url("http://example.com:80/other/", config="")

        assert result == "http://example.com:80/other/"

    def test_a_duplicate_is_refused_with_the_normalised_url_and_the_config(self):
        _create(config='{"a": 1}')

        with pytest.raises(Invalid) as error:
            _validate_url("HTTP://example.com:80/catalog/?x=1", config='{"a": 1}')

        assert error.value.error == (
            "There already is a Harvest Source for this URL (& config): "
            'url=http://example.com/catalog config={"a": 1}'
        )

    def test_the_package_being_edited_is_not_a_duplicate_of_itself(self):
        source = _create(config="")

        result = _validate_url(
            "http://example.com/catalog", {"package": model.Package.get(source["id"])},
            config="",
        )

        assert result == "http://example.com/catalog"

    def test_the_id_in_the_data_excludes_that_package(self):
        source = _create(config="")

        result = _validate_url("http://example.com/catalog", id=source["id"], config="")

        assert result == "http://example.com/catalog"

    def test_without_config_no_existing_source_conflicts(self):
        _create(config="")

        result = _validate_url("http://example.com/catalog")

        assert result == "http://example.com/catalog"

    def test_a_harvest_dataset_without_source_row_compares_as_no_config(self):
        source = _create()
        model.Session.execute(
            sa.text("DELETE FROM harvest_source WHERE id = :id"), {"id": source["id"]}
        )
        model.Session.commit()

        with pytest.raises(Invalid) as error:
            _validate_url("http://example.com/catalog")

        assert error.value.error == (
            "There already is a Harvest Source for this URL (& config): "
            "url=http://example.com/catalog config=None"
        )

    def test_ordinary_datasets_with_the_same_url_do_not_count(self):
        helpers.call_action(
            "package_create", name="plain", url="http://example.com/catalog"
        )

        result = _validate_url("http://example.com/catalog", config="")

        assert result == "http://example.com/catalog"


# harvest_source_type_exists / frequency / dataset type --------------------


class TestTypeAndFrequency:
    def test_a_registered_type_passes(self):
        assert validators.harvest_source_type_exists("test2", {}) == "test2"

    def test_an_unknown_type_lists_the_registered_types(self):
        with pytest.raises(Invalid) as error:
            validators.harvest_source_type_exists("csw", {})

        assert error.value.error == (
            "Unknown harvester type: csw. Registered types: ['ckan', 'test', 'test2']"
        )

    @pytest.mark.parametrize("value,expected", [
        ("", "MANUAL"), ("Monthly", "MONTHLY"), ("biweekly", "BIWEEKLY"),
        ("ALWAYS", "ALWAYS"),
    ])
    def test_frequency_is_upper_cased(self, value, expected):
        assert validators.harvest_source_frequency_exists(value) == expected

    @pytest.mark.parametrize("value", ["Hourly", " daily"])
    def test_an_unknown_frequency_quotes_the_original_value(self, value):
        with pytest.raises(Invalid) as error:
            validators.harvest_source_frequency_exists(value)

        assert error.value.error == "Frequency {} not recognised".format(value)

    @pytest.mark.parametrize("value", ["dataset", None])
    def test_dataset_type_is_always_harvest(self, value):
        assert validators.dataset_type_exists(value) == "harvest"


# harvest_source_config_validator ------------------------------------------


def _validate_config(config: Any, source_type: Any) -> tuple[Any, dict[Any, Any]]:
    data = {("config",): config, ("source_type",): source_type}
    result = validators.harvest_source_config_validator(("config",), data, {}, {})
    return result, data


class TestConfigValidator:
    def test_a_config_the_harvester_accepts_is_kept(self):
        result, data = _validate_config('{"a": 1}', "test")

        assert result == '{"a": 1}'
        assert data[("config",)] == '{"a": 1}'

    @pytest.mark.parametrize("config,reason", [
        ("[1]", "the configuration must be a JSON object"),
        ("{", "Expecting property name enclosed in double quotes: "
              "line 1 column 2 (char 1)"),
    ])
    def test_a_config_the_harvester_rejects_is_invalid(self, config, reason):
        with pytest.raises(Invalid) as error:
            _validate_config(config, "test")

        assert error.value.error == "Error parsing the configuration options: " + reason

    @pytest.mark.parametrize("source_type", ["unknown", None])
    def test_without_a_matching_harvester_the_value_is_untouched(self, source_type):
        result, data = _validate_config("not json at all", source_type)

        assert result == "not json at all"
        assert data[("config",)] == "not json at all"


# harvest_source_convert_from_config ---------------------------------------


class TestConvertFromConfig:
    def test_copies_every_config_key_to_the_top_level(self):
        data = {
            ("config",): '{"name": "from-config", "b": [1, 2], "c": {"d": null}}',
            ("name",): "my-source",
        }

        validators.harvest_source_convert_from_config(("config",), data, {}, {})

        assert data == {
            ("config",): '{"name": "from-config", "b": [1, 2], "c": {"d": null}}',
            ("name",): "from-config",
            ("b",): [1, 2],
            ("c",): {"d": None},
        }

    def test_invalid_json_sets_config_to_none_and_logs(self, caplog):
        data = {("config",): "{broken"}

        with caplog.at_level(logging.ERROR):
            validators.harvest_source_convert_from_config(("config",), data, {}, {})

        assert data == {("config",): None}
        assert "Wrong JSON provided config, skipping" in caplog.messages

    @pytest.mark.parametrize("config", ["", None])
    def test_an_empty_config_adds_nothing(self, config):
        data = {("config",): config, ("name",): "n"}

        validators.harvest_source_convert_from_config(("config",), data, {}, {})

        assert data == {("config",): config, ("name",): "n"}


# ids, jobs and object extras ----------------------------------------------


@with_db
class TestExistence:
    def test_an_existing_source_id_passes(self):
        source = _create()

        assert validators.harvest_source_id_exists(source["id"], {}) == source["id"]

    def test_an_unknown_source_id_is_invalid(self):
        with pytest.raises(Invalid) as error:
            validators.harvest_source_id_exists("nope", {})

        assert error.value.error == "Harvest Source with id 'nope' does not exist."

    def test_an_existing_job_id_gives_the_job_object(self):
        source = _create()
        job = HarvestJob(source_id=source["id"])
        job.save()

        result = validators.harvest_job_exists(job.id, {})

        assert isinstance(result, HarvestJob)
        assert result.id == job.id

    def test_an_unknown_job_id_is_invalid(self):
        with pytest.raises(Invalid) as error:
            validators.harvest_job_exists("nope", {})

        assert error.value.error == "Harvest Job with id 'nope' does not exist."


class TestObjectExtras:
    def test_a_dict_of_strings_passes(self):
        extras = {"a": "1", "b": ""}

        assert validators.harvest_object_extras_validator(extras, {}) == extras

    @pytest.mark.parametrize("value", [["a"], "a=1"])
    def test_a_non_dict_is_invalid(self, value):
        with pytest.raises(Invalid) as error:
            validators.harvest_object_extras_validator(value, {})

        assert error.value.error == "extras must be a dict"

    @pytest.mark.parametrize("value", [{"a": 1}, {"a": "x", "b": None}])
    def test_non_string_values_are_invalid(self, value):
        with pytest.raises(Invalid) as error:
            validators.harvest_object_extras_validator(value, {})

        assert error.value.error == "extras must be a dict of strings"


# keep_not_empty_extras / harvest_source_extra_validator -------------------


def test_keep_not_empty_extras_keeps_only_truthy_values():
    data = {
        ("__extras",): {"a": "x", "b": "", "c": None, "d": 0, "e": [], "f": [1]},
        ("name",): "n",
    }

    validators.keep_not_empty_extras(("__extras",), data, {}, {})

    assert data == {("name",): "n", ("a",): "x", ("f",): [1]}


def _extra_validate(unknown_keys: dict[str, Any], source_type: str = "test2",
                    extras: Any = (), **fields: Any) -> tuple[dict[Any, Any], dict[Any, Any]]:
    """Run the validator on flattened data, as navl hands it over."""
    data: dict[Any, Any] = {("__extras",): unknown_keys, ("source_type",): source_type}
    data.update({(key,): value for key, value in fields.items()})
    for index, extra in enumerate(extras):
        data[("extras", index, "key")] = extra["key"]
        data[("extras", index, "value")] = extra["value"]
    errors: dict[Any, Any] = {}
    validators.harvest_source_extra_validator(("__extras",), data, errors, {})
    return data, errors


def _flat_extras(data: dict[Any, Any]) -> dict[str, Any]:
    indexes = sorted({key[1] for key in data if len(key) == 3 and key[0] == "extras"})
    return {data[("extras", i, "key")]: data[("extras", i, "value")] for i in indexes}


class TestExtraValidator:
    """Q20 fixed: extra fields are merged into the submitted config, field and extra."""

    def test_harvester_extra_fields_become_fields_and_config(self):
        data, errors = _extra_validate({"custom_option": "v", "unknown": "x"})

        assert errors == {}
        assert data[("custom_option",)] == "v"
        assert ("unknown",) not in data
        assert json.loads(data[("config",)]) == {"custom_option": "v"}
        assert _flat_extras(data) == {"config": data[("config",)]}

    def test_an_existing_config_is_merged_with_the_extra_fields(self):
        config = '{"a": 1, "custom_option": "old"}'
        extras = [{"key": "other", "value": "x"}, {"key": "config", "value": config}]

        data, errors = _extra_validate({"custom_option": "v"}, extras=extras, config=config)

        assert errors == {}
        assert json.loads(data[("config",)]) == {"a": 1, "custom_option": "v"}
        assert _flat_extras(data) == {"other": "x", "config": data[("config",)]}

    def test_an_invalid_config_is_replaced_and_logged(self, caplog):
        with caplog.at_level(logging.ERROR):
            data, _errors = _extra_validate({"custom_option": "v"}, config="{broken")

        assert json.loads(data[("config",)]) == {"custom_option": "v"}
        assert "Wrong JSON provided in config, skipping" in caplog.messages

    def test_empty_extra_values_change_nothing(self):
        data, errors = _extra_validate({"custom_option": "", "unknown": "x"},
                                       config='{"a": 1}')

        assert errors == {}
        assert data[("config",)] == '{"a": 1}'
        assert ("custom_option",) not in data
        assert ("unknown",) not in data
        assert ("extras",) not in data


# Q20: what a harvester's extra field (test2's custom_option) becomes ------


@with_db
class TestExtraFieldsThroughTheActions:
    def test_an_extra_field_is_kept_in_the_row_and_shown(self):
        result = _create(source_type="test2", custom_option="v")

        shown = helpers.call_action("harvest_source_show", id=result["id"])
        assert json.loads(_row(result["id"]).config) == {"custom_option": "v"}
        assert shown["custom_option"] == "v"
        assert result["custom_option"] == "v"

    def test_an_extra_field_and_a_submitted_config_are_both_kept(self):
        result = _create(source_type="test2", custom_option="v", config='{"a": 1}')

        shown = helpers.call_action("harvest_source_show", id=result["id"])
        assert json.loads(_row(result["id"]).config) == {"a": 1, "custom_option": "v"}
        assert shown["a"] == 1
        assert shown["custom_option"] == "v"

    def test_a_patch_of_another_field_keeps_the_extra_field(self):
        source = _create(source_type="test2", custom_option="v")

        helpers.call_action("harvest_source_patch", id=source["id"], title="Renamed")

        shown = helpers.call_action("harvest_source_show", id=source["id"])
        assert _row(source["id"]).title == "Renamed"
        assert json.loads(_row(source["id"]).config) == {"custom_option": "v"}
        assert shown["custom_option"] == "v"

    def test_unknown_extra_fields_are_not_stored(self):
        result = _create(config='{"a": 1}', unknown="x")

        shown = helpers.call_action("harvest_source_show", id=result["id"])
        assert "unknown" not in shown
        assert _row(result["id"]).config == '{"a": 1}'
        assert "unknown" not in model.Package.get(result["id"]).extras
