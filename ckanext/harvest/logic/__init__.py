"""Public API of the harvest framework: actions, auth functions, schemas."""
from __future__ import annotations


class HarvestJobExists(Exception):
    """The source already has a job that is ``New`` or ``Running``."""


class HarvestSourceInactiveError(Exception):
    """Jobs cannot be created on an inactive source."""
