"""The ``harvester`` blueprint: the harvest pages under ``/harvest`` (web.md).

Thin: each view parses the request and calls its implementation in
:mod:`ckanext.harvest.utils`. The views that change something (refresh,
clear, stop, delete) answer GET with a confirmation form and act on POST
only; the form and CKAN's ``confirm-action`` modal both send the CSRF token.
"""
from __future__ import annotations

from typing import Any

from ckan.plugins import toolkit
from flask import Blueprint, current_app
from flask.views import MethodView

from ckanext.harvest import utils
from ckanext.harvest.utils import DATASET_TYPE_NAME

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


def _clear_flag() -> bool:
    return toolkit.request.args.get("clear", "").lower() in ("true", "1")


class DeleteView(MethodView):
    """``/harvest/delete/<id>[?clear=True]``: deactivate (and clear) a source."""

    def get(self, id: str) -> Any:
        return utils.confirm_view("delete", id, clear=_clear_flag())

    def post(self, id: str) -> Any:
        return utils.delete_view(id, _clear_flag())


class RefreshView(MethodView):
    """``/harvest/refresh/<id>``: start a new job."""

    def get(self, id: str) -> Any:
        return utils.confirm_view("refresh", id)

    def post(self, id: str) -> Any:
        return utils.refresh_view(id)


class ClearView(MethodView):
    """``/harvest/clear/<id>``: delete the source's datasets and job history."""

    def get(self, id: str) -> Any:
        return utils.confirm_view("clear", id)

    def post(self, id: str) -> Any:
        return utils.clear_view(id)


class JobAbortView(MethodView):
    """``/harvest/<source>/job/<id>/abort``: stop a job."""

    def get(self, source: str, id: str) -> Any:
        return utils.confirm_view("job_abort", source, job_id=id)

    def post(self, source: str, id: str) -> Any:
        return utils.job_abort_view(source, id)


def admin(id: str) -> Any:
    return utils.admin_view(id)


def about(id: str) -> Any:
    return utils.about_view(id)


def job_list(source: str) -> Any:
    return utils.job_list_view(source)


def job_show_last(source: str) -> Any:
    return utils.job_show_last_view(source)


def job_show(source: str, id: str) -> Any:
    return utils.job_show_view(id)


def object_show(id: str, ref_type: str) -> Any:
    return utils.object_show_view(id, ref_type)


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
harvester.add_url_rule(
    "/harvest/object/<id>", view_func=object_show, defaults={"ref_type": "object"}
)
harvester.add_url_rule(
    "/dataset/harvest_object/<id>", view_func=object_show,
    defaults={"ref_type": "dataset"},
)


def get_blueprints() -> list[Blueprint]:
    """The blueprints of the plugin (``IBlueprint``)."""
    return [harvester]
