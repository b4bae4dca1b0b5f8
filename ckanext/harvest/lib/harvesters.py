"""Lookup of the harvester plugins (``IHarvester`` implementations)."""
from __future__ import annotations

import logging
from typing import Iterator, Optional

from ckan import plugins as p

from ckanext.harvest.interfaces import IHarvester

log = logging.getLogger(__name__)


def all_harvesters() -> Iterator[IHarvester]:
    """Yield every loaded harvester plugin."""
    yield from p.PluginImplementations(IHarvester)


def harvester_name(harvester: IHarvester) -> Optional[str]:
    """Return ``info()['name']`` of a harvester, None when it has no usable info."""
    try:
        info = harvester.info()
    except AttributeError:
        return None
    if not info or "name" not in info:
        log.error("Harvester %s does not provide info() with a name", harvester)
        return None
    return info["name"]


def registered_names() -> list[str]:
    """Return the names of the harvesters that describe themselves properly."""
    return [name for name in map(harvester_name, all_harvesters()) if name]


def find_harvester(source_type: Optional[str]) -> Optional[IHarvester]:
    """Return the harvester handling ``source_type``, None when there is none."""
    for harvester in all_harvesters():
        if harvester_name(harvester) == source_type:
            return harvester
    return None
