"""Job status e-mails (notifications.md), delivered to a real local SMTP server.

Every mail goes through CKAN's mailer to an ``aiosmtpd`` sink listening on
127.0.0.1; the tests read back the envelope recipients, the subject and the
decoded plain-text body.
"""
from __future__ import annotations

import dataclasses
import datetime
import email
import email.policy
import logging
import socket
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from ckan import model
from ckan import plugins as p
from ckan.plugins import toolkit
from ckan.tests import factories
from ckan.tests.helpers import call_action

from ckanext.harvest.lib import mail
from ckanext.harvest.model import (
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
    JobStatus,
    ObjectState,
    ReportStatus,
)
from ckanext.harvest.tests import factories as harvest_factories

SITE_URL = "http://test.ckan.net"  # ckan.site_url of test-core.ini
SITE_TITLE = "Harvest Test Portal"
ERROR_SUBJECT = "Harvest Test Portal - Harvesting Job - Error Notification"
SUMMARY_SUBJECT = (
    "Harvest Test Portal - Harvesting Job Successful - Summary Notification"
)
FAILED_MAIL_LOG = "Sending Harvest-Notification-Mail failed. Message: "

pytestmark = [
    pytest.mark.ckan_config("ckan.plugins", "harvest test_harvester"),
    pytest.mark.ckan_config("ckan.site_title", SITE_TITLE),
    # templates and url_for need the app of the loaded plugins and a request
    pytest.mark.usefixtures(
        "with_plugins", "clean_db", "clean_index", "with_request_context"
    ),
]


# -- the SMTP sink -----------------------------------------------------------------


@dataclasses.dataclass
class SentMail:
    rcpt_tos: list[str]
    to: str
    subject: str
    body: str


class _Collector:
    def __init__(self) -> None:
        self.mails: list[SentMail] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.mails.append(
            SentMail(
                rcpt_tos=list(envelope.rcpt_tos),
                to=str(message["To"]),
                # a long subject is folded right after "Subject:"; unfolding
                # leaves the folding white space in front of it
                subject=str(message["Subject"]).strip(),
                body=message.get_content(),
            )
        )
        return "250 Message accepted for delivery"

    @property
    def subjects(self) -> list[str]:
        return [sent.subject for sent in self.mails]

    @property
    def recipients(self) -> list[str]:
        return sorted(rcpt for sent in self.mails for rcpt in sent.rcpt_tos)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp_sink(ckan_config, monkeypatch):
    collector = _Collector()
    controller = Controller(collector, hostname="127.0.0.1", port=_free_port())
    controller.start()
    monkeypatch.setitem(ckan_config, "smtp.server", "127.0.0.1:{}".format(controller.port))
    yield collector
    controller.stop()


@pytest.fixture
def smtp_down(ckan_config, monkeypatch):
    """The configured SMTP server refuses connections (nothing listens)."""
    monkeypatch.setitem(ckan_config, "smtp.server", "127.0.0.1:{}".format(_free_port()))


@pytest.fixture
def status_mail(ckan_config, monkeypatch):
    def configure(send_all: bool, send_errored: bool) -> None:
        monkeypatch.setitem(ckan_config, "ckan.harvest.status_mail.all", send_all)
        monkeypatch.setitem(ckan_config, "ckan.harvest.status_mail.errored", send_errored)

    return configure


# -- arrangement helpers -----------------------------------------------------------


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _set_email(user: dict[str, Any], value: Any) -> None:
    obj = model.User.get(user["id"])
    obj.email = value
    model.Session.commit()


@dataclasses.dataclass
class Audience:
    org: dict[str, Any]
    sysadmin_emails: list[str]
    org_admin_emails: list[str]


@pytest.fixture
def audience() -> Audience:
    """Sysadmins and organisation members, with and without e-mail addresses."""
    factories.Sysadmin(name="root", email="root@example.org")
    both = factories.Sysadmin(name="both", email="both@example.org")
    _set_email(factories.Sysadmin(name="mute-sysadmin"), "")
    _set_email(factories.Sysadmin(name="null-sysadmin"), None)
    _set_email(factories.Sysadmin(name="blank-sysadmin"), "   ")
    factories.User(name="outsider", email="outsider@example.org")
    org_admin = factories.User(name="org-admin", email="orgadmin@example.org")
    mute_admin = factories.User(name="mute-admin")
    _set_email(mute_admin, None)
    editor = factories.User(name="editor", email="editor@example.org")
    member = factories.User(name="member", email="member@example.org")
    org = factories.Organization(
        name="forestry-office",
        users=[
            {"name": org_admin["name"], "capacity": "admin"},
            {"name": both["name"], "capacity": "admin"},
            {"name": mute_admin["name"], "capacity": "admin"},
            {"name": editor["name"], "capacity": "editor"},
            {"name": member["name"], "capacity": "member"},
        ],
    )
    return Audience(
        org=org,
        sysadmin_emails=["both@example.org", "root@example.org"],
        org_admin_emails=["both@example.org", "orgadmin@example.org"],
    )


def make_source(org: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"title": "Forest Inventory"}
    if org is not None:
        values["owner_org"] = org["id"]
    values.update(kwargs)
    return harvest_factories.HarvestSource(**values)


def make_running_job(
    source_id: str,
    *,
    added: int = 0,
    updated: int = 0,
    deleted: int = 0,
    object_errors: tuple[tuple[str, ...], ...] = (),
    gather_errors: tuple[str, ...] = (),
    age: datetime.timedelta = datetime.timedelta(minutes=5),
) -> str:
    """A gathered ``Running`` job whose objects are all processed; returns its id."""
    job_id = call_action("harvest_job_create", source_id=source_id, run=False)["id"]
    job = HarvestJob.get(job_id)
    started = _utcnow() - age
    job.status = JobStatus.RUNNING.value
    job.gather_started = started
    job.gather_finished = started + datetime.timedelta(seconds=30)
    done = started + datetime.timedelta(minutes=1)
    counts = (
        (ReportStatus.ADDED, added),
        (ReportStatus.UPDATED, updated),
        (ReportStatus.DELETED, deleted),
    )
    for status, count in counts:
        for n in range(count):
            model.Session.add(HarvestObject(
                guid="{}-{}".format(status.value, n), job=job,
                state=ObjectState.COMPLETE.value, report_status=status.value,
                import_finished=done,
            ))
    for n, messages in enumerate(object_errors):
        obj = HarvestObject(
            guid="broken-{}".format(n), job=job, state=ObjectState.ERROR.value,
            report_status=ReportStatus.ERRORED.value, import_finished=done,
        )
        model.Session.add(obj)
        for k, message in enumerate(messages):
            model.Session.add(HarvestObjectError(
                message=message, object=obj, stage="Import",
                created=started + datetime.timedelta(seconds=k),
            ))
    for n, message in enumerate(gather_errors):
        model.Session.add(HarvestGatherError(
            message=message, job=job, created=started + datetime.timedelta(seconds=n),
        ))
    model.Session.commit()
    return job_id


def run_jobs(source_id: str) -> list[Any]:
    return call_action("harvest_jobs_run", source_id=source_id)


def job_row(job_id: str) -> HarvestJob:
    model.Session.expire_all()
    return HarvestJob.get(job_id)


def report_messages(job_id: str) -> tuple[list[str], list[str]]:
    """Gather-error and object-error messages in ``harvest_job_report`` order."""
    report = call_action("harvest_job_report", id=job_id)
    job_errors = [error["message"] for error in report["gather_errors"]]
    obj_errors = [
        error["message"]
        for entry in report["object_errors"].values()
        for error in entry["errors"]
    ]
    return job_errors, obj_errors


def line_of(body: str, prefix: str) -> str:
    matches = [line for line in body.splitlines() if line.startswith(prefix)]
    assert len(matches) == 1, body
    return matches[0]


# -- harvest_get_notifications_recipients ------------------------------------------


def _emails(recipients: list[dict[str, str]]) -> list[str]:
    return sorted(recipient["email"] for recipient in recipients)


def test_recipients_are_sysadmins_then_org_admins_with_an_email(audience):
    source = make_source(audience.org)

    recipients = call_action(
        "harvest_get_notifications_recipients", source_id=source["id"]
    )

    assert _emails(recipients[:2]) == audience.sysadmin_emails
    assert _emails(recipients[2:]) == audience.org_admin_emails
    assert {"name": "org-admin", "email": "orgadmin@example.org"} in recipients
    assert {"name": "root", "email": "root@example.org"} in recipients
    # a sysadmin who also administers the organisation is listed twice
    assert [r["name"] for r in recipients].count("both") == 2
    assert len(recipients) == 4


def test_recipients_of_a_source_without_organization_are_the_sysadmins(audience):
    source = make_source()

    recipients = call_action(
        "harvest_get_notifications_recipients", source_id=source["id"]
    )

    assert source["owner_org"] is None
    assert _emails(recipients) == audience.sysadmin_emails


def test_recipients_action_is_refused_to_an_organization_admin(audience):
    source = make_source(audience.org)

    with pytest.raises(toolkit.NotAuthorized):
        call_action(
            "harvest_get_notifications_recipients",
            context={"user": "org-admin", "ignore_auth": False},
            source_id=source["id"],
        )


def test_recipients_action_is_allowed_to_a_sysadmin(audience):
    source = make_source(audience.org)

    recipients = call_action(
        "harvest_get_notifications_recipients",
        context={"user": "root", "ignore_auth": False},
        source_id=source["id"],
    )

    assert len(recipients) == 4


def test_recipients_action_leaves_the_callers_context_alone(audience):
    """Q24: unlike the original, the action does not switch the caller's user."""
    source = make_source(audience.org)
    context = {"user": "root"}

    call_action("harvest_get_notifications_recipients", context=context,
                source_id=source["id"])

    assert context["user"] == "root"


# -- when a mail is sent -----------------------------------------------------------


@pytest.mark.parametrize(
    "send_all, send_errored, expected",
    [
        (True, False, [ERROR_SUBJECT]),
        (False, True, [ERROR_SUBJECT]),
        (True, True, [ERROR_SUBJECT]),
        (False, False, []),
    ],
)
def test_finished_job_with_errors_mails_as_configured(
    audience, smtp_sink, status_mail, send_all, send_errored, expected
):
    status_mail(send_all, send_errored)
    source = make_source(audience.org)
    job_id = make_running_job(source["id"], added=1, object_errors=(("Bad date",),))

    result = run_jobs(source["id"])

    assert result == []
    assert job_row(job_id).status == JobStatus.FINISHED.value
    assert smtp_sink.subjects == expected * 4
    if expected:
        assert smtp_sink.recipients == sorted(
            audience.sysadmin_emails + audience.org_admin_emails
        )


@pytest.mark.parametrize(
    "send_all, send_errored, expected",
    [
        (True, False, [SUMMARY_SUBJECT]),
        (True, True, [SUMMARY_SUBJECT]),
        (False, True, []),
        (False, False, []),
    ],
)
def test_finished_job_without_errors_mails_a_summary_only_when_all_is_set(
    audience, smtp_sink, status_mail, send_all, send_errored, expected
):
    status_mail(send_all, send_errored)
    source = make_source(audience.org)
    job_id = make_running_job(source["id"], added=2, updated=1)

    run_jobs(source["id"])

    assert job_row(job_id).status == JobStatus.FINISHED.value
    assert smtp_sink.subjects == expected * 4


def test_mail_goes_to_each_recipient_by_name_and_address(audience, smtp_sink, status_mail):
    status_mail(True, False)
    source = make_source(audience.org)
    make_running_job(source["id"], gather_errors=("Remote down",))

    run_jobs(source["id"])

    assert sorted(len(sent.rcpt_tos) for sent in smtp_sink.mails) == [1, 1, 1, 1]
    to_by_address = {sent.rcpt_tos[0]: sent.to for sent in smtp_sink.mails}
    assert to_by_address["root@example.org"] == "root <root@example.org>"
    assert to_by_address["orgadmin@example.org"] == "org-admin <orgadmin@example.org>"
    assert smtp_sink.recipients == [
        "both@example.org", "both@example.org",
        "orgadmin@example.org", "root@example.org",
    ]


def test_job_still_gathering_is_left_running_without_mail(audience, smtp_sink, status_mail):
    status_mail(True, True)
    source = make_source(audience.org)
    job_id = make_running_job(source["id"], added=1)
    job = HarvestJob.get(job_id)
    model.Session.add(HarvestObject(guid="waiting", job=job))
    model.Session.commit()

    run_jobs(source["id"])

    assert job_row(job_id).status == JobStatus.RUNNING.value
    assert smtp_sink.mails == []


def test_timed_out_job_is_finished_without_mail(
    audience, smtp_sink, status_mail, ckan_config, monkeypatch
):
    status_mail(True, True)
    monkeypatch.setitem(ckan_config, "ckan.harvest.timeout", "10")
    source = make_source(audience.org)
    job_id = make_running_job(
        source["id"], added=1, age=datetime.timedelta(hours=2)
    )

    run_jobs(source["id"])

    job = job_row(job_id)
    assert job.status == JobStatus.FINISHED.value
    assert [e.message.splitlines()[0] for e in job.gather_errors] == [
        "Job {} timeout (10 minutes)".format(job_id)
    ]
    assert smtp_sink.mails == []


def test_aborted_job_is_finished_without_mail(audience, smtp_sink, status_mail):
    status_mail(True, True)
    source = make_source(audience.org)
    job_id = make_running_job(source["id"], added=1, object_errors=(("Bad date",),))

    call_action("harvest_job_abort", id=job_id)

    assert job_row(job_id).status == JobStatus.FINISHED.value
    assert smtp_sink.mails == []


def test_mailer_failure_is_logged_and_the_job_still_finishes(
    audience, smtp_down, status_mail, caplog
):
    status_mail(False, True)
    source = make_source(audience.org)
    job_id = make_running_job(source["id"], object_errors=(("Bad date",),))
    caplog.set_level(logging.ERROR)
    caplog.clear()

    result = run_jobs(source["id"])

    assert result == []
    assert job_row(job_id).status == JobStatus.FINISHED.value
    failures = [
        r for r in caplog.records
        if r.levelno == logging.ERROR and r.getMessage().startswith(FAILED_MAIL_LOG)
    ]
    assert len(failures) == 4  # one per recipient
    body = failures[0].getMessage()[len(FAILED_MAIL_LOG):]
    assert body.startswith(
        "This is a failure notification of the latest harvest job set-up in "
    )
    assert "Harvest Job Id: {}".format(job_id) in body.splitlines()
    assert "    - Bad date " in body.splitlines()


def test_unexpected_mail_error_is_logged_and_aborts_jobs_run(
    audience, smtp_sink, status_mail, ckan_config, monkeypatch, caplog
):
    status_mail(False, True)
    # smtp.user without smtp.password: CKAN's mailer fails with an AssertionError,
    # which is not a MailerException
    monkeypatch.setitem(ckan_config, "smtp.user", "harvest")
    monkeypatch.setitem(ckan_config, "smtp.password", "")
    source = make_source(audience.org)
    job_id = make_running_job(source["id"], object_errors=(("Bad date",),))
    caplog.set_level(logging.DEBUG, logger="ckanext.harvest")
    caplog.clear()

    with pytest.raises(AssertionError):
        run_jobs(source["id"])

    assert smtp_sink.mails == []
    assert job_row(job_id).status == JobStatus.FINISHED.value
    harvest_errors = [
        r for r in caplog.records
        if r.name.startswith("ckanext.harvest") and r.levelno >= logging.ERROR
    ]
    assert harvest_errors, "the unexpected mailer error was not logged"


# -- subjects and bodies -----------------------------------------------------------


def test_error_mail_body_lists_the_job_and_its_errors_line_by_line(
    audience, smtp_sink, status_mail
):
    status_mail(False, True)
    config = '{"custom": "a&b <x>"}'
    source = make_source(audience.org, config=config)
    job_id = make_running_job(
        source["id"], added=2, updated=1, deleted=3,
        object_errors=(("Bad date", "Missing title"), ("Bad licence",)),
        gather_errors=("Remote down", "Remote slow"),
    )

    run_jobs(source["id"])

    job = call_action("harvest_job_show", id=job_id)
    job_errors, obj_errors = report_messages(job_id)
    assert sorted(job_errors) == ["Remote down", "Remote slow"]
    assert sorted(obj_errors) == ["Bad date", "Bad licence", "Missing title"]
    expected = [
        "This is a failure notification of the latest harvest job set-up in "
        "{}. ".format(SITE_URL),
        "Job URL: {}/harvest/{}/job/{}".format(SITE_URL, source["id"], job_id),
        "",
        "Harvest Source: Forest Inventory",
        "Harvest Configuration: " + config,
        "Organization: forestry-office",
        "",
        "Harvest Job Id: " + job_id,
        "Created: " + job["created"],
        "Finished: " + job["finished"],
        "",
        "Records in Error: 4",
        "Records Added: 2",
        "Records Updated: 1",
        "Records Deleted: 3",
        "",
        "Error Summary: 5 errors",
        "",
        "Job Errors: 2",
        *["    - {} ".format(message) for message in job_errors],
        "Document Error: 3",
        *["    - {} ".format(message) for message in obj_errors],
        "--",
        "You are receiving this email because you are currently set-up as "
        "Administrator for {}.".format(SITE_URL),
        "Please do not reply to this email as it was sent from a non-monitored address.",
    ]
    assert smtp_sink.subjects == [ERROR_SUBJECT] * 4
    assert {sent.body for sent in smtp_sink.mails} == {smtp_sink.mails[0].body}
    assert smtp_sink.mails[0].body.splitlines() == expected
    assert job["finished"] is not None


def test_summary_mail_body_lists_the_job_line_by_line(audience, smtp_sink, status_mail):
    status_mail(True, False)
    config = '{"datasets": []}'
    source = make_source(config=config)
    job_id = make_running_job(source["id"], added=2, updated=1, deleted=3)

    run_jobs(source["id"])

    job = call_action("harvest_job_show", id=job_id)
    expected = [
        "This is a summary of the latest harvest job set-up in {}.".format(SITE_URL),
        "Job URL: {}/harvest/{}/job/{}".format(SITE_URL, source["id"], job_id),
        "",
        "Harvest Source: Forest Inventory",
        "Harvest Configuration: " + config,
        "",
        "Organization: Not specified",
        "",
        "Harvest Job Id: " + job_id,
        "Created: " + job["created"],
        "Finished: " + job["finished"],
        "",
        "Records in Error: 0",
        "Records Added: 2",
        "Records Updated: 1",
        "Records Deleted: 3",
        "",
        "Error Summary: 0 errors",
        "Job Errors: 0",
        "",
        "Document Error: 0",
        "",
        "--",
        "You are receiving this email because you are currently set-up as "
        "Administrator for {}.".format(SITE_URL),
        "Please do not reply to this email as it was sent from a non-monitored address.",
    ]
    assert smtp_sink.subjects == [SUMMARY_SUBJECT] * 2  # the two sysadmins
    assert smtp_sink.mails[0].body.splitlines() == expected


@pytest.mark.parametrize(
    "config, shown",
    [
        ("", "Not specified"),
        ("{}", "Not specified"),
        ('{"gather": "none"}', '{"gather": "none"}'),
    ],
)
def test_mail_shows_the_configuration_or_not_specified(
    audience, smtp_sink, status_mail, config, shown
):
    status_mail(True, False)
    source = make_source(audience.org, config=config)
    make_running_job(source["id"], added=1)

    run_jobs(source["id"])

    assert smtp_sink.subjects == [SUMMARY_SUBJECT] * 4
    body = smtp_sink.mails[0].body
    assert line_of(body, "Harvest Configuration:") == "Harvest Configuration: " + shown
    assert line_of(body, "Organization:") == "Organization: forestry-office"


def test_error_mail_lists_at_most_twenty_job_errors_and_twenty_error_documents(
    audience, smtp_sink, status_mail
):
    status_mail(False, True)
    source = make_source()
    job_id = make_running_job(
        source["id"],
        object_errors=tuple(("Object failure {:02d}".format(n),) for n in range(22)),
        gather_errors=tuple("Gather failure {:02d}".format(n) for n in range(22)),
    )

    run_jobs(source["id"])

    job_errors, obj_errors = report_messages(job_id)
    assert len(job_errors) == len(obj_errors) == 22
    lines = smtp_sink.mails[0].body.splitlines()
    start = lines.index("Job Errors: 20")
    assert lines[start + 1:start + 21] == [
        "    - {} ".format(message) for message in job_errors[:20]
    ]
    assert lines[start + 21] == "Document Error: 20"
    assert lines[start + 22:start + 42] == [
        "    - {} ".format(message) for message in obj_errors[:20]
    ]
    assert lines[start + 42] == "--"
    assert "Error Summary: 40 errors" in lines
    assert "Records in Error: 44" in lines
    assert smtp_sink.subjects == [ERROR_SUBJECT] * 2


def test_error_mail_lists_every_message_of_an_errored_document(
    audience, smtp_sink, status_mail
):
    status_mail(False, True)
    source = make_source()
    job_id = make_running_job(
        source["id"], object_errors=(("First problem", "Second problem"),)
    )

    run_jobs(source["id"])

    lines = smtp_sink.mails[0].body.splitlines()
    start = lines.index("Document Error: 2")
    assert lines[start + 1:start + 3] == ["    - First problem ", "    - Second problem "]
    assert "Records in Error: 1" in lines
    assert "Error Summary: 2 errors" in lines
    assert job_row(job_id).status == JobStatus.FINISHED.value


# -- the mail functions used directly ----------------------------------------------


def test_send_status_mail_sends_the_error_mail_of_the_last_job(
    audience, smtp_sink, status_mail
):
    status_mail(False, True)
    source = make_source(audience.org)
    job_id = make_running_job(source["id"], gather_errors=("Remote down",))
    status = call_action("harvest_source_show_status", id=source["id"])

    mail.send_status_mail({"ignore_auth": True}, source["id"], status)

    assert status["last_job"]["id"] == job_id
    assert smtp_sink.subjects == [ERROR_SUBJECT] * 4
    body = smtp_sink.mails[0].body
    assert line_of(body, "Harvest Job Id:") == "Harvest Job Id: " + job_id
    assert line_of(body, "Job Errors:") == "Job Errors: 1"
    # sending mail does not change the job (it is still the caller's to finish)
    assert job_row(job_id).status == JobStatus.RUNNING.value


def test_prepare_error_mail_builds_subject_and_unescaped_body(audience):
    source = make_source(audience.org, config='{"custom": "a&b"}')
    make_running_job(source["id"], gather_errors=("Value <none> & more",))
    status = call_action("harvest_source_show_status", id=source["id"])

    prepared = mail.prepare_error_mail({"ignore_auth": True}, source["id"], status)

    assert prepared["subject"] == ERROR_SUBJECT
    lines = prepared["body"].splitlines()
    assert "    - Value <none> & more " in lines
    assert 'Harvest Configuration: {"custom": "a&b"}' in lines


def test_get_mail_extra_vars_carries_the_documented_variables(audience):
    source = make_source(audience.org, config="{}")
    job_id = make_running_job(
        source["id"], added=1, object_errors=(("Bad date",),),
        gather_errors=("Remote down",),
    )
    status = call_action("harvest_source_show_status", id=source["id"])

    extra = mail.get_mail_extra_vars({"ignore_auth": True}, source["id"], status)

    assert extra == {
        "organization": "forestry-office",
        "site_title": SITE_TITLE,
        "site_url": SITE_URL,
        "job_url": "{}/harvest/{}/job/{}".format(SITE_URL, source["id"], job_id),
        "harvest_source_title": "Forest Inventory",
        "harvest_configuration": "Not specified",
        "job_finished": status["last_job"]["finished"],
        "job_id": job_id,
        "job_created": status["last_job"]["created"],
        "records_in_error": "2",
        "records_added": "1",
        "records_deleted": "0",
        "records_updated": "0",
        "error_summary_title": "Error Summary",
        "obj_errors_title": "Document Error",
        "job_errors_title": "Job Errors",
        "job_errors": ["Remote down"],
        "obj_errors": ["Bad date"],
        "errors": ["Remote down", "Bad date"],
    }


# -- chaining the recipients action ------------------------------------------------


@toolkit.chained_action
def _recipients_with_watcher(up_func, context, data_dict):
    return up_func(context, data_dict) + [
        {"name": "watcher", "email": "watcher@example.org"}
    ]


class WatcherRecipientPlugin(p.SingletonPlugin):
    p.implements(p.IActions)

    def get_actions(self):
        return {"harvest_get_notifications_recipients": _recipients_with_watcher}


@pytest.mark.skipif(
    not toolkit.check_ckan_version(min_version="2.12"),
    reason="registering an ad-hoc plugin with the with_plugins mark needs CKAN 2.12",
)
@pytest.mark.with_plugins({"harvest_test_watcher": WatcherRecipientPlugin})
def test_a_chained_recipients_action_receives_the_mails(audience, smtp_sink, status_mail):
    status_mail(False, True)
    source = make_source(audience.org)
    make_running_job(source["id"], gather_errors=("Remote down",))

    run_jobs(source["id"])

    assert smtp_sink.recipients == sorted(
        audience.sysadmin_emails + audience.org_admin_emails + ["watcher@example.org"]
    )
    assert smtp_sink.subjects == [ERROR_SUBJECT] * 5
