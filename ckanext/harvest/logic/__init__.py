"""Public API of the harvest framework: actions, auth functions, schemas.

The exceptions live in the core (:mod:`ckanext.harvest.lib.errors`) and keep
this, the original's, import path.
"""
from __future__ import annotations

from ckanext.harvest.lib.errors import HarvestJobExists, HarvestSourceInactiveError

__all__ = ["HarvestJobExists", "HarvestSourceInactiveError"]
