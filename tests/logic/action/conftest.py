"""Fixtures shared by the action tests."""
from __future__ import annotations

import json

import pytest
import redis


@pytest.fixture
def gather_job_ids(ckan_config):
    """``gather_job_ids()``: the job ids on this site's Redis gather list, in
    queue order (the site's Redis keys are emptied before and after)."""
    conn = redis.Redis.from_url(ckan_config["ckan.redis.url"], decode_responses=True)
    site = ckan_config["ckan.site_id"]

    def _clear() -> None:
        for key in conn.scan_iter("ckanext-harvest:{}:*".format(site)):
            conn.delete(key)

    _clear()
    yield lambda: [json.loads(message)["harvest_job_id"] for message in
                   conn.lrange("ckanext-harvest:{}:harvest_job_id".format(site), 0, -1)]
    _clear()
    conn.close()
