"""Tests written the way a downstream harvester's test suite is written.

Each module here uses only the public surface of the package: the plugins,
``ckanext.harvest.tests.lib`` / ``factories``, ``unittest.mock.patch`` of module
names, and a small local mock CKAN (:mod:`tests.downstream.mock_ckan`). They pin
what other extensions (ckanext-dcat, ckanext-spatial, site harvesters) rely on.
"""
