"""Shared names of the harvest framework (and, later, CLI and view helpers)."""
from __future__ import annotations

DATASET_TYPE_NAME = "harvest"
