"""Dry-run preview of a harvest source: what a job would do, writing nothing.

The preview runs a harvester's real stages (gather, then fetch and import of
the first N objects) through the same stage drivers as the consumers, inside a
*sandbox*:

* one database transaction, always rolled back at the end. The session the
  stages use (``model.Session``, for this thread only) is bound to that
  transaction with ``join_transaction_mode="create_savepoint"``: a harvester's
  ``commit()`` releases a savepoint and its ``rollback()`` goes back to one, so
  harvesters need not know they are previewed;
* that session is a plain SQLAlchemy session, without CKAN's commit hooks: no
  ``IDomainObjectModification`` notification (indexing, other extensions'
  background jobs) fires;
* the search index is not written (``PackageSearchIndex`` does nothing while a
  preview runs in this context), the database log handler writes nothing, and
  nothing is queued or mailed (the stages are called directly, the job is
  never finished).

Limits (docs/ckan-harvester.rst): a harvester that talks to outside systems
in its stages (a remote write, a file written to disk, its own database
connection) does so during the preview too; one that ends the session
(``model.Session.remove()``) stops the preview with an error.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import Any, Iterator, Optional

import dictdiffer
import sqlalchemy as sa
from ckan import model
from ckan.lib.search.index import PackageSearchIndex
from ckan.plugins import toolkit
from sqlalchemy import orm

from ckanext.harvest.lib import harvesters, stages
from ckanext.harvest.log import database_log_suppressed
from ckanext.harvest.model import (
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
    HarvestSource,
    JobStatus,
    ObjectState,
    ReportStatus,
    utcnow,
)

log = logging.getLogger(__name__)

_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "ckanext_harvest_preview", default=False)

#: Records previewed when no limit is given.
DEFAULT_LIMIT = 20
#: What a real job would do with a record (``outcome`` of a previewed record).
OUTCOMES = {
    ReportStatus.ADDED.value: "create",
    ReportStatus.UPDATED.value: "update",
    ReportStatus.NOT_MODIFIED.value: "not modified",
    ReportStatus.DELETED.value: "withdraw",
    ReportStatus.ERRORED.value: "error",
}
#: Keys left out of the field-level diff of an update (they change on every write).
_NOT_COMPARED = frozenset({"metadata_modified", "harvest_object_id", "revision_id"})


class PreviewError(Exception):
    """The preview could not run (no harvester, or the sandbox was left)."""


def active() -> bool:
    """Whether a preview runs in this context (thread or task)."""
    return _ACTIVE.get()


# --- the sandbox -------------------------------------------------------------------


def _unless_previewing(method: Any) -> Any:
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _ACTIVE.get():
            return None
        return method(self, *args, **kwargs)

    wrapper.__wrapped__ = method  # type: ignore[attr-defined]
    wrapper.__doc__ = method.__doc__
    return wrapper


def _guard_search_index() -> None:
    """Make CKAN's dataset index do nothing while a preview runs (installed once)."""
    for name in ("index_package", "delete_package", "commit"):
        method = getattr(PackageSearchIndex, name)
        if not hasattr(method, "__wrapped__"):
            setattr(PackageSearchIndex, name, _unless_previewing(method))


_guard_search_index()


def _joined_session(connection: Any) -> orm.Session:
    """A session inside ``connection``'s transaction whose commits release
    savepoints and whose rollbacks go back to one."""
    if int(sa.__version__.split(".")[0]) >= 2:
        return orm.Session(bind=connection, autoflush=False, expire_on_commit=False,
                           join_transaction_mode="create_savepoint")
    # SQLAlchemy 1.4 (CKAN 2.11): its recipe for the same, a savepoint begun
    # again each time the session's transaction ends.
    session = orm.Session(bind=connection, autoflush=False, expire_on_commit=False)
    savepoint = [connection.begin_nested()]

    @sa.event.listens_for(session, "after_transaction_end")
    def _again(_session: orm.Session, _transaction: Any) -> None:
        if not savepoint[0].is_active and not connection.closed \
                and connection.in_transaction():
            savepoint[0] = connection.begin_nested()

    return session


@contextlib.contextmanager
def sandbox() -> Iterator[orm.Session]:
    """A rolled-back transaction that ``model.Session`` uses in this thread."""
    registry = model.Session.registry
    previous = registry() if registry.has() else None
    connection = model.meta.engine.connect()
    outer = connection.begin()
    session = _joined_session(connection)
    registry.set(session)
    token = _ACTIVE.set(True)
    try:
        with database_log_suppressed():
            yield session
    finally:
        _ACTIVE.reset(token)
        session.close()
        outer.rollback()
        connection.close()
        if previous is not None:
            registry.set(previous)
        else:
            registry.clear()


def _check_sandbox(session: orm.Session) -> None:
    if model.Session.registry() is not session:
        raise PreviewError("The harvester ended the database session during the "
                           "preview (model.Session.remove()): it cannot be previewed")


@contextlib.contextmanager
def _outside(session: orm.Session) -> Iterator[None]:
    """Use a session on the committed database (what the site holds now)."""
    real = model.meta.create_local_session(bind=model.meta.engine)
    model.Session.registry.set(real)
    try:
        yield
    finally:
        real.close()
        model.Session.registry.set(session)


# --- the preview -------------------------------------------------------------------


def preview_source(source_id: Optional[str], limit: int,
                   new_source: Optional[dict[str, Any]] = None,
                   user: Optional[str] = None) -> dict[str, Any]:
    """Preview a job of a source on its first ``limit`` records.

    :param source_id: the id of a saved source, or None with ``new_source``
    :param new_source: the ``harvest_source_create`` fields of a source not
        saved yet: it is created in the sandbox (validated as on saving), so
        never saved
    :param user: who creates ``new_source`` (its owner; auth is the caller's)
    :returns: ``gathered`` (objects the gather stage found), ``gather_errors``
        (messages), ``limit``, ``records`` (one per previewed object: ``guid``,
        ``outcome`` in :data:`OUTCOMES`, ``errors``, ``dataset`` (id, name and
        title, if any) and, for an update, ``changes``: ``{field, change, old,
        new}``)
    :raises PreviewError: no harvester handles the source's type
    :raises ValidationError: ``new_source`` is not a valid source
    """
    with sandbox() as session:
        if new_source is not None:
            created = toolkit.get_action("harvest_source_create")(
                {"user": user, "ignore_auth": True}, dict(new_source))
            source_id = created["id"]
        source = session.get(HarvestSource, source_id)
        if source is None:
            raise toolkit.ObjectNotFound("Harvest source not found")
        harvester = harvesters.find_harvester(source.type)
        if harvester is None:
            raise PreviewError("No harvester handles sources of type %s" % source.type)
        job = HarvestJob(source=source, status=JobStatus.RUNNING.value)
        session.add(job)
        session.flush()
        ids = _gather(harvester, job)
        _check_sandbox(session)
        records = []
        for object_id in ids[:limit]:
            records.append(_preview_object(harvester, session, object_id))
        gather_errors = [message for (message,) in session.query(
            HarvestGatherError.message).filter(HarvestGatherError.harvest_job_id == job.id)]
        return {"gathered": len(ids), "gather_errors": gather_errors,
                "limit": limit, "records": records}


def _gather(harvester: Any, job: HarvestJob) -> list[str]:
    try:
        ids = stages.gather_stage(harvester, job)
    except Exception as error:  # noqa: BLE001 - reported as the job would report it
        log.info("Preview: the gather stage raised %r", error)
        HarvestGatherError.create("Gather stage failed: %s: %s" % (
            type(error).__name__, error), job)
        return []
    return ids if isinstance(ids, list) else []


def _preview_object(harvester: Any, session: orm.Session, object_id: str) -> dict[str, Any]:
    obj = session.get(HarvestObject, object_id)
    assert obj is not None
    guid = obj.guid
    try:
        stages.fetch_and_import_stages(harvester, obj)
    except PreviewError:
        raise
    except Exception as error:  # noqa: BLE001 - what the consumer records as an error
        session.rollback()
        HarvestObjectError.create("Stage failed: %s: %s" % (type(error).__name__, error),
                                  obj, "Import")
        obj.state = ObjectState.ERROR.value
        obj.report_status = ReportStatus.ERRORED.value
        obj.import_finished = utcnow()
        obj.save()
    _check_sandbox(session)
    return _record(session, obj, guid)


def _record(session: orm.Session, obj: HarvestObject, guid: Optional[str]) -> dict[str, Any]:
    outcome = OUTCOMES.get(obj.report_status or "", "error" if obj.state ==
                           ObjectState.ERROR.value else "not modified")
    errors = [message for (message,) in session.query(HarvestObjectError.message).filter(
        HarvestObjectError.harvest_object_id == obj.id)]
    record: dict[str, Any] = {"guid": guid, "outcome": outcome, "errors": errors,
                              "dataset": None}
    if obj.package_id:
        after = _dataset(obj.package_id)
        if after is not None:
            record["dataset"] = {"id": after["id"], "name": after.get("name"),
                                 "title": after.get("title")}
        if outcome == "update":
            with _outside(session):
                before = _dataset(obj.package_id)
            record["changes"] = changes(before or {}, after or {})
    return record


def _dataset(package_id: str) -> Optional[dict[str, Any]]:
    try:
        return toolkit.get_action("package_show")(
            {"ignore_auth": True, "use_cache": False}, {"id": package_id})
    except toolkit.ObjectNotFound:
        return None


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """The field-level differences from ``before`` to ``after`` (dictdiffer),
    without the fields every write changes.

    :returns: ``{"field": dotted path, "change": add|remove|change, "old", "new"}``
    """
    result = []
    for kind, path, detail in dictdiffer.diff(before, after, dot_notation=False):
        keys = [str(part) for part in (path if isinstance(path, list) else [path])]
        if kind == "change":
            if keys and keys[-1] in _NOT_COMPARED:
                continue
            result.append({"field": ".".join(keys), "change": kind,
                           "old": detail[0], "new": detail[1]})
            continue
        for key, value in detail:
            field = ".".join(keys + [str(key)])
            if str(key) in _NOT_COMPARED:
                continue
            result.append({"field": field, "change": kind,
                           "old": value if kind == "remove" else None,
                           "new": value if kind == "add" else None})
    return result
