"""Bad input through the action API: a clear error, and nothing damaged.

Each case calls one action as one role of the shared world (see
``tests/support/world.py``: an organisation with a member, editor and admin,
another organisation's admin, sources with jobs and an object) with input a
user could send, and asserts

* the error a client gets: the exception type and its message (a validation
  message on the right field, "not found", "not authorised"), never an
  unexpected exception (a traceback for the user);
* that the whole database is exactly as before the call (the world's
  fingerprint), so a refused request changed nothing, anywhere.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Optional

import pytest
from ckan import model
from ckan.plugins import toolkit

from ckanext.harvest.logic import HarvestJobExists
from ckanext.harvest.model import HarvestSource
from tests.support.world import World, WorldSite

PLUGINS = "harvest ckan_harvester test_harvester test_harvester2"

pytestmark = pytest.mark.usefixtures("world")

Builder = Callable[[World], dict[str, Any]]
ValidationError = toolkit.ValidationError
NotAuthorized = toolkit.NotAuthorized
ObjectNotFound = toolkit.ObjectNotFound

CONFIG_ERROR = "Error parsing the configuration options: "


def _new_ckan_source(config: Any = None, raw_config: Any = None,
                     **fields: Any) -> Builder:
    def build(w: World) -> dict[str, Any]:
        data = {
            "name": "bad-input-source", "title": "Bad input",
            "url": "http://bad-input.example.org/", "source_type": "ckan",
            "owner_org": w.org_id, "frequency": "MANUAL",
        }
        if config is not None:
            data["config"] = config if isinstance(config, str) else json.dumps(config)
        if raw_config is not None:
            data["config"] = raw_config
        data.update(fields)
        return {key: value for key, value in data.items() if value is not ...}
    return build


def _source_update(**fields: Any) -> Builder:
    def build(w: World) -> dict[str, Any]:
        data = {
            "id": w.source_id, "name": w.source_name, "url": w.source_url,
            "source_type": "test", "owner_org": w.org_id, "frequency": "MANUAL",
        }
        data.update(fields)
        return data
    return build


def _stored_config(source_id: str) -> Any:
    return HarvestSource.get(source_id).config


def _fixed(**data: Any) -> Builder:
    return lambda w: dict(data)


HUGE = "x" * 3_000_000

# (case id, role, action, data builder, exception, error key or None, message part)
CASES: list[tuple[str, str, str, Builder, type, Optional[str], str]] = [
    # -- source configuration ------------------------------------------------------
    ("config-invalid-json", "editor", "harvest_source_create",
     _new_ckan_source("{not json"), ValidationError, "config", CONFIG_ERROR),
    ("config-truncated-json", "editor", "harvest_source_create",
     _new_ckan_source('{"default_tags": ['), ValidationError, "config", CONFIG_ERROR),
    ("config-json-array", "editor", "harvest_source_create",
     _new_ckan_source("[1, 2]"), ValidationError, "config",
     CONFIG_ERROR + "the configuration must be a JSON object"),
    ("config-json-string", "editor", "harvest_source_create",
     _new_ckan_source('"text"'), ValidationError, "config",
     CONFIG_ERROR + "the configuration must be a JSON object"),
    ("config-json-null", "editor", "harvest_source_create",
     _new_ckan_source("null"), ValidationError, "config",
     CONFIG_ERROR + "the configuration must be a JSON object"),
    ("config-api-version-text", "editor", "harvest_source_create",
     _new_ckan_source({"api_version": "three"}), ValidationError, "config",
     CONFIG_ERROR + "api_version must be an integer"),
    ("config-api-version-list", "editor", "harvest_source_create",
     _new_ckan_source({"api_version": [3]}), ValidationError, "config",
     CONFIG_ERROR + "api_version must be an integer"),
    ("config-default-tags-string", "editor", "harvest_source_create",
     _new_ckan_source({"default_tags": "a,b"}), ValidationError, "config",
     CONFIG_ERROR + "default_tags must be a list"),
    ("config-default-tags-strings", "editor", "harvest_source_create",
     _new_ckan_source({"default_tags": ["a"]}), ValidationError, "config",
     CONFIG_ERROR + "default_tags must be a list of dictionaries"),
    ("config-default-groups-string", "editor", "harvest_source_create",
     _new_ckan_source({"default_groups": "g"}), ValidationError, "config",
     CONFIG_ERROR + "default_groups must be a *list*"),
    ("config-default-groups-numbers", "editor", "harvest_source_create",
     _new_ckan_source({"default_groups": [1]}), ValidationError, "config",
     CONFIG_ERROR + "default_groups must be a list of group names/ids"),
    ("config-default-group-unknown", "editor", "harvest_source_create",
     _new_ckan_source({"default_groups": ["no-such-group"]}), ValidationError, "config",
     CONFIG_ERROR + "Default group not found"),
    ("config-default-extras-list", "editor", "harvest_source_create",
     _new_ckan_source({"default_extras": ["a"]}), ValidationError, "config",
     CONFIG_ERROR + "default_extras must be a dictionary"),
    ("config-both-org-filters", "editor", "harvest_source_create",
     _new_ckan_source({"organizations_filter_include": ["a"],
                       "organizations_filter_exclude": ["b"]}),
     ValidationError, "config", "cannot contain both organizations_filter_include"),
    ("config-both-group-filters", "editor", "harvest_source_create",
     _new_ckan_source({"groups_filter_include": ["a"], "groups_filter_exclude": ["b"]}),
     ValidationError, "config", "cannot contain both groups_filter_include"),
    ("config-unknown-user", "editor", "harvest_source_create",
     _new_ckan_source({"user": "no-such-user"}), ValidationError, "config",
     CONFIG_ERROR + "User not found"),
    ("config-force-all-string", "editor", "harvest_source_create",
     _new_ckan_source({"force_all": "yes"}), ValidationError, "config",
     CONFIG_ERROR + "force_all must be boolean"),
    ("config-read-only-number", "editor", "harvest_source_create",
     _new_ckan_source({"read_only": 1}), ValidationError, "config",
     CONFIG_ERROR + "read_only must be boolean"),
    ("config-huge", "editor", "harvest_source_create",
     _new_ckan_source({"default_extras": {"x": HUGE}}), ValidationError, "config",
     "The configuration is too long"),
    ("config-not-a-string", "editor", "harvest_source_create",
     _new_ckan_source(raw_config={"api_version": 3}), ValidationError, "config",
     CONFIG_ERROR + "the configuration must be a JSON text, not dict"),
    # -- source URLs ---------------------------------------------------------------
    ("url-ftp", "editor", "harvest_source_create",
     _new_ckan_source(url="ftp://example.org/"), ValidationError, "url",
     "The URL must start with http:// or https://"),
    ("url-file", "editor", "harvest_source_create",
     _new_ckan_source(url="file:///etc/passwd"), ValidationError, "url",
     "The URL must start with http:// or https://"),
    ("url-no-scheme", "editor", "harvest_source_create",
     _new_ckan_source(url="catalogue.example.org"), ValidationError, "url",
     "The URL must start with http:// or https://"),
    ("url-credentials", "editor", "harvest_source_create",
     _new_ckan_source(url="https://me:secret@example.org/"), ValidationError, "url",
     "The URL must not contain a user name or password"),
    ("url-no-host", "editor", "harvest_source_create",
     _new_ckan_source(url="http:///api"), ValidationError, "url",
     "The URL has no host name"),
    ("url-too-long", "editor", "harvest_source_create",
     _new_ckan_source(url="http://example.org/" + "a" * 5000), ValidationError, "url",
     "The URL is too long"),
    ("url-missing", "editor", "harvest_source_create",
     _new_ckan_source(url=...), ValidationError, "url", "Missing value"),
    ("url-duplicate", "editor", "harvest_source_create",
     lambda w: _new_ckan_source(url=w.source_url, source_type="test",
                                raw_config=_stored_config(w.source_id))(w),
     ValidationError, "url", "There already is a Harvest Source for this URL"),
    # -- other fields --------------------------------------------------------------
    ("type-missing", "editor", "harvest_source_create",
     _new_ckan_source(source_type=...), ValidationError, "source_type", "Missing value"),
    ("type-unknown", "editor", "harvest_source_create",
     _new_ckan_source(source_type="csw"), ValidationError, "source_type",
     "Unknown harvester type: csw"),
    ("frequency-unknown", "editor", "harvest_source_create",
     _new_ckan_source(frequency="HOURLY"), ValidationError, "frequency",
     "Frequency HOURLY not recognised"),
    ("name-taken", "editor", "harvest_source_create",
     lambda w: _new_ckan_source(name=w.source_name)(w), ValidationError, "name",
     "That URL is already in use."),
    ("name-invalid", "editor", "harvest_source_create",
     _new_ckan_source(name="Not A Valid Name!"), ValidationError, "name",
     "Must be purely lowercase alphanumeric"),
    ("type-list", "editor", "harvest_source_create",
     _new_ckan_source(source_type=["ckan"]), ValidationError, "source_type",
     "Unknown harvester type"),
    ("owner-org-of-another-org", "other_admin", "harvest_source_create",
     _new_ckan_source(), NotAuthorized, None, "not authorized"),
    ("owner-org-unknown", "editor", "harvest_source_create",
     _new_ckan_source(owner_org="no-such-org"), NotAuthorized, None,
     "not authorized to add dataset to this organization"),
    ("create-anonymous", "anonymous", "harvest_source_create",
     _new_ckan_source(), NotAuthorized, None, ""),
    # -- other organisations' objects and unknown ids ------------------------------
    ("update-other-org-source", "other_admin", "harvest_source_update",
     _source_update(title="Taken over"), NotAuthorized, None, "not authorized"),
    ("patch-other-org-source", "other_admin", "harvest_source_patch",
     lambda w: {"id": w.source_id, "title": "Taken over"}, NotAuthorized, None, ""),
    ("patch-unknown-source", "editor", "harvest_source_patch",
     _fixed(id="no-such-source", title="x"), ObjectNotFound, None, ""),
    ("delete-other-org-source", "other_admin", "harvest_source_delete",
     lambda w: {"id": w.source_id}, NotAuthorized, None, "not authorized"),
    ("delete-unknown-source", "editor", "harvest_source_delete",
     _fixed(id="no-such-source"), ObjectNotFound, None, "Harvest source not found"),
    ("clear-other-org-source", "other_admin", "harvest_source_clear",
     lambda w: {"id": w.source_id}, NotAuthorized, None, "not authorized"),
    ("clear-unknown-source", "editor", "harvest_source_clear",
     _fixed(id="no-such-source"), ObjectNotFound, None, ""),
    ("job-create-other-org", "other_admin", "harvest_job_create",
     lambda w: {"source_id": w.idle_source_id}, NotAuthorized, None,
     "not authorized to create a job"),
    ("job-create-unknown-source", "editor", "harvest_job_create",
     _fixed(source_id="no-such-source"), ObjectNotFound, None,
     "Harvest source not found"),
    ("job-create-source-id-list", "editor", "harvest_job_create",
     lambda w: {"source_id": [w.idle_source_id]}, ObjectNotFound, None,
     "does not exist"),
    ("job-create-existing-job", "editor", "harvest_job_create",
     lambda w: {"source_id": w.source_id}, HarvestJobExists, None,
     "There already is an unrun job for this source"),
    ("job-show-other-org", "other_admin", "harvest_job_show",
     lambda w: {"id": w.job_id}, NotAuthorized, None, "not authorized to see jobs"),
    ("job-show-unknown", "sysadmin", "harvest_job_show",
     _fixed(id="no-such-job"), ObjectNotFound, None, ""),
    ("job-report-unknown", "sysadmin", "harvest_job_report",
     _fixed(id="no-such-job"), ObjectNotFound, None, ""),
    ("job-list-other-org", "other_admin", "harvest_job_list",
     lambda w: {"source_id": w.source_id}, NotAuthorized, None, ""),
    ("job-abort-other-org", "other_admin", "harvest_job_abort",
     lambda w: {"id": w.job_id}, NotAuthorized, None, ""),
    ("job-abort-unknown", "sysadmin", "harvest_job_abort",
     _fixed(id="no-such-job"), ObjectNotFound, None, ""),
    ("object-show-unknown", "sysadmin", "harvest_object_show",
     _fixed(id="no-such-object"), ObjectNotFound, None, "Harvest object not found"),
    ("object-show-unknown-dataset", "sysadmin", "harvest_object_show",
     _fixed(dataset_id="no-such-dataset"), ObjectNotFound, None, "Dataset not found"),
    ("source-show-unknown", "anonymous", "harvest_source_show",
     _fixed(id="no-such-source"), ObjectNotFound, None, ""),
    ("source-show-private-anonymous", "anonymous", "harvest_source_show",
     lambda w: {"id": w.private_source_id}, NotAuthorized, None, ""),
    ("log-list-bad-level", "sysadmin", "harvest_log_list",
     _fixed(level="LOUD"), ValidationError, "level", "Unknown log level: LOUD"),
    ("job-show-id-list", "sysadmin", "harvest_job_show",
     lambda w: {"id": [w.job_id]}, ObjectNotFound, None, ""),
    ("object-show-id-dict", "sysadmin", "harvest_object_show",
     lambda w: {"id": {"id": w.object_id}}, ObjectNotFound, None, ""),
    ("job-abort-id-list", "sysadmin", "harvest_job_abort",
     lambda w: {"id": [w.job_id]}, ValidationError, "id", "Must be a string"),
    ("source-clear-id-list", "sysadmin", "harvest_source_clear",
     lambda w: {"id": [w.source_id]}, ObjectNotFound, None, ""),
    ("object-list-unknown-source", "editor", "harvest_object_list",
     _fixed(source_id=["x"]), ValidationError, "source_id", "Must be a string"),
    ("source-show-id-list", "anonymous", "harvest_source_show",
     lambda w: {"id": [w.source_id]}, ValidationError, "id", "Must be a string"),
    ("reindex-other-org-source", "other_admin", "harvest_source_reindex",
     lambda w: {"id": w.source_id}, NotAuthorized, None, ""),
]


def _error_text(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return json.dumps(error.error_dict, default=str)
    return str(getattr(error, "message", "") or error)


@pytest.mark.parametrize(
    ("role", "action", "build", "exception", "key", "message"),
    [case[1:] for case in CASES], ids=[case[0] for case in CASES],
)
def test_bad_input_gets_a_clear_error_and_changes_nothing(
    harvest_site: WorldSite, world: World, role: str, action: str, build: Builder,
    exception: type, key: Optional[str], message: str,
) -> None:
    data = build(world)
    model.Session.remove()
    with pytest.raises(exception) as error:
        toolkit.get_action(action)({"user": world.users[role]}, data)
    text = _error_text(error.value)
    if key is not None:
        assert isinstance(error.value, ValidationError)
        assert key in error.value.error_dict, text
        text = json.dumps(error.value.error_dict[key], default=str)
    assert message.lower() in text.lower(), text
    assert harvest_site.unchanged(), "the refused {} changed the database".format(action)


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 50
    assert len({case[0] for case in CASES}) == len(CASES)
