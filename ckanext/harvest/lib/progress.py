"""Figures of the harvest web pages: the progress of a job."""
from __future__ import annotations

from typing import Optional

import sqlalchemy as sa
from ckan import model

from ckanext.harvest.model import HarvestObject, ObjectState

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

