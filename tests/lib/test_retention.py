"""Retention of harvest jobs (``ckanext.harvest.lib.retention``).

Jobs are written as rows (a source made with the factories, its jobs, objects,
extras and errors with the model) with the ages and states each case needs;
the cases about removals and repeated harvests run real jobs of the test
harvester in-process. Each test applies a policy and checks, in the database,
which jobs are left and that a removed job left no row behind.
"""
from __future__ import annotations

import datetime
import json
import types
from typing import Any, Optional

import pytest
import sqlalchemy as sa
from ckan import model

from ckanext.harvest import queue
from ckanext.harvest.harvesters.base import HarvesterBase
from ckanext.harvest.lib import detaching, removals, retention
from ckanext.harvest.model import (
    HarvestJob,
    HarvestObject,
    HarvestObjectExtra,
    HarvestSource,
    JobStatus,
    ObjectState,
    utcnow,
)
from ckanext.harvest.tests import factories as harvest_factories
from ckanext.harvest.tests.lib import run_harvest_job
from tests.support.jobs import old_job
from tests.support.marks import harvest_site

pytestmark = harvest_site(index=False)

TABLES = ("harvest_job", "harvest_object", "harvest_object_extra", "harvest_object_error",
          "harvest_gather_error")


def _source(datasets: Optional[list[dict[str, Any]]] = None, **config: Any) -> HarvestSource:
    config["datasets"] = datasets or []
    return harvest_factories.HarvestSourceObj(
        url="http://retention-{}.example.org/".format(utcnow().timestamp()),
        config=json.dumps(config), source_type="test")


def _job_ids(source: HarvestSource) -> set[str]:
    model.Session.expire_all()
    return {job_id for (job_id,) in model.Session.query(HarvestJob.id).filter(
        HarvestJob.source_id == source.id)}


def _counts() -> dict[str, int]:
    model.Session.remove()
    return {table: model.Session.execute(
        sa.text("SELECT count(*) FROM {}".format(table))).scalar() for table in TABLES}


def _orphans() -> int:
    """Rows whose job or object is gone (the deletion must leave none)."""
    return model.Session.execute(sa.text("""
        SELECT (SELECT count(*) FROM harvest_object o WHERE o.harvest_job_id IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM harvest_job j WHERE j.id = o.harvest_job_id))
             + (SELECT count(*) FROM harvest_gather_error e WHERE NOT EXISTS
                (SELECT 1 FROM harvest_job j WHERE j.id = e.harvest_job_id))
    """)).scalar()


def _clean(keep_jobs: int = 0, keep_days: int = 0, source_id: Optional[str] = None,
           batch_objects: int = retention.BATCH_OBJECTS) -> retention.Outcome:
    chosen = retention.plan(retention.Policy(keep_jobs, keep_days), source_id)
    return retention.apply(chosen, batch_objects=batch_objects)


# -- the rules ---------------------------------------------------------------------


def test_keep_jobs_keeps_the_last_jobs_of_each_source_and_removes_the_rest_whole():
    source = _source()
    ages = [50, 40, 30, 20, 10]
    jobs = [old_job(source, age) for age in ages]
    other = _source()
    other_jobs = {old_job(other, age) for age in (60, 55)}
    before = _counts()

    outcome = _clean(keep_jobs=2, batch_objects=1)

    assert _job_ids(source) == set(jobs[-2:])
    assert _job_ids(other) == other_jobs
    assert (outcome.jobs, outcome.objects, outcome.object_errors,
            outcome.gather_errors) == (3, 6, 6, 3)
    after = _counts()
    assert {t: before[t] - after[t] for t in TABLES} == {
        "harvest_job": 3, "harvest_object": 6, "harvest_object_extra": 6,
        "harvest_object_error": 6, "harvest_gather_error": 3}
    assert _orphans() == 0


def test_keep_days_removes_the_jobs_created_before_the_period():
    source = _source()
    jobs = {age: old_job(source, age) for age in (30, 20, 5, 1)}

    outcome = _clean(keep_days=10)

    assert _job_ids(source) == {jobs[5], jobs[1]}
    assert outcome.jobs == 2


def test_with_both_rules_a_job_kept_by_either_is_kept():
    # a: the count keeps 20 and 15 (the period keeps none of them);
    # b: the count keeps 3 and 1, the period also keeps 5.
    a, b = _source(), _source()
    a_jobs = {age: old_job(a, age) for age in (30, 20, 15)}
    b_jobs = {age: old_job(b, age) for age in (30, 5, 3, 1)}

    outcome = _clean(keep_jobs=2, keep_days=10)

    assert _job_ids(a) == {a_jobs[20], a_jobs[15]}
    assert _job_ids(b) == {b_jobs[5], b_jobs[3], b_jobs[1]}
    assert outcome.jobs == 2


def test_without_any_rule_nothing_is_removed():
    source = _source()
    jobs = {old_job(source, age) for age in (400, 300)}

    chosen = retention.plan(retention.Policy())

    assert chosen.jobs == [] and retention.apply(chosen).jobs == 0
    assert _job_ids(source) == jobs


def test_source_limits_the_removal_to_one_source():
    one, two = _source(), _source()
    one_jobs = [old_job(one, age) for age in (30, 20)]
    two_jobs = {old_job(two, age) for age in (30, 20)}

    _clean(keep_jobs=1, source_id=one.id)

    assert _job_ids(one) == {one_jobs[-1]}
    assert _job_ids(two) == two_jobs


@pytest.mark.parametrize("values", [(-1, 0), (0, -5), ("3", 0), (True, 0)])
def test_a_policy_refuses_values_that_are_not_whole_numbers(values):
    with pytest.raises(ValueError, match="must be a whole number, 0 or more"):
        retention.Policy(*values)


@pytest.mark.ckan_config("ckan.harvest.keep_days", "-3")
def test_an_invalid_site_option_is_one_line(ckan_config):
    with pytest.raises(ValueError) as error:
        retention.apply_site_policy(ckan_config)

    assert str(error.value) == "ckan.harvest.keep_days must be a whole number, 0 or more (got -3)"


# -- never removed ------------------------------------------------------------------


@pytest.mark.parametrize("status", [JobStatus.NEW.value, JobStatus.RUNNING.value])
def test_a_job_that_is_not_finished_is_never_removed(status):
    source = _source()
    waiting = old_job(source, 100, status=status)
    old = old_job(source, 90)
    newest = old_job(source, 1)

    chosen = retention.plan(retention.Policy(keep_jobs=1))
    retention.apply(chosen)

    assert _job_ids(source) == {waiting, newest}
    assert old not in _job_ids(source)


def test_a_job_owning_a_current_object_is_never_removed():
    source = _source()
    owner = old_job(source, 100, current=True)
    old = old_job(source, 90)
    newest = old_job(source, 1)

    chosen = retention.plan(retention.Policy(keep_jobs=1, keep_days=10))
    outcome = retention.apply(chosen)

    assert _job_ids(source) == {owner, newest}
    assert chosen.protected == 1 and outcome.jobs == 1
    assert model.Session.query(HarvestObject).filter_by(harvest_job_id=owner).count() == 2
    assert old not in _job_ids(source)


def test_the_last_error_free_job_is_never_removed():
    source = _source()
    old_job(source, 100, clean=True)
    last_clean = old_job(source, 90, clean=True)
    with_errors = [old_job(source, age) for age in (80, 70)]
    probe = types.SimpleNamespace(source=source, id="")
    assert HarvesterBase.last_error_free_job(probe).id == last_clean

    _clean(keep_jobs=1)

    assert _job_ids(source) == {last_clean, with_errors[-1]}
    model.Session.expire_all()
    assert HarvesterBase.last_error_free_job(probe).id == last_clean


def test_detach_markers_are_never_touched():
    source = _source()
    old_job(source, 100)
    marker_id = "detach-marker"
    model.Session.execute(sa.insert(HarvestObject).values(
        id=marker_id, guid="", current=False, state=ObjectState.COMPLETE.value))
    model.Session.execute(sa.insert(HarvestObjectExtra).values(
        id="detach-marker-extra", harvest_object_id=marker_id,
        key=detaching.DETACHED_KEY, value=source.id))
    model.Session.commit()

    outcome = _clean(keep_days=1)

    assert outcome.jobs == 1
    assert model.Session.query(HarvestObject).filter_by(id=marker_id).count() == 1
    assert model.Session.query(HarvestObjectExtra).filter_by(
        harvest_object_id=marker_id).count() == 1


def _age(job_id: str, days: float) -> None:
    """Move a job back in time."""
    job = HarvestJob.get(job_id)
    job.created = utcnow() - datetime.timedelta(days=days)
    model.Session.commit()


def test_removals_keep_the_jobs_they_need_until_the_datasets_are_restored():
    datasets = [{"guid": "g1", "title": "One"}, {"guid": "g2", "title": "Two"}]
    removal = {"mode": "delete", "after_days": 0, "max_fraction": 0.9}
    source = _source(datasets, delete_missing=removal)
    harvester = queue.get_harvester("test")

    def harvest(listing: list[dict[str, Any]], age: float) -> str:
        src = HarvestSource.get(source.id)
        src.config = json.dumps({"datasets": listing, "delete_missing": removal})
        model.Session.commit()
        job = harvest_factories.HarvestJobObj(source=src)
        run_harvest_job(job, harvester)
        _age(job.id, age)
        return job.id

    first = harvest(datasets, 100)
    held = harvest([], 90)                    # listed nothing: the circuit breaker holds
    fillers = [old_job(source, age) for age in (80, 70)]

    _clean(keep_jobs=1)                       # the held job is kept for its approval
    assert _job_ids(source) == {first, held, fillers[-1]}
    assert removals.held_count(held) == 2

    withdrawal_ids = removals.approve(HarvestJob.get(held))
    _clean(keep_jobs=1)                       # its withdrawals are queued: kept
    assert held in _job_ids(source)

    user = removals.site_user_name()
    for object_id in withdrawal_ids:
        removals.withdraw(HarvestObject.get(object_id), user)
    package_id = HarvestObject.get(withdrawal_ids[0]).package_id
    assert removals.was_withdrawn(package_id)

    _clean(keep_jobs=1)                       # the withdrawn datasets need it
    assert held in _job_ids(source)
    assert first not in _job_ids(source)      # no current object left: it went
    assert removals.was_withdrawn(package_id)

    harvest(datasets, 60)                     # restored: nothing needs it any more
    _clean(keep_jobs=1)
    assert held not in _job_ids(source)
    assert not removals.was_withdrawn(package_id)


# -- repeated harvests ---------------------------------------------------------------


@pytest.mark.ckan_config("ckan.harvest.keep_jobs", "2")
def test_ten_repeated_harvests_with_retention_leave_the_tables_flat(ckan_config):
    source = _source([{"guid": "g{}".format(n), "title": "Dataset {}".format(n)}
                      for n in range(3)],
                     **{"import": {"g2": "error"}})
    harvester = queue.get_harvester("test")
    sizes = []
    for _ in range(10):
        job = harvest_factories.HarvestJobObj(source=HarvestSource.get(source.id))
        run_harvest_job(job, harvester)
        retention.apply_site_policy(ckan_config)
        sizes.append(_counts())

    assert sizes[1]["harvest_job"] == 2
    assert sizes[1]["harvest_object_error"] > 0
    assert all(size == sizes[1] for size in sizes[2:]), sizes
    assert _orphans() == 0
