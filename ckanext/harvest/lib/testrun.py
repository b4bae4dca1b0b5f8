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

from ckan.plugins import toolkit

from ckanext.harvest.interfaces import IHarvester
from ckanext.harvest.lib import stages
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


def run_harvest_job(job: Any, harvester: IHarvester) -> dict[str, Any]:
    """Gather, fetch and import a job in-process, then finish it.

    A ``force_import`` attribute on ``job`` (a text) limits the import to the
    objects whose guid it contains; those are imported even if unchanged.

    :returns: ``{guid: {obj_id, state, report_status, errors, dataset?}}``
    """
    job.status = JobStatus.RUNNING.value
    job.save()
    object_ids = stages.gather_stage(harvester, job)
    if not isinstance(object_ids, list):
        object_ids = []
    results_by_guid = {}
    for object_id in object_ids:
        obj = HarvestObject.get(object_id)
        force_import = getattr(job, "force_import", None)
        if force_import is not None:
            if obj.guid not in force_import:
                log.info("Skipping: %s", obj.guid)
                continue
            obj.force_import = True
        stages.fetch_and_import_stages(harvester, obj)
        results_by_guid[obj.guid] = _result(obj)
    toolkit.get_action("harvest_jobs_run")({"ignore_auth": True}, {})
    return results_by_guid
