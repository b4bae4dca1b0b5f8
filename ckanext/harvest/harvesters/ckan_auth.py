"""The ``read_only`` option of CKAN sources: chained auth functions.

A dataset whose current harvest object comes from a source configured with
``"read_only": true`` may be changed only by the harvest user of that source
(its ``user`` option, else ``ckanext.harvest.user_name``) and by sysadmins.
``CKANHarvester.get_auth_functions`` registers :data:`AUTH_FUNCTIONS`, which
chain CKAN's own ``package_update`` and ``bulk_update_*`` auth functions.
"""
from __future__ import annotations

import json
from typing import Any, Optional

from ckan import model
from ckan.plugins import toolkit
from ckan.plugins.toolkit import config
from ckan.types import AuthResult, Context, DataDict

from ckanext.harvest import options
from ckanext.harvest.model import HarvestObject, HarvestSource

__all__ = [
    "AUTH_FUNCTIONS",
    "bulk_update_delete",
    "bulk_update_private",
    "bulk_update_public",
    "package_update",
]


def _harvest_user_of_read_only(package_id: str) -> tuple[bool, Optional[str]]:
    """Whether the dataset was harvested by a ``read_only`` source, and its user."""
    row = (
        model.Session.query(HarvestSource.config)
        .join(HarvestObject, HarvestObject.harvest_source_id == HarvestSource.id)
        .filter(HarvestObject.package_id == package_id)
        .filter(HarvestObject.current.is_(True))
        .first()
    )
    try:
        source_config = json.loads(row[0]) if row and row[0] else {}
    except ValueError:
        return False, None
    if not isinstance(source_config, dict) or source_config.get("read_only") is not True:
        return False, None
    return True, source_config.get("user") or config.get(options.USER_NAME) or None


def _read_only_denial(package_ref: Any, user: Optional[str]) -> Optional[AuthResult]:
    """A refusal when ``user`` may not edit the read-only harvested dataset."""
    package = model.Package.get(package_ref) if isinstance(package_ref, str) else None
    if package is None:
        return None
    read_only, harvest_user = _harvest_user_of_read_only(package.id)
    if not read_only or (user and user == harvest_user):
        return None
    return {
        "success": False,
        "msg": "Dataset %s is harvested read-only: only the harvest user and "
               "sysadmins may change it" % package.name,
    }


@toolkit.chained_auth_function
@toolkit.auth_allow_anonymous_access
def package_update(next_auth: Any, context: Context, data_dict: DataDict) -> AuthResult:
    """Refuse changes to datasets harvested by a ``read_only`` source.

    ``package_patch``, ``package_delete``, ``package_revise`` and the resource
    and resource view auth functions all delegate to this one. Sysadmins never
    reach it; the harvest user of the source is let through.
    """
    data_dict = data_dict or {}
    denial = _read_only_denial(
        data_dict.get("id") or data_dict.get("name"), context.get("user")
    )
    return denial or next_auth(context, data_dict)


def _bulk_auth(next_auth: Any, context: Context, data_dict: DataDict) -> AuthResult:
    for package_ref in (data_dict or {}).get("datasets") or []:
        denial = _read_only_denial(package_ref, context.get("user"))
        if denial:
            return denial
    return next_auth(context, data_dict)


@toolkit.chained_auth_function
def bulk_update_private(next_auth: Any, context: Context, data_dict: DataDict) -> AuthResult:
    """Refuse bulk changes including read-only harvested datasets."""
    return _bulk_auth(next_auth, context, data_dict)


@toolkit.chained_auth_function
def bulk_update_public(next_auth: Any, context: Context, data_dict: DataDict) -> AuthResult:
    """Refuse bulk changes including read-only harvested datasets."""
    return _bulk_auth(next_auth, context, data_dict)


@toolkit.chained_auth_function
def bulk_update_delete(next_auth: Any, context: Context, data_dict: DataDict) -> AuthResult:
    """Refuse bulk deletions including read-only harvested datasets."""
    return _bulk_auth(next_auth, context, data_dict)


#: The auth functions the CKAN harvester registers (IAuthFunctions).
AUTH_FUNCTIONS = {
    "package_update": package_update,
    "bulk_update_private": bulk_update_private,
    "bulk_update_public": bulk_update_public,
    "bulk_update_delete": bulk_update_delete,
}
