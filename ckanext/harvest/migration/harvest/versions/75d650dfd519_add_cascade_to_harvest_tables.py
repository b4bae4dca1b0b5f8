"""add cascade to harvest tables

Every foreign key of the harvest tables gets ``ON DELETE CASCADE``, so purging a
dataset, job or source removes the rows that depend on it. Constraints keep
PostgreSQL's default names, which ``HarvesterBase`` relies on
(``SET CONSTRAINTS harvest_object_package_id_fkey DEFERRED``).

Revision ID: 75d650dfd519
Revises: 3b4894672727
Create Date: 2020-07-01 00:00:00
"""
from __future__ import annotations

from alembic import op

# revision identifiers, used by Alembic.
revision = "75d650dfd519"
down_revision = "3b4894672727"
branch_labels = None
depends_on = None

# (table, column, referenced table, deferrable)
FOREIGN_KEYS = (
    ("harvest_job", "source_id", "harvest_source", False),
    ("harvest_object", "harvest_job_id", "harvest_job", False),
    ("harvest_object", "harvest_source_id", "harvest_source", False),
    ("harvest_object", "package_id", "package", True),
    ("harvest_object_extra", "harvest_object_id", "harvest_object", False),
    ("harvest_gather_error", "harvest_job_id", "harvest_job", False),
    ("harvest_object_error", "harvest_object_id", "harvest_object", False),
)


def _recreate(cascade: bool) -> None:
    for table, column, target, deferrable in FOREIGN_KEYS:
        name = f"{table}_{column}_fkey"
        op.drop_constraint(name, table, type_="foreignkey")
        op.create_foreign_key(
            name, table, target, [column], ["id"],
            ondelete="CASCADE" if cascade else None,
            deferrable=True if deferrable else None,
        )


def upgrade() -> None:
    _recreate(cascade=True)


def downgrade() -> None:
    _recreate(cascade=False)
