"""The ``harvest`` CKAN plugin: wires the harvesting framework into CKAN."""
from __future__ import annotations

import logging
from typing import Any

from ckan import plugins as p
from ckan.lib.plugins import DefaultDatasetForm, DefaultTranslation
from ckan.plugins import toolkit

from ckanext.harvest import mq

log = logging.getLogger(__name__)


@toolkit.blanket.config_declarations
class Harvest(p.SingletonPlugin, DefaultDatasetForm, DefaultTranslation):
    """The harvest framework plugin.

    Subclassable: downstream extensions override form and facet methods.
    """

    p.implements(p.IConfigurable)
    p.implements(p.ITranslation, inherit=True)

    startup = False

    # IConfigurable

    def configure(self, config: Any) -> None:
        """Check the harvest settings once CKAN's configuration is loaded."""
        self.startup = True
        try:
            mq.backend_name(config)
        finally:
            self.startup = False
