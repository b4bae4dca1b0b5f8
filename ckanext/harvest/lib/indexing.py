"""What the harvest plugin adds to datasets when they are indexed."""
from __future__ import annotations

import json
import logging
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Optional

from ckan import model

from ckanext.harvest.model import HarvestObject

log = logging.getLogger(__name__)


#: The object whose dataset is being written in this thread (see :func:`writing`).
_writing = threading.local()


@contextmanager
def writing(obj: HarvestObject) -> Iterator[None]:
    """While the dataset of ``obj`` (its current object, ``package_id`` set) is
    created or updated: its indexing takes the object from here, not from a
    query."""
    _writing.obj = obj
    try:
        yield
    finally:
        _writing.obj = None


def _current_object(package_id: str) -> Optional[HarvestObject]:
    return (
        model.Session.query(HarvestObject)
        .filter(HarvestObject.package_id == package_id)
        .filter(HarvestObject.current.is_(True))
        .order_by(HarvestObject.import_finished.desc().nullslast())
        .first()
    )


def _serialise_status(pkg_dict: dict[str, Any]) -> None:
    if isinstance(pkg_dict.get("status"), dict):
        try:
            pkg_dict["status"] = json.dumps(pkg_dict["status"])
        except (TypeError, ValueError):
            pkg_dict.pop("status")


def _set_in_blob(blob: dict[str, Any], key: str, value: str) -> None:
    if key in blob:
        blob[key] = value
        return
    extras = blob.setdefault("extras", [])
    for extra in extras:
        if extra.get("key") == key:
            extra["value"] = value
            return
    extras.append({"key": key, "value": value})


def _update_blob(pkg_dict: dict[str, Any], name: str, values: dict[str, str]) -> None:
    if not pkg_dict.get(name):
        return
    blob = json.loads(pkg_dict[name])
    for key, value in values.items():
        _set_in_blob(blob, key, value)
    pkg_dict[name] = json.dumps(blob)


def add_harvest_extras(pkg_dict: dict[str, Any]) -> dict[str, Any]:
    """Add ``harvest_object_id``, ``harvest_source_id`` and ``harvest_source_title``.

    They go into the cached dataset dicts (so ``package_show`` shows them as
    extras) and, when absent, as top-level index fields (so searches can
    filter on ``harvest_source_id``).
    """
    _serialise_status(pkg_dict)
    obj = getattr(_writing, "obj", None)
    if obj is None or obj.package_id != pkg_dict["id"]:
        obj = _current_object(pkg_dict["id"])
    if obj is None:
        return pkg_dict
    values = {
        "harvest_object_id": obj.id,
        "harvest_source_id": obj.harvest_source_id or "",
        "harvest_source_title": (obj.source.title if obj.source else "") or "",
    }
    for blob in ("data_dict", "validated_data_dict"):
        _update_blob(pkg_dict, blob, values)
    for key, value in values.items():
        pkg_dict.setdefault(key, value)
    return pkg_dict
