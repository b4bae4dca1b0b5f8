"""Run a harvest job in this process, without the queues and their consumers.

The three stages run one after another here, through the same stage drivers
the consumers use (:mod:`ckanext.harvest.lib.stages`), then the job is closed as
``harvester run`` would. Used by ``ckan harvester run-test`` to develop and
debug harvesters, and re-exported for tests of harvesters by
:mod:`ckanext.harvest.tests.lib`.
"""
from __future__ import annotations

import logging
from typing import Any

from ckan import model
from ckan.plugins import toolkit

from ckanext.harvest.interfaces import IHarvester
from ckanext.harvest.lib import hashes, stages
from ckanext.harvest.model import HarvestObject, JobStatus, ObjectState

log = logging.getLogger(__name__)


def _result(obj: HarvestObject) -> dict[str, Any]:
    result = {
        "obj_id": obj.id,
        "state": obj.state,
        "report_status": obj.report_status,
        "errors": obj.errors,
    }
    if obj.state == ObjectState.COMPLETE.value and obj.package_id:
        result["dataset"] = toolkit.get_action("package_show")(
            {"ignore_auth": True}, {"id": obj.package_id}
        )
    return result


def run_harvest_job(job: Any, harvester: IHarvester, force: bool = False) -> dict[str, Any]:
    """Gather, fetch and import a job in-process, then finish it.

    A ``force_import`` attribute on ``job`` (a text) limits the import to the
    objects whose guid it contains; those are imported even if unchanged.
    Objects finished at gather (unchanged content hash) are reported too.

    :param force: write every record, whatever its content hash
        (:func:`ckanext.harvest.lib.hashes.mark_forced`)
    :returns: ``{guid: {obj_id, state, report_status, errors, dataset?}}``
    """
    job.status = JobStatus.RUNNING.value
    job.save()
    if force:
        hashes.mark_forced(job.id)
    object_ids = stages.gather_stage(harvester, job)
    if not isinstance(object_ids, list):
        object_ids = []
    force_import = getattr(job, "force_import", None)
    results_by_guid = {}
    for object_id in object_ids:
        obj = HarvestObject.get(object_id)
        if force_import is not None:
            if obj.guid not in force_import:
                log.info("Skipping: %s", obj.guid)
                continue
            obj.force_import = True
        stages.fetch_and_import_stages(harvester, obj)
        results_by_guid[obj.guid] = _result(obj)
    for obj in _finished_at_gather(job.id, object_ids):
        if force_import is None or obj.guid in force_import:
            results_by_guid[obj.guid] = _result(obj)
    toolkit.get_action("harvest_jobs_run")({"ignore_auth": True}, {})
    return results_by_guid


def _finished_at_gather(job_id: str, object_ids: list[str]) -> list[HarvestObject]:
    """The job's objects its gather finished already (not in ``object_ids``)."""
    queued = set(object_ids)
    finished = (model.Session.query(HarvestObject)
                .filter(HarvestObject.harvest_job_id == job_id)
                .filter(HarvestObject.state == ObjectState.COMPLETE.value)
                .order_by(HarvestObject.gathered).all())
    return [obj for obj in finished if obj.id not in queued]
