"""Write-only secrets in harvest source configurations.

A source configuration (a JSON object) may hold credentials for the remote:
``api_key`` always counts as secret, and a harvester may name more keys in its
class attribute ``secret_config_keys`` (a sequence of key names). Their values
are shown as :data:`REDACTED` to everyone except sysadmins and the admins of
the source's organisation: in ``harvest_source_show`` / ``package_show``,
``harvest_source_list``, the search index (so ``package_search`` and the source
list pages), the web pages, e-mails and logs.

They remain writable: a configuration submitted with :data:`REDACTED` as the
value of a secret key (an editor saving the form without retyping the key)
keeps the stored value.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Optional

from ckan import authz, model

from ckanext.harvest.lib.harvesters import find_harvester

#: What a secret value is replaced with.
REDACTED = "********"

#: Keys secret whatever the harvester.
ALWAYS_SECRET = frozenset({"api_key"})

__all__ = [
    "REDACTED",
    "may_see_secrets",
    "redact_config",
    "redact_index_dict",
    "redact_source_dict",
    "restore_config",
    "secret_keys",
]


def secret_keys(source_type: Optional[str]) -> frozenset[str]:
    """The secret configuration keys of sources of type ``source_type``."""
    harvester = find_harvester(source_type) if source_type else None
    declared: Iterable[str] = getattr(harvester, "secret_config_keys", None) or ()
    return ALWAYS_SECRET.union(declared)


def _load(config: Any) -> Optional[dict[str, Any]]:
    if not isinstance(config, str) or not config.strip():
        return None
    try:
        value = json.loads(config)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def redact_config(config: Any, keys: Iterable[str]) -> Any:
    """``config`` (a JSON string) with the values of ``keys`` replaced.

    Anything that is not a JSON object is returned unchanged.
    """
    loaded = _load(config)
    if loaded is None:
        return config
    hidden = [key for key in keys if loaded.get(key) not in (None, "", REDACTED)]
    if not hidden:
        return config
    for key in hidden:
        loaded[key] = REDACTED
    return json.dumps(loaded)


def restore_config(new_config: Any, old_config: Any, keys: Iterable[str]) -> Any:
    """``new_config`` with :data:`REDACTED` values taken back from ``old_config``.

    A redacted key without a stored value is dropped.
    """
    loaded = _load(new_config)
    if loaded is None:
        return new_config
    redacted = [key for key in keys if loaded.get(key) == REDACTED]
    if not redacted:
        return new_config
    old = _load(old_config) or {}
    for key in redacted:
        if key in old and old[key] != REDACTED:
            loaded[key] = old[key]
        else:
            loaded.pop(key)
    return json.dumps(loaded)


def may_see_secrets(user: Optional[str], owner_org: Optional[str]) -> bool:
    """Sysadmins and the admins of the source's organisation see secrets."""
    if not user:
        return False
    if authz.is_sysadmin(user):
        return True
    if not owner_org:
        return False
    return authz.users_role_for_group_or_org(owner_org, user) == "admin"


def _redact_fields(source: dict[str, Any], keys: frozenset[str]) -> None:
    """Redact ``config`` and top-level copies of secret keys (extra fields)."""
    if "config" in source:
        source["config"] = redact_config(source["config"], keys)
    for key in keys & source.keys():
        if source[key] not in (None, ""):
            source[key] = REDACTED
    for extra in source.get("extras") or ():
        if isinstance(extra, dict) and extra.get("key") == "config":
            extra["value"] = redact_config(extra.get("value"), keys)


def redact_source_dict(source: dict[str, Any], user: Optional[str]) -> dict[str, Any]:
    """Redact a source dict (dataset or ``harvest_source`` row) in place.

    Works with both shapes: ``source_type``/``type`` name the harvester, the
    organisation is ``owner_org`` or ``publisher_id``.
    """
    owner_org = source.get("owner_org") or source.get("publisher_id")
    if not owner_org and source.get("id"):
        package = model.Package.get(source["id"])
        owner_org = package.owner_org if package else None
    if may_see_secrets(user, owner_org):
        return source
    source_type = source.get("source_type") or source.get("type")
    _redact_fields(source, secret_keys(source_type))
    return source


def redact_index_dict(pkg_dict: dict[str, Any]) -> dict[str, Any]:
    """Redact what the search index stores of a harvest source, for everyone."""
    keys = secret_keys(pkg_dict.get("source_type"))
    _redact_fields(pkg_dict, keys)
    if "extras_config" in pkg_dict:
        pkg_dict["extras_config"] = redact_config(pkg_dict["extras_config"], keys)
    for blob_name in ("data_dict", "validated_data_dict"):
        blob = _load(pkg_dict.get(blob_name))
        if blob is not None:
            _redact_fields(blob, keys)
            pkg_dict[blob_name] = json.dumps(blob)
    return pkg_dict
