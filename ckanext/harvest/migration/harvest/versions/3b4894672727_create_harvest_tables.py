"""create harvest tables

Idempotent: databases created before migrations existed (by the old
``model.setup()``) already have some or all of these tables and indexes; only
what is missing is created.

Revision ID: 3b4894672727
Revises:
Create Date: 2020-04-01 00:00:00
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = "3b4894672727"
down_revision = None
branch_labels = None
depends_on = None

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

INDEXES = (
    ("harvest_job_id_idx", "harvest_object", "harvest_job_id"),
    ("harvest_source_id_idx", "harvest_object", "harvest_source_id"),
    ("package_id_idx", "harvest_object", "package_id"),
    ("guid_idx", "harvest_object", "guid"),
    ("harvest_object_id_idx", "harvest_object_extra", "harvest_object_id"),
    ("harvest_error_harvest_object_id_idx", "harvest_object_error", "harvest_object_id"),
)


def _text(name: str, **kwargs: Any) -> sa.Column:
    return sa.Column(name, sa.UnicodeText, **kwargs)


def _stamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime)


def _fk(name: str, target: str, **kwargs: Any) -> sa.Column:
    return sa.Column(name, sa.UnicodeText, sa.ForeignKey(target, **kwargs))



def _log_level(create_type: bool) -> postgresql.ENUM:
    return postgresql.ENUM(*LOG_LEVELS, name="log_level", create_type=create_type)


def _tables() -> list[tuple[str, list[sa.Column]]]:
    """The seven tables in creation order, with fresh Column objects."""
    return [
        ("harvest_source", [
            _text("id", primary_key=True), _text("url", nullable=False),
            _text("title"), _text("description"), _text("config"),
            _stamp("created"), _text("type", nullable=False),
            sa.Column("active", sa.Boolean), _text("user_id"),
            _text("publisher_id"), _text("frequency"), _stamp("next_run"),
        ]),
        ("harvest_job", [
            _text("id", primary_key=True), _stamp("created"),
            _stamp("gather_started"), _stamp("gather_finished"),
            _stamp("finished"), _fk("source_id", "harvest_source.id"),
            _text("status", nullable=False),
        ]),
        ("harvest_object", [
            _text("id", primary_key=True), _text("guid"),
            sa.Column("current", sa.Boolean), _stamp("gathered"),
            _stamp("fetch_started"), _text("content", nullable=True),
            _stamp("fetch_finished"), _stamp("import_started"),
            _stamp("import_finished"), _text("state"),
            _stamp("metadata_modified_date"),
            sa.Column("retry_times", sa.Integer),
            _fk("harvest_job_id", "harvest_job.id"),
            _fk("harvest_source_id", "harvest_source.id"),
            _fk("package_id", "package.id", deferrable=True),
            _text("report_status", nullable=True),
        ]),
        ("harvest_object_extra", [
            _text("id", primary_key=True),
            _fk("harvest_object_id", "harvest_object.id"),
            _text("key"), _text("value"),
        ]),
        ("harvest_gather_error", [
            _text("id", primary_key=True), _fk("harvest_job_id", "harvest_job.id"),
            _text("message"), _stamp("created"),
        ]),
        ("harvest_object_error", [
            _text("id", primary_key=True),
            _fk("harvest_object_id", "harvest_object.id"),
            _text("message"), _text("stage"), sa.Column("line", sa.Integer),
            _stamp("created"),
        ]),
        ("harvest_log", [
            _text("id", primary_key=True), _text("content", nullable=False),
            sa.Column("level", _log_level(create_type=False)),
            _stamp("created"),
        ]),
    ]


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    existing = set(inspector.get_table_names())
    _log_level(create_type=True).create(op.get_bind(), checkfirst=True)
    for name, columns in _tables():
        if name not in existing:
            op.create_table(name, *columns)

    inspector = sa.inspect(op.get_bind())
    for index, table, column in INDEXES:
        names = {ix["name"] for ix in inspector.get_indexes(table)}
        if index not in names:
            op.create_index(index, table, [column])


def downgrade() -> None:
    op.drop_table("harvest_log")
    _log_level(create_type=True).drop(op.get_bind(), checkfirst=True)
    for name in (
        "harvest_object_error", "harvest_object_extra", "harvest_gather_error",
        "harvest_object", "harvest_job", "harvest_source",
    ):
        op.drop_table(name)
