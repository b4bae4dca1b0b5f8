"""Harvest objects: creation through the API, lookup, reports and re-import."""
from __future__ import annotations

import hashlib
import logging
from typing import Any, Optional

from ckan import model
from ckan.plugins import toolkit

from ckanext.harvest.interfaces import IHarvester
from ckanext.harvest.lib import harvesters, stats
from ckanext.harvest.model import (
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
    HarvestObjectExtra,
    HarvestSource,
)

log = logging.getLogger(__name__)


def create_object(data: dict[str, Any]) -> HarvestObject:
    """Create an object from validated ``harvest_object_create`` data."""
    job: HarvestJob = data["job_id"]
    obj = HarvestObject(
        guid=data.get("guid"),
        content=data.get("content"),
        job=job,
        harvest_source_id=data.get("source_id") or job.source_id,
        package_id=data.get("package_id"),
        extras=[
            HarvestObjectExtra(key=key, value=value)
            for key, value in (data.get("extras") or {}).items()
        ],
    )
    obj.save()
    return obj


def current_object_of_dataset(dataset_id: str) -> HarvestObject:
    """The current object of a dataset (id or name) with the latest import."""
    package = model.Package.get(dataset_id)
    if package is None:
        raise toolkit.ObjectNotFound("Dataset not found")
    obj = (
        model.Session.query(HarvestObject)
        .filter(HarvestObject.package_id == package.id)
        .filter(HarvestObject.current.is_(True))
        .order_by(HarvestObject.import_finished.desc().nullslast())
        .first()
    )
    if obj is None:
        raise toolkit.ObjectNotFound("Harvest object not found")
    return obj


def get_object_or_404(object_id: str, attr: Optional[str] = None) -> HarvestObject:
    """Return the object, or raise ``ObjectNotFound('Harvest object not found')``."""
    obj = HarvestObject.get(object_id, attr=attr)
    if obj is None:
        raise toolkit.ObjectNotFound("Harvest object not found")
    return obj


def object_ids(
    source_id: Optional[str], only_current: bool, limit: Optional[int] = None,
    offset: int = 0,
) -> list[str]:
    """Ids of the objects of a source (or of all sources), in id order.

    :param limit: at most this many (None: all)
    :param offset: skip this many first
    """
    query = model.Session.query(HarvestObject.id)
    if source_id:
        query = query.filter(HarvestObject.harvest_source_id == source_id)
    if only_current:
        query = query.filter(HarvestObject.current.is_(True))
    query = query.order_by(HarvestObject.id).offset(offset).limit(limit)
    return [object_id for (object_id,) in query]


def job_report(job: HarvestJob, limit: Optional[int], offset: int = 0) -> dict[str, Any]:
    """Gather errors and per-object errors of a job (``harvest_job_report``).

    A page of each list: ``limit`` gather errors (newest first) and the
    errors of ``limit`` objects (in object id order), from ``offset`` on;
    only the rows of that page are read.

    :param limit: at most this many of each (None: all)
    :param offset: skip this many first, in each
    """
    gather_errors = (
        model.Session.query(HarvestGatherError.message)
        .filter(HarvestGatherError.harvest_job_id == job.id)
        .order_by(HarvestGatherError.created.desc(), HarvestGatherError.id)
        .offset(offset).limit(limit)
    )
    return {
        "gather_errors": [{"message": message} for (message,) in gather_errors],
        "object_errors": _object_errors(job, _objects_with_errors(job.id, limit, offset)),
    }


def _objects_with_errors(job_id: str, limit: Optional[int], offset: int) -> Any:
    """A subquery: the ids of a page of the job's objects that have errors."""
    return (
        model.Session.query(HarvestObject.id)
        .filter(HarvestObject.harvest_job_id == job_id)
        .filter(stats.has_errors())
        .order_by(HarvestObject.id)
        .offset(offset).limit(limit)
        .subquery()
    )


def _object_errors(job: HarvestJob, page: Any) -> dict[str, Any]:
    rows = (
        model.Session.query(
            HarvestObjectError.harvest_object_id, HarvestObjectError.message,
            HarvestObjectError.line, HarvestObjectError.stage, HarvestObject.guid,
        )
        .join(HarvestObject, HarvestObject.id == HarvestObjectError.harvest_object_id)
        .filter(HarvestObject.id.in_(model.Session.query(page.c.id)))
        .order_by(HarvestObject.id, HarvestObjectError.created, HarvestObjectError.id)
    )
    harvester = harvesters.find_harvester(job.source.type if job.source else None)
    object_errors: dict[str, Any] = {}
    for object_id, message, line, stage, guid in rows:
        entry = object_errors.get(object_id)
        if entry is None:
            entry = object_errors[object_id] = {"guid": guid, "errors": []}
            original = _original_url(harvester, object_id)
            if original:
                entry["original_url"] = original
        entry["errors"].append({"message": message, "line": line, "type": stage})
    return object_errors


def _original_url(harvester: Optional[IHarvester], object_id: str) -> Optional[str]:
    if harvester is None or not hasattr(harvester, "get_original_url"):
        return None
    return harvester.get_original_url(object_id) or None


def _objects_to_import(data_dict: dict[str, Any], join_datasets: bool) -> Any:
    query = model.Session.query(HarvestObject)
    if data_dict.get("guid"):
        return query.filter(
            HarvestObject.guid == data_dict["guid"], HarvestObject.current.is_(True)
        ), join_datasets
    if data_dict.get("source_id"):
        source = HarvestSource.get(data_dict["source_id"])
        if source is None:
            raise toolkit.ObjectNotFound(
                "Harvest source %s does not exist" % data_dict["source_id"]
            )
        if not source.active:
            raise Exception("This harvest source is not active")
        return query.filter(
            HarvestObject.harvest_source_id == source.id,
            HarvestObject.current.is_(True),
        ), join_datasets
    if data_dict.get("harvest_object_id"):
        return query.filter(HarvestObject.id == data_dict["harvest_object_id"]), join_datasets
    if data_dict.get("package_id"):
        package = model.Package.get(data_dict["package_id"])
        package_id = package.id if package and package.state == "active" else None
        return query.filter(
            HarvestObject.package_id == package_id, HarvestObject.current.is_(True)
        ), False
    return query.filter(HarvestObject.current.is_(True)), join_datasets


def objects_to_import(data_dict: dict[str, Any], context: dict[str, Any]) -> list[Any]:
    """The objects ``harvest_objects_import`` re-imports, in a stable order."""
    query, join_datasets = _objects_to_import(
        data_dict, context.get("join_datasets", True)
    )
    if join_datasets:
        query = query.join(model.Package, model.Package.id == HarvestObject.package_id)
        query = query.filter(model.Package.state == "active")
    objects = query.order_by(HarvestObject.id).all()
    segments = context.get("segments")
    if segments:
        objects = [
            o for o in objects
            if hashlib.md5(o.id.encode("utf-8")).hexdigest()[0] in segments
        ]
    return objects


def reimport(obj: HarvestObject) -> None:
    """Run the import stage of an object again (no state bookkeeping)."""
    harvester = harvesters.find_harvester(obj.source.type if obj.source else None)
    if harvester is None:
        log.error("No harvester found for object %s", obj.id)
        return
    if hasattr(harvester, "force_import"):
        harvester.force_import = True
    harvester.import_stage(obj)
