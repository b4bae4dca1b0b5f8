"""CKAN search against the development Solr server (solr_url in test-core.ini).

These exercise CKAN's own indexing and package_search code paths end to end:
indexing on create/update/delete, free text, fq, sort, paging, facets,
private datasets and permission labels, dataset types, clearing and
rebuilding the index.
"""
from __future__ import annotations

from typing import Any

import ckan.lib.search as search
import ckan.model as model
import pytest
from ckan.tests import factories
from ckan.tests.helpers import call_action

pytestmark = pytest.mark.usefixtures("clean_db", "clean_index")


def _search(context: dict[str, Any] | None = None, **params: Any
            ) -> dict[str, Any]:
    """Run package_search and return its result."""
    return call_action("package_search", context=context, **params)


def _names(result: dict[str, Any]) -> list[str]:
    """Dataset names of a package_search result, in order."""
    return [r["name"] for r in result["results"]]


@pytest.fixture
def member():
    """A user who is an editor of the env-agency organisation."""
    return factories.User()


@pytest.fixture
def catalogue(member):
    """Two organisations and four datasets (one private, one harvest type)."""
    env = factories.Organization(
        name="env-agency", title="Environment Agency",
        users=[{"name": member["name"], "capacity": "editor"}])
    dft = factories.Organization(name="transport-dept", title="Transport")
    factories.Dataset(
        name="flood-risk", title="Flood risk in Wales",
        notes="Maps of flooding areas", owner_org=env["id"],
        tags=[{"name": "flood"}, {"name": "water"}],
        extras=[{"key": "harvest_source_id", "value": "src-1"}],
        resources=[{"url": "http://example.com/a.csv", "format": "CSV",
                    "name": "Flood areas"},
                   {"url": "http://example.com/b.pdf", "format": "PDF"}])
    factories.Dataset(
        name="road-traffic", title="Road traffic counts",
        notes="Annual counts on roads", owner_org=dft["id"],
        tags=[{"name": "transport"}],
        resources=[{"url": "http://example.com/c.csv", "format": "CSV"}])
    factories.Dataset(
        name="water-quality", title="Water quality", notes="River samples",
        owner_org=env["id"], private=True, tags=[{"name": "water"}],
        resources=[{"url": "http://example.com/d.json", "format": "JSON"}])
    factories.Dataset(
        name="wales-harvest", title="Wales portal harvest source",
        notes="A harvest source", type="harvest", owner_org=env["id"])
    return {"env": env, "dft": dft}


def test_solr_is_available_and_schema_accepted():
    assert search.is_available()
    assert search.check_solr_schema_version() is True


def test_free_text_search(catalogue):
    assert _names(_search(q="flood")) == ["flood-risk"]
    assert set(_names(_search(q="wales"))) == {"flood-risk", "wales-harvest"}
    assert _names(_search(q="ROAD Traffic")) == ["road-traffic"]
    assert _names(_search(q="flooding areas")) == ["flood-risk"]
    assert _search(q="nonexistentword")["count"] == 0


def test_fielded_query_and_extras(catalogue):
    assert _names(_search(q="harvest_source_id:src-1")) == ["flood-risk"]
    assert _names(_search(q="extras_harvest_source_id:src-1")) == ["flood-risk"]
    assert _names(_search(q="res_format:PDF")) == ["flood-risk"]
    assert _names(_search(q="tags:transport")) == ["road-traffic"]
    result = _search(q="name:flood-risk",
                     fl=["name", "extras_harvest_source_id"])
    assert result["results"] == [{"name": "flood-risk",
                                  "harvest_source_id": "src-1"}]


def test_fq_and_include_private(catalogue):
    assert _names(_search(fq="tags:water")) == ["flood-risk"]
    both = _search(fq="tags:water", include_private=True)
    assert set(_names(both)) == {"flood-risk", "water-quality"}
    orgs = _search(fq="organization:env-agency", include_private=True)
    assert orgs["count"] == 3


def test_private_datasets_follow_permission_labels(catalogue, member):
    stranger = factories.User()
    sysadmin = factories.Sysadmin()

    def visible(user: dict[str, Any]) -> set[str]:
        context = {"user": user["name"], "ignore_auth": False}
        return set(_names(_search(context, include_private=True, rows=100)))

    assert "water-quality" not in visible(stranger)
    assert "water-quality" in visible(member)
    assert "water-quality" in visible(sysadmin)


def test_dataset_type_filter(catalogue):
    assert _names(_search(fq="+dataset_type:harvest")) == ["wales-harvest"]
    others = _search(fq="-dataset_type:harvest")
    assert set(_names(others)) == {"flood-risk", "road-traffic"}


def test_sort_and_paging(catalogue):
    first = _search(sort="name asc", rows=2, start=0)
    second = _search(sort="name asc", rows=2, start=2)
    assert first["count"] == second["count"] == 3
    assert _names(first) == ["flood-risk", "road-traffic"]
    assert _names(second) == ["wales-harvest"]
    newest = _search(sort="metadata_modified desc")
    assert _names(newest) == ["wales-harvest", "road-traffic", "flood-risk"]
    default = _search()  # score desc, metadata_modified desc
    assert _names(default) == _names(newest)
    by_title = _search(sort="title_string desc")
    assert _names(by_title) == ["wales-harvest", "road-traffic", "flood-risk"]


def test_facets(catalogue):
    result = _search(rows=0, include_private=True,
                     **{"facet.field": ["tags", "organization", "res_format"]})
    assert result["results"] == [] and result["count"] == 4
    facets = result["facets"]
    assert facets["tags"] == {"flood": 1, "water": 2, "transport": 1}
    assert facets["organization"] == {"env-agency": 3, "transport-dept": 1}
    assert facets["res_format"] == {"CSV": 2, "PDF": 1, "JSON": 1}
    items = result["search_facets"]["organization"]["items"]
    names = {i["name"]: (i["display_name"], i["count"]) for i in items}
    assert names["env-agency"] == ("Environment Agency", 3)
    limited = _search(rows=0, include_private=True,
                      **{"facet.field": ["tags"], "facet.limit": 1})
    assert limited["facets"]["tags"] == {"water": 2}


def test_date_ranges(catalogue):
    assert _search(fq="metadata_modified:[NOW-1DAY TO NOW+1DAY]")["count"] == 3
    assert _search(fq="metadata_created:[* TO NOW-1DAY]")["count"] == 0


def test_update_reindexes(catalogue):
    call_action("package_patch", id="road-traffic",
                title="Bus timetables", tags=[{"name": "buses"}])
    assert _names(_search(q="timetables")) == ["road-traffic"]
    assert _search(q="title:traffic")["count"] == 0
    assert _names(_search(q="traffic")) == ["road-traffic"]  # name, notes
    assert _names(_search(fq="tags:buses")) == ["road-traffic"]
    assert _search(fq="tags:transport")["count"] == 0


def test_delete_removes_from_results(catalogue):
    call_action("package_delete", id="flood-risk")
    assert "flood-risk" not in _names(_search(rows=100))
    assert _search(q="flood")["count"] == 0


def test_clear_all_and_rebuild(catalogue):
    search.clear_all()
    assert _search()["count"] == 0
    search.rebuild()
    assert _search(include_private=True)["count"] == 4
    package_query = search.query_for(model.Package)
    assert len(package_query.get_all_entity_ids()) == 4


def test_show_index_document(catalogue):
    indexed = search.show("flood-risk")
    assert indexed["name"] == "flood-risk"
    assert indexed["capacity"] == "public"
    assert indexed["res_format"] == ["CSV", "PDF"]
    assert indexed["metadata_modified"].endswith("Z")
