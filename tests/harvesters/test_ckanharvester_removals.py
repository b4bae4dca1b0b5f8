"""The CKAN harvester and ``delete_missing``: what it lists, what it reports.

The remote is a fake CKAN (``responses``) answering ``package_search`` (full,
incremental and ``fl=id`` listings) and ``package_show`` from a dict the test
changes; the local side is the real CKAN, database and search index. The
framework's part (grace period, circuit breaker, withdrawal) is tested in
``tests/lib/test_removals.py``; the two-CKAN tests run it all end to end.
"""
from __future__ import annotations

import datetime
import json
from typing import Any, Iterator, Optional
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from ckan import model
from ckan.plugins import toolkit
from ckan.tests import factories

from ckanext.harvest.harvesters import ckanharvester
from ckanext.harvest.harvesters.ckanharvester import CKANHarvester
from ckanext.harvest.lib import removals
from ckanext.harvest.model import HarvestGatherError, HarvestJob, HarvestObject
from ckanext.harvest.tests.factories import HarvestJobObj, HarvestSourceObj
from ckanext.harvest.tests.lib import run_harvest_job
from tests.support.marks import harvest_site

#: The extras removal sync writes (content hashes write others on every import).
REMOVAL_MARKS = ("missing_since", "removal_held", "harvest_withdrawal")
pytestmark = harvest_site("harvest ckan_harvester")

REMOTE = "http://remote.example.com"
SEARCH_URL = REMOTE + "/api/3/action/package_search"
SHOW_URL = REMOTE + "/api/3/action/package_show"
MODIFIED = "2024-03-01T10:00:00"


class FakeRemote:
    """A remote CKAN whose datasets (by id) the test sets; it records the
    query of every request."""

    def __init__(self, rsps: responses.RequestsMock) -> None:
        self.datasets: dict[str, dict[str, Any]] = {}
        self.queries: list[dict[str, list[str]]] = []
        self.short_count = 0  # datasets the listing counts but does not return
        rsps.add_callback(responses.GET, SEARCH_URL, callback=self._search)
        rsps.add_callback(responses.GET, SHOW_URL, callback=self._show)
        rsps.add_passthru(toolkit.config["solr_url"])

    def _search(self, request: Any) -> tuple[int, dict[str, str], str]:
        query = parse_qs(urlsplit(request.url).query)
        self.queries.append(query)
        start, rows = int(query["start"][0]), int(query["rows"][0])
        datasets = sorted(self.datasets.values(), key=lambda d: d["id"])
        if "metadata_modified" in query.get("fq", [""])[0]:
            datasets = [d for d in datasets if d["metadata_modified"] > "2025"]
        page = datasets[start:start + rows]
        if query.get("fl") == ["id"]:
            page = [{"id": d["id"]} for d in page]
        result = {"count": len(datasets) + self.short_count, "results": page}
        return 200, {}, json.dumps({"success": True, "result": result})

    def _show(self, request: Any) -> tuple[int, dict[str, str], str]:
        query = parse_qs(urlsplit(request.url).query)
        self.queries.append(query)
        dataset = self.datasets.get(query["id"][0])
        if dataset is None:
            return 404, {}, json.dumps({"success": False, "error": {}})
        return 200, {}, json.dumps({"success": True, "result": dataset})

    def listings(self) -> list[dict[str, list[str]]]:
        return [q for q in self.queries if q.get("fl") == ["id"]]


@pytest.fixture
def remote() -> Iterator[FakeRemote]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeRemote(rsps)


@pytest.fixture
def harvester(monkeypatch: pytest.MonkeyPatch) -> Iterator[CKANHarvester]:
    monkeypatch.setattr(ckanharvester, "HTTP_BACKOFF_FACTOR", 0)
    instance = CKANHarvester()
    _reset(instance)
    yield instance
    _reset(instance)


def _reset(instance: CKANHarvester) -> None:
    for attribute in ("config", "api_version", "_user_name", "_site_user", "_session"):
        vars(instance).pop(attribute, None)


@pytest.fixture
def org() -> dict[str, Any]:
    return factories.Organization()


def _dataset(n: int, org_id: str, modified: str = MODIFIED) -> dict[str, Any]:
    return {"id": "dataset%d-id" % n, "name": "dataset%d" % n, "title": "Dataset %d" % n,
            "type": "dataset", "state": "active", "private": False,
            "metadata_modified": modified, "owner_org": org_id, "resources": [],
            "tags": [], "groups": [], "extras": []}


def _source(org: dict[str, Any], delete_missing: Optional[dict[str, Any]]) -> Any:
    config = json.dumps({"delete_missing": delete_missing}) if delete_missing else ""
    return HarvestSourceObj(url=REMOTE, source_type="ckan", config=config,
                            owner_org=org["id"])


def _job(source: Any, harvester: CKANHarvester) -> tuple[dict[str, Any], HarvestJob]:
    job = HarvestJobObj(source=source)
    return run_harvest_job(job, harvester), job


def _state(package_id: str) -> tuple[str, bool, str]:
    package = model.Session.query(model.Package).get(package_id)
    model.Session.refresh(package)
    return package.state, package.private, package.name


def _gather_errors(job: HarvestJob) -> list[str]:
    return [e.message for e in
            model.Session.query(HarvestGatherError).filter_by(harvest_job_id=job.id)]


def _filled(remote: FakeRemote, org: dict[str, Any], count: int = 3) -> None:
    remote.datasets = {d["id"]: d for d in (_dataset(n, org["id"])
                                             for n in range(1, count + 1))}


DELETE_NOW = {"mode": "delete", "after_days": 0, "max_fraction": 1}


# --- keep (the default) -----------------------------------------------------------------


def test_without_delete_missing_the_remote_gets_the_same_requests_as_before(
        harvester, remote, org):
    _filled(remote, org)
    source = _source(org, None)
    _job(source, harvester)
    del remote.datasets["dataset1-id"]
    remote.queries.clear()

    _, job = _job(source, harvester)

    assert [sorted(q) for q in remote.queries] == [["fq", "rows", "sort", "start"]]
    assert "metadata_modified" in remote.queries[0]["fq"][0]
    assert _state("dataset1-id")[0] == "active"
    assert model.Session.query(removals.HarvestObjectExtra).filter(
        removals.HarvestObjectExtra.key.in_(REMOVAL_MARKS)).count() == 0


# --- what the harvester lists and reports -----------------------------------------------


def test_an_incremental_job_lists_ids_only_and_withdraws_what_vanished(
        harvester, remote, org):
    _filled(remote, org)
    source = _source(org, DELETE_NOW)
    _job(source, harvester)
    del remote.datasets["dataset1-id"]
    remote.queries.clear()

    results, job = _job(source, harvester)

    assert _state("dataset1-id")[0] == "deleted"
    assert results["dataset1-id"]["report_status"] == "deleted"
    assert [_state("dataset%d-id" % n)[0] for n in (2, 3)] == ["active", "active"]
    # The incremental search (nothing modified), then the id listing: two pages.
    assert len(remote.queries) == 3
    assert "metadata_modified" in remote.queries[0]["fq"][0]
    assert [(q["fl"], q["start"]) for q in remote.listings()] == [
        (["id"], ["0"]), (["id"], ["100"])]
    assert _gather_errors(job) == []


def test_a_listing_shorter_than_the_remote_count_withdraws_nothing(
        harvester, remote, org):
    _filled(remote, org)
    source = _source(org, DELETE_NOW)
    _job(source, harvester)
    del remote.datasets["dataset1-id"]
    remote.short_count = 1

    _, job = _job(source, harvester)

    assert _state("dataset1-id")[0] == "active"
    assert _gather_errors(job) == [
        "Could not list the remote datasets, no removal was checked: the remote "
        "counts 3 datasets, 2 were listed"]
    assert model.Session.query(removals.HarvestObjectExtra).filter(
        removals.HarvestObjectExtra.key.in_(REMOVAL_MARKS)).count() == 0


def test_an_empty_remote_trips_the_circuit_breaker(harvester, remote, org):
    _filled(remote, org)
    source = _source(org, DELETE_NOW)
    _job(source, harvester)
    remote.datasets = {}

    _, job = _job(source, harvester)

    assert [_state("dataset%d-id" % n)[0] for n in (1, 2, 3)] == ["active"] * 3
    assert removals.held_count(job.id) == 3
    assert any("the source listed no dataset at all" in message
               for message in _gather_errors(job))


def test_a_withdrawn_dataset_listed_again_is_restored_by_an_incremental_job(
        harvester, remote, org):
    _filled(remote, org)
    source = _source(org, DELETE_NOW)
    _job(source, harvester)
    dataset = remote.datasets.pop("dataset1-id")
    _job(source, harvester)
    assert _state("dataset1-id")[0] == "deleted"
    # The withdrawal left non-current objects: the next job gathers everything;
    # once it is clean, the one after is incremental.
    _job(source, harvester)
    remote.datasets["dataset1-id"] = dataset  # metadata_modified unchanged
    remote.queries.clear()

    results, job = _job(source, harvester)

    assert _state("dataset1-id") == ("active", False, "dataset1")
    assert results["dataset1-id"]["report_status"] == "updated"
    assert "metadata_modified" in remote.queries[0]["fq"][0]
    assert [q["id"] for q in remote.queries if "id" in q] == [["dataset1-id"]]
    current = model.Session.query(HarvestObject).filter_by(
        package_id="dataset1-id", current=True).count()
    assert current == 1


# --- validation ----------------------------------------------------------------------


@pytest.mark.parametrize("delete_missing, message", [
    ({"mode": "remove"}, "delete_missing.mode must be one of delete, private, keep "
                         "(got 'remove')"),
    ({"mode": "delete", "max_fraction": "a lot"},
     "delete_missing.max_fraction must be a number from 0 to 1 (got 'a lot')"),
    ([], 'delete_missing must be an object such as {"mode": "delete", '
         '"after_days": 7, "max_fraction": 0.1}'),
])
def test_an_invalid_delete_missing_is_refused_with_a_clear_message(
        delete_missing, message):
    sysadmin = factories.Sysadmin()

    with pytest.raises(toolkit.ValidationError) as raised:
        toolkit.get_action("harvest_source_create")({"user": sysadmin["name"]}, {
            "name": "bad-removals", "url": REMOTE, "source_type": "ckan",
            "config": json.dumps({"delete_missing": delete_missing}),
        })

    assert raised.value.error_dict == {
        "config": ["Error parsing the configuration options: " + message]}


def test_validate_config_accepts_a_complete_delete_missing(harvester):
    config = json.dumps({"delete_missing": {"mode": "private", "after_days": 2.5,
                                            "max_fraction": 0.25}})

    assert harvester.validate_config(config) == config
    assert datetime.timedelta(days=2.5)  # after_days may be fractional
