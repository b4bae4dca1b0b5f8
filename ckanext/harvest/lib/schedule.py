"""Cron schedules of harvest sources (opt-in, beside the original ``frequency``).

A source may carry a ``schedule``: a five-field cron expression (minute, hour,
day of month, month, day of week), stored as an extra of its dataset, so that
no table changes and the ``frequency`` column keeps its meaning. A source with
a schedule is started by its schedule; one without is started by its
frequency, exactly as before.

The expression is read in the time zone ``ckan.harvest.timezone`` and
evaluated by `cronsim <https://pypi.org/project/cronsim/>`_, which treats
daylight saving time as cron does: a time skipped when the clocks go forward
runs when the gap ends (``30 2 * * *`` at 03:00 that night), and a time that
occurs twice when they go back runs once, at its first occurrence (wildcard
hours, as in ``0 * * * *``, run in both hours).

``harvest_source.next_run`` holds the next due time (naive UTC, like every
timestamp of the tables). ``ckan harvester run`` starts the job of a source
whose due time has passed, once, and moves ``next_run`` to the first due time
after *now*: due times missed while nothing called ``run`` (downtime) give one
job, not one per missed time.
"""
from __future__ import annotations

import datetime
import logging
from typing import Any, Mapping, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ckan.plugins import toolkit
from cronsim import CronSim, CronSimError

from ckanext.harvest import options

log = logging.getLogger(__name__)

#: The key of the source dataset's extra, and of the field of the API and form.
EXTRA_KEY = "schedule"
_FIELDS = 5
_FIELD_NAMES = "minute hour day-of-month month day-of-week"
_UTC = datetime.timezone.utc


class ScheduleError(ValueError):
    """An invalid cron expression or time zone (the message says which, and why)."""


def normalize(expression: Any) -> str:
    """A valid expression with single spaces between its fields.

    :raises ScheduleError: not five fields, or a field cron does not accept
    """
    if not isinstance(expression, str):
        raise ScheduleError("The schedule must be a cron expression (text)")
    fields = expression.split()
    if len(fields) != _FIELDS:
        raise ScheduleError(
            "Invalid schedule {!r}: a cron expression has 5 fields ({}), e.g. "
            "'0 3 * * *' for 03:00 every day; this one has {}".format(
                expression, _FIELD_NAMES, len(fields)))
    text = " ".join(fields)
    try:
        next(CronSim(text, datetime.datetime(2000, 1, 1, tzinfo=_UTC)))
    except (CronSimError, StopIteration) as e:
        raise ScheduleError("Invalid schedule {!r}: {}".format(text, e)) from None
    return text


def timezone_name(config: Optional[Mapping[str, Any]] = None) -> str:
    """``ckan.harvest.timezone`` as configured (``UTC`` by default)."""
    settings = toolkit.config if config is None else config
    return str(options.value(settings, options.TIMEZONE)).strip()


def timezone(config: Optional[Mapping[str, Any]] = None) -> ZoneInfo:
    """The time zone the schedules are read in.

    :raises ScheduleError: ``ckan.harvest.timezone`` names no known zone
    """
    name = timezone_name(config)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            "Unknown time zone {} = {!r}: use an IANA name such as UTC or "
            "Europe/Paris".format(options.TIMEZONE, name)) from None


def upcoming(expression: str, after: datetime.datetime, count: int,
             zone: ZoneInfo) -> list[datetime.datetime]:
    """The ``count`` due times following ``after`` (naive UTC), in ``zone``."""
    times = CronSim(expression, after.replace(tzinfo=_UTC).astimezone(zone))
    return [next(times) for _ in range(count)]


def next_due(expression: str, after: datetime.datetime, zone: ZoneInfo) -> datetime.datetime:
    """The first due time strictly after ``after``, both naive UTC."""
    due = upcoming(expression, after, 1, zone)[0]
    return due.astimezone(_UTC).replace(tzinfo=None)


def next_run_on_save(expression: str, next_run: Optional[datetime.datetime],
                     now: datetime.datetime, zone: ZoneInfo) -> datetime.datetime:
    """``next_run`` of a source saved with this schedule.

    A due time of this schedule that has passed without a ``run`` since (the
    latest one) is kept, so that editing a source does not skip its pending
    run; anything else (no schedule before, another one, a stale frequency
    time) gives the next due time after ``now``.
    """
    if next_run is not None and next_run <= now:
        is_due_time = next_due(expression, next_run - datetime.timedelta(minutes=1),
                               zone) == next_run
        if is_due_time and next_due(expression, next_run, zone) > now:
            return next_run
    return next_due(expression, now, zone)


def source_schedule(package: Any) -> Optional[str]:
    """The schedule stored on a source dataset (``model.Package``), if any."""
    if package is None:
        return None
    value = (package.extras or {}).get(EXTRA_KEY)
    return (value.strip() or None) if isinstance(value, str) else None


def update_next_run(source: Any, data: Mapping[str, Any], now: datetime.datetime) -> None:
    """Set the ``next_run`` of a ``harvest_source`` row saved with the
    (validated) source ``data``; a source without a schedule is left alone."""
    expression = data.get(EXTRA_KEY)
    if expression:
        source.next_run = next_run_on_save(expression, source.next_run, now, timezone())


def preview(expression: Any, now: datetime.datetime, count: int = 3) -> dict[str, Any]:
    """The next ``count`` due times of an expression, for the source form.

    :returns: ``{"schedule", "timezone", "next_runs": [ISO 8601 local times]}``
    :raises ScheduleError: invalid expression or time zone
    """
    text = normalize(expression)
    zone = timezone()
    times = upcoming(text, now, count, zone)
    return {"schedule": text, "timezone": zone.key,
            "next_runs": [time.isoformat() for time in times]}
