"""The health of the harvesting: sources, queues, consumers and recent jobs.

Feeds the sysadmins' page ``/harvest/health`` (``harvest_health_show``) and,
for the figures they share, the Prometheus metrics (:mod:`.metrics`).

Definitions (also in ``docs/health.rst``):

* a finished job *succeeded* when it has no gather error (a timeout is one)
  and no object in ``ERROR``, as for the error e-mail; *consecutive failures*
  counts the source's newest finished jobs that did not, up to
  :data:`HISTORY_JOBS`;
* *last duration*: from the gather start (else creation) of the newest
  finished job to its end;
* *waiting* jobs are ``New``: created, not yet sent to the gather queue;
* the *state* of a source, most urgent first: ``stalled`` (its running job
  is, see :mod:`.stalls`), ``running``, ``waiting``, ``failing`` (its newest
  finished job failed), ``inactive``, ``never run``, ``ok``.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
from typing import Any, Mapping, Optional

import sqlalchemy as sa
from ckan import model

from ckanext.harvest import mq
from ckanext.harvest.lib import stalls
from ckanext.harvest.model import JobStatus, ObjectState, utcnow

log = logging.getLogger(__name__)

__all__ = [
    "BadHealthQuery",
    "HISTORY_JOBS",
    "SORT_KEYS",
    "SOURCE_STATES",
    "TIMELINE_HOURS",
    "filter_and_sort",
    "job_counts",
    "object_counts",
    "queue_stats",
    "source_rows",
    "timeline",
    "timeline_lanes",
]

#: Finished jobs per source looked at for the consecutive failures.
HISTORY_JOBS = 50
#: The span of the job timeline.
TIMELINE_HOURS = 24
#: At most this many jobs are drawn on the timeline (the newest).
TIMELINE_JOBS = 300
#: The states of a source, most urgent first.
SOURCE_STATES = ("stalled", "running", "waiting", "failing", "inactive", "never run", "ok")

# Which of the jobs of ``jobs`` (a CTE) failed: set-based, one pass over the
# gather errors and the ERROR objects (the tables have no index on the job id).
_FAILED = """
    failed_jobs AS (
        SELECT harvest_job_id AS id FROM harvest_gather_error
        WHERE harvest_job_id IN (SELECT id FROM jobs)
        UNION
        SELECT harvest_job_id FROM harvest_object
        WHERE state = :error AND harvest_job_id IN (SELECT id FROM jobs))
"""

_FINISHED_JOBS = sa.text("""
    WITH jobs AS (
        SELECT id, source_id, created, gather_started, finished
        FROM (SELECT id, source_id, created, gather_started, finished,
                     row_number() OVER (PARTITION BY source_id
                                        ORDER BY created DESC) AS n
              FROM harvest_job WHERE status = :finished) AS numbered
        WHERE n <= :history),
""" + _FAILED + """
    SELECT j.*, f.id IS NOT NULL AS failed
    FROM jobs j LEFT JOIN failed_jobs f ON f.id = j.id
    ORDER BY j.source_id, j.created DESC
""")

_SOURCES = sa.text("""
    WITH open_jobs AS (
        SELECT source_id,
               (array_agg(id ORDER BY created DESC)
                    FILTER (WHERE status = :running))[1] AS running_job,
               bool_or(status = :new) AS waiting
        FROM harvest_job WHERE status IN (:running, :new)
        GROUP BY source_id)
    SELECT s.id, p.name, coalesce(nullif(p.title, ''), s.title, p.name) AS title,
           s.active, s.frequency, s.next_run, o.running_job,
           coalesce(o.waiting, false) AS waiting
    FROM harvest_source s JOIN package p ON p.id = s.id
    LEFT JOIN open_jobs o ON o.source_id = s.id
    WHERE p.state = 'active'
""")

_TIMELINE = sa.text("""
    WITH jobs AS (
        SELECT j.id, j.source_id, p.name, j.status, j.created, j.gather_started,
               j.finished
        FROM harvest_job j JOIN package p ON p.id = j.source_id
        WHERE j.finished IS NULL OR j.finished >= :since
        ORDER BY coalesce(j.gather_started, j.created) DESC
        LIMIT :limit),
""" + _FAILED + """
    SELECT j.*, f.id IS NOT NULL AS failed
    FROM jobs j LEFT JOIN failed_jobs f ON f.id = j.id
    ORDER BY coalesce(j.gather_started, j.created) DESC
""")


@dataclasses.dataclass
class SourceHealth:
    """One row of the health page."""

    id: str
    name: str
    title: str
    active: bool
    frequency: Optional[str]
    next_run: Optional[datetime.datetime]
    last_success: Optional[datetime.datetime] = None
    consecutive_failures: int = 0
    last_duration_seconds: Optional[float] = None
    running_job: Optional[str] = None
    waiting: bool = False
    stalled: bool = False
    finished_jobs: int = 0
    last_failed: bool = False

    @property
    def state(self) -> str:
        """The most urgent of :data:`SOURCE_STATES` that applies."""
        if self.stalled:
            return "stalled"
        if self.running_job:
            return "running"
        if self.waiting:
            return "waiting"
        if self.last_failed:
            return "failing"
        if not self.active:
            return "inactive"
        return "never run" if not self.finished_jobs else "ok"

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly (datetimes as ISO text)."""
        data = dataclasses.asdict(self)
        for key in ("next_run", "last_success"):
            data[key] = data[key].isoformat() if data[key] else None
        data["state"] = self.state
        return data


def _history(rows: list[Any]) -> dict[str, dict[str, Any]]:
    """Per source: finished jobs, last success, consecutive failures, last duration."""
    history: dict[str, dict[str, Any]] = {}
    for row in rows:  # newest first within each source
        entry = history.setdefault(row.source_id, {"jobs": 0, "failures": 0,
                                                   "success": None, "duration": None,
                                                   "last_failed": bool(row.failed)})
        if entry["jobs"] == 0 and row.finished is not None:
            start = row.gather_started or row.created
            entry["duration"] = (row.finished - start).total_seconds() if start else None
        entry["jobs"] += 1
        if row.failed and entry["success"] is None:
            entry["failures"] += 1
        elif not row.failed and entry["success"] is None:
            entry["success"] = row.finished
    return history


def source_rows() -> list[SourceHealth]:
    """One :class:`SourceHealth` per source (deleted source datasets left out)."""
    session = model.Session
    history = _history(list(session.execute(_FINISHED_JOBS, {
        "error": ObjectState.ERROR.value, "finished": JobStatus.FINISHED.value,
        "history": HISTORY_JOBS})))
    rows = []
    for row in session.execute(_SOURCES, {"running": JobStatus.RUNNING.value,
                                          "new": JobStatus.NEW.value}):
        entry = history.get(row.id, {})
        rows.append(SourceHealth(
            id=row.id, name=row.name, title=row.title or row.name,
            active=bool(row.active), frequency=row.frequency, next_run=row.next_run,
            last_success=entry.get("success"),
            consecutive_failures=entry.get("failures", 0),
            last_duration_seconds=entry.get("duration"),
            running_job=row.running_job, waiting=bool(row.waiting),
            finished_jobs=entry.get("jobs", 0),
            last_failed=entry.get("last_failed", False),
        ))
    running = {row.running_job: row for row in rows if row.running_job}
    for job_id, state in stalls.states_of(running).items():
        running[job_id].stalled = state.stalled
    return rows


def job_counts() -> dict[str, int]:
    """How many jobs there are in each status (every status, 0 included)."""
    counts = {status.value: 0 for status in JobStatus}
    for status, count in model.Session.execute(
            sa.text("SELECT status, count(*) FROM harvest_job GROUP BY status")):
        counts[status] = int(count)
    return counts


def object_counts() -> dict[str, int]:
    """How many objects there are in each state (every state, 0 included)."""
    counts = {state.value: 0 for state in ObjectState}
    for state, count in model.Session.execute(
            sa.text("SELECT state, count(*) FROM harvest_object GROUP BY state")):
        counts[str(state)] = int(count)
    return counts


def queue_stats(config: Mapping[str, Any]) -> dict[str, Optional[mq.QueueStats]]:
    """Depth and live consumers of the gather and fetch queues (None: the
    broker cannot be reached, logged)."""
    site = mq.site_id(config)
    stats: dict[str, Optional[mq.QueueStats]] = {}
    for name, spec in (("gather", mq.gather_spec(site)), ("fetch", mq.fetch_spec(site))):
        try:
            with mq.open_queue(config, spec) as queue:
                stats[name] = queue.stats()
        except mq.BrokerError as exc:
            log.warning("Queue %s: cannot read its figures: %s", spec.name, exc)
            stats[name] = None
    return stats


def _timeline_state(row: Any, stalled: set[str]) -> str:
    if row.id in stalled:
        return "stalled"
    if row.status == JobStatus.NEW.value:
        return "waiting"
    if row.status == JobStatus.RUNNING.value:
        return "running"
    return "failed" if row.failed else "ok"


def timeline(now: Optional[datetime.datetime] = None) -> dict[str, Any]:
    """The jobs of the last :data:`TIMELINE_HOURS` hours, for the chart.

    :returns: ``{"start", "end", "jobs": [{"id", "source_id", "source",
        "state", "start", "end"}]}`` (naive UTC datetimes; a job still open
        ends now)
    """
    end = now or utcnow()
    start = end - datetime.timedelta(hours=TIMELINE_HOURS)
    rows = list(model.Session.execute(_TIMELINE, {
        "error": ObjectState.ERROR.value, "since": start, "limit": TIMELINE_JOBS}))
    open_ids = [row.id for row in rows if row.status == JobStatus.RUNNING.value]
    stalled = {job_id for job_id, state in stalls.states_of(open_ids).items()
               if state.stalled}
    jobs = [{
        "id": row.id, "source_id": row.source_id, "source": row.name,
        "state": _timeline_state(row, stalled),
        "start": max(start, row.gather_started or row.created or start),
        "end": row.finished or end,
    } for row in rows]
    return {"start": start, "end": end, "jobs": jobs}


# -- the page: filtering, sorting, the timeline's geometry ---------------------------

#: The sortable columns of the page and the key of each.
SORT_KEYS = ("name", "last_success", "consecutive_failures", "last_duration_seconds",
             "next_run", "state")


class BadHealthQuery(ValueError):
    """An unknown sort column, direction or state in the page's query."""


def _sort_value(row: dict[str, Any], key: str) -> tuple[Any, ...]:
    value = row.get(key)
    if key == "state":
        return (SOURCE_STATES.index(value),)
    # Missing values go last, whatever the direction.
    return (value is None, value if value is not None else 0)


def filter_and_sort(rows: list[dict[str, Any]], text: str = "", state: str = "",
                    sort: str = "state", direction: str = "asc") -> list[dict[str, Any]]:
    """The rows of ``harvest_health_show`` that match, in the order asked for.

    :param text: keep the sources whose name or title contains it (any case)
    :param state: keep the sources in this state (one of :data:`SOURCE_STATES`)
    :param sort: one of :data:`SORT_KEYS`
    :param direction: ``asc`` or ``desc``
    :raises BadHealthQuery: an unknown sort, direction or state
    """
    if sort not in SORT_KEYS:
        raise BadHealthQuery("Unknown sort column {!r}: use one of {}".format(
            sort, ", ".join(SORT_KEYS)))
    if direction not in ("asc", "desc"):
        raise BadHealthQuery("Unknown sort direction {!r}: use asc or desc".format(direction))
    if state and state not in SOURCE_STATES:
        raise BadHealthQuery("Unknown state {!r}: use one of {}".format(
            state, ", ".join(SOURCE_STATES)))
    needle = text.strip().lower()
    kept = [row for row in rows
            if (not needle or needle in row["name"].lower()
                or needle in (row["title"] or "").lower())
            and (not state or row["state"] == state)]
    present = [row for row in kept if row.get(sort) is not None]
    missing = [row for row in kept if row.get(sort) is None]
    present.sort(key=lambda row: (_sort_value(row, sort), row["name"]),
                 reverse=direction == "desc")
    return present + sorted(missing, key=lambda row: row["name"])


def timeline_lanes(timeline: dict[str, Any]) -> list[dict[str, Any]]:
    """The timeline's jobs grouped by source, placed in percent of its span.

    :param timeline: ``harvest_health_show``'s ``timeline`` (ISO datetimes)
    :returns: ``[{"source", "jobs": [{..., "left", "width"}]}]``, the sources
        in the order of their newest job
    """
    start = datetime.datetime.fromisoformat(timeline["start"])
    end = datetime.datetime.fromisoformat(timeline["end"])
    span = max((end - start).total_seconds(), 1.0)
    lanes: dict[str, list[dict[str, Any]]] = {}
    for job in timeline["jobs"]:
        begins = datetime.datetime.fromisoformat(job["start"])
        ends = datetime.datetime.fromisoformat(job["end"])
        left = 100.0 * max(0.0, (begins - start).total_seconds()) / span
        width = 100.0 * max(0.0, (ends - begins).total_seconds()) / span
        lanes.setdefault(job["source"], []).append(
            dict(job, left=round(left, 3), width=round(max(width, 0.25), 3)))
    return [{"source": source, "jobs": jobs} for source, jobs in lanes.items()]
