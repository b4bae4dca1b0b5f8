"""Bad answers from a remote CKAN: a clear gather or object error, and nothing
else damaged (the other datasets of the job are imported, a dataset harvested
before is left alone).

The remote is the ``responses`` mock of ``tests/harvesters/test_ckanharvester.py``
(whose helpers this module reuses); the harvest runs in-process through the
stage drivers. More answers (HTML, truncated JSON, 5xx, timeouts, oversized
pages, missing ids) are covered there.
"""
from __future__ import annotations

import json
from typing import Any

import pytest
import responses
from ckan import model

from ckanext.harvest.harvesters.ckanharvester import CKANHarvester
from tests.harvesters.test_ckanharvester import (  # noqa: F401 - fixtures
    SEARCH_URL,
    _add_search,
    _dataset,
    _datasets,
    _gather_errors,
    _harvest_job,
    _object_errors,
    _search_result,
    _source,
    harvester,
    remote,
)
from tests.support.marks import harvest_site

pytestmark = harvest_site("harvest ckan_harvester")


def _names() -> set[str]:
    return {dataset["name"] for dataset in _datasets()}


def _one_bad_dataset(remote: responses.RequestsMock, harvester: CKANHarvester,
                     bad: dict[str, Any]) -> tuple[Any, list[str]]:
    """Harvest good dataset 1, the bad one and good dataset 3."""
    _add_search(remote, [[_dataset(1), bad, _dataset(3)]])
    results, job = _harvest_job(_source(), harvester)
    return results, _object_errors()


def test_invalid_utf8_in_an_answer_is_replaced_not_fatal(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    page = json.dumps(_search_result([_dataset(1), _dataset(2)]))
    body = page.encode().replace(b"Dataset 1", b"Dataset \xff\xfe 1")
    remote.get(SEARCH_URL, body=body, content_type="application/json; charset=utf-8")
    remote.get(SEARCH_URL, json=_search_result([]))

    results, job = _harvest_job(_source(), harvester)

    assert _gather_errors(job) == [] and _object_errors() == []
    assert model.Package.get("dataset1").title == "Dataset \ufffd\ufffd 1"
    assert model.Package.get("dataset2").title == "Dataset 2"


def test_a_deeply_nested_answer_is_a_gather_error(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    nested = "[" * 100_000 + "]" * 100_000
    body = '{"success": true, "result": {"count": 1, "results": [%s]}}' % nested
    remote.get(SEARCH_URL, body=body, content_type="application/json")

    results, job = _harvest_job(_source(), harvester)

    (message,) = _gather_errors(job)
    assert "Unable to search remote CKAN for datasets" in message
    assert _datasets() == []


@pytest.mark.parametrize(("field", "value", "error"), [
    ("tags", [{"name": "tag%d" % n} for n in range(50_000)],
     "Remote dataset has too many tags: 50000 (at most 1000"),
    ("resources", [{"url": "http://r.example.com/%d" % n} for n in range(10_000)],
     "Remote dataset has too many resources: 10000 (at most 5000"),
    ("tags", "not-a-list", "Invalid remote dataset: tags must be a list of objects"),
    ("resources", {"url": "x"}, "resources must be a list of objects"),
    ("resources", ["http://x"], "resources must be a list of objects"),
    ("extras", "not-a-list", "extras must be a list of objects"),
    ("groups", [1, 2], "groups must be a list of objects"),
    ("title", {"en": "a dict"}, "Invalid remote dataset: title must be a string"),
    ("name", 42, "name must be a string"),
])
def test_an_unusable_dataset_is_an_object_error_and_the_others_are_imported(
    harvester: CKANHarvester, remote: responses.RequestsMock,
    field: str, value: Any, error: str,
) -> None:
    results, errors = _one_bad_dataset(remote, harvester, _dataset(2, **{field: value}))

    assert _names() == {"dataset1", "dataset3"}
    assert len(errors) == 1 and error.lower() in errors[0].lower(), errors


def test_a_title_with_a_script_is_stored_as_text(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    title = "<script>alert(1)</script> Rivers"
    results, errors = _one_bad_dataset(remote, harvester, _dataset(2, title=title))

    assert errors == []
    assert model.Package.get("dataset2").title == title  # escaped when rendered


def test_two_remote_datasets_with_one_name(
    harvester: CKANHarvester, remote: responses.RequestsMock
) -> None:
    results, errors = _one_bad_dataset(
        remote, harvester, _dataset(2, name="dataset1"))

    # The first keeps the name; the second gets an object error or another name,
    # never the first one's dataset.
    assert model.Package.get("dataset1-id").title == "Dataset 1"
    assert "dataset3" in _names()
