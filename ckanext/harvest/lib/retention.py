"""Retention of harvest jobs: old jobs go, whole, in bounded batches.

Without it the harvest tables only grow (a job keeps every object it
gathered, with the object's extras and errors). A :class:`Policy` keeps, per
source, the last ``keep_jobs`` finished jobs and/or the finished jobs created
in the last ``keep_days`` days (``ckan.harvest.keep_jobs``,
``ckan.harvest.keep_days``; with both, a job is kept when either rule keeps it);
0 means "no such rule", and a policy with neither rule removes nothing (the
original behaviour).

A job is removed whole or not at all: its row, its objects, their extras and
errors, its gather errors. Removing part of a kept job could make a job that
had errors look clean to :func:`~ckanext.harvest.lib.jobs.last_error_free_job`.
A job past its retention is still kept (*protected*) when:

* it is not ``Finished`` (New, Running: its objects are still being written);
* it owns a current object: the object of a dataset as last imported, with the
  dataset's content hash (:mod:`~ckanext.harvest.lib.hashes`) and its
  ``missing_since`` / ``removal_held`` marks (:mod:`~ckanext.harvest.lib.removals`);
* it is its source's last error-free job, the one an incremental harvest
  compares against (:func:`~ckanext.harvest.lib.jobs.error_free_conditions`);
* removals awaiting approval name it (``removal_held`` marks: the approval
  creates its withdrawal objects in that job);
* it has a withdrawal object not yet done (approved, still queued), or one
  whose dataset has no current object since: that object is how a withdrawn
  dataset is recognised, to be restored by its next import.

Detach markers (objects of no job, :mod:`~ckanext.harvest.lib.detaching`)
belong to no job, so they are never touched.

The jobs to remove are chosen by one query (their ids only); each is then
deleted with set-based SQL, at most :data:`BATCH_OBJECTS` objects (with their
extras and errors) per transaction, so that memory stays flat and locks stay
short whatever the size of the tables. A job whose state changed meanwhile
(it got a current object) is skipped.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
from contextlib import nullcontext
from typing import Any, Mapping, Optional, Sequence

import sqlalchemy as sa
from ckan import model

from ckanext.harvest import options
from ckanext.harvest.lib import jobs as jobs_lib
from ckanext.harvest.lib.removals import HELD_KEY, WITHDRAWAL_KEY
from ckanext.harvest.model import (
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
    HarvestObjectExtra,
    JobStatus,
    ObjectState,
    utcnow,
)

__all__ = ["BATCH_OBJECTS", "Outcome", "Plan", "Policy", "apply", "apply_site_policy",
           "measure", "plan", "remove_job"]

log = logging.getLogger(__name__)

#: Objects (with their extras and errors) deleted per transaction.
BATCH_OBJECTS = 10000

_DONE_STATES = (ObjectState.COMPLETE.value, ObjectState.ERROR.value)

#: Up to ``:size`` objects of job ``:job_id``, with their extras and errors,
#: in one statement; returns the numbers of objects and of errors deleted.
_DELETE_OBJECTS = sa.text("""
    WITH batch AS (
        SELECT id FROM harvest_object WHERE harvest_job_id = :job_id LIMIT :size
    ), extras AS (
        DELETE FROM harvest_object_extra
        WHERE harvest_object_id IN (SELECT id FROM batch) RETURNING 1
    ), errors AS (
        DELETE FROM harvest_object_error
        WHERE harvest_object_id IN (SELECT id FROM batch) RETURNING 1
    ), objects AS (
        DELETE FROM harvest_object WHERE id IN (SELECT id FROM batch) RETURNING 1
    )
    SELECT (SELECT count(*) FROM objects), (SELECT count(*) FROM errors),
           (SELECT count(*) FROM extras)
""")


@dataclasses.dataclass(frozen=True)
class Policy:
    """What to keep: 0 means no rule of that kind."""

    keep_jobs: int = 0
    keep_days: int = 0

    def __post_init__(self) -> None:
        for name in ("keep_jobs", "keep_days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError("{} must be a whole number, 0 or more (got {!r})"
                                 .format(name, value))

    @property
    def active(self) -> bool:
        """Whether the policy removes anything at all."""
        return bool(self.keep_jobs or self.keep_days)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Policy:
        """The site's policy (``ckan.harvest.keep_jobs``, ``ckan.harvest.keep_days``).

        :raises ValueError: an option is not a whole number, 0 or more
        """
        values = {}
        for field, key in (("keep_jobs", options.KEEP_JOBS), ("keep_days", options.KEEP_DAYS)):
            raw = options.value(config, key)
            try:
                values[field] = int(raw)
            except (TypeError, ValueError):
                raise ValueError("{} must be a whole number, 0 or more (got {!r})"
                                 .format(key, raw)) from None
            if values[field] < 0:
                raise ValueError("{} must be a whole number, 0 or more (got {!r})"
                                 .format(key, raw))
        return cls(**values)

    def describe(self) -> str:
        """The rules in words, e.g. ``the last 5 jobs or the jobs of the last 30 days``."""
        rules = []
        if self.keep_jobs:
            rules.append("the last {} job(s)".format(self.keep_jobs))
        if self.keep_days:
            rules.append("the jobs of the last {} day(s)".format(self.keep_days))
        return " or ".join(rules) or "every job"


@dataclasses.dataclass
class Plan:
    """The jobs a policy removes, oldest first, and how many it keeps only
    because they are protected."""

    jobs: list[tuple[str, Optional[str]]]
    protected: int

    @property
    def sources(self) -> int:
        return len({source_id for _, source_id in self.jobs})


@dataclasses.dataclass
class Outcome:
    """Rows removed (or that would be removed)."""

    jobs: int = 0
    objects: int = 0
    object_errors: int = 0
    gather_errors: int = 0
    skipped: int = 0


# -- choosing -----------------------------------------------------------------------


def _finished_jobs(source_id: Optional[str]) -> Any:
    """Finished jobs with their rank in their source, newest first (1)."""
    rank = sa.func.row_number().over(
        partition_by=HarvestJob.source_id,
        order_by=(HarvestJob.created.desc().nullslast(), HarvestJob.id.desc()),
    )
    query = sa.select(HarvestJob.id, HarvestJob.source_id, HarvestJob.created,
                      rank.label("rank")).where(
        HarvestJob.status == JobStatus.FINISHED.value)
    if source_id is not None:
        query = query.where(HarvestJob.source_id == source_id)
    return query.subquery("finished")


def _last_error_free_ids(source_id: Optional[str]) -> Any:
    """Ids of each source's last error-free job (ties: all of them)."""
    rank = sa.func.rank().over(partition_by=HarvestJob.source_id,
                               order_by=HarvestJob.gather_started.desc())
    clean = sa.select(HarvestJob.id, rank.label("rank")).where(
        *jobs_lib.error_free_conditions())
    if source_id is not None:
        clean = clean.where(HarvestJob.source_id == source_id)
    clean_jobs = clean.subquery("clean")
    return sa.select(clean_jobs.c.id).where(clean_jobs.c.rank == 1)


def _protected(job_id: Any, source_id: Optional[str]) -> Any:
    """The condition "this job must be kept whatever its age" (module docstring)."""
    owns_current = sa.exists().where(HarvestObject.harvest_job_id == job_id,
                                     HarvestObject.current.is_(True))
    held = sa.exists().where(HarvestObjectExtra.key == HELD_KEY,
                             HarvestObjectExtra.value == job_id)
    current = sa.orm.aliased(HarvestObject)
    withdrawal = sa.orm.aliased(HarvestObject)
    still_needed = sa.or_(
        withdrawal.state.is_(None),
        withdrawal.state.notin_(_DONE_STATES),
        ~sa.exists().where(current.package_id == withdrawal.package_id,
                           current.current.is_(True)),
    )
    withdrawals = (
        sa.select(sa.literal(1))
        .select_from(withdrawal)
        .join(HarvestObjectExtra, HarvestObjectExtra.harvest_object_id == withdrawal.id)
        .where(withdrawal.harvest_job_id == job_id,
               HarvestObjectExtra.key == WITHDRAWAL_KEY, still_needed)
        .exists()
    )
    return sa.or_(owns_current, job_id.in_(_last_error_free_ids(source_id)), held,
                  withdrawals)


def _past_retention(finished: Any, policy: Policy, now: datetime.datetime) -> Any:
    """Finished jobs no rule of ``policy`` keeps (a job is kept if any rule does)."""
    conditions = []
    if policy.keep_jobs:
        conditions.append(finished.c.rank > policy.keep_jobs)
    if policy.keep_days:
        cutoff = now - datetime.timedelta(days=policy.keep_days)
        conditions.append(sa.or_(finished.c.created < cutoff, finished.c.created.is_(None)))
    return sa.and_(*conditions)


def plan(policy: Policy, source_id: Optional[str] = None,
         now: Optional[datetime.datetime] = None) -> Plan:
    """The jobs ``policy`` removes now (only ids are read: one query).

    :param source_id: only the jobs of this source
    :param now: the moment ``keep_days`` counts back from (naive UTC; default now)
    """
    if not policy.active:
        return Plan([], 0)
    finished = _finished_jobs(source_id)
    protected = _protected(finished.c.id, source_id).label("protected")
    query = (sa.select(finished.c.id, finished.c.source_id, protected)
             .where(_past_retention(finished, policy, now or utcnow()))
             .order_by(finished.c.created.asc().nullsfirst(), finished.c.id))
    removable: list[tuple[str, Optional[str]]] = []
    kept = 0
    for job_id, job_source_id, is_protected in model.Session.execute(query):
        if is_protected:
            kept += 1
        else:
            removable.append((job_id, job_source_id))
    model.Session.commit()  # end the read transaction before the long deletion
    return Plan(removable, kept)


# -- counting and removing -------------------------------------------------------------


def _chunks(items: Sequence[str], size: int = 1000) -> Any:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def measure(chosen: Plan) -> Outcome:
    """What removing the jobs of ``chosen`` would remove (counted, nothing removed)."""
    outcome = Outcome(jobs=len(chosen.jobs))
    for ids in _chunks([job_id for job_id, _ in chosen.jobs]):
        outcome.objects += model.Session.query(sa.func.count(HarvestObject.id)).filter(
            HarvestObject.harvest_job_id.in_(ids)).scalar() or 0
        outcome.object_errors += model.Session.query(
            sa.func.count(HarvestObjectError.id)).join(
            HarvestObject, HarvestObject.id == HarvestObjectError.harvest_object_id
        ).filter(HarvestObject.harvest_job_id.in_(ids)).scalar() or 0
        outcome.gather_errors += model.Session.query(
            sa.func.count(HarvestGatherError.id)).filter(
            HarvestGatherError.harvest_job_id.in_(ids)).scalar() or 0
    model.Session.commit()
    return outcome


def _still_removable(job_id: str) -> bool:
    """Lock the job's row; whether it is still Finished without a current object."""
    status = model.Session.execute(
        sa.select(HarvestJob.status).where(HarvestJob.id == job_id).with_for_update()
    ).scalar()
    if status != JobStatus.FINISHED.value:
        return False
    return not model.Session.execute(sa.select(sa.exists().where(
        HarvestObject.harvest_job_id == job_id, HarvestObject.current.is_(True)))).scalar()


def remove_job(job_id: str, outcome: Outcome, batch_objects: int = BATCH_OBJECTS) -> bool:
    """Delete one job whole, ``batch_objects`` objects per transaction; add the
    rows deleted to ``outcome``.

    :returns: False when the job was skipped (gone, or no longer removable)
    """
    while True:
        if not _still_removable(job_id):
            model.Session.rollback()
            return False
        objects, errors, _extras = model.Session.execute(
            _DELETE_OBJECTS, {"job_id": job_id, "size": batch_objects}).one()
        outcome.objects += objects
        outcome.object_errors += errors
        if objects < batch_objects:
            break
        model.Session.commit()
    outcome.gather_errors += model.Session.execute(
        sa.delete(HarvestGatherError).where(HarvestGatherError.harvest_job_id == job_id)
    ).rowcount
    model.Session.execute(sa.delete(HarvestJob).where(HarvestJob.id == job_id))
    model.Session.commit()
    outcome.jobs += 1
    return True


def apply(chosen: Plan, progress: Any = None, batch_objects: int = BATCH_OBJECTS) -> Outcome:
    """Remove the jobs of ``chosen``, one after the other.

    :param progress: ``progress(items, label)`` (see ``cli.base``), or None
    :param batch_objects: objects deleted per transaction
    """
    outcome = Outcome()
    job_ids = [job_id for job_id, _ in chosen.jobs]
    bar = progress(job_ids, "Removing harvest jobs") if progress else nullcontext(job_ids)
    with bar as jobs_to_remove:
        for job_id in jobs_to_remove:
            if not remove_job(job_id, outcome, batch_objects):
                outcome.skipped += 1
    log.info("Retention: removed %d job(s), %d object(s), %d object error(s), "
             "%d gather error(s); %d skipped", outcome.jobs, outcome.objects,
             outcome.object_errors, outcome.gather_errors, outcome.skipped)
    return outcome


def apply_site_policy(config: Mapping[str, Any]) -> Optional[Outcome]:
    """Apply the site's rules if one is set (``ckan harvester run``).

    :returns: what was removed, None when neither option is set
    :raises ValueError: an option is invalid
    """
    policy = Policy.from_config(config)
    if not policy.active:
        return None
    return apply(plan(policy))
