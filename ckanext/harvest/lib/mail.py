"""Job status e-mails sent when ``harvest_jobs_run`` finishes a job."""
from __future__ import annotations

import html
import logging
from typing import Any, Mapping, Optional
from urllib.parse import urljoin

from ckan.lib import mailer
from ckan.plugins import toolkit
from ckan.types import Context
from werkzeug.routing import BuildError

from ckanext.harvest import options
from ckanext.harvest.lib import secret_config

log = logging.getLogger(__name__)

ERROR_LIMIT = 20
_NOT_SPECIFIED = "Not specified"

#: The configuration to read (CKAN's when None): ``harvest_jobs_run`` passes the
#: ``config`` of ``logic.action.update``, which downstream tests patch.
Settings = Optional[Mapping[str, Any]]


def _settings(config: Settings) -> Mapping[str, Any]:
    return toolkit.config if config is None else config


def _own_context(context: Context) -> Context:
    return Context(context, ignore_auth=True)


def _report_errors(report: dict[str, Any]) -> tuple[list[str], list[str]]:
    job_errors = [error["message"] for error in report["gather_errors"][:ERROR_LIMIT]]
    obj_errors = [
        error["message"]
        for entry in list(report["object_errors"].values())[:ERROR_LIMIT]
        for error in entry["errors"]
    ]
    return job_errors, obj_errors


def _job_path(source_id: str, job_id: str) -> str:
    """Path of the job page (built by hand when the web UI is not registered)."""
    try:
        return toolkit.url_for("harvester.job_show", source=source_id, id=job_id)
    except BuildError:
        return "/harvest/{}/job/{}".format(source_id, job_id)


def job_url(config: Settings, source_id: str, job_id: str) -> str:
    """The absolute URL of a job's page (``ckan.site_url`` + its path)."""
    site_url = _settings(config).get(options.SITE_URL) or ""
    return urljoin(site_url, _job_path(source_id, job_id))


def get_mail_extra_vars(
    context: Context, source_id: str, status: dict[str, Any], config: Settings = None
) -> dict[str, Any]:
    """The variables of the status e-mail templates.

    :param source_id: the source id
    :param status: ``harvest_source_show_status`` of the source
    :param config: the configuration to read (CKAN's by default)
    """
    settings = _settings(config)
    last_job = status["last_job"]
    source = toolkit.get_action("harvest_source_show")(
        _own_context(context), {"id": source_id}
    )
    report = toolkit.get_action("harvest_job_report")(
        _own_context(context), {"id": last_job["id"]}
    )
    job_errors, obj_errors = _report_errors(report)
    site_url = settings.get(options.SITE_URL) or ""
    job_url = urljoin(site_url, _job_path(source["id"], last_job["id"]))
    # Nobody reads secrets in e-mails, whoever receives them.
    source_config = secret_config.redact_config(
        source.get("config"), secret_config.secret_keys(source.get("source_type"))
    )
    stats = last_job.get("stats", {})
    return {
        "organization": (source.get("organization") or {}).get("name") or _NOT_SPECIFIED,
        "site_title": settings.get(options.SITE_TITLE),
        "site_url": site_url,
        "job_url": job_url,
        "harvest_source_title": source["title"],
        "harvest_configuration": (_NOT_SPECIFIED if source_config in (None, "", "{}")
                                  else source_config),
        "job_finished": last_job["finished"],
        "job_id": last_job["id"],
        "job_created": last_job["created"],
        "records_in_error": str(stats.get("errored", 0)),
        "records_added": str(stats.get("added", 0)),
        "records_deleted": str(stats.get("deleted", 0)),
        "records_updated": str(stats.get("updated", 0)),
        "error_summary_title": toolkit._("Error Summary"),
        "obj_errors_title": toolkit._("Document Error"),
        "job_errors_title": toolkit._("Job Errors"),
        "obj_errors": obj_errors,
        "job_errors": job_errors,
        "errors": job_errors + obj_errors,
    }


_SUMMARY = ("{} - Harvesting Job Successful - Summary Notification",
            "emails/summary_email.txt")
_ERROR = ("{} - Harvesting Job - Error Notification", "emails/error_email.txt")


def _prepare(kind: tuple[str, str], extra_vars: dict[str, Any]) -> dict[str, str]:
    subject, template = kind
    return {"subject": subject.format(extra_vars["site_title"]),
            "body": toolkit.render(template, extra_vars)}


def prepare_summary_mail(
    context: Context, source_id: str, status: dict[str, Any], config: Settings = None
) -> dict[str, str]:
    """Subject and body of the summary e-mail."""
    return _prepare(_SUMMARY, get_mail_extra_vars(context, source_id, status, config))


def prepare_error_mail(
    context: Context, source_id: str, status: dict[str, Any], config: Settings = None
) -> dict[str, str]:
    """Subject and body of the error e-mail (HTML entities of the template undone)."""
    mail = _prepare(_ERROR, get_mail_extra_vars(context, source_id, status, config))
    mail["body"] = html.unescape(mail["body"])
    return mail


def send_summary_email(context: Context, source_id: str, status: dict[str, Any],
                       config: Settings = None) -> None:
    """Send the summary e-mail of a source's last job."""
    send_mail(context, source_id, prepare_summary_mail(context, source_id, status, config))


def send_error_email(context: Context, source_id: str, status: dict[str, Any],
                     config: Settings = None) -> None:
    """Send the error e-mail of a source's last job."""
    send_mail(context, source_id, prepare_error_mail(context, source_id, status, config))


def send_mail(context: Context, source_id: str, mail: dict[str, str]) -> None:
    """Send a mail to every notification recipient of the source.

    A recipient the mailer cannot reach is logged and skipped.
    """
    recipients = toolkit.get_action("harvest_get_notifications_recipients")(
        _own_context(context), {"source_id": source_id}
    )
    for recipient in recipients:
        try:
            mailer.mail_recipient(
                recipient_name=recipient["name"],
                recipient_email=recipient["email"],
                subject=mail["subject"],
                body=mail["body"],
            )
        except mailer.MailerException:
            log.error(
                "Sending Harvest-Notification-Mail failed. Message: %s", mail["body"]
            )
        except Exception:
            log.exception("Sending Harvest-Notification-Mail to %s failed", recipient["name"])
            raise


def send_status_mail(context: Context, source_id: str, status: dict[str, Any],
                     config: Settings = None) -> None:
    """Send the e-mail the configuration asks for after a job finished.

    :param config: the configuration to read (CKAN's by default)
    """
    settings = _settings(config)
    last_job = status.get("last_job") or {}
    errors = last_job.get("stats", {}).get("errored", 0)
    send_all = toolkit.asbool(options.value(settings, options.STATUS_MAIL_ALL))
    send_errored = toolkit.asbool(options.value(settings, options.STATUS_MAIL_ERRORED))
    if errors and (send_all or send_errored):
        send_error_email(context, source_id, status, config)
    elif send_all:
        send_summary_email(context, source_id, status, config)
