"""``HarvesterBase``: the base class harvesters build on.

It gathers the helpers every harvester needs: recording errors, choosing the user to
act as, giving harvested datasets unique names, creating harvest objects and writing
the harvested dataset (create or update) while keeping ``harvest_object.current`` and
``harvest_object.package_id`` consistent.

The helpers that read no configuration (free names, remote modification dates,
REST-to-action conversion, tag cleaning) live in :mod:`._package`; what reads
``config`` (the acting user, the name suffix, the fields not to overwrite) stays
here.
"""
from __future__ import annotations

import enum
import logging
import re
import uuid
from typing import Any, Optional, Union, cast
from urllib.parse import urlparse

import sqlalchemy as sa
from ckan import model
from ckan import plugins as p
from ckan.lib.munge import munge_tag, munge_title_to_name
from ckan.logic.schema import default_create_package_schema
from ckan.plugins import toolkit
from ckan.plugins.toolkit import config
from ckan.types import Context, Schema

from ckanext.harvest import options
from ckanext.harvest.harvesters import _package
from ckanext.harvest.harvesters._package import NameOrNone, PackageDictForm
from ckanext.harvest.interfaces import IHarvester
from ckanext.harvest.lib import detaching, hashes, indexing, jobs, removals, stages
from ckanext.harvest.model import (
    ErrorStage,
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
)

__all__ = [
    "HarvesterBase",
    "NameAppendType",
    "check_http_url",
    "munge_tag",
    "munge_title_to_name",
]

# Module names downstream test suites patch (e.g. ``...harvesters.base.config``):
# ``config``, ``model``, ``toolkit``, ``munge_tag`` and ``log`` are read at call
# time, through this module (``munge_tag`` is handed down to ``_package``), so
# that such a patch changes what the methods of HarvesterBase do.
log = logging.getLogger(__name__)

#: The option naming the user harvesters act as.
USER_NAME_OPTION = options.USER_NAME

HARVEST_USER_NAME = "harvest"
#: ``harvest_object_error.stage`` of import errors.
IMPORT_STAGE = ErrorStage.IMPORT.value
DEFAULT_API_VERSION = 2
UNCHANGED = "unchanged"
#: Default of ``_hash_verdict``'s ``previous``: look the last import up.
_LOOK_UP = object()
NO_REMOTE_DATASETS = "No remote datasets could be identified"
DEFER_PACKAGE_FKEY = "SET CONSTRAINTS harvest_object_package_id_fkey DEFERRED"


class NameAppendType(str, enum.Enum):
    """How a suffix is added to a dataset name that is already taken."""

    NUMBER_SEQUENCE = "number-sequence"
    RANDOM_HEX = "random-hex"


_SUFFIX_WIDTH: dict[str, int] = {
    NameAppendType.NUMBER_SEQUENCE.value: 3,
    NameAppendType.RANDOM_HEX.value: 5,
}

PackageResult = Union[bool, str, None]


class HarvesterBase(p.SingletonPlugin):
    """Common helpers for harvesters (error recording, naming, package writes).

    Not registered as a plugin itself; subclasses are.
    """

    p.implements(IHarvester)

    config: Optional[dict[str, Any]] = None
    _user_name: Optional[str] = None
    #: Source configuration keys whose values are secrets (``api_key`` always
    #: is): shown only to sysadmins and the source's organisation admins, never
    #: logged or mailed (``ckanext.harvest.lib.secret_config``).
    secret_config_keys: tuple[str, ...] = ()

    _save_gather_error = HarvestGatherError.create
    _save_object_error = HarvestObjectError.create

    # --- acting user -------------------------------------------------------

    def _get_user_name(self) -> str:
        """Return the name of the user the harvester acts as (cached per instance).

        In order: the cached value, config ``ckanext.harvest.user_name``, the
        sysadmin user ``harvest`` when it exists, the site user (whose dict is kept
        in ``self._site_user``).

        :returns: a user name
        """
        if self._user_name:
            return self._user_name
        name = config.get(USER_NAME_OPTION)
        if not name:
            name = _harvest_sysadmin_name() or self._site_user_name()
        self._user_name = name
        return name

    def _site_user_name(self) -> str:
        """Fetch the site user, keep its dict in ``self._site_user``, return its name."""
        context = cast(Context, {
            "model": model, "session": model.Session,
            "ignore_auth": True, "defer_commit": True,
        })
        self._site_user = toolkit.get_action("get_site_user")(context, {})
        return self._site_user["name"]

    # --- dataset names -----------------------------------------------------

    @classmethod
    def _gen_new_name(
        cls,
        title: str,
        existing_name: NameOrNone = None,
        append_type: NameOrNone = None,
    ) -> NameOrNone:
        """Return a unique dataset name derived from ``title``.

        :param title: the dataset title (or a name) to derive the name from
        :param existing_name: the dataset's current name, which it may keep
        :param append_type: ``number-sequence`` or ``random-hex``; defaults to config
            ``ckanext.harvest.default_dataset_name_append``
        :returns: a free name, or None when every numbered variant is taken
        :raises NotImplementedError: for an unknown ``append_type`` needing a suffix
        """
        # The declared default only applies when the ``harvest`` plugin is loaded;
        # harvesters may run without it (e.g. in other extensions' tests).
        append_type = (
            append_type
            or config.get(options.NAME_APPEND)
            or NameAppendType.NUMBER_SEQUENCE.value
        )
        ideal_name = re.sub("-+", "-", munge_title_to_name(title))
        return cls._ensure_name_is_unique(
            ideal_name, existing_name=existing_name, append_type=append_type
        )

    @staticmethod
    def _ensure_name_is_unique(
        ideal_name: str,
        existing_name: NameOrNone = None,
        append_type: str = NameAppendType.NUMBER_SEQUENCE.value,
    ) -> NameOrNone:
        """Return ``ideal_name`` or, when another dataset has it, a suffixed variant.

        :param ideal_name: the preferred name (truncated to the maximum length)
        :param existing_name: the dataset's current name: never counted as taken,
            and kept when it already starts with ``ideal_name``
        :param append_type: ``number-sequence`` (1 to 999) or ``random-hex``
            (5 hex characters)
        :returns: a free name, or None after 999 numbered collisions
        :raises NotImplementedError: for any other ``append_type``, when a suffix
            could be needed
        """
        max_length = model.PACKAGE_NAME_MAX_LENGTH
        ideal_name = ideal_name[:max_length]
        if existing_name == ideal_name:
            return ideal_name
        width = _SUFFIX_WIDTH.get(append_type)
        if width is None:
            raise NotImplementedError("append_type cannot be %s" % append_type)
        if not _package.name_taken(ideal_name):  # the usual case, without a scan
            return ideal_name
        taken = _package.names_starting_with(ideal_name[: max_length - width])
        taken.discard(existing_name)
        if ideal_name not in taken:
            return ideal_name
        if existing_name and existing_name.startswith(ideal_name):
            return existing_name
        if append_type == NameAppendType.NUMBER_SEQUENCE:
            return _package.first_free_numbered_name(ideal_name, taken)
        return ideal_name[: max_length - width] + str(uuid.uuid4())[:width]

    # --- gather helpers ----------------------------------------------------

    def _create_harvest_objects(
        self, remote_ids: list[str], harvest_job: HarvestJob
    ) -> Optional[list[str]]:
        """Create one harvest object per remote id for ``harvest_job``.

        :param remote_ids: the remote identifiers, stored as the objects' ``guid``
        :param harvest_job: the job being gathered
        :returns: the new objects' ids, or None (after recording a gather error)
            when ``remote_ids`` is empty or saving fails
        """
        try:
            if not remote_ids:
                self._save_gather_error(NO_REMOTE_DATASETS, harvest_job)
                return None
            object_ids = []
            for remote_id in remote_ids:
                obj = HarvestObject(guid=remote_id, job=harvest_job)
                obj.save()
                object_ids.append(obj.id)
            return object_ids
        except Exception as e:  # noqa: BLE001 - reported as a gather error
            model.Session.rollback()  # a failed flush leaves the session unusable
            log.exception("Could not create the harvest objects of job %s", harvest_job.id)
            self._save_gather_error("%r" % e, harvest_job)
            return None

    def _create_hashed_objects(
        self, records: list[tuple[str, str]], harvest_job: HarvestJob
    ) -> list[str]:
        """Create (and commit) one object per ``(guid, content)`` record, skipping
        the import of the unchanged ones (see docs/writing-a-harvester.rst).

        A record whose hash (:mod:`ckanext.harvest.lib.hashes`: the normalised
        content, the source configuration and this harvester's version) equals
        that of the current object of its guid, while the local dataset was not
        edited since, gets an object finished already (``COMPLETE``, ``not
        modified``), which is neither returned nor queued. A forced job skips
        nothing.

        :param records: ``(guid, content)`` pairs; the content is what
            :meth:`_create_or_update_package` will hash at import
        :param harvest_job: the job being gathered
        :returns: ids of the objects to fetch and import
        """
        return hashes.create_objects(harvest_job, records, self)

    def record_seen_identifiers(
        self, harvest_job: HarvestJob, identifiers: Any
    ) -> list[str]:
        """Report every identifier the source lists now, at the end of a gather.

        Call it only after a gather that saw the *whole* listing of the source
        (never after an error, a partial or filtered-by-date listing): the
        datasets of the source whose object guid is not among ``identifiers``
        count as missing at the source. When the source's ``delete_missing``
        mode is not ``keep``, those missing for ``after_days`` are withdrawn by
        objects the framework adds to the job and processes itself
        (:mod:`ckanext.harvest.lib.removals`); the import stage never sees them.

        :param harvest_job: the job being gathered
        :param identifiers: the guids seen (any iterable of strings)
        :returns: ids of the withdrawal objects added to the job (the framework
            queues them; the gather stage need not return them)
        """
        return removals.record_seen(harvest_job, {str(i) for i in identifiers})

    def delete_missing_enabled(self, harvest_job: HarvestJob) -> bool:
        """Whether the job's source withdraws datasets missing at the source:
        ask before listing what the gather would not list otherwise."""
        source = harvest_job.source
        return source is not None and removals.enabled_for(source)

    @classmethod
    def last_error_free_job(cls, harvest_job: HarvestJob) -> Optional[HarvestJob]:
        """Return the latest clean job of ``harvest_job``'s source, if any.

        A clean job is another ``Finished`` job that was gathered, has no gather
        error and no object left non-current for a reason other than "not
        modified".

        Only ``harvest_job.source`` and ``harvest_job.id`` are read, so any object
        with those two attributes will do (downstream tests pass a ``MagicMock``
        whose ``source`` is a real source and whose ``id`` is ``''``).

        :param harvest_job: the job being run (never returned)
        :returns: the most recently gathered clean job, or None
        """
        source = harvest_job.source
        return jobs.last_error_free_job(source.id if source is not None else None,
                                        harvest_job.id)

    #: The older, private spelling, still called by some harvesters.
    _last_error_free_job = last_error_free_job

    # --- writing the dataset -----------------------------------------------

    def _create_or_update_package(
        self,
        package_dict: dict[str, Any],
        harvest_object: HarvestObject,
        package_dict_form: str = PackageDictForm.REST.value,
    ) -> PackageResult:
        """Create the harvested dataset, or update it when the remote is newer.

        ``package_dict['id']`` (the remote id) is used as the local dataset id.
        The ``rest`` form (extras as a dict, tags and groups as strings) is
        converted to the action form before calling ``package_create`` /
        ``package_update``.

        :param package_dict: the dataset, in ``rest`` or ``package_show`` form
        :param harvest_object: the object being imported; on success it becomes
            the current object of the dataset
        :param package_dict_form: ``rest`` or ``package_show``
        :returns: True when written, ``'unchanged'`` when the local copy is as
            recent, None on error (recorded as an ``Import`` object error)
        """
        assert package_dict_form in (PackageDictForm.REST, PackageDictForm.PACKAGE_SHOW)
        try:
            return self._write_package(package_dict, harvest_object, package_dict_form)
        except toolkit.ValidationError as e:
            model.Session.rollback()
            log.exception("Invalid package with GUID %s", harvest_object.guid)
            message = "Invalid package with GUID %s: %r" % (harvest_object.guid, e.error_dict)
            self._save_object_error(message, harvest_object, IMPORT_STAGE)
        except Exception as e:  # noqa: BLE001 - reported as an object error
            # Drop the half-done write first (e.g. a failed flush, or an object whose
            # deferred package_id constraint would fail at commit).
            model.Session.rollback()
            log.exception("Could not import harvest object %s", harvest_object.id)
            self._save_object_error("%r" % e, harvest_object, IMPORT_STAGE)
        finally:
            # The session may outlive the import: it must not keep the dataset's
            # row loaded (as the import left it) for whoever reads it next.
            _package.release_loaded()
        return None

    def _write_package(
        self, package_dict: dict[str, Any], harvest_object: HarvestObject, form: str
    ) -> PackageResult:
        """Body of :meth:`_create_or_update_package`, errors left to the caller."""
        context = self._package_write_context()
        if self.config and self.config.get("clean_tags") and "tags" in package_dict:
            package_dict["tags"] = self._clean_tags(package_dict["tags"])
        default_lookup = self._default_lookup()
        # One query for what the import needs to know of the local dataset (for a
        # new dataset: that there is none, so nothing to restore or compare).
        local = (_package.local_dataset(package_dict.get("id"), harvest_object.id)
                 if default_lookup else None)
        if default_lookup:
            withdrawn = (local is not None and local.id == package_dict.get("id")
                         and local.withdrawn)
        else:
            withdrawn = removals.was_withdrawn(package_dict.get("id"))
        if withdrawn:
            return self._restore_package(context, package_dict, harvest_object, form)
        content_hash = self._content_hash(harvest_object)
        verdict: Optional[bool] = None
        with hashes.recording(harvest_object, content_hash) as recorded:
            try:
                if default_lookup:
                    verdict = self._fast_verdict(package_dict, harvest_object,
                                                 content_hash, local)
                    if verdict:
                        return self._skipped(harvest_object)
                existing = self._find_existing_package(package_dict)
            except toolkit.ObjectNotFound:
                # Recorded first: package_create commits it with the dataset.
                _package.record_remote_modified(harvest_object, package_dict)
                self._create_package(context, package_dict, harvest_object, form)
            else:
                if not self._write_existing(context, package_dict, existing,
                                            harvest_object, form, verdict, content_hash,
                                            local):
                    return UNCHANGED
        if not recorded.done and content_hash is not None:
            hashes.record_import(harvest_object, content_hash, package_dict["id"])
        model.Session.commit()  # the hash, and what an override deferred
        return True

    def _write_existing(self, context: Context, package_dict: dict[str, Any],
                        existing: dict[str, Any], harvest_object: HarvestObject,
                        form: str, verdict: Optional[bool],
                        content_hash: Optional[str],
                        local: Optional[_package.LocalDataset] = None) -> bool:
        """Update ``existing`` unless it is detached or unchanged (then False).
        ``local``: what :func:`._package.local_dataset` found, if it is
        ``existing``."""
        if local is not None and local.id == existing["id"]:
            detached_from = local.detached_from
        else:
            detached_from = detaching.detached_from(existing["id"])
        if _skips_detached(existing["id"], harvest_object, detached_from):
            return False
        package_dict["name"] = existing["name"]
        if verdict is None:
            verdict = self._existing_unchanged(package_dict, existing,
                                               harvest_object, content_hash)
        if verdict:
            self._skipped(harvest_object)
            return False
        _package.record_remote_modified(harvest_object, package_dict)
        self._update_package(context, package_dict, existing, harvest_object, form,
                             local=local if local is not None
                             and local.id == existing["id"] else None)
        return True

    def _fast_verdict(self, package_dict: dict[str, Any], harvest_object: HarvestObject,
                      content_hash: Optional[str],
                      local: Optional[_package.LocalDataset]) -> Optional[bool]:
        """Whether the write can be skipped, decided without building the dataset
        dict (package_show) when it is not needed: a new dataset (``local``, the
        local dataset with that id or name, is None: raises ObjectNotFound), or
        one unchanged since its last import (True, its local name set in
        ``package_dict``). None: undecided."""
        if local is None:
            raise toolkit.ObjectNotFound()
        if local.id != package_dict["id"]:
            return None
        verdict = self._hash_verdict(local.id, harvest_object, content_hash,
                                     local.previous)
        if verdict is None and _package.unchanged_since_import(package_dict):
            verdict = True
            if content_hash is not None:
                hashes.adopt(local.id, content_hash)
        if verdict:
            package_dict["name"] = local.name
        return verdict

    @staticmethod
    def _skipped(harvest_object: HarvestObject) -> str:
        log.info("Package with GUID %s not updated, skipping", harvest_object.guid)
        return UNCHANGED

    def _content_hash(self, harvest_object: HarvestObject) -> Optional[str]:
        """Hash of the object's content, its source's config and this harvester
        (:mod:`ckanext.harvest.lib.hashes`); None for an object without content."""
        if harvest_object.content is None:
            return None
        return hashes.record_hash(harvest_object.content,
                                  hashes.object_source_config(harvest_object), self)

    @staticmethod
    def _hash_verdict(package_id: str, harvest_object: HarvestObject,
                      content_hash: Optional[str],
                      previous: Any = _LOOK_UP) -> Optional[bool]:
        """Whether the hash says the write of an existing dataset can be skipped.

        False for a forced job, and when the record or the local dataset changed
        since the last import; True when neither did; None when the last import
        recorded no hash (the remote dates decide, as without hashes).
        """
        if hashes.is_forced(harvest_object.harvest_job_id):
            return False
        if content_hash is None:
            return None
        if previous is _LOOK_UP:
            previous = hashes.previous_import(package_id)
        return previous.unchanged(content_hash) if previous is not None else None

    def _existing_unchanged(self, package_dict: dict[str, Any], existing: dict[str, Any],
                            harvest_object: HarvestObject,
                            content_hash: Optional[str]) -> bool:
        """Whether the write of ``existing`` can be skipped: the hash decides,
        else the remote dates (:func:`._package.is_newer`)."""
        verdict = self._hash_verdict(existing["id"], harvest_object, content_hash)
        if verdict is not None:
            return verdict
        if _package.is_newer(package_dict, existing,
                             _package.imported_modified(existing["id"])):
            return False
        if content_hash is not None:
            hashes.adopt(existing["id"], content_hash)
        return True

    def _restore_package(
        self, context: Context, package_dict: dict[str, Any],
        harvest_object: HarvestObject, form: str,
    ) -> PackageResult:
        """Write a dataset withdrawn because it was missing at the source and now
        listed again: active again, public or private as the remote says, same id
        and name, whatever its remote modification date."""
        existing = self._find_existing_package(package_dict)
        package_dict["name"] = existing["name"]
        package_dict["state"] = model.State.ACTIVE
        package_dict.setdefault("private", False)  # withdrawn by making it private
        log.info("Package with GUID %s is back at the source: restored",
                 harvest_object.guid)
        _package.record_remote_modified(harvest_object, package_dict)
        self._update_package(context, package_dict, existing, harvest_object, form)
        model.Session.commit()
        return True

    def _default_lookup(self) -> bool:
        """Whether :meth:`_find_existing_package` is this class's (not overridden
        by a subclass nor replaced on the instance)."""
        method = getattr(self._find_existing_package, "__func__", None)
        return method is HarvesterBase._find_existing_package

    def _package_write_context(self) -> Context:
        """Context of the ``package_create``/``package_update`` calls."""
        schema: Schema = default_create_package_schema()
        schema["id"] = [toolkit.get_validator("ignore_missing"),
                        toolkit.get_validator("unicode_safe")]
        schema["__junk"] = [toolkit.get_validator("ignore")]
        return cast(Context, {
            "model": model,
            "session": model.Session,
            "user": self._get_user_name(),
            "api_version": self._api_version(),
            "schema": schema,
            "ignore_auth": True,
        })

    def _api_version(self) -> int:
        """``api_version`` of the harvester config (default 2)."""
        try:
            return int((self.config or {}).get("api_version", DEFAULT_API_VERSION))
        except (TypeError, ValueError):
            raise ValueError("api_version must be an integer") from None

    def _create_package(
        self,
        context: Context,
        package_dict: dict[str, Any],
        harvest_object: HarvestObject,
        form: str,
    ) -> None:
        """Create the dataset and make ``harvest_object`` its current object."""
        context.pop("__auth_audit", None)
        package_dict["name"] = self._gen_new_name(
            package_dict.get("name") or package_dict["title"]
        )
        log.info("Package with GUID %s does not exist, let's create it", harvest_object.guid)
        harvest_object.current = True
        harvest_object.package_id = package_dict["id"]
        model.Session.add(harvest_object)
        # The object refers to a dataset that package_create is about to insert
        # (its flush writes both).
        model.Session.execute(sa.text(DEFER_PACKAGE_FKEY))
        data_dict = _package.action_form(package_dict, form, context)
        with indexing.writing(harvest_object), \
                stages.finishing(harvest_object, stages.written_status(0)):
            toolkit.get_action("package_create")(context, data_dict)
        # A new dataset: no other object can refer to it.
        stages.dataset_written(harvest_object, other_objects=0)

    def _update_package(
        self,
        context: Context,
        package_dict: dict[str, Any],
        existing: dict[str, Any],
        harvest_object: HarvestObject,
        form: str,
        *,
        local: Optional[_package.LocalDataset] = None,
    ) -> None:
        """Update the dataset and make ``harvest_object`` its current object.

        ``local``: what :func:`._package.local_dataset` found of ``existing``
        (then the other objects stop being current with the object's own
        write, instead of a statement of their own before the update)."""
        log.info("Package with GUID %s exists and needs to be updated", harvest_object.guid)
        context["id"] = package_dict["id"]
        if self._default_lookup():
            # package_update would build it again (CKAN 2.12 takes it from here).
            context["original_package"] = existing
        for field in _not_overwrite_fields():
            if field in existing:
                package_dict[field] = existing[field]
        data_dict = _package.action_form(package_dict, form, context, existing["id"])
        if self._default_lookup():
            # Unchanged resources are then kept as stored, not validated and saved again.
            _package.reuse_unchanged_resources(data_dict, existing)
        # Written with the update (the hook, else the next flush), and committed
        # (or rolled back) with the dataset.
        reset = None
        if local is not None:
            others = int(local.has_other_objects)
            harvest_object.package_id = package_dict["id"]
            harvest_object.current = True
            model.Session.add(harvest_object)
            reset = package_dict["id"]
        else:
            others = _package.make_current(harvest_object, package_dict["id"])
        with indexing.writing(harvest_object), \
                stages.finishing(harvest_object, stages.written_status(others),
                                 reset_others_of=reset):
            toolkit.get_action("package_update")(context, data_dict)
        stages.dataset_written(harvest_object, other_objects=others)

    def _find_existing_package(self, package_dict: dict[str, Any]) -> dict[str, Any]:
        """Return the local dataset with ``package_dict['id']`` (override to match
        differently).

        :param package_dict: the harvested dataset
        :returns: the local dataset, ``package_show`` form
        :raises ckan.logic.NotFound: when there is none
        """
        context = cast(Context, {
            "model": model, "session": model.Session, "ignore_auth": True,
        })
        return toolkit.get_action("package_show")(context, {"id": package_dict["id"]})

    def _clean_tags(self, tags: list[Any]) -> list[Any]:
        """Munge tag names with CKAN's ``munge_tag``, dropping empty ones.

        :param tags: tag dicts (``package_show`` form, order kept, no dedupe) or
            tag strings (deduplicated)
        :returns: the cleaned tags, in the same form
        """
        return _package.clean_tags(tags, munge_tag)  # this module's: tests patch it


# --- module helpers -----------------------------------------------------------


def check_http_url(url: str) -> None:
    """Refuse a source URL that an HTTP harvester cannot fetch safely.

    For harvesters that fetch their source over HTTP: call it from
    ``validate_source_url`` (see docs/writing-a-harvester.rst).

    :param url: the source URL
    :raises ValueError: it does not start with ``http://`` or ``https://``, has no
        host name, cannot be parsed, or carries a user name or password
    """
    try:
        parts = urlparse(url.strip())
        host = parts.hostname
    except ValueError as e:
        raise ValueError("The URL is not valid: %s" % e) from e
    if parts.scheme not in ("http", "https"):
        raise ValueError("The URL must start with http:// or https://")
    if not host:
        raise ValueError("The URL has no host name")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "The URL must not contain a user name or password: anyone who can "
            "see the source sees its URL (put credentials in the configuration, "
            "e.g. api_key, which is kept secret)"
        )


def _harvest_sysadmin_name() -> NameOrNone:
    """Return ``'harvest'`` when a sysadmin user of that name exists."""
    context = cast(Context, {
        "model": model, "session": model.Session, "ignore_auth": True,
    })
    try:
        user = toolkit.get_action("user_show")(context, {"id": HARVEST_USER_NAME})
    except toolkit.ObjectNotFound:
        return None
    return HARVEST_USER_NAME if user.get("sysadmin") else None


def _skips_detached(package_id: str, harvest_object: HarvestObject,
                    source_id: Optional[str]) -> bool:
    """Whether the dataset was detached from its source (``source_id``, None
    when not): no job writes it again (reported ``not modified``,
    docs/web-interface.rst)."""
    if source_id is None:
        return False
    log.info("Dataset %s (GUID %s) was detached from harvest source %s: not updated",
             package_id, harvest_object.guid, source_id)
    return True


def _not_overwrite_fields() -> list[str]:
    """Fields of ``ckan.harvest.not_overwrite_fields`` (spaces or commas)."""
    value = toolkit.aslist(config.get(options.NOT_OVERWRITE_FIELDS))
    return [field for item in value for field in item.split(",") if field]
