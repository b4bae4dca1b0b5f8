"""``ckan db`` commands operate the harvest migrations as operators expect."""
from __future__ import annotations

import pytest
from ckan.cli.cli import ckan as ckan_cli

from ckanext.harvest.model import migrations
from tests.support.marks import harvest_site

pytestmark = harvest_site("harvest ckan_harvester", index=False)


@pytest.fixture(autouse=True)
def back_to_head():
    yield
    migrations.upgrade()


def test_pending_migrations_lists_the_harvest_plugin_after_a_downgrade(cli):
    migrations.downgrade("base")

    result = cli.invoke(ckan_cli, ["db", "pending-migrations"])

    assert result.exit_code == 0, result.output
    assert "2 unapplied migrations for harvest" in result.output
    assert migrations.current_revision() is None


def test_pending_migrations_apply_migrates_to_head(cli):
    migrations.downgrade("3b4894672727")

    result = cli.invoke(ckan_cli, ["db", "pending-migrations", "--apply"])

    assert result.exit_code == 0, result.output
    assert "1 unapplied migrations for harvest" in result.output
    assert migrations.current_revision() == "75d650dfd519"


def test_nothing_pending_at_head(cli):
    result = cli.invoke(ckan_cli, ["db", "pending-migrations"])

    assert result.exit_code == 0, result.output
    assert "unapplied migrations for harvest" not in result.output


def test_db_upgrade_and_downgrade_for_the_plugin(cli):
    down = cli.invoke(ckan_cli, ["db", "downgrade", "-p", "harvest"])
    assert down.exit_code == 0, down.output
    assert migrations.current_revision() is None

    up = cli.invoke(ckan_cli, ["db", "upgrade", "-p", "harvest"])
    assert up.exit_code == 0, up.output
    assert migrations.current_revision() == "75d650dfd519"

    version = cli.invoke(ckan_cli, ["db", "version", "-p", "harvest"])
    assert "75d650dfd519 (head)" in version.output
