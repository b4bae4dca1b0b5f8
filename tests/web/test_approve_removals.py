"""The job page of a job whose circuit breaker held removals back: the warning,
the approval button (a POST form with the CSRF token) and who may use it."""
from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from ckan import model
from ckan.tests import factories

from ckanext.harvest.lib import removals
from ckanext.harvest.model import HarvestJob, HarvestObject, HarvestObjectExtra, JobStatus
from tests.web.conftest import World, csrf_field

pytestmark = pytest.mark.usefixtures("clean_queues")


def _held_job(world: World, fresh_source: Callable[..., dict[str, Any]]) -> tuple[str, str]:
    """A finished job of a new source holding one withdrawal; (source name, job id)."""
    source = fresh_source(url="http://held-removals.example.org/%s" % id(world),
                          config=json.dumps({"delete_missing": {"mode": "delete"}}))
    job = HarvestJob(source_id=source["id"], status=JobStatus.FINISHED.value)
    job.save()
    dataset = factories.Dataset(owner_org=world.org_id)
    obj = HarvestObject(guid="held", job=job, package_id=dataset["id"], current=True,
                        state="COMPLETE", report_status="added")
    obj.extras = [HarvestObjectExtra(key=removals.HELD_KEY, value=job.id)]
    obj.save()
    job_id = job.id
    model.Session.remove()
    return source["name"], job_id


def _withdrawals(job_id: str) -> int:
    model.Session.remove()
    return model.Session.query(HarvestObjectExtra).join(HarvestObject).filter(
        HarvestObject.harvest_job_id == job_id,
        HarvestObjectExtra.key == removals.WITHDRAWAL_KEY).count()


@pytest.mark.usefixtures("csrf_enabled")
def test_an_editor_sees_the_warning_and_approves_with_the_button(
        world, client, fresh_source):
    name, job_id = _held_job(world, fresh_source)
    browser = client("editor")
    page = browser.get("/harvest/{}/job/{}".format(name, job_id))
    body = page.get_data(as_text=True)
    assert "The removal of 1 dataset missing at the source was held back" in body
    assert 'id="harvest-approve-removals"' in body
    field, token = csrf_field(body)

    response = browser.post("/harvest/{}/job/{}/approve-removals".format(name, job_id),
                            data={field: token}, follow_redirects=False)

    assert response.status_code == 302
    assert response.headers["Location"].endswith("/harvest/{}/job/{}".format(name, job_id))
    assert _withdrawals(job_id) == 1
    assert removals.held_count(job_id) == 0
    after = browser.get("/harvest/{}/job/{}".format(name, job_id)).get_data(as_text=True)
    assert "harvest-approve-removals" not in after


@pytest.mark.usefixtures("csrf_enabled")
def test_approving_without_the_token_is_refused(world, client, fresh_source):
    name, job_id = _held_job(world, fresh_source)

    response = client("editor").post(
        "/harvest/{}/job/{}/approve-removals".format(name, job_id), follow_redirects=False)

    assert response.status_code == 400
    assert _withdrawals(job_id) == 0


def test_a_member_may_not_approve(world, client, fresh_source):
    name, job_id = _held_job(world, fresh_source)

    response = client("member").post(
        "/harvest/{}/job/{}/approve-removals".format(name, job_id), follow_redirects=False)

    assert response.status_code == 403
    assert _withdrawals(job_id) == 0
    assert removals.held_count(job_id) == 1


def test_a_job_without_held_removals_shows_no_button(world, client):
    body = client("sysadmin").get("/harvest/{}/job/{}".format(
        world.source["name"], world.job_id)).get_data(as_text=True)

    assert "harvest-approve-removals" not in body
