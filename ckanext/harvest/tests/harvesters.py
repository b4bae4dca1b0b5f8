"""Harvester plugins for tests, driven by their source's JSON configuration.

Registered as the ``ckan.plugins`` entry points ``test_harvester`` (source type
``test``, the factories' default) and ``test_harvester2`` (source type ``test2``,
with an extra source field). Configuration keys (all optional)::

    {
      "datasets": [{"guid": "g1", "title": "Trees", "notes": "..."}, ...],
      "gather": "error" | "raise" | "none",
      "fetch":  {"<guid>": "unchanged" | "error" | "raise"},
      "import": {"<guid>": "unchanged" | "error" | "raise" | "delete"}
    }

Gather makes one object per dataset (content = the dataset's JSON). Import
creates or updates a dataset named after the guid, owned by the source's
organisation (a dataset detached from its source is left alone, ``unchanged``);
``delete`` deletes it and leaves the object non-current.
"""
from __future__ import annotations

import json
from typing import Any, Optional, Union

from ckan import model
from ckan import plugins as p
from ckan.lib import search
from ckan.plugins import toolkit

from ckanext.harvest.interfaces import IHarvester
from ckanext.harvest.lib import detaching, removals
from ckanext.harvest.model import (
    ErrorStage,
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
)


def _config(source: Any) -> dict[str, Any]:
    try:
        return json.loads(source.config or "{}")
    except ValueError:
        return {}


def _dataset_name(guid: str) -> str:
    return "harvested-" + "".join(c if c.isalnum() else "-" for c in guid.lower())


class _ConfigDrivenHarvester:
    """The stages shared by the test harvesters (not a plugin itself)."""

    def validate_config(self, config: Optional[str]) -> Optional[str]:
        if not config:
            return config
        parsed = json.loads(config)
        if not isinstance(parsed, dict):
            raise ValueError("the configuration must be a JSON object")
        return config

    def get_original_url(self, harvest_object_id: str) -> Optional[str]:
        obj = HarvestObject.get(harvest_object_id)
        return "http://remote.example.org/dataset/{}".format(obj.guid) if obj else None

    def gather_stage(self, harvest_job: HarvestJob) -> Optional[list[str]]:
        config = _config(harvest_job.source)
        mode = config.get("gather")
        if mode == "raise":
            raise RuntimeError("Gather stage raised on purpose")
        if mode == "error":
            HarvestGatherError.create("Gather stage failed on purpose", harvest_job)
            return None
        if mode == "none":
            return None
        ids = []
        for dataset in config.get("datasets", []):
            obj = HarvestObject(
                guid=dataset["guid"], job=harvest_job, content=json.dumps(dataset)
            )
            obj.save()
            ids.append(obj.id)
        if "delete_missing" in config:  # the listing is complete: report it
            removals.record_seen(harvest_job,
                                 {d["guid"] for d in config.get("datasets", [])})
        return ids

    def fetch_stage(self, harvest_object: HarvestObject) -> Union[bool, str]:
        mode = _config(harvest_object.source).get("fetch", {}).get(harvest_object.guid)
        if mode == "raise":
            raise RuntimeError("Fetch stage raised on purpose")
        if mode == "error":
            HarvestObjectError.create("Fetch failed on purpose", harvest_object,
                                      ErrorStage.FETCH.value)
            return False
        if mode == "unchanged":
            return "unchanged"
        return True

    def import_stage(self, harvest_object: HarvestObject) -> Union[bool, str]:
        mode = _config(harvest_object.source).get("import", {}).get(harvest_object.guid)
        if mode == "raise":
            raise RuntimeError("Import stage raised on purpose")
        if mode == "error":
            HarvestObjectError.create(
                "Import failed on purpose", harvest_object, ErrorStage.IMPORT.value
            )
            return False
        if mode == "unchanged":
            return "unchanged"
        if mode == "delete":
            return self._delete(harvest_object)
        return self._create_or_update(harvest_object)

    def _context(self) -> dict[str, Any]:
        user = toolkit.get_action("get_site_user")({"ignore_auth": True}, {})
        return {"user": user["name"], "ignore_auth": True}

    def _previous(self, harvest_object: HarvestObject) -> Optional[HarvestObject]:
        return (
            model.Session.query(HarvestObject)
            .filter(HarvestObject.guid == harvest_object.guid)
            .filter(HarvestObject.current.is_(True))
            .first()
        )

    def _create_or_update(self, harvest_object: HarvestObject) -> Union[bool, str]:
        dataset = json.loads(harvest_object.content or "{}")
        source_dataset = model.Package.get(harvest_object.harvest_source_id)
        data = {
            "name": _dataset_name(harvest_object.guid or ""),
            "title": dataset.get("title", harvest_object.guid),
            "notes": dataset.get("notes", ""),
            "owner_org": source_dataset.owner_org if source_dataset else None,
        }
        previous = self._previous(harvest_object)
        # A dataset left by an import that crashed before its object was saved
        # is updated, not created twice.
        existing = model.Package.get(data["name"])
        target = previous.package_id if previous is not None else None
        if detaching.is_detached(target or (existing.id if existing else None)):
            return "unchanged"  # detached datasets are never written again
        if previous is not None and previous.package_id:
            data["id"] = previous.package_id
            result = toolkit.get_action("package_update")(self._context(), data)
            previous.current = False
            previous.add()
        elif existing is not None:
            data["id"] = existing.id
            result = toolkit.get_action("package_update")(self._context(), data)
        else:
            result = toolkit.get_action("package_create")(self._context(), data)
        harvest_object.package_id = result["id"]
        harvest_object.current = True
        harvest_object.save()
        # Index again now that the object is linked: the index gets the
        # dataset's harvest_source_id (source pages list it).
        search.rebuild(result["id"])
        return True

    def _delete(self, harvest_object: HarvestObject) -> bool:
        previous = self._previous(harvest_object)
        if previous is not None and previous.package_id:
            toolkit.get_action("package_delete")(
                self._context(), {"id": previous.package_id}
            )
            harvest_object.package_id = previous.package_id
            previous.current = False
            previous.add()
        harvest_object.current = False
        harvest_object.save()
        return True


class MockHarvester(_ConfigDrivenHarvester, p.SingletonPlugin):
    """Source type ``test`` (its config key ``password`` is a secret)."""

    p.implements(IHarvester)

    secret_config_keys = ("password",)

    def info(self) -> dict[str, Any]:
        return {"name": "test", "title": "Test", "description": "Harvester for tests"}


# A separate singleton class: subclassing MockHarvester would hand back the
# MockHarvester instance (SingletonPlugin keeps one instance per class tree).
class MockHarvester2(_ConfigDrivenHarvester, p.SingletonPlugin):
    """Source type ``test2``, with an extra source field ``custom_option``."""

    p.implements(IHarvester)

    def info(self) -> dict[str, Any]:
        return {
            "name": "test2",
            "title": "Test 2",
            "description": "Second harvester for tests",
            "form_config_interface": "Text",
        }

    def extra_schema(self) -> dict[str, Any]:
        ignore_empty = toolkit.get_validator("ignore_empty")
        unicode_safe = toolkit.get_validator("unicode_safe")
        return {"custom_option": [ignore_empty, unicode_safe]}
