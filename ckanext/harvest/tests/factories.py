"""factory_boy factories for harvest sources, jobs and objects.

Downstream harvester test suites import these. Each factory calls the harvest
actions as the user given in ``user`` (a dict or a name), defaulting to the
site user.
"""
from __future__ import annotations

from typing import Any

import factory
from ckan.plugins import toolkit
from ckan.tests.factories import _get_action_user_name

from ckanext.harvest import model as harvest_model


def _context(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"user": _get_action_user_name(kwargs)}


class _ActionFactory(factory.Factory):
    """Creates through an action as the ``user`` given (site user by default)."""

    _return_type = "dict"

    class Meta:
        abstract = True

    @classmethod
    def _create(  # type: ignore[override]
        cls, target_class: Any, *args: Any, **kwargs: Any
    ) -> Any:
        if args:
            raise AssertionError("Positional args aren't supported, use keyword args.")
        result = cls._call_action(_context(kwargs), kwargs)
        if cls._return_type == "dict":
            return result
        return cls._meta.model.get(result["id"])

    @classmethod
    def _call_action(cls, context: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        raise NotImplementedError


class HarvestSource(_ActionFactory):
    """A harvest source dataset (dict); the same URL returns the same source."""

    class Meta:
        model = harvest_model.HarvestSource

    name = factory.Sequence(lambda n: "test_source_{0:02d}".format(n))
    title = factory.Sequence(lambda n: "test title {0:02d}".format(n))
    url = factory.Sequence(lambda n: "http://{0:02d}.test.com".format(n))
    source_type = "test"  # needs the test_harvester plugin
    id = "{0}_id".format(name).lower()

    @classmethod
    def _call_action(cls, context: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        try:
            return toolkit.get_action("harvest_source_show")(
                dict(context, ignore_auth=True), {"url": kwargs["url"]}
            )
        except toolkit.ObjectNotFound:
            return toolkit.get_action("harvest_source_create")(context, kwargs)


class HarvestSourceObj(HarvestSource):
    """A harvest source as a ``HarvestSource`` model object."""

    _return_type = "obj"


class HarvestJob(_ActionFactory):
    """A harvest job (dict); not sent to the queue unless ``run=True``."""

    class Meta:
        model = harvest_model.HarvestJob

    source = factory.SubFactory(HarvestSourceObj)

    @classmethod
    def _call_action(cls, context: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        if "source_id" not in kwargs:
            kwargs["source_id"] = kwargs["source"].id
        if "run" not in kwargs:
            kwargs["run"] = False
        return toolkit.get_action("harvest_job_create")(context, kwargs)


class HarvestJobObj(HarvestJob):
    """A harvest job as a ``HarvestJob`` model object."""

    _return_type = "obj"


class HarvestObject(_ActionFactory):
    """A harvest object (dict), created through ``harvest_object_create``."""

    class Meta:
        model = harvest_model.HarvestObject

    job = factory.SubFactory(HarvestJobObj)

    @classmethod
    def _call_action(cls, context: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        if "job_id" not in kwargs:
            kwargs["job_id"] = kwargs["job"].id
            kwargs["source_id"] = kwargs["job"].source.id
        kwargs.pop("job", None)
        return toolkit.get_action("harvest_object_create")(context, kwargs)


class HarvestObjectObj(HarvestObject):
    """A harvest object as a ``HarvestObject`` model object."""

    _return_type = "obj"


# Legacy factory_boy spelling of Meta.model, read by older downstream code
# (set after class creation so factory_boy does not take it for a field).
for _factory in (HarvestSource, HarvestJob, HarvestObject):
    _factory.FACTORY_FOR = _factory._meta.model  # type: ignore[union-attr]
