"""The report status of an imported object (``added`` / ``updated``), which the
import stage knows from the dataset write itself (no query after it), agrees
with the original's rule: ``updated`` when the dataset has another object."""
from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from ckan import model
from ckan.plugins import toolkit
from ckan.tests import factories, helpers

from ckanext.harvest.lib import stages
from ckanext.harvest.lib.recovery import discard_session
from ckanext.harvest.model import (
    HarvestJob,
    HarvestObject,
    HarvestObjectExtra,
    JobStatus,
)
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


def _two_jobs_one_change(harvester: ListHarvester,
                         org_id: str) -> tuple[HarvestJob, HarvestJob]:
    """Two datasets harvested, then again after the remote changed one of them."""
    harvester.remote = _datasets(2, org_id)
    source = _source(None)
    first = _run(harvester, source)
    harvester.remote["remote-0"] = dict(harvester.remote["remote-0"], title="Renamed",
                                        metadata_modified="2025-01-01T00:00:00")
    return first, _run(harvester, source)


def test_first_import_is_added_a_changed_one_updated(harvester: ListHarvester,
                                                     org_id: str) -> None:
    first, second = _two_jobs_one_change(harvester, org_id)

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


def test_an_object_is_finished_in_its_datasets_own_transaction(
        harvester: ListHarvester, org_id: str) -> None:
    """At every commit of two jobs, one creating two datasets and one updating
    one of them, no dataset has a current object that is not finished: each
    object's final state is committed with its dataset, not after it."""
    harvester.remote = _datasets(2, org_id)
    source = _source(None)
    source_id = source.id
    unfinished: list[Any] = []
    commits = [0]

    def check(session: Any) -> None:
        commits[0] += 1
        with model.meta.engine.connect() as connection:
            unfinished.extend(connection.execute(sa.text(
                "SELECT guid, state, report_status, import_finished FROM harvest_object"
                " WHERE harvest_source_id = :s AND current AND package_id IS NOT NULL"
                " AND (state <> 'COMPLETE' OR report_status IS NULL"
                " OR import_finished IS NULL)"), {"s": source_id}).all())

    sa.event.listen(model.Session, "after_commit", check)
    try:
        first = _run(harvester, source)
        harvester.remote["remote-0"] = dict(harvester.remote["remote-0"], title="Renamed",
                                            metadata_modified="2025-01-01T00:00:00")
        second = _run(harvester, source)
    finally:
        sa.event.remove(model.Session, "after_commit", check)

    assert commits[0] > 6 and unfinished == []
    assert _statuses(first) == {"remote-0": "added", "remote-1": "added"}
    assert _statuses(second) == {"remote-0": "updated", "remote-1": "not modified"}
    assert _rows("SELECT count(*) AS n FROM harvest_object WHERE state <> 'COMPLETE'"
                 " OR import_finished IS NULL")[0].n == 0


def test_an_update_makes_its_object_current_rewriting_only_the_previous_one(
        harvester: ListHarvester, org_id: str) -> None:
    harvester.remote = _datasets(1, org_id)
    source = _source(None)
    jobs = []
    for version in range(3):
        harvester.remote["remote-0"] = dict(
            harvester.remote["remote-0"], title="Version %d" % version,
            metadata_modified="2025-01-0%dT00:00:00" % (version + 1))
        jobs.append(_run(harvester, source).id)
        if version == 1:
            rows_before = _rows("SELECT id, xmin::text AS xmin FROM harvest_object")

    rows = _rows("SELECT harvest_job_id, current, xmin::text AS xmin FROM harvest_object")
    assert sorted((row.harvest_job_id == jobs[2], row.current) for row in rows) == [
        (False, False), (False, False), (True, True)]
    assert [_statuses(HarvestJob.get(job)) for job in jobs] == [
        {"remote-0": "added"}, {"remote-0": "updated"}, {"remote-0": "updated"}]
    # The third job wrote the object it replaced, not the one already replaced.
    first_object = next(row for row in rows_before
                        if row.id == _object_of(jobs[0]))
    assert _object_xmin(first_object.id) == first_object.xmin
    assert _object_xmin(_object_of(jobs[1])) != next(
        row.xmin for row in rows_before if row.id == _object_of(jobs[1]))


def test_an_import_writes_its_objects_row_once(harvester: ListHarvester,
                                             org_id: str) -> None:
    """Besides its move to FETCH, the import of a dataset (created, then
    updated) writes its object's row with one statement: its move to IMPORT,
    final state and import_finished together (the write's hook writes what
    the write's first flushes would have written separately), with the hash
    extras and, for an update, the previous object's ``current`` reset."""
    harvester.remote = _datasets(1, org_id)
    source = _source(None)
    writes: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if re.search(r"(UPDATE harvest_object|INSERT INTO harvest_object_extra)\b",
                     statement, re.IGNORECASE):
            writes.append(statement)

    sa.event.listen(model.meta.engine, "before_cursor_execute", count)
    try:
        first = _run(harvester, source)
        created = len(writes)
        harvester.remote["remote-0"] = dict(harvester.remote["remote-0"], title="Renamed",
                                            metadata_modified="2025-01-01T00:00:00")
        second = _run(harvester, source)
    finally:
        sa.event.remove(model.meta.engine, "before_cursor_execute", count)

    assert (created, len(writes) - created) == (2, 2)  # FETCH, then everything else
    final_create, final_update = writes[created - 1], writes[-1]
    assert "INSERT INTO harvest_object_extra" in final_create
    assert "SET current = false" in final_update
    assert "INSERT INTO harvest_object_extra" in final_update
    assert _statuses(first) == {"remote-0": "added"}
    assert _statuses(second) == {"remote-0": "updated"}
    row = _rows("SELECT state, current, package_id, import_started, import_finished,"
                " fetch_finished, metadata_modified_date FROM harvest_object"
                " WHERE harvest_job_id = :j", j=second.id)[0]
    assert row.state == "COMPLETE" and row.current and row.package_id
    assert None not in (row.import_started, row.import_finished, row.fetch_finished,
                        row.metadata_modified_date)
    assert row.import_started <= row.import_finished


def test_an_update_loads_its_datasets_row_once(harvester: ListHarvester,
                                              org_id: str) -> None:
    """The lookup of the local dataset loads its row into the session and keeps
    it there: package_show and package_update find it, instead of loading it
    again each (package_show drops its reference, the session then forgets it)."""
    harvester.remote = _datasets(1, org_id)
    source = _source(None)
    _run(harvester, source)
    loads: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if re.match(r"SELECT package\.id( AS package_id)?, package\.name\b",
                    statement.lstrip()):
            loads.append(statement)

    harvester.remote["remote-0"] = dict(harvester.remote["remote-0"], title="Renamed",
                                        metadata_modified="2025-01-01T00:00:00")
    model.Session.remove()
    sa.event.listen(model.meta.engine, "before_cursor_execute", count)
    try:
        second = _run(harvester, source)
    finally:
        sa.event.remove(model.meta.engine, "before_cursor_execute", count)

    assert _statuses(second) == {"remote-0": "updated"}
    # CKAN 2.11's package_update loads the row by its id once more.
    assert len(loads) == (1 if toolkit.check_ckan_version(min_version="2.12") else 2)
    model.Session.remove()
    assert model.Package.get("remote-0").title == "Renamed"


def _object_of(job_id: str) -> str:
    return _rows("SELECT id FROM harvest_object WHERE harvest_job_id = :j",
                 j=job_id)[0].id


def _object_xmin(object_id: str) -> str:
    return _rows("SELECT xmin::text AS xmin FROM harvest_object WHERE id = :i",
                 i=object_id)[0].xmin


class ExtraAfterWrite(ListHarvester):
    """Adds an object extra after the dataset is written, without committing it."""

    def import_stage(self, harvest_object: HarvestObject) -> Any:
        result = super().import_stage(harvest_object)
        model.Session.add(HarvestObjectExtra(harvest_object_id=harvest_object.id,
                                             key="after_write", value="kept"))
        return result


def test_what_a_harvester_adds_after_the_write_is_still_committed(org_id: str) -> None:
    harvester = ExtraAfterWrite()
    harvester.remote = _datasets(1, org_id)

    job = HarvestJob(source=_source(None), status=JobStatus.RUNNING.value)
    job.save()
    job_id = job.id
    for object_id in stages.gather_stage(harvester, job):
        stages.fetch_and_import_stages(harvester, HarvestObject.get(object_id))
        discard_session()  # as the fetch consumer does after each object

    assert _statuses(HarvestJob.get(job_id)) == {"remote-0": "added"}
    assert [row.value for row in _rows(
        "SELECT e.value FROM harvest_object_extra e JOIN harvest_object o"
        " ON o.id = e.harvest_object_id WHERE o.harvest_job_id = :j"
        " AND e.key = 'after_write'", j=job_id)] == ["kept"]


def test_a_dataset_write_that_fails_after_the_hooks_leaves_an_errored_object(
        harvester: ListHarvester, org_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from ckan.lib.search import SearchIndexError
    from ckan.lib.search.index import PackageSearchIndex

    def refuse(self: Any, *args: Any, **kwargs: Any) -> None:
        raise SearchIndexError("index unavailable")

    harvester.remote = _datasets(1, org_id)
    monkeypatch.setattr(PackageSearchIndex, "index_package", refuse)

    job = _run(harvester, _source(None))
    model.Session.remove()

    assert _statuses(job) == {"remote-0": "errored"}
    assert _rows("SELECT state FROM harvest_object WHERE harvest_job_id = :j",
                 j=job.id)[0].state == "ERROR"
    assert _rows("SELECT count(*) AS n FROM package WHERE id = 'remote-0'")[0].n == 0
