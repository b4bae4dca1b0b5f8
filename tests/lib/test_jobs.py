"""Harvest jobs in ``ckanext.harvest.lib.jobs``: what a timeout leaves behind."""
from __future__ import annotations

import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from ckan import model

from ckanext.harvest.lib import jobs
from ckanext.harvest.model import HarvestJob, HarvestObject, HarvestSource, utcnow

pytestmark = pytest.mark.usefixtures("clean_db")


def _rows(sql: str, **params: Any) -> list[Any]:
    """Committed rows, read on a connection of their own."""
    with model.meta.engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params))


def _job_abandoned_by_its_consumers(idle: datetime.timedelta) -> HarvestJob:
    """A gathered job: one object imported ``idle`` ago, the others never done."""
    source = HarvestSource(url="http://timeout.example.org/", type="test")
    source.save()
    job = HarvestJob(source=source, status="Running", gather_started=utcnow() - idle,
                     gather_finished=utcnow() - idle)
    job.save()
    HarvestObject(guid="done", job=job, state="COMPLETE", report_status="added",
                  import_finished=utcnow() - idle).save()
    for guid, state in (("queued", "WAITING"), ("fetching", "FETCH"),
                        ("importing", "IMPORT"), ("failed", "ERROR")):
        HarvestObject(guid=guid, job=job, state=state).save()
    return job


def test_a_timed_out_job_leaves_no_object_waiting_or_in_a_stage():
    job = _job_abandoned_by_its_consumers(datetime.timedelta(minutes=2))

    closed = jobs.close_if_timed_out(job, 1)

    assert closed is True
    assert _rows("SELECT status FROM harvest_job")[0][0] == "Finished"
    objects = {row.guid: (row.state, row.report_status) for row in _rows(
        "SELECT guid, state, report_status FROM harvest_object")}
    assert objects == {
        "done": ("COMPLETE", "added"),
        "queued": ("ERROR", "errored"),
        "fetching": ("ERROR", "errored"),
        "importing": ("ERROR", "errored"),
        "failed": ("ERROR", None),  # finished before the timeout: untouched
    }
    errors = {row.guid: row.message for row in _rows(
        "SELECT o.guid, e.message FROM harvest_object_error e "
        "JOIN harvest_object o ON o.id = e.harvest_object_id")}
    assert set(errors) == {"queued", "fetching", "importing"}
    assert errors["queued"] == (f"Job {job.id} timed out (1 minutes without activity) "
                                "before this object was processed")
    gather_errors = [row[0] for row in _rows("SELECT message FROM harvest_gather_error")]
    assert len(gather_errors) == 1 and gather_errors[0].startswith(
        f"Job {job.id} timeout (1 minutes)\n")


def test_a_job_active_within_the_timeout_keeps_its_objects():
    job = _job_abandoned_by_its_consumers(datetime.timedelta(seconds=30))

    closed = jobs.close_if_timed_out(job, 1)

    assert closed is False
    assert _rows("SELECT status FROM harvest_job")[0][0] == "Running"
    assert sorted(row[0] for row in _rows("SELECT state FROM harvest_object")) == [
        "COMPLETE", "ERROR", "FETCH", "IMPORT", "WAITING"]
    assert _rows("SELECT count(*) FROM harvest_object_error")[0][0] == 0


def test_a_timed_out_job_is_never_seen_finished_with_objects_in_limbo():
    """Job and objects close in one transaction: a reader (or a ``harvester run``
    dying half-way) never meets a Finished job whose objects are still unfinished
    (found by scenario 6 of the faults suite)."""
    job = _job_abandoned_by_its_consumers(datetime.timedelta(minutes=2))
    seen: list[tuple[str, int]] = []

    def look(session: Any) -> None:
        row = _rows("SELECT j.status, count(*) FILTER (WHERE o.state IN "
                    "('WAITING', 'FETCH', 'IMPORT')) FROM harvest_job j JOIN "
                    "harvest_object o ON o.harvest_job_id = j.id GROUP BY j.status")[0]
        seen.append((row[0], row[1]))

    sa.event.listen(model.Session, "after_commit", look)
    try:
        jobs.close_if_timed_out(job, 1)
    finally:
        sa.event.remove(model.Session, "after_commit", look)

    assert seen and seen[-1] == ("Finished", 0)
    assert [state for state in seen if state[0] == "Finished" and state[1]] == []
