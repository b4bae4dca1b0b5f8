"""Removal of datasets missing at the source (``ckanext.harvest.lib.removals``).

A small harvester built on ``HarvesterBase`` plays a source whose listing the test
sets (``remote``): its gather creates one object per listed dataset and reports
the listing with ``record_seen_identifiers``, its import writes the dataset with
``_create_or_update_package``. Jobs run through the framework's stage drivers
(gather, then fetch/import of every object), against the real database and
search index. The clock of the grace period is ``removals.now``, patched.
"""
from __future__ import annotations

import datetime
import json
from typing import Any, Optional

import pytest
import sqlalchemy as sa
from ckan import model
from ckan.plugins import toolkit
from ckan.tests import factories
from sqlalchemy import orm

from ckanext.harvest.harvesters.base import HarvesterBase
from ckanext.harvest.lib import removals, stages
from ckanext.harvest.model import (
    HarvestJob,
    HarvestObject,
    HarvestSource,
    JobStatus,
    utcnow,
)
from tests.support.marks import harvest_site

pytestmark = harvest_site("harvest")

DAY = datetime.timedelta(days=1)


class ListHarvester(HarvesterBase):
    """Harvests ``remote`` (guid -> dataset dict); reports the whole listing,
    unless ``report`` is False (a gather that saw only part of it)."""

    remote: dict[str, dict[str, Any]]
    report = True

    def __new__(cls, *args: Any, **kwargs: Any) -> ListHarvester:
        # SingletonPlugin.__new__ would hand back HarvesterBase's own instance once
        # some test made one (``_instance`` is looked up through the base class).
        return object.__new__(cls)

    def info(self) -> dict[str, Any]:
        return {"name": "test-removals", "title": "Removals", "description": "Tests"}

    def gather_stage(self, harvest_job: HarvestJob) -> list[str]:
        ids = []
        for guid, dataset in self.remote.items():
            obj = HarvestObject(guid=guid, job=harvest_job, content=json.dumps(dataset))
            obj.save()
            ids.append(obj.id)
        if self.report:
            self.record_seen_identifiers(harvest_job, self.remote)
        return ids

    def fetch_stage(self, harvest_object: HarvestObject) -> bool:
        return True

    def import_stage(self, harvest_object: HarvestObject) -> Any:
        package_dict = json.loads(harvest_object.content or "{}")
        return self._create_or_update_package(package_dict, harvest_object,
                                              package_dict_form="package_show")


class Clock:
    def __init__(self) -> None:
        self.moment = utcnow()

    def __call__(self) -> datetime.datetime:
        return self.moment


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(removals, "now", clock)
    return clock


@pytest.fixture
def harvester() -> Any:
    instance = ListHarvester()
    vars(instance).clear()
    yield instance
    vars(instance).clear()


def _datasets(count: int, org_id: Optional[str]) -> dict[str, dict[str, Any]]:
    return {
        "remote-%d" % i: {
            "id": "remote-%d" % i, "name": "dataset-%d" % i, "title": "Dataset %d" % i,
            "owner_org": org_id, "metadata_modified": "2024-01-01T00:00:00",
        }
        for i in range(count)
    }


def _source(delete_missing: Optional[dict[str, Any]]) -> HarvestSource:
    config = json.dumps({"delete_missing": delete_missing}) if delete_missing else ""
    source = HarvestSource(url="http://remote.example.org/", type="test-removals",
                           config=config)
    source.save()
    return source


def _run(harvester: ListHarvester, source: HarvestSource) -> HarvestJob:
    """One job: gather, fetch and import each object, as the consumers would."""
    job = HarvestJob(source=source, status=JobStatus.RUNNING.value)
    job.save()
    ids = stages.gather_stage(harvester, job)
    for object_id in ids or []:
        stages.fetch_and_import_stages(harvester, HarvestObject.get(object_id))
    job.status = JobStatus.FINISHED.value
    job.save()
    return job


def _rows(sql: str, **params: Any) -> list[Any]:
    """Committed rows, read on a connection of their own."""
    with model.meta.engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params))


def _package(package_id: str) -> tuple[str, bool, str]:
    row = _rows("SELECT state, private, name FROM package WHERE id = :id", id=package_id)
    return row[0].state, row[0].private, row[0].name


def _statuses(job: HarvestJob) -> dict[str, Optional[str]]:
    return {row.guid: row.report_status for row in _rows(
        "SELECT guid, report_status FROM harvest_object WHERE harvest_job_id = :j",
        j=job.id)}


def _marks(key: str) -> dict[str, str]:
    return {row.guid: row.value for row in _rows(
        "SELECT o.guid, e.value FROM harvest_object_extra e JOIN harvest_object o "
        "ON o.id = e.harvest_object_id WHERE e.key = :key AND o.current", key=key)}


@pytest.fixture
def org_id() -> str:
    return factories.Organization()["id"]


def _harvested(harvester: ListHarvester, mode: str, count: int = 4,
               org: Optional[str] = None, **settings: Any) -> HarvestSource:
    harvester.remote = _datasets(count, org)
    source = _source(dict({"mode": mode, "after_days": 7, "max_fraction": 1}, **settings))
    _run(harvester, source)
    return source


# --- the default: keep ----------------------------------------------------------------


def test_without_the_option_a_vanished_dataset_stays_and_nothing_is_marked(
        harvester, clock, org_id):
    harvester.remote = _datasets(3, org_id)
    source = _source(None)
    _run(harvester, source)
    del harvester.remote["remote-0"]
    clock.moment += 30 * DAY

    job = _run(harvester, source)

    assert _package("remote-0")[0] == "active"
    assert _rows("SELECT count(*) FROM harvest_object_extra WHERE key IN "
                 "('missing_since', 'removal_held', 'harvest_withdrawal')")[0][0] == 0
    assert "deleted" not in _statuses(job).values()


# --- the grace period and the modes -----------------------------------------------------


def _missed_for(harvester: ListHarvester, clock: Clock, org_id: str,
                days: int) -> tuple[HarvestSource, HarvestJob]:
    """remote-0 missed by a job, then a job ``days`` later."""
    source = _harvested(harvester, "delete", org=org_id)
    del harvester.remote["remote-0"]
    _run(harvester, source)
    clock.moment += days * DAY
    return source, _run(harvester, source)


def test_a_dataset_missing_for_less_than_after_days_is_only_marked(harvester, clock, org_id):
    _, job = _missed_for(harvester, clock, org_id, 6)

    assert _package("remote-0")[0] == "active"
    assert set(_marks("missing_since")) == {"remote-0"}
    assert "deleted" not in _statuses(job).values()


def test_mode_delete_deletes_the_dataset_once_after_days_have_passed(
        harvester, clock, org_id):
    source, job = _missed_for(harvester, clock, org_id, 7)

    assert _package("remote-0")[0] == "deleted"
    assert _statuses(job)["remote-0"] == "deleted"
    show = toolkit.get_action("harvest_job_show")({"ignore_auth": True}, {"id": job.id})
    assert show["stats"]["deleted"] == 1
    assert _rows("SELECT count(*) FROM harvest_object WHERE package_id = 'remote-0' "
                 "AND current")[0][0] == 0
    assert _marks("missing_since") == {}
    # The next job withdraws nothing again.
    later = _run(harvester, source)
    assert "deleted" not in _statuses(later).values()


def test_mode_private_makes_the_dataset_private(harvester, clock, org_id):
    source = _harvested(harvester, "private", org=org_id, after_days=0)
    del harvester.remote["remote-1"]

    job = _run(harvester, source)

    assert _package("remote-1")[:2] == ("active", True)
    assert _statuses(job)["remote-1"] == "deleted"
    assert _package("remote-2")[:2] == ("active", False)


def test_mode_private_keeps_a_dataset_without_organisation_and_says_why(
        harvester, clock, monkeypatch):
    monkeypatch.setitem(toolkit.config, "ckan.auth.create_unowned_dataset", True)
    source = _harvested(harvester, "private", count=2, after_days=0)
    del harvester.remote["remote-1"]

    job = _run(harvester, source)

    assert _package("remote-1")[:2] == ("active", False)
    assert _statuses(job)["remote-1"] == "errored"
    errors = [row.message for row in _rows("SELECT message FROM harvest_object_error")]
    assert errors == ["Dataset dataset-1 has no organisation: it cannot be made "
                      "private, it is kept"]


def test_a_gather_that_reports_nothing_marks_nothing(harvester, clock, org_id):
    source = _harvested(harvester, "delete", org=org_id, after_days=0)
    del harvester.remote["remote-0"]
    harvester.report = False

    _run(harvester, source)

    assert _package("remote-0")[0] == "active"
    assert _marks("missing_since") == {}


# --- circuit breaker and approval -------------------------------------------------------


def test_the_circuit_breaker_holds_a_mass_removal_until_approved(harvester, clock, org_id):
    source = _harvested(harvester, "delete", count=10, org=org_id, after_days=0,
                        max_fraction=0.2)
    for guid in ("remote-0", "remote-1", "remote-2"):
        del harvester.remote[guid]

    job = _run(harvester, source)

    assert [_package("remote-%d" % i)[0] for i in range(3)] == ["active"] * 3
    assert removals.held_count(job.id) == 3
    messages = [row.message for row in _rows("SELECT message FROM harvest_gather_error")]
    assert len(messages) == 1
    assert "Removal of 3 dataset(s)" in messages[0]
    assert "more than the max_fraction 0.2 of its 10 datasets" in messages[0]
    assert "ckan harvester job approve-removals %s" % job.id in messages[0]

    approved = removals.approve(job)
    for object_id in approved:
        stages.fetch_and_import_stages(harvester, HarvestObject.get(object_id))

    assert len(approved) == 3
    assert [_package("remote-%d" % i)[0] for i in range(3)] == ["deleted"] * 3
    assert removals.held_count(job.id) == 0
    assert removals.approve(job) == []


def test_an_approval_after_the_mode_was_set_to_keep_withdraws_nothing(
        harvester, clock, org_id):
    source = _harvested(harvester, "delete", count=4, org=org_id, after_days=0,
                        max_fraction=0.2)
    del harvester.remote["remote-0"], harvester.remote["remote-1"]
    job = _run(harvester, source)
    assert removals.held_count(job.id) == 2
    source.config = json.dumps({"delete_missing": {"mode": "keep"}})
    source.save()

    approved = removals.approve(job)

    assert approved == []
    assert removals.held_count(job.id) == 0
    assert [_package("remote-%d" % i)[0] for i in range(2)] == ["active"] * 2


def test_the_circuit_breaker_holds_everything_when_the_source_lists_nothing(
        harvester, clock, org_id):
    source = _harvested(harvester, "delete", count=3, org=org_id, after_days=0)
    harvester.remote = {}

    job = _run(harvester, source)

    assert [_package("remote-%d" % i)[0] for i in range(3)] == ["active"] * 3
    assert removals.held_count(job.id) == 3
    message = _rows("SELECT message FROM harvest_gather_error")[0][0]
    assert "the source listed no dataset at all" in message


def test_a_withdrawal_redelivered_after_it_was_done_changes_nothing(
        harvester, clock, org_id):
    source = _harvested(harvester, "delete", org=org_id, after_days=0)
    del harvester.remote["remote-0"]
    job = _run(harvester, source)
    done = model.Session.query(HarvestObject).filter_by(
        harvest_job_id=job.id, guid="remote-0").one()
    again = HarvestObject(guid="remote-0", job=job, package_id="remote-0")
    again.extras = [removals.HarvestObjectExtra(key=removals.WITHDRAWAL_KEY,
                                                value="delete")]
    again.save()
    before = _rows("SELECT metadata_modified FROM package WHERE id = 'remote-0'")

    stages.fetch_and_import_stages(harvester, again)

    assert again.state == "COMPLETE"
    assert again.report_status == "not modified"
    assert done.report_status == "deleted"
    assert _rows("SELECT metadata_modified FROM package WHERE id = 'remote-0'") == before


# --- reappearance ---------------------------------------------------------------------


def test_a_dataset_back_within_the_grace_period_loses_its_mark(harvester, clock, org_id):
    source = _harvested(harvester, "delete", org=org_id)
    dataset = harvester.remote.pop("remote-0")
    _run(harvester, source)
    harvester.remote["remote-0"] = dataset
    clock.moment += 3 * DAY

    _run(harvester, source)
    del harvester.remote["remote-0"]
    clock.moment += 5 * DAY  # 8 days after it was first missed, 5 since it was back
    _run(harvester, source)

    assert _package("remote-0")[0] == "active"
    assert _marks("missing_since") == {"remote-0": clock.moment.isoformat()}


@pytest.mark.parametrize("mode", ["delete", "private"])
def test_a_withdrawn_dataset_back_at_the_source_is_restored_with_its_id_and_name(
        harvester, clock, org_id, mode):
    source = _harvested(harvester, mode, org=org_id, after_days=0)
    dataset = harvester.remote.pop("remote-0")
    _run(harvester, source)
    assert _package("remote-0")[:2] != ("active", False)
    harvester.remote["remote-0"] = dataset  # same metadata_modified as before

    job = _run(harvester, source)

    assert _package("remote-0") == ("active", False, "dataset-0")
    assert _statuses(job)["remote-0"] == "updated"
    assert _rows("SELECT count(*) FROM harvest_object WHERE package_id = 'remote-0' "
                 "AND current")[0][0] == 1
    assert _statuses(job)["remote-1"] == "not modified"


# --- settings ------------------------------------------------------------------------


@pytest.mark.parametrize("value, message", [
    ("delete", 'delete_missing must be an object such as {"mode": "delete", '
               '"after_days": 7, "max_fraction": 0.1}'),
    ({"mode": "purge"}, "delete_missing.mode must be one of delete, private, keep "
                        "(got 'purge')"),
    ({"after_days": -1}, "delete_missing.after_days must be a number of days, 0 or "
                         "more (got -1)"),
    ({"after_days": True}, "delete_missing.after_days must be a number of days, 0 or "
                           "more (got True)"),
    ({"max_fraction": 1.5}, "delete_missing.max_fraction must be a number from 0 to 1 "
                            "(got 1.5)"),
    ({"mode": "delete", "days": 3}, "delete_missing: unknown key(s) days (allowed: "
                                    "mode, after_days, max_fraction)"),
])
def test_invalid_settings_get_a_one_line_message(value, message):
    with pytest.raises(ValueError) as raised:
        removals.check_source_config({"delete_missing": value})
    assert str(raised.value) == message


def test_a_source_takes_the_site_default_key_by_key(monkeypatch):
    monkeypatch.setitem(toolkit.config, "ckan.harvest.delete_missing.mode", "private")
    monkeypatch.setitem(toolkit.config, "ckan.harvest.delete_missing.after_days", "3")
    source = _source({"after_days": 1})

    settings = removals.settings_of(source)

    assert settings == removals.Settings("private", 1.0, 0.1)
    assert removals.settings_of(_source(None)) == removals.Settings("private", 3.0, 0.1)


class _Killed(BaseException):
    """The process dies here (not an Exception: nothing catches it)."""


def test_a_withdrawal_killed_before_its_commit_leaves_nothing_half_done(
        harvester, clock, org_id, monkeypatch):
    source = _harvested(harvester, "delete", org=org_id, after_days=0)
    del harvester.remote["remote-0"]
    job = HarvestJob(source=source, status=JobStatus.RUNNING.value)
    job.save()
    ids = stages.gather_stage(harvester, job)
    (withdrawal_id,) = [i for i in ids if HarvestObject.get(i).guid == "remote-0"]

    def die(*args: Any, **kwargs: Any) -> None:
        raise _Killed()

    with monkeypatch.context() as patch:
        patch.setattr(orm.Session, "commit", die)
        with pytest.raises(_Killed):
            stages.fetch_and_import_stages(harvester, HarvestObject.get(withdrawal_id))
    model.Session.remove()  # what was not committed is lost with the process
    assert _package("remote-0")[0] == "active"
    assert _rows("SELECT count(*) FROM harvest_object WHERE package_id = 'remote-0' "
                 "AND current")[0][0] == 1

    stages.fetch_and_import_stages(harvester, HarvestObject.get(withdrawal_id))

    assert _package("remote-0")[0] == "deleted"
    assert _statuses(job)["remote-0"] == "deleted"
    assert _rows("SELECT count(*) FROM harvest_object WHERE package_id = 'remote-0' "
                 "AND current")[0][0] == 0
