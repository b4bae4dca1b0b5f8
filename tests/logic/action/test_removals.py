"""Approving the removals a job's circuit breaker held back: the actions
``harvest_job_removals_show`` and ``harvest_job_approve_removals``, and the
command ``approve-removals`` (the object the ``job`` group gets), invoked with
click's ``CliRunner``.

Every test runs against the real database, search index and Redis (the fetch
queue is the Redis list of this site).
"""
from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from ckan import model
from ckan.plugins import toolkit
from ckan.tests import factories
from click.testing import CliRunner

from ckanext.harvest.cli.removals import approve_removals_command
from ckanext.harvest.lib import removals
from ckanext.harvest.model import (
    HarvestJob,
    HarvestObject,
    HarvestObjectExtra,
    JobStatus,
)
from ckanext.harvest.tests import factories as harvest_factories
from tests.support.marks import harvest_site

pytestmark = harvest_site("harvest test_harvester")


@pytest.fixture
def fetch_queue(ckan_config):
    """The object ids waiting on this site's Redis fetch list (emptied before/after)."""
    conn = redis.Redis.from_url(ckan_config["ckan.redis.url"], decode_responses=True)
    key = "ckanext-harvest:{}:harvest_object_id".format(ckan_config["ckan.site_id"])
    conn.delete(key)
    yield lambda: [json.loads(m)["harvest_object_id"] for m in conn.lrange(key, 0, -1)]
    conn.delete(key)


def _held_job(count: int = 2) -> tuple[HarvestJob, dict[str, Any], dict[str, Any]]:
    """A finished job holding the withdrawal of ``count`` datasets of its source;
    the source's organisation and its editor."""
    editor = factories.User()
    org = factories.Organization(users=[{"name": editor["name"], "capacity": "editor"}])
    source = harvest_factories.HarvestSourceObj(
        url="http://held.example.org/", source_type="test", owner_org=org["id"],
        config=json.dumps({"delete_missing": {"mode": "delete"}}))
    job = HarvestJob(source=source, status=JobStatus.FINISHED.value)
    job.save()
    for n in range(count):
        dataset = factories.Dataset(owner_org=org["id"])
        obj = HarvestObject(guid="guid-%d" % n, job=job, package_id=dataset["id"],
                            current=True, state="COMPLETE", report_status="added")
        obj.extras = [HarvestObjectExtra(key=removals.HELD_KEY, value=job.id)]
        obj.save()
    return job, org, editor


def _withdrawals(job: HarvestJob) -> list[str]:
    return [obj.id for obj in model.Session.query(HarvestObject)
            .join(HarvestObjectExtra)
            .filter(HarvestObject.harvest_job_id == job.id,
                    HarvestObjectExtra.key == removals.WITHDRAWAL_KEY)]


def test_removals_show_counts_what_the_job_holds():
    job, _, editor = _held_job(2)

    result = toolkit.get_action("harvest_job_removals_show")(
        {"user": editor["name"]}, {"id": job.id})

    assert result == {"job_id": job.id, "held": 2}


def test_an_editor_of_the_source_approves_once_and_the_withdrawals_are_queued(
        fetch_queue):
    job, _, editor = _held_job(2)
    approve = toolkit.get_action("harvest_job_approve_removals")

    first = approve({"user": editor["name"]}, {"id": job.id})
    second = approve({"user": editor["name"]}, {"id": job.id})

    assert first == {"job_id": job.id, "approved": 2}
    assert second == {"job_id": job.id, "approved": 0}
    created = _withdrawals(job)
    assert sorted(fetch_queue()) == sorted(created)
    assert len(created) == 2
    assert removals.held_count(job.id) == 0


def test_someone_who_may_not_update_the_source_may_not_approve(fetch_queue):
    job, _, _ = _held_job(1)
    outsider = factories.User()

    with pytest.raises(toolkit.NotAuthorized):
        toolkit.get_action("harvest_job_approve_removals")(
            {"user": outsider["name"], "ignore_auth": False}, {"id": job.id})

    assert removals.held_count(job.id) == 1
    assert _withdrawals(job) == []
    assert fetch_queue() == []


def test_the_fetch_consumer_performs_an_approved_withdrawal_of_a_finished_job(
        fetch_queue):
    from ckanext.harvest import queue

    job, _, editor = _held_job(1)
    toolkit.get_action("harvest_job_approve_removals")({"user": editor["name"]},
                                                       {"id": job.id})
    (object_id,) = fetch_queue()

    queue.run_fetch_consumer(stop_after=1, idle_timeout=5)

    model.Session.remove()
    obj = HarvestObject.get(object_id)
    assert (obj.state, obj.report_status) == ("COMPLETE", "deleted")
    assert model.Package.get(obj.package_id).state == "deleted"


# --- the command -------------------------------------------------------------------


def test_approve_removals_command_prints_what_it_queued(fetch_queue):
    job, _, _ = _held_job(2)
    runner = CliRunner()

    first = runner.invoke(approve_removals_command, [job.id])
    second = runner.invoke(approve_removals_command, [job.id])

    assert first.exit_code == 0, first.output
    assert first.output == ("Job %s: 2 removal(s) approved and queued; the fetch "
                            "consumer performs them.\n" % job.id)
    assert second.output == "Job %s: no held removal to approve.\n" % job.id
    assert len(fetch_queue()) == 2


def test_approve_removals_command_with_an_unknown_job_says_so():
    result = CliRunner().invoke(approve_removals_command, ["no-such-job"])

    assert result.exit_code == 1
    assert "Job not found." in result.output
    assert "Traceback" not in result.output
