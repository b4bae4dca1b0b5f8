"""Stalled jobs found by ``harvest_jobs_run`` (``ckan harvester run``).

The stall records live in CKAN's real Redis, the e-mails go through CKAN's
mailer to the real local SMTP sink of ``test_mail.py``. The real-consumer
version (a fetch consumer paused with SIGSTOP) is ``tests/test_stalls.py``.
"""
from __future__ import annotations

import datetime
from typing import Any, Iterator

import pytest
from ckan import model
from ckan.lib.redis import connect_to_redis
from ckan.tests.helpers import call_action

from ckanext.harvest.lib import stalls
from ckanext.harvest.model import HarvestJob, HarvestObject, JobStatus, ObjectState
from tests.lib import test_mail
from tests.lib.test_mail import SITE_TITLE, make_source

# The SMTP sink, the mail options and the recipients of test_mail.py.
audience = test_mail.audience
smtp_sink = test_mail.smtp_sink
status_mail = test_mail.status_mail

STALL_SUBJECT = "{} - Harvesting Job - Stall Notification".format(SITE_TITLE)

pytestmark = [
    pytest.mark.ckan_config("ckan.plugins", "harvest test_harvester"),
    pytest.mark.ckan_config("ckan.site_title", SITE_TITLE),
    pytest.mark.ckan_config("ckan.harvest.stall_minutes", "5"),
    pytest.mark.usefixtures("with_plugins", "clean_db", "clean_queues",
                            "with_request_context"),
]


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


@pytest.fixture
def stuck_job(audience) -> Iterator[str]:
    """A gathered Running job: 1 object done, 2 waiting, nothing since 10 minutes."""
    source = make_source(audience.org)
    job_id = call_action("harvest_job_create", source_id=source["id"], run=False)["id"]
    job = HarvestJob.get(job_id)
    started = _utcnow() - datetime.timedelta(minutes=12)
    job.status = JobStatus.RUNNING.value
    job.gather_started = started
    job.gather_finished = started + datetime.timedelta(minutes=2)
    for guid, state in (("a", ObjectState.COMPLETE), ("b", ObjectState.WAITING),
                        ("c", ObjectState.WAITING)):
        model.Session.add(HarvestObject(guid=guid, job=job, state=state.value,
                                        import_finished=job.gather_finished
                                        if state == ObjectState.COMPLETE else None))
    model.Session.commit()
    yield job_id
    connect_to_redis().delete(stalls.stall_key(job_id))


def _run() -> None:
    call_action("harvest_jobs_run")
    model.Session.remove()


def _state(job_id: str) -> Any:
    return stalls.states_of([job_id]).get(job_id)


def test_stalled_job_is_marked_and_mailed_once(stuck_job, smtp_sink, status_mail, audience):
    status_mail(send_all=False, send_errored=True)

    _run()
    _run()

    state = _state(stuck_job)
    assert state.stalled and state.mailed
    assert state.last_moved == HarvestJob.get(stuck_job).gather_finished
    assert smtp_sink.subjects == [STALL_SUBJECT] * len(smtp_sink.mails)
    expected = sorted(audience.sysadmin_emails + audience.org_admin_emails)
    assert smtp_sink.recipients == expected
    body = smtp_sink.mails[0].body
    assert "Harvest Job Id: {}".format(stuck_job) in body
    assert "Objects done: 1 of 3" in body
    assert "/harvest/{}/job/{}".format(HarvestJob.get(stuck_job).source_id, stuck_job) in body
    assert HarvestJob.get(stuck_job).status == JobStatus.RUNNING.value


def test_stall_without_the_mail_options_is_marked_but_not_mailed(stuck_job, smtp_sink,
                                                                 status_mail):
    status_mail(send_all=False, send_errored=False)

    _run()

    state = _state(stuck_job)
    assert state.stalled and not state.mailed
    assert smtp_sink.mails == []


def test_a_job_that_moves_again_is_no_longer_stalled_and_its_next_stall_mails(
        stuck_job, smtp_sink, status_mail, ckan_config, monkeypatch):
    status_mail(send_all=True, send_errored=False)
    _run()
    mails_of_first_stall = len(smtp_sink.mails)
    obj = model.Session.query(HarvestObject).filter_by(harvest_job_id=stuck_job,
                                                       guid="b").one()
    obj.state = ObjectState.COMPLETE.value
    model.Session.commit()

    _run()
    moving = _state(stuck_job)
    monkeypatch.setitem(ckan_config, "ckan.harvest.stall_minutes", 0.0001)
    _run()

    assert mails_of_first_stall > 0
    assert not moving.stalled and not moving.mailed
    assert moving.last_moved > _utcnow() - datetime.timedelta(minutes=1)
    again = _state(stuck_job)
    assert again.stalled and again.mailed
    assert len(smtp_sink.mails) == 2 * mails_of_first_stall


def test_the_stall_is_mailed_before_the_timeout_ends_the_job(stuck_job, smtp_sink,
                                                             status_mail, ckan_config,
                                                             monkeypatch):
    status_mail(send_all=False, send_errored=True)
    monkeypatch.setitem(ckan_config, "ckan.harvest.timeout", 8)

    _run()

    assert HarvestJob.get(stuck_job).status == JobStatus.FINISHED.value
    assert set(smtp_sink.subjects) == {STALL_SUBJECT}


def test_no_stall_is_recorded_when_stall_minutes_is_0(stuck_job, smtp_sink, status_mail,
                                                      ckan_config, monkeypatch):
    status_mail(send_all=True, send_errored=True)
    monkeypatch.setitem(ckan_config, "ckan.harvest.stall_minutes", 0)

    _run()

    assert _state(stuck_job) is None
    assert smtp_sink.mails == []


def test_an_unreachable_redis_leaves_the_scheduler_working(stuck_job, smtp_sink, status_mail,
                                                          ckan_config, monkeypatch, caplog):
    import redis
    from ckan.lib import redis as ckan_redis

    from tests.support.site import free_port

    status_mail(send_all=True, send_errored=True)
    monkeypatch.setitem(ckan_config, "ckan.harvest.timeout", 8)
    with monkeypatch.context() as patch:
        patch.setattr(ckan_redis, "_connection_pool", redis.ConnectionPool.from_url(
            "redis://127.0.0.1:{}/0".format(free_port())))
        _run()
        states = stalls.states_of([stuck_job])

    # No stall could be recorded or mailed, but the timeout still ended the job.
    assert HarvestJob.get(stuck_job).status == JobStatus.FINISHED.value
    assert smtp_sink.mails == []
    assert states == {}
    assert "Cannot check harvest job {} for a stall".format(stuck_job) in caplog.text
