"""Validation of the configuration of a CKAN harvest source (``CKANHarvester.validate_config``).

The configuration is a JSON object; each ``_check_*`` function checks one group
of options and raises ``ValueError`` with the message shown to the user. The
``default_groups`` are looked up once here and stored in the configuration as
``default_group_dicts``, which the import stage then uses as they are.
"""
from __future__ import annotations

import json
from typing import Any, Optional, cast

from ckan import model
from ckan.plugins import toolkit
from ckan.types import Context

from ckanext.harvest.lib import removals

__all__ = ["show_default_group", "validate_config"]

_BOOLEAN_OPTIONS = ("read_only", "force_all")


def validate_config(config: Optional[str]) -> Optional[str]:
    """Check the JSON configuration of a CKAN source.

    :param config: the configuration string (may be empty)
    :returns: the configuration, re-serialised with ``default_group_dicts``
        when ``default_groups`` is given
    :raises ValueError: with the message of the first failed check
    """
    if not config:
        return config
    config_obj = json.loads(config)
    if not isinstance(config_obj, dict):
        raise ValueError("the configuration must be a JSON object")
    _check_api_version(config_obj)
    _check_default_tags(config_obj)
    if _check_default_groups(config_obj):
        config = json.dumps(config_obj)
    _check_other_options(config_obj)
    removals.check_source_config(config_obj)
    return config


def show_default_group(context: Context, name_or_id: str) -> dict[str, Any]:
    """The local group of a ``default_groups`` entry.

    :raises ValueError: there is no such group
    """
    try:
        return toolkit.get_action("group_show")(dict(context), {
            "id": name_or_id, "include_datasets": False, "include_users": False,
        })
    except toolkit.ObjectNotFound:
        raise ValueError("Default group not found") from None


def _check_api_version(config: dict[str, Any]) -> None:
    if "api_version" in config:
        try:
            int(config["api_version"])
        except (TypeError, ValueError):
            raise ValueError("api_version must be an integer") from None


def _check_default_tags(config: dict[str, Any]) -> None:
    if "default_tags" not in config:
        return
    tags = config["default_tags"]
    if not isinstance(tags, list):
        raise ValueError("default_tags must be a list")
    if tags and not isinstance(tags[0], dict):
        raise ValueError("default_tags must be a list of dictionaries")


def _check_default_groups(config: dict[str, Any]) -> bool:
    """Resolve ``default_groups`` into ``default_group_dicts``; True if done."""
    if "default_groups" not in config:
        return False
    groups = config["default_groups"]
    if not isinstance(groups, list):
        raise ValueError("default_groups must be a *list* of group names/ids")
    if groups and not isinstance(groups[0], str):
        raise ValueError("default_groups must be a list of group names/ids (i.e. strings)")
    context = cast(Context, {
        "model": model, "session": model.Session, "user": _request_user_name(),
    })
    config["default_group_dicts"] = [
        show_default_group(context, group) for group in groups
    ]
    return True


def _check_other_options(config: dict[str, Any]) -> None:
    if "default_extras" in config and not isinstance(config["default_extras"], dict):
        raise ValueError("default_extras must be a dictionary")
    for kind in ("organizations", "groups"):
        if ("%s_filter_include" % kind in config
                and "%s_filter_exclude" % kind in config):
            raise ValueError(
                "Harvest configuration cannot contain both %s_filter_include and "
                "%s_filter_exclude" % (kind, kind)
            )
    if config.get("user"):
        _check_user_exists(config["user"])
    for key in _BOOLEAN_OPTIONS:
        if key in config and not isinstance(config[key], bool):
            raise ValueError("%s must be boolean" % key)


def _check_user_exists(name: str) -> None:
    context = cast(Context, {
        "model": model, "session": model.Session, "ignore_auth": True,
    })
    try:
        toolkit.get_action("user_show")(context, {"id": name})
    except toolkit.ObjectNotFound:
        raise ValueError("User not found") from None


def _request_user_name() -> str:
    """Name of the user of the current web request ('' outside a request)."""
    try:
        return toolkit.g.user or ""
    except (AttributeError, RuntimeError):
        return ""
