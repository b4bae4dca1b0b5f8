"""Pytest configuration shared by the project's test suite (tests/)."""
from __future__ import annotations

import pytest

from ckanext.harvest.model import migrations

pytest_plugins = [
    "ckanext.harvest.tests.fixtures", "tests.support.site", "tests.support.world",
]


@pytest.fixture
def clean_db(reset_db):
    """CKAN's ``clean_db`` plus the harvest tables (works without the plugin loaded)."""
    reset_db()
    migrations.upgrade()
