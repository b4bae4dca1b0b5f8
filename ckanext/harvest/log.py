"""``DBLogHandler``: stores log records in the ``harvest_log`` table.

Referenced by class path from ini logging configuration
(``class = ckanext.harvest.log.DBLogHandler``). Records are written through a
session of the handler's own, so logging never commits (or rolls back) the
application's pending changes.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import Any, Iterator, Optional

from ckan.model import meta
from sqlalchemy.orm import Session

from ckanext.harvest.model import HarvestLog

_SUPPRESSED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "ckanext_harvest_db_log_suppressed", default=False)


@contextlib.contextmanager
def database_log_suppressed() -> Iterator[None]:
    """No ``harvest_log`` row is written in this context (a dry-run preview)."""
    token = _SUPPRESSED.set(True)
    try:
        yield
    finally:
        _SUPPRESSED.reset(token)


class DBLogHandler(logging.Handler):
    """A logging handler writing each record as a ``harvest_log`` row."""

    def __init__(self, level: Any = logging.NOTSET) -> None:
        super().__init__(level)
        self._emitting = False

    def _engine(self) -> Optional[Any]:
        return getattr(meta, "engine", None)

    def emit(self, record: logging.LogRecord) -> None:
        """Store the record; failures are reported on stderr, never raised."""
        engine = self._engine()
        if engine is None or self._emitting or _SUPPRESSED.get():
            return
        self._emitting = True
        try:
            with Session(bind=engine) as session:
                session.add(
                    HarvestLog(level=record.levelname, content=self.format(record))
                )
                session.commit()
        except Exception:  # noqa: BLE001 - logging must never break the caller
            self.handleError(record)
        finally:
            self._emitting = False
