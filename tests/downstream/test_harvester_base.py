"""Downstream-style tests of ``HarvesterBase`` helpers given stand-in objects."""
from __future__ import annotations

import datetime
from unittest.mock import MagicMock

import pytest

from ckanext.harvest.harvesters.base import HarvesterBase
from ckanext.harvest.model import HarvestGatherError
from ckanext.harvest.tests import factories
from tests.support.marks import harvest_site

pytestmark = harvest_site(index=False)


def _finished_job(source, gathered):
    job = factories.HarvestJobObj(source=source)
    job.gather_started = gathered
    job.status = "Finished"
    job.save()
    return job


def _stand_in(source):
    job = MagicMock()
    job.source = source
    job.id = ""
    return job


@pytest.mark.parametrize("method", ["last_error_free_job", "_last_error_free_job"])
def test_last_error_free_job_of_a_mock_job_is_the_sources_latest_clean_job(method):
    source = factories.HarvestSourceObj(url="http://stand-in.example.com/")
    older = _finished_job(source, datetime.datetime(2024, 1, 1))
    newer = _finished_job(source, datetime.datetime(2024, 2, 1))
    HarvestGatherError.create("remote down", newer)
    other_source = factories.HarvestSourceObj(url="http://other.example.com/")
    _finished_job(other_source, datetime.datetime(2024, 3, 1))

    found = getattr(HarvesterBase, method)(_stand_in(source))

    assert found is not None
    assert found.id == older.id


def test_last_error_free_job_of_a_mock_job_without_clean_jobs_is_none():
    source = factories.HarvestSourceObj(url="http://stand-in.example.com/")

    assert HarvesterBase.last_error_free_job(_stand_in(source)) is None
