"""Stage drivers: a harvester's stages run on one job or one object.

The framework owns what surrounds each stage: the job's gather timestamps, the
object's state, timestamps and report status, and the clean-up of a gather that
raised. A harvester only implements the stage itself. The queue consumers
(:mod:`ckanext.harvest.lib.worker`) and ``ckan harvester run-test``
(:mod:`ckanext.harvest.lib.testrun`) drive the same functions; both are public
through :mod:`ckanext.harvest.queue`.

Nothing here depends on configuration or on the queues.
"""
from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import sqlalchemy as sa
from ckan import model
from ckan.model.types import make_uuid
from sqlalchemy.orm.attributes import flag_modified, set_committed_value

from ckanext.harvest.interfaces import IHarvester
from ckanext.harvest.lib import harvesters, removals
from ckanext.harvest.model import HarvestJob, HarvestObject, ObjectState, ReportStatus, utcnow


def delete_job_objects(job_id: str) -> None:
    """Delete a job's objects (their extras and errors go by cascade); commit."""
    model.Session.query(HarvestObject).filter(
        HarvestObject.harvest_job_id == job_id
    ).delete(synchronize_session=False)
    model.Session.commit()


def get_harvester(source_type: str) -> Any:
    """Return the first ``IHarvester`` plugin named ``source_type``, or None."""
    return harvesters.find_harvester(source_type)


def harvesters_named(source_type: str) -> list[Any]:
    """Every ``IHarvester`` plugin named ``source_type``."""
    return [h for h in harvesters.all_harvesters()
            if harvesters.harvester_name(h) == source_type]


def gather_stage(harvester: IHarvester, job: HarvestJob) -> Any:
    """Run ``harvester.gather_stage(job)`` with the job's gather timestamps.

    ``gather_finished`` is set and saved even when the harvester raises; then the
    objects of the job are deleted and the exception propagates.

    :returns: what the harvester returned (a list of object ids on success)
    """
    job.gather_started = utcnow()
    job.save()
    try:
        return removals.gathered(job, harvester.gather_stage(job))
    except BaseException:
        model.Session.rollback()
        removals.forget(job)
        delete_job_objects(job.id)
        raise
    finally:
        job.gather_finished = utcnow()
        job.save()


#: Report statuses known from the import itself (:func:`dataset_written`).
_written: weakref.WeakKeyDictionary[HarvestObject, str] = weakref.WeakKeyDictionary()


def dataset_written(obj: HarvestObject, other_objects: int) -> None:
    """Note that the import of ``obj`` wrote its dataset, ``obj`` now its current
    object, and how many other objects the dataset has: its report status
    (``added`` for the first object, else ``updated``) is then known without
    asking the database (which, the dataset's commit having expired ``obj``,
    would take two queries)."""
    _written[obj] = written_status(other_objects)


def written_status(other_objects: int) -> str:
    """Report status of an object that wrote its dataset, which has
    ``other_objects`` other objects: ``added`` for the first, else ``updated``."""
    return (ReportStatus.UPDATED if other_objects else ReportStatus.ADDED).value


_finishing = threading.local()
#: Objects whose final state was written with their dataset
#: (:func:`dataset_flushed`): the stage driver does not write it again.
_finished_with_dataset: weakref.WeakSet[HarvestObject] = weakref.WeakSet()


#: The other objects of a dataset stop being current (only those that are).
_RESET_OTHERS = ("UPDATE harvest_object SET current = false"
                 " WHERE package_id = :package_id AND current AND id <> :object_id")


def others_not_current(obj: HarvestObject, package_id: str) -> None:
    """The objects of dataset ``package_id`` other than ``obj`` that the session
    holds as current are not any more, as their rows (after a reset)."""
    for loaded in list(model.Session().identity_map.values()):
        if (isinstance(loaded, HarvestObject) and loaded is not obj
                and loaded.__dict__.get("package_id") == package_id
                and loaded.__dict__.get("current")):
            set_committed_value(loaded, "current", False)


def reset_others(obj: HarvestObject, package_id: str) -> None:
    """Make the other objects of dataset ``package_id`` not current (one
    statement, not committed)."""
    model.Session.execute(sa.text(_RESET_OTHERS),
                          {"package_id": package_id, "object_id": obj.id})
    others_not_current(obj, package_id)


@contextmanager
def finishing(obj: HarvestObject, report_status: str, *,
              reset_others_of: Optional[str] = None) -> Iterator[None]:
    """While the dataset of ``obj`` (its current object, ``package_id`` set) is
    created or updated: ``obj`` is given its final state (``COMPLETE``,
    ``report_status``) first; the plugin's ``IPackageController`` hooks call
    :func:`dataset_flushed` once the dataset is written, which sets
    ``import_finished``; the dataset's commit commits both. The object is
    then finished exactly when its dataset is committed: no commit of its
    own, and no window in which a committed dataset has an unfinished object.

    What the object has to write (its move to ``IMPORT``, its final state ...)
    is held back from the write's first flushes and released by the hook: the
    object's row is written once, with ``import_finished``, by the hook (one
    statement, with the hash extras it is given and, with
    ``reset_others_of``, the reset of the other objects of that dataset that
    are current). When no hook runs (``package_update`` found nothing to
    change) or the write raises, the changes are released on the way out
    (the next flush writes them, and the reset is made then unless the write
    raised), and a raising write gives the object back what it had (unless a
    rollback reloaded it)."""
    before = (obj.state, obj.report_status)
    previous = (getattr(_finishing, "obj", None), getattr(_finishing, "held", ()),
                getattr(_finishing, "reset", None))
    obj.state = ObjectState.COMPLETE.value
    obj.report_status = report_status
    _finishing.obj, _finishing.held = obj, _hold(obj)
    _finishing.reset = reset_others_of
    try:
        yield
    except BaseException:
        if not sa.inspect(obj).unloaded.intersection(("state", "report_status")):
            obj.state, obj.report_status = before
        raise
    else:
        if _finishing.reset is not None:  # no hook wrote the object
            reset_others(obj, _finishing.reset)
    finally:
        _release(obj)
        _finishing.obj, _finishing.held, _finishing.reset = previous


def _hold(obj: HarvestObject) -> tuple[str, ...]:
    """Make the pending changes of ``obj`` (persistent) invisible to flushes:
    their attributes keep their new values, marked as saved. Returns their
    names, for :func:`_release`. Nothing is held for an object not yet in the
    database (its INSERT cannot wait)."""
    state: Any = sa.inspect(obj)
    if not state.persistent:
        return ()
    held = tuple(key for key in state.committed_state
                 if key in state.dict and key in state.mapper.column_attrs)
    for key in held:
        set_committed_value(obj, key, state.dict[key])
    return held


def _release(obj: HarvestObject) -> None:
    """Let the next flush write the changes :func:`_hold` held back (those a
    rollback did not reload)."""
    held, _finishing.held = getattr(_finishing, "held", ()), ()
    if not held:
        return
    loaded: dict[str, Any] = sa.inspect(obj).dict
    for key in held:
        if key in loaded:
            flag_modified(obj, key)


def dataset_flushed(package: Any, extras: Any = None) -> bool:
    """Hook of ``package_create``/``package_update``, after their flush and before
    their indexing and commit (see :func:`finishing`): the object being
    finished with ``package`` is written now, in the dataset's transaction.

    :param extras: extras to write with it (``harvest_object``, ``rows`` of
        ``(key, value)``, ``replace``: delete its extras of those keys first),
        e.g. :class:`ckanext.harvest.lib.hashes.ImportExtras`
    :returns: whether ``extras`` were written (the caller adds them otherwise)
    """
    obj: Optional[HarvestObject] = getattr(_finishing, "obj", None)
    if obj is None or obj.package_id != package.id:
        return False
    obj.import_finished = utcnow()
    _finished_with_dataset.add(obj)
    if not sa.inspect(obj).persistent:
        _release(obj)  # its INSERT is the next flush's
        return False
    if extras is not None and extras.harvest_object is not obj:
        extras = None
    _write_object(obj, extras)
    return extras is not None


def _write_object(obj: HarvestObject, extras: Any) -> None:
    """Write the held and pending column changes of ``obj`` (persistent), with
    the pending reset of the other objects of its dataset and ``extras``:
    one statement (the unit of work of the commit's flush took longer than
    the statement itself, and the reset was a round trip of its own)."""
    state: Any = sa.inspect(obj)
    held, _finishing.held = getattr(_finishing, "held", ()), ()
    columns = state.mapper.column_attrs
    keys = [key for key in dict.fromkeys((*held, *state.committed_state))
            if key in columns and key in state.dict]
    values = {key: state.dict[key] for key in keys}
    params: dict[str, Any] = {"object_id": obj.id}
    parts = []
    reset, _finishing.reset = getattr(_finishing, "reset", None), None
    if reset is not None:
        parts.append("reset AS (%s)" % _RESET_OTHERS)
        params["package_id"] = reset
    if extras is not None and extras.rows:
        if extras.replace:
            parts.append("old AS (DELETE FROM harvest_object_extra WHERE"
                         " harvest_object_id = :object_id AND key IN :old_keys)")
            params["old_keys"] = tuple(key for key, _value in extras.rows)
        rows = []
        for number, (key, value) in enumerate(extras.rows):
            rows.append("(:x%d_id, :object_id, :x%d_key, :x%d_value)"
                        % (number, number, number))
            params.update({"x%d_id" % number: make_uuid(), "x%d_key" % number: key,
                           "x%d_value" % number: value})
        parts.append("extras AS (INSERT INTO harvest_object_extra"
                     " (id, harvest_object_id, key, value) VALUES %s)" % ", ".join(rows))
    if keys:
        assignments = ", ".join("%s = :v_%s" % (columns[key].columns[0].name, key)
                                for key in keys)
        params.update({"v_%s" % key: value for key, value in values.items()})
        main = "UPDATE harvest_object SET %s WHERE id = :object_id" % assignments
    else:
        main = "SELECT 1"
    sql = ("WITH %s %s" % (", ".join(parts), main)) if parts else main
    statement = sa.text(sql)
    if "old_keys" in params:
        statement = statement.bindparams(sa.bindparam("old_keys", expanding=True))
    model.Session.execute(statement, params)
    for key, value in values.items():
        set_committed_value(obj, key, value)
    if reset is not None:
        others_not_current(obj, reset)


def _committed_with_dataset(obj: HarvestObject) -> bool:
    """Whether the final state of ``obj`` was committed with its dataset and
    nothing changed it since (a rollback reloads the state; a harvester that
    deferred the commit leaves the object modified)."""
    if obj not in _finished_with_dataset:
        return False
    _finished_with_dataset.discard(obj)
    if session_has_changes():
        return False  # left to commit: the final save commits it, as before
    return (obj in model.Session() and obj.state == ObjectState.COMPLETE.value
            and obj.import_finished is not None)


def session_has_changes(besides: Optional[HarvestObject] = None) -> bool:
    """Whether ``model.Session`` has anything to commit (other than ``besides``)."""
    session = model.Session()
    return bool(session.new or session.deleted
                or any(session.is_modified(other) for other in session.dirty
                       if other is not besides))


def _report_status(obj: HarvestObject) -> str:
    if obj.state == ObjectState.ERROR.value:
        return ReportStatus.ERRORED.value
    if obj.current is False:
        return ReportStatus.DELETED.value
    same_package = model.Session.query(HarvestObject).filter(
        HarvestObject.package_id == obj.package_id
    ).count()
    return (ReportStatus.UPDATED if same_package >= 2 else ReportStatus.ADDED).value


#: Objects whose import stage raised: their move to IMPORT may be rolled back.
_importing: weakref.WeakSet[HarvestObject] = weakref.WeakSet()


def import_raised(obj: HarvestObject) -> bool:
    """Whether the exception being handled for ``obj`` came from its import stage
    (asked once per exception)."""
    if obj in _importing:
        _importing.discard(obj)
        return True
    return False


def _import(harvester: IHarvester, obj: HarvestObject) -> bool:
    """Run the import stage; returns False when the object is done: "unchanged",
    or finished with its dataset's commit (:func:`finishing`).

    The move to ``IMPORT`` is neither flushed nor committed here: the
    harvester's first commit (the dataset's) carries it, or else the final
    state's. A crash before
    then leaves the object ``FETCH``; both are redone the same way.
    """
    started = utcnow()
    obj.import_started = started
    obj.state = ObjectState.IMPORT.value
    model.Session.add(obj)  # written with the harvester's first flush
    _importing.add(obj)
    result = harvester.import_stage(obj)  # if it raises, obj stays in _importing
    _importing.discard(obj)
    if result and result != "unchanged" and _committed_with_dataset(obj):
        _written.pop(obj, None)
        return False  # finished with its dataset (see finishing)
    # Again: lost if the harvester rolled back before committing (set, not read,
    # so that an object expired by the harvester's commit is not loaded again).
    obj.import_started = started
    obj.import_finished = utcnow()
    if result:
        obj.state = ObjectState.COMPLETE.value
        if result == "unchanged":
            obj.report_status = ReportStatus.NOT_MODIFIED.value
            obj.save()
            return False
    else:
        obj.state = ObjectState.ERROR.value
    # Saved with the report status: a crash in between would leave a finished
    # object without one, and its redelivery is skipped as already done.
    return True


def _user_name(harvester: IHarvester) -> str:
    """The user a withdrawal acts as: the harvester's, else the site user."""
    get_name = getattr(harvester, "_get_user_name", None)
    if callable(get_name):
        return get_name()
    return removals.site_user_name()


def fetch_and_import_stages(harvester: IHarvester, obj: HarvestObject, *,
                            save_fetch: Optional[Callable[[HarvestObject], None]] = None,
                            ) -> None:
    """Run the fetch stage of ``obj``, then its import stage if fetch returned True.

    Sets the state, timestamps and report status of the object. Commits: the
    move to ``FETCH`` (with any pending attempt count) before the fetch stage,
    the move to ``IMPORT`` with the harvester's first commit, and the final
    state together with the report status (with the dataset itself when the
    harvester writes it through ``HarvesterBase``: see :func:`finishing`).
    Exceptions raised by the harvester propagate.

    ``save_fetch`` commits the move to ``FETCH`` instead of ``obj.save()`` (the
    fetch consumer writes it on its lock connection).
    """
    if removals.is_withdrawal(obj):
        # The framework's own object: the harvester's stages never see it.
        removals.withdraw(obj, _user_name(harvester))
        return
    obj.fetch_started = utcnow()
    obj.state = ObjectState.FETCH.value
    if save_fetch is None:
        obj.save()
    else:
        save_fetch(obj)
    result = harvester.fetch_stage(obj)
    obj.fetch_finished = utcnow()  # committed with the next step, whichever it is
    if result is True:
        if not _import(harvester, obj):
            return
    elif result == "unchanged":
        obj.state = ObjectState.COMPLETE.value
        obj.report_status = ReportStatus.NOT_MODIFIED.value
        obj.save()
        return
    else:
        obj.state = ObjectState.ERROR.value
    known = _written.pop(obj, None)
    if known is not None and obj.state == ObjectState.COMPLETE.value:
        obj.report_status = known
    else:
        model.Session.flush()
        obj.report_status = _report_status(obj)
    obj.save()
