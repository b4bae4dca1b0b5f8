"""``ckan harvester job-status JOB``: objects done / total, rate, ETA, stall.

Invoked through CKAN's ``ckan`` click group (the ``cli`` fixture), on jobs
whose objects are put in known states. ``job --wait`` runs against real
consumers in ``tests/test_stalls.py``.
"""
from __future__ import annotations

import datetime
import re
from typing import Any, Optional

import pytest
from ckan.cli.cli import ckan as ckan_command
from ckan.lib.redis import connect_to_redis

from ckanext.harvest.lib import stalls
from ckanext.harvest.model import HarvestJob, HarvestSource, JobStatus, utcnow
from ckanext.harvest.tests import factories as harvest_factories
from tests.support.marks import harvest_site

pytestmark = harvest_site(index=False, fixtures=("clean_queues", "with_extended_cli"))


@pytest.fixture
def run(cli):
    def _run(*args: str, input: Optional[str] = None) -> Any:
        return cli.invoke(ckan_command, ["harvester", *args], input=input)

    return _run


def _job(states: dict[str, int], started_ago: float, gathered: bool = True) -> HarvestJob:
    source = harvest_factories.HarvestSource()
    job = harvest_factories.HarvestJobObj(source=HarvestSource.get(source["id"]))
    job.status = JobStatus.RUNNING.value
    job.gather_started = utcnow() - datetime.timedelta(seconds=started_ago)
    job.gather_finished = utcnow() if gathered else None
    job.save()
    for state, count in states.items():
        for index in range(count):
            obj = harvest_factories.HarvestObjectObj(job=job, guid="{}-{}".format(state, index))
            obj.state = state
            obj.save()
    return job


@pytest.fixture
def forget_stalls():
    job_ids: list[str] = []
    yield job_ids
    for job_id in job_ids:
        connect_to_redis().delete(stalls.stall_key(job_id))


def test_job_status_of_a_running_job_then_stalled(run, forget_stalls):
    job = _job({"COMPLETE": 2, "ERROR": 1, "WAITING": 3}, started_ago=600)
    forget_stalls.append(job.id)

    result = run("job-status", job.id)
    state, _ = stalls.check_job(job, minutes=0.001)
    stalled = run("job-status", job.id)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:5] == [
        "Job id: {}".format(job.id),
        "\tstatus: Running",
        "\tsource: {}".format(job.source_id),
        "\tobjects: 3 of 6 done (50%)",
        "\tstates: COMPLETE 2, ERROR 1, WAITING 3",
    ]
    # 3 done in 10 minutes: 0.3 per minute, 3 left: about 10 minutes
    assert re.fullmatch(r"\telapsed: 10 min [0-9] s", lines[5]), lines[5]
    assert lines[6] == "\trate: 0.3 objects/minute"
    assert re.fullmatch(r"\teta: (9 min 5[0-9] s|10 min [0-9] s)", lines[7]), lines[7]
    assert lines[8:] == ["\tstalled: no"]
    assert stalled.stdout.splitlines()[8:] == [
        "\tstalled: yes, objects unmoved since {} UTC".format(state.last_moved.isoformat())]


def test_job_status_while_gathering_and_once_finished_has_no_eta(run):
    gathering = _job({"WAITING": 4}, started_ago=30, gathered=False)
    finished = _job({"COMPLETE": 2}, started_ago=60)
    finished.status = JobStatus.FINISHED.value
    finished.finished = finished.gather_started + datetime.timedelta(seconds=40)
    finished.save()

    results = [run("job-status", job.id) for job in (gathering, finished)]

    assert [result.exit_code for result in results] == [0, 0]
    assert "\tobjects: gathering, 4 found so far\n" in results[0].stdout
    assert "\trate: unknown\n\teta: unknown\n" in results[0].stdout
    assert "\tstatus: Finished\n\tsource: {}\n\tobjects: 2 of 2 done (100%)\n".format(
        finished.source_id) in results[1].stdout
    assert "\telapsed: 40 s\n\trate: 3.0 objects/minute\n\teta: unknown\n" in results[1].stdout


def test_job_status_of_unknown_or_missing_jobs_is_one_error_line(run):
    results = {job_id: run("job-status", job_id) for job_id in ("no-such-job", "", " ")}
    missing = run("job-status")
    job_help = run("job", "--help")

    for job_id, result in results.items():
        assert (result.exit_code, result.stdout) == (1, ""), job_id
        assert result.stderr == "Job {} not found.\n".format(job_id)
    assert missing.exit_code == 2
    assert "Missing argument 'JOB_ID'" in missing.stderr
    assert job_help.exit_code == 0 and "--wait" in job_help.stdout
