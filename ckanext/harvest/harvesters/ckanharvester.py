"""The CKAN-to-CKAN harvester (source type ``ckan``)."""
from __future__ import annotations

import logging
from typing import Any

import requests  # noqa: F401 - tests patch ckanharvester.requests.get

from ckanext.harvest.harvesters.base import HarvesterBase

log = logging.getLogger(__name__)


class ContentFetchError(Exception):
    """A remote request failed."""


class ContentNotFoundError(ContentFetchError):
    """The remote answered 404."""


class RemoteResourceError(Exception):
    """The remote returned something unusable."""


class SearchError(Exception):
    """The remote package search failed."""


class CKANHarvester(HarvesterBase):
    """Harvests the datasets of a remote CKAN instance through its action API."""

    def info(self) -> dict[str, Any]:
        """Describe the harvester (source type ``ckan``)."""
        return {
            "name": "ckan",
            "title": "CKAN",
            "description": "Harvests remote CKAN instances",
            "form_config_interface": "Text",
        }
