"""Content hashes: an unchanged remote record costs nothing.

Each harvest object written by :class:`~ckanext.harvest.harvesters.base.HarvesterBase`
records, in ``harvest_object_extra``, the hash of what it imported
(:data:`HASH_KEY`) and the local dataset's ``metadata_modified`` right after the
write (:data:`LOCAL_MODIFIED_KEY`). The hash covers:

* the remote record, normalised: canonical JSON (sorted keys, no insignificant
  whitespace) when the content is JSON, else the text with its runs of whitespace
  collapsed;
* the source configuration (canonical JSON, else whitespace-normalised text);
* the harvester: its class, its ``info()`` name and ``version`` (else the
  ckanext-harvest version).

A record whose hash equals that of the dataset's current object, while the local
dataset was not edited since (same ``metadata_modified``), is not written again:
its object ends ``COMPLETE`` / ``not modified``. A new source configuration or
harvester version changes every hash, so everything is imported again once.

A job may be *forced* (``harvest_job_create``'s ``force``, ``--force`` of the
CLI): its records are written whatever their hash. The job table has no column
for it and the schema must not change, so the flag is a key of CKAN's own Redis
(``ckan.redis.url``), :func:`force_key`, kept :data:`FORCE_TTL_SECONDS`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import hashlib
import importlib.metadata
import json
import re
import threading
from typing import Any, Iterable, Iterator, Optional

import sqlalchemy as sa
from ckan import model
from ckan.lib.redis import connect_to_redis
from ckan.plugins.toolkit import config

from ckanext.harvest.model import (
    HarvestJob,
    HarvestObject,
    HarvestObjectExtra,
    ObjectState,
    ReportStatus,
    utcnow,
)

__all__ = [
    "FORCE_TTL_SECONDS",
    "HASH_KEY",
    "ImportExtras",
    "LOCAL_MODIFIED_KEY",
    "PreviousImport",
    "Recording",
    "add_import_extras",
    "adopt",
    "canonical",
    "create_objects",
    "current_import",
    "dataset_written",
    "force_key",
    "harvester_fingerprint",
    "is_forced",
    "mark_forced",
    "previous_import",
    "record_hash",
    "record_import",
    "recording",
]

#: ``harvest_object_extra`` key of the hash of the imported record.
HASH_KEY = "harvest_content_hash"
#: ``harvest_object_extra`` key of the local ``metadata_modified`` after the import.
LOCAL_MODIFIED_KEY = "harvest_local_modified"
#: How long the force flag of a job is kept (30 days): a job not gathered by then
#: is harvested unforced.
FORCE_TTL_SECONDS = 30 * 24 * 3600

_WHITESPACE = re.compile(r"\s+")


# --- the hash ---------------------------------------------------------------------


def canonical(content: Optional[str]) -> str:
    """``content`` normalised: canonical JSON, else whitespace-collapsed text."""
    if content is None:
        return ""
    try:
        parsed = json.loads(content)
    except ValueError:
        return _WHITESPACE.sub(" ", content).strip()
    return json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@functools.lru_cache(maxsize=1)
def _own_version() -> str:
    try:
        return importlib.metadata.version("ckanext-harvest")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def harvester_fingerprint(harvester: Any) -> str:
    """The harvester's class, name and version (``info()['version']``, else the
    ckanext-harvest version)."""
    try:
        info = harvester.info() or {}
    except Exception:  # noqa: BLE001 - a broken info() only weakens the fingerprint
        info = {}
    cls = type(harvester)
    return "%s.%s|%s|%s" % (cls.__module__, cls.__qualname__, info.get("name", ""),
                            info.get("version") or _own_version())


def record_hash(content: Optional[str], source_config: Optional[str],
                harvester: Any) -> str:
    """sha256 (hex) of the normalised record, source config and harvester."""
    digest = hashlib.sha256()
    for part in (canonical(content), canonical(source_config),
                 harvester_fingerprint(harvester)):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def object_source_config(harvest_object: HarvestObject) -> Optional[str]:
    """The configuration of the object's source (None when it has no source)."""
    source = harvest_object.source or (harvest_object.job.source
                                       if harvest_object.job else None)
    return source.config if source is not None else None


# --- what the last import recorded ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PreviousImport:
    """The current object of a local dataset and what its import recorded."""

    guid: Optional[str]
    package_id: str
    object_id: str
    content_hash: Optional[str]
    recorded_modified: Optional[str]
    package_modified: Optional[datetime.datetime]
    package_state: Optional[str]

    def unchanged(self, content_hash: str) -> Optional[bool]:
        """True: same record, dataset not edited locally since (skip the write).
        False: a different record, or a local edit (write it). None: nothing
        recorded, or the local dataset is deleted (decide as without hashes)."""
        if self.content_hash is None or self.package_state != model.State.ACTIVE:
            return None
        return (self.content_hash == content_hash
                and self.recorded_modified == _isoformat(self.package_modified))


def _isoformat(value: Optional[datetime.datetime]) -> Optional[str]:
    return value.isoformat() if value is not None else None


def _previous_query() -> Any:
    extra = sa.orm.aliased(HarvestObjectExtra)
    modified = sa.orm.aliased(HarvestObjectExtra)
    return (
        model.Session.query(
            HarvestObject.guid, HarvestObject.package_id, HarvestObject.id,
            extra.value, modified.value,
            model.Package.metadata_modified, model.Package.state)
        .join(model.Package, model.Package.id == HarvestObject.package_id)
        .outerjoin(extra, sa.and_(extra.harvest_object_id == HarvestObject.id,
                                  extra.key == HASH_KEY))
        .outerjoin(modified, sa.and_(modified.harvest_object_id == HarvestObject.id,
                                     modified.key == LOCAL_MODIFIED_KEY))
        .filter(HarvestObject.current.is_(True))
    )


def current_import(package_id: Any) -> Any:
    """SQL lateral subquery (columns ``guid``, ``object_id``, ``content_hash``,
    ``recorded_modified``): the current object of the dataset ``package_id`` (a
    column of the enclosing query) and what its import recorded, as
    :func:`previous_import`; no row when the dataset has no current object."""
    current = sa.orm.aliased(HarvestObject)
    extra = sa.orm.aliased(HarvestObjectExtra)
    modified = sa.orm.aliased(HarvestObjectExtra)
    return (
        sa.select(current.guid.label("guid"), current.id.label("object_id"),
                  extra.value.label("content_hash"),
                  modified.value.label("recorded_modified"))
        .outerjoin(extra, sa.and_(extra.harvest_object_id == current.id,
                                  extra.key == HASH_KEY))
        .outerjoin(modified, sa.and_(modified.harvest_object_id == current.id,
                                     modified.key == LOCAL_MODIFIED_KEY))
        .where(current.package_id == package_id, current.current.is_(True))
        .order_by(current.import_finished.desc().nullslast())
        .limit(1)
        .lateral()
    )


def previous_import(package_id: str) -> Optional[PreviousImport]:
    """What the last import of a local dataset recorded (None: no current object)."""
    row = (_previous_query().filter(HarvestObject.package_id == package_id)
           .order_by(HarvestObject.import_finished.desc().nullslast()).first())
    return PreviousImport(*row) if row is not None else None


def _previous_imports(source_id: str, guids: list[str]) -> dict[str, PreviousImport]:
    """The previous import of each guid of a source (one query)."""
    rows = (_previous_query().filter(HarvestObject.harvest_source_id == source_id)
            .filter(HarvestObject.guid.in_(guids)).all())
    return {row[0]: PreviousImport(*row) for row in rows}


def adopt(package_id: str, content_hash: str) -> None:
    """Add (not commit) the hash of a record found unchanged by its remote date
    to the current object of its dataset, when that object has none (imported
    before hashes were recorded), with the dataset's ``metadata_modified`` of
    now: the next gather can then skip the record."""
    previous = previous_import(package_id)
    if previous is None or previous.content_hash is not None:
        return
    model.Session.add_all([
        HarvestObjectExtra(harvest_object_id=previous.object_id, key=HASH_KEY,
                           value=content_hash),
        HarvestObjectExtra(harvest_object_id=previous.object_id, key=LOCAL_MODIFIED_KEY,
                           value=_isoformat(previous.package_modified)),
    ])


def record_import(harvest_object: HarvestObject, content_hash: str,
                  package_id: str) -> None:
    """Add (not commit) the hash and the dataset's ``metadata_modified`` as
    extras of the object just imported; any older values of the object go."""
    modified = model.Session.query(model.Package.metadata_modified).filter(
        model.Package.id == package_id).scalar()
    add_import_extras(_import_extras(harvest_object, content_hash, modified))


@dataclasses.dataclass
class Recording:
    """A hash waiting for its dataset's write (:func:`recording`)."""

    harvest_object: HarvestObject
    content_hash: Optional[str]
    done: bool = False


_pending = threading.local()


@contextlib.contextmanager
def recording(harvest_object: HarvestObject,
              content_hash: Optional[str]) -> Iterator[Recording]:
    """While the dataset of ``harvest_object`` is written: the plugin's
    ``IPackageController`` hooks call :func:`dataset_written`, which adds the
    hash extras to the dataset's own transaction (no query, no commit of their
    own). ``done`` stays False when no hook ran (e.g. ``package_update`` found
    nothing to change): the caller then records with :func:`record_import`."""
    pending = Recording(harvest_object, content_hash, done=content_hash is None)
    _pending.recording = pending
    try:
        yield pending
    finally:
        _pending.recording = None


def dataset_written(package: model.Package) -> Optional[ImportExtras]:
    """Hook of ``package_create``/``package_update``, after their flush and before
    their commit: the extras recording the pending hash of the dataset being
    harvested, with the ``metadata_modified`` the dataset is about to be
    committed with (None: nothing to record). The caller writes them in the
    dataset's transaction (:func:`ckanext.harvest.lib.stages.dataset_flushed`,
    else :func:`add_import_extras`)."""
    pending: Optional[Recording] = getattr(_pending, "recording", None)
    if (pending is None or pending.done or pending.content_hash is None
            or pending.harvest_object.package_id != package.id
            or package.metadata_modified is None):
        return None
    pending.done = True
    return _import_extras(pending.harvest_object, pending.content_hash,
                          package.metadata_modified)


@dataclasses.dataclass(frozen=True)
class ImportExtras:
    """The extras an import records on its object (:func:`dataset_written`)."""

    harvest_object: HarvestObject
    #: ``(key, value)`` of each extra.
    rows: tuple[tuple[str, Optional[str]], ...]
    #: The object was imported before: its extras of these keys go first.
    replace: bool


def _import_extras(harvest_object: HarvestObject, content_hash: str,
                   modified: Optional[datetime.datetime]) -> ImportExtras:
    return ImportExtras(harvest_object,
                        ((HASH_KEY, content_hash), (LOCAL_MODIFIED_KEY, _isoformat(modified))),
                        replace=harvest_object.import_finished is not None)


def add_import_extras(extras: ImportExtras) -> None:
    """Add (not commit) ``extras`` to the session."""
    harvest_object = extras.harvest_object
    if extras.replace:  # imported before: re-import
        model.Session.query(HarvestObjectExtra).filter(
            HarvestObjectExtra.harvest_object_id == harvest_object.id,
            HarvestObjectExtra.key.in_([key for key, _value in extras.rows]),
        ).delete(synchronize_session=False)
    model.Session.add_all([
        HarvestObjectExtra(harvest_object_id=harvest_object.id, key=key, value=value)
        for key, value in extras.rows])


# --- gathering with hashes --------------------------------------------------------


def create_objects(job: HarvestJob, records: Iterable[tuple[str, str]],
                   harvester: Any) -> list[str]:
    """Create and commit one object per ``(guid, content)`` of ``job``.

    A record unchanged since the current object of its guid (same hash, local
    dataset not edited) gets an object finished already: ``COMPLETE``, report
    status ``not modified``, not current, never queued. Unless the job is forced.

    :returns: ids of the other objects (the ones to fetch and import)
    """
    records = list(records)
    if not records:
        return []
    source = job.source
    source_config = source.config if source is not None else None
    hashes = [record_hash(content, source_config, harvester) for _, content in records]
    previous: dict[str, PreviousImport] = {}
    if source is not None and not is_forced(job.id):
        previous = _previous_imports(source.id, [guid for guid, _ in records])
    now = utcnow()
    objects, queued = [], []
    for (guid, content), content_hash in zip(records, hashes):
        obj = HarvestObject(guid=guid, job=job, content=content)
        if guid in previous and previous[guid].unchanged(content_hash):
            obj.state = ObjectState.COMPLETE.value
            obj.report_status = ReportStatus.NOT_MODIFIED.value
            obj.current = False
            obj.fetch_started = obj.fetch_finished = now
            obj.import_started = obj.import_finished = now
        else:
            queued.append(obj)
        objects.append(obj)
    model.Session.add_all(objects)
    model.Session.flush()
    ids = [obj.id for obj in queued]
    model.Session.commit()
    return ids


# --- forced jobs --------------------------------------------------------------------


def force_key(job_id: str) -> str:
    """The Redis key flagging a forced job (prefixed with ``ckan.site_id``)."""
    return "%s:ckanext-harvest:force:%s" % (config.get("ckan.site_id"), job_id)


#: What :func:`is_forced` answered, by job id: a job is flagged when it is
#: created, before its gather makes any object, so the answer for an object's
#: job does not change (one Redis round trip per job and process, not per
#: object). Emptied when it grows past :data:`_FORCED_CACHE_SIZE`.
_forced: dict[str, bool] = {}
_FORCED_CACHE_SIZE = 1000


def mark_forced(job_id: str) -> None:
    """Flag a job as forced: its records are written whatever their hash."""
    connect_to_redis().set(force_key(job_id), "1", ex=FORCE_TTL_SECONDS)
    _forced[job_id] = True


def is_forced(job_id: Optional[str]) -> bool:
    """Whether a job was flagged by :func:`mark_forced` (within the TTL)."""
    if not job_id:
        return False
    forced = _forced.get(job_id)
    if forced is None:
        forced = bool(connect_to_redis().exists(force_key(job_id)))
        if len(_forced) >= _FORCED_CACHE_SIZE:
            _forced.clear()
        _forced[job_id] = forced
    return forced
