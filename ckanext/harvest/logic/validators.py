"""Validators of harvest source datasets and harvest objects."""
from __future__ import annotations

import json
import logging
import re
from typing import Any, Optional
from urllib.parse import urlparse, urlunparse

from ckan import model
from ckan.lib.navl.dictization_functions import Invalid, StopOnError, missing, validate
from ckan.plugins import toolkit
from ckan.types import Context, FlattenDataDict, FlattenErrorDict, FlattenKey

from ckanext.harvest.constants import DATASET_TYPE_NAME
from ckanext.harvest.lib import harvesters, removals, schedule, secret_config
from ckanext.harvest.model import (
    UPDATE_FREQUENCIES,
    Frequency,
    HarvestJob,
    HarvestSource,
)

log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": ":80", "https": ":443"}

#: Longest accepted source configuration and URL (characters).
MAX_CONFIG_LENGTH = 1_000_000
MAX_URL_LENGTH = 2048
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def string_param(value: Any) -> Any:
    """Refuse an id sent as a list or an object (JSON bodies), or holding NUL
    characters (which PostgreSQL cannot store or compare)."""
    if value is None:
        return value
    if not isinstance(value, str):
        raise Invalid("Must be a string")
    if "\x00" in value:
        raise Invalid("Must not contain NUL characters")
    return value


_ERROR_GROUP = re.compile(r"^[0-9a-f]{32}$")


def error_stage(value: Any) -> Any:
    """A stage of the error report: ``Gather``, ``Fetch``, ``Import`` or another
    stage a harvester records (a short name)."""
    if not isinstance(value, str) or not value or len(value) > 100 \
            or _CONTROL_CHARACTERS.search(value):
        raise Invalid("Must be a stage name such as Gather, Fetch or Import")
    return value


def error_group(value: Any) -> Any:
    """The id of a message group of the error report (32 hexadecimal digits)."""
    if not isinstance(value, str) or not _ERROR_GROUP.match(value):
        raise Invalid("Must be the id of a message group (32 hexadecimal digits)")
    return value


#: Most records a dry-run preview fetches and imports.
MAX_PREVIEW_LIMIT = 100


def preview_limit(value: Any) -> Any:
    """At most :data:`MAX_PREVIEW_LIMIT` records (after ``is_positive_integer``)."""
    if isinstance(value, int) and value > MAX_PREVIEW_LIMIT:
        raise Invalid("Must be at most %d" % MAX_PREVIEW_LIMIT)
    return value


#: Most run times ``harvest_schedule_preview`` lists.
MAX_SCHEDULE_PREVIEW = 10


def schedule_preview_count(value: Any) -> Any:
    """At most :data:`MAX_SCHEDULE_PREVIEW` (after ``is_positive_integer``)."""
    if isinstance(value, int) and value > MAX_SCHEDULE_PREVIEW:
        raise Invalid("Must be at most %d" % MAX_SCHEDULE_PREVIEW)
    return value


def check_params(
    data_dict: Any, schema: dict[str, Any], context: Context
) -> dict[str, Any]:
    """Validate an action's parameters against a navl ``schema``, like CKAN's
    ``@validate`` decorator, but leaving ``data_dict`` as it is (the action
    passes it on, unknown keys included).

    :returns: the validated (converted) parameters of the schema
    :raises ValidationError: with the errors of the invalid parameters
    """
    data, errors = validate(dict(data_dict), schema, context)
    if errors:
        raise toolkit.ValidationError(errors)
    return data


def harvest_source_id_exists(value: Any, context: Context) -> Any:
    """Check that a ``harvest_source`` row with this id exists."""
    if not HarvestSource.get(value):
        raise Invalid("Harvest Source with id %r does not exist." % str(value))
    return value


def harvest_job_exists(value: Any, context: Context) -> HarvestJob:
    """Check that the job exists; returns the ``HarvestJob`` object itself."""
    if value is missing or not value:
        raise Invalid("Missing value")
    job = HarvestJob.get(value)
    if not job:
        raise Invalid("Harvest Job with id %r does not exist." % str(value))
    return job


def _normalize_url(url: str) -> str:
    """Reduce a URL to scheme, host (without default port) and path without '/'."""
    try:
        parts = urlparse(url)
    except ValueError:  # not a URL a harvester fetches (e.g. a label): compare as is
        return url.strip()
    netloc = parts.netloc
    default_port = _DEFAULT_PORTS.get(parts.scheme)
    if default_port and netloc.endswith(default_port):
        netloc = netloc[: -len(default_port)]
    return urlunparse((parts.scheme, netloc, parts.path.rstrip("/"), None, None, None))


def _edited_package_id(data: FlattenDataDict, context: Context) -> Optional[str]:
    package = context.get("package")
    if package is not None:
        return package.id
    return data.get(("id",))


def _check_url_text(url: Any) -> None:
    """What every source URL must be, whatever its harvester: a text within the
    length limit, without control characters."""
    if not isinstance(url, str):
        raise Invalid("The URL must be a text, not %s" % type(url).__name__)
    if not url.strip():
        raise Invalid("Missing value")
    if len(url) > MAX_URL_LENGTH:
        raise Invalid("The URL is too long (at most %d characters)" % MAX_URL_LENGTH)
    if _CONTROL_CHARACTERS.search(url.strip()):
        raise Invalid("The URL must not contain control characters (such as "
                      "line breaks or tabs)")


def _harvester_url_check(url: str, source_type: Any) -> str:
    """Let the source's harvester check (and possibly rewrite) its URL.

    Harvesters opt in by implementing ``validate_source_url(url)``
    (docs/writing-a-harvester.rst): an exception refuses the URL with its
    message, a returned string replaces it.
    """
    harvester = harvesters.find_harvester(source_type) if source_type else None
    if harvester is None or not hasattr(harvester, "validate_source_url"):
        return url
    try:
        checked = harvester.validate_source_url(url)
    except Exception as e:  # noqa: BLE001 - any harvester error is a validation error
        raise Invalid(str(e) or type(e).__name__) from e
    return url if checked is None else checked


def harvest_source_url_validator(
    key: FlattenKey, data: FlattenDataDict, errors: FlattenErrorDict, context: Context
) -> Any:
    """Refuse an empty, overlong or control-character URL, one that the source's
    harvester refuses, or one (with the same config) used by another harvest
    source already.

    What a URL must look like beyond that (``http(s)://``, a host name ...) is the
    harvester's business: see ``validate_source_url`` in
    docs/writing-a-harvester.rst.
    """
    _check_url_text(data[key])
    data[key] = _harvester_url_check(data[key], data.get(key[:-1] + ("source_type",)))
    new_url = _normalize_url(data[key])
    new_config = data.get(key[:-1] + ("config",))
    # One query for every source (not one per source: a site has thousands,
    # and this runs on each create, update and indexing of a source).
    query = (
        model.Session.query(model.Package.url, HarvestSource.config)
        .outerjoin(HarvestSource, HarvestSource.id == model.Package.id)
        .filter(model.Package.type == DATASET_TYPE_NAME)
    )
    edited = _edited_package_id(data, context)
    if edited:
        query = query.filter(model.Package.id != edited)
    for url, existing_config in query.autoflush(False):
        if _normalize_url(url or "") == new_url and existing_config == new_config:
            raise Invalid(
                "There already is a Harvest Source for this URL (& config): "
                "url=%s config=%s" % (new_url, new_config)
            )
    return data[key]


def harvest_source_type_exists(value: Any, context: Context) -> Any:
    """Check that a harvester of this type is loaded."""
    available = harvesters.registered_names()
    if value not in available:
        raise Invalid(
            "Unknown harvester type: %s. Registered types: %r" % (value, available)
        )
    return value


def harvest_source_config_validator(
    key: FlattenKey, data: FlattenDataDict, errors: FlattenErrorDict, context: Context
) -> Any:
    """Let the source's harvester check (and possibly rewrite) the configuration.

    Secret values submitted as ``********`` (shown so to people who may not see
    them) are first taken back from the stored configuration.
    """
    source_type = data.get(key[:-1] + ("source_type",))
    if not isinstance(data[key], str):
        raise Invalid("Error parsing the configuration options: the configuration "
                      "must be a JSON text, not %s" % type(data[key]).__name__)
    if len(data[key]) > MAX_CONFIG_LENGTH:
        raise Invalid("The configuration is too long (%d characters, at most %d)"
                      % (len(data[key]), MAX_CONFIG_LENGTH))
    data[key] = _restore_secrets(data[key], data, key, source_type)
    _check_delete_missing(data[key])
    harvester = harvesters.find_harvester(source_type)
    if harvester is None or not hasattr(harvester, "validate_config"):
        return data[key]
    try:
        validated = harvester.validate_config(data[key])
    except Exception as e:  # noqa: BLE001 - any harvester error is a validation error
        raise Invalid("Error parsing the configuration options: %s" % e) from e
    if validated is not None:
        data[key] = validated
    _check_run_as_user(data[key], context)
    return data[key]


def _restore_secrets(config: Any, data: FlattenDataDict, key: FlattenKey,
                     source_type: Optional[str]) -> Any:
    """``config`` with redacted secrets replaced by the stored values."""
    if not isinstance(config, str) or secret_config.REDACTED not in config:
        return config
    package_id = data.get(key[:-1] + ("id",)) or data.get(key[:-1] + ("name",))
    package = model.Package.get(package_id) if package_id else None
    source = HarvestSource.get(package.id) if package else None
    return secret_config.restore_config(
        config, source.config if source else None, secret_config.secret_keys(source_type)
    )


def _check_delete_missing(config: Any) -> None:
    """The ``delete_missing`` option, whatever the harvester (the framework acts
    on it); a configuration that is not a JSON object is the harvester's affair."""
    try:
        config_obj = json.loads(config) if config else None
    except ValueError:
        return
    if not isinstance(config_obj, dict):
        return
    try:
        removals.check_source_config(config_obj)
    except ValueError as e:
        raise Invalid("Error parsing the configuration options: %s" % e) from None


def _check_run_as_user(config: Any, context: Context) -> None:
    """Only sysadmins may make a harvest run as someone else (config ``user``)."""
    try:
        run_as = json.loads(config).get("user") if config else None
    except (ValueError, AttributeError):
        return
    actor = context.get("user")
    if not run_as or run_as == actor or context.get("ignore_auth"):
        return
    user = model.User.get(actor) if actor else None
    if user is None or not user.sysadmin:
        raise Invalid(
            "Error parsing the configuration options: only sysadmins can make "
            "a harvest run as another user ({})".format(run_as)
        )


def keep_not_empty_extras(
    key: FlattenKey, data: FlattenDataDict, errors: FlattenErrorDict, context: Context
) -> None:
    """Keep only the truthy unknown keys of ``__extras``."""
    extras = data.pop(key, {})
    for extra_key, value in extras.items():
        if value:
            data[key[:-1] + (extra_key,)] = value


def _all_extra_fields() -> set[str]:
    fields: set[str] = set()
    for harvester in harvesters.all_harvesters():
        if hasattr(harvester, "extra_schema"):
            fields.update(harvester.extra_schema().keys())
    return fields


def _extra_schema_for(source_type: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"__extras": [keep_not_empty_extras]}
    harvester = harvesters.find_harvester(source_type)
    if harvester is not None and hasattr(harvester, "extra_schema"):
        schema.update(harvester.extra_schema())
    return schema


def _flat_extra_index(data: FlattenDataDict, name: str) -> Optional[int]:
    for key, value in data.items():
        if len(key) == 3 and key[0] == "extras" and key[2] == "key" and value == name:
            return key[1]
    return None


def _next_extra_index(data: FlattenDataDict) -> int:
    indexes = [key[1] for key in data if len(key) > 1 and key[0] == "extras"]
    return max(indexes) + 1 if indexes else 0


def _merge_into_config(data: FlattenDataDict, values: dict[str, Any]) -> None:
    """Merge the extra field values into the JSON ``config`` (field and extra)."""
    try:
        config = json.loads(data.get(("config",)) or "{}")
    except ValueError:
        log.error("Wrong JSON provided in config, skipping")
        config = {}
    if not isinstance(config, dict):
        config = {}
    # A redacted secret field keeps the (restored) value of the configuration.
    config.update({key: value for key, value in values.items()
                   if value != secret_config.REDACTED or key not in config})
    data[("config",)] = json.dumps(config)
    index = _flat_extra_index(data, "config")
    if index is None:
        index = _next_extra_index(data)
        data[("extras", index, "key")] = "config"
    data[("extras", index, "value")] = data[("config",)]


def harvest_source_extra_validator(
    key: FlattenKey, data: FlattenDataDict, errors: FlattenErrorDict, context: Context
) -> None:
    """Validate the fields a harvester adds to the source form (``extra_schema``).

    Accepted values become top-level fields and are merged into the source's
    JSON ``config``, both on the ``harvest_source`` row and in the dataset's
    ``config`` extra. (The original merged them into the row only and lost the
    submitted configuration there: quirk Q20.)
    """
    all_fields = _all_extra_fields()
    extras = data.get(key, {})
    source_type = data.get(("source_type",))
    result, extra_errors = validate(extras, _extra_schema_for(source_type), context)
    for field in list(result):
        if field not in all_fields:
            result.pop(field)
    for field, value in result.items():
        data[(field,)] = value
    for field, field_errors in extra_errors.items():
        errors[(field,)] = field_errors
    if result and not extra_errors:
        _merge_into_config(data, result)


def harvest_source_convert_from_config(
    key: FlattenKey, data: FlattenDataDict, errors: FlattenErrorDict, context: Context
) -> None:
    """Copy every top-level key of the JSON ``config`` to the output (show)."""
    config = data[key]
    if not config:
        return
    try:
        parsed = json.loads(config)
    except ValueError:
        log.error("Wrong JSON provided config, skipping")
        data[key] = None
        return
    if isinstance(parsed, dict):
        for config_key, value in parsed.items():
            data[(config_key,)] = value


def harvest_source_active_validator(value: Any, context: Context) -> bool:
    """Coerce ``active`` to a boolean (kept for compatibility; unused)."""
    if isinstance(value, str):
        return value.lower() in ("true", "1", "yes", "on")
    return bool(value)


def harvest_source_frequency_exists(value: Any) -> str:
    """Upper-case the frequency and check it is known; empty means MANUAL."""
    if value == "":
        return Frequency.MANUAL.value
    if str(value).upper() not in UPDATE_FREQUENCIES:
        raise Invalid("Frequency %s not recognised" % value)
    return str(value).upper()


def harvest_source_schedule_validator(
    key: FlattenKey, data: FlattenDataDict, errors: FlattenErrorDict, context: Context
) -> None:
    """A cron expression (five fields) with single spaces; empty means none.

    An empty schedule is dropped (the source then runs by its frequency).
    """
    value = data.get(key)
    if value is missing or value is None or (isinstance(value, str) and not value.strip()):
        data.pop(key, None)
        raise StopOnError
    try:
        data[key] = schedule.normalize(value)
    except schedule.ScheduleError as e:
        errors[key].append(str(e))
        raise StopOnError from None


def dataset_type_exists(value: Any) -> str:
    """Harvest sources are always datasets of type ``harvest``."""
    return DATASET_TYPE_NAME


def harvest_object_extras_validator(value: Any, context: Context) -> Any:
    """Check that harvest object extras are a dict of strings."""
    if not isinstance(value, dict):
        raise Invalid("extras must be a dict")
    for extra_value in value.values():
        if not isinstance(extra_value, str):
            raise Invalid("extras must be a dict of strings")
    return value


__all__ = [
    "harvest_source_id_exists",
    "harvest_job_exists",
    "harvest_source_url_validator",
    "harvest_source_type_exists",
    "harvest_source_config_validator",
    "keep_not_empty_extras",
    "harvest_source_extra_validator",
    "harvest_source_convert_from_config",
    "harvest_source_active_validator",
    "harvest_source_frequency_exists",
    "dataset_type_exists",
    "harvest_object_extras_validator",
]
