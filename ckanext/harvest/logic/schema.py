"""Navl schemas of harvest source datasets and harvest objects."""
from __future__ import annotations

from typing import Any

from ckan.logic import schema as core_schema
from ckan.plugins import toolkit

from ckanext.harvest.logic.validators import (
    dataset_type_exists,
    error_group,
    error_stage,
    harvest_job_exists,
    harvest_object_extras_validator,
    harvest_source_config_validator,
    harvest_source_convert_from_config,
    harvest_source_extra_validator,
    harvest_source_frequency_exists,
    harvest_source_id_exists,
    harvest_source_schedule_validator,
    harvest_source_type_exists,
    harvest_source_url_validator,
    preview_limit,
    schedule_preview_count,
    string_param,
)

Schema = dict[str, Any]

# Module-level handles downstream extensions import from here (ckanext-dcat
# imports ``unicode_safe``).
ignore_missing = toolkit.get_validator("ignore_missing")
not_empty = toolkit.get_validator("not_empty")
ignore = toolkit.get_validator("ignore")
if_empty_same_as = toolkit.get_validator("if_empty_same_as")
unicode_safe = toolkit.get_validator("unicode_safe")
package_id_exists = toolkit.get_validator("package_id_exists")
name_validator = toolkit.get_validator("name_validator")
package_name_validator = toolkit.get_validator("package_name_validator")
owner_org_validator = toolkit.get_validator("owner_org_validator")
boolean_validator = toolkit.get_validator("boolean_validator")
is_positive_integer = toolkit.get_validator("is_positive_integer")
natural_number_validator = toolkit.get_validator("natural_number_validator")
convert_to_extras = toolkit.get_converter("convert_to_extras")
convert_from_extras = toolkit.get_converter("convert_from_extras")


def harvest_source_show_params_schema() -> Schema:
    """The parameters of ``harvest_source_show`` (others pass to ``package_show``)."""
    return {"id": [ignore_missing, string_param], "url": [ignore_missing, string_param],
            "__extras": [ignore]}


def paging_params_schema() -> Schema:
    """``limit`` (a positive integer) and ``offset`` (0 or more) of the lists."""
    return {
        "limit": [ignore_missing, is_positive_integer],
        "offset": [ignore_missing, natural_number_validator],
    }


def harvest_job_error_report_params_schema() -> Schema:
    """The filters and paging of ``harvest_job_error_report`` (``id`` is looked up)."""
    return dict(paging_params_schema(), stage=[ignore_missing, string_param, error_stage],
                group=[ignore_missing, string_param, error_group], __extras=[ignore])


def harvest_source_preview_params_schema() -> Schema:
    """``id`` and ``limit`` of ``harvest_source_preview`` (a new source's fields
    are validated by ``harvest_source_create`` in the sandbox)."""
    return {"id": [ignore_missing, string_param],
            "limit": [ignore_missing, is_positive_integer, preview_limit],
            "__extras": [ignore]}


def harvest_schedule_preview_params_schema() -> Schema:
    """``schedule`` (checked by the action) and ``count`` (1 to 10) of
    ``harvest_schedule_preview``."""
    return {"schedule": [not_empty, string_param],
            "count": [ignore_missing, is_positive_integer, schedule_preview_count],
            "__extras": [ignore]}


def harvest_object_list_params_schema() -> Schema:
    """The parameters of ``harvest_object_list``."""
    return dict(paging_params_schema(), source_id=[ignore_missing, string_param],
                __extras=[ignore])


def harvest_source_list_params_schema() -> Schema:
    """The paging parameters of ``harvest_source_list`` (the filters are flags)."""
    return dict(paging_params_schema(), __extras=[ignore])


def harvest_job_list_params_schema() -> Schema:
    """The parameters of ``harvest_job_list``."""
    return dict(paging_params_schema(), source_id=[ignore_missing, string_param],
                status=[ignore_missing, string_param], __extras=[ignore])


def harvest_job_report_params_schema() -> Schema:
    """The paging parameters of ``harvest_job_report`` (``id`` is looked up)."""
    return dict(paging_params_schema(), __extras=[ignore])


def harvest_source_schema() -> Schema:
    """The base schema of a harvest source dataset."""
    return {
        "__extras": [ignore],
        "id": [ignore_missing, unicode_safe, package_id_exists],
        "type": [dataset_type_exists, unicode_safe],
        "url": [not_empty, unicode_safe, harvest_source_url_validator],
        "name": [not_empty, unicode_safe, name_validator, package_name_validator],
        "source_type": [
            not_empty, unicode_safe, harvest_source_type_exists, convert_to_extras
        ],
        "title": [if_empty_same_as("name"), unicode_safe],
        "notes": [ignore_missing, unicode_safe],
        "owner_org": [owner_org_validator, unicode_safe],
        "private": [ignore_missing, boolean_validator],
        "organization": [ignore_missing],
        "frequency": [
            ignore_missing, unicode_safe, harvest_source_frequency_exists,
            convert_to_extras,
        ],
        "schedule": [harvest_source_schedule_validator, convert_to_extras],
        "state": [ignore_missing],
        "config": [ignore_missing, harvest_source_config_validator, convert_to_extras],
        "extras": core_schema.default_extras_schema(),
    }


def harvest_source_create_package_schema() -> Schema:
    """Schema of ``harvest_source_create`` (no ``id``; harvester extra fields)."""
    schema = harvest_source_schema()
    schema["__extras"] = [harvest_source_extra_validator]
    schema["save"] = [ignore]
    schema.pop("id")
    return schema


def harvest_source_update_package_schema() -> Schema:
    """Schema of ``harvest_source_update`` / ``harvest_source_patch``."""
    schema = harvest_source_create_package_schema()
    schema["id"] = [ignore_missing]
    schema["owner_org"] = [ignore_missing, owner_org_validator, unicode_safe]
    return schema


def harvest_source_show_package_schema() -> Schema:
    """Schema applied to a harvest source dataset when it is shown."""
    schema = harvest_source_schema()
    schema.update({
        "source_type": [convert_from_extras, ignore_missing],
        "frequency": [convert_from_extras, ignore_missing],
        "schedule": [convert_from_extras, ignore_missing],
        "config": [
            convert_from_extras, harvest_source_convert_from_config, ignore_missing
        ],
        "metadata_created": [],
        "metadata_modified": [],
        "owner_org": [],
        "creator_user_id": [],
        "organization": [],
        "notes": [],
        "revision_id": [ignore_missing],
        "revision_timestamp": [ignore_missing],
        "tracking_summary": [ignore_missing],
        # Kept when present, so the index (CKAN 2.11 validates what it indexes)
        # holds the status that after_dataset_show added.
        "status": [ignore_missing],
        "__extras": [ignore],
        "id": [],
    })
    if hasattr(core_schema, "default_show_extras_schema"):
        schema["extras"] = core_schema.default_show_extras_schema()
    return schema


def harvest_object_create_schema() -> Schema:
    """Schema of ``harvest_object_create`` (``state`` is accepted and ignored)."""
    return {
        "guid": [ignore_missing, unicode_safe],
        "content": [ignore_missing, unicode_safe],
        "state": [ignore_missing, unicode_safe],
        "job_id": [harvest_job_exists],
        "source_id": [ignore_missing, harvest_source_id_exists],
        "package_id": [ignore_missing, package_id_exists],
        "extras": [ignore_missing, harvest_object_extras_validator],
    }
