"""Database logging: ``DBLogHandler``, ``ckan.harvest.log_scope``/``log_level``,
``harvest_log_list`` and ``clean_harvest_log`` (config.md "DB logging", Q57, Q58).
"""
from __future__ import annotations

import datetime
import logging
from typing import Any

import pytest
import sqlalchemy as sa
from ckan import model
from ckan import plugins as p
from ckan.plugins import toolkit
from ckan.tests import factories
from ckan.tests.helpers import call_action

from ckanext.harvest.log import DBLogHandler
from ckanext.harvest.model import HarvestJob, HarvestLog, JobStatus, clean_harvest_log
from ckanext.harvest.tests import factories as harvest_factories
from tests.support.marks import harvest_site

PARENT = "ckanext.harvest"
CHILDREN = [
    "plugin", "model", "logic.action.create", "logic.action.delete",
    "logic.action.get", "logic.action.patch", "logic.action.update",
    "logic.validators", "harvesters.base", "harvesters.ckanharvester",
]
ACTIONS = [
    "logic.action.create", "logic.action.delete", "logic.action.get",
    "logic.action.patch", "logic.action.update",
]
HARVESTERS = ["harvesters.base", "harvesters.ckanharvester"]
UNLISTED = "ckanext.harvest.lib.jobs"  # a harvest module no scope names
PROBED = [PARENT] + ["{}.{}".format(PARENT, name) for name in CHILDREN] + [UNLISTED]

SCOPES = {
    1: ["model"] + ACTIONS + ["logic.validators"] + HARVESTERS,
    2: ["model"] + ACTIONS + ["logic.validators"],
    3: ["model"] + ACTIONS,
    4: ACTIONS,
    5: ["model"],
    6: ["plugin"],
    7: HARVESTERS,
}

pytestmark = harvest_site(index=False)


@pytest.fixture(autouse=True)
def restore_harvest_loggers():
    """Undo what configuring DB logging does to the harvest loggers."""
    names = PROBED + ["tests.dblog"]
    saved = {name: logging.getLogger(name).level for name in names}
    yield
    for name in names:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, DBLogHandler):
                logger.removeHandler(handler)
        logger.setLevel(saved[name])


@pytest.fixture
def configure_db_logging(ckan_config, monkeypatch):
    """Start-up path: ``Harvest.configure`` with the given settings."""
    def configure(**settings: Any) -> None:
        for key, value in settings.items():
            monkeypatch.setitem(ckan_config, "ckan.harvest." + key, value)
        p.get_plugin("harvest").configure(ckan_config)

    return configure


@pytest.fixture
def db_logger():
    """A private logger writing to the database through a ``DBLogHandler``."""
    logger = logging.getLogger("tests.dblog")
    logger.setLevel(logging.DEBUG)
    handler = DBLogHandler()
    logger.addHandler(handler)
    yield logger
    logger.removeHandler(handler)


def _committed(sql: str, **params: Any) -> list[Any]:
    """Rows as another connection sees them (i.e. only committed data)."""
    with model.meta.engine.connect() as connection:
        return list(connection.execute(sa.text(sql), params))


def stored_log() -> list[tuple[str, str]]:
    return [
        (row.level, row.content)
        for row in _committed("SELECT level, content FROM harvest_log ORDER BY content")
    ]


def stored_probes() -> list[str]:
    return sorted(
        row.content for row in _committed(
            "SELECT content FROM harvest_log WHERE content LIKE 'probe from %'"
        )
    )


def emit_probes(level: int = logging.INFO) -> None:
    for name in PROBED:
        logging.getLogger(name).log(level, "probe from %s", name)


def probes_of(names: list[str]) -> list[str]:
    return sorted("probe from {}".format(name) for name in names)


def db_handlers(name: str) -> list[DBLogHandler]:
    return [h for h in logging.getLogger(name).handlers if isinstance(h, DBLogHandler)]


def loggers_with_db_handler() -> list[str]:
    return [name for name in PROBED if db_handlers(name)]


# -- DBLogHandler ------------------------------------------------------------------


def test_handler_stores_level_and_formatted_message(db_logger):
    db_logger.warning("disk %s is %d%% full", "sda", 91)

    assert stored_log() == [("WARNING", "disk sda is 91% full")]


@pytest.mark.parametrize(
    "level, name",
    [(logging.DEBUG, "DEBUG"), (logging.INFO, "INFO"), (logging.ERROR, "ERROR"),
     (logging.CRITICAL, "CRITICAL")],
)
def test_handler_stores_the_record_level_name(db_logger, level, name):
    db_logger.log(level, "a %s record", name)

    assert stored_log() == [(name, "a {} record".format(name))]


def test_handler_never_raises_for_a_record_it_cannot_store(db_logger):
    db_logger.log(5, "level 5 is not a harvest_log level")

    assert stored_log() == []


def test_log_call_does_not_commit_pending_application_changes(db_logger):
    model.Session.add(model.Group(name="pending-group", type="group"))
    model.Session.flush()

    db_logger.info("logged while a change is pending")

    assert _committed('SELECT name FROM "group" WHERE name = \'pending-group\'') == []
    assert stored_log() == [("INFO", "logged while a change is pending")]
    # the change is still pending in the application's own transaction
    assert model.Session.query(model.Group).filter_by(name="pending-group").count() == 1
    model.Session.rollback()


def test_rollback_after_logging_discards_the_pending_change_but_keeps_the_log_row(
    db_logger,
):
    model.Session.add(model.Group(name="pending-group", type="group"))
    model.Session.flush()
    db_logger.info("logged before the rollback")

    model.Session.rollback()

    assert model.Session.query(model.Group).filter_by(name="pending-group").count() == 0
    assert _committed('SELECT name FROM "group" WHERE name = \'pending-group\'') == []
    assert stored_log() == [("INFO", "logged before the rollback")]


def test_log_row_is_stored_while_the_application_session_awaits_a_rollback(db_logger):
    user = factories.User()
    model.Session.add(model.User(id=user["id"], name="duplicate-id"))
    with pytest.raises(sa.exc.IntegrityError):
        model.Session.flush()

    db_logger.error("could not save user %s", user["id"])

    assert stored_log() == [("ERROR", "could not save user {}".format(user["id"]))]
    model.Session.rollback()
    assert model.User.get("duplicate-id") is None


# -- ckan.harvest.log_scope --------------------------------------------------------


@pytest.mark.parametrize("scope", sorted(SCOPES))
def test_scope_attaches_the_handler_to_its_loggers_only(configure_db_logging, scope):
    expected = ["{}.{}".format(PARENT, name) for name in SCOPES[scope]]

    configure_db_logging(log_scope=scope)

    emit_probes()
    assert stored_probes() == probes_of(expected)
    assert sorted(loggers_with_db_handler()) == sorted(expected)
    assert all(len(db_handlers(name)) == 1 for name in expected)


def test_scope_zero_stores_every_harvest_record_exactly_once(configure_db_logging):
    configure_db_logging(log_scope=0)

    emit_probes()
    assert stored_probes() == probes_of(PROBED)
    assert loggers_with_db_handler() == [PARENT]
    assert len(db_handlers(PARENT)) == 1


def test_scope_minus_one_stores_nothing(configure_db_logging):
    configure_db_logging(log_scope=-1)

    emit_probes(logging.CRITICAL)
    assert stored_probes() == []
    assert loggers_with_db_handler() == []


@pytest.mark.parametrize("scope", [8, 9, -2, 100])
def test_invalid_scope_logs_a_clear_error_and_leaves_db_logging_off(
    configure_db_logging, caplog, scope
):
    configure_db_logging(log_scope=scope)

    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(
        "ckan.harvest.log_scope" in message and str(scope) in message
        for message in errors
    ), errors
    assert loggers_with_db_handler() == []
    emit_probes(logging.CRITICAL)
    assert stored_probes() == []


@pytest.mark.ckan_config("ckan.harvest.log_scope", "9")
def test_invalid_scope_does_not_stop_the_plugin_from_loading(caplog):
    assert p.plugin_loaded("harvest")
    assert loggers_with_db_handler() == []
    assert any(
        "ckan.harvest.log_scope" in r.getMessage()
        for r in caplog.get_records("setup") if r.levelno == logging.ERROR
    )


@pytest.mark.ckan_config("ckan.harvest.log_scope", "7")
def test_loading_the_plugin_configures_db_logging():
    logging.getLogger("ckanext.harvest.harvesters.base").info("probe from start-up")
    logging.getLogger("ckanext.harvest.model").info("probe from model")

    assert stored_probes() == ["probe from start-up"]
    assert sorted(loggers_with_db_handler()) == sorted(
        "{}.{}".format(PARENT, name) for name in HARVESTERS
    )


@pytest.mark.ckan_config("ckan.harvest.log_scope", "4")
def test_creating_the_app_after_loading_plugins_does_not_stack_handlers(make_app):
    make_app()

    logging.getLogger("ckanext.harvest.logic.action.get").info("probe from get")
    assert stored_probes() == ["probe from get"]
    assert len(db_handlers("ckanext.harvest.logic.action.get")) == 1


def test_reconfiguring_the_same_scope_does_not_stack_handlers(configure_db_logging):
    configure_db_logging(log_scope=1)

    configure_db_logging(log_scope=1)

    logging.getLogger("ckanext.harvest.logic.action.get").info("probe from get")
    assert stored_probes() == ["probe from get"]
    assert all(len(db_handlers(name)) <= 1 for name in PROBED)


def test_reconfiguring_another_scope_replaces_the_handlers(configure_db_logging):
    configure_db_logging(log_scope=4)

    configure_db_logging(log_scope=6)

    emit_probes()
    assert stored_probes() == ["probe from ckanext.harvest.plugin"]
    assert loggers_with_db_handler() == ["ckanext.harvest.plugin"]


def test_reconfiguring_to_minus_one_removes_the_handlers(configure_db_logging):
    configure_db_logging(log_scope=0)

    configure_db_logging(log_scope=-1)

    emit_probes()
    assert stored_probes() == []
    assert loggers_with_db_handler() == []


def test_action_records_are_stored_under_scope_four(configure_db_logging):
    source = harvest_factories.HarvestSource()
    job = HarvestJob.get(
        call_action("harvest_job_create", source_id=source["id"], run=False)["id"]
    )
    job.status = JobStatus.RUNNING.value
    job.save()
    configure_db_logging(log_scope=4)

    result = call_action("harvest_abort_failed_jobs", life_span=3)

    assert result == "Done. Aborted jobs: 0"
    assert ("INFO", "{} running less then 3 days. Skipping...".format(job.id)) in (
        stored_log()
    )


def test_action_records_are_not_stored_under_the_model_scope(configure_db_logging):
    source = harvest_factories.HarvestSource()
    job = HarvestJob.get(
        call_action("harvest_job_create", source_id=source["id"], run=False)["id"]
    )
    job.status = JobStatus.RUNNING.value
    job.save()
    configure_db_logging(log_scope=5)

    call_action("harvest_abort_failed_jobs", life_span=3)

    assert [row for row in stored_log() if "running less then" in row[1]] == []


# -- ckan.harvest.log_level --------------------------------------------------------


LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


@pytest.mark.parametrize(
    "setting, lowest",
    [
        ("debug", "DEBUG"), ("info", "INFO"), ("Warning", "WARNING"),
        ("error", "ERROR"), ("CRITICAL", "CRITICAL"), ("verbose", "DEBUG"),
        ("", "DEBUG"),
    ],
)
def test_log_level_filters_the_stored_records(configure_db_logging, setting, lowest):
    configure_db_logging(log_scope=4, log_level=setting)

    logger = logging.getLogger("ckanext.harvest.logic.action.get")
    for name in LEVELS:
        logger.log(logging.getLevelName(name), "probe from %s", name)
    expected = LEVELS[LEVELS.index(lowest):]
    assert stored_probes() == probes_of(expected)
    assert sorted(level for level, _ in stored_log()) == sorted(expected)
    assert [h.level for h in db_handlers(logger.name)] == [logging.getLevelName(lowest)]


# -- harvest_log_list --------------------------------------------------------------


T0 = datetime.datetime(2024, 3, 1, 12, 0, 0)


@pytest.fixture
def log_rows() -> list[tuple[str, str]]:
    """Five records, one minute apart; returned newest first as (level, content)."""
    rows = [
        ("DEBUG", "first"), ("INFO", "second"), ("ERROR", "third"),
        ("INFO", "fourth"), ("WARNING", "fifth"),
    ]
    for n, (level, content) in enumerate(rows):
        model.Session.add(HarvestLog(
            level=level, content=content, created=T0 + datetime.timedelta(minutes=n)
        ))
    model.Session.commit()
    return list(reversed(rows))


def _pairs(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(record["level"], record["content"]) for record in records]


def test_log_list_returns_content_level_created_newest_first(log_rows):
    records = call_action("harvest_log_list")

    assert _pairs(records) == log_rows
    assert records[0] == {
        "content": "fifth", "level": "WARNING",
        # str(datetime), not ISO "T" format (model.md as_dict)
        "created": "2024-03-01 12:04:00",
    }
    assert len(_committed("SELECT id FROM harvest_log")) == 5


@pytest.mark.parametrize("level", ["info", "INFO", "Info"])
def test_log_list_filters_by_level_whatever_its_case(log_rows, level):
    records = call_action("harvest_log_list", level=level)

    assert _pairs(records) == [("INFO", "fourth"), ("INFO", "second")]


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"limit": 2}, ["fifth", "fourth"]),
        ({"limit": "2"}, ["fifth", "fourth"]),
        ({"limit": 2, "offset": 1}, ["fourth", "third"]),
        ({"per_page": 3, "limit": 1}, ["fifth", "fourth", "third"]),
        ({"per_page": 0, "limit": 1}, ["fifth"]),
        ({"per_page": "", "limit": 1}, ["fifth"]),
        ({"offset": 3}, ["second", "first"]),
        ({"offset": "later"}, ["fifth", "fourth", "third", "second", "first"]),
        ({"offset": 5}, []),
        ({"level": "error", "limit": 5}, ["third"]),
    ],
)
def test_log_list_paginates(log_rows, params, expected):
    records = call_action("harvest_log_list", **params)

    assert [record["content"] for record in records] == expected


@pytest.mark.parametrize("params", [{}, {"limit": "many"}, {"limit": None}])
def test_log_list_returns_at_most_a_hundred_by_default(params):
    model.Session.execute(
        sa.insert(HarvestLog.__table__),
        [
            {"level": "INFO", "content": "row {:03d}".format(n),
             "created": T0 + datetime.timedelta(seconds=n)}
            for n in range(101)
        ],
    )
    model.Session.commit()

    records = call_action("harvest_log_list", **params)

    assert len(records) == 100
    assert records[0]["content"] == "row 100"
    assert records[-1]["content"] == "row 001"


def test_log_list_is_allowed_to_a_sysadmin(log_rows):
    sysadmin = factories.Sysadmin()

    records = call_action(
        "harvest_log_list", context={"user": sysadmin["name"], "ignore_auth": False}
    )

    assert _pairs(records) == log_rows


@pytest.mark.parametrize("who", ["user", "anonymous"])
def test_log_list_is_refused_to_everyone_else(log_rows, who):
    user = factories.User()["name"] if who == "user" else ""

    with pytest.raises(toolkit.NotAuthorized):
        call_action("harvest_log_list", context={"user": user, "ignore_auth": False})


# -- clean_harvest_log and ckan.harvest.log_timeframe -----------------------------


def test_clean_harvest_log_deletes_records_up_to_the_cut_off(caplog):
    cut_off = T0
    for content, created in [
        ("old", cut_off - datetime.timedelta(days=1)),
        ("at cut-off", cut_off),
        ("new", cut_off + datetime.timedelta(seconds=1)),
    ]:
        model.Session.add(HarvestLog(level="INFO", content=content, created=created))
    model.Session.commit()
    caplog.set_level(logging.INFO, logger="ckanext.harvest")

    clean_harvest_log(cut_off)

    assert stored_log() == [("INFO", "new")]
    assert "Harvest log table clean-up finished successfully" in [
        r.getMessage() for r in caplog.records
    ]


@pytest.mark.parametrize(
    "key, default",
    [("log_timeframe", 30), ("log_scope", -1), ("log_level", "debug")],
)
def test_db_log_settings_are_declared_with_their_defaults(ckan_config, key, default):
    assert ckan_config["ckan.harvest." + key] == default
