"""Solr date parsing, formatting and date math (``NOW-1DAY``, ``/DAY``)."""
from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from .errors import SolrError

_BASE_RE = re.compile(
    r"^(NOW|[+-]?\d{4,}-\d{2}-\d{2}"
    r"(?:T\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?)?(?:Z|[+-]\d{2}:\d{2})?)",
    re.IGNORECASE)
_OP_RE = re.compile(r"(/)([A-Z]+)|([+-])(\d+)([A-Z]+)", re.IGNORECASE)

_UNITS = {
    "YEAR": "year", "YEARS": "year", "MONTH": "month", "MONTHS": "month",
    "DAY": "day", "DAYS": "day", "DATE": "day", "HOUR": "hour",
    "HOURS": "hour", "MINUTE": "minute", "MINUTES": "minute",
    "SECOND": "second", "SECONDS": "second", "MILLI": "milli",
    "MILLIS": "milli", "MILLISECOND": "milli", "MILLISECONDS": "milli",
}
_ROUND_ORDER = ["year", "month", "day", "hour", "minute", "second", "milli"]


def utc_now() -> datetime:
    """Current time, UTC, millisecond precision."""
    return truncate_millis(datetime.now(timezone.utc))


def truncate_millis(value: datetime) -> datetime:
    """Drop sub-millisecond precision like Solr's date fields do."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def format_date(value: datetime) -> str:
    """Format like Solr: ``2024-01-02T03:04:05Z`` or ``...05.120Z``."""
    value = value.astimezone(timezone.utc)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += ".%03d" % (value.microsecond // 1000)
    return text + "Z"


def parse_date(text: str, now: datetime | None = None) -> datetime:
    """Parse an ISO date or a date-math expression into an aware datetime."""
    text = text.strip()
    match = _BASE_RE.match(text)
    if not match:
        raise SolrError(f"Invalid Date String:'{text}'")
    base = match.group(1)
    if base.upper() == "NOW":
        value = now or utc_now()
    else:
        value = _parse_iso(base, text)
    return apply_math(value, text[match.end():], text)


def _parse_iso(base: str, original: str) -> datetime:
    """Parse the ISO-8601 part of a date string."""
    try:
        value = datetime.fromisoformat(base.replace("z", "Z"))
    except ValueError:
        raise SolrError(f"Invalid Date String:'{original}'") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return truncate_millis(value.astimezone(timezone.utc))


def apply_math(value: datetime, math: str, original: str) -> datetime:
    """Apply a sequence of ``/UNIT`` and ``(+|-)NUNIT`` operations."""
    pos = 0
    while pos < len(math):
        op = _OP_RE.match(math, pos)
        if not op:
            raise SolrError(f"Invalid Date Math String:'{original}'")
        if op.group(1):
            value = round_down(value, _unit(op.group(2), original))
        else:
            amount = int(op.group(4)) * (1 if op.group(3) == "+" else -1)
            value = add_units(value, amount, _unit(op.group(5), original))
        pos = op.end()
    return value


def _unit(name: str, original: str) -> str:
    """Normalise a date-math unit name."""
    unit = _UNITS.get(name.upper())
    if unit is None:
        raise SolrError(f"Invalid Date Math String:'{original}'")
    return unit


def round_down(value: datetime, unit: str) -> datetime:
    """Round ``value`` down to the start of ``unit``."""
    index = _ROUND_ORDER.index(unit)
    resets = {"month": 1, "day": 1, "hour": 0, "minute": 0, "second": 0}
    changes: dict[str, Any] = {k: v for k, v in resets.items()
               if _ROUND_ORDER.index(k) > index}
    if index < _ROUND_ORDER.index("milli"):
        changes["microsecond"] = 0
    return value.replace(**changes)


def add_units(value: datetime, amount: int, unit: str) -> datetime:
    """Add ``amount`` units to ``value`` (months/years clamp the day)."""
    if unit in ("year", "month"):
        months = value.month - 1 + amount * (12 if unit == "year" else 1)
        year, month = value.year + months // 12, months % 12 + 1
        day = min(value.day, calendar.monthrange(year, month)[1])
        return value.replace(year=year, month=month, day=day)
    seconds = {"day": 86400, "hour": 3600, "minute": 60, "second": 1,
               "milli": 0.001}[unit]
    return value + timedelta(seconds=seconds * amount)
