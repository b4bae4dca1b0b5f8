"""Removal of harvested datasets that vanished at their source (``delete_missing``).

A harvester only reports, at the end of a gather that saw the whole remote
listing, the identifiers (object guids) it saw
(:meth:`~ckanext.harvest.harvesters.base.HarvesterBase.record_seen_identifiers`).
Everything else happens here, for every harvester alike:

* **planning** (:func:`record_seen`): the datasets of the source (its current
  objects) whose guid was not seen get a ``missing_since`` mark, kept in a
  ``harvest_object_extra`` row of their current object (no schema change); a seen
  one loses its marks (it reappeared within the grace period). Those missing for
  at least ``after_days`` are due: one *withdrawal object* each is created in the
  job (an object with the extra ``harvest_withdrawal`` = the mode and the
  dataset's ``package_id``), queued like any other object;
* **circuit breaker**: when the due withdrawals are more than ``max_fraction`` of
  the source's datasets, or the source listed nothing, none is created: each due
  dataset gets a ``removal_held`` mark naming the job, and the job gets a gather
  error saying so (it shows on the job page, in the reports and in the mail to
  the source's admins). :func:`approve` turns the held marks of one job into
  withdrawal objects of that job, once;
* **withdrawal** (:func:`withdraw`, run by the fetch consumer instead of the
  harvester's stages): in one transaction, the dataset is deleted or made
  private, its objects stop being current (which also drops its marks) and the
  withdrawal object ends ``COMPLETE`` with report status ``deleted``. A dataset
  without a current object is withdrawn already: a redelivered withdrawal does
  nothing;
* **restoration**: a withdrawn dataset (no current object, a completed
  withdrawal object) is written again by the next import of its record, whatever
  its remote modification date (:func:`was_withdrawn`).

The mode ``keep`` (the default) does none of this.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
from typing import Any, Mapping, Optional, cast

import sqlalchemy as sa
from ckan import model
from ckan.plugins import toolkit
from ckan.types import Context
from sqlalchemy import orm

from ckanext.harvest import options
from ckanext.harvest.model import (
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
    HarvestObjectExtra,
    HarvestSource,
    ObjectState,
    ReportStatus,
    utcnow,
)

log = logging.getLogger(__name__)

#: The source configuration option.
CONFIG_KEY = "delete_missing"
MODE_KEEP = "keep"
MODE_DELETE = "delete"
MODE_PRIVATE = "private"
MODES = (MODE_DELETE, MODE_PRIVATE, MODE_KEEP)

#: Extra of a withdrawal object: its value is the mode (``delete``/``private``).
WITHDRAWAL_KEY = "harvest_withdrawal"
#: Extra of a dataset's current object: when its record was first missed (ISO).
MISSING_KEY = "missing_since"
#: Extra of a dataset's current object: the job whose withdrawal of it is held.
HELD_KEY = "removal_held"
_MARKS = (MISSING_KEY, HELD_KEY)

#: Withdrawal object ids created by :func:`record_seen`, per job, until the
#: gather stage driver adds them to the gather's result (:func:`gathered`).
_created: dict[str, list[str]] = {}


def now() -> datetime.datetime:
    """The clock of the grace period (naive UTC; tests patch it)."""
    return utcnow()


# -- settings ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """The ``delete_missing`` settings of a source."""

    mode: str
    after_days: float
    max_fraction: float

    @property
    def enabled(self) -> bool:
        return self.mode != MODE_KEEP


def site_default(config: Mapping[str, Any]) -> dict[str, Any]:
    """The site-wide default of the ``ckan.harvest.delete_missing.*`` options."""
    return {
        "mode": options.value(config, options.DELETE_MISSING_MODE),
        "after_days": options.value(config, options.DELETE_MISSING_AFTER_DAYS),
        "max_fraction": options.value(config, options.DELETE_MISSING_MAX_FRACTION),
    }


def check_settings(value: Any, where: str = CONFIG_KEY) -> dict[str, Any]:
    """Check a ``delete_missing`` object (any subset of its three keys).

    :param value: the value of the option
    :param where: the name used in the messages
    :returns: the checked keys, numbers as numbers
    :raises ValueError: with a one-line message naming the bad key
    """
    if not isinstance(value, dict):
        raise ValueError(
            '%s must be an object such as {"mode": "delete", "after_days": 7, '
            '"max_fraction": 0.1}' % where)
    unknown = sorted(set(value) - {"mode", "after_days", "max_fraction"})
    if unknown:
        raise ValueError("%s: unknown key(s) %s (allowed: mode, after_days, "
                         "max_fraction)" % (where, ", ".join(unknown)))
    checked: dict[str, Any] = {}
    if "mode" in value:
        if value["mode"] not in MODES:
            raise ValueError("%s.mode must be one of delete, private, keep (got %r)"
                             % (where, value["mode"]))
        checked["mode"] = value["mode"]
    if "after_days" in value:
        checked["after_days"] = _number(value["after_days"], where + ".after_days",
                                        0, None, "a number of days, 0 or more")
    if "max_fraction" in value:
        checked["max_fraction"] = _number(value["max_fraction"],
                                          where + ".max_fraction", 0, 1,
                                          "a number from 0 to 1")
    return checked


def _number(value: Any, name: str, low: float, high: Optional[float],
            expected: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < low \
            or (high is not None and value > high):
        raise ValueError("%s must be %s (got %r)" % (name, expected, value))
    return float(value)


def check_source_config(config_obj: dict[str, Any]) -> None:
    """Check the ``delete_missing`` option of a source configuration, if any.

    :raises ValueError: with a one-line message
    """
    if CONFIG_KEY in config_obj:
        check_settings(config_obj[CONFIG_KEY])


def settings_of(source: HarvestSource) -> Settings:
    """The settings of ``source``: its configuration over the site default.

    :raises ValueError: the site default or the source's option is invalid
    """
    merged = check_settings(site_default(toolkit.config),
                            "ckan.harvest.delete_missing")
    try:
        config_obj = json.loads(source.config or "{}")
    except ValueError:
        config_obj = {}
    if isinstance(config_obj, dict) and CONFIG_KEY in config_obj:
        merged.update(check_settings(config_obj[CONFIG_KEY]))
    return Settings(merged["mode"], merged["after_days"], merged["max_fraction"])


def enabled_for(source: HarvestSource) -> bool:
    """Whether the source withdraws missing datasets (mode not ``keep``).

    A harvester asks before listing what it would not list otherwise.
    """
    try:
        return settings_of(source).enabled
    except ValueError as e:
        log.warning("Source %s: delete_missing ignored: %s", source.id, e)
        return False


# -- planning ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Dataset:
    """A dataset of the source: its current object and the marks on it."""

    object_id: str
    guid: str
    package_id: str
    marks: dict[str, HarvestObjectExtra] = dataclasses.field(default_factory=dict)

    def missing_since(self) -> Optional[datetime.datetime]:
        mark = self.marks.get(MISSING_KEY)
        if mark is None or not mark.value:
            return None
        try:
            return datetime.datetime.fromisoformat(mark.value)
        except ValueError:
            return None


def _source_datasets(source_id: str) -> list[_Dataset]:
    """The active datasets of the source, with their marks (two queries)."""
    rows = (model.Session.query(HarvestObject.id, HarvestObject.guid,
                                HarvestObject.package_id)
            .join(model.Package, model.Package.id == HarvestObject.package_id)
            .filter(HarvestObject.harvest_source_id == source_id,
                    HarvestObject.current.is_(True),
                    model.Package.state == model.State.ACTIVE)
            .all())
    datasets = {object_id: _Dataset(object_id, guid or "", package_id)
                for object_id, guid, package_id in rows}
    marks = (model.Session.query(HarvestObjectExtra)
             .join(HarvestObject, HarvestObject.id == HarvestObjectExtra.harvest_object_id)
             .filter(HarvestObject.harvest_source_id == source_id,
                     HarvestObject.current.is_(True),
                     HarvestObjectExtra.key.in_(_MARKS)))
    for mark in marks:
        dataset = datasets.get(mark.harvest_object_id or "")
        if dataset is not None:
            dataset.marks[mark.key or ""] = mark
    return list(datasets.values())


def _set_mark(dataset: _Dataset, key: str, value: str) -> None:
    mark = dataset.marks.get(key)
    if mark is None:
        mark = HarvestObjectExtra(harvest_object_id=dataset.object_id, key=key)
        dataset.marks[key] = mark
    mark.value = value
    model.Session.add(mark)


def _clear_marks(dataset: _Dataset) -> None:
    for mark in dataset.marks.values():
        model.Session.delete(mark)
    dataset.marks.clear()


def record_seen(job: HarvestJob, guids: set[str]) -> list[str]:
    """Plan the withdrawals of ``job`` from the guids its gather saw; commit.

    :param job: the job being gathered
    :param guids: every identifier the source lists now (from a complete listing)
    :returns: ids of the withdrawal objects created (also kept for
        :func:`gathered`)
    """
    source = job.source
    if source is None:
        return []
    settings = settings_of(source)
    if not settings.enabled:
        return []
    datasets = _source_datasets(source.id)
    due = _mark_missing(datasets, guids, now(), settings.after_days)
    tripped = bool(due) and (not guids or len(due) > settings.max_fraction * len(datasets))
    created: list[str] = []
    if tripped:
        _hold(job, due, len(datasets), settings, empty=not guids)
    else:
        created = [_new_withdrawal(job, dataset, settings.mode) for dataset in due]
    model.Session.commit()
    if created:
        _created.setdefault(job.id, []).extend(created)
    log.info("Job %s: %d dataset(s) of %d missing at the source, %d due, %s",
             job.id, sum(1 for d in datasets if d.guid not in guids), len(datasets),
             len(due), "held" if tripped else "withdrawn")
    return created


def _mark_missing(datasets: list[_Dataset], guids: set[str],
                  moment: datetime.datetime, after_days: float) -> list[_Dataset]:
    """Mark the missing datasets, unmark the seen ones; the due ones."""
    due = []
    limit = moment - datetime.timedelta(days=after_days)
    for dataset in datasets:
        if dataset.guid in guids:
            _clear_marks(dataset)
            continue
        since = dataset.missing_since()
        if since is None:
            since = moment
            _set_mark(dataset, MISSING_KEY, moment.isoformat())
        if since <= limit:
            due.append(dataset)
    return due


def _hold(job: HarvestJob, due: list[_Dataset], total: int, settings: Settings,
          empty: bool) -> None:
    for dataset in due:
        _set_mark(dataset, HELD_KEY, job.id)
    reason = ("the source listed no dataset at all" if empty else
              "more than the max_fraction %g of its %d datasets"
              % (settings.max_fraction, total))
    model.Session.add(HarvestGatherError(message=(
        "Removal of %d dataset(s) missing at the source held back (circuit "
        "breaker): %s. Nothing was withdrawn. If the source really removed them, "
        "approve with \"ckan harvester job approve-removals %s\" or the button on "
        "this job's page." % (len(due), reason, job.id)), harvest_job_id=job.id))
    log.warning("Job %s: withdrawal of %d dataset(s) held back (%s)",
                job.id, len(due), reason)


def _new_withdrawal(job: HarvestJob, dataset: _Dataset, mode: str) -> str:
    obj = HarvestObject(guid=dataset.guid, job=job, package_id=dataset.package_id)
    obj.extras = [HarvestObjectExtra(key=WITHDRAWAL_KEY, value=mode)]
    model.Session.add(obj)
    model.Session.flush()
    return obj.id


def gathered(job: HarvestJob, result: Any) -> Any:
    """The gather's result plus the withdrawal objects planned during it.

    :param job: the job just gathered
    :param result: what the harvester's gather stage returned
    """
    created = _created.pop(job.id, [])
    if not created:
        return result
    if isinstance(result, list):
        return result + [object_id for object_id in created if object_id not in result]
    return created


def forget(job: HarvestJob) -> None:
    """Drop what :func:`record_seen` kept for a job whose gather failed."""
    _created.pop(job.id, None)


# -- approval ---------------------------------------------------------------------------


def held_count(job_id: str) -> int:
    """How many withdrawals of the job are held (waiting for approval)."""
    return model.Session.query(HarvestObjectExtra).join(
        HarvestObject, HarvestObject.id == HarvestObjectExtra.harvest_object_id
    ).filter(HarvestObjectExtra.key == HELD_KEY, HarvestObjectExtra.value == job_id,
             HarvestObject.current.is_(True)).count()


def approve(job: HarvestJob) -> list[str]:
    """Turn the held withdrawals of ``job`` into withdrawal objects of it; commit.

    A second approval finds nothing held and creates nothing. The source's
    mode at approval time applies: with ``keep`` (the operator changed it since)
    the holds are dropped and nothing is withdrawn.

    :returns: ids of the objects created (to be queued on the fetch queue)
    """
    source = job.source
    if source is None:
        return []
    mode = settings_of(source).mode
    held = [d for d in _source_datasets(source.id)
            if (mark := d.marks.get(HELD_KEY)) is not None and mark.value == job.id]
    created = []
    for dataset in held:
        model.Session.delete(dataset.marks.pop(HELD_KEY))
        if mode != MODE_KEEP:
            created.append(_new_withdrawal(job, dataset, mode))
    model.Session.commit()
    log.info("Job %s: %d held withdrawal(s) approved", job.id, len(created))
    return created


# -- withdrawal -------------------------------------------------------------------------


def is_withdrawal(obj: HarvestObject) -> bool:
    """Whether ``obj`` is a withdrawal object (only objects gathered without
    content and with a dataset are looked at: no query for the others)."""
    if obj.package_id is None or obj.content is not None:
        return False
    return _mode_of(obj) is not None


def _mode_of(obj: HarvestObject) -> Optional[str]:
    for extra in obj.extras:
        if extra.key == WITHDRAWAL_KEY:
            return extra.value
    return None


def _current_objects(package_id: str) -> list[HarvestObject]:
    return model.Session.query(HarvestObject).filter(
        HarvestObject.package_id == package_id, HarvestObject.current.is_(True)).all()


def withdraw(obj: HarvestObject, user_name: str) -> None:
    """Withdraw the dataset of a withdrawal object, in one transaction.

    The dataset is deleted (``package_delete``) or made private
    (``package_patch``); its objects stop being current; ``obj`` ends
    ``COMPLETE``, report status ``deleted``. A dataset withdrawn already (no
    current object) or gone is left alone (``not modified``). A dataset without
    organisation cannot be private in CKAN: it is kept, and ``obj`` ends with an
    error saying so.
    """
    obj.fetch_started = obj.import_started = utcnow()
    obj.state = ObjectState.IMPORT.value
    package = model.Package.get(obj.package_id) if obj.package_id else None
    current = _current_objects(package.id) if package is not None else []
    mode = _mode_of(obj)
    if not current or package is None or package.state != model.State.ACTIVE:
        return _finish(obj, ReportStatus.NOT_MODIFIED.value)
    if mode == MODE_PRIVATE and not package.owner_org:
        _finish(obj, ReportStatus.ERRORED.value, ObjectState.ERROR.value)
        HarvestObjectError.create(
            "Dataset %s has no organisation: it cannot be made private, it is kept"
            % package.name, obj, "Import")
        return None
    try:
        _withdraw_package(obj, package, current, mode or MODE_DELETE, user_name)
    except Exception as exc:  # noqa: BLE001 - recorded as this object's error
        model.Session.rollback()
        log.exception("Could not withdraw dataset %s", obj.package_id)
        _finish(obj, ReportStatus.ERRORED.value, ObjectState.ERROR.value)
        HarvestObjectError.create("Could not withdraw dataset %s: %s"
                                  % (obj.package_id, exc), obj, "Import")
    return None


def _withdraw_package(obj: HarvestObject, package: model.Package,
                      current: list[HarvestObject], mode: str, user_name: str) -> None:
    for previous in current:
        previous.current = False
    model.Session.query(HarvestObjectExtra).filter(
        HarvestObjectExtra.harvest_object_id.in_([o.id for o in current]),
        HarvestObjectExtra.key.in_(_MARKS)).delete(synchronize_session=False)
    obj.current = False
    obj.state = ObjectState.COMPLETE.value
    obj.fetch_finished = obj.import_finished = utcnow()
    obj.report_status = ReportStatus.DELETED.value
    model.Session.add(obj)
    model.Session.flush()
    context = cast(Context, {"model": model, "session": model.Session,
                             "user": user_name, "ignore_auth": True})
    # The action's commit carries the object's changes: all or nothing.
    if mode == MODE_PRIVATE:
        toolkit.get_action("package_patch")(context, {"id": package.id, "private": True})
    else:
        toolkit.get_action("package_delete")(context, {"id": package.id})
    log.info("Dataset %s withdrawn (%s): missing at the source", package.id, mode)


def _finish(obj: HarvestObject, report_status: str,
            state: str = ObjectState.COMPLETE.value) -> None:
    obj.state = state
    obj.fetch_finished = obj.import_finished = utcnow()
    obj.report_status = report_status
    obj.save()


# -- restoration ------------------------------------------------------------------------


def withdrawn_condition(package_id: Any) -> Any:
    """SQL condition: the dataset ``package_id`` (a value or a column) was
    withdrawn and not imported since (no current object, and a completed
    withdrawal object)."""
    objects = sa.select(HarvestObject.id).where(HarvestObject.package_id == package_id)
    current = objects.where(HarvestObject.current.is_(True)).exists()
    withdrawal = (objects.join(HarvestObjectExtra,
                               HarvestObjectExtra.harvest_object_id == HarvestObject.id)
                  .where(HarvestObjectExtra.key == WITHDRAWAL_KEY,
                         HarvestObject.report_status == ReportStatus.DELETED.value)
                  .exists())
    return sa.and_(~current, withdrawal)


def was_withdrawn(package_id: Optional[str]) -> bool:
    """Whether the dataset was withdrawn and not imported since: no current
    object, and a completed withdrawal object."""
    if not package_id:
        return False
    # One round trip on every import (this runs before each dataset is written).
    return bool(model.Session.execute(sa.select(withdrawn_condition(package_id))).scalar())


def site_user_name() -> str:
    """Name of CKAN's site user (for harvesters without a user of their own)."""
    context = cast(Context, {"model": model, "session": model.Session,
                             "ignore_auth": True, "defer_commit": True})
    return toolkit.get_action("get_site_user")(context, {})["name"]


def withdrawn_guids(source_id: Optional[str]) -> set[str]:
    """Guids of the source's datasets withdrawn and not imported since."""
    other = orm.aliased(HarvestObject)
    current = sa.exists().where(other.package_id == model.Package.id,
                                other.current.is_(True))
    rows = (model.Session.query(HarvestObject.guid)
            .join(HarvestObjectExtra,
                  HarvestObjectExtra.harvest_object_id == HarvestObject.id)
            .join(model.Package, model.Package.id == HarvestObject.package_id)
            .filter(HarvestObject.harvest_source_id == source_id,
                    HarvestObjectExtra.key == WITHDRAWAL_KEY,
                    HarvestObject.report_status == ReportStatus.DELETED.value,
                    ~current)
            .distinct())
    return {guid for (guid,) in rows if guid}
