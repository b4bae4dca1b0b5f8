"""Harvesters shipped with ckanext-harvest, and the base class for new ones."""
from __future__ import annotations

from ckanext.harvest.harvesters.base import HarvesterBase
from ckanext.harvest.harvesters.ckanharvester import CKANHarvester

__all__ = ["CKANHarvester", "HarvesterBase"]
