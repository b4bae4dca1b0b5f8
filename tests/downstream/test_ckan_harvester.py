"""Downstream-style tests of the CKAN harvester: ``run_harvest`` twice in one
process against a mock CKAN, as harvester test suites do."""
from __future__ import annotations

from typing import Any, Iterator

import pytest
from ckan.plugins import toolkit

from ckanext.harvest.harvesters.ckanharvester import CKANHarvester
from ckanext.harvest.tests.lib import run_harvest
from tests.downstream import mock_ckan
from tests.support.marks import harvest_site

pytestmark = harvest_site("harvest ckan_harvester")


@pytest.fixture
def mock_ckan_url() -> Iterator[str]:
    yield from mock_ckan.serve()


def _change_at_the_source(modified: str) -> dict[str, Any]:
    changed = mock_ckan.DATASETS[1]
    changed["metadata_modified"] = modified
    changed["notes"] = "Changed at the source"
    return changed


def _assert_updated(results: dict[str, Any], changed: dict[str, Any]) -> None:
    result = results[changed["id"]]
    assert result["state"] == "COMPLETE"
    assert result["errors"] == []
    assert result["report_status"] == "updated"
    assert result["dataset"]["name"] == changed["name"]
    assert result["dataset"]["notes"] == "Changed at the source"


def test_a_remote_dataset_modified_later_is_updated(mock_ckan_url):
    first = run_harvest(url=mock_ckan_url, harvester=CKANHarvester())
    assert {r["report_status"] for r in first.values()} == {"added"}
    changed = _change_at_the_source("2050-05-09T22:00:01.486366")

    second = run_harvest(url=mock_ckan_url, harvester=CKANHarvester())

    _assert_updated(second, changed)
    # The second job asked only for what changed since the first one.
    assert mock_ckan.DATASETS[0]["id"] not in second
    assert "fq=metadata_modified" in mock_ckan.REQUESTS[-1]


def test_a_remote_change_dated_before_the_import_is_updated(mock_ckan_url):
    # The remote dataset was modified (2015) after the version harvested first
    # (2014), but before the local copy was written: CKAN 2.11 stamps the local
    # copy with the import time, so the local date is no measure of the remote's.
    run_harvest(url=mock_ckan_url, harvester=CKANHarvester(), config='{"force_all": true}')
    changed = _change_at_the_source("2015-05-09T22:00:01.486366")

    second = run_harvest(url=mock_ckan_url, harvester=CKANHarvester())

    _assert_updated(second, changed)
    assert second[mock_ckan.DATASETS[0]["id"]]["report_status"] == "not modified"


def test_a_remote_change_after_a_local_edit_is_updated(mock_ckan_url):
    first = run_harvest(url=mock_ckan_url, harvester=CKANHarvester(), config='{"force_all": true}')
    changed = mock_ckan.DATASETS[1]
    # An editor touches the local copy: its metadata_modified becomes today.
    toolkit.get_action("package_patch")(
        {"ignore_auth": True, "user": first[changed["id"]]["dataset"]["creator_user_id"]},
        {"id": changed["id"], "version": "1.1"},
    )
    changed = _change_at_the_source("2016-01-01T00:00:00.000001")

    second = run_harvest(url=mock_ckan_url, harvester=CKANHarvester())

    _assert_updated(second, changed)


def test_an_unchanged_remote_dataset_is_not_modified(mock_ckan_url):
    run_harvest(url=mock_ckan_url, harvester=CKANHarvester(), config='{"force_all": true}')

    second = run_harvest(url=mock_ckan_url, harvester=CKANHarvester())

    assert {r["report_status"] for r in second.values()} == {"not modified"}
