"""Attach the database log handler to the harvest loggers (``ckan.harvest.log_scope``)."""
from __future__ import annotations

import logging
from typing import Any, Mapping

from ckanext.harvest import options
from ckanext.harvest.log import DBLogHandler
from ckanext.harvest.model.enums import LogLevel

log = logging.getLogger(__name__)

PARENT = "ckanext.harvest"
_ACTIONS = [
    "logic.action.create", "logic.action.delete", "logic.action.get",
    "logic.action.patch", "logic.action.update",
]
_HARVESTERS = ["harvesters.base", "harvesters.ckanharvester"]
_VALIDATORS = ["logic.validators"]

# scope -> child loggers of ckanext.harvest (scope 0 means the parent logger).
SCOPES: dict[int, list[str]] = {
    1: ["model"] + _ACTIONS + _VALIDATORS + _HARVESTERS,
    2: ["model"] + _ACTIONS + _VALIDATORS,
    3: ["model"] + _ACTIONS,
    4: _ACTIONS,
    5: ["model"],
    6: ["plugin"],
    7: _HARVESTERS,
}
LEVELS = tuple(level.value for level in LogLevel)


def _level(config: Mapping[str, Any]) -> str:
    level = str(options.value(config, options.LOG_LEVEL)).upper()
    return level if level in LEVELS else "DEBUG"


def logger_names(scope: int) -> list[str]:
    """The loggers a scope covers; scope 0 is the parent alone (no duplicates).

    :raises ValueError: for an unknown scope
    """
    if scope == 0:
        return [PARENT]
    if scope not in SCOPES:
        raise ValueError(
            "Invalid ckan.harvest.log_scope {}: use -1 (off) or 0 to 7".format(scope)
        )
    return ["{}.{}".format(PARENT, name) for name in SCOPES[scope]]


def _remove_db_handlers(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        if isinstance(handler, DBLogHandler):
            logger.removeHandler(handler)


def configure_db_logger(config: Mapping[str, Any]) -> list[str]:
    """Attach a ``DBLogHandler`` to the loggers selected by the configuration.

    Reconfiguring replaces the handlers attached before. An invalid scope is
    reported in the log and leaves database logging off.

    :returns: the names of the loggers the handler was attached to
    """
    scope = int(options.value(config, options.LOG_SCOPE))
    every = [PARENT] + ["{}.{}".format(PARENT, n) for n in SCOPES[1] + ["plugin"]]
    for name in every:
        _remove_db_handlers(logging.getLogger(name))
    if scope == -1:
        return []
    try:
        names = logger_names(scope)
    except ValueError as error:
        log.error("%s; database logging stays off", error)
        return []
    level = _level(config)
    for name in names:
        logger = logging.getLogger(name)
        logger.addHandler(DBLogHandler(level=level))
    return names
