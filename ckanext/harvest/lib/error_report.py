"""The complete error report of a job: every gather and object error, grouped
by message, a page at a time or streamed whole (CSV, JSON).

One row per error: the job, the stage (``Gather`` for gather errors, else the
object error's own stage: ``Fetch``, ``Import`` or what a harvester records),
the object and its guid, the dataset, the message and the time. A *group* is
all the errors of a job with the same message; its id is the MD5 of the
message (computed by PostgreSQL, so a group filters in SQL).

Streaming reads the rows with a server-side cursor, a batch at a time: a job
with 100,000 errors is served in bounded memory.
"""
from __future__ import annotations

import csv
import datetime
import io
import json
from typing import Any, Iterator, Optional

import sqlalchemy as sa
from ckan import model
from ckan.plugins import toolkit

from ckanext.harvest.model import HarvestGatherError, HarvestObject, HarvestObjectError

#: ``stage`` of the rows of gather errors (object errors carry their own).
GATHER_STAGE = "Gather"
#: The columns of a row, in the order of the CSV file.
COLUMNS = ("job_id", "stage", "object_id", "guid", "dataset_id", "dataset_url",
           "message", "created")
#: Rows read from the database at a time when streaming.
BATCH = 1000


def _rows(job_id: str, stage: Optional[str] = None, group: Optional[str] = None) -> Any:
    """The select of a job's error rows (``UNION ALL`` of both kinds), filtered."""
    gather = sa.select(
        HarvestGatherError.harvest_job_id.label("job_id"),
        sa.literal(GATHER_STAGE).label("stage"),
        sa.null().label("object_id"), sa.null().label("guid"),
        sa.null().label("dataset_id"),
        HarvestGatherError.message.label("message"),
        HarvestGatherError.created.label("created"),
        HarvestGatherError.id.label("error_id"),
    ).where(HarvestGatherError.harvest_job_id == job_id)
    objects = sa.select(
        HarvestObject.harvest_job_id.label("job_id"),
        sa.func.coalesce(HarvestObjectError.stage, "").label("stage"),
        HarvestObjectError.harvest_object_id.label("object_id"),
        HarvestObject.guid.label("guid"),
        HarvestObject.package_id.label("dataset_id"),
        HarvestObjectError.message.label("message"),
        HarvestObjectError.created.label("created"),
        HarvestObjectError.id.label("error_id"),
    ).join(HarvestObject, HarvestObject.id == HarvestObjectError.harvest_object_id).where(
        HarvestObject.harvest_job_id == job_id)
    if stage is not None:
        gather = gather.where(sa.true() if stage == GATHER_STAGE else sa.false())
        objects = objects.where(HarvestObjectError.stage == stage)
    if group is not None:
        gather = gather.where(_group_of(HarvestGatherError.message) == group)
        objects = objects.where(_group_of(HarvestObjectError.message) == group)
    return sa.union_all(gather, objects).subquery("errors")


def _group_of(message: Any) -> Any:
    return sa.func.md5(sa.func.coalesce(message, ""))


def groups(job_id: str, stage: Optional[str] = None) -> list[dict[str, Any]]:
    """Every message group of the job's errors, most frequent first.

    :returns: ``{"group", "message", "count", "stages"}`` dicts (``stages``: the
        stages the group's errors were recorded at, sorted)
    """
    rows = _rows(job_id, stage)
    query = sa.select(
        _group_of(rows.c.message), rows.c.message, sa.func.count(),
        sa.func.array_agg(sa.distinct(rows.c.stage)),
    ).group_by(rows.c.message).order_by(sa.func.count().desc(), rows.c.message)
    return [{"group": group, "message": message, "count": count,
             "stages": sorted(s for s in stages if s)}
            for group, message, count, stages in model.Session.execute(query)]


def count(job_id: str, stage: Optional[str] = None, group: Optional[str] = None) -> int:
    """How many error rows the filters select."""
    rows = _rows(job_id, stage, group)
    return int(model.Session.execute(sa.select(sa.func.count()).select_from(rows)).scalar()
               or 0)


def _ordered(job_id: str, stage: Optional[str], group: Optional[str]) -> Any:
    rows = _rows(job_id, stage, group)
    return sa.select(
        rows.c.job_id, rows.c.stage, rows.c.object_id, rows.c.guid, rows.c.dataset_id,
        model.Package.name, model.Package.type, rows.c.message, rows.c.created,
    ).outerjoin(model.Package, model.Package.id == rows.c.dataset_id).order_by(
        rows.c.created.nullsfirst(), rows.c.error_id)


def page(job_id: str, stage: Optional[str] = None, group: Optional[str] = None,
         limit: Optional[int] = None, offset: int = 0) -> list[dict[str, Any]]:
    """One page of the error rows, oldest first."""
    query = _ordered(job_id, stage, group).offset(offset).limit(limit)
    site = _site_url()
    return [_row(values, site) for values in model.Session.execute(query)]


def iter_rows(job_id: str, stage: Optional[str] = None, group: Optional[str] = None,
              ) -> Iterator[dict[str, Any]]:
    """Every error row, oldest first, read a batch at a time on a connection of
    its own (server-side cursor)."""
    site = _site_url()
    with model.meta.engine.connect() as connection:
        result = connection.execution_options(stream_results=True, yield_per=BATCH).execute(
            _ordered(job_id, stage, group))
        for values in result:
            yield _row(values, site)


def _site_url() -> str:
    return (toolkit.config.get("ckan.site_url") or "").rstrip("/")


def _row(values: Any, site: str) -> dict[str, Any]:
    job_id, stage, object_id, guid, dataset_id, name, dataset_type, message, created = values
    url = "%s/%s/%s" % (site, dataset_type or "dataset", name) if name else None
    return {
        "job_id": job_id, "stage": stage or None, "object_id": object_id, "guid": guid,
        "dataset_id": dataset_id, "dataset_url": url, "message": message,
        "created": created.isoformat() if isinstance(created, datetime.datetime) else None,
    }


# --- downloads ------------------------------------------------------------------------


def csv_chunks(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """The CSV file of ``rows`` (header first), in chunks of a batch of rows."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for number, row in enumerate(rows, 1):
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
        if number % BATCH == 0:
            yield _drain(buffer)
    yield _drain(buffer)


def json_chunks(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """A JSON array of ``rows``, in chunks of a batch of rows."""
    parts = ["["]
    for number, row in enumerate(rows):
        parts.append(("," if number else "") + "\n" + json.dumps(row))
        if len(parts) >= BATCH:
            yield "".join(parts)
            parts = []
    parts.append("\n]\n")
    yield "".join(parts)


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


#: Download formats: media type and chunk writer.
FORMATS = {
    "csv": ("text/csv; charset=utf-8", csv_chunks),
    "json": ("application/json", json_chunks),
}
