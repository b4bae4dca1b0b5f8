"""The marks most test modules share: the plugins they load and a clean site.

``pytestmark = harvest_site("harvest ckan_harvester")`` loads those plugins
(``with_plugins``) and gives every test an empty database with the harvest
tables (``clean_db``) and an empty search index (``clean_index``).
"""
from __future__ import annotations

from typing import Sequence

import pytest

#: The plugins of most tests: the framework and the test harvester (type ``test``).
DEFAULT_PLUGINS = "harvest test_harvester"


def harvest_site(
    plugins: str = DEFAULT_PLUGINS,
    *,
    index: bool = True,
    fixtures: Sequence[str] = (),
) -> list[pytest.MarkDecorator]:
    """The marks of a test module running on a clean site with ``plugins``.

    :param plugins: the ``ckan.plugins`` value
    :param index: also empty the search index before each test
    :param fixtures: more fixtures every test of the module uses
    """
    used = ["with_plugins", "clean_db"] + (["clean_index"] if index else [])
    return [
        pytest.mark.ckan_config("ckan.plugins", plugins),
        pytest.mark.usefixtures(*used, *fixtures),
    ]
