"""Alembic environment of the harvest migrations.

The version table is ``<folder name>_alembic_version``, i.e.
``harvest_alembic_version``, in online and offline mode alike, so databases
migrated by the original extension are recognised.
"""
from __future__ import annotations

import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from ckan.model.meta import metadata
from sqlalchemy import engine_from_config, pool

config = context.config
# Callers that manage logging themselves (tests, ckanext.harvest.model.migrations)
# set the attribute ``configure_logger`` to False.
if config.config_file_name and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

NAME = os.path.basename(os.path.dirname(os.path.abspath(__file__)))
VERSION_TABLE = f"{NAME}_alembic_version"


def include_object(
    obj: Any, object_name: Any, type_: Any, reflected: bool, compare_to: Any
) -> bool:
    """Limit autogenerate comparisons to this plugin's own tables."""
    if type_ == "table":
        return object_name.startswith(NAME)
    return True


def run_migrations_offline() -> None:
    """Emit the migrations as SQL, without a database connection."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        version_table=VERSION_TABLE,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Apply the migrations to the configured database."""
    connectable = engine_from_config(
        config.get_section(config.config_ini_section) or {},
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=VERSION_TABLE,
            include_object=include_object,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
