"""Auth functions of the harvest API, and the lookups they share."""
from __future__ import annotations

from typing import Any, Optional

from ckan import model
from ckan.plugins import toolkit
from ckan.types import AuthResult, Context, DataDict

from ckanext.harvest.model import HarvestJob, HarvestObject, HarvestSource


def user_is_sysadmin(context: Context) -> bool:
    """True when the context's user is a sysadmin.

    :raises ObjectNotFound: the user does not exist
    """
    user = model.User.get(context.get("user") or "")
    if user is None:
        raise toolkit.ObjectNotFound("User {0} not found".format(context.get("user")))
    return bool(user.sysadmin)


def _get_object(
    context: Context, data_dict: Optional[DataDict], name: str, class_name: str
) -> Any:
    if name in context:
        return context[name]  # type: ignore[literal-required]
    classes = {
        "HarvestSource": HarvestSource, "HarvestJob": HarvestJob,
        "HarvestObject": HarvestObject,
    }
    obj = classes[class_name].get((data_dict or {}).get("id"))
    if obj is None:
        raise toolkit.ObjectNotFound()
    return obj


def get_source_object(context: Context, data_dict: Optional[DataDict] = None) -> Any:
    """The ``HarvestSource`` of the context or of ``data_dict['id']``."""
    return _get_object(context, data_dict, "source", "HarvestSource")


def get_job_object(context: Context, data_dict: Optional[DataDict] = None) -> Any:
    """The ``HarvestJob`` of the context or of ``data_dict['id']``."""
    return _get_object(context, data_dict, "job", "HarvestJob")


def get_obj_object(context: Context, data_dict: Optional[DataDict] = None) -> Any:
    """The ``HarvestObject`` of the context or of ``data_dict['id']``."""
    return _get_object(context, data_dict, "obj", "HarvestObject")


def get_source_package(data_dict: DataDict, key: str = "id") -> model.Package:
    """The source dataset named by ``data_dict[key]`` (id or name).

    :raises ObjectNotFound: ``Harvest source not found``
    """
    package = model.Package.get((data_dict or {}).get(key) or "")
    if package is None:
        raise toolkit.ObjectNotFound("Harvest source not found")
    return package


def allowed_if(
    action: str, context: Context, data_dict: DataDict, message: str
) -> AuthResult:
    """Succeed when ``check_access(action)`` passes, else fail with ``message``."""
    try:
        toolkit.check_access(action, Context(context), data_dict)  # type: ignore[arg-type]
    except toolkit.NotAuthorized:
        return {"success": False, "msg": message}
    return {"success": True}


def sysadmins_only(message: str) -> AuthResult:
    """Sysadmins never reach auth functions: everyone else is refused."""
    return {"success": False, "msg": message}
