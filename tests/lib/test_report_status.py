"""The report status of an imported object (``added`` / ``updated``), which the
import stage knows from the dataset write itself (no query after it), agrees
with the original's rule: ``updated`` when the dataset has another object."""
from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from ckan import model
from ckan.tests import factories, helpers

from tests.lib.test_removals import ListHarvester, _datasets, _rows, _run, _source, _statuses
from tests.support.marks import harvest_site

pytestmark = harvest_site("harvest")


@pytest.fixture
def harvester() -> ListHarvester:
    return ListHarvester()


@pytest.fixture
def org_id() -> str:
    return factories.Organization()["id"]


def _objects_per_package(job_id: str) -> dict[str, int]:
    """The original's rule, asked of the database: objects sharing each dataset."""
    return {row.guid: row.count for row in _rows(
        "SELECT o.guid, (SELECT count(*) FROM harvest_object x"
        " WHERE x.package_id = o.package_id) AS count"
        " FROM harvest_object o WHERE o.harvest_job_id = :j", j=job_id)}


def test_first_import_is_added_a_changed_one_updated(harvester: ListHarvester,
                                                     org_id: str) -> None:
    harvester.remote = _datasets(2, org_id)
    source = _source(None)

    first = _run(harvester, source)
    harvester.remote["remote-0"] = dict(harvester.remote["remote-0"], title="Renamed",
                                        metadata_modified="2025-01-01T00:00:00")
    second = _run(harvester, source)

    assert _statuses(first) == {"remote-0": "added", "remote-1": "added"}
    assert _objects_per_package(first.id) == {"remote-0": 2, "remote-1": 1}
    assert _statuses(second) == {"remote-0": "updated", "remote-1": "not modified"}


def test_a_local_dataset_written_by_its_first_object_is_added(
        harvester: ListHarvester, org_id: str) -> None:
    local = helpers.call_action(  # a sysadmin may choose the id
        "package_create", {"user": factories.Sysadmin()["name"]},
        id=str(uuid.uuid4()), name="dataset-0", owner_org=org_id)
    harvester.remote = _datasets(1, org_id)
    harvester.remote["remote-0"].update(id=local["id"],
                                        metadata_modified="2999-01-01T00:00:00")

    job = _run(harvester, _source(None))

    assert _statuses(job) == {"remote-0": "added"}  # its only object: as the original
    assert _objects_per_package(job.id) == {"remote-0": 1}
    assert model.Session.execute(sa.text(
        "SELECT title FROM package WHERE id = :id"), {"id": local["id"]}).scalar() == (
        "Dataset 0")
