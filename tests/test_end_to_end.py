"""End to end: real ``ckan harvester`` consumer processes on real brokers.

Each test gets a private ``ckan.site_id`` (so its queues, ``ckan.harvest.<site>.gather``
etc., collide with nobody's), a generated ini enabling the ``test_harvester`` plugin,
and runs the real executables in subprocesses against the database of the test
process: ``gather-consumer`` and ``fetch-consumer`` in the background, ``source
create``, ``job`` and ``run`` in the foreground. The tests look at the results in the
database with plain SQL, and at the job statistics through ``harvest_job_show``.

Both queue backends are covered, against the real Redis and RabbitMQ: a missing
service is a failure, not a skip. :class:`HarvestSite` and :class:`Consumer` are
in ``tests/support/site.py``.
"""
from __future__ import annotations

import json

import pytest
from ckan import model
from ckan.plugins import toolkit

from tests.support.marks import harvest_site
from tests.support.site import (
    BACKENDS,
    datasets,
    job_stats,
)

pytestmark = harvest_site()


# --- the tests -----------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_jobs_through_real_consumers(backend, make_site):
    site = make_site(backend, "e2e")
    gather = site.consumer("gather")
    fetch = site.consumer("fetch")
    gather.start()
    fetch.start()

    # First job: 20 new datasets.
    source_id = site.create_source("e2e-source", {"datasets": datasets(20)})
    job_id = site.create_job("e2e-source", source_id)
    took = site.wait_until_finished(job_id, timeout=150)
    print(f"\n[{backend}] first job (20 objects) finished in {took:.1f} s")

    job = site.job(job_id)
    assert job.gather_started and job.gather_finished and job.finished
    assert site.object_states(job_id) == {"COMPLETE": 20}
    assert site.report_statuses(job_id) == {"added": 20}
    assert job_stats(job_id) == {"added": 20, "updated": 0, "not modified": 0,
                                 "deleted": 0, "errored": 0}
    expected = {f"harvested-g{i}" for i in range(1, 21)}
    assert site.harvested_datasets() == {name: "active" for name in expected}
    assert site.current_objects_per_guid(source_id) == {f"g{i}": 1 for i in range(1, 21)}
    linked = site.query(
        "SELECT o.guid, p.name FROM harvest_object o JOIN package p ON p.id = o.package_id "
        "WHERE o.harvest_job_id = :job", job=job_id)
    assert sorted(linked) == sorted((f"g{i}", f"harvested-g{i}") for i in range(1, 21))
    assert site.object_errors(job_id) == []

    # Second job: two new datasets, failures on purpose, one unchanged.
    model.Session.remove()
    toolkit.get_action("harvest_source_patch")(
        {"ignore_auth": True, "user": _site_user()},
        {"id": source_id, "config": json.dumps({
            "datasets": datasets(22),
            "import": {"g3": "error", "g4": "raise", "g6": "unchanged"},
            "fetch": {"g5": "error"},
        })},
    )
    job2_id = site.create_job("e2e-source", source_id)
    took = site.wait_until_finished(job2_id, timeout=150)
    print(f"[{backend}] second job (22 objects, 3 errors) finished in {took:.1f} s")

    assert site.object_states(job2_id) == {"COMPLETE": 19, "ERROR": 3}
    assert site.report_statuses(job2_id) == {"added": 2, "updated": 16,
                                             "not modified": 1, "errored": 3}
    assert job_stats(job2_id) == {"added": 2, "updated": 16, "not modified": 1,
                                  "deleted": 0, "errored": 3}
    errors = site.object_errors(job2_id)
    assert [(guid, state, stage) for guid, state, stage, _ in errors] == [
        ("g3", "ERROR", "Import"), ("g4", "ERROR", "Import"), ("g5", "ERROR", "Fetch")]
    assert "Import stage raised on purpose" in errors[1].message
    expected = {f"harvested-g{i}" for i in range(1, 23)}
    assert site.harvested_datasets() == {name: "active" for name in expected}
    # The failed objects leave the first job's objects current: one per guid.
    assert site.current_objects_per_guid(source_id) == {f"g{i}": 1 for i in range(1, 23)}

    # The consumers never died; nothing is left on the queues.
    site.check_consumers()
    gather.stop()
    fetch.stop()
    assert gather.kills == fetch.kills == 0
    assert site.pending_messages() == 0, site.queue_report()


def _site_user() -> str:
    return toolkit.get_action("get_site_user")({"ignore_auth": True}, {})["name"]
