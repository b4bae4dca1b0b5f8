"""Auth functions of the patch actions."""
from __future__ import annotations

from ckan.types import AuthResult, Context, DataDict

from ckanext.harvest.logic.auth.update import harvest_source_update

__all__ = ["harvest_source_patch"]


def harvest_source_patch(context: Context, data_dict: DataDict) -> AuthResult:
    """As ``harvest_source_update`` (registered, unlike the original: quirk Q4)."""
    return harvest_source_update(context, data_dict)
