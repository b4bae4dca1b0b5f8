"""Tests of the development Solr server (dev/solr_server) over real HTTP.

The server runs in-process (a thread) on a free port; every test gets its own
core, so tests are independent. No CKAN configuration is needed.
"""
from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
import xml.dom.minidom
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pysolr
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
SITE = "test.site"


def _load_server_package() -> ModuleType:
    """Import dev/solr_server by path (``dev`` may be shadowed by tests/dev)."""
    name = "_dev_solr_server_under_test"
    if name in sys.modules:
        return sys.modules[name]
    init = REPO / "dev" / "solr_server" / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(init.parent)])
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def base_url():
    """Base URL (``http://127.0.0.1:PORT/solr``) of an in-process server."""
    package = _load_server_package()
    server, thread = package.serve_in_thread("127.0.0.1", 0)
    yield server.base_url
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def core_url(base_url):
    """URL of a fresh core, unique to the test."""
    return f"{base_url}/core_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def solr(core_url):
    """A pysolr client on the test's core."""
    return pysolr.Solr(core_url, timeout=10)


def doc(key: str, **fields: Any) -> dict[str, Any]:
    """A document with the schema's required fields."""
    return {"index_id": key, "id": key, "site_id": SITE, **fields}


def ids(results: Any) -> set[str]:
    """Ids of a pysolr result."""
    return {d["id"] for d in results.docs}


def id_list(results: Any) -> list[str]:
    """Ids of a pysolr result, in order."""
    return [d["id"] for d in results.docs]


DATASETS = [
    doc("d1", name="flood-risk-wales", title="Flood risk in Wales",
        notes="Maps of flooding areas", tags=["flood", "water", "wales"],
        organization="env-agency", res_format=["CSV", "PDF"],
        metadata_modified="2024-01-10T10:00:00Z", capacity="public",
        state="active", dataset_type="dataset", views_total=10,
        title_string="Flood risk in Wales", url="http://example.com/flood",
        extras_harvest_source_id="src-1", entity_type="package",
        permission_labels=["public"], num_resources=2),
    doc("d2", name="road-traffic", title="Road traffic counts",
        notes="Annual traffic counts on roads", tags=["transport", "roads"],
        organization="dft", res_format=["CSV"], capacity="public",
        metadata_modified="2024-03-05T08:30:00Z", state="active",
        dataset_type="dataset", views_total=5, entity_type="package",
        title_string="Road traffic counts", permission_labels=["public"]),
    doc("d3", name="water-quality", title="Water quality",
        notes="River water quality samples", tags=["water", "rivers"],
        organization="env-agency", res_format=["JSON"], capacity="private",
        metadata_modified="2023-12-01T00:00:00Z", state="active",
        dataset_type="dataset", title_string="Water quality",
        entity_type="package", permission_labels=["member-org1"]),
    doc("d4", name="wales-portal", title="Harvest source: Wales portal",
        organization="env-agency", capacity="public", state="active",
        metadata_modified="2024-02-01T00:00:00Z", dataset_type="harvest",
        title_string="Harvest source: Wales portal", entity_type="package",
        permission_labels=["public"]),
    doc("d5", name="old-floods", title="Deleted dataset about floods",
        tags=["flood"], capacity="public", state="deleted",
        metadata_modified="2022-06-01T00:00:00Z", dataset_type="dataset",
        title_string="Deleted dataset about floods", entity_type="package",
        permission_labels=["public"]),
]
ALL = {"d1", "d2", "d3", "d4", "d5"}
QF = "name^4 title^4 tags^2 groups^2 text"


@pytest.fixture
def data(solr):
    """A committed core holding :data:`DATASETS`."""
    solr.add(DATASETS, commit=True)
    return solr


# -- endpoints, schema, ping ---------------------------------------------------
def test_ping(solr):
    assert '"OK"' in solr.ping()


def test_schema_xml_is_accepted_by_ckan_check(core_url):
    from ckan.lib.search import SUPPORTED_SCHEMA_VERSIONS

    for url in (f"{core_url}/schema?wt=schema.xml",
                f"{core_url}/admin/file/?file=schema.xml"):
        res = requests.get(url, timeout=10)
        assert res.status_code == 200
        root = xml.dom.minidom.parseString(res.text).documentElement
        version = root.getAttribute("name").split("-")[1]
        assert version in SUPPORTED_SCHEMA_VERSIONS


def test_schema_json(core_url):
    res = requests.get(f"{core_url}/schema", timeout=10).json()
    assert res["schema"]["uniqueKey"] == "index_id"
    fields = {f["name"]: f for f in res["schema"]["fields"]}
    assert fields["tags"]["multiValued"] is True
    assert fields["title"]["multiValued"] is False
    res = requests.get(f"{core_url}/schema/fields/extras_foo", timeout=10)
    assert res.json()["field"]["type"] == "text"


def test_unknown_path_is_solr_style_404(base_url):
    res = requests.get(f"{base_url}/somecore/nothing", timeout=10)
    assert res.status_code == 404
    assert res.json()["error"]["code"] == 404


def test_admin_endpoints(base_url, solr):
    solr.add([doc("a")], commit=True)
    info = requests.get(f"{base_url}/admin/info/system", timeout=10).json()
    assert info["responseHeader"]["status"] == 0
    cores = requests.get(f"{base_url}/admin/cores?action=STATUS",
                         timeout=10).json()["status"]
    assert any(c["index"]["numDocs"] == 1 for c in cores.values())


# -- add / commit --------------------------------------------------------------
def test_documents_visible_only_after_commit(solr, core_url):
    solr.add([doc("a", title="hello")], commit=False)
    assert solr.search("*:*").hits == 0
    got = requests.get(f"{core_url}/get", params={"id": "a"}, timeout=10)
    assert got.json()["doc"]["title"] == "hello"
    solr.commit()
    assert solr.search("*:*").hits == 1


@pytest.mark.parametrize("how", ["param", "soft", "json", "xml", "within"])
def test_commit_variants(core_url, how):
    body = json.dumps([doc("a")])
    params = {"param": {"commit": "true"}, "soft": {"softCommit": "true"},
              "within": {"commitWithin": "1000"}}.get(how, {})
    headers = {"Content-Type": "application/json"}
    res = requests.post(f"{core_url}/update", data=body, params=params,
                        headers=headers, timeout=10)
    assert res.status_code == 200
    assert res.json()["responseHeader"]["status"] == 0
    if how == "json":
        requests.post(f"{core_url}/update", data='{"commit": {}}',
                      headers=headers, timeout=10)
    elif how == "xml":
        requests.post(f"{core_url}/update", data="<commit/>",
                      headers={"Content-Type": "text/xml"}, timeout=10)
    found = requests.get(f"{core_url}/select", params={"q": "*:*"},
                         timeout=10).json()
    assert found["response"]["numFound"] == 1


def test_rollback_discards_uncommitted(core_url, solr):
    solr.add([doc("a")], commit=True)
    solr.add([doc("b")], commit=False)
    requests.post(f"{core_url}/update", data="<rollback/>",
                  headers={"Content-Type": "text/xml"}, timeout=10)
    solr.commit()
    assert ids(solr.search("*:*")) == {"a"}


def test_add_same_key_overwrites(solr):
    solr.add([doc("a", title="first")], commit=True)
    solr.add([doc("a", title="second")], commit=True)
    res = solr.search("*:*", fl="title")
    assert res.hits == 1 and res.docs[0]["title"] == "second"


def test_json_update_command_forms(core_url, solr):
    url, headers = f"{core_url}/update", {"Content-Type": "application/json"}
    body = ('{"add": {"doc": %s}, "add": {"doc": %s}, "commit": {}}'
            % (json.dumps(doc("a")), json.dumps(doc("b"))))
    requests.post(url, data=body, headers=headers, timeout=10)
    requests.post(f"{url}/json/docs?commit=true", data=json.dumps(doc("c")),
                  headers=headers, timeout=10)
    assert ids(solr.search("*:*")) == {"a", "b", "c"}
    requests.post(url + "?commit=true", data='{"delete": {"id": "a"}}',
                  headers=headers, timeout=10)
    requests.post(url + "?commit=true", data='{"delete": ["b"]}',
                  headers=headers, timeout=10)
    assert ids(solr.search("*:*")) == {"c"}
    requests.post(url + "?commit=true", data='{"delete": {"query": "id:c"}}',
                  headers=headers, timeout=10)
    assert solr.search("*:*").hits == 0


def test_xml_add_with_multiple_values(core_url, solr):
    body = ('<add><doc><field name="index_id">x</field>'
            '<field name="id">x</field><field name="site_id">s</field>'
            '<field name="tags">one</field><field name="tags">two</field>'
            '</doc></add>')
    res = requests.post(f"{core_url}/update?commit=true", data=body,
                        headers={"Content-Type": "text/xml"}, timeout=10)
    assert res.status_code == 200
    assert solr.search("tags:two", fl="tags").docs[0]["tags"] == ["one", "two"]


# -- validation errors ---------------------------------------------------------
def test_multiple_values_in_single_valued_field_is_400(core_url, solr):
    with pytest.raises(pysolr.SolrError, match="multiValued"):
        solr.add([doc("a", title=["one", "two"])], commit=True)
    res = requests.post(f"{core_url}/update?commit=true",
                        data=json.dumps([doc("b", extras_x=["1", "2"])]),
                        headers={"Content-Type": "application/json"},
                        timeout=10)
    assert res.status_code == 400
    error = res.json()["error"]
    assert error["code"] == 400 and "extras_x" in error["msg"]
    assert solr.search("*:*").hits == 0


@pytest.mark.parametrize("bad", [
    {"index_id": "a", "id": "a"},                  # missing required site_id
    {"id": "a", "site_id": "s"},                   # missing uniqueKey
    doc("a", views_total="many"),                  # not an int
    doc("a", metadata_modified="yesterday"),       # not a date
    doc("a", some_unknown_field=["x", "y"]),       # '*' is single-valued
])
def test_invalid_documents_are_400(solr, bad):
    with pytest.raises(pysolr.SolrError, match="HTTP 400"):
        solr.add([bad], commit=True)


# -- delete --------------------------------------------------------------------
def test_delete_by_id_and_query(data):
    data.delete(id="d1", commit=True)
    data.delete(id=["d2", "d3"], commit=True)
    assert ids(data.search("*:*")) == {"d4", "d5"}
    data.delete(q='+entity_type:package AND +(id:"d4" OR name:"d4") '
                  f'AND +site_id:"{SITE}"', commit=True)
    assert ids(data.search("*:*")) == {"d5"}
    data.delete(q=f'+site_id:"{SITE}"', commit=True)
    assert data.search("*:*").hits == 0


def test_delete_without_commit_is_not_visible(data):
    data.delete(id="d1", commit=False)
    assert "d1" in ids(data.search("*:*", rows=10))
    data.commit()
    assert "d1" not in ids(data.search("*:*", rows=10))


# -- exact-term lookups (answered from the term index) ---------------------------
def _show(solr, key: str) -> set[str]:
    """CKAN's package_show cache lookup (ckan.lib.search.query.get_index)."""
    return ids(solr.search(f'name:"{key}" OR id:"{key}"', rows=1,
                           fq=f'site_id:"{SITE}" +entity_type:package'))


def test_term_lookups_follow_adds_renames_deletes_and_commits(solr):
    solr.add([doc("k1", name="first", entity_type="package"),
              doc("k2", name="second", entity_type="package")], commit=True)
    assert _show(solr, "first") == {"k1"} and _show(solr, "k2") == {"k2"}
    solr.add([doc("k1", name="renamed", entity_type="package")], commit=False)
    assert _show(solr, "first") == {"k1"}  # not committed yet
    solr.commit()
    assert _show(solr, "first") == set() and _show(solr, "renamed") == {"k1"}
    solr.delete(id="k2", commit=True)
    assert _show(solr, "second") == set() and _show(solr, "k2") == set()
    solr.add([doc("k3", name="third", entity_type="package")], commit=True)
    assert _show(solr, "third") == {"k3"}
    assert ids(solr.search('name:"renamed" OR name:"third"')) == {"k1", "k3"}
    assert ids(solr.search('name:"renamed" OR title:third')) == {"k1"}


def test_term_lookups_after_a_rollback_and_a_delete_by_query(core_url, solr):
    solr.add([doc("k1", name="one"), doc("k2", name="two")], commit=True)
    assert ids(solr.search('name:"one"')) == {"k1"}
    solr.add([doc("k1", name="changed")], commit=False)
    requests.post(f"{core_url}/update", data="<rollback/>",
                  headers={"Content-Type": "text/xml"}, timeout=10)
    solr.commit()
    assert ids(solr.search('name:"one"')) == {"k1"}
    assert ids(solr.search('name:"changed"')) == set()
    solr.delete(q='name:"two"', commit=True)
    assert ids(solr.search('name:"two" OR id:"k1"')) == {"k1"}


# -- query syntax ----------------------------------------------------------------
LUCENE_CASES = [
    ("*:*", ALL),
    ("name:flood-risk-wales", {"d1"}),
    ("name:Flood-risk-wales", set()),
    ("title:Flood", {"d1", "d5"}),  # stemmed: "floods" -> "flood"
    ("title:FLOODS", {"d1", "d5"}),
    ('title:"water quality"', {"d3"}),
    ('title:"quality water"', set()),
    ('"traffic counts"', {"d2"}),
    ('notes:"counts traffic"~2', {"d2"}),
    ("tags:flood", {"d1", "d5"}),
    ("tags:Flood", set()),
    ("+tags:water -organization:dft", {"d1", "d3"}),
    ("tags:water AND NOT title:quality", {"d1"}),
    ("tags:water && !tags:rivers", {"d1"}),
    ("tags:(roads OR rivers)", {"d2", "d3"}),
    ("(tags:roads OR tags:rivers) AND capacity:public", {"d2"}),
    ("tags:water OR tags:roads", {"d1", "d2", "d3"}),
    ("-dataset_type:harvest", {"d1", "d2", "d3", "d5"}),
    ("NOT state:active", {"d5"}),
    ("extras_harvest_source_id:*", {"d1"}),
    ("-extras_harvest_source_id:*", {"d2", "d3", "d4", "d5"}),
    ("extras_harvest_source_id:[* TO *]", {"d1"}),
    ("name:water*", {"d3"}),
    ("name:*-wales", {"d1"}),
    ("name:r?ad-traffic", {"d2"}),
    ("title:flo*", {"d1", "d5"}),
    ("name:/road-.*/", {"d2"}),
    ("title:trafic~1", {"d2"}),
    ("views_total:[6 TO *]", {"d1"}),
    ("views_total:[5 TO 10}", {"d2"}),
    ("views_total:{5 TO 10]", {"d1"}),
    ("views_total:5", {"d2"}),
    ("metadata_modified:[2024-01-01T00:00:00Z TO 2024-02-15T00:00:00Z]",
     {"d1", "d4"}),
    ("metadata_modified:{* TO 2024-01-01T00:00:00Z}", {"d3", "d5"}),
    ("metadata_modified:[2024-03-05T12:00:00Z/DAY TO "
     "2024-03-05T12:00:00Z/DAY+1DAY]", {"d2"}),
    ('metadata_modified:"2024-02-01T00:00:00Z"', {"d4"}),
    ("metadata_modified:[NOW-100YEARS TO NOW]", ALL),
    ("title_string:[A TO I]", {"d1", "d4", "d5"}),
    ("wales", {"d1", "d4"}),
    ("title:flood^3 OR tags:roads", {"d1", "d2", "d5"}),
    ("state:active AND dataset_type:harvest", {"d4"}),
    (f'+site_id:"{SITE}" +capacity:public -dataset_type:harvest '
     "+state:active", {"d1", "d2"}),
    ('+permission_labels:("public" OR "member-org1")', ALL),
    ('+permission_labels:("member-org1")', {"d3"}),
    ("organization:env-agency", {"d1", "d3", "d4"}),
    ("res_format:CSV", {"d1", "d2"}),
    ("res_format:csv", set()),
    ("title_ngram:ood", {"d1", "d5"}),
    ("url:http\\://example.com/flood", {"d1"}),
    ('url:"http://example.com/flood"', {"d1"}),
    ("urls:example", {"d1"}),
    ("text:flooding", {"d1", "d5"}),
    ("num_resources:2", {"d1"}),
]


@pytest.mark.parametrize("query, expected", LUCENE_CASES)
def test_lucene_query_syntax(data, query, expected):
    assert ids(data.search(query, rows=100, **{"q.op": "AND"})) == expected


@pytest.mark.parametrize("query, q_op, expected", [
    ("id:(d1 d2)", "OR", {"d1", "d2"}),
    ("id:(d1 d2)", "AND", set()),
    ("tags:water tags:rivers", "AND", {"d3"}),
    ("tags:water tags:rivers", "OR", {"d1", "d3"}),
    ("+tags:water tags:rivers", "OR", {"d1", "d3"}),
])
def test_default_operator(data, query, q_op, expected):
    assert ids(data.search(query, rows=100, **{"q.op": q_op})) == expected


def test_syntax_error_is_400_for_lucene_but_not_dismax(data):
    with pytest.raises(pysolr.SolrError, match="HTTP 400"):
        data.search("title:(flood")
    data.search("flood (", defType="dismax", qf=QF)


def _dismax(solr, q, **extra):
    params = {"defType": "dismax", "qf": QF, "q.op": "AND",
              "mm": "2<-1 5<80%", "tie": "0.1", "rows": 100,
              "fl": "id,score"}
    params.update(extra)
    return solr.search(q, **params)


def test_dismax_free_text_ranks_title_matches_first(data):
    res = _dismax(data, "water")
    assert id_list(res) == ["d3", "d1"]
    assert res.docs[0]["score"] > res.docs[1]["score"]


@pytest.mark.parametrize("q, mm, expected", [
    ("flood wales rivers", "2<-1 5<80%", {"d1"}),
    ("flood wales rivers", "1", {"d1", "d3", "d4", "d5"}),
    ("flood wales", "2<-1 5<80%", {"d1"}),
    ("water -rivers", "2<-1 5<80%", {"d1"}),
    ("Traffic", "2<-1 5<80%", {"d2"}),
    ('"traffic counts"', "2<-1 5<80%", {"d2"}),
])
def test_dismax_mm(data, q, mm, expected):
    assert ids(_dismax(data, q, mm=mm)) == expected


def test_edismax_fielded_and_free_text(data):
    assert ids(_dismax(data, "tags:water", defType="edismax")) == {"d1", "d3"}
    res = _dismax(data, "water organization:dft", defType="edismax", mm="1")
    assert ids(res) == {"d1", "d2", "d3"}


# -- fq, sort, paging, fl ----------------------------------------------------------
def test_filter_queries_intersect(data):
    res = data.search("*:*", rows=100, fq=[
        "+capacity:public  +state:(active)", "-dataset_type:harvest",
        f'+site_id:"{SITE}"'], **{"q.op": "AND"})
    assert ids(res) == {"d1", "d2"}
    res = data.search("tags:water", fq="capacity:private")
    assert ids(res) == {"d3"}


@pytest.mark.parametrize("sort, expected", [
    ("metadata_modified desc", ["d2", "d4", "d1", "d3", "d5"]),
    ("metadata_modified asc", ["d5", "d3", "d1", "d4", "d2"]),
    ("title_string asc", ["d5", "d1", "d4", "d2", "d3"]),
    ("organization asc, metadata_modified desc", ["d2", "d4", "d1", "d3", "d5"]),
    ("views_total desc, name asc", ["d1", "d2", "d5", "d4", "d3"]),
    ("score desc, metadata_modified desc", ["d2", "d4", "d1", "d3", "d5"]),
])
def test_sort(data, sort, expected):
    assert id_list(data.search("*:*", sort=sort, rows=100)) == expected


def test_sort_errors(data):
    with pytest.raises(pysolr.SolrError, match="Can't determine a Sort Order"):
        data.search("*:*", sort="name sideways")
    with pytest.raises(pysolr.SolrError, match="multivalued"):
        data.search("*:*", sort="tags asc")


def test_paging(data):
    pages = [data.search("*:*", sort="name asc", rows=2, start=s)
             for s in (0, 2, 4, 6)]
    assert [p.hits for p in pages] == [5, 5, 5, 5]
    assert [id_list(p) for p in pages] == [
        ["d1", "d5"], ["d2", "d4"], ["d3"], []]
    assert all(p.raw_response["response"]["start"] == s
               for p, s in zip(pages, (0, 2, 4, 6)))
    flat = [i for p in pages for i in id_list(p)]
    assert flat == id_list(data.search("*:*", sort="name asc", rows=10))
    raw = data.search("*:*", rows=0)
    assert raw.hits == 5 and raw.docs == []


def test_fl(data):
    res = data.search("name:road-traffic", fl="id,name")
    assert res.docs == [{"id": "d2", "name": "road-traffic"}]
    res = data.search("name:road-traffic", fl="id name")
    assert res.docs == [{"id": "d2", "name": "road-traffic"}]
    res = data.search("name:flood-risk-wales", fl="*,score")
    found = res.docs[0]
    assert found["score"] > 0 and found["tags"] == ["flood", "water", "wales"]
    assert found["metadata_modified"] == "2024-01-10T10:00:00Z"
    for not_stored in ("text", "permission_labels", "title_string",
                       "num_resources"):
        assert not_stored not in found
    res = data.search("name:flood-risk-wales", fl="id,extras_*")
    assert res.docs == [{"id": "d1", "extras_harvest_source_id": "src-1"}]


def test_post_form_select(core_url, data):
    long_q = " OR ".join(f"name:n{i}" for i in range(200)) + " OR name:road-traffic"
    res = requests.post(f"{core_url}/select", data={"q": long_q, "wt": "json"},
                        timeout=10)
    assert res.status_code == 200
    assert [d["id"] for d in res.json()["response"]["docs"]] == ["d2"]
    assert data.search(long_q).hits == 1  # pysolr switches to POST


# -- facets ------------------------------------------------------------------------
def _facets(solr, **params):
    base = {"facet": "true", "rows": 0}
    base.update(params)
    return solr.search("*:*", **base).facets["facet_fields"]


def test_facet_counts_flat(data):
    facets = _facets(data, **{"facet.field": ["tags", "res_format",
                                              "organization"],
                              "facet.mincount": 1})
    assert facets["tags"] == ["flood", 2, "water", 2, "rivers", 1, "roads", 1,
                              "transport", 1, "wales", 1]
    assert facets["res_format"] == ["CSV", 2, "JSON", 1, "PDF", 1]
    assert facets["organization"] == ["env-agency", 3, "dft", 1]


def test_facet_limit_mincount_and_sort(data):
    facets = _facets(data, **{"facet.field": "tags", "facet.limit": 2,
                              "facet.mincount": 1})
    assert facets["tags"] == ["flood", 2, "water", 2]
    facets = _facets(data, **{"facet.field": "tags", "facet.limit": -1,
                              "facet.mincount": 2})
    assert facets["tags"] == ["flood", 2, "water", 2]
    facets = _facets(data, **{"facet.field": "tags", "facet.limit": 3,
                              "facet.sort": "index"})
    assert facets["tags"] == ["flood", 2, "rivers", 1, "roads", 1]
    facets = _facets(data, **{"facet.field": ["tags", "organization"],
                              "f.tags.facet.limit": 1})
    assert facets["tags"] == ["flood", 2] and len(facets["organization"]) == 4


def test_facet_unlimited_defaults_to_index_order(data):
    facets = _facets(data, **{"facet.field": "tags", "facet.limit": -1,
                              "facet.mincount": 1})
    assert facets["tags"][::2] == sorted(facets["tags"][::2])


def test_facet_mincount_zero_lists_unmatched_values(data):
    res = data.search("tags:roads", facet="true",
                      **{"facet.field": "tags", "facet.limit": -1,
                         "facet.sort": "count"})
    tags = res.facets["facet_fields"]["tags"]
    assert tags[:6] == ["roads", 1, "transport", 1, "flood", 0]
    assert len(tags) == 12


def test_facets_follow_query_and_fq(data):
    res = data.search("tags:water", fq="capacity:public", facet="true",
                      **{"facet.field": "organization", "facet.mincount": 1,
                         "facet.query": "tags:wales", "json.nl": "map"})
    assert res.facets["facet_fields"]["organization"] == {"env-agency": 1}
    assert res.facets["facet_queries"] == {"tags:wales": 1}


# -- dates ---------------------------------------------------------------------------
def test_date_math_relative_to_now(solr):
    now = datetime.now(timezone.utc)
    stamp = lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # noqa: E731
    solr.add([doc("recent", metadata_modified=stamp(now - timedelta(hours=2))),
              doc("week", metadata_modified=stamp(now - timedelta(days=3))),
              doc("old", metadata_modified=stamp(now - timedelta(days=400)))],
             commit=True)
    cases = {
        "metadata_modified:[NOW-1DAY TO NOW]": {"recent"},
        "metadata_modified:[NOW/DAY-7DAYS TO *]": {"recent", "week"},
        "metadata_modified:[* TO NOW-1YEAR]": {"old"},
        "metadata_modified:{NOW-1MONTH TO NOW+1DAY}": {"recent", "week"},
    }
    for query, expected in cases.items():
        assert ids(solr.search(query)) == expected, query


def test_now_param_and_indexed_ts_default(solr):
    solr.add([doc("a", metadata_modified="2020-05-05T05:05:05Z")], commit=True)
    fixed_now = str(int(datetime(2020, 5, 6, tzinfo=timezone.utc).timestamp()
                        * 1000))
    assert solr.search("metadata_modified:[NOW-1DAY TO NOW]",
                       NOW=fixed_now).hits == 1
    stored = solr.search("*:*", fl="indexed_ts").docs[0]["indexed_ts"]
    assert stored.endswith("Z") and stored.startswith("20")


def test_invalid_date_in_query_is_400(data):
    with pytest.raises(pysolr.SolrError, match="HTTP 400"):
        data.search("metadata_modified:[yesterday TO NOW]")


# -- cores, concurrency, command line --------------------------------------------------
def test_cores_are_isolated(base_url):
    one = pysolr.Solr(f"{base_url}/iso_one_{uuid.uuid4().hex[:6]}", timeout=10)
    two = pysolr.Solr(f"{base_url}/iso_two_{uuid.uuid4().hex[:6]}", timeout=10)
    one.add([doc("a")], commit=True)
    two.add([doc("b")], commit=True)
    assert ids(one.search("*:*")) == {"a"} and ids(two.search("*:*")) == {"b"}
    one.delete(q="*:*", commit=True)
    assert one.search("*:*").hits == 0 and two.search("*:*").hits == 1


def test_concurrent_adds_and_searches(solr):
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                solr.add([doc(f"w{n}-{i}", tags=[f"t{n}"])], commit=True)
                solr.search(f"tags:t{n}")
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert solr.search("*:*").hits == 40


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("entry", [["-m", "dev.solr_server"], ["dev/solr_server"]])
def test_command_line_entry_points(entry):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, *entry, "--port", str(port),
                             "--log-level", "WARNING"], cwd=REPO)
    try:
        url = f"http://127.0.0.1:{port}/solr/cli/admin/ping"
        for _ in range(100):
            try:
                assert requests.get(url, timeout=2).json()["status"] == "OK"
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        else:
            pytest.fail("server did not start")
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
