"""harvest_source_preview: what a job would do, and nothing written.

The nothing-written tests compare the whole database (every table's rows), the
search index and the queues before and after a preview, for the test harvester
(a third-party-style harvester) and the CKAN harvester (remote mocked with
``responses``), on both queue backends.
"""
from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
import responses
import sqlalchemy as sa
from ckan import model
from ckan.lib import search
from ckan.plugins import toolkit
from ckan.tests import factories

from ckanext.harvest import mq
from ckanext.harvest.lib import preview
from ckanext.harvest.model import HarvestJob
from ckanext.harvest.tests import factories as harvest_factories
from ckanext.harvest.tests.lib import run_harvest_job
from tests.mq import BROKERS, private_site, take
from tests.support.marks import harvest_site

pytestmark = harvest_site("harvest ckan_harvester test_harvester test_harvester2")

REMOTE = "http://remote.example.com"
SEARCH_URL = REMOTE + "/api/3/action/package_search"


# --- what must not change ----------------------------------------------------------


def _database() -> dict[str, Any]:
    """Every table of the database: its row count and a digest of its rows."""
    model.Session.remove()
    with model.meta.engine.connect() as conn:
        tables = [row[0] for row in conn.execute(sa.text(
            "select tablename from pg_tables where schemaname = 'public' order by 1"))]
        return {table: tuple(conn.execute(sa.text(
            'select count(*), md5(coalesce(string_agg(t::text, \'|\' order by t::text), \'\'))'
            ' from "%s" t' % table)).one()) for table in tables}


def _index() -> list[tuple[Any, ...]]:
    result = search.query_for(model.Package).run(
        {"q": "*:*", "rows": 1000, "fl": "id,metadata_modified,harvest_object_id"},
        permission_labels=None)
    return sorted(tuple(sorted(r.items())) for r in result["results"])


@pytest.fixture(params=BROKERS)
def unchanged(request, ckan_config, monkeypatch) -> Iterator[Any]:
    """Call it after arranging: it snapshots; at teardown, asserts nothing changed
    and that nothing was queued (on the broker of the parameter)."""
    with private_site(ckan_config, monkeypatch, request.param) as site:
        snapshots: list[tuple[Any, Any]] = []

        def snapshot() -> None:
            snapshots.append((_database(), _index()))

        yield snapshot
        assert snapshots, "the test did not take a snapshot"
        assert (_database(), _index()) == snapshots[0]
        for spec in (mq.gather_spec(site), mq.fetch_spec(site)):
            with mq.open_queue(ckan_config, spec) as backend:
                assert take(backend, timeout=0.5) is None


def _call(user: str, **data: Any) -> Any:
    return toolkit.get_action("harvest_source_preview")({"user": user}, data)


def _test_source(datasets: list[dict[str, Any]], **config: Any) -> Any:
    return harvest_factories.HarvestSourceObj(
        source_type="test", config=json.dumps(dict(config, datasets=datasets)))


# --- a third-party-style harvester ------------------------------------------------


def test_preview_reports_each_record_and_writes_nothing(sysadmin, unchanged):
    source = _test_source([{"guid": "old", "title": "Old title"}])
    run_harvest_job(HarvestJob(source=source, status="New"), _harvester("test"))
    source.config = json.dumps({
        "datasets": [{"guid": "old", "title": "New title"}, {"guid": "new", "title": "Fresh"},
                     {"guid": "bad", "title": "Bad"}, {"guid": "same", "title": "Same"}],
        "import": {"bad": "error", "same": "unchanged"}})
    source.save()
    unchanged()

    result = _call(sysadmin["name"], id=source.id)

    by_guid = {r["guid"]: r for r in result["records"]}
    assert result["gathered"] == 4 and result["gather_errors"] == []
    assert [r["guid"] for r in result["records"]] == ["old", "new", "bad", "same"]
    assert (by_guid["old"]["outcome"], by_guid["new"]["outcome"],
            by_guid["bad"]["outcome"], by_guid["same"]["outcome"]) == (
        "update", "create", "error", "not modified")
    assert {"field": "title", "change": "change", "old": "Old title", "new": "New title"} \
        in by_guid["old"]["changes"]
    assert by_guid["new"]["dataset"]["name"] == "harvested-new"
    assert by_guid["bad"]["errors"] and by_guid["bad"]["dataset"] is None


def test_preview_stops_at_the_limit(sysadmin, unchanged):
    source = _test_source([{"guid": "g%d" % n, "title": "T%d" % n} for n in range(5)])
    unchanged()

    result = _call(sysadmin["name"], id=model.Package.get(source.id).name, limit=2)

    assert result["gathered"] == 5 and result["limit"] == 2
    assert [r["guid"] for r in result["records"]] == ["g0", "g1"]
    assert result["source_id"] == source.id


def test_preview_of_a_gather_error(sysadmin, unchanged):
    source = _test_source([], gather="raise")
    unchanged()

    result = _call(sysadmin["name"], id=source.id)

    assert result["records"] == [] and result["gathered"] == 0
    assert result["gather_errors"] == [
        "Gather stage failed: RuntimeError: Gather stage raised on purpose"]


def test_preview_of_a_source_not_saved_yet(sysadmin, unchanged):
    org = factories.Organization()
    unchanged()

    result = _call(sysadmin["name"], url="http://new.example.org/", name="not-saved",
                   title="Not saved", source_type="test", owner_org=org["id"],
                   config=json.dumps({"datasets": [{"guid": "n1", "title": "N"}]}))

    assert result["source_id"] is None
    assert [(r["guid"], r["outcome"]) for r in result["records"]] == [("n1", "create")]


# --- the CKAN harvester -------------------------------------------------------------


def _remote_dataset(n: int, title: str) -> dict[str, Any]:
    return {"id": "preview-%d-id" % n, "name": "preview-%d" % n, "title": title,
            "type": "dataset", "state": "active", "private": False,
            "metadata_modified": "2024-03-0%dT10:00:00" % n, "tags": [], "groups": [],
            "extras": [], "resources": []}


def _remote(rsps: responses.RequestsMock, datasets: list[dict[str, Any]]) -> None:
    rsps.reset()
    rsps.add_passthru(toolkit.config["solr_url"])
    rsps.get(SEARCH_URL, json={"success": True, "result": {
        "count": len(datasets), "results": datasets}},
        match=[responses.matchers.query_param_matcher({"rows": "100", "start": "0",
                                                       "sort": "id asc"})])
    rsps.get(SEARCH_URL, json={"success": True, "result": {"count": len(datasets),
                                                           "results": []}},
             match=[responses.matchers.query_param_matcher({"rows": "100", "start": "100",
                                                            "sort": "id asc"})])


@pytest.mark.ckan_config("ckan.harvest.ssrf_allowed_hosts", "remote.example.com")
def test_preview_of_the_ckan_harvester_writes_nothing(sysadmin, unchanged):
    source = harvest_factories.HarvestSourceObj(
        url=REMOTE, source_type="ckan", config=json.dumps({"force_all": True}))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        _remote(rsps, [_remote_dataset(1, "First")])
        run_harvest_job(HarvestJob(source=source, status="New"), _harvester("ckan"))
        changed = dict(_remote_dataset(1, "First, revised"),
                       metadata_modified="2024-04-01T10:00:00")
        _remote(rsps, [changed, _remote_dataset(2, "Second")])
        unchanged()

        result = _call(sysadmin["name"], id=source.id)

    outcomes = {r["guid"]: r["outcome"] for r in result["records"]}
    assert outcomes == {"preview-1-id": "update", "preview-2-id": "create"}
    update = next(r for r in result["records"] if r["outcome"] == "update")
    assert {"field": "title", "change": "change", "old": "First",
            "new": "First, revised"} in update["changes"]
    assert toolkit.get_action("package_show")(
        {"ignore_auth": True}, {"id": "preview-1-id"})["title"] == "First"


# --- bad input and permissions ---------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1, 101, "many", [3]])
def test_preview_refuses_a_bad_limit(sysadmin, limit):
    source = _test_source([])

    with pytest.raises(toolkit.ValidationError) as error:
        _call(sysadmin["name"], id=source.id, limit=limit)
    assert "limit" in error.value.error_dict


def test_preview_of_an_unknown_source(sysadmin):
    with pytest.raises(toolkit.ObjectNotFound):
        _call(sysadmin["name"], id="no-such-source")


def test_preview_of_an_invalid_new_source(sysadmin):
    with pytest.raises(toolkit.ValidationError) as error:
        _call(sysadmin["name"], url="", name="bad", source_type="test")
    assert "url" in error.value.error_dict


def test_preview_needs_the_right_to_harvest_the_source():
    org = factories.Organization()
    source = harvest_factories.HarvestSourceObj(source_type="test", owner_org=org["id"])

    with pytest.raises(toolkit.NotAuthorized):
        _call(factories.User()["name"], id=source.id)


def test_preview_is_not_active_afterwards(sysadmin):
    source = _test_source([{"guid": "x", "title": "X"}])

    _call(sysadmin["name"], id=source.id)

    assert preview.active() is False
    assert model.Session.query(HarvestJob).filter_by(source_id=source.id).count() == 0


def _harvester(source_type: str) -> Any:
    from ckanext.harvest.lib import harvesters

    return harvesters.find_harvester(source_type)
