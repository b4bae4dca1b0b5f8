"""Stalled jobs: a ``Running`` job whose objects stopped moving.

``ckan harvester run`` (:func:`check_jobs`, called by ``harvest_jobs_run``)
looks at each running job's objects: how many there are in each state. When
that picture has not changed for ``ckan.harvest.stall_minutes``, the job is
*stalled*: a consumer is stuck or gone, or the broker lost its messages. The
job pages, the source page and the health page say so, and the source's
notification recipients get one e-mail per stall (opt-in, with the existing
``ckan.harvest.status_mail.*`` options), before ``ckan.harvest.timeout``
ends the job.

The job table has no room for this and the schema must not change (nor may
``harvest_job.status`` take a new value), so the record lives in CKAN's own
Redis (``ckan.redis.url``), a hash at :func:`stall_key`:

``signature``
    the object counts per state last seen (JSON);
``moved``
    when the signature last changed (epoch seconds); when a job is first
    seen, its last action time (:meth:`HarvestJob.get_last_action_time`);
``stalled``
    when the job was marked stalled (absent while it moves);
``mailed``
    ``1`` once the e-mail of the current stall went out.

A job that moves again loses ``stalled`` and ``mailed``: its next stall is
mailed again. A gathered job whose objects are all done is not stalled: it
only waits for ``harvester run`` to close it. Records expire
:data:`RECORD_TTL_SECONDS` after the last check; a finished job's record is
ignored.
"""
from __future__ import annotations

import calendar
import dataclasses
import datetime
import html
import json
import logging
from typing import Any, Iterable, Mapping, Optional

from ckan.lib.redis import connect_to_redis
from ckan.plugins import toolkit
from ckan.types import Context
from redis.exceptions import RedisError

from ckanext.harvest import options
from ckanext.harvest.lib import mail, progress
from ckanext.harvest.model import HarvestJob, JobStatus, utcnow

log = logging.getLogger(__name__)

__all__ = [
    "RECORD_TTL_SECONDS",
    "StallState",
    "check_job",
    "check_jobs",
    "epoch",
    "stall_key",
    "stall_minutes",
    "states_of",
]

#: How long a stall record outlives its last check (7 days).
RECORD_TTL_SECONDS = 7 * 24 * 3600

_SUBJECT = "{} - Harvesting Job - Stall Notification"
_TEMPLATE = "emails/stall_email.txt"


@dataclasses.dataclass(frozen=True)
class StallState:
    """What the last check found about a job.

    :param last_moved: when its objects last moved (naive UTC)
    :param stalled_since: when it was marked stalled (None: it moves)
    :param mailed: whether the e-mail of this stall went out
    """

    job_id: str
    last_moved: Optional[datetime.datetime]
    stalled_since: Optional[datetime.datetime]
    mailed: bool

    @property
    def stalled(self) -> bool:
        """Whether the job is stalled."""
        return self.stalled_since is not None


def stall_minutes(config: Optional[Mapping[str, Any]] = None) -> float:
    """``ckan.harvest.stall_minutes``; 0 means stalls are not detected."""
    settings = toolkit.config if config is None else config
    # No declared type: CKAN 2.11 knows no float options (a fraction is allowed).
    raw = options.value(settings, options.STALL_MINUTES)
    try:
        return max(0.0, float(raw or 0))
    except (TypeError, ValueError):
        raise ValueError("%s must be a number of minutes (got %r)"
                         % (options.STALL_MINUTES, raw)) from None


def stall_key(job_id: str) -> str:
    """The Redis key of a job's stall record (prefixed with ``ckan.site_id``)."""
    return "%s:ckanext-harvest:stall:%s" % (toolkit.config.get(options.SITE_ID), job_id)


def epoch(moment: datetime.datetime) -> float:
    """Unix time of a naive UTC datetime."""
    return calendar.timegm(moment.timetuple()) + moment.microsecond / 1e6


def _moment(value: Any) -> Optional[datetime.datetime]:
    if value in (None, b"", ""):
        return None
    return datetime.datetime.fromtimestamp(float(value), datetime.timezone.utc).replace(
        tzinfo=None)


def _text(value: Any) -> Optional[str]:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _state(job_id: str, record: Mapping[Any, Any]) -> StallState:
    fields = {_text(key): _text(value) for key, value in record.items()}
    return StallState(job_id=job_id, last_moved=_moment(fields.get("moved")),
                      stalled_since=_moment(fields.get("stalled")),
                      mailed=fields.get("mailed") == "1")


def states_of(job_ids: Iterable[str]) -> dict[str, StallState]:
    """The recorded stall state of each job that has a record (one round trip)."""
    ids = list(job_ids)
    if not ids:
        return {}
    pipe = connect_to_redis().pipeline(transaction=False)
    for job_id in ids:
        pipe.hgetall(stall_key(job_id))
    try:
        records = pipe.execute()
    except RedisError as exc:
        # A page or a scrape goes on without the stalls rather than failing.
        log.warning("Cannot read the stall records from Redis: %s", exc)
        return {}
    return {job_id: _state(job_id, record)
            for job_id, record in zip(ids, records) if record}


def _signature(counts: Mapping[Any, int]) -> str:
    return json.dumps({str(state): count for state, count in counts.items()},
                      sort_keys=True)


def check_job(job: HarvestJob, minutes: float,
              now: Optional[datetime.datetime] = None) -> tuple[StallState, bool]:
    """Look at a running job's objects and update its stall record.

    :param minutes: the stall threshold (``ckan.harvest.stall_minutes``)
    :returns: the job's state, and whether this check found it newly stalled
    """
    now = now or utcnow()
    key = stall_key(job.id)
    client = connect_to_redis()
    counts = progress.object_state_counts(job.id)
    if job.gather_finished and progress.objects_done(counts) == sum(counts.values()):
        # Every object is done: the job only waits for this run to close it.
        client.delete(key)
        return StallState(job_id=job.id, last_moved=None, stalled_since=None,
                          mailed=False), False
    signature = _signature(counts)
    recorded = {_text(k): _text(v) for k, v in client.hgetall(key).items()}
    if recorded.get("signature") != signature:
        first_seen = not recorded
        moved = (job.get_last_action_time() or now) if first_seen else now
        recorded = {"signature": signature, "moved": repr(epoch(moved))}
        pipe = client.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping=recorded)
        pipe.expire(key, RECORD_TTL_SECONDS)
        pipe.execute()
    newly = False
    last_moved = _moment(recorded["moved"])
    if "stalled" not in recorded and last_moved is not None and \
            now - last_moved >= datetime.timedelta(minutes=minutes):
        # HSETNX: of two concurrent runs, one marks the stall.
        newly = bool(client.hsetnx(key, "stalled", repr(epoch(now))))
        log.warning("Harvest job %s stalled: its objects have not moved since %s",
                    job.id, last_moved)
    client.expire(key, RECORD_TTL_SECONDS)
    return _state(job.id, client.hgetall(key)), newly


def _mail_opted_in(config: Mapping[str, Any]) -> bool:
    return any(toolkit.asbool(options.value(config, key))
               for key in (options.STATUS_MAIL_ERRORED, options.STATUS_MAIL_ALL))


def _claim_mail(job_id: str) -> bool:
    """Take the right to send the mail of this stall (only one caller gets it)."""
    return bool(connect_to_redis().hsetnx(stall_key(job_id), "mailed", "1"))


def _mail_vars(job: HarvestJob, state: StallState, minutes: float,
               config: Mapping[str, Any]) -> dict[str, Any]:
    figures = progress.job_progress(job)
    return {
        "site_title": config.get(options.SITE_TITLE),
        "site_url": config.get(options.SITE_URL) or "",
        "job_url": mail.job_url(config, str(job.source_id), job.id),
        "harvest_source_title": job.source.title if job.source else job.source_id,
        "job_id": job.id,
        "job_created": str(job.created),
        "last_moved": str(state.last_moved),
        "stall_minutes": minutes,
        "done": figures.done,
        "total": figures.total,
        "states": figures.as_dict()["states"],
    }


def send_stall_mail(context: Context, job: HarvestJob, state: StallState, minutes: float,
                    config: Mapping[str, Any]) -> None:
    """Mail the source's notification recipients that the job is stalled."""
    extra_vars = _mail_vars(job, state, minutes, config)
    body = html.unescape(toolkit.render(_TEMPLATE, extra_vars))
    mail.send_mail(context, str(job.source_id),
                   {"subject": _SUBJECT.format(extra_vars["site_title"]), "body": body})


def check_jobs(context: Context, jobs: Iterable[HarvestJob],
               config: Optional[Mapping[str, Any]] = None) -> list[StallState]:
    """Check running jobs for stalls and mail the new ones (``harvester run``).

    Does nothing when ``ckan.harvest.stall_minutes`` is 0.

    :returns: the states of the stalled jobs
    """
    settings = toolkit.config if config is None else config
    minutes = stall_minutes(settings)
    if not minutes:
        return []
    stalled = []
    for job in jobs:
        if job.status != JobStatus.RUNNING.value:
            continue
        try:
            state, _newly = check_job(job, minutes)
        except RedisError:
            # Monitoring must not stop the scheduler: jobs are still closed.
            log.exception("Cannot check harvest job %s for a stall", job.id)
            continue
        if not state.stalled:
            continue
        stalled.append(state)
        if not state.mailed and _mail_opted_in(settings) and _claim_mail(job.id):
            send_stall_mail(context, job, state, minutes, settings)
    return stalled
