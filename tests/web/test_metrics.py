"""``/harvest/metrics``: who may read it, and what it says.

Off unless configured (404); on, a sysadmin session or the metrics token
(``Authorization: Bearer <token>``) reads it; everyone else gets a 403 and
one line saying why. The answer is parsed with ``prometheus_client``'s own
parser and compared with the database and the broker.
"""
from __future__ import annotations

import calendar
from typing import Any

import pytest
import sqlalchemy as sa
from ckan import model
from ckan.common import config
from prometheus_client.parser import text_string_to_metric_families

from ckanext.harvest.lib.metrics import IMPORT_BUCKETS
from ckanext.harvest.model import HarvestJob, JobStatus, ObjectState
from tests.web.conftest import ROLES

pytestmark = pytest.mark.usefixtures("clean_queues")

TOKEN = "s3cret-metrics-token-of-the-tests"


def _body(response: Any) -> str:
    return response.get_data(as_text=True)


@pytest.fixture
def metrics_on(monkeypatch):
    """The endpoint for sysadmin sessions only."""
    monkeypatch.setitem(config, "ckan.harvest.metrics.enabled", True)


@pytest.fixture
def metrics_token(monkeypatch):
    """The endpoint enabled by a token."""
    monkeypatch.setitem(config, "ckan.harvest.metrics.token", TOKEN)


def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _samples(family: Any, name: str = "") -> dict[tuple[Any, ...], float]:
    return {tuple(sorted(sample.labels.items())): sample.value
            for sample in family.samples if not name or sample.name == name}


# -- who may read it -----------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_metrics_are_404_for_everyone_unless_configured(world, client, role):
    response = client(role).get("/harvest/metrics")

    assert response.status_code == 404


@pytest.mark.parametrize("role", ROLES)
def test_enabled_metrics_are_for_sysadmin_sessions(world, client, metrics_on, role):
    response = client(role).get("/harvest/metrics")

    if role == "sysadmin":
        assert response.status_code == 200
        assert response.content_type.startswith("text/plain; version=0.0.4")
    else:
        assert response.status_code == 403
        assert _body(response) == ("Only sysadmins or holders of the metrics token may "
                                   "read the metrics.\n")


@pytest.mark.parametrize("role", ROLES)
def test_the_token_opens_the_metrics_whoever_asks(world, client, metrics_token, role):
    response = client(role).get("/harvest/metrics",
                                headers={"Authorization": "Bearer " + TOKEN})

    assert response.status_code == 200
    assert "ckanext_harvest_jobs" in _body(response)


@pytest.mark.parametrize("role", ROLES)
def test_a_token_site_still_serves_sysadmin_sessions(world, client, metrics_token, role):
    response = client(role).get("/harvest/metrics")

    assert response.status_code == (200 if role == "sysadmin" else 403)


@pytest.mark.parametrize("header, message", [
    ("Bearer wrong-token", "Invalid metrics token."),
    ("Bearer " + TOKEN + "x", "Invalid metrics token."),
    ("bearer " + TOKEN[:-1], "Invalid metrics token."),
    ("Bearer ", "Empty metrics token."),
    ("Bearer", "Empty metrics token."),
    ("Basic dXNlcjpwYXNz", "Invalid Authorization header: send 'Bearer <metrics token>' "
                           "or a sysadmin's API token."),
    (TOKEN, "Invalid Authorization header: send 'Bearer <metrics token>' or a "
            "sysadmin's API token."),
])
def test_bad_tokens_each_get_a_403_and_one_clear_line(world, client, metrics_token,
                                                     header, message):
    response = client("anonymous").get("/harvest/metrics",
                                       headers={"Authorization": header})

    assert response.status_code == 403
    assert _body(response) == message + "\n"


def test_a_token_where_none_is_configured_is_refused(world, client, metrics_on):
    response = client("sysadmin").get("/harvest/metrics",
                                      headers={"Authorization": "Bearer " + TOKEN})

    assert response.status_code == 403
    assert _body(response) == ("Metrics tokens are not accepted on this site "
                               "(ckan.harvest.metrics.token is not set).\n")


# -- what it says --------------------------------------------------------------------


def _db(sql: str, **params: Any) -> list[Any]:
    model.Session.remove()
    return list(model.Session.execute(sa.text(sql), params))


def test_metrics_parse_and_match_the_database_and_the_broker(world, client, metrics_token):
    from ckanext.harvest import queue

    publisher = queue.get_gather_publisher()
    publisher.send({"harvest_job_id": "queued-job"})
    publisher.close()

    response = client("anonymous").get("/harvest/metrics",
                                       headers={"Authorization": "Bearer " + TOKEN})

    families = _families(_body(response))
    jobs = dict(_db("SELECT status, count(*) FROM harvest_job GROUP BY status"))
    assert _samples(families["ckanext_harvest_jobs"]) == {
        (("status", status.value),): float(jobs.get(status.value, 0)) for status in JobStatus}
    objects = dict(_db("SELECT state, count(*) FROM harvest_object GROUP BY state"))
    assert _samples(families["ckanext_harvest_objects"]) == {
        (("state", state.value),): float(objects.get(state.value, 0)) for state in ObjectState}
    assert _samples(families["ckanext_harvest_queue_depth"]) == {
        (("queue", "gather"),): 1.0, (("queue", "fetch"),): 0.0}
    assert _samples(families["ckanext_harvest_queue_consumers"]) == {
        (("queue", "gather"),): 0.0, (("queue", "fetch"),): 0.0}
    assert _samples(families["ckanext_harvest_queue_up"]) == {
        (("queue", "gather"),): 1.0, (("queue", "fetch"),): 1.0}


def test_source_metrics_tell_last_success_and_consecutive_failures(world, client,
                                                                   metrics_on):
    families = _families(_body(client("sysadmin").get("/harvest/metrics")))

    name = world.source["name"]
    failures = _samples(families["ckanext_harvest_source_consecutive_failures"])
    assert failures[(("source", name),)] == 1.0
    assert failures[(("source", world.idle_source["name"]),)] == 0.0
    first = HarvestJob.get(world.first_job_id)
    success = _samples(families["ckanext_harvest_source_last_success_timestamp_seconds"])
    expected = calendar.timegm(first.finished.timetuple()) + first.finished.microsecond / 1e6
    assert success[(("source", name),)] == pytest.approx(expected, abs=1e-3)
    assert (("source", world.idle_source["name"]),) not in success
    stalled = _samples(families["ckanext_harvest_source_stalled"])
    assert stalled[(("source", world.running_source["name"]),)] == 0.0


def test_import_duration_histogram_counts_every_imported_object(world, client, metrics_on):
    families = _families(_body(client("sysadmin").get("/harvest/metrics")))

    histogram = families["ckanext_harvest_import_duration_seconds"]
    assert histogram.type == "histogram"
    buckets = {sample.labels["le"]: sample.value for sample in histogram.samples
               if sample.name.endswith("_bucket")}
    count = _samples(histogram, "ckanext_harvest_import_duration_seconds_count")[()]
    total = _samples(histogram, "ckanext_harvest_import_duration_seconds_sum")[()]
    rows = _db("SELECT extract(epoch FROM import_finished - import_started) FROM "
               "harvest_object WHERE import_started IS NOT NULL AND import_finished IS NOT "
               "NULL AND import_finished >= import_started")
    durations = [float(row[0]) for row in rows]
    assert count == len(durations) > 0
    assert total == pytest.approx(sum(durations))
    assert buckets["+Inf"] == count
    for bound in IMPORT_BUCKETS:
        assert buckets[str(bound)] == sum(1 for d in durations if d <= bound)
