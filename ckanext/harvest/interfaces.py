"""The ``IHarvester`` interface implemented by every harvester plugin."""
from __future__ import annotations

from typing import Any, Optional, Union

from ckan.plugins.interfaces import Interface


class IHarvester(Interface):
    """A harvester: gathers, fetches and imports the records of a remote catalogue.

    Harvesters are CKAN plugins (``SingletonPlugin`` plus
    ``implements(IHarvester)``). A source is handled by the harvester whose
    ``info()['name']`` equals the source's ``type``. Plugins implement this
    interface without ``inherit=True``: the framework detects the optional
    methods (``validate_config``, ``get_original_url``, ``extra_schema``) with
    ``hasattr``, so no defaults are injected into plugins.
    """

    def info(self) -> dict[str, Any]:
        """Describe the harvester.

        :returns: a dict with ``name`` (machine name, stored as the source
            type), ``title`` (shown in the new-source form) and
            ``description``; optionally ``form_config_interface`` (``'Text'``
            shows the configuration box in the form)
        """

    def validate_config(self, config: Optional[str]) -> Optional[str]:
        """Optional. Check the source configuration string.

        :param config: the raw configuration (may be empty or None)
        :returns: a replacement configuration string, or None to keep it
        :raises Exception: any exception becomes a validation error on
            ``config``
        """

    def get_original_url(self, harvest_object_id: str) -> Optional[str]:
        """Optional. Return the URL of the remote record behind an object.

        :param harvest_object_id: id of the harvest object
        :returns: a URL, or None when there is none
        """

    def gather_stage(self, harvest_job: Any) -> Optional[list[str]]:
        """Create a ``HarvestObject`` for each remote record to process.

        :param harvest_job: the ``HarvestJob`` being run
        :returns: the ids of the objects created; ``[]`` when there is nothing
            to do; None (or any non-list) when gathering failed
        """

    def fetch_stage(self, harvest_object: Any) -> Union[bool, str]:
        """Fetch the remote content of one object.

        :param harvest_object: the ``HarvestObject`` to fetch
        :returns: ``True`` to continue with the import, ``'unchanged'`` when
            nothing changed remotely, ``False`` on error
        """

    def import_stage(self, harvest_object: Any) -> Union[bool, str]:
        """Create, update or delete the local dataset of one object.

        Sets ``harvest_object.package_id`` and ``current`` (True on create or
        update, False on delete) and clears ``current`` on the previous
        objects of the same dataset.

        :param harvest_object: the fetched ``HarvestObject``
        :returns: truthy on success, ``'unchanged'`` when nothing needed
            doing, falsy on error
        """

    def extra_schema(self) -> dict[str, Any]:
        """Optional. Navl schema of extra top-level source fields.

        :returns: a dict of field name to validator list
        """

    def validate_source_url(self, url: str) -> Optional[str]:
        """Optional. Check the URL of a source of this type (create and update).

        The framework has checked that it is not empty, not too long and free
        of control characters; what else a URL must be is the harvester's
        business (e.g. ``http(s)://`` for a harvester fetching over HTTP).

        :param url: the submitted URL
        :returns: None to keep it, or the URL to store instead
        :raises Exception: to refuse it; the message is the validation error
        """
