"""Auth functions of the delete actions."""
from __future__ import annotations

from ckan.plugins import toolkit
from ckan.types import AuthResult, Context, DataDict

from ckanext.harvest.logic.auth import allowed_if, get_source_package

__all__ = ["harvest_source_delete"]


def harvest_source_delete(context: Context, data_dict: DataDict) -> AuthResult:
    """Whoever may delete the source dataset may delete the source."""
    package = get_source_package(data_dict)
    context["package"] = package
    return allowed_if(
        "package_delete", context, {"id": package.id},
        toolkit._("User {0} not authorized to delete harvest source {1}").format(
            context.get("user"), package.id
        ),
    )
