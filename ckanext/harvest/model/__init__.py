"""Database model of ckanext-harvest.

Seven tables (``harvest_source``, ``harvest_job``, ``harvest_object``,
``harvest_object_extra``, ``harvest_gather_error``, ``harvest_object_error``,
``harvest_log``) mapped declaratively on CKAN's shared metadata. The schema in the
database is owned by the alembic revisions in ``ckanext/harvest/migration/harvest``;
the mappings here describe the same columns. There are no server-side defaults: every
default is applied by the ORM on INSERT, as the original extension did.
"""
from __future__ import annotations

import datetime
import logging
from typing import Any, Optional

import sqlalchemy as sa
from ckan import model
from ckan.model.domain_object import DomainObject
from ckan.model.types import make_uuid
from ckan.plugins import toolkit
from sqlalchemy import event, orm
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import Mapped, relationship

from ckanext.harvest.model.enums import (
    UPDATE_FREQUENCIES,
    ErrorStage,
    Frequency,
    JobStatus,
    LogLevel,
    ObjectState,
    ReportStatus,
)

log = logging.getLogger(__name__)

try:
    from sqlalchemy.orm import mapped_column
except ImportError:  # SQLAlchemy 1.4 (CKAN 2.11): Columns under Mapped[] annotations
    mapped_column = sa.Column  # type: ignore[misc,assignment]

__all__ = [
    "UPDATE_FREQUENCIES",
    "ErrorStage",
    "Frequency",
    "JobStatus",
    "ObjectState",
    "ReportStatus",
    "LogLevel",
    "HarvestError",
    "HarvestDomainObject",
    "HarvestSource",
    "HarvestJob",
    "HarvestObject",
    "HarvestObjectExtra",
    "HarvestGatherError",
    "HarvestObjectError",
    "HarvestLog",
    "harvest_object_before_insert_listener",
    "PackageIdHarvestSourceIdMismatch",
    "clean_harvest_log",
    "harvest_source_table",
    "harvest_job_table",
    "harvest_object_table",
    "harvest_object_extra_table",
    "harvest_gather_error_table",
    "harvest_object_error_table",
    "harvest_log_table",
]


def utcnow() -> datetime.datetime:
    """Naive UTC "now", the timestamp convention of every harvest table."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class HarvestError(Exception):
    """Generic harvest error."""


class PackageIdHarvestSourceIdMismatch(Exception):
    """Kept for compatibility: a package id does not match its harvest source id."""


class HarvestDomainObject(DomainObject):
    """Base of the harvest model classes: CKAN's active-record helpers plus lookups."""

    key_attr = "id"

    @classmethod
    def get(
        cls, key: Any, default: Any = None, attr: Optional[str] = None
    ) -> Any:
        """Return the first row whose ``attr`` (default: ``id``) equals ``key``.

        :param key: value to look for
        :param default: returned when nothing matches
        :param attr: column name to compare, ``key_attr`` when omitted
        :returns: the matching object or ``default``
        """
        if key is not None and not isinstance(key, (str, int, float)):
            return default  # a list or dict from a request body matches no row
        column = getattr(cls, attr or cls.key_attr)
        found = (
            model.Session.query(cls).autoflush(False).filter(column == key).first()
        )
        return found if found is not None else default

    @classmethod
    def filter(cls, **kwds: Any) -> Any:
        """Return a query of the rows matching ``kwds`` (``filter_by`` semantics)."""
        return model.Session.query(cls).autoflush(False).filter_by(**kwds)


class HarvestSource(toolkit.BaseModel, HarvestDomainObject):
    """A harvest source: the ``harvest_source`` row beside the source dataset."""

    __tablename__ = "harvest_source"

    id: Mapped[str] = mapped_column(sa.UnicodeText, primary_key=True, default=make_uuid)
    url: Mapped[str] = mapped_column(sa.UnicodeText, nullable=False)
    title: Mapped[Optional[str]] = mapped_column(sa.UnicodeText, default="")
    description: Mapped[Optional[str]] = mapped_column(sa.UnicodeText, default="")
    config: Mapped[Optional[str]] = mapped_column(sa.UnicodeText, default="")
    created: Mapped[Optional[datetime.datetime]] = mapped_column(
        sa.DateTime, default=utcnow
    )
    type: Mapped[str] = mapped_column(sa.UnicodeText, nullable=False)
    active: Mapped[Optional[bool]] = mapped_column(sa.Boolean, default=True)
    user_id: Mapped[Optional[str]] = mapped_column(sa.UnicodeText, default="")
    publisher_id: Mapped[Optional[str]] = mapped_column(sa.UnicodeText, default="")
    frequency: Mapped[Optional[str]] = mapped_column(
        sa.UnicodeText, default=Frequency.MANUAL.value
    )
    next_run: Mapped[Optional[datetime.datetime]] = mapped_column(sa.DateTime)

    jobs: Mapped[list[HarvestJob]] = relationship(
        "HarvestJob",
        lazy="select",
        back_populates="source",
        order_by=lambda: HarvestJob.created,
    )

    def __repr__(self) -> str:
        return "<HarvestSource id=%s title=%s url=%s active=%r>" % (
            self.id, self.title, self.url, self.active,
        )

    def __str__(self) -> str:
        return self.__repr__()

    def get_jobs(self, status: Optional[str] = None) -> list[HarvestJob]:
        """Return the jobs of this source, optionally only those with ``status``."""
        query = model.Session.query(HarvestJob).filter(HarvestJob.source_id == self.id)
        if status:
            query = query.filter(HarvestJob.status == status)
        return query.order_by(HarvestJob.created).all()


class HarvestJob(toolkit.BaseModel, HarvestDomainObject):
    """One run of a harvest source (gather, then fetch/import of its objects)."""

    __tablename__ = "harvest_job"

    id: Mapped[str] = mapped_column(sa.UnicodeText, primary_key=True, default=make_uuid)
    created: Mapped[Optional[datetime.datetime]] = mapped_column(
        sa.DateTime, default=utcnow
    )
    gather_started: Mapped[Optional[datetime.datetime]] = mapped_column(sa.DateTime)
    gather_finished: Mapped[Optional[datetime.datetime]] = mapped_column(sa.DateTime)
    finished: Mapped[Optional[datetime.datetime]] = mapped_column(sa.DateTime)
    source_id: Mapped[Optional[str]] = mapped_column(
        sa.UnicodeText, sa.ForeignKey("harvest_source.id")
    )
    status: Mapped[str] = mapped_column(
        sa.UnicodeText, nullable=False, default=JobStatus.NEW.value
    )

    source: Mapped[Optional[HarvestSource]] = relationship(
        HarvestSource, back_populates="jobs"
    )

    def _objects(self) -> Any:
        return model.Session.query(HarvestObject).filter(
            HarvestObject.harvest_job_id == self.id
        )

    def get_last_finished_object(self) -> Optional[HarvestObject]:
        """Return the job's latest completed object (by ``import_finished``)."""
        return (
            self._objects()
            .filter(HarvestObject.state == ObjectState.COMPLETE.value)
            .filter(HarvestObject.import_finished.isnot(None))
            .order_by(HarvestObject.import_finished.desc())
            .first()
        )

    def get_last_gathered_object(self) -> Optional[HarvestObject]:
        """Return the job's most recently gathered object."""
        return self._objects().order_by(HarvestObject.gathered.desc()).first()

    def get_last_action_time(self) -> Optional[datetime.datetime]:
        """Return when anything last happened to this job.

        The first of: the last finished object's ``import_finished``, the job's
        ``gather_finished``, the last gathered object's ``gathered``, ``created``.
        """
        finished = self.get_last_finished_object()
        if finished is not None and finished.import_finished:
            return finished.import_finished
        if self.gather_finished:
            return self.gather_finished
        gathered = self.get_last_gathered_object()
        if gathered is not None and gathered.gathered:
            return gathered.gathered
        return self.created

    def get_gather_errors(self) -> list[HarvestGatherError]:
        """Return the job's gather errors, newest first."""
        return (
            model.Session.query(HarvestGatherError)
            .filter(HarvestGatherError.harvest_job_id == self.id)
            .order_by(HarvestGatherError.created.desc())
            .all()
        )


class HarvestObject(toolkit.BaseModel, HarvestDomainObject):
    """One remote record of a job: what was gathered, fetched and imported."""

    __tablename__ = "harvest_object"
    __table_args__ = (
        sa.Index("harvest_job_id_idx", "harvest_job_id"),
        sa.Index("harvest_source_id_idx", "harvest_source_id"),
        sa.Index("package_id_idx", "package_id"),
        sa.Index("guid_idx", "guid"),
    )

    id: Mapped[str] = mapped_column(sa.UnicodeText, primary_key=True, default=make_uuid)
    guid: Mapped[Optional[str]] = mapped_column(sa.UnicodeText, default="")
    current: Mapped[Optional[bool]] = mapped_column(sa.Boolean, default=False)
    gathered: Mapped[Optional[datetime.datetime]] = mapped_column(
        sa.DateTime, default=utcnow
    )
    fetch_started: Mapped[Optional[datetime.datetime]] = mapped_column(sa.DateTime)
    content: Mapped[Optional[str]] = mapped_column(sa.UnicodeText, nullable=True)
    fetch_finished: Mapped[Optional[datetime.datetime]] = mapped_column(sa.DateTime)
    import_started: Mapped[Optional[datetime.datetime]] = mapped_column(sa.DateTime)
    import_finished: Mapped[Optional[datetime.datetime]] = mapped_column(sa.DateTime)
    state: Mapped[Optional[str]] = mapped_column(
        sa.UnicodeText, default=ObjectState.WAITING.value
    )
    metadata_modified_date: Mapped[Optional[datetime.datetime]] = mapped_column(
        sa.DateTime
    )
    retry_times: Mapped[Optional[int]] = mapped_column(sa.Integer, default=0)
    harvest_job_id: Mapped[Optional[str]] = mapped_column(
        sa.UnicodeText, sa.ForeignKey("harvest_job.id")
    )
    harvest_source_id: Mapped[Optional[str]] = mapped_column(
        sa.UnicodeText, sa.ForeignKey("harvest_source.id")
    )
    package_id: Mapped[Optional[str]] = mapped_column(
        sa.UnicodeText,
        sa.ForeignKey("package.id", deferrable=True),
        nullable=True,
    )
    report_status: Mapped[Optional[str]] = mapped_column(sa.UnicodeText, nullable=True)

    package: Mapped[Optional[model.Package]] = relationship(
        model.Package,
        backref=orm.backref("harvest_objects", lazy="select"),
        lazy="select",
    )
    job: Mapped[Optional[HarvestJob]] = relationship(
        HarvestJob, backref=orm.backref("objects", lazy="select"), lazy="select"
    )
    source: Mapped[Optional[HarvestSource]] = relationship(
        HarvestSource, backref=orm.backref("objects", lazy="select"), lazy="select"
    )


class HarvestObjectExtra(toolkit.BaseModel, HarvestDomainObject):
    """A key/value pair attached to a harvest object by its harvester."""

    __tablename__ = "harvest_object_extra"
    __table_args__ = (sa.Index("harvest_object_id_idx", "harvest_object_id"),)

    id: Mapped[str] = mapped_column(sa.UnicodeText, primary_key=True, default=make_uuid)
    harvest_object_id: Mapped[Optional[str]] = mapped_column(
        sa.UnicodeText, sa.ForeignKey("harvest_object.id")
    )
    key: Mapped[Optional[str]] = mapped_column(sa.UnicodeText)
    value: Mapped[Optional[str]] = mapped_column(sa.UnicodeText)

    object: Mapped[Optional[HarvestObject]] = relationship(
        HarvestObject,
        backref=orm.backref("extras", cascade="all, delete-orphan"),
    )


class HarvestGatherError(toolkit.BaseModel, HarvestDomainObject):
    """An error met while gathering a job."""

    __tablename__ = "harvest_gather_error"

    id: Mapped[str] = mapped_column(sa.UnicodeText, primary_key=True, default=make_uuid)
    harvest_job_id: Mapped[Optional[str]] = mapped_column(
        sa.UnicodeText, sa.ForeignKey("harvest_job.id")
    )
    message: Mapped[Optional[str]] = mapped_column(sa.UnicodeText)
    created: Mapped[Optional[datetime.datetime]] = mapped_column(
        sa.DateTime, default=utcnow
    )

    job: Mapped[Optional[HarvestJob]] = relationship(
        HarvestJob, backref=orm.backref("gather_errors")
    )

    @classmethod
    def create(cls, message: str, job: HarvestJob) -> None:
        """Record a gather error for ``job`` and commit it.

        :param message: the error text shown to operators
        :param job: the job the error belongs to
        """
        try:
            cls(message=message, job=job).save()
        except InvalidRequestError:
            model.Session.rollback()
            cls(message=message, job=job).save()
        finally:
            log.info(message)


class HarvestObjectError(toolkit.BaseModel, HarvestDomainObject):
    """An error met while fetching, validating or importing one object."""

    __tablename__ = "harvest_object_error"
    __table_args__ = (
        sa.Index("harvest_error_harvest_object_id_idx", "harvest_object_id"),
    )

    id: Mapped[str] = mapped_column(sa.UnicodeText, primary_key=True, default=make_uuid)
    harvest_object_id: Mapped[Optional[str]] = mapped_column(
        sa.UnicodeText, sa.ForeignKey("harvest_object.id")
    )
    message: Mapped[Optional[str]] = mapped_column(sa.UnicodeText)
    stage: Mapped[Optional[str]] = mapped_column(sa.UnicodeText)
    line: Mapped[Optional[int]] = mapped_column(sa.Integer)
    created: Mapped[Optional[datetime.datetime]] = mapped_column(
        sa.DateTime, default=utcnow
    )

    object: Mapped[Optional[HarvestObject]] = relationship(
        HarvestObject,
        backref=orm.backref("errors", cascade="all, delete-orphan"),
    )

    @classmethod
    def create(
        cls,
        message: str,
        object: HarvestObject,
        stage: str = ErrorStage.FETCH.value,
        line: Optional[int] = None,
    ) -> None:
        """Record an error of ``object`` at ``stage`` and commit it.

        :param message: the error text
        :param object: the harvest object concerned
        :param stage: ``Fetch``, ``Import``, ``Validation`` or free text
        :param line: optional line number in the source document
        """
        def _new() -> HarvestObjectError:
            return cls(message=message, object=object, stage=stage, line=line)

        try:
            _new().save()
        except InvalidRequestError:
            for step in (model.Session.rollback, model.Session.remove):
                try:
                    step()
                except Exception:  # noqa: BLE001 - best effort recovery
                    log.debug("Session recovery step %s failed", step.__name__)
            _new().save()
        finally:
            log.debug("%s, line %s" % (message, line) if line else message)


class HarvestLog(toolkit.BaseModel, HarvestDomainObject):
    """A log record stored by :class:`ckanext.harvest.log.DBLogHandler`."""

    __tablename__ = "harvest_log"

    id: Mapped[str] = mapped_column(sa.UnicodeText, primary_key=True, default=make_uuid)
    content: Mapped[str] = mapped_column(sa.UnicodeText, nullable=False)
    level: Mapped[Optional[str]] = mapped_column(
        sa.Enum(*[lvl.value for lvl in LogLevel], name="log_level")
    )
    created: Mapped[Optional[datetime.datetime]] = mapped_column(
        sa.DateTime, default=utcnow
    )


def harvest_object_before_insert_listener(
    mapper: Any, connection: Any, target: HarvestObject
) -> None:
    """Fill ``harvest_source_id`` from the object's job before it is inserted.

    :raises Exception: when the object has neither a source nor a job
    """
    if not target.harvest_source_id or not target.source:
        job = target.job
        if not job:
            raise Exception("You must define a Harvest Job for each Harvest Object")
        target.harvest_source_id = job.source.id if job.source else job.source_id


event.listen(HarvestObject, "before_insert", harvest_object_before_insert_listener)


def clean_harvest_log(condition: datetime.datetime) -> None:
    """Delete ``harvest_log`` rows created at or before ``condition``.

    :param condition: the cut-off datetime (naive UTC)
    """
    try:
        model.Session.query(HarvestLog).filter(
            HarvestLog.created <= condition
        ).delete(synchronize_session=False)
        model.Session.commit()
    except InvalidRequestError:
        model.Session.rollback()
        log.error("An error occurred while trying to clean-up the harvest log table")
    log.info("Harvest log table clean-up finished successfully")


# Legacy module-level table handles (ckanext-spatial still imports
# ``harvest_object_table``); they are the mapped tables themselves.
harvest_source_table = HarvestSource.__table__
harvest_job_table = HarvestJob.__table__
harvest_object_table = HarvestObject.__table__
harvest_object_extra_table = HarvestObjectExtra.__table__
harvest_gather_error_table = HarvestGatherError.__table__
harvest_object_error_table = HarvestObjectError.__table__
harvest_log_table = HarvestLog.__table__
