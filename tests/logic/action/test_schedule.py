"""Cron schedules of sources: the API field, and ``harvest_jobs_run`` on a frozen clock.

Real database, index and Redis (jobs started by ``run`` are published on the
site's Redis gather list). The pure computations (DST, expressions) are in
``tests/lib/test_schedule.py``.
"""
from __future__ import annotations

import datetime
import json
from typing import Any, Optional

import pytest
import sqlalchemy as sa
from ckan import model
from ckan.plugins import toolkit
from freezegun import freeze_time

from ckanext.harvest.tests import factories as harvest_factories
from tests.support.marks import harvest_site

pytestmark = harvest_site(index=False)

CREATED = datetime.datetime(2026, 6, 1, 10, 0)


def _call(name: str, user: dict[str, Any], **data: Any) -> Any:
    return toolkit.get_action(name)({"user": user["name"]}, data)


def _rows(sql: str, **params: Any) -> list[Any]:
    with model.meta.engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params))


def _next_run(source_id: str) -> Optional[datetime.datetime]:
    return _rows("select next_run from harvest_source where id = :id", id=source_id)[0][0]


def _jobs(source_id: str) -> list[Any]:
    return _rows("select id, status from harvest_job where source_id = :id order by created",
                 id=source_id)


def _scheduled_source(expression: str = "0 3 * * *", at: datetime.datetime = CREATED,
                      **fields: Any) -> dict[str, Any]:
    with freeze_time(at):
        return harvest_factories.HarvestSource(schedule=expression, **fields)


def _run_at(when: str, user: dict[str, Any]) -> None:
    with freeze_time(when):
        _call("harvest_jobs_run", user)


def _abort_open_jobs(source_id: str, user: dict[str, Any]) -> None:
    for job_id, status in _jobs(source_id):
        if status in ("New", "Running"):
            _call("harvest_job_abort", user, id=job_id)


# --- the field: API, validation, storage -------------------------------------------


def test_a_source_created_with_a_schedule_shows_it_and_has_its_next_due_time(sysadmin):
    source = _scheduled_source("  0  3 * * * ", config='{"datasets": []}')

    shown = _call("harvest_source_show", sysadmin, id=source["id"])
    assert shown["schedule"] == "0 3 * * *"
    assert json.loads(shown["config"]) == {"datasets": []}
    assert _next_run(source["id"]) == datetime.datetime(2026, 6, 2, 3, 0)
    row = _rows("select frequency, config from harvest_source where id = :id",
                id=source["id"])[0]
    assert row.frequency == "MANUAL" and "schedule" not in (row.config or "")


def test_a_source_without_a_schedule_shows_no_schedule_key_and_no_next_run(sysadmin):
    source = harvest_factories.HarvestSource(frequency="WEEKLY")

    shown = _call("harvest_source_show", sysadmin, id=source["id"])
    assert "schedule" not in shown
    assert _next_run(source["id"]) is None


@pytest.mark.parametrize("expression, message", [
    ("0 3 * *", "a cron expression has 5 fields"),
    ("0 27 * * *", "Bad hour"),
])
def test_an_invalid_schedule_is_a_validation_error_on_the_field(sysadmin, expression,
                                                                message):
    with pytest.raises(toolkit.ValidationError) as raised:
        harvest_factories.HarvestSource(schedule=expression)

    errors = raised.value.error_dict["schedule"]
    assert len(errors) == 1 and message in errors[0]
    assert _rows("select count(*) from harvest_source")[0][0] == 0


def test_patch_keeps_the_schedule_and_an_empty_schedule_removes_it(sysadmin):
    source = _scheduled_source()

    patched = _call("harvest_source_patch", sysadmin, id=source["id"], title="Renamed")
    assert patched["schedule"] == "0 3 * * *"

    cleared = _call("harvest_source_patch", sysadmin, id=source["id"], schedule="")
    assert "schedule" not in cleared
    assert "schedule" not in model.Package.get(source["id"]).extras


def test_changing_the_schedule_moves_the_next_run(sysadmin):
    source = _scheduled_source()

    with freeze_time(CREATED):
        _call("harvest_source_patch", sysadmin, id=source["id"], schedule="30 18 * * *")

    assert _next_run(source["id"]) == datetime.datetime(2026, 6, 1, 18, 30)


# --- harvest_jobs_run: due times -----------------------------------------------------


def test_run_starts_nothing_before_the_due_time(sysadmin, gather_job_ids):
    source = _scheduled_source()

    _run_at("2026-06-02 02:59:59", sysadmin)

    assert _jobs(source["id"]) == []
    assert gather_job_ids() == []
    assert _next_run(source["id"]) == datetime.datetime(2026, 6, 2, 3, 0)


def test_run_after_the_due_time_starts_one_job_and_moves_to_the_next_due_time(
    sysadmin, gather_job_ids
):
    source = _scheduled_source()

    _run_at("2026-06-02 03:04", sysadmin)

    jobs = _jobs(source["id"])
    assert [status for _, status in jobs] == ["Running"]
    assert gather_job_ids() == [jobs[0].id]
    assert _next_run(source["id"]) == datetime.datetime(2026, 6, 3, 3, 0)


def test_run_never_starts_two_jobs_for_one_due_time(sysadmin, gather_job_ids):
    source = _scheduled_source()
    _run_at("2026-06-02 03:01", sysadmin)
    _abort_open_jobs(source["id"], sysadmin)  # the job is over: the source is free

    for when in ("2026-06-02 03:01", "2026-06-02 03:15", "2026-06-03 02:59"):
        _run_at(when, sysadmin)

    assert len(_jobs(source["id"])) == 1
    _run_at("2026-06-03 03:00", sysadmin)
    assert len(_jobs(source["id"])) == 2


def test_run_after_downtime_starts_one_job_not_the_backlog(sysadmin, gather_job_ids):
    source = _scheduled_source("0 * * * *")   # hourly: 50 due times are missed

    _run_at("2026-06-03 12:10", sysadmin)

    assert len(_jobs(source["id"])) == 1
    assert len(gather_job_ids()) == 1
    assert _next_run(source["id"]) == datetime.datetime(2026, 6, 3, 13, 0)


def test_a_due_time_passing_while_the_source_has_an_open_job_is_skipped(
    sysadmin, gather_job_ids
):
    source = _scheduled_source("0 * * * *")
    _run_at("2026-06-01 11:00", sysadmin)   # a job starts and is still running

    _run_at("2026-06-01 12:00", sysadmin)

    assert [status for _, status in _jobs(source["id"])] == ["Running"]
    assert _next_run(source["id"]) == datetime.datetime(2026, 6, 1, 13, 0)


@pytest.mark.ckan_config("ckan.harvest.timezone", "Europe/Paris")
def test_run_reads_the_schedule_in_the_declared_time_zone(sysadmin, gather_job_ids):
    source = _scheduled_source()   # 03:00 in Paris = 01:00 UTC in June

    assert _next_run(source["id"]) == datetime.datetime(2026, 6, 2, 1, 0)
    _run_at("2026-06-02 00:59", sysadmin)
    assert _jobs(source["id"]) == []
    _run_at("2026-06-02 01:00", sysadmin)
    assert len(_jobs(source["id"])) == 1


@pytest.mark.ckan_config("ckan.harvest.timezone", "Europe/Paris")
def test_a_daily_schedule_runs_once_in_the_night_the_clocks_go_back(sysadmin, gather_job_ids):
    # 02:30 occurs twice in Paris on 2026-10-25 (00:30 and 01:30 UTC).
    source = _scheduled_source("30 2 * * *", at=datetime.datetime(2026, 10, 24, 12, 0))
    started = datetime.datetime(2026, 10, 24, 23, 0)

    for step in range(12):   # ``run`` every 15 minutes, 23:00 to 01:45 UTC
        _run_at(str(started + datetime.timedelta(minutes=15 * step)), sysadmin)
        _abort_open_jobs(source["id"], sysadmin)

    assert len(_jobs(source["id"])) == 1
    assert _next_run(source["id"]) == datetime.datetime(2026, 10, 26, 1, 30)


# --- frequencies are unchanged ------------------------------------------------------


def test_frequency_sources_run_as_before_next_to_scheduled_ones(sysadmin, gather_job_ids):
    daily = harvest_factories.HarvestSource(frequency="DAILY")
    manual = harvest_factories.HarvestSource()
    scheduled = _scheduled_source(frequency="DAILY")   # the schedule wins

    _run_at("2026-06-01 10:30", sysadmin)

    assert [status for _, status in _jobs(daily["id"])] == ["Running"]
    assert _next_run(daily["id"]) == datetime.datetime(2026, 6, 2, 10, 30)
    assert _jobs(manual["id"]) == [] and _next_run(manual["id"]) is None
    assert _jobs(scheduled["id"]) == []
    assert _next_run(scheduled["id"]) == datetime.datetime(2026, 6, 2, 3, 0)


def test_a_removed_schedule_leaves_the_source_to_its_frequency(sysadmin, gather_job_ids):
    source = _scheduled_source(frequency="WEEKLY")
    _call("harvest_source_patch", sysadmin, id=source["id"], schedule="")

    _run_at("2026-06-02 03:00", sysadmin)   # the next_run left by the schedule

    assert len(_jobs(source["id"])) == 1
    assert _next_run(source["id"]) == datetime.datetime(2026, 6, 9, 3, 0)
