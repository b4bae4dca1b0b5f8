"""``HarvesterBase``: the base class harvesters build on."""
from __future__ import annotations

from typing import Any, Optional

from ckan import plugins as p
from ckan.lib.munge import munge_tag, munge_title_to_name

from ckanext.harvest.interfaces import IHarvester
from ckanext.harvest.model import HarvestGatherError, HarvestObjectError

__all__ = ["HarvesterBase", "munge_tag", "munge_title_to_name"]


class HarvesterBase(p.SingletonPlugin):
    """Common helpers for harvesters (error recording, naming, package writes).

    Not registered as a plugin itself; subclasses are.
    """

    p.implements(IHarvester)

    config: Optional[dict[str, Any]] = None
    _user_name: Optional[str] = None

    _save_gather_error = HarvestGatherError.create
    _save_object_error = HarvestObjectError.create
