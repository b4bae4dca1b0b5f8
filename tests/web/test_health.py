"""``/harvest/health`` and the stall marks of the job and source pages.

The world (tests/web/conftest.py) has a source whose latest job failed after
a successful one (``Forest records``), one with a Running job (``Busy
source``), one never harvested (``Idle source``) and a private one. Expected
figures are read from the database, not written out, where other tests of
the package may add jobs.
"""
from __future__ import annotations

import html
import re
from typing import Any, Iterator

import pytest
from ckan import model
from ckan.plugins import toolkit

from ckanext.harvest.lib import stalls
from ckanext.harvest.model import HarvestJob, JobStatus
from tests.web.conftest import ROLES, World

pytestmark = pytest.mark.usefixtures("clean_queues")

_ROW = re.compile(r'<tr class="harvest-health-source" data-source="(?P<name>[^"]+)" '
                  r'data-state="(?P<state>[^"]+)">(?P<cells>.*?)</tr>', re.S)


def _body(response: Any) -> str:
    return response.get_data(as_text=True)


def _rows(response: Any) -> list[dict[str, str]]:
    """The source rows of the page: name, state and the text of each cell."""
    rows = []
    for match in _ROW.finditer(_body(response)):
        cells = [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", cell)).split())
                 for cell in re.findall(r"<td[^>]*>(.*?)</td>", match["cells"], re.S)]
        rows.append({"name": match["name"], "state": match["state"], "cells": cells})
    return rows


def _status_count(status: str) -> int:
    model.Session.remove()
    return model.Session.query(HarvestJob).filter(HarvestJob.status == status).count()


@pytest.fixture
def stalled_job(world: World) -> Iterator[str]:
    """The world's running job, marked stalled as ``harvester run`` would."""
    job = HarvestJob.get(world.running_job_id)
    state, newly = stalls.check_job(job, minutes=0.001)
    assert state.stalled and newly
    model.Session.remove()
    yield world.running_job_id
    from ckan.lib.redis import connect_to_redis
    connect_to_redis().delete(stalls.stall_key(world.running_job_id))


@pytest.mark.parametrize("role", ROLES)
def test_health_page_is_for_sysadmins_only(world, client, role):
    response = client(role).get("/harvest/health", follow_redirects=False)

    assert response.status_code == (200 if role == "sysadmin" else 403)
    if role != "sysadmin":
        assert "Forest records" not in _body(response)


def test_health_page_has_one_row_per_source_with_its_figures(world, client):
    response = client("sysadmin").get("/harvest/health")

    rows = {row["name"]: row for row in _rows(response)}
    forest = rows[world.source["name"]]
    assert forest["state"] == "failing"
    # source, state, last success, consecutive failures, last duration, next run
    assert forest["cells"][0] == "Forest records"
    assert forest["cells"][2] != "Never"
    assert forest["cells"][3] == "1"
    assert forest["cells"][4].endswith(" s")
    assert forest["cells"][5] == "Manual"
    assert rows[world.running_source["name"]]["state"] == "running"
    assert rows[world.idle_source["name"]]["state"] == "never run"
    assert rows[world.idle_source["name"]]["cells"][2] == "Never"
    assert world.private_source["name"] in rows
    body = _body(response)
    running = re.search(r'id="harvest-health-running">(\d+)<', body)
    waiting = re.search(r'id="harvest-health-waiting">(\d+)<', body)
    assert running and int(running[1]) == _status_count(JobStatus.RUNNING.value)
    assert waiting and int(waiting[1]) == _status_count(JobStatus.NEW.value)


def test_health_page_shows_queue_depths_and_live_consumers(world, client):
    from ckanext.harvest import queue

    publisher = queue.get_fetch_publisher()
    publisher.send({"harvest_object_id": "not-an-object"})
    publisher.close()

    body = _body(client("sysadmin").get("/harvest/health"))

    fetch = re.search(r'data-queue="fetch">.*?class="depth">(\d+)<.*?class="consumers">(.*?)</td>',
                      body, re.S)
    gather = re.search(r'data-queue="gather">.*?class="depth">(\d+)<', body, re.S)
    assert fetch and gather
    assert (int(fetch[1]), int(gather[1])) == (1, 0)
    assert re.sub(r"<[^>]+>", "", fetch[2]).strip() == "0"  # no consumer runs


def test_health_page_draws_the_jobs_of_the_last_24_hours(world, client):
    body = _body(client("sysadmin").get("/harvest/health"))

    lanes = re.findall(r'<span class="harvest-timeline-source">([^<]+)</span>', body)
    assert world.source["name"] in lanes and world.running_source["name"] in lanes
    assert world.idle_source["name"] not in lanes
    states = re.findall(r'class="harvest-timeline-job" data-state="([a-z]+)"', body)
    assert {"ok", "failed", "running"} <= set(states)


@pytest.mark.parametrize("query, names", [
    ("?state=running", lambda w: {w.running_source["name"]}),
    ("?q=FOREST", lambda w: {w.source["name"]}),
    ("?q=idle&state=never+run", lambda w: {w.idle_source["name"]}),
    ("?q=source&state=never+run",
     lambda w: {w.idle_source["name"], w.private_source["name"]}),
])
def test_health_page_filters(world, client, query, names):
    rows = _rows(client("sysadmin").get("/harvest/health" + query))

    assert {row["name"] for row in rows} == names(world)


def test_health_page_sorts_by_each_column_both_ways(world, client):
    failures = [int(row["cells"][3]) for row in _rows(client("sysadmin").get(
        "/harvest/health?sort=consecutive_failures&dir=desc"))]
    names = [row["name"] for row in _rows(client("sysadmin").get(
        "/harvest/health?sort=name&dir=asc"))]
    states = [row["state"] for row in _rows(client("sysadmin").get(
        "/harvest/health?sort=state"))]

    assert failures == sorted(failures, reverse=True) and failures[0] >= 1
    assert names == sorted(names)
    order = ("stalled", "running", "waiting", "failing", "inactive", "never run", "ok")
    assert [order.index(state) for state in states] == sorted(order.index(s) for s in states)


@pytest.mark.parametrize("query, message", [
    ("?sort=password", "Unknown sort column &#39;password&#39;"),
    ("?dir=sideways", "Unknown sort direction &#39;sideways&#39;"),
    ("?state=asleep", "Unknown state &#39;asleep&#39;"),
])
def test_health_page_bad_query_is_a_400_naming_it(world, client, query, message):
    response = client("sysadmin").get("/harvest/health" + query)

    assert response.status_code == 400
    assert message in _body(response)


def test_stalled_job_is_shown_on_health_job_and_source_pages(world, client, stalled_job):
    sysadmin = client("sysadmin")
    name = world.running_source["name"]

    rows = {row["name"]: row for row in _rows(sysadmin.get("/harvest/health"))}
    job_page = _body(sysadmin.get("/harvest/{}/job/{}".format(name, stalled_job)))
    source_page = _body(client("editor").get("/harvest/admin/{}".format(name)))

    assert rows[name]["state"] == "stalled"
    assert "harvest-job-stalled" in job_page and "Stalled: no object has moved" in job_page
    assert 'data-status="Stalled"' in source_page
    body = _body(sysadmin.get("/harvest/health"))
    assert re.search(r'id="harvest-health-stalled">1<', body)


def test_job_page_shows_done_total_rate_and_eta(world, client):
    body = _body(client("editor").get("/harvest/{}/job/{}".format(
        world.running_source["name"], world.running_job_id)))

    # 1 of 3 objects done since the gather started: a rate, and an ETA
    assert "1 of 3 objects done" in body
    assert re.search(r'class="harvest-job-rate" data-rate="[0-9.]+"', body)
    eta = re.search(r'class="harvest-job-eta" data-seconds="(\d+)">About (.+?) left<', body)
    assert eta, body
    assert "harvest-job-stalled" not in body


def test_a_source_with_a_new_job_is_waiting(world, client, fresh_source):
    source = fresh_source(title="Queued source")
    job_id = toolkit.get_action("harvest_job_create")(
        {"ignore_auth": True, "user": ""}, {"source_id": source["id"], "run": False})["id"]

    response = client("sysadmin").get("/harvest/health?state=waiting")

    assert [row["name"] for row in _rows(response)] == [source["name"]]
    waiting = re.search(r'id="harvest-health-waiting">(\d+)<', _body(response))
    assert waiting and int(waiting[1]) == _status_count(JobStatus.NEW.value) >= 1
    toolkit.get_action("harvest_job_abort")({"ignore_auth": True, "user": ""}, {"id": job_id})


@pytest.mark.parametrize("role", ROLES)
def test_source_search_links_to_the_health_page_for_sysadmins(world, client, role):
    body = _body(client(role).get("/harvest/"))

    assert ('id="harvest-health-link"' in body) == (role == "sysadmin")
