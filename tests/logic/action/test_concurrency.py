"""``ckan.harvest.max_running_jobs``: jobs waiting for a slot, their order and position.

In-process, against the real database and Redis (a job sent is on the site's
Redis gather list; a slot frees when its job is aborted). The run with real
consumers is ``tests/test_concurrency_end_to_end.py``.
"""
from __future__ import annotations

import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from ckan import model
from ckan.plugins import toolkit
from freezegun import freeze_time

from ckanext.harvest.tests import factories as harvest_factories
from tests.support.marks import harvest_site

pytestmark = harvest_site(index=False)
capped = pytest.mark.ckan_config("ckan.harvest.max_running_jobs", "1")


def _call(name: str, user: dict[str, Any], **data: Any) -> Any:
    return toolkit.get_action(name)({"user": user["name"]}, data)


def _status(job_id: str) -> str:
    with model.meta.engine.connect() as conn:
        return conn.execute(sa.text("select status from harvest_job where id = :id"),
                            {"id": job_id}).scalar_one()


def _jobs(user: dict[str, Any], count: int, **data: Any) -> list[dict[str, Any]]:
    """``count`` sources, a job asked for each (``run``), one after another."""
    return [_call("harvest_job_create", user,
                  source_id=harvest_factories.HarvestSource()["id"], **data)
            for _ in range(count)]


@capped
def test_jobs_beyond_the_cap_wait_for_a_slot_with_their_position(sysadmin, gather_job_ids):
    first, second, third = _jobs(sysadmin, 3)

    assert first["status"] == "Running" and "waiting_for_slot" not in first
    assert (second["status"], second["waiting_for_slot"]) == (
        "New", {"position": 1, "waiting": 1})
    assert third["waiting_for_slot"] == {"position": 2, "waiting": 2}
    assert gather_job_ids() == [first["id"]]
    shown = _call("harvest_job_show", sysadmin, id=third["id"])
    assert shown["waiting_for_slot"] == {"position": 2, "waiting": 2}
    listed = {job["id"]: job.get("waiting_for_slot")
              for job in _call("harvest_job_list", sysadmin)}
    assert listed == {first["id"]: None, second["id"]: {"position": 1, "waiting": 2},
                      third["id"]: {"position": 2, "waiting": 2}}


@capped
def test_run_starts_the_next_waiting_job_when_a_slot_frees(sysadmin, gather_job_ids):
    first, second, third = _jobs(sysadmin, 3)

    _call("harvest_jobs_run", sysadmin)
    assert gather_job_ids() == [first["id"]]   # the slot is still taken

    _call("harvest_job_abort", sysadmin, id=first["id"])
    _call("harvest_jobs_run", sysadmin)

    assert [_status(job["id"]) for job in (first, second, third)] == [
        "Finished", "Running", "New"]
    assert gather_job_ids() == [first["id"], second["id"]]
    shown = _call("harvest_job_show", sysadmin, id=third["id"])
    assert shown["waiting_for_slot"] == {"position": 1, "waiting": 1}


@capped
def test_scheduled_jobs_wait_in_due_order_not_in_creation_order(sysadmin, gather_job_ids):
    busy = _jobs(sysadmin, 1)[0]   # takes the only slot
    with freeze_time("2026-06-01 10:00"):
        sources = [harvest_factories.HarvestSource(schedule="0 * * * *") for _ in range(3)]
    due = {sources[0]["id"]: "2026-06-01 10:40", sources[1]["id"]: "2026-06-01 10:20",
           sources[2]["id"]: "2026-06-01 10:30"}
    with model.meta.engine.begin() as conn:
        for source_id, when in due.items():
            conn.execute(sa.text("update harvest_source set next_run = :when where id = :id"),
                         {"when": when, "id": source_id})

    with freeze_time("2026-06-01 10:45"):
        _call("harvest_jobs_run", sysadmin)

    waiting = sorted(
        (job["waiting_for_slot"]["position"], job["source_id"])
        for job in _call("harvest_job_list", sysadmin) if job["status"] == "New")
    assert waiting == [(1, sources[1]["id"]), (2, sources[2]["id"]), (3, sources[0]["id"])]
    assert gather_job_ids() == [busy["id"]]


@pytest.mark.ckan_config("ckan.harvest.max_running_jobs", "2")
def test_a_cap_of_two_runs_two_jobs_at_once(sysadmin, gather_job_ids):
    jobs = _jobs(sysadmin, 3)

    assert [job["status"] for job in jobs] == ["Running", "Running", "New"]


@capped
def test_a_job_created_without_run_does_not_wait_and_is_never_started(sysadmin, gather_job_ids):
    busy = _jobs(sysadmin, 1)[0]
    unrun = _jobs(sysadmin, 1, run=False)[0]
    _call("harvest_job_abort", sysadmin, id=busy["id"])

    _call("harvest_jobs_run", sysadmin)

    assert "waiting_for_slot" not in _call("harvest_job_show", sysadmin, id=unrun["id"])
    assert _status(unrun["id"]) == "New"
    assert gather_job_ids() == [busy["id"]]


@capped
def test_a_waiting_job_of_a_deactivated_source_is_aborted_and_frees_its_place(
    sysadmin, gather_job_ids
):
    _, second, third = _jobs(sysadmin, 3)

    _call("harvest_source_delete", sysadmin, id=second["source_id"])

    assert _status(second["id"]) == "Aborted"
    shown = _call("harvest_job_show", sysadmin, id=third["id"])
    assert shown["waiting_for_slot"] == {"position": 1, "waiting": 1}


def test_without_a_cap_jobs_start_at_once_and_never_wait(sysadmin, gather_job_ids):
    jobs = _jobs(sysadmin, 3)

    assert [job["status"] for job in jobs] == ["Running"] * 3
    assert not any("waiting_for_slot" in job for job in jobs)
    assert sorted(gather_job_ids()) == sorted(job["id"] for job in jobs)


@capped
def test_jobs_waiting_when_the_cap_is_lifted_all_start_at_the_next_run(
    sysadmin, gather_job_ids, ckan_config, monkeypatch
):
    jobs = _jobs(sysadmin, 3)
    monkeypatch.setitem(ckan_config, "ckan.harvest.max_running_jobs", "0")

    _call("harvest_jobs_run", sysadmin)

    assert [_status(job["id"]) for job in jobs] == ["Running"] * 3
    with model.meta.engine.connect() as conn:
        markers = conn.execute(sa.text(
            "select count(*) from task_status where task_type = 'harvest_slot'")).scalar()
    assert markers == 0


def test_the_due_time_of_a_waiting_job_orders_it_even_if_created_later(sysadmin):
    from ckanext.harvest.lib import concurrency

    jobs = [harvest_factories.HarvestJobObj(
        source_id=harvest_factories.HarvestSource()["id"], run=False) for _ in range(2)]
    concurrency.wait_for_slot(jobs[0].id, datetime.datetime(2026, 6, 1, 10, 5))
    concurrency.wait_for_slot(jobs[1].id, datetime.datetime(2026, 6, 1, 10, 0))

    assert concurrency.waiting_job_ids() == [jobs[1].id, jobs[0].id]
    assert concurrency.positions([jobs[0].id]) == {jobs[0].id: (2, 2)}
