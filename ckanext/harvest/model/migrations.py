"""Apply the harvest alembic migrations programmatically.

``ckan db upgrade -p harvest`` is the operator's way; this module serves code
that must migrate without the plugin being loaded (test fixtures, tooling).
"""
from __future__ import annotations

import os
from typing import Optional

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from ckan.plugins import toolkit

VERSION_TABLE = "harvest_alembic_version"
ALEMBIC_INI = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "migration", "harvest", "alembic.ini",
)


def alembic_config(url: Optional[str] = None) -> Config:
    """Return the alembic configuration of the harvest migrations.

    :param url: database URL, CKAN's ``sqlalchemy.url`` when omitted
    """
    cfg = Config(ALEMBIC_INI)
    cfg.set_main_option("script_location", os.path.dirname(ALEMBIC_INI))
    cfg.set_main_option(
        "sqlalchemy.url",
        (url or toolkit.config["sqlalchemy.url"]).replace("%", "%%"),
    )
    cfg.attributes["configure_logger"] = False
    return cfg


def upgrade(revision: str = "head", url: Optional[str] = None) -> None:
    """Migrate the harvest tables up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(revision: str = "base", url: Optional[str] = None) -> None:
    """Migrate the harvest tables down to ``revision``."""
    command.downgrade(alembic_config(url), revision)


def head_revision() -> Optional[str]:
    """Return the newest revision id shipped with this package."""
    return ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head()


def current_revision(url: Optional[str] = None) -> Optional[str]:
    """Return the revision the database is at, None when never migrated."""
    engine = sa.create_engine(url or toolkit.config["sqlalchemy.url"])
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE}
            )
            return context.get_current_revision()
    finally:
        engine.dispose()
