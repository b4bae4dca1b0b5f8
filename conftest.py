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


@pytest.fixture
def sysadmin():
    """A new sysadmin user (dict)."""
    from ckan.tests import factories

    return factories.Sysadmin()


@pytest.fixture
def cli(ckan_config):
    """CKAN's ``cli`` runner with stderr kept apart (click 8.1, CKAN 2.11, mixes them)."""
    from ckan.tests.helpers import CKANCliRunner

    env = {"CKAN_INI": ckan_config["__file__"]}
    try:
        return CKANCliRunner(env=env, mix_stderr=False)
    except TypeError:  # click >= 8.2 always keeps stderr apart
        return CKANCliRunner(env=env)
