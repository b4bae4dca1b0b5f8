"""Auth functions of the create actions."""
from __future__ import annotations

from ckan.plugins import toolkit
from ckan.types import AuthResult, Context, DataDict

from ckanext.harvest.logic.auth import allowed_if, get_source_package, sysadmins_only

__all__ = [
    "harvest_source_create",
    "harvest_job_create",
    "harvest_job_create_all",
    "harvest_object_create",
]


def harvest_source_create(context: Context, data_dict: DataDict) -> AuthResult:
    """Whoever may create datasets (in the organisation) may create sources."""
    return allowed_if(
        "package_create", context, data_dict or {},
        toolkit._("User {0} not authorized to create harvest sources").format(
            context.get("user")
        ),
    )


def harvest_job_create(context: Context, data_dict: DataDict) -> AuthResult:
    """Whoever may update the source dataset may create jobs for it."""
    package = get_source_package(data_dict, "source_id")
    context["package"] = package
    return allowed_if(
        "package_update", context, {"id": package.id},
        toolkit._("User not authorized to create a job for source {0}").format(
            (data_dict or {}).get("source_id")
        ),
    )


def harvest_job_create_all(context: Context, data_dict: DataDict) -> AuthResult:
    """Sysadmins only."""
    return sysadmins_only(
        toolkit._("Only sysadmins can create harvest jobs for all sources")
    )


def harvest_object_create(context: Context, data_dict: DataDict) -> AuthResult:
    """Sysadmins only."""
    return sysadmins_only(toolkit._("Only the sysadmins can create harvest objects"))
