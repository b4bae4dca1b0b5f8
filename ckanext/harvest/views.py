"""The ``harvester`` blueprint: the harvest pages under ``/harvest`` (web.md).

The routes at the end parse the request and call the view implementations
(``*_view``, also importable from :mod:`ckanext.harvest.utils`, the original's
path). Each implementation builds its own action contexts for the current user,
maps ObjectNotFound to 404 and NotAuthorized to 403, and flashes the messages
of web.md. The views that change something (refresh, clear, stop, delete)
answer GET with a confirmation form (:func:`confirm_view`) and act on POST
only; the form and CKAN's ``confirm-action`` modal both send the CSRF token.
"""
from __future__ import annotations

import hmac
import logging
from typing import Any, Optional, Union

from ckan import model
from ckan.lib.pagination import Page
from ckan.plugins import toolkit
from ckan.types import Response
from flask import Blueprint, current_app, stream_with_context
from flask import Response as FlaskResponse
from flask.views import MethodView

from ckanext.harvest import options
from ckanext.harvest.constants import DATASET_TYPE_NAME
from ckanext.harvest.lib import error_report, health, metrics, stats

#: What a view returns: a rendered page, or a response (redirect, document).
ViewResult = Union[str, Response]

log = logging.getLogger(__name__)

harvester = Blueprint("harvester", __name__)


@harvester.before_request
def before_request() -> None:
    """Mark the pages as harvest pages and check the CSRF token of POSTs."""
    toolkit.g.dataset_type = DATASET_TYPE_NAME
    _protect_from_csrf()


def _protect_from_csrf() -> None:
    """Check the CSRF token even where CKAN exempts extension blueprints.

    CKAN 2.11 exempts plugin blueprints unless
    ``ckan.csrf_protection.ignore_extensions`` is false; the harvest views
    change state, so they check the token themselves when CKAN did not.
    """
    config = current_app.config
    if not config.get("WTF_CSRF_ENABLED", True):
        return
    if toolkit.request.method not in config.get("WTF_CSRF_METHODS", ("POST",)):
        return
    g = toolkit.g
    if g.get("csrf_valid") or g.get("login_via_auth_header"):
        return
    csrf = current_app.extensions.get("csrf")
    if csrf is not None:
        csrf.protect()


def _flag(name: str) -> bool:
    """A query argument of ``delete`` (``clear``, ``detach``): ``true`` or ``1``."""
    return toolkit.request.args.get(name, "").lower() in ("true", "1")


def _clear_flag() -> bool:
    """The ``clear`` query argument of ``delete``: ``true`` or ``1``."""
    return _flag("clear")


#: What a deletion does with the source's datasets (the ``datasets`` form field),
#: and the auth function each choice needs besides ``harvest_source_delete``.
DELETE_CHOICES = {
    "keep": "harvest_source_delete",
    "detach": "harvest_source_detach",
    "clear": "harvest_source_clear",
}


def _delete_choice() -> str:
    """The ``datasets`` field of the delete form, else the query's flags
    (``?clear=True``, ``?detach=True``: the links of the edit form); 400 for
    an unknown value."""
    value = toolkit.request.form.get("datasets")
    if value is None:
        return "clear" if _flag("clear") else "detach" if _flag("detach") else "keep"
    if value not in DELETE_CHOICES:
        toolkit.abort(400, toolkit._("Unknown choice for the datasets: {}").format(value))
    return value


# -- view implementations -------------------------------------------------------------

#: What the confirmation page of each state-changing view checks first.
_CONFIRM_AUTH = {
    "refresh": ("harvest_job_create", "source_id"),
    "clear": ("harvest_source_clear", "id"),
    "delete": ("harvest_source_delete", "id"),
}
_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


def _not_auth_message() -> str:
    """The message of the 403 pages of the harvest views."""
    return toolkit._("Not authorized to see this page")


def _view_context(**extra: Any) -> Any:
    """A fresh action context for the current user (plus ``extra`` keys)."""
    context: dict[str, Any] = {"model": model, "user": toolkit.current_user.name}
    context.update(extra)
    return context


def _view_action(name: str, data_dict: dict[str, Any], **context: Any) -> Any:
    return toolkit.get_action(name)(_view_context(**context), data_dict)


class _Aborting:
    """Context manager: ObjectNotFound → 404 (``not_found``), NotAuthorized → 403."""

    def __init__(self, not_found: str, own_message: bool = False) -> None:
        self.not_found = not_found
        self.own_message = own_message

    def __enter__(self) -> _Aborting:
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        if exc_type is None:
            return
        if issubclass(exc_type, toolkit.ObjectNotFound):
            message = str(exc or "") if self.own_message else ""
            toolkit.abort(404, message or self.not_found)
        if issubclass(exc_type, toolkit.NotAuthorized):
            toolkit.abort(403, _not_auth_message())


def _source_not_found() -> _Aborting:
    return _Aborting(toolkit._("Harvest source not found"))


def _job_not_found() -> _Aborting:
    return _Aborting(toolkit._("Harvest job not found"))


def _render(template: str, **extra_vars: Any) -> str:
    extra_vars.setdefault("dataset_type", DATASET_TYPE_NAME)
    return toolkit.render(template, extra_vars)


def _show_source(reference: str, **context: Any) -> dict[str, Any]:
    """The source dataset (id or name) as the current user may see it; 404/403.

    No page shows the error summaries of the last job of its status.
    """
    context.setdefault("return_error_summary", False)
    with _source_not_found():
        return _view_action("harvest_source_show", {"id": reference}, **context)


def _get_source_for_job(source_id: str) -> dict[str, Any]:
    """The source of the job pages; 404 ``Harvest source not found``, 403.

    These pages use only the id and status of the last job of its status:
    its statistics are not counted (a job of many objects is read once).
    """
    return _show_source(source_id, return_stats=False)


def admin_view(id: str) -> str:
    """``harvester.admin``: the dashboard of a source (update permission)."""
    with _source_not_found():
        toolkit.check_access("harvest_source_update", _view_context(), {"id": id})
    return _render("source/admin.html", harvest_source=_show_source(id))


def about_view(id: str) -> str:
    """``harvester.about``: the description and details of a source."""
    return _render("source/about.html", harvest_source=_show_source(id))


def _page_number() -> int:
    """The ``page`` query argument (default 1; not a positive integer: 400,
    as CKAN's own lists)."""
    return toolkit.h.get_page_number(toolkit.request.args)


def _per_page(option: str, action_bound: str) -> int:
    """Rows a page: ``option``, within what the action returns (``action_bound``)."""
    per_page = max(1, int(options.value(toolkit.config, option) or 1))
    bound = int(options.value(toolkit.config, action_bound) or 0)
    return min(per_page, bound) if bound else per_page


def _pager(items: list[Any], page: int, per_page: int, total: int,
           endpoint: str, **url_args: Any) -> Page:
    """A CKAN pager over one page of ``total`` items (links to ``endpoint``)."""
    def url(q: Any = None, page: Optional[int] = None) -> str:
        return toolkit.url_for(endpoint, page=page, **url_args)

    return Page(collection=items, page=page, url=url, item_count=total,
                items_per_page=per_page, presliced_list=True)


def job_list_view(source: str) -> str:
    """``harvester.job_list``: the jobs of a source, newest first, a page at a time."""
    source_dict = _get_source_for_job(source)
    page = _page_number()
    per_page = _per_page(options.JOBS_PER_PAGE, options.JOB_LIST_LIMIT)
    with _source_not_found():
        jobs = _view_action("harvest_job_list", {
            "source_id": source_dict["id"], "limit": per_page,
            "offset": (page - 1) * per_page,
        })
    total = (source_dict.get("status") or {}).get("job_count") or len(jobs)
    pager = _pager(jobs, page, per_page, total, "harvester.job_list",
                   source=source_dict["name"])
    return _render("source/job/list.html", harvest_source=source_dict, jobs=jobs,
                   page=pager)


def job_show_view(
    id: str, source_dict: Optional[dict[str, Any]] = None, is_last: bool = False
) -> str:
    """``harvester.job_show``: the report of a job, its errors a page at a time."""
    page = _page_number()
    per_page = _per_page(options.REPORT_ERRORS_PER_PAGE, options.JOB_REPORT_LIMIT)
    with _job_not_found():
        job = _view_action("harvest_job_show", {"id": id})
        report = _view_action("harvest_job_report", {
            "id": id, "limit": per_page, "offset": (page - 1) * per_page,
        })
    if not source_dict:
        source_dict = _get_source_for_job(job["source_id"])
    counts = stats.report_counts(job["id"])
    endpoint, url_args = (
        ("harvester.job_show_last", {"source": source_dict["name"]}) if is_last
        else ("harvester.job_show", {"source": source_dict["name"], "id": job["id"]}))
    pager = _pager(list(report["object_errors"]), page, per_page, max(counts.values()),
                   endpoint, **url_args)
    return _render(
        "source/job/read.html", harvest_source=source_dict, job=job,
        job_report=report, is_last_job=is_last, page=pager,
        documents_with_errors=counts["objects"], held_removals=_held_removals(id),
        **_error_groups(job["id"], per_page, endpoint, url_args),
    )


def _held_removals(job_id: str) -> int:
    """Withdrawals the job's circuit breaker holds (0 for those who may not see)."""
    try:
        return _view_action("harvest_job_removals_show", {"id": job_id})["held"]
    except (toolkit.NotAuthorized, toolkit.ObjectNotFound):
        return 0


def _error_groups(job_id: str, per_page: int, endpoint: str,
                  url_args: dict[str, Any]) -> dict[str, Any]:
    """The job page's complete report: a page of its message groups (``gpage``),
    and, when one is chosen (``group``), a page of that group's errors."""
    group = toolkit.request.args.get("group") or None
    number = _page_argument("gpage")
    try:
        report = _view_action("harvest_job_error_report", {
            "id": job_id, "group": group, "limit": per_page,
            "offset": (number - 1) * per_page if group else 0,
        } if group else {"id": job_id, "limit": 1})
    except toolkit.ValidationError:
        return toolkit.abort(400, toolkit._("Unknown group of errors"))
    groups = report["groups"]
    chosen = next((g for g in groups if g["group"] == group), None)
    if group and chosen is None:
        return toolkit.abort(404, toolkit._("No such group of errors in this job"))
    shown = groups if group else groups[(number - 1) * per_page:number * per_page]

    def url(q: Any = None, page: Optional[int] = None) -> str:
        return toolkit.url_for(endpoint, gpage=page, group=group, **url_args)

    items = report["errors"] if group else shown
    total = report["total"] if group else len(groups)
    return {
        "error_groups": groups, "error_group": chosen,
        "error_group_errors": report["errors"] if group else [],
        "error_groups_shown": shown,
        "error_total": sum(g["count"] for g in groups),
        "error_pager": Page(collection=items, page=number, url=url, item_count=total,
                            items_per_page=per_page, presliced_list=True),
    }


def _page_argument(name: str) -> int:
    """A positive page number from the query argument ``name`` (default 1)."""
    value = toolkit.request.args.get(name, "1")
    if not value.isdigit() or int(value) < 1:
        return toolkit.abort(400, toolkit._("Invalid page number"))
    return int(value)


def job_errors_view(id: str, fmt: str) -> ViewResult:
    """``harvester.job_errors``: every error of a job as one file, streamed
    (``csv`` or ``json``; the columns of :mod:`ckanext.harvest.lib.error_report`)."""
    if fmt not in error_report.FORMATS:
        return toolkit.abort(404, toolkit._("Unknown format"))
    with _job_not_found():
        # Who may read the job may download its errors (harvest_job_error_report).
        report = _view_action("harvest_job_error_report", {"id": id, "limit": 1})
    media_type, chunks = error_report.FORMATS[fmt]
    rows = error_report.iter_rows(report["job_id"])
    response = current_app.response_class(stream_with_context(chunks(rows)),
                                          mimetype=media_type)
    response.headers["Content-Disposition"] = (
        'attachment; filename="harvest-job-%s-errors.%s"' % (report["job_id"], fmt))
    return response


def job_show_last_view(source: str) -> str:
    """``harvester.job_show_last``: the report of the latest job of a source."""
    source_dict = _get_source_for_job(source)
    last_job = (source_dict.get("status") or {}).get("last_job")
    if not last_job:
        return toolkit.abort(404, toolkit._("No jobs yet for this source"))
    return job_show_view(last_job["id"], source_dict=source_dict, is_last=True)


def _error_text(error: Exception) -> str:
    if isinstance(error, toolkit.ValidationError):
        summary = error.error_summary or {}
        return "; ".join("{}: {}".format(k, v) for k, v in summary.items()) or str(error)
    return str(error)


def _flash_unexpected(error: Exception) -> None:
    """An error the user cannot fix (broker down...): logged, and flashed."""
    log.exception("Harvest view failed")
    model.Session.rollback()
    toolkit.h.flash_error(
        toolkit._("An error occurred: [{}]").format(_error_text(error))
    )


def _abort_for(error: Exception, not_found: str) -> None:
    """404 for ObjectNotFound, 403 for NotAuthorized; nothing for other errors."""
    with _Aborting(not_found):
        raise error


def refresh_view(id: str) -> ViewResult:
    """``harvester.refresh`` (POST): create and start a job for the source."""
    from ckanext.harvest.logic import HarvestJobExists, HarvestSourceInactiveError

    source_id = _show_source(id)["id"]
    try:
        _view_action("harvest_job_create", {"source_id": source_id, "run": True},
                     session=model.Session)
    except HarvestSourceInactiveError:
        toolkit.h.flash_error(toolkit._(
            "Cannot create new harvest jobs on inactive sources. First, please "
            'change the source status to "active".'
        ))
    except HarvestJobExists:
        toolkit.h.flash_notice(
            toolkit._("A harvest job has already been scheduled for this source")
        )
    except (toolkit.ObjectNotFound, toolkit.NotAuthorized) as error:
        _abort_for(error, toolkit._("Harvest source not found"))
    except Exception as error:  # broker down...: a message, not a 500
        _flash_unexpected(error)
    else:
        toolkit.h.flash_success(
            toolkit._("Harvest will start shortly. Refresh this page for updates.")
        )
    return toolkit.redirect_to("harvester.admin", id=id)


def clear_view(id: str) -> ViewResult:
    """``harvester.clear`` (POST): delete the source's datasets, jobs and objects."""
    source_id = _show_source(id)["id"]
    try:
        _view_action("harvest_source_clear", {"id": source_id}, session=model.Session)
    except (toolkit.ObjectNotFound, toolkit.NotAuthorized) as error:
        _abort_for(error, toolkit._("Harvest source not found"))
    except Exception as error:  # search index down...: a message, not a 500
        _flash_unexpected(error)
    else:
        toolkit.h.flash_success(toolkit._("Harvest source cleared"))
    return toolkit.redirect_to("harvester.admin", id=id)


def _detach_and_delete(id: str) -> ViewResult:
    """Detach the source's datasets, then deactivate the source; a refused
    detach (a running job) is a message and nothing changes."""
    source_id = _show_source(id)["id"]
    with _source_not_found():
        toolkit.check_access("harvest_source_delete", _view_context(), {"id": source_id})
    try:
        with _source_not_found():
            result = _view_action("harvest_source_detach", {"id": source_id})
    except toolkit.ValidationError as error:
        toolkit.h.flash_error(_error_text(error))
        return toolkit.redirect_to("harvester.admin", id=id)
    with _source_not_found():
        _view_action("harvest_source_delete", {"id": id})
    toolkit.h.flash_success(toolkit.ungettext(
        "{n} dataset detached: it is now an ordinary dataset of this site. "
        "Harvesting source successfully inactivated",
        "{n} datasets detached: they are now ordinary datasets of this site. "
        "Harvesting source successfully inactivated",
        result["detached"]).format(n=result["detached"]))
    return toolkit.redirect_to("harvester.admin", id=id)


def delete_view(id: str, clear_source: Optional[bool] = None,
                detach: bool = False) -> ViewResult:
    """``harvester.delete`` (POST): deactivate the source (and clear it, or
    detach its datasets first).

    :param clear_source: also clear it; None: the ``clear`` query argument
        (``true`` or ``1``)
    :param detach: detach its datasets first (``harvest_source_detach``)
    """
    if clear_source is None:
        clear_source = _clear_flag()
    if detach and not clear_source:
        return _detach_and_delete(id)
    with _source_not_found():
        _view_action("harvest_source_delete", {"id": id}, clear_source=clear_source)
    if clear_source:
        toolkit.h.flash_success(toolkit._("Harvesting source successfully cleared"))
    else:
        toolkit.h.flash_success(toolkit._("Harvesting source successfully inactivated"))
    return toolkit.redirect_to("harvester.admin", id=id)


def job_abort_view(source: str, id: str) -> ViewResult:
    """``harvester.job_abort`` (POST): stop a job."""
    with _job_not_found():
        _view_action("harvest_job_abort", {"id": id})
    toolkit.h.flash_success(toolkit._("Harvest job stopped"))
    return toolkit.redirect_to("harvester.admin", id=source)


def job_approve_removals_view(source: str, id: str) -> ViewResult:
    """``harvester.job_approve_removals`` (POST): withdraw the datasets whose
    removal the job's circuit breaker held back."""
    with _job_not_found():
        result = _view_action("harvest_job_approve_removals", {"id": id})
    if result["approved"]:
        toolkit.h.flash_success(toolkit._(
            "{0} removal(s) approved: they are being performed").format(result["approved"]))
    else:
        toolkit.h.flash_notice(toolkit._("No held removal to approve"))
    return toolkit.redirect_to("harvester.job_show", source=source, id=id)


def _confirm_job(job_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The source and the job of a job_abort confirmation; 404/403."""
    with _job_not_found():
        job = _view_action("harvest_job_show", {"id": job_id}, return_error_summary=False)
        toolkit.check_access("harvest_job_abort", _view_context(), {"id": job_id})
    return _get_source_for_job(job["source_id"]), job


def _allowed_delete_choices(source_id: str) -> list[str]:
    """The choices of the delete form the current user may take."""
    allowed = []
    for choice, auth in DELETE_CHOICES.items():
        try:
            toolkit.check_access(auth, _view_context(), {"id": source_id})
        except (toolkit.NotAuthorized, toolkit.ObjectNotFound):
            continue
        allowed.append(choice)
    return allowed


def confirm_view(action: str, id: str, job_id: Optional[str] = None,
                 clear: bool = False, detach: bool = False) -> str:
    """The GET side of the state-changing views: a confirmation form.

    Nothing changes; the form posts back to the same URL with the CSRF token.
    The form of ``delete`` offers the choices for the datasets the user may
    take (keep, detach, clear), the one of the query arguments selected.

    :param action: ``refresh``, ``clear``, ``delete`` or ``job_abort``
    :param id: the source (id or name) of the URL
    :param job_id: the job, for ``job_abort``
    :param clear: for ``delete``: the ``clear`` query argument was set
    :param detach: for ``delete``: the ``detach`` query argument was set
    """
    job = None
    choices: list[str] = []
    if action == "job_abort":
        source_dict, job = _confirm_job(job_id or "")
        form_action = toolkit.url_for("harvester.job_abort", source=id, id=job_id)
    else:
        source_dict = _show_source(id)
        auth, key = _CONFIRM_AUTH[action]
        with _source_not_found():
            toolkit.check_access(auth, _view_context(), {key: source_dict["id"]})
        url_args = {}
        if action == "delete" and (clear or detach):
            url_args = {"clear": "True"} if clear else {"detach": "True"}
        form_action = toolkit.url_for("harvester." + action, id=id, **url_args)
        if action == "delete":
            choices = _allowed_delete_choices(source_dict["id"])
    selected = "clear" if clear else "detach" if detach else "keep"
    return _render(
        "source/confirm.html", harvest_source=source_dict, action=action, job=job,
        clear=clear, detach=detach and not clear, form_action=form_action,
        choices=choices, selected=selected if selected in choices else "keep",
    )


#: Fields of the source form passed on to a preview of a source not saved yet.
_PREVIEW_FORM_FIELDS = ("url", "title", "name", "notes", "source_type", "frequency",
                        "config", "owner_org")


def preview_view(id: Optional[str] = None) -> str:
    """``harvester.preview`` (a saved source, GET) and ``harvester.preview_new``
    (the new-source form, POST): what a job would do, nothing written."""
    limit = toolkit.request.args.get("limit") or toolkit.request.form.get("limit")
    source_dict = _show_source(id) if id else None
    if source_dict is not None:
        data: dict[str, Any] = {"id": source_dict["id"]}
    else:
        form = toolkit.request.form
        data = {key: form[key] for key in _PREVIEW_FORM_FIELDS if form.get(key)}
    if limit:
        data["limit"] = limit
    result, errors = None, None
    with _source_not_found():
        try:
            result = _view_action("harvest_source_preview", data)
        except toolkit.ValidationError as error:
            errors = error.error_summary
    return _render("source/preview.html", harvest_source=source_dict, result=result,
                   errors=errors, source_fields=data)


def _is_xml(text: str) -> bool:
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        etree.fromstring(text.encode("utf-8"), parser=parser)
    except (etree.XMLSyntaxError, ValueError):
        return False
    return True


def _is_json(text: str) -> bool:
    import json

    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _without_xml_declaration(text: str) -> str:
    start = text.find("<?xml")
    end = text.find("?>", start)
    if start == -1 or end == -1:
        return text
    return text[:start] + text[end + 2:]


def _document(content: str) -> tuple[str, str]:
    """The body and content type of a raw harvested document."""
    if _is_xml(_without_xml_declaration(content)):
        if "<?xml" not in content.split("\n", 1)[0]:
            content = _XML_DECLARATION + content
        return content, "application/xml; charset=utf-8"
    if _is_json(content):
        return content, "application/json; charset=utf-8"
    # Never text/html: the document comes from a remote site (stored XSS).
    return content, "text/plain; charset=utf-8"


def object_show_view(id: str, ref_type: str = "object", response: Any = None) -> ViewResult:
    """``harvester.object_show``: the raw document of a harvest object.

    :param id: the object id (``ref_type='object'``) or a dataset id or name
        (``ref_type='dataset'``: its current object)
    :param response: a Flask response to fill (default: a new one)
    """
    from flask import make_response

    data_dict = {"id": id} if ref_type == "object" else {"dataset_id": id}
    with _Aborting(toolkit._("Harvest object not found"), own_message=True):
        obj = _view_action("harvest_object_show", data_dict)
    content = obj.get("content") or (obj.get("extras") or {}).get("original_document")
    if not content:
        return toolkit.abort(404, toolkit._("No content found"))
    body, content_type = _document(content)
    response = response if response is not None else make_response()
    response.set_data(body)
    response.headers["Content-Type"] = content_type
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


# -- routes --------------------------------------------------------------------------


class DeleteView(MethodView):
    """``/harvest/delete/<id>[?clear=True|?detach=True]``: deactivate a source,
    keeping, detaching or clearing its datasets."""

    def get(self, id: str) -> ViewResult:
        return confirm_view("delete", id, clear=_clear_flag(), detach=_flag("detach"))

    def post(self, id: str) -> ViewResult:
        choice = _delete_choice()
        return delete_view(id, choice == "clear", detach=choice == "detach")


class RefreshView(MethodView):
    """``/harvest/refresh/<id>``: start a new job."""

    def get(self, id: str) -> ViewResult:
        return confirm_view("refresh", id)

    def post(self, id: str) -> ViewResult:
        return refresh_view(id)


class ClearView(MethodView):
    """``/harvest/clear/<id>``: delete the source's datasets and job history."""

    def get(self, id: str) -> ViewResult:
        return confirm_view("clear", id)

    def post(self, id: str) -> ViewResult:
        return clear_view(id)


class JobAbortView(MethodView):
    """``/harvest/<source>/job/<id>/abort``: stop a job."""

    def get(self, source: str, id: str) -> ViewResult:
        return confirm_view("job_abort", source, job_id=id)

    def post(self, source: str, id: str) -> ViewResult:
        return job_abort_view(source, id)


class JobApproveRemovalsView(MethodView):
    """``/harvest/<source>/job/<id>/approve-removals`` (POST only)."""

    def post(self, source: str, id: str) -> ViewResult:
        return job_approve_removals_view(source, id)


def admin(id: str) -> ViewResult:
    return admin_view(id)


def about(id: str) -> ViewResult:
    return about_view(id)


def job_list(source: str) -> ViewResult:
    return job_list_view(source)


def job_show_last(source: str) -> ViewResult:
    return job_show_last_view(source)


def job_show(source: str, id: str) -> ViewResult:
    return job_show_view(id)


def object_show(id: str, ref_type: str) -> ViewResult:
    return object_show_view(id, ref_type)


def job_errors(source: str, id: str, fmt: str) -> ViewResult:
    return job_errors_view(id, fmt)


def preview(id: str) -> ViewResult:
    return preview_view(id)


def preview_new() -> ViewResult:
    return preview_view(None)


harvester.add_url_rule("/harvest/delete/<id>", view_func=DeleteView.as_view("delete"))
harvester.add_url_rule("/harvest/refresh/<id>", view_func=RefreshView.as_view("refresh"))
harvester.add_url_rule("/harvest/admin/<id>", view_func=admin)
harvester.add_url_rule("/harvest/about/<id>", view_func=about)
harvester.add_url_rule("/harvest/clear/<id>", view_func=ClearView.as_view("clear"))
harvester.add_url_rule("/harvest/<source>/job", view_func=job_list)
harvester.add_url_rule("/harvest/<source>/job/last", view_func=job_show_last)
harvester.add_url_rule("/harvest/<source>/job/<id>", view_func=job_show)
harvester.add_url_rule(
    "/harvest/<source>/job/<id>/abort", view_func=JobAbortView.as_view("job_abort")
)
harvester.add_url_rule("/harvest/<source>/job/<id>/errors.<fmt>", view_func=job_errors)
harvester.add_url_rule("/harvest/preview/<id>", view_func=preview)
harvester.add_url_rule("/harvest/preview/new", view_func=preview_new, methods=["POST"])
harvester.add_url_rule(
    "/harvest/<source>/job/<id>/approve-removals",
    view_func=JobApproveRemovalsView.as_view("job_approve_removals"),
)
harvester.add_url_rule(
    "/harvest/object/<id>", view_func=object_show, defaults={"ref_type": "object"}
)
harvester.add_url_rule(
    "/dataset/harvest_object/<id>", view_func=object_show,
    defaults={"ref_type": "dataset"},
)


# -- the health page and the metrics (issue 17) ----------------------------------------


def health_view() -> ViewResult:
    """``harvester.health``: every source's health, queues, jobs (sysadmins).

    Query: ``q`` (name or title contains), ``state``, ``sort`` (a column of
    :data:`~ckanext.harvest.lib.health.SORT_KEYS`), ``dir`` (``asc``/``desc``);
    a bad value is a 400 naming it.
    """
    with _Aborting(toolkit._("Not found")):
        data = _view_action("harvest_health_show", {})
    args = toolkit.request.args
    query = {"q": args.get("q", ""), "state": args.get("state", ""),
             "sort": args.get("sort", "state"), "dir": args.get("dir", "asc")}
    try:
        rows = health.filter_and_sort(data["sources"], query["q"], query["state"],
                                      query["sort"], query["dir"])
    except health.BadHealthQuery as error:
        return toolkit.abort(400, str(error))
    return _render("health/read.html", health=data, rows=rows, query=query,
                   states=health.SOURCE_STATES, lanes=health.timeline_lanes(data["timeline"]))


def _plain(status: int, message: str) -> Response:
    return FlaskResponse(message + "\n", status=status, mimetype="text/plain")


def _metrics_refusal() -> Optional[Response]:
    """Why the current request may not read the metrics (None: it may)."""
    token = toolkit.config.get(options.METRICS_TOKEN) or ""
    if not token and not toolkit.asbool(toolkit.config.get(options.METRICS_ENABLED)):
        return _plain(404, toolkit._("Not found"))
    header = toolkit.request.headers.get("Authorization", "").strip()
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer":
        if not token:
            return _plain(403, toolkit._("Metrics tokens are not accepted on this site "
                                         "(ckan.harvest.metrics.token is not set)."))
        if not given.strip():
            return _plain(403, toolkit._("Empty metrics token."))
        if not hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8")):
            return _plain(403, toolkit._("Invalid metrics token."))
        return None
    user = toolkit.current_user
    if getattr(user, "sysadmin", False):
        return None
    if header and not getattr(user, "name", None):
        return _plain(403, toolkit._("Invalid Authorization header: send "
                                     "'Bearer <metrics token>' or a sysadmin's API token."))
    return _plain(403, toolkit._("Only sysadmins or holders of the metrics token may "
                                 "read the metrics."))


def metrics_view() -> ViewResult:
    """``harvester.metrics``: Prometheus text (sysadmin session or token).

    404 unless ``ckan.harvest.metrics.enabled`` or ``ckan.harvest.metrics.token``
    is set; a refused request gets a 403 and one line saying why.
    """
    refusal = _metrics_refusal()
    if refusal is not None:
        return refusal
    response = FlaskResponse(metrics.render(toolkit.config), status=200)
    response.headers["Content-Type"] = metrics.CONTENT_TYPE
    response.headers["Cache-Control"] = "no-store"
    return response


harvester.add_url_rule("/harvest/health", view_func=health_view, endpoint="health")
harvester.add_url_rule("/harvest/metrics", view_func=metrics_view, endpoint="metrics")


def get_blueprints() -> list[Blueprint]:
    """The blueprints of the plugin (``IBlueprint``)."""
    return [harvester]
