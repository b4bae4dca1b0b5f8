"""Content hashes (``ckanext.harvest.lib.hashes``): what changes a record's hash,
what does not, and the force flag of a job in CKAN's Redis."""
from __future__ import annotations

import json
from typing import Any, Optional

import pytest
from ckan.lib.redis import connect_to_redis

from ckanext.harvest.lib import hashes
from ckanext.harvest.tests import factories as harvest_factories

RECORD = {"id": "r1", "title": "Trees", "tags": [{"name": "oak"}], "extras": {"a": 1}}
CONFIG = '{"force_all": true, "default_tags": ["x"]}'


class _Harvester:
    """A stand-in with only what the fingerprint reads (``info``)."""

    def __init__(self, version: Optional[str] = None, name: str = "fake") -> None:
        self.version, self.name = version, name

    def info(self) -> dict[str, Any]:
        info = {"name": self.name, "title": "Fake", "description": "Fake"}
        if self.version:
            info["version"] = self.version
        return info


def _hash(content: str, config: Optional[str] = CONFIG,
          harvester: Any = None) -> str:
    return hashes.record_hash(content, config, harvester or _Harvester())


def test_key_order_and_whitespace_do_not_change_the_hash() -> None:
    compact = json.dumps(RECORD, separators=(",", ":"))
    reordered = json.dumps(dict(reversed(list(RECORD.items()))), indent=4)

    assert _hash(compact) == _hash(reordered)
    assert hashes.canonical(reordered) == hashes.canonical(compact)


def test_a_changed_value_changes_the_hash() -> None:
    changed = dict(RECORD, title="Trees ")

    assert _hash(json.dumps(RECORD)) != _hash(json.dumps(changed))


def test_text_content_is_compared_with_its_whitespace_collapsed() -> None:
    assert _hash("<rdf:RDF>\n  <a>x</a>\n</rdf:RDF>") == _hash("<rdf:RDF> <a>x</a>\t</rdf:RDF> ")
    assert _hash("<a>x</a>") != _hash("<a>y</a>")


def test_the_source_config_is_part_of_the_hash() -> None:
    content = json.dumps(RECORD)
    spaced = '{ "default_tags": ["x"],\n "force_all": true }'

    assert _hash(content, spaced) == _hash(content, CONFIG)
    assert _hash(content, '{"force_all": false}') != _hash(content, CONFIG)
    assert _hash(content, None) != _hash(content, CONFIG)


def test_the_harvester_and_its_version_are_part_of_the_hash() -> None:
    content = json.dumps(RECORD)

    assert _hash(content, harvester=_Harvester("2.0")) == _hash(
        content, harvester=_Harvester("2.0"))
    assert _hash(content, harvester=_Harvester("2.0")) != _hash(
        content, harvester=_Harvester("2.1"))
    assert _hash(content, harvester=_Harvester(name="other")) != _hash(content)


def test_without_a_version_the_framework_version_is_used() -> None:
    assert hashes.harvester_fingerprint(_Harvester()).endswith(
        "|fake|" + hashes._own_version())
    assert hashes._own_version() not in ("", "unknown")


@pytest.mark.usefixtures("with_plugins", "clean_db")
@pytest.mark.ckan_config("ckan.plugins", "harvest test_harvester")
def test_a_forced_job_is_flagged_in_redis_with_a_ttl() -> None:
    job = harvest_factories.HarvestJobObj()
    other = harvest_factories.HarvestJobObj(
        source=harvest_factories.HarvestSourceObj(url="http://two.example.com"))

    hashes.mark_forced(job.id)

    assert hashes.is_forced(job.id) is True
    assert hashes.is_forced(other.id) is False
    assert hashes.is_forced(None) is False
    ttl = connect_to_redis().ttl(hashes.force_key(job.id))
    assert hashes.FORCE_TTL_SECONDS - 60 < ttl <= hashes.FORCE_TTL_SECONDS
    connect_to_redis().delete(hashes.force_key(job.id))


@pytest.mark.usefixtures("with_plugins", "clean_db")
@pytest.mark.ckan_config("ckan.plugins", "harvest test_harvester")
def test_a_jobs_flag_is_read_from_redis_once_per_process() -> None:
    """A job is flagged when it is created, before any of its objects exists:
    each consumer asks Redis once per job, not once per object."""
    job = harvest_factories.HarvestJobObj()
    assert hashes.is_forced(job.id) is False

    connect_to_redis().set(hashes.force_key(job.id), "1")
    try:
        assert hashes.is_forced(job.id) is False  # as first answered
        hashes.mark_forced(job.id)  # in this process: answered from now on
        assert hashes.is_forced(job.id) is True
    finally:
        connect_to_redis().delete(hashes.force_key(job.id))
