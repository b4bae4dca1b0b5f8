"""Figures of the harvest web pages and CLI: the progress of a job."""
from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Optional

import sqlalchemy as sa
from ckan import model

from ckanext.harvest.model import HarvestJob, HarvestObject, JobStatus, ObjectState, utcnow

_DONE_STATES = (ObjectState.COMPLETE.value, ObjectState.ERROR.value)


def object_state_counts(job_id: str) -> dict[Optional[str], int]:
    """How many objects of a job are in each state (``{state: count}``)."""
    rows = (
        model.Session.query(HarvestObject.state, sa.func.count(HarvestObject.id))
        .filter(HarvestObject.harvest_job_id == job_id)
        .group_by(HarvestObject.state)
    )
    return {state: count for state, count in rows}


def objects_done(counts: dict[Optional[str], int]) -> int:
    """Objects that went through every stage (``COMPLETE``) or failed (``ERROR``)."""
    return sum(count for state, count in counts.items() if state in _DONE_STATES)



@dataclasses.dataclass(frozen=True)
class JobProgress:
    """How far a job got: objects done of total, the rate so far and an ETA.

    The rate is the objects done per minute over the job's running time
    (since its gather started); the ETA is the objects left at that rate,
    known once gathering is over and something is done.
    """

    job_id: str
    status: str
    total: int
    done: int
    gathering: bool
    elapsed_seconds: float
    counts: dict[Optional[str], int]

    @property
    def percent(self) -> int:
        """Objects done, in percent of all (0 while gathering)."""
        return 0 if self.gathering or not self.total else int(100 * self.done / self.total)

    @property
    def rate_per_minute(self) -> Optional[float]:
        """Objects done per minute so far (None before anything is done)."""
        if not self.done or self.elapsed_seconds <= 0:
            return None
        return 60.0 * self.done / self.elapsed_seconds

    @property
    def eta_seconds(self) -> Optional[float]:
        """Seconds until every object is done at the current rate (None: unknown)."""
        rate = self.rate_per_minute
        if self.gathering or rate is None or self.status != JobStatus.RUNNING.value:
            return None
        return 60.0 * max(0, self.total - self.done) / rate

    def as_dict(self) -> dict[str, Any]:
        """The figures as a JSON-friendly dict (the ``harvest_job_progress`` action)."""
        rate = self.rate_per_minute
        eta = self.eta_seconds
        return {
            "id": self.job_id,
            "status": self.status,
            "total": self.total,
            "done": self.done,
            "gathering": self.gathering,
            "percent": self.percent,
            "elapsed_seconds": int(self.elapsed_seconds),
            "rate_per_minute": round(rate, 2) if rate is not None else None,
            "eta_seconds": int(eta) if eta is not None else None,
            "states": {str(state): count for state, count in self.counts.items()},
        }


def job_progress(job: HarvestJob, now: Optional[datetime.datetime] = None) -> JobProgress:
    """The progress of a job from the states of its objects.

    :param now: the current time (naive UTC; now by default)
    """
    counts = object_state_counts(job.id)
    start = job.gather_started or job.created
    end = job.finished if job.status == JobStatus.FINISHED.value else None
    elapsed = ((end or now or utcnow()) - start).total_seconds() if start else 0.0
    return JobProgress(
        job_id=job.id,
        status=job.status,
        total=sum(counts.values()),
        done=objects_done(counts),
        gathering=job.gather_finished is None and job.status != JobStatus.FINISHED.value,
        elapsed_seconds=max(0.0, elapsed),
        counts=counts,
    )
