"""Pytest fixtures for harvester test suites (``pytest_plugins``)."""
from __future__ import annotations

import pytest


@pytest.fixture
def clean_queues() -> None:
    """Empty this site's harvest queues."""
    from ckanext.harvest import queue

    queue.purge_queues()
