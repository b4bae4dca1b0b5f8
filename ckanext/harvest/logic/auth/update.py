"""Auth functions of the update actions."""
from __future__ import annotations

from ckan.plugins import toolkit
from ckan.types import AuthResult, Context, DataDict

from ckanext.harvest.logic.auth import (
    allowed_if,
    get_job_object,
    get_source_package,
    sysadmins_only,
)
from ckanext.harvest.logic.auth.create import harvest_job_create

__all__ = [
    "harvest_source_update",
    "harvest_source_clear",
    "harvest_source_detach",
    "harvest_sources_clear",
    "harvest_objects_import",
    "harvest_jobs_run",
    "harvest_send_job_to_gather_queue",
    "harvest_job_abort",
    "harvest_abort_failed_jobs",
    "harvest_sources_reindex",
    "harvest_source_reindex",
    "harvest_job_approve_removals",
]


def harvest_source_update(context: Context, data_dict: DataDict) -> AuthResult:
    """Whoever may update the source dataset may update the source."""
    package = get_source_package(data_dict)
    context["package"] = package
    return allowed_if(
        "package_update", context, {"id": package.id},
        toolkit._("User {0} not authorized to update harvest source {1}").format(
            context.get("user"), package.id
        ),
    )


def harvest_source_clear(context: Context, data_dict: DataDict) -> AuthResult:
    """As ``harvest_source_update``."""
    return harvest_source_update(context, data_dict)


def harvest_source_detach(context: Context, data_dict: DataDict) -> AuthResult:
    """As ``harvest_source_update``: whoever may update the source may let its
    datasets go."""
    return harvest_source_update(context, data_dict)


def harvest_sources_clear(context: Context, data_dict: DataDict) -> AuthResult:
    """Sysadmins only."""
    return sysadmins_only(
        toolkit._("Only sysadmins can clear history for all harvest jobs")
    )


def harvest_objects_import(context: Context, data_dict: DataDict) -> AuthResult:
    """Sysadmins only."""
    return sysadmins_only(toolkit._("Only sysadmins can reimport all harvest objects"))


def harvest_jobs_run(context: Context, data_dict: DataDict) -> AuthResult:
    """Sysadmins only."""
    return sysadmins_only(toolkit._("Only sysadmins can run the pending harvest jobs"))


def harvest_send_job_to_gather_queue(
    context: Context, data_dict: DataDict
) -> AuthResult:
    """As ``harvest_job_create`` for the job's source."""
    return harvest_job_create(context, {"source_id": (data_dict or {}).get("source_id")})


def harvest_job_abort(context: Context, data_dict: DataDict) -> AuthResult:
    """Whoever may update the job's source may stop its job (quirk Q8 decision).

    The source comes from ``source_id``, else from the job named by ``id``.
    """
    source_id = (data_dict or {}).get("source_id")
    if not source_id:
        source_id = get_job_object(context, data_dict).source_id
    return harvest_source_update(context, {"id": source_id})


def harvest_abort_failed_jobs(context: Context, data_dict: DataDict) -> AuthResult:
    """Sysadmins only (the original checked nothing, quirk Q5)."""
    return sysadmins_only(toolkit._("Only sysadmins can abort failed harvest jobs"))


def harvest_sources_reindex(context: Context, data_dict: DataDict) -> AuthResult:
    """Sysadmins only."""
    return sysadmins_only(toolkit._("Only sysadmins can reindex all harvest sources"))


def harvest_source_reindex(context: Context, data_dict: DataDict) -> AuthResult:
    """As ``harvest_source_update``."""
    return harvest_source_update(context, data_dict)


def harvest_job_approve_removals(context: Context, data_dict: DataDict) -> AuthResult:
    """Whoever may update the job's source may approve its held removals."""
    source_id = get_job_object(context, data_dict).source_id
    return harvest_source_update(context, {"id": source_id})
