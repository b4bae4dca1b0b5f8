"""The harvest migrations produce exactly the schema of the specification."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from ckan import model

from ckanext.harvest.model import migrations

TABLES = (
    "harvest_source", "harvest_job", "harvest_object", "harvest_object_extra",
    "harvest_gather_error", "harvest_object_error", "harvest_log",
)
T, TS, B, INT = "text", "timestamp without time zone", "boolean", "integer"

# (column, type, nullable) in definition order, as the specification lists them.
EXPECTED_COLUMNS = {
    "harvest_source": [
        ("id", T, False), ("url", T, False), ("title", T, True),
        ("description", T, True), ("config", T, True), ("created", TS, True),
        ("type", T, False), ("active", B, True), ("user_id", T, True),
        ("publisher_id", T, True), ("frequency", T, True), ("next_run", TS, True),
    ],
    "harvest_job": [
        ("id", T, False), ("created", TS, True), ("gather_started", TS, True),
        ("gather_finished", TS, True), ("finished", TS, True),
        ("source_id", T, True), ("status", T, False),
    ],
    "harvest_object": [
        ("id", T, False), ("guid", T, True), ("current", B, True),
        ("gathered", TS, True), ("fetch_started", TS, True), ("content", T, True),
        ("fetch_finished", TS, True), ("import_started", TS, True),
        ("import_finished", TS, True), ("state", T, True),
        ("metadata_modified_date", TS, True), ("retry_times", INT, True),
        ("harvest_job_id", T, True), ("harvest_source_id", T, True),
        ("package_id", T, True), ("report_status", T, True),
    ],
    "harvest_object_extra": [
        ("id", T, False), ("harvest_object_id", T, True), ("key", T, True),
        ("value", T, True),
    ],
    "harvest_gather_error": [
        ("id", T, False), ("harvest_job_id", T, True), ("message", T, True),
        ("created", TS, True),
    ],
    "harvest_object_error": [
        ("id", T, False), ("harvest_object_id", T, True), ("message", T, True),
        ("stage", T, True), ("line", INT, True), ("created", TS, True),
    ],
    "harvest_log": [
        ("id", T, False), ("content", T, False), ("level", "log_level", True),
        ("created", TS, True),
    ],
}

# name -> (table, column, referenced table, on delete, deferrable)
EXPECTED_FKS = {
    "harvest_job_source_id_fkey":
        ("harvest_job", "source_id", "harvest_source", "CASCADE", False),
    "harvest_object_harvest_job_id_fkey":
        ("harvest_object", "harvest_job_id", "harvest_job", "CASCADE", False),
    "harvest_object_harvest_source_id_fkey":
        ("harvest_object", "harvest_source_id", "harvest_source", "CASCADE", False),
    "harvest_object_package_id_fkey":
        ("harvest_object", "package_id", "package", "CASCADE", True),
    "harvest_object_extra_harvest_object_id_fkey":
        ("harvest_object_extra", "harvest_object_id", "harvest_object", "CASCADE",
         False),
    "harvest_gather_error_harvest_job_id_fkey":
        ("harvest_gather_error", "harvest_job_id", "harvest_job", "CASCADE", False),
    "harvest_object_error_harvest_object_id_fkey":
        ("harvest_object_error", "harvest_object_id", "harvest_object", "CASCADE",
         False),
}

EXPECTED_INDEXES = {
    "harvest_job_id_idx": ("harvest_object", "harvest_job_id"),
    "harvest_source_id_idx": ("harvest_object", "harvest_source_id"),
    "package_id_idx": ("harvest_object", "package_id"),
    "guid_idx": ("harvest_object", "guid"),
    "harvest_object_id_idx": ("harvest_object_extra", "harvest_object_id"),
    "harvest_error_harvest_object_id_idx": ("harvest_object_error", "harvest_object_id"),
}

DELETE_RULES = {"c": "CASCADE", "a": "NO ACTION"}


def _engine() -> sa.engine.Engine:
    return model.meta.engine


def _query(sql: str, **params) -> list:
    with _engine().connect() as conn:
        return list(conn.execute(sa.text(sql), params))


def actual_columns() -> dict[str, list[tuple[str, str, bool]]]:
    rows = _query(
        "SELECT table_name, column_name, data_type, udt_name, is_nullable,"
        " column_default FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = ANY(:t)"
        " ORDER BY table_name, ordinal_position",
        t=list(TABLES),
    )
    result: dict[str, list[tuple[str, str, bool]]] = {}
    for table, column, data_type, udt, nullable, default in rows:
        assert default is None, f"{table}.{column} has a server default"
        kind = udt if data_type == "USER-DEFINED" else data_type
        result.setdefault(table, []).append((column, kind, nullable == "YES"))
    return result


def actual_foreign_keys() -> dict[str, tuple]:
    rows = _query(
        "SELECT c.conname, c.conrelid::regclass::text, a.attname,"
        " c.confrelid::regclass::text, c.confdeltype, c.condeferrable,"
        " c.condeferred FROM pg_constraint c"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
        " WHERE c.contype = 'f' AND c.conrelid::regclass::text = ANY(:t)",
        t=list(TABLES),
    )
    result = {}
    for name, table, column, target, rule, deferrable, deferred in rows:
        assert not deferred, f"{name} must be initially immediate"
        result[name] = (table, column, target, DELETE_RULES[rule], deferrable)
    return result


def actual_indexes() -> dict[str, tuple[str, str]]:
    rows = _query(
        "SELECT i.relname, t.relname, a.attname FROM pg_index x"
        " JOIN pg_class i ON i.oid = x.indexrelid"
        " JOIN pg_class t ON t.oid = x.indrelid"
        " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]"
        " WHERE t.relname = ANY(:t) AND NOT x.indisprimary",
        t=list(TABLES),
    )
    return {name: (table, column) for name, table, column in rows}


def log_level_labels() -> list[str]:
    rows = _query(
        "SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid"
        " WHERE t.typname = 'log_level' ORDER BY e.enumsortorder"
    )
    return [label for (label,) in rows]


def harvest_tables() -> set[str]:
    return set(TABLES) & set(sa.inspect(_engine()).get_table_names())


def primary_keys() -> dict[str, list[str]]:
    inspector = sa.inspect(_engine())
    return {t: inspector.get_pk_constraint(t)["constrained_columns"] for t in TABLES}


@pytest.fixture
def at_head(clean_db):
    """A database migrated to head; left at head for the following tests."""
    yield
    migrations.upgrade()


@pytest.mark.usefixtures("at_head")
class TestSchemaAtHead:
    def test_revision_ids_and_order_match_the_original(self):
        script = migrations.ScriptDirectory.from_config(
            migrations.alembic_config("postgresql://")
        )
        chain = [(r.revision, r.down_revision) for r in script.walk_revisions()]
        assert chain == [("75d650dfd519", "3b4894672727"), ("3b4894672727", None)]
        assert all(
            r.branch_labels == set() and not r.dependencies
            for r in script.walk_revisions()
        )
        assert migrations.current_revision() == "75d650dfd519"

    def test_version_table_is_harvest_alembic_version(self):
        rows = _query("SELECT version_num FROM harvest_alembic_version")
        assert rows == [("75d650dfd519",)]

    def test_columns_types_and_nullability_equal_the_spec(self):
        assert actual_columns() == EXPECTED_COLUMNS

    def test_primary_keys_are_the_id_columns(self):
        assert primary_keys() == {t: ["id"] for t in TABLES}

    def test_foreign_keys_cascade_with_their_default_names(self):
        assert actual_foreign_keys() == EXPECTED_FKS

    def test_indexes_have_the_spec_names(self):
        assert actual_indexes() == EXPECTED_INDEXES

    def test_log_level_enum_labels(self):
        assert log_level_labels() == ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


@pytest.mark.usefixtures("at_head")
class TestUpAndDown:
    def test_downgrade_to_first_revision_removes_cascades_only(self):
        migrations.downgrade("3b4894672727")

        fks = actual_foreign_keys()
        assert set(fks) == set(EXPECTED_FKS)
        assert {rule for (_, _, _, rule, _) in fks.values()} == {"NO ACTION"}
        assert fks["harvest_object_package_id_fkey"][4] is True
        assert actual_columns() == EXPECTED_COLUMNS
        assert migrations.current_revision() == "3b4894672727"

    def test_downgrade_to_base_drops_every_harvest_table_and_the_enum(self):
        migrations.downgrade("base")

        assert harvest_tables() == set()
        assert log_level_labels() == []
        assert migrations.current_revision() is None

    def test_down_and_up_again_gives_the_same_schema(self):
        migrations.downgrade("base")
        migrations.upgrade()

        assert actual_columns() == EXPECTED_COLUMNS
        assert actual_foreign_keys() == EXPECTED_FKS
        assert actual_indexes() == EXPECTED_INDEXES
        assert migrations.current_revision() == "75d650dfd519"

    def test_upgrade_at_head_is_a_no_op(self):
        migrations.upgrade()
        migrations.upgrade()

        assert actual_foreign_keys() == EXPECTED_FKS
        assert migrations.current_revision() == "75d650dfd519"


@pytest.mark.usefixtures("at_head")
def test_database_created_before_migrations_existed_upgrades_cleanly():
    """Pre-1.6 installs created the tables with SQLAlchemy and had no version table."""
    migrations.downgrade("base")
    from ckanext.harvest import model as harvest_model

    tables = [getattr(harvest_model, name + "_table") for name in TABLES]
    with _engine().begin() as conn:
        model.meta.metadata.create_all(conn, tables=tables)
        conn.execute(sa.text("DROP INDEX guid_idx"))
    assert harvest_tables() == set(TABLES)
    assert migrations.current_revision() is None

    migrations.upgrade()

    assert migrations.current_revision() == "75d650dfd519"
    assert actual_foreign_keys() == EXPECTED_FKS
    assert actual_indexes() == EXPECTED_INDEXES
    assert [c[:2] for c in actual_columns()["harvest_object"]] == [
        c[:2] for c in EXPECTED_COLUMNS["harvest_object"]
    ]
