"""Patch actions of the harvest API."""
from __future__ import annotations

from typing import Any

from ckan.plugins import toolkit
from ckan.types import Context, DataDict

from ckanext.harvest.constants import DATASET_TYPE_NAME

__all__ = ["harvest_source_patch"]


def harvest_source_patch(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """Update only the given fields of a harvest source (``package_patch``).

    :param id: the id or name of the source
    :returns: the updated source dataset
    """
    try:
        patch = toolkit.get_action("package_patch")
    except KeyError:
        raise Exception(
            "The harvest_source_patch action is not available on this version of CKAN"
        ) from None
    data_dict = dict(data_dict, type=DATASET_TYPE_NAME)
    context = Context(context, extras_as_string=True)  # type: ignore[assignment]
    return patch(context, data_dict)
