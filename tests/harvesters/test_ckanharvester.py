"""The CKAN-to-CKAN harvester against a fake remote CKAN.

The remote side is mocked with ``responses`` (and, where the network itself is the
point — timeouts, refused connections, truncated bodies — with a tiny local HTTP
server); the local side is the real CKAN, database and search index.
"""
from __future__ import annotations

import datetime
import http.server
import json
import socket
import threading
import time
import uuid
from typing import Any, Callable, Iterator, Optional
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
import sqlalchemy as sa
from ckan import model
from ckan.plugins import toolkit
from ckan.tests import factories
from responses import matchers

from ckanext.harvest import queue
from ckanext.harvest.harvesters import ckanharvester
from ckanext.harvest.harvesters.ckanharvester import (
    CKANHarvester,
    ContentFetchError,
    ContentNotFoundError,
)
from ckanext.harvest.model import (
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
    JobStatus,
)
from ckanext.harvest.tests.factories import HarvestJobObj, HarvestSourceObj
from ckanext.harvest.tests.lib import run_harvest_job
from tests.mq import private_site
from tests.support.marks import harvest_site

pytestmark = harvest_site("harvest ckan_harvester")

REMOTE = "http://remote.example.com"
SEARCH_URL = REMOTE + "/api/3/action/package_search"
ACTION_URL = REMOTE + "/api/3/action/"
MODIFIED = "2024-03-01T10:00:00.123456"
REMOTE_ORG_ID = "aaaaaaaa-0000-4000-8000-00000000000a"
REMOTE_GROUP_ID = "bbbbbbbb-0000-4000-8000-00000000000b"


# --- fixtures -------------------------------------------------------------------


@pytest.fixture
def harvester(monkeypatch: pytest.MonkeyPatch,
              ckan_config: dict[str, Any]) -> Iterator[CKANHarvester]:
    """The (singleton) CKAN harvester, fresh state, quick retries."""
    monkeypatch.setattr(ckanharvester, "HTTP_BACKOFF_FACTOR", 0)
    monkeypatch.setitem(ckan_config, "ckan.harvest.http_connect_timeout", 2)
    monkeypatch.setitem(ckan_config, "ckan.harvest.http_read_timeout", 2)
    instance = CKANHarvester()
    _reset(instance)
    yield instance
    _reset(instance)


def _reset(instance: CKANHarvester) -> None:
    for attribute in ("config", "api_version", "_user_name", "_site_user", "_session"):
        vars(instance).pop(attribute, None)


@pytest.fixture
def remote() -> Iterator[responses.RequestsMock]:
    """The fake remote CKAN; every request must match a registered answer."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        _reset_remote(rsps)
        yield rsps


def _reset_remote(remote: responses.RequestsMock) -> None:
    """Forget the registered answers and calls (the search index stays real)."""
    remote.reset()
    remote.add_passthru(toolkit.config["solr_url"])


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    behaviour: Callable[[http.server.BaseHTTPRequestHandler], None]
    requests_seen = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        server = self.server
        assert isinstance(server, _Server)
        server.requests_seen += 1
        server.behaviour(self)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def local_server() -> Iterator[_Server]:
    """A real HTTP server on 127.0.0.1 whose behaviour a test sets."""
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# --- remote data ------------------------------------------------------------------


def _dataset(n: int, **fields: Any) -> dict[str, Any]:
    """A remote dataset in package_show form."""
    dataset = {
        "id": "dataset%d-id" % n,
        "name": "dataset%d" % n,
        "title": "Dataset %d" % n,
        "notes": "Remote dataset %d" % n,
        "type": "dataset",
        "state": "active",
        "private": False,
        "metadata_modified": MODIFIED,
        "owner_org": REMOTE_ORG_ID,
        "organization": {"id": REMOTE_ORG_ID, "name": "remote-org"},
        "tags": [{"name": "remote-tag", "id": "tag-id", "state": "active"}],
        "groups": [],
        "extras": [{"key": "remote_extra", "value": "remote value"}],
        "resources": [{
            "id": _resource_id(n),
            "url": "http://remote.example.com/data%d.csv" % n,
            "format": "CSV",
            "url_type": None,
            "revision_id": "some-revision",
        }],
    }
    dataset.update(fields)
    return dataset


def _resource_id(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "resource%d" % n))


def _answer(result: Any) -> dict[str, Any]:
    return {"help": "", "success": True, "result": result}


def _search_result(datasets: list[dict[str, Any]], count: Optional[int] = None) -> Any:
    return _answer({"count": len(datasets) if count is None else count,
                    "results": datasets})


def _search_params(start: int, fq: Optional[str] = None) -> dict[str, str]:
    params = {"rows": "100", "start": str(start), "sort": "id asc"}
    if fq:
        params["fq"] = fq
    return params


def _add_search(
    remote: responses.RequestsMock,
    pages: list[list[dict[str, Any]]],
    fq: Optional[str] = None,
) -> None:
    """Answer the search pages at start 0, 100, ... then an empty page."""
    for number, page in enumerate(pages + [[]]):
        remote.get(SEARCH_URL, json=_search_result(page),
                   match=[matchers.query_param_matcher(_search_params(number * 100, fq))])


def _search_calls(remote: responses.RequestsMock) -> list[dict[str, list[str]]]:
    return [parse_qs(urlsplit(call.request.url).query)
            for call in remote.calls if call.request.url.startswith(SEARCH_URL)]


# --- local side -------------------------------------------------------------------


def _source(config: Optional[dict[str, Any]] = None, url: str = REMOTE,
            **fields: Any) -> Any:
    return HarvestSourceObj(url=url, source_type="ckan",
                            config=json.dumps(config) if config else "", **fields)


def _harvest(source: Any, harvester: CKANHarvester) -> dict[str, Any]:
    """Run a job of ``source`` in-process; results by guid."""
    return _harvest_job(source, harvester)[0]


def _harvest_job(source: Any, harvester: CKANHarvester) -> tuple[dict[str, Any], HarvestJob]:
    job = HarvestJobObj(source=source)
    return run_harvest_job(job, harvester), job


def _gather(source: Any, harvester: CKANHarvester) -> tuple[Any, HarvestJob]:
    job = HarvestJobObj(source=source)
    return queue.gather_stage(harvester, job), job


def _gather_errors(job: HarvestJob) -> list[str]:
    return [error.message for error in
            model.Session.query(HarvestGatherError).filter_by(harvest_job_id=job.id)]


def _object_errors() -> list[str]:
    return [error.message for error in model.Session.query(HarvestObjectError)]


def _datasets() -> list[dict[str, Any]]:
    """The local harvested datasets (type dataset), any state."""
    return [toolkit.get_action("package_show")({"ignore_auth": True}, {"id": pkg.id})
            for pkg in model.Session.query(model.Package).filter_by(type="dataset")]


def _extras(dataset: dict[str, Any]) -> dict[str, Any]:
    """The dataset's extras, without those the harvest plugin adds when showing it."""
    return {extra["key"]: extra["value"] for extra in dataset["extras"]
            if extra["key"] not in ("harvest_object_id", "harvest_source_id",
                                    "harvest_source_title")}


def _object_count() -> int:
    return model.Session.query(HarvestObject).count()


def _finished_job(source: Any, started: datetime.datetime) -> HarvestJob:
    job = HarvestJob(source=source, status=JobStatus.FINISHED.value,
                     gather_started=started, gather_finished=started)
    job.save()
    return job


def _assert_nothing_imported(job: HarvestJob) -> None:
    assert _object_count() == 0
    assert _datasets() == []
    assert model.Session.query(HarvestJob).get(job.id).status == JobStatus.FINISHED.value


# --- validate_config ----------------------------------------------------------------


@pytest.mark.parametrize("config, message", [
    ('{"api_version": "two"}', "api_version must be an integer"),
    ('{"default_tags": "geo"}', "default_tags must be a list"),
    ('{"default_tags": ["geo"]}', "default_tags must be a list of dictionaries"),
    ('{"default_groups": "g"}', "default_groups must be a *list* of group names/ids"),
    ('{"default_groups": [{"name": "g"}]}',
     "default_groups must be a list of group names/ids (i.e. strings)"),
    ('{"default_groups": ["no-such-group"]}', "Default group not found"),
    ('{"default_extras": ["a"]}', "default_extras must be a dictionary"),
    ('{"organizations_filter_include": ["a"], "organizations_filter_exclude": ["b"]}',
     "Harvest configuration cannot contain both organizations_filter_include and "
     "organizations_filter_exclude"),
    ('{"groups_filter_include": ["a"], "groups_filter_exclude": ["b"]}',
     "Harvest configuration cannot contain both groups_filter_include and "
     "groups_filter_exclude"),
    ('{"user": "no-such-user"}', "User not found"),
    ('{"read_only": "yes"}', "read_only must be boolean"),
    ('{"force_all": 1}', "force_all must be boolean"),
    ('[1, 2]', "the configuration must be a JSON object"),
])
def test_validate_config_rejects_each_invalid_option(
    harvester: CKANHarvester, config: str, message: str
) -> None:
    with pytest.raises(ValueError) as excinfo:
        harvester.validate_config(config)
    assert str(excinfo.value) == message


def test_invalid_json_config_is_a_validation_error_of_the_source() -> None:
    sysadmin = factories.Sysadmin()
    with pytest.raises(toolkit.ValidationError) as excinfo:
        toolkit.get_action("harvest_source_create")({"user": sysadmin["name"]}, {
            "name": "remote", "title": "Remote", "url": REMOTE,
            "source_type": "ckan", "config": "{not json",
        })
    (message,) = excinfo.value.error_dict["config"]
    assert message.startswith("Error parsing the configuration options: Expecting")
    assert model.Session.query(model.Package).count() == 0


def test_valid_config_is_kept_as_written(harvester: CKANHarvester) -> None:
    user = factories.User()
    config = json.dumps({
        "api_version": "2", "default_tags": [{"name": "geo"}],
        "default_extras": {"a": "b"}, "organizations_filter_include": ["o"],
        "groups_filter_exclude": ["g"], "user": user["name"], "read_only": True,
        "force_all": False, "remote_groups": "create", "clean_tags": True,
    })

    assert harvester.validate_config(config) is config
    assert harvester.validate_config("") == ""
    assert harvester.validate_config(None) is None


def test_default_groups_are_stored_as_group_dicts(harvester: CKANHarvester) -> None:
    group = factories.Group(name="local-group")
    source = _source({"default_groups": ["local-group"]})

    stored = json.loads(model.Session.query(type(source)).get(source.id).config)

    assert stored["default_groups"] == ["local-group"]
    (group_dict,) = stored["default_group_dicts"]
    assert group_dict["id"] == group["id"]
    assert group_dict["name"] == "local-group"
    assert "users" not in group_dict


# --- get_original_url -----------------------------------------------------------


def test_original_url_is_the_remote_package_show(harvester: CKANHarvester) -> None:
    source = _source(url=REMOTE + "/")
    job = HarvestJobObj(source=source)
    obj = HarvestObject(guid="dataset1-id", job=job)
    obj.save()

    assert harvester.get_original_url(obj.id) == (
        REMOTE + "/api/3/action/package_show?id=dataset1-id"
    )
    assert harvester.get_original_url("no-such-object") is None


# --- a whole harvest ----------------------------------------------------------------


def test_harvest_imports_remote_datasets_keeping_their_ids(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    _add_search(remote, [[_dataset(1), _dataset(2)]])

    results = _harvest(_source(), harvester)

    assert sorted(results) == ["dataset1-id", "dataset2-id"]
    assert {r["report_status"] for r in results.values()} == {"added"}
    dataset = results["dataset1-id"]["dataset"]
    assert dataset["id"] == "dataset1-id"
    assert dataset["name"] == "dataset1"
    assert dataset["notes"] == "Remote dataset 1"
    assert dataset["owner_org"] is None  # the source has no organization
    assert dataset["groups"] == []
    assert [tag["name"] for tag in dataset["tags"]] == ["remote-tag"]
    assert _extras(dataset) == {"remote_extra": "remote value"}
    (resource,) = dataset["resources"]
    assert resource["id"] == _resource_id(1)
    assert resource["url"] == "http://remote.example.com/data1.csv"
    assert resource.get("revision_id") is None
    assert remote.calls[0].request.url == SEARCH_URL + "?rows=100&start=0&sort=id+asc"
    assert model.Session.query(HarvestObject).filter_by(current=True).count() == 2


def test_harvest_updates_newer_datasets_and_skips_unchanged_ones(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    source = _source({"force_all": True})
    _add_search(remote, [[_dataset(1), _dataset(2)]])
    _harvest(source, harvester)
    _reset_remote(remote)
    # Far in the future: CKAN 2.11 stamps the local copy with the import time.
    newer = _dataset(1, title="New title", metadata_modified="2999-04-01T00:00:00.123456")
    _add_search(remote, [[newer, _dataset(2)]])

    results = _harvest(source, harvester)

    assert results["dataset1-id"]["report_status"] == "updated"
    assert results["dataset1-id"]["dataset"]["title"] == "New title"
    assert results["dataset2-id"]["report_status"] == "not modified"
    current = model.Session.query(HarvestObject).filter_by(current=True).all()
    assert sorted(obj.guid for obj in current) == ["dataset1-id", "dataset2-id"]
    assert len(_datasets()) == 2


def test_remote_harvest_sources_are_skipped(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    _add_search(remote, [[_dataset(1, type="harvest")]])

    results = _harvest(_source(), harvester)

    assert results["dataset1-id"]["state"] == "COMPLETE"
    assert _datasets() == []


# --- gather: paging, incremental window, filters --------------------------------------


def test_gather_pages_through_the_search_without_duplicates(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    first = [_dataset(n) for n in range(100)]
    second = [_dataset(99), _dataset(100), _dataset(101)]  # 99 was on page 1
    _add_search(remote, [first, second])

    ids, job = _gather(_source(), harvester)

    assert len(ids) == 102
    guids = [obj.guid for obj in model.Session.query(HarvestObject)]
    assert sorted(guids) == sorted("dataset%d-id" % n for n in range(102))
    assert [call["start"] for call in _search_calls(remote)] == [["0"], ["100"], ["200"]]
    stored = json.loads(HarvestObject.get(ids[0]).content)
    assert stored == first[0]
    assert _gather_errors(job) == []


def test_gather_keeps_up_with_a_remote_capping_the_page_size(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    datasets = [_dataset(n) for n in range(5)]
    for start in (0, 2, 4):
        page = datasets[start:start + 2]
        remote.get(SEARCH_URL, json=_search_result(page, count=5),
                   match=[matchers.query_param_matcher(_search_params(start))])
    remote.get(SEARCH_URL, json=_search_result([], count=5),
               match=[matchers.query_param_matcher(_search_params(104))])

    ids, job = _gather(_source(), harvester)

    assert len(ids) == 5
    assert [call["start"] for call in _search_calls(remote)] == [["0"], ["2"], ["4"], ["104"]]


def test_gather_only_asks_for_datasets_modified_since_the_last_clean_job(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    source = _source({"organizations_filter_include": ["org-a"]})
    _finished_job(source, datetime.datetime(2024, 1, 1, 8, 0))
    _finished_job(source, datetime.datetime(2024, 1, 2, 10, 30, 15))
    fq = "organization:org-a metadata_modified:[2024-01-02T09:30:15Z TO *]"
    _add_search(remote, [[_dataset(1)]], fq=fq)

    results = _harvest(source, harvester)

    assert list(results) == ["dataset1-id"]
    assert results["dataset1-id"]["report_status"] == "added"
    assert [call["fq"] for call in _search_calls(remote)] == [[fq], [fq]]


def test_job_with_errors_does_not_move_the_incremental_window(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    source = _source()
    _finished_job(source, datetime.datetime(2024, 1, 1, 8, 0))
    failed = _finished_job(source, datetime.datetime(2024, 1, 2, 8, 0))
    HarvestGatherError.create("remote down", failed)
    fq = "metadata_modified:[2024-01-01T07:00:00Z TO *]"
    _add_search(remote, [[_dataset(1)]], fq=fq)

    ids, job = _gather(source, harvester)

    assert len(ids) == 1


def test_nothing_modified_since_the_last_job_is_not_an_error(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    source = _source()
    _finished_job(source, datetime.datetime(2024, 1, 2, 10, 0))
    _add_search(remote, [], fq="metadata_modified:[2024-01-02T09:00:00Z TO *]")

    ids, job = _gather(source, harvester)

    assert ids == []
    assert _gather_errors(job) == []


def test_failed_incremental_search_falls_back_to_a_full_search(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    source = _source()
    _finished_job(source, datetime.datetime(2024, 1, 2, 10, 0))
    remote.get(SEARCH_URL, json={"success": False, "error": {"message": "bad fq"}},
               status=400, match=[matchers.query_param_matcher(
                   _search_params(0, "metadata_modified:[2024-01-02T09:00:00Z TO *]"))])
    _add_search(remote, [[_dataset(1), _dataset(2)]])

    ids, job = _gather(source, harvester)

    assert len(ids) == 2
    assert _gather_errors(job) == []


def test_force_all_searches_everything_despite_a_previous_job(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    source = _source({"force_all": True})
    _finished_job(source, datetime.datetime(2024, 1, 2, 10, 0))
    _add_search(remote, [[_dataset(1)]])

    ids, job = _gather(source, harvester)

    assert len(ids) == 1
    assert all("fq" not in call for call in _search_calls(remote))


@pytest.mark.parametrize("config, fq", [
    ({"organizations_filter_include": ["a", "b"]}, "organization:a OR organization:b"),
    ({"organizations_filter_exclude": ["a", "b"]}, "-organization:a -organization:b"),
    ({"groups_filter_include": ["g", "h"]}, "groups:g OR groups:h"),
    ({"groups_filter_exclude": ["g"], "organizations_filter_include": ["a"]},
     "organization:a -groups:g"),
])
def test_organization_and_group_filters_restrict_the_search(
    harvester: CKANHarvester, remote: responses.RequestsMock,
    config: dict[str, Any], fq: str,
) -> None:
    _add_search(remote, [[_dataset(1)]], fq=fq)

    ids, job = _gather(_source(config), harvester)

    assert len(ids) == 1
    assert [call["fq"] for call in _search_calls(remote)] == [[fq], [fq]]


def test_empty_remote_is_a_gather_error(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    _add_search(remote, [])

    ids, job = _gather(_source(url=REMOTE + "/"), harvester)

    assert ids == []
    assert _gather_errors(job) == ["No datasets found at CKAN: %s" % REMOTE]


# --- gather: page by page -----------------------------------------------------------


def _committed_objects(job_id: str) -> int:
    """Objects of the job another connection sees: those committed."""
    with model.meta.engine.connect() as connection:
        return int(connection.execute(
            sa.text("SELECT count(*) FROM harvest_object WHERE harvest_job_id = :id"),
            {"id": job_id}).scalar() or 0)


def _add_watched_page(remote: responses.RequestsMock, start: int,
                      datasets: list[dict[str, Any]], job: HarvestJob,
                      seen: list[int], count: Optional[int] = None,
                      status: int = 200, fq: Optional[str] = None) -> None:
    """Answer the search page at ``start``, noting first how many objects of ``job``
    are committed when it is asked for."""
    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        seen.append(_committed_objects(job.id))
        if status != 200:
            return status, {}, "Bad gateway"
        return 200, {}, json.dumps(_search_result(datasets, count))

    remote.add_callback(responses.GET, SEARCH_URL, callback=answer,
                        content_type="application/json",
                        match=[matchers.query_param_matcher(_search_params(start, fq))])


def _job_guids(job: HarvestJob) -> list[str]:
    return sorted(guid for (guid,) in model.Session.query(HarvestObject.guid)
                  .filter(HarvestObject.harvest_job_id == job.id))


def test_gather_commits_the_objects_of_each_page_before_asking_for_the_next(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    job = HarvestJobObj(source=_source())
    datasets = [_dataset(n) for n in range(250)]
    committed: list[int] = []
    for start in (0, 100, 200, 300):
        _add_watched_page(remote, start, datasets[start:start + 100], job, committed)

    ids = queue.gather_stage(harvester, job)

    assert committed == [0, 100, 200, 250]
    assert len(ids) == len(set(ids)) == 250
    assert _job_guids(job) == sorted(dataset["id"] for dataset in datasets)
    assert {obj.id for obj in model.Session.query(HarvestObject)} == set(ids)
    assert _gather_errors(job) == []


def test_a_dataset_listed_twice_on_a_page_or_on_two_pages_has_one_object(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    first = [_dataset(n) for n in range(99)] + [_dataset(5)]
    second = [_dataset(5), _dataset(99), _dataset(99), _dataset(100)]
    _add_search(remote, [first, second])

    ids, job = _gather(_source(), harvester)
    listed = harvester._search_for_datasets(REMOTE)

    expected = ["dataset%d-id" % n for n in range(101)]
    assert len(ids) == 101
    assert _job_guids(job) == sorted(expected)
    assert [dataset["id"] for dataset in listed] == expected


def test_failure_on_a_later_page_deletes_the_objects_of_the_earlier_pages(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    job = HarvestJobObj(source=_source())
    committed: list[int] = []
    _add_watched_page(remote, 0, [_dataset(n) for n in range(100)], job, committed,
                      count=250)
    _add_watched_page(remote, 100, [], job, committed, status=502)

    ids = queue.gather_stage(harvester, job)

    assert ids is None
    assert committed[:2] == [0, 100]  # page 1 was written, then the failure came
    assert "HTTP error: 502" in _search_error(job)
    assert _committed_objects(job.id) == 0


def test_incremental_search_failing_on_a_later_page_falls_back_without_duplicates(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    source = _source()
    _finished_job(source, datetime.datetime(2024, 1, 2, 10, 0))
    job = HarvestJobObj(source=source)
    since = "metadata_modified:[2024-01-02T09:00:00Z TO *]"
    datasets = [_dataset(n) for n in range(150)]
    committed: list[int] = []
    _add_watched_page(remote, 0, datasets[:100], job, committed, count=150, fq=since)
    _add_watched_page(remote, 100, [], job, committed, status=502, fq=since)
    for start in (0, 100, 200):
        _add_watched_page(remote, start, datasets[start:start + 100], job, committed,
                          count=150)

    ids = queue.gather_stage(harvester, job)

    assert committed[:2] == [0, 100]
    assert committed[-3:] == [0, 100, 150]  # the full search starts from nothing
    assert len(ids) == len(set(ids)) == 150
    assert _job_guids(job) == sorted(dataset["id"] for dataset in datasets)
    assert _gather_errors(job) == []


def test_gather_of_a_job_interrupted_before_keeps_its_objects_and_adds_the_rest(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    source = _source()
    job = HarvestJobObj(source=source)
    earlier = [HarvestObject(guid="dataset%d-id" % n, job=job, content="{}")
               for n in range(120)]
    model.Session.add_all(earlier)
    model.Session.commit()
    earlier_ids = [obj.id for obj in earlier]
    _add_search(remote, [[_dataset(n) for n in range(100)],
                         [_dataset(n) for n in range(100, 200)]])

    ids = queue.gather_stage(harvester, job)

    assert ids[:120] == earlier_ids
    assert len(ids) == len(set(ids)) == 200
    assert _job_guids(job) == sorted("dataset%d-id" % n for n in range(200))
    assert HarvestObject.get(earlier_ids[0]).content == "{}"
    assert _gather_errors(job) == []


def test_an_overridden_search_for_datasets_is_still_obeyed_by_the_gather(
    harvester: CKANHarvester, remote: responses.RequestsMock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    search = harvester._search_for_datasets

    def only_odd(remote_ckan_base_url: str,
                 fq_terms: Optional[list[str]] = None) -> list[dict[str, Any]]:
        found = search(remote_ckan_base_url, fq_terms)
        return [dataset for dataset in found if int(dataset["name"][7:]) % 2]

    monkeypatch.setattr(harvester, "_search_for_datasets", only_odd)
    _add_search(remote, [[_dataset(n) for n in range(100)],
                         [_dataset(n) for n in range(100, 250)]])

    ids, job = _gather(_source(), harvester)

    assert len(ids) == 125
    assert _job_guids(job) == sorted("dataset%d-id" % n for n in range(1, 250, 2))


def test_a_gather_killed_half_way_is_gathered_again_by_the_consumer_without_duplicates(
    harvester: CKANHarvester, remote: responses.RequestsMock,
    ckan_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    datasets = [_dataset(n) for n in range(250)]
    _add_search(remote, [datasets[0:100], datasets[100:200], datasets[200:250]])
    with private_site(ckan_config, monkeypatch, "redis"):
        # What a consumer killed after the second page leaves: the gather started,
        # the objects of two pages committed, none of them on the fetch queue.
        job = HarvestJobObj(source=_source())
        job.gather_started = datetime.datetime.utcnow()
        model.Session.add_all([HarvestObject(guid=dataset["id"], job=job,
                                             content=json.dumps(dataset))
                               for dataset in datasets[:200]])
        model.Session.commit()
        publisher = queue.get_gather_publisher()
        publisher.send({"harvest_job_id": job.id})
        publisher.close()

        assert queue.run_gather_consumer(stop_after=1, idle_timeout=10) == 1

        queued = [json.loads(body)["harvest_object_id"] for body in
                  queue.get_connection_redis().lrange(queue.get_fetch_routing_key(), 0, -1)]
    objects = model.Session.query(HarvestObject.id).filter(
        HarvestObject.harvest_job_id == job.id)
    assert _job_guids(job) == sorted(dataset["id"] for dataset in datasets)
    assert len(queued) == len(set(queued)) == 250
    assert set(queued) == {object_id for (object_id,) in objects}
    assert _gather_errors(job) == []


# --- import: tags, groups, organizations, extras -------------------------------------


def test_default_tags_are_added_once(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    already = _dataset(1, tags=[{"name": "geo"}])
    _add_search(remote, [[already, _dataset(2)]])
    config = {"default_tags": [{"name": "geo"}, {"name": "harvested"}]}

    results = _harvest(_source(config), harvester)

    tags = {guid: sorted(tag["name"] for tag in result["dataset"]["tags"])
            for guid, result in results.items()}
    assert tags == {"dataset1-id": ["geo", "harvested"],
                    "dataset2-id": ["geo", "harvested", "remote-tag"]}


def test_clean_tags_munges_remote_tag_names(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    tags = [{"name": "some spaces  here"}, {"name": "random:other%characters&_.here"}]
    _add_search(remote, [[_dataset(1, tags=tags)]])

    results = _harvest(_source({"clean_tags": True}), harvester)

    names = sorted(tag["name"] for tag in results["dataset1-id"]["dataset"]["tags"])
    assert names == ["randomothercharactershere", "some-spaces--here"]


def _remote_group(name: str = "remote-group", id_: str = REMOTE_GROUP_ID) -> dict[str, Any]:
    return {"id": id_, "name": name, "title": name.title(), "type": "group",
            "is_organization": False, "description": "From the remote",
            "packages": [], "users": [{"name": "remote-admin"}], "extras": [],
            "display_name": name.title(), "created": "2020-01-01T00:00:00"}


def test_remote_groups_are_dropped_by_default(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    factories.Group(name="remote-group")
    _add_search(remote, [[_dataset(1, groups=[_remote_group()])]])

    results = _harvest(_source(), harvester)

    assert results["dataset1-id"]["dataset"]["groups"] == []


def test_only_local_remote_groups_keep_the_groups_that_exist_locally(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    by_name = factories.Group(name="remote-group")
    by_id = factories.Group(name="other-name", id=str(uuid.uuid4()))
    groups = [_remote_group(), _remote_group("renamed", by_id["id"]),
              _remote_group("missing", str(uuid.uuid4()))]
    _add_search(remote, [[_dataset(1, groups=groups)]])

    results = _harvest(_source({"remote_groups": "only_local"}), harvester)

    local = sorted(group["id"] for group in results["dataset1-id"]["dataset"]["groups"])
    assert local == sorted([by_name["id"], by_id["id"]])
    assert len(_search_calls(remote)) == len(remote.calls)  # no group fetched


def test_create_remote_groups_creates_the_missing_groups(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    _add_search(remote, [[_dataset(1, groups=[_remote_group()])]])
    remote.get(ACTION_URL + "group_show", json=_answer(_remote_group()),
               match=[matchers.query_param_matcher({"id": REMOTE_GROUP_ID})])

    results = _harvest(_source({"remote_groups": "create"}, url=REMOTE + "/"), harvester)

    (group,) = results["dataset1-id"]["dataset"]["groups"]
    assert group["id"] == REMOTE_GROUP_ID
    assert group["name"] == "remote-group"
    local = toolkit.get_action("group_show")({"ignore_auth": True}, {"id": "remote-group"})
    assert local["description"] == "From the remote"


def test_create_remote_groups_skips_a_group_the_remote_does_not_have(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    _add_search(remote, [[_dataset(1, groups=[_remote_group()])]])
    remote.get(ACTION_URL + "group_show", status=404,
               json={"success": False, "error": {"message": "Not found"}})

    results = _harvest(_source({"remote_groups": "create"}), harvester)

    assert results["dataset1-id"]["report_status"] == "added"
    assert results["dataset1-id"]["dataset"]["groups"] == []
    assert _object_errors() == []


def test_broken_remote_group_answer_is_an_object_error(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    _add_search(remote, [[_dataset(1, groups=[_remote_group()]), _dataset(2)]])
    remote.get(ACTION_URL + "group_show", body="<html>Oops</html>", status=200,
               content_type="text/html")

    results = _harvest(_source({"remote_groups": "create"}), harvester)

    assert results["dataset1-id"]["state"] == "ERROR"
    (message,) = _object_errors()
    assert message == (
        "Could not fetch/decode remote group remote-group: The answer of "
        "%sgroup_show?id=%s was not JSON: '<html>Oops</html>'" % (ACTION_URL, REMOTE_GROUP_ID)
    )
    assert [dataset["id"] for dataset in _datasets()] == ["dataset2-id"]
    assert model.Session.query(model.Group).count() == 0


def test_remote_orgs_are_replaced_by_the_source_organization_by_default(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    source_org = factories.Organization()
    factories.Organization(id=REMOTE_ORG_ID, name="remote-org")
    _add_search(remote, [[_dataset(1)]])

    results = _harvest(_source(owner_org=source_org["id"]), harvester)

    assert results["dataset1-id"]["dataset"]["owner_org"] == source_org["id"]


def test_only_local_remote_orgs_use_the_local_copy_or_the_source_org(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    source_org = factories.Organization()
    local_copy = factories.Organization(id=REMOTE_ORG_ID, name="remote-org")
    _add_search(remote, [[_dataset(1), _dataset(2, owner_org=str(uuid.uuid4()))]])
    config = {"remote_orgs": "only_local"}

    results = _harvest(_source(config, owner_org=source_org["id"]), harvester)

    assert results["dataset1-id"]["dataset"]["owner_org"] == local_copy["id"]
    assert results["dataset2-id"]["dataset"]["owner_org"] == source_org["id"]


def _remote_org() -> dict[str, Any]:
    return {"id": REMOTE_ORG_ID, "name": "remote-org", "title": "Remote Org",
            "type": "organization", "is_organization": True, "packages": [],
            "users": [], "extras": [], "display_name": "Remote Org",
            "created": "2020-01-01T00:00:00", "description": "The remote org"}


def test_create_remote_orgs_creates_the_organization(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    _add_search(remote, [[_dataset(1)]])
    remote.get(ACTION_URL + "organization_show", json=_answer(_remote_org()),
               match=[matchers.query_param_matcher({"id": REMOTE_ORG_ID})])

    results = _harvest(_source({"remote_orgs": "create"}), harvester)

    assert results["dataset1-id"]["dataset"]["owner_org"] == REMOTE_ORG_ID
    org = toolkit.get_action("organization_show")({"ignore_auth": True}, {"id": "remote-org"})
    assert org["title"] == "Remote Org"


def test_create_remote_orgs_falls_back_to_the_group_endpoint(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    _add_search(remote, [[_dataset(1)]])
    remote.get(ACTION_URL + "organization_show", status=404,
               json={"success": False, "error": {"message": "Not found"}})
    remote.get(ACTION_URL + "group_show", json=_answer(_remote_org()),
               match=[matchers.query_param_matcher({"id": REMOTE_ORG_ID})])

    results = _harvest(_source({"remote_orgs": "create"}), harvester)

    assert results["dataset1-id"]["dataset"]["owner_org"] == REMOTE_ORG_ID


def test_create_remote_orgs_uses_the_source_org_when_the_remote_has_none(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    source_org = factories.Organization()
    _add_search(remote, [[_dataset(1)]])
    for action in ("organization_show", "group_show"):
        remote.get(ACTION_URL + action, status=404,
                   json={"success": False, "error": {"message": "Not found"}})

    results = _harvest(_source({"remote_orgs": "create"}, owner_org=source_org["id"]),
                       harvester)

    assert results["dataset1-id"]["dataset"]["owner_org"] == source_org["id"]
    assert _object_errors() == []


def test_failing_remote_org_answer_is_an_object_error(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    source_org = factories.Organization()
    _add_search(remote, [[_dataset(1)]])
    remote.get(ACTION_URL + "organization_show", status=500, body="Internal error")

    results = _harvest(_source({"remote_orgs": "create"}, owner_org=source_org["id"]),
                       harvester)

    assert results["dataset1-id"]["state"] == "ERROR"
    (message,) = _object_errors()
    assert message.startswith(
        "Could not fetch/decode remote organization %s: HTTP error: 500" % REMOTE_ORG_ID)
    assert _datasets() == []
    org_calls = [call for call in remote.calls if "organization_show" in call.request.url]
    assert len(org_calls) == 1 + ckanharvester.HTTP_RETRIES


def test_default_groups_are_added_once(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    group = factories.Group(name="local-group")
    remote_copy = _remote_group("local-group", group["id"])
    _add_search(remote, [[_dataset(1, groups=[remote_copy]), _dataset(2)]])
    config = {"default_groups": ["local-group"], "remote_groups": "only_local"}

    results = _harvest(_source(config), harvester)

    for guid in ("dataset1-id", "dataset2-id"):
        groups = results[guid]["dataset"]["groups"]
        assert [g["id"] for g in groups] == [group["id"]]


def test_default_groups_work_without_stored_group_dicts(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    group = factories.Group(name="local-group")
    source = _source()
    source.config = json.dumps({"default_groups": ["local-group"]})  # not validated
    source.save()
    _add_search(remote, [[_dataset(1)]])

    results = _harvest(source, harvester)

    assert [g["id"] for g in results["dataset1-id"]["dataset"]["groups"]] == [group["id"]]


def test_default_extras_fill_in_placeholders_and_keep_remote_values(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    _add_search(remote, [[_dataset(1)]])
    config = {"default_extras": {
        "remote_extra": "ignored: the remote value wins",
        "link": "{harvest_source_url}/dataset/{dataset_id}",
        "ids": "{harvest_source_id} {harvest_job_id} {harvest_object_id}",
        "source_title": "{harvest_source_title}",
    }}
    source = _source(config, url=REMOTE + "/")

    results = _harvest(source, harvester)

    result = results["dataset1-id"]
    job = model.Session.query(HarvestJob).filter_by(source_id=source.id).one()
    assert _extras(result["dataset"]) == {
        "remote_extra": "remote value",
        "link": "http://remote.example.com/dataset/dataset1-id",
        "ids": "%s %s %s" % (source.id, job.id, result["obj_id"]),
        "source_title": source.title,
    }


def test_override_extras_replaces_remote_values(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    _add_search(remote, [[_dataset(1)]])
    config = {"default_extras": {"remote_extra": "local"}, "override_extras": True}

    results = _harvest(_source(config), harvester)

    assert _extras(results["dataset1-id"]["dataset"]) == {"remote_extra": "local"}


def test_unknown_placeholder_is_an_object_error(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    _add_search(remote, [[_dataset(1)]])
    config = {"default_extras": {"bad": "{no_such_placeholder}"}}

    results = _harvest(_source(config), harvester)

    assert results["dataset1-id"]["state"] == "ERROR"
    assert _object_errors() == ["'no_such_placeholder'"]
    assert _datasets() == []


def test_invalid_remote_dataset_is_an_object_error(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    _add_search(remote, [[_dataset(1, resources=[{"id": "not-a-uuid", "url": "x"}])]])

    results = _harvest(_source(), harvester)

    assert results["dataset1-id"]["state"] == "ERROR"
    (message,) = _object_errors()
    assert message.startswith("Invalid package with GUID dataset1-id: {'resources'")
    assert _datasets() == []


def test_object_without_content_is_an_object_error(harvester: CKANHarvester) -> None:
    job = HarvestJobObj(source=_source())
    obj = HarvestObject(guid="dataset1-id", job=job)
    obj.save()

    assert harvester.import_stage(obj) is False
    assert _object_errors() == ["Empty content for object %s" % obj.id]


# --- user and read_only ---------------------------------------------------------------


@pytest.fixture
def org_users() -> dict[str, Any]:
    """An organization with a harvest user, another editor and an admin."""
    users = {role: factories.User(name=role) for role in ("harvester", "editor", "admin")}
    org = factories.Organization(users=[
        {"name": "harvester", "capacity": "editor"},
        {"name": "editor", "capacity": "editor"},
        {"name": "admin", "capacity": "admin"},
    ])
    return dict(users, org=org)


def test_harvest_runs_as_the_configured_user(
    harvester: CKANHarvester, remote: responses.RequestsMock, org_users: dict[str, Any]
) -> None:
    _add_search(remote, [[_dataset(1)]])
    source = _source({"user": "harvester"}, owner_org=org_users["org"]["id"])

    results = _harvest(source, harvester)

    dataset = results["dataset1-id"]["dataset"]
    assert dataset["creator_user_id"] == org_users["harvester"]["id"]
    assert dataset["owner_org"] == org_users["org"]["id"]


def test_configured_user_needs_the_right_to_create_the_dataset(
    harvester: CKANHarvester, remote: responses.RequestsMock, org_users: dict[str, Any]
) -> None:
    outsider = factories.User()
    _add_search(remote, [[_dataset(1)]])
    source = _source({"user": outsider["name"]}, owner_org=org_users["org"]["id"])

    results = _harvest(source, harvester)

    assert results["dataset1-id"]["state"] == "ERROR"
    assert _object_errors() == [
        "The harvest user %s may not write dataset dataset1-id: User %s not authorized "
        "to add dataset to this organization" % (outsider["name"], outsider["name"])
    ]
    assert _datasets() == []


def test_deleted_configured_user_is_a_gather_error(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    user = factories.User()
    source = _source({"user": user["name"]})
    model.User.get(user["id"]).delete()
    model.Session.commit()
    _add_search(remote, [[_dataset(1)]])

    results, job = _harvest_job(source, harvester)

    assert results == {}
    assert _gather_errors(job) == [
        "The harvest user %s of the source configuration does not exist" % user["name"]
    ]
    assert len(remote.calls) == 0
    _assert_nothing_imported(job)


def _may(user: str, action: str, data_dict: dict[str, Any]) -> bool:
    try:
        toolkit.check_access(action, {"user": user}, data_dict)
    except toolkit.NotAuthorized:
        return False
    return True


def test_read_only_datasets_are_editable_only_by_the_harvest_user_and_sysadmins(
    harvester: CKANHarvester, remote: responses.RequestsMock, org_users: dict[str, Any]
) -> None:
    org_id = org_users["org"]["id"]
    _add_search(remote, [[_dataset(1)]])
    _harvest(_source({"user": "harvester", "read_only": True}, owner_org=org_id), harvester)
    local_dataset = factories.Dataset(owner_org=org_id)
    sysadmin = factories.Sysadmin()
    harvested = {"id": "dataset1-id"}
    resource = {"id": _resource_id(1)}
    checks = [
        ("package_update", harvested), ("package_patch", harvested),
        ("package_delete", harvested), ("resource_update", resource),
        ("resource_delete", resource),
        ("resource_create", {"package_id": "dataset1-id", "url": "http://x"}),
    ]

    allowed = {user: [_may(user, action, data) for action, data in checks]
               for user in ("editor", "admin", "harvester", sysadmin["name"])}

    assert allowed == {"editor": [False] * 6, "admin": [False] * 6,
                       "harvester": [True] * 6, sysadmin["name"]: [True] * 6}
    with pytest.raises(toolkit.NotAuthorized) as excinfo:
        toolkit.check_access("package_update", {"user": "editor"}, harvested)
    assert "harvested read-only" in str(excinfo.value)
    assert _may("editor", "package_update", {"id": local_dataset["id"]})
    assert not _may("admin", "bulk_update_delete",
                    {"org_id": org_id, "datasets": ["dataset1-id", local_dataset["id"]]})
    assert _may("admin", "bulk_update_delete",
                {"org_id": org_id, "datasets": [local_dataset["id"]]})


def test_harvested_datasets_stay_editable_without_read_only(
    harvester: CKANHarvester, remote: responses.RequestsMock, org_users: dict[str, Any]
) -> None:
    org_id = org_users["org"]["id"]
    _add_search(remote, [[_dataset(1)]])
    _harvest(_source({"user": "harvester"}, owner_org=org_id), harvester)

    assert _may("editor", "package_update", {"id": "dataset1-id"})
    assert _may("admin", "bulk_update_delete", {"org_id": org_id, "datasets": ["dataset1-id"]})


# --- HTTP ----------------------------------------------------------------------------------


def test_api_key_and_user_agent_are_sent(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    _add_search(remote, [[_dataset(1)]])

    _gather(_source({"api_key": "secret-key", "user_agent": "my-harvester/1.0"}), harvester)

    headers = remote.calls[0].request.headers
    assert headers["Authorization"] == "secret-key"
    assert headers["User-Agent"] == "my-harvester/1.0"


def test_server_error_then_success_is_retried(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    remote.get(SEARCH_URL, status=503, body="busy",
               match=[matchers.query_param_matcher(_search_params(0))])
    _add_search(remote, [[_dataset(1), _dataset(2)]])

    results, job = _harvest_job(_source(), harvester)

    assert sorted(results) == ["dataset1-id", "dataset2-id"]
    assert [call["start"] for call in _search_calls(remote)] == [["0"], ["0"], ["100"]]
    assert _gather_errors(job) == []
    assert len(_datasets()) == 2


def _search_error(job: HarvestJob) -> str:
    (message,) = _gather_errors(job)
    prefix = ("Unable to search remote CKAN for datasets:Error sending request to search "
              "remote CKAN instance %s using URL " % REMOTE)
    assert message.startswith(prefix), message
    assert message.endswith("url:%sterms:[]" % REMOTE)
    return message


def test_persistent_server_error_is_a_gather_error_and_imports_nothing(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    remote.get(SEARCH_URL, status=500, body="<h1>Internal Server Error</h1>")

    results, job = _harvest_job(_source(), harvester)

    message = _search_error(job)
    assert "Error: HTTP error: 500 %s?rows=100&start=0&sort=id+asc" % SEARCH_URL in message
    assert len(remote.calls) == 1 + ckanharvester.HTTP_RETRIES
    _assert_nothing_imported(job)


def test_the_retry_policy_follows_a_patch_of_the_harvester_module(
    harvester: CKANHarvester, remote: responses.RequestsMock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ckanharvester, "HTTP_RETRIES", 1)
    remote.get(SEARCH_URL, status=503, body="busy")

    results, job = _harvest_job(_source(), harvester)

    assert "Error: HTTP error: 503 " in _search_error(job)
    assert len(remote.calls) == 2
    _assert_nothing_imported(job)


def test_failure_on_a_later_page_imports_nothing(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    remote.get(SEARCH_URL, json=_search_result([_dataset(n) for n in range(100)], 150),
               match=[matchers.query_param_matcher(_search_params(0))])
    remote.get(SEARCH_URL, status=502, body="Bad gateway",
               match=[matchers.query_param_matcher(_search_params(100))])

    results, job = _harvest_job(_source(), harvester)

    assert "HTTP error: 502" in _search_error(job)
    _assert_nothing_imported(job)


@pytest.mark.parametrize("body, content_type, expected", [
    ("<!DOCTYPE html><html><body>Welcome</body></html>", "text/html",
     "Response from remote CKAN was not JSON: '<!DOCTYPE html><html>"),
    ('{"success": true, "result": {"count": 2, "results": [{"id": "a"}, {"id": ',
     "application/json", """Response from remote CKAN was not JSON: '{"success": true"""),
    ('{"success": false, "error": {"message": "Search index unavailable"}}',
     "application/json", "reports a failure: {'message': 'Search index unavailable'}"),
    ('{"result": {"results": []}}', "application/json",
     "is not a CKAN action API answer"),
    ('{"success": true, "result": "oops"}', "application/json", "no list of results"),
    ('{"success": true, "result": {"results": [{"name": "no-id"}]}}', "application/json",
     "dataset without an id"),
])
def test_unusable_search_answer_is_a_gather_error_and_imports_nothing(
    harvester: CKANHarvester, remote: responses.RequestsMock,
    body: str, content_type: str, expected: str,
) -> None:
    remote.get(SEARCH_URL, body=body, content_type=content_type)

    results, job = _harvest_job(_source(), harvester)

    (message,) = _gather_errors(job)
    assert message.startswith("Unable to search remote CKAN for datasets:")
    assert expected in message, message
    _assert_nothing_imported(job)


def test_huge_answer_is_refused(
    harvester: CKANHarvester, remote: responses.RequestsMock,
    monkeypatch: pytest.MonkeyPatch, ckan_config: dict[str, Any],
) -> None:
    monkeypatch.setitem(ckan_config, "ckan.harvest.max_response_size", 5000)
    _add_search(remote, [[_dataset(n) for n in range(20)]])

    results, job = _harvest_job(_source(), harvester)

    assert ("Error: Answer too large or too slow: more than 5000 bytes "
            "(ckan.harvest.max_response_size)") in _search_error(job)
    _assert_nothing_imported(job)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_refused_connection_is_a_gather_error(harvester: CKANHarvester) -> None:
    url = "http://127.0.0.1:%d" % _closed_port()

    results, job = _harvest_job(_source(url=url), harvester)

    (message,) = _gather_errors(job)
    assert "Error: Request error: " in message
    assert "Connection refused" in message
    _assert_nothing_imported(job)


def _gather_error_against(harvester: CKANHarvester, server: _Server,
                          behaviour: Callable[[http.server.BaseHTTPRequestHandler], None]
                          ) -> str:
    """Harvest a remote answering with ``behaviour``: the job's only gather error
    (nothing imported), within seconds."""
    server.behaviour = behaviour
    url = "http://127.0.0.1:%d" % server.server_address[1]

    started = time.monotonic()
    results, job = _harvest_job(_source(url=url), harvester)

    assert time.monotonic() - started < 10
    _assert_nothing_imported(job)
    (message,) = _gather_errors(job)
    return message


def _answer_headers(handler: http.server.BaseHTTPRequestHandler, length: int) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(length))
    handler.end_headers()


def test_remote_that_never_answers_times_out(
    harvester: CKANHarvester, local_server: _Server, monkeypatch: pytest.MonkeyPatch,
    ckan_config: dict[str, Any],
) -> None:
    monkeypatch.setitem(ckan_config, "ckan.harvest.http_read_timeout", 1)

    message = _gather_error_against(harvester, local_server,
                                    lambda handler: time.sleep(2.5))

    assert "Error: Request error: " in message
    assert "Read timed out" in message
    assert local_server.requests_seen == 2  # a read timeout is retried once


def _dripping_answer(handler: http.server.BaseHTTPRequestHandler) -> None:
    """A valid search answer, one byte every 0.2 s: never a read timeout."""
    body = json.dumps(_search_result([_dataset(1)])).encode()
    _answer_headers(handler, len(body))
    try:
        for index in range(len(body)):
            handler.wfile.write(body[index:index + 1])
            handler.wfile.flush()
            time.sleep(0.2)
    except OSError:  # the harvester gave up and closed the connection
        pass


def test_answer_dripping_in_beyond_the_time_limit_is_refused(
    harvester: CKANHarvester, local_server: _Server, monkeypatch: pytest.MonkeyPatch,
    ckan_config: dict[str, Any],
) -> None:
    monkeypatch.setitem(ckan_config, "ckan.harvest.max_response_seconds", 1)

    message = _gather_error_against(harvester, local_server, _dripping_answer)

    assert ("Answer too large or too slow: not received within 1 seconds "
            "(ckan.harvest.max_response_seconds)") in message


def _announcing_a_huge_answer(handler: http.server.BaseHTTPRequestHandler) -> None:
    _answer_headers(handler, 10 ** 12)
    handler.wfile.write(b'{"success": true, ')
    handler.wfile.flush()


def test_announced_length_over_the_size_limit_is_refused_before_reading(
    harvester: CKANHarvester, local_server: _Server
) -> None:
    message = _gather_error_against(harvester, local_server, _announcing_a_huge_answer)

    assert "more than 104857600 bytes (ckan.harvest.max_response_size)" in message


def _truncated_answer(handler: http.server.BaseHTTPRequestHandler) -> None:
    body = json.dumps(_search_result([_dataset(1), _dataset(2)])).encode()
    _answer_headers(handler, len(body))
    handler.wfile.write(body[: len(body) // 2])
    handler.wfile.flush()
    handler.close_connection = True


def test_truncated_answer_is_a_gather_error(
    harvester: CKANHarvester, local_server: _Server
) -> None:
    message = _gather_error_against(harvester, local_server, _truncated_answer)

    assert "Error: Request error: " in message
    assert "IncompleteRead" in message


# --- the patchable requests.get path ---------------------------------------------------


def test_patched_requests_get_intercepts_remote_requests(harvester: CKANHarvester) -> None:
    harvester.config = {"api_key": "secret-key"}
    with mock.patch("ckanext.harvest.harvesters.ckanharvester.requests.get") as get:
        get.return_value.text = '{"success": true}'
        content = harvester._get_content(SEARCH_URL)

    assert content == '{"success": true}'
    get.assert_called_once_with(SEARCH_URL, headers={"Authorization": "secret-key"},
                                timeout=(2, 2))


def test_patched_requests_get_answers_are_status_checked(harvester: CKANHarvester) -> None:
    harvester.config = {}
    not_found = requests.Response()
    not_found.status_code = 404
    not_found.url = SEARCH_URL
    with mock.patch("ckanext.harvest.harvesters.ckanharvester.requests.get",
                    return_value=not_found):
        with pytest.raises(ContentNotFoundError) as excinfo:
            harvester._get_content(SEARCH_URL)

    assert str(excinfo.value) == "HTTP error: 404 %s" % SEARCH_URL
    assert isinstance(excinfo.value, ContentFetchError)


def test_the_size_limit_follows_a_patch_of_the_harvester_config(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    harvester.config = {}
    remote.get(SEARCH_URL, body="x" * 100)
    with mock.patch("ckanext.harvest.harvesters.ckanharvester.config",
                    {"ckan.harvest.max_response_size": 10}):
        with pytest.raises(ContentFetchError, match="more than 10 bytes"):
            harvester._get_content(SEARCH_URL)

    assert harvester._get_content(SEARCH_URL) == "x" * 100


# --- SSRF guard (docs/security.rst) --------------------------------------------------


@pytest.mark.ckan_config("ckan.harvest.ssrf_allowed_hosts", "")
def test_a_source_on_a_loopback_address_is_refused_without_a_request(
    harvester: CKANHarvester, local_server: _Server
) -> None:
    local_server.behaviour = lambda handler: handler.send_error(500)
    url = "http://127.0.0.1:%d" % local_server.server_address[1]

    results, job = _harvest_job(_source(url=url), harvester)

    (message,) = _gather_errors(job)
    assert "Refusing to fetch {}/api/3/action/package_search".format(url) in message
    assert "127.0.0.1 is a loopback address" in message
    assert "ckan.harvest.ssrf_allowed_hosts" in message
    assert local_server.requests_seen == 0
    _assert_nothing_imported(job)


@pytest.mark.ckan_config("ckan.harvest.ssrf_allowed_hosts", "remote.example.com")
def test_a_redirect_to_a_metadata_address_is_refused(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    remote.get(SEARCH_URL, status=302,
               headers={"Location": "http://169.254.169.254/latest/meta-data/"})

    results, job = _harvest_job(_source(), harvester)

    message = _search_error(job)
    assert ("Refusing to fetch http://169.254.169.254/latest/meta-data/: "
            "169.254.169.254 is a link-local (metadata service) address") in message
    _assert_nothing_imported(job)


def test_config_values_are_not_logged(
    harvester: CKANHarvester, remote: responses.RequestsMock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _add_search(remote, [[_dataset(1)]])
    caplog.set_level("DEBUG", logger="ckanext.harvest")

    _harvest(_source({"api_key": "top-secret-token"}), harvester)

    assert "api_key" in caplog.text  # the option names are logged
    assert "top-secret-token" not in caplog.text
