"""Run a harvest without queues, for tests of harvesters."""
from __future__ import annotations

import logging
from typing import Any

from ckan.plugins import toolkit

from ckanext.harvest import queue
from ckanext.harvest.model import HarvestObject, JobStatus, ObjectState
from ckanext.harvest.tests.factories import HarvestJobObj, HarvestSourceObj

log = logging.getLogger(__name__)


def run_harvest(url: str, harvester: Any, config: str = "") -> dict[str, Any]:
    """Create (or reuse) a source for ``url`` and run one job of it.

    :returns: results by guid (see :func:`run_harvest_job`)
    """
    source = HarvestSourceObj(
        url=url, config=config, source_type=harvester.info()["name"]
    )
    job = HarvestJobObj(source=source, run=False)
    return run_harvest_job(job, harvester)


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


def run_harvest_job(job: Any, harvester: Any) -> dict[str, Any]:
    """Gather, fetch and import a job in-process, then finish it.

    :returns: ``{guid: {obj_id, state, report_status, errors, dataset?}}``
    """
    job.status = JobStatus.RUNNING.value
    job.save()
    object_ids = queue.gather_stage(harvester, job)
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
        queue.fetch_and_import_stages(harvester, obj)
        results_by_guid[obj.guid] = _result(obj)
    toolkit.get_action("harvest_jobs_run")({"ignore_auth": True}, {})
    return results_by_guid
