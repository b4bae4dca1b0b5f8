"""Auth functions of the read actions."""
from __future__ import annotations

from ckan import authz
from ckan.plugins import toolkit
from ckan.types import AuthResult, Context, DataDict

from ckanext.harvest.logic.auth import (
    allowed_if,
    get_job_object,
    get_source_package,
    sysadmins_only,
)

__all__ = [
    "harvest_source_show",
    "harvest_source_show_status",
    "harvest_source_list",
    "harvest_job_show",
    "harvest_job_error_report",
    "harvest_source_preview",
    "harvest_job_list",
    "harvest_object_show",
    "harvest_object_list",
    "harvesters_info_show",
    "harvest_get_notifications_recipients",
    "harvest_log_list",
    "harvest_job_removals_show",
    "harvest_job_progress",
    "harvest_health_show",
    "harvest_schedule_preview",
]


@toolkit.auth_allow_anonymous_access
def harvest_source_show(context: Context, data_dict: DataDict) -> AuthResult:
    """Whoever may read the source dataset may read the source."""
    package = get_source_package(data_dict)
    context["package"] = package
    return allowed_if(
        "package_show", context, {"id": package.id},
        toolkit._("User {0} not authorized to read harvest source {1}").format(
            context.get("user"), package.id
        ),
    )


@toolkit.auth_allow_anonymous_access
def harvest_source_show_status(context: Context, data_dict: DataDict) -> AuthResult:
    """As ``harvest_source_show``."""
    return harvest_source_show(context, data_dict)


@toolkit.auth_allow_anonymous_access
def harvest_source_list(context: Context, data_dict: DataDict) -> AuthResult:
    """Anyone may list sources (the list holds only what they may read)."""
    return {"success": True}


def harvest_job_show(context: Context, data_dict: DataDict) -> AuthResult:
    """Jobs are visible to those who may update their source."""
    job = get_job_object(context, data_dict)
    return allowed_if(
        "harvest_source_update", context, {"id": job.source_id},
        toolkit._("User {0} not authorized to see jobs from source {1}").format(
            context.get("user"), job.source_id
        ),
    )


def harvest_job_error_report(context: Context, data_dict: DataDict) -> AuthResult:
    """The whole error report of a job: as the job itself."""
    return harvest_job_show(context, data_dict)


def harvest_source_preview(context: Context, data_dict: DataDict) -> AuthResult:
    """A saved source (``id``): who may start its jobs; a new one: who may
    create it."""
    if (data_dict or {}).get("id"):
        package = get_source_package(data_dict)
        return allowed_if(
            "package_update", context, {"id": package.id},
            toolkit._("User {0} not authorized to preview harvest source {1}").format(
                context.get("user"), package.id))
    return allowed_if(
        "package_create", context, data_dict or {},
        toolkit._("User {0} not authorized to create harvest sources").format(
            context.get("user")))


def harvest_job_list(context: Context, data_dict: DataDict) -> AuthResult:
    """Listing jobs needs a ``source_id`` the user may update (sysadmins: any)."""
    source_id = (data_dict or {}).get("source_id")
    message = toolkit._("User {0} not authorized to list jobs for source {1}").format(
        context.get("user"), source_id
    )
    if not source_id:
        return {"success": False, "msg": message}
    return allowed_if("harvest_source_update", context, {"id": source_id}, message)


@toolkit.auth_allow_anonymous_access
def harvest_object_show(context: Context, data_dict: DataDict) -> AuthResult:
    """Anyone may see a harvest object."""
    return {"success": True}


def harvest_object_list(context: Context, data_dict: DataDict) -> AuthResult:
    """Any logged-in user may list object ids."""
    if authz.auth_is_anon_user(context):
        return {"success": False, "msg": toolkit._("Only logged-in users can list harvest objects")}
    return {"success": True}


@toolkit.auth_allow_anonymous_access
def harvesters_info_show(context: Context, data_dict: DataDict) -> AuthResult:
    """Anyone may see which harvesters are available."""
    return {"success": True}


def harvest_get_notifications_recipients(
    context: Context, data_dict: DataDict
) -> AuthResult:
    """Sysadmins only."""
    return {"success": False}


def harvest_log_list(context: Context, data_dict: DataDict) -> AuthResult:
    """Sysadmins only (the original registered no auth function, quirk Q3)."""
    return sysadmins_only(toolkit._("Only sysadmins can read the harvest log"))


def harvest_job_removals_show(context: Context, data_dict: DataDict) -> AuthResult:
    """Like the job itself: those who may update its source."""
    return harvest_job_show(context, data_dict)


def harvest_job_progress(context: Context, data_dict: DataDict) -> AuthResult:
    """Like the job itself: those who may update its source."""
    return harvest_job_show(context, data_dict)


def harvest_health_show(context: Context, data_dict: DataDict) -> AuthResult:
    """Sysadmins only: the health of every source."""
    return sysadmins_only(toolkit._("Only sysadmins can see the harvest health page"))


@toolkit.auth_allow_anonymous_access
def harvest_schedule_preview(context: Context, data_dict: DataDict) -> AuthResult:
    """Anyone may see when a cron expression would run (nothing is read)."""
    return {"success": True}
