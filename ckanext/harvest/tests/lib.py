"""Run a harvest without queues, for tests of harvesters.

:func:`run_harvest_job` lives in :mod:`ckanext.harvest.lib.testrun` (the CLI's
``run-test`` uses it too) and is re-exported here, where tests import it from.
"""
from __future__ import annotations

from typing import Any

from ckanext.harvest.interfaces import IHarvester
from ckanext.harvest.lib.testrun import run_harvest_job
from ckanext.harvest.tests.factories import HarvestJobObj, HarvestSourceObj

__all__ = ["run_harvest", "run_harvest_job"]


def run_harvest(url: str, harvester: IHarvester, config: str = "") -> dict[str, Any]:
    """Create (or reuse) a source for ``url`` and run one job of it.

    :returns: results by guid (see :func:`run_harvest_job`)
    """
    source = HarvestSourceObj(
        url=url, config=config, source_type=harvester.info()["name"]
    )
    job = HarvestJobObj(source=source, run=False)
    return run_harvest_job(job, harvester)
