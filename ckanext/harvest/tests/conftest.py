"""Fixtures for tests that live inside the package (downstream habit)."""
from __future__ import annotations

import pytest


@pytest.fixture
def clean_db(reset_db, migrate_db_for, with_plugins):
    """CKAN's ``clean_db`` plus the harvest tables (needs the harvest plugin)."""
    reset_db()
    migrate_db_for("harvest")
