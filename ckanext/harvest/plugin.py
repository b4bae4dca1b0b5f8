"""The ``harvest`` CKAN plugin: wires the harvesting framework into CKAN."""
from __future__ import annotations

import logging
from collections import OrderedDict
from types import ModuleType
from typing import Any, Callable

from ckan import model
from ckan import plugins as p
from ckan.exceptions import CkanConfigurationException
from ckan.lib.plugins import DefaultDatasetForm, DefaultTranslation
from ckan.plugins import toolkit

from ckanext.harvest import mq
from ckanext.harvest.constants import DATASET_TYPE_NAME, N_
from ckanext.harvest.lib import (
    dblog,
    hashes,
    indexing,
    schedule,
    secret_config,
    sources,
    stages,
)
from ckanext.harvest.logic import schema as harvest_schema
from ckanext.harvest.model import HarvestSource

log = logging.getLogger(__name__)


#: Facets of the source search page (titles translated by the search templates).
SOURCE_FACETS = (("frequency", N_("Frequency")), ("source_type", N_("Type")))

_VERBS = ("get", "create", "update", "patch", "delete")


def _get_logic_functions(module_root: str) -> dict[str, Callable[..., Any]]:
    """Collect the functions a logic package exports (each module's ``__all__``).

    :param module_root: ``ckanext.harvest.logic.action`` or ``...logic.auth``
    """
    functions: dict[str, Callable[..., Any]] = {}
    for verb in _VERBS:
        module: ModuleType = __import__(
            "{}.{}".format(module_root, verb), fromlist=["__all__"]
        )
        for name in module.__all__:
            functions[name] = getattr(module, name)
    return functions


def _create_harvest_source_object(context: Any, data_dict: dict[str, Any]) -> Any:
    """Add the ``harvest_source`` row of a new source dataset."""
    log.info("Creating harvest source: %s", data_dict.get("id"))
    return sources.create_source_object(data_dict)


def _update_harvest_source_object(context: Any, data_dict: dict[str, Any]) -> Any:
    """Update the ``harvest_source`` row of a source dataset."""
    log.info("Updating harvest source: %s", data_dict.get("id"))
    return sources.update_source_object(data_dict)


def _delete_harvest_source_object(context: Any, data_dict: dict[str, Any]) -> None:
    """Deactivate the ``harvest_source`` row of a deleted source dataset."""
    log.info("Deleting harvest source: %s", data_dict.get("id"))
    sources.deactivate_source(data_dict["id"])


def _configure_db_logger(config: Any) -> None:
    """Attach the database log handler as ``ckan.harvest.log_scope`` says."""
    dblog.configure_db_logger(config)


def _check_timezone(config: Any) -> None:
    """Stop start-up, in one line, on an unknown ``ckan.harvest.timezone``."""
    try:
        schedule.timezone(config)
    except schedule.ScheduleError as e:
        raise CkanConfigurationException(str(e)) from None


def _status_options(context: Any) -> dict[str, Any]:
    """What the caller of ``package_show`` asks of the last job of the status
    (``return_stats``, ``return_error_summary``, as the original, which passed
    its context on). A page (``for_view``) shows no error summary of it: not
    counting one saves reading every error of a large job."""
    wanted = {key: context[key] for key in ("return_stats", "return_error_summary")
              if key in context}
    if context.get("for_view"):
        wanted.setdefault("return_error_summary", False)
    return wanted


def _dataset_flushed(package: model.Package) -> None:
    """A dataset was written (``IPackageController`` ``create``/``edit``, before
    its indexing and commit): the object being imported is finished with it,
    and the hash recorded (:mod:`ckanext.harvest.lib.stages`,
    :mod:`ckanext.harvest.lib.hashes`)."""
    extras = hashes.dataset_written(package)
    if not stages.dataset_flushed(package, extras) and extras is not None:
        hashes.add_import_extras(extras)


def _is_harvest_source(data_dict: dict[str, Any]) -> bool:
    return data_dict.get("type") == DATASET_TYPE_NAME


def _show_secrets_to_whom_may_see_them(
    context: Any, data_dict: dict[str, Any], source: HarvestSource
) -> None:
    """Redact the source's secret config values, or restore them (the dict may
    come from the search index, which never stores them)."""
    user = context.get("user")
    if not secret_config.may_see_secrets(user, data_dict.get("owner_org")):
        secret_config.redact_source_dict(data_dict, user)
    elif secret_config.REDACTED in (data_dict.get("config") or ""):
        data_dict["config"] = source.config


@toolkit.blanket.config_declarations
class Harvest(p.SingletonPlugin, DefaultDatasetForm, DefaultTranslation):
    """The harvest framework plugin.

    Subclassable: downstream extensions override ``package_form``,
    ``show_package_schema``, ``dataset_facets`` and ``organization_facets``.
    """

    p.implements(p.IConfigurable)
    p.implements(p.IConfigurer, inherit=True)
    p.implements(p.IActions)
    p.implements(p.IAuthFunctions)
    p.implements(p.IDatasetForm)
    p.implements(p.IPackageController, inherit=True)
    p.implements(p.IFacets, inherit=True)
    p.implements(p.ITranslation, inherit=True)
    p.implements(p.IClick)
    p.implements(p.IBlueprint)
    p.implements(p.ITemplateHelpers)

    startup = False

    # IClick

    def get_commands(self) -> list[Any]:
        """The ``ckan harvester ...`` command group."""
        from ckanext.harvest import cli

        return cli.get_commands()

    # IConfigurer

    def update_config(self, config: Any) -> None:
        """Add the templates, public files and web assets of the harvest pages."""
        toolkit.add_template_directory(config, "templates")
        toolkit.add_public_directory(config, "public")
        toolkit.add_resource("assets", "ckanext-harvest")
        toolkit.add_resource("public/ckanext/harvest/javascript", "harvest-extra-field")

    # IBlueprint

    def get_blueprint(self) -> list[Any]:
        """The ``harvester`` blueprint (the pages under ``/harvest``)."""
        from ckanext.harvest import views

        return views.get_blueprints()

    # ITemplateHelpers

    def get_helpers(self) -> dict[str, Callable[..., Any]]:
        """The template helpers of ``ckanext.harvest.helpers``."""
        from ckanext.harvest import helpers

        return helpers.get_helpers()

    # IConfigurable

    def configure(self, config: Any) -> None:
        """Check the harvest settings and set up database logging."""
        self.startup = True
        try:
            mq.backend_name(config)
            _check_timezone(config)
            _configure_db_logger(config)
        finally:
            self.startup = False

    # IActions / IAuthFunctions

    def get_actions(self) -> dict[str, Callable[..., Any]]:
        """Every action of ``ckanext.harvest.logic.action``."""
        return _get_logic_functions("ckanext.harvest.logic.action")

    def get_auth_functions(self) -> dict[str, Callable[..., Any]]:
        """Every auth function of ``ckanext.harvest.logic.auth``."""
        return _get_logic_functions("ckanext.harvest.logic.auth")

    # IDatasetForm

    def is_fallback(self) -> bool:
        return False

    def package_types(self) -> list[str]:
        return [DATASET_TYPE_NAME]

    def package_form(self) -> str:
        return "source/new_source_form.html"

    def search_template(self) -> str:
        return "source/search.html"

    def read_template(self) -> str:
        return "source/read.html"

    def new_template(self) -> str:
        return "source/new.html"

    def edit_template(self) -> str:
        return "source/edit.html"

    def setup_template_variables(self, context: Any, data_dict: Any) -> None:
        toolkit.c.dataset_type = DATASET_TYPE_NAME

    def create_package_schema(self) -> dict[str, Any]:
        schema = harvest_schema.harvest_source_create_package_schema()
        if self.startup:
            schema["id"] = [toolkit.get_validator("unicode_safe")]
        return schema

    def update_package_schema(self) -> dict[str, Any]:
        return harvest_schema.harvest_source_update_package_schema()

    def show_package_schema(self) -> dict[str, Any]:
        return harvest_schema.harvest_source_show_package_schema()

    # IFacets

    def dataset_facets(self, facets_dict: Any, package_type: str) -> Any:
        if package_type != DATASET_TYPE_NAME:
            return facets_dict
        return OrderedDict(SOURCE_FACETS)

    def organization_facets(
        self, facets_dict: Any, organization_type: str, package_type: Any
    ) -> Any:
        if package_type != DATASET_TYPE_NAME:
            return facets_dict
        return OrderedDict(SOURCE_FACETS)

    # IPackageController

    def create(self, entity: model.Package) -> None:
        _dataset_flushed(entity)

    def edit(self, entity: model.Package) -> None:
        _dataset_flushed(entity)

    def after_dataset_create(self, context: Any, data_dict: dict[str, Any]) -> None:
        if _is_harvest_source(data_dict) and not self.startup:
            _create_harvest_source_object(context, data_dict)

    def after_dataset_update(self, context: Any, data_dict: dict[str, Any]) -> None:
        if _is_harvest_source(data_dict):
            _update_harvest_source_object(context, data_dict)

    def after_dataset_delete(self, context: Any, data_dict: dict[str, Any]) -> None:
        package = toolkit.get_action("package_show")(
            {"ignore_auth": True}, {"id": data_dict["id"]}
        )
        if _is_harvest_source(package):
            _delete_harvest_source_object(context, package)

    def before_dataset_search(self, search_params: dict[str, Any]) -> dict[str, Any]:
        fq = search_params.get("fq", "") or ""
        if "dataset_type:harvest" not in fq:
            search_params["fq"] = "{} -dataset_type:harvest".format(fq)
        return search_params

    def before_dataset_index(self, pkg_dict: dict[str, Any]) -> dict[str, Any]:
        if _is_harvest_source(pkg_dict):
            secret_config.redact_index_dict(pkg_dict)
        return indexing.add_harvest_extras(pkg_dict)

    def after_dataset_show(self, context: Any, data_dict: dict[str, Any]) -> None:
        if not _is_harvest_source(data_dict):
            return
        source = HarvestSource.get(data_dict["id"])
        if source is None:
            log.error("Harvest source not found for dataset %s", data_dict["id"])
            return
        status_context = {"ignore_auth": True, "user": context.get("user")}
        status_context.update(_status_options(context))
        data_dict["status"] = toolkit.get_action("harvest_source_show_status")(
            status_context, {"id": source.id}
        )
        _show_secrets_to_whom_may_see_them(context, data_dict, source)

    # Legacy (CKAN < 2.10) names of the hooks, kept for subclasses that call them.

    def after_create(self, context: Any, data_dict: dict[str, Any]) -> None:
        self.after_dataset_create(context, data_dict)

    def after_update(self, context: Any, data_dict: dict[str, Any]) -> None:
        self.after_dataset_update(context, data_dict)

    def after_delete(self, context: Any, data_dict: dict[str, Any]) -> None:
        self.after_dataset_delete(context, data_dict)

    def before_search(self, search_params: dict[str, Any]) -> dict[str, Any]:
        return self.before_dataset_search(search_params)

    def before_index(self, pkg_dict: dict[str, Any]) -> dict[str, Any]:
        return self.before_dataset_index(pkg_dict)

    def after_show(self, context: Any, data_dict: dict[str, Any]) -> None:
        self.after_dataset_show(context, data_dict)
