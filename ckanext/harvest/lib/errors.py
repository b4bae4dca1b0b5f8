"""Exceptions raised by the core and re-raised through the public API.

``ckanext.harvest.logic`` re-exports them under the original's path
(``ckanext.harvest.logic.HarvestJobExists`` ...).
"""
from __future__ import annotations

__all__ = ["HarvestJobExists", "HarvestSourceInactiveError"]


class HarvestJobExists(Exception):
    """The source already has a job that is ``New`` or ``Running``."""


class HarvestSourceInactiveError(Exception):
    """Jobs cannot be created on an inactive source."""
