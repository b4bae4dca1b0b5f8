"""Figures of the harvest web pages: progress of a job, a source's recent jobs."""
from __future__ import annotations

from typing import Optional

import sqlalchemy as sa
from ckan import model

from ckanext.harvest.model import HarvestJob, HarvestObject, JobStatus, ObjectState

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


def recent_finished_job_ids(source_id: str, limit: int) -> list[str]:
    """Ids of the ``limit`` most recently created finished jobs of a source, newest first."""
    rows = (
        model.Session.query(HarvestJob.id)
        .filter(HarvestJob.source_id == source_id)
        .filter(HarvestJob.status == JobStatus.FINISHED.value)
        .order_by(HarvestJob.created.desc())
        .limit(limit)
    )
    return [job_id for (job_id,) in rows]
