"""The exact legacy strings stored in the harvest tables, named once."""
from __future__ import annotations

import enum


class JobStatus(str, enum.Enum):
    """``harvest_job.status``."""

    NEW = "New"
    RUNNING = "Running"
    FINISHED = "Finished"
    ABORTED = "Aborted"


class ObjectState(str, enum.Enum):
    """``harvest_object.state``."""

    WAITING = "WAITING"
    FETCH = "FETCH"
    IMPORT = "IMPORT"
    COMPLETE = "COMPLETE"
    ERROR = "ERROR"


class ReportStatus(str, enum.Enum):
    """``harvest_object.report_status`` (NULL until the object is processed)."""

    ADDED = "added"
    UPDATED = "updated"
    NOT_MODIFIED = "not modified"
    DELETED = "deleted"
    ERRORED = "errored"


class ErrorStage(str, enum.Enum):
    """``harvest_object_error.stage`` of the errors the framework records.

    Harvesters may record other stages (e.g. ``Validation``): the column is free
    text.
    """

    FETCH = "Fetch"
    IMPORT = "Import"


class Frequency(str, enum.Enum):
    """``harvest_source.frequency``, in the order forms list them."""

    MANUAL = "MANUAL"
    MONTHLY = "MONTHLY"
    WEEKLY = "WEEKLY"
    BIWEEKLY = "BIWEEKLY"
    DAILY = "DAILY"
    ALWAYS = "ALWAYS"


class LogLevel(str, enum.Enum):
    """Labels of the PostgreSQL enum type ``log_level`` (``harvest_log.level``)."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


UPDATE_FREQUENCIES: list[str] = [f.value for f in Frequency]
