"""Create actions of the harvest API."""
from __future__ import annotations

import logging
from typing import Any

from ckan.plugins import toolkit
from ckan.types import Context, DataDict

from ckanext.harvest.constants import DATASET_TYPE_NAME
from ckanext.harvest.lib import concurrency, hashes, jobs, objects
from ckanext.harvest.logic import HarvestJobExists
from ckanext.harvest.logic.dictization import (
    harvest_job_dictize,
    harvest_object_dictize,
)
from ckanext.harvest.logic.schema import harvest_object_create_schema

log = logging.getLogger(__name__)

__all__ = [
    "harvest_source_create",
    "harvest_job_create",
    "harvest_job_create_all",
    "harvest_object_create",
]


class InactiveSource(Exception):
    """Kept for compatibility."""


def harvest_source_create(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """Create a harvest source (a dataset of type ``harvest``).

    :param url: the remote URL
    :param name: the source's name
    :param title: its title
    :param notes: its description
    :param source_type: the harvester type, e.g. ``ckan``
    :param frequency: MANUAL, MONTHLY, WEEKLY, BIWEEKLY, DAILY or ALWAYS
    :param schedule: a cron expression of five fields, read in
        ``ckan.harvest.timezone`` (optional; when set, the source runs on it
        instead of its frequency)
    :param config: the harvester configuration (usually JSON)
    :param owner_org: the organisation id
    :param private: whether the source is private
    :returns: the new source dataset
    """
    data_dict = dict(data_dict, type=DATASET_TYPE_NAME)
    context = Context(context, extras_as_string=True)  # type: ignore[assignment]
    return toolkit.get_action("package_create")(context, data_dict)


def _check_for_existing_jobs(context: Context, source_id: str) -> bool:
    """True when the source already has a ``New`` or ``Running`` job."""
    return jobs.has_open_job(source_id)


def harvest_job_create(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """Create a job for a source and, unless ``run`` is false, start it.

    :param source_id: the source id
    :param run: send the job to the gather queue (default True); under
        ``ckan.harvest.max_running_jobs`` the job may wait for a slot instead
        (``New``, with ``waiting_for_slot`` in the job dict)
    :param force: import every record, even those whose content hash says they
        are unchanged (boolean, default False)
    :returns: the job dict (with ``stats``)
    :raises HarvestSourceInactiveError: the source is inactive
    :raises HarvestJobExists: the source already has a New or Running job
    :raises ValidationError: ``force`` is not a boolean
    """
    toolkit.check_access("harvest_job_create", Context(context), data_dict)
    force = _force_flag(data_dict)
    source_id = data_dict.get("source_id")
    job = jobs.create_job(source_id)
    if force:
        hashes.mark_forced(job.id)  # before the gather can start
    if toolkit.asbool(data_dict.get("run", True)):
        _start(context, job.id, job.created)
    job = jobs.get_job_or_404(job.id)
    return harvest_job_dictize(job, Context(context, return_error_summary=False))


def _start(context: Context, job_id: str, due: Any) -> None:
    """Send the job to the gather queue; under ``ckan.harvest.max_running_jobs``
    it waits for a slot instead, and starts now only if one is free for it."""
    if not concurrency.max_running_jobs():
        toolkit.get_action("harvest_send_job_to_gather_queue")(
            Context(context), {"id": job_id}
        )
        return
    concurrency.wait_for_slot(job_id, due)
    concurrency.start_waiting_jobs(context)


def _force_flag(data_dict: DataDict) -> bool:
    """``force`` of ``harvest_job_create`` as a boolean (default False)."""
    value = data_dict.get("force", False)
    try:
        return toolkit.asbool(value)
    except ValueError:
        raise toolkit.ValidationError(
            {"force": ["force must be true or false, not %r" % (value,)]}) from None


def harvest_job_create_all(context: Context, data_dict: DataDict) -> list[dict[str, Any]]:
    """Create (and run) a job for every active source that has none open.

    :param run: send the jobs to the gather queue (default True)
    :returns: the job dicts created
    """
    toolkit.check_access("harvest_job_create_all", Context(context), data_dict)
    source_list = toolkit.get_action("harvest_source_list")(
        Context(context), dict(data_dict, only_active=True)
    )
    created = []
    for source in source_list:
        if _check_for_existing_jobs(context, source["id"]):
            log.info("Skipping source %s: it has an unfinished job", source["id"])
            continue
        try:
            created.append(toolkit.get_action("harvest_job_create")(
                Context(context), {"source_id": source["id"], "run": data_dict.get("run", True)}
            ))
        except HarvestJobExists:
            log.info("Skipping source %s: it has an unfinished job", source["id"])
    return created


def harvest_object_create(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """Create a harvest object (sysadmins only).

    :param job_id: the job
    :param guid: the remote identifier
    :param content: the fetched content
    :param source_id: the source (the job's when omitted)
    :param package_id: the dataset
    :param extras: a dict of strings
    :returns: the object dict
    """
    toolkit.check_access("harvest_object_create", Context(context), data_dict)
    data, errors = toolkit.navl_validate(
        dict(data_dict), harvest_object_create_schema(), context
    )
    if errors:
        raise toolkit.ValidationError(errors)
    return harvest_object_dictize(objects.create_object(data), context)
