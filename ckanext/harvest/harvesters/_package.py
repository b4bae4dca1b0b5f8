"""Helpers of ``HarvesterBase`` for writing a harvested dataset.

* free dataset names: the names already taken by a prefix, and the first free
  numbered variant of a name;
* remote modification dates: whether a harvested dataset is newer than its local
  copy, and recording the remote ``metadata_modified`` of an import;
* dataset dicts: the legacy REST form converted to the action API form, tags
  cleaned with a munging function, and unchanged resources handed to
  ``package_update`` as stored so that it keeps them without validating them again.

Nothing here reads the configuration: what depends on it (the name suffix, the
fields not to overwrite, the user) stays in :mod:`.base`, which passes down what
these helpers need (e.g. its own ``munge_tag``, which tests patch).
"""
from __future__ import annotations

import dataclasses
import datetime
import enum
import functools
import re
from typing import Any, Callable, Optional

import sqlalchemy as sa
from ckan import model
from ckan.types import Context

from ckanext.harvest.lib import detaching, hashes, removals, stages
from ckanext.harvest.model import HarvestObject

__all__ = [
    "LocalDataset",
    "NameOrNone",
    "PackageDictForm",
    "action_form",
    "clean_tags",
    "first_free_numbered_name",
    "imported_modified",
    "is_newer",
    "local_dataset",
    "make_current",
    "names_starting_with",
    "parse_modified",
    "record_remote_modified",
    "release_loaded",
    "rest_to_action_dict",
    "reuse_unchanged_resources",
]

NameOrNone = Optional[str]


class PackageDictForm(str, enum.Enum):
    """The two shapes of dataset dict ``_create_or_update_package`` accepts."""

    REST = "rest"
    PACKAGE_SHOW = "package_show"


# --- names -----------------------------------------------------------------------


def names_starting_with(prefix: str) -> set[NameOrNone]:
    """Names of all datasets (any state or type) starting with ``prefix``."""
    escaped = re.sub(r"([\\%_])", r"\\\1", prefix)
    rows = model.Session.query(model.Package.name).filter(
        model.Package.name.ilike(escaped + "%", escape="\\")
    )
    return {row[0] for row in rows}


def name_taken(name: str) -> bool:
    """Whether a dataset (any state or type) has exactly this name (one indexed
    lookup, where :func:`names_starting_with` scans)."""
    return model.Session.query(model.Package.id).filter(
        model.Package.name == name).first() is not None


@dataclasses.dataclass(frozen=True)
class LocalDataset:
    """What an import needs to know of the local dataset (:func:`local_dataset`)."""

    id: str
    name: str
    #: Withdrawn because it vanished from the source, and not imported since.
    withdrawn: bool
    #: The source it was detached from (None: not detached).
    detached_from: Optional[str]
    #: Its current object and what that import recorded (None: no current object).
    previous: Optional[hashes.PreviousImport]
    #: Whether it has objects besides the one being imported (its report status
    #: is then ``updated``, else ``added``).
    has_other_objects: bool = False


@functools.cache
def _local_dataset_statement() -> Any:
    """The statement of :func:`local_dataset`, built once (building it took
    longer than running it)."""
    package = model.Package
    reference: Any = sa.bindparam("reference")
    latest = hashes.current_import(package.id)
    others = sa.exists().where(HarvestObject.package_id == package.id,
                               HarvestObject.id != sa.bindparam("object_id"))
    return (
        sa.select(package, latest.c.guid, latest.c.object_id, latest.c.content_hash,
                  latest.c.recorded_modified,
                  removals.withdrawn_condition(package.id),
                  detaching.detached_source(package.id), others)
        .outerjoin(latest, sa.true())
        .where((package.id == reference) | (package.name == reference))
        # The dataset with that id, else the one with that name (Package.get).
        .order_by((package.id == reference).desc())
        .limit(1)
    )


def local_dataset(reference: Optional[str],
                  object_id: Optional[str] = None) -> Optional[LocalDataset]:
    """The dataset with id ``reference``, else name ``reference`` (as
    ``Package.get``), with its withdrawal, detachment, last import and whether
    it has objects other than ``object_id`` (None when there is none): one
    query, for what would otherwise take six."""
    if not reference:
        return None
    session = model.Session()
    row = session.execute(_local_dataset_statement(),
                          {"reference": reference, "object_id": object_id or ""},
                          ).one_or_none()
    if row is None:
        return None
    (package, guid, current_id, content_hash, recorded, withdrawn, detached,
     others) = row
    # Kept loaded until release_loaded (the end of the import): package_show
    # and package_update then find the row in the session. package_show drops
    # its own reference, which would let the session forget the row.
    session.info[_KEPT] = package
    previous = None
    if current_id is not None:
        previous = hashes.PreviousImport(guid, package.id, current_id, content_hash,
                                         recorded, package.metadata_modified,
                                         package.state)
    return LocalDataset(package.id, package.name, bool(withdrawn), detached, previous,
                        bool(others))


_KEPT = "ckanext.harvest.kept_package"


def release_loaded() -> None:
    """Drop the reference :func:`local_dataset` keeps to the dataset's row."""
    model.Session().info.pop(_KEPT, None)


#: The other objects of a dataset, which stop being current (only the rows
#: that are current are written, whatever the number of past jobs).
_MAKE_CURRENT = sa.text("""
WITH others AS (
    SELECT id, current FROM harvest_object
    WHERE package_id = :package_id AND id <> :object_id
), reset AS (
    UPDATE harvest_object SET current = false
    WHERE id IN (SELECT id FROM others WHERE current)
    RETURNING id
)
SELECT (SELECT count(*) FROM others), (SELECT count(*) FROM reset)
""")


def make_current(harvest_object: HarvestObject, package_id: str) -> int:
    """Make ``harvest_object`` the current object of dataset ``package_id``:
    its other objects stop being current at once (one statement), the object
    itself is written with the next flush.

    :returns: how many other objects the dataset has
    """
    others, _reset = model.Session.execute(_MAKE_CURRENT, {
        "package_id": package_id, "object_id": harvest_object.id}).one()
    stages.others_not_current(harvest_object, package_id)  # as the rows now are
    harvest_object.package_id = package_id
    harvest_object.current = True
    model.Session.add(harvest_object)
    return int(others)


def first_free_numbered_name(ideal_name: str, taken: set[NameOrNone]) -> NameOrNone:
    """``ideal_name`` followed by the lowest free number 1..999 (None if none)."""
    max_length = model.PACKAGE_NAME_MAX_LENGTH
    for number in range(1, 1000):
        suffix = str(number)
        candidate = ideal_name[: max_length - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
    return None


# --- remote modification dates -----------------------------------------------------


def is_newer(
    package_dict: dict[str, Any],
    existing: dict[str, Any],
    imported: Optional[datetime.datetime] = None,
) -> bool:
    """Whether the harvested dataset must overwrite the local one.

    The remote ``metadata_modified`` is compared with the remote one recorded at
    the last import (``imported``), when known: the local copy's own
    ``metadata_modified`` is a local time (CKAN 2.11 stamps the import time, any
    local edit moves it), so comparing with it skips remote changes dated before
    the import or the edit. Without a recorded value (objects imported before
    this was recorded, harvesters that do not use ``_create_or_update_package``)
    the local copy's ``metadata_modified`` is the reference, as in the original
    extension. ISO dates are compared as dates when both parse, else as strings.
    A harvested dict without ``metadata_modified`` always updates.
    """
    modified = package_dict.get("metadata_modified")
    if modified is None:
        return True
    if imported is not None:
        remote = parse_modified(modified)
        if remote is not None:
            return remote > imported
    return modified > existing.get("metadata_modified", "")


def parse_modified(value: Any) -> Optional[datetime.datetime]:
    """An ISO ``metadata_modified`` as a naive UTC datetime (None if it is not one)."""
    try:
        parsed = datetime.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return parsed


def imported_modified(package_id: str) -> Optional[datetime.datetime]:
    """The remote ``metadata_modified`` recorded when the dataset was last imported."""
    return model.Session.query(HarvestObject.metadata_modified_date).filter(
        HarvestObject.package_id == package_id, HarvestObject.current.is_(True)
    ).order_by(HarvestObject.import_finished.desc().nullslast()).limit(1).scalar()


def unchanged_since_import(package_dict: dict[str, Any]) -> bool:
    """Whether the local copy of ``package_dict`` (which the caller knows to
    exist) was imported from a remote version at least as recent: what
    :func:`is_newer` would conclude, without building the local dataset dict
    (``package_show``)."""
    remote = parse_modified(package_dict.get("metadata_modified"))
    package_id = package_dict.get("id")
    if remote is None or not package_id:
        return False
    imported = imported_modified(package_id)
    return imported is not None and remote <= imported


def record_remote_modified(harvest_object: HarvestObject,
                           package_dict: dict[str, Any]) -> None:
    """Keep the imported remote ``metadata_modified`` on the object (unless the
    harvester set ``metadata_modified_date`` itself): the next import compares
    with it."""
    if harvest_object.metadata_modified_date is None:
        harvest_object.metadata_modified_date = parse_modified(
            package_dict.get("metadata_modified"))


# --- dataset dicts -----------------------------------------------------------------


def clean_tags(tags: list[Any], munge: Callable[[str], str]) -> list[Any]:
    """Munge tag names with ``munge``, dropping empty ones.

    :param tags: tag dicts (``package_show`` form, order kept, no dedupe) or
        tag strings (deduplicated)
    :returns: the cleaned tags, in the same form
    """
    try:
        return _clean_tag_dicts(tags, munge)
    except TypeError:
        munged = (munge(tag) for tag in tags)
        return list(dict.fromkeys(tag for tag in munged if tag))


def _clean_tag_dicts(tags: list[dict[str, Any]],
                     munge: Callable[[str], str]) -> list[dict[str, Any]]:
    """Munge the ``name`` of each tag dict; a TypeError means plain strings."""
    for tag in tags:
        tag["name"] = munge(tag["name"])
    return [tag for tag in tags if tag["name"]]


def action_form(
    package_dict: dict[str, Any],
    form: str,
    context: Context,
    existing_id: NameOrNone = None,
) -> dict[str, Any]:
    """Return ``package_dict`` ready for ``package_create``/``package_update``.

    :param existing_id: id of the local dataset being updated, if any
    """
    if form == PackageDictForm.PACKAGE_SHOW:
        return package_dict
    stored = model.Package.get(existing_id) if existing_id else None
    existing_extras = dict(stored.extras or {}) if stored is not None else {}
    return rest_to_action_dict(package_dict, context.get("api_version"), existing_extras)


# Resource keys whose harvested value never reaches the database as it is: CKAN
# stamps ``metadata_modified`` with the time of the save, orders by the list
# (``position``) and drops ``tracking_summary``.
_RESOURCE_KEYS_SET_BY_CKAN = frozenset({"metadata_modified", "position", "tracking_summary"})


def reuse_unchanged_resources(data_dict: dict[str, Any], existing: dict[str, Any]) -> int:
    """Put the stored form of each resource that did not change in ``data_dict``.

    ``package_update`` copies a resource whose dict equals the stored one
    (``package_show`` form) as it is, instead of validating and saving it again.
    A harvested resource equals its local copy on everything CKAN stores, but
    differs in the keys CKAN sets itself (its ``metadata_modified`` above all), so
    without this every resource of an updated dataset would be written again.

    :param data_dict: the dataset dict about to be passed to ``package_update``;
        its ``resources`` are replaced in place where they match
    :param existing: the local dataset, ``package_show`` form
    :returns: how many resources were replaced by their stored form
    """
    resources = data_dict.get("resources")
    stored = existing.get("resources")
    if not isinstance(resources, list) or not isinstance(stored, list):
        return 0
    stored_by_id = {r.get("id"): r for r in stored if isinstance(r, dict) and r.get("id")}
    harvested = list(resources)
    reused = 0
    for index, resource in enumerate(harvested):
        if not isinstance(resource, dict):
            continue
        local = stored_by_id.get(resource.get("id"))
        if local is None or local is resource:
            continue
        keys = (set(resource) | set(local)) - _RESOURCE_KEYS_SET_BY_CKAN
        if all(_same_resource_value(resource, local, k) for k in keys):
            resources[index] = local
            reused += 1
    if reused and _skipped_by_package_update(data_dict, existing):
        # CKAN 2.12 would then not write the dataset at all (nor index it with its
        # new harvest object): keep the harvested resources, as before.
        resources[:] = harvested
        return 0
    return reused


def _same_resource_value(harvested: dict[str, Any], stored: dict[str, Any],
                         key: str) -> bool:
    """Whether saving ``harvested`` would leave ``stored[key]`` as it is.

    A key missing from the harvested resource leaves an empty (None) column of
    the resource table empty: the harvesters drop ``url_type``, which a local
    resource shows as None. A missing extra would be deleted instead.
    """
    if key in harvested and key in stored:
        return bool(harvested[key] == stored[key])
    return (key not in harvested and stored.get(key, _MISSING) is None
            and key in _resource_columns())


_MISSING = object()


@functools.cache
def _resource_columns() -> frozenset[str]:
    """Names of the resource table's columns (the other keys are extras)."""
    return frozenset(column.name for column in model.Resource.__table__.c)


def _skipped_by_package_update(data_dict: dict[str, Any], existing: dict[str, Any]) -> bool:
    """Whether ``package_update`` (CKAN 2.12) returns without writing ``data_dict``
    over ``existing``: the same test as its own."""
    if existing.get("resources") != data_dict.get("resources"):
        return False
    if data_dict.get("metadata_modified"):
        return existing == data_dict
    return dict(existing, metadata_modified=None, resources=None) == dict(
        data_dict, metadata_modified=None, resources=None)


def rest_to_action_dict(
    package_dict: dict[str, Any],
    api_version: Optional[int],
    existing_extras: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Convert a legacy REST API dataset dict to the action API form.

    Tags may be a space separated string or a list of names; extras a dict (merged
    over the extras stored for the dataset being updated, as REST updates did);
    groups a list of names (API version 1) or ids (version 2); a lone
    ``download_url`` becomes a resource. Values already in action form are kept.
    """
    data = dict(package_dict)
    if "tags" in data:
        data["tags"] = _rest_tags(data["tags"])
    if isinstance(data.get("extras"), dict):
        data["extras"] = [
            {"key": key, "value": value}
            for key, value in {**(existing_extras or {}), **data["extras"]}.items()
        ]
    if data.get("groups"):
        key = "name" if api_version == 1 else "id"
        data["groups"] = [
            {key: group} if isinstance(group, str) else group for group in data["groups"]
        ]
    download_url = data.pop("download_url", None)
    if download_url and not data.get("resources"):
        data["resources"] = [{"url": download_url}]
    return data


def _rest_tags(tags: Any) -> Any:
    """REST tags (string or list of names) as a list of tag dicts."""
    if isinstance(tags, str):
        tags = tags.split()
    if not isinstance(tags, list):
        return tags
    return [{"name": tag} if isinstance(tag, str) else tag for tag in tags]
