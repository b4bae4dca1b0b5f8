"""Harvest jobs written as rows, with the age and state a test needs.

Faster than running jobs, for tests about old jobs (retention): a job, its
objects (each with one extra), and unless it is clean, an error per object and
a gather error.
"""
from __future__ import annotations

import datetime

from ckan import model

from ckanext.harvest.model import (
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
    HarvestObjectExtra,
    HarvestSource,
    JobStatus,
    ObjectState,
    utcnow,
)


def old_job(source: HarvestSource, age_days: float, status: str = JobStatus.FINISHED.value,
            objects: int = 2, current: bool = False, clean: bool = False) -> str:
    """A job of ``source`` created ``age_days`` ago; commit.

    :param objects: how many objects, each with an extra
    :param current: the first object is current (a dataset's object)
    :param clean: objects ``not modified`` and no error (an error-free job);
        otherwise each object has an error (report status ``errored``) and the
        job has a gather error
    :returns: the job's id
    """
    created = utcnow() - datetime.timedelta(days=age_days)
    job = HarvestJob(source_id=source.id, status=status, created=created,
                     gather_started=created, gather_finished=created, finished=created)
    model.Session.add(job)
    model.Session.flush()
    for n in range(objects):
        obj = HarvestObject(
            guid="g{}".format(n), job=job, source=source,
            state=ObjectState.COMPLETE.value if clean else ObjectState.ERROR.value,
            report_status="not modified" if clean else "errored",
            current=current and n == 0, content="{}")
        model.Session.add(obj)
        model.Session.flush()
        model.Session.add(HarvestObjectExtra(harvest_object_id=obj.id, key="k", value="v"))
        if not clean:
            model.Session.add(HarvestObjectError(harvest_object_id=obj.id, message="bad",
                                                 stage="Import"))
    if not clean:
        model.Session.add(HarvestGatherError(harvest_job_id=job.id, message="page failed"))
    model.Session.commit()
    return job.id
