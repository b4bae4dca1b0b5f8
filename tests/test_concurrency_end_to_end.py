"""``ckan.harvest.max_running_jobs`` with real consumers, on both queue backends.

A site capped at one running job has three sources due at once: ``ckan
harvester run`` (the real executable, as cron runs it) starts the longest due,
the others wait for a slot (``New``), and they run one after another, in due
order, never two at a time. (The CLI and web output of a waiting job are
tested in-process: ``tests/test_cli.py``, ``tests/web/test_schedule.py``.)
:class:`HarvestSite` is in ``tests/support/site.py``.
"""
from __future__ import annotations

import datetime
import json

import pytest
from ckan import model

from ckanext.harvest.tests import factories as harvest_factories
from tests.support.marks import harvest_site
from tests.support.site import BACKENDS, datasets

pytestmark = harvest_site()


def _due_sources(site, minutes_ago: dict[str, int]) -> dict[str, str]:
    """Sources of the test harvester with a schedule, due ``minutes_ago``."""
    ids = {}
    for start, (name, minutes) in enumerate(minutes_ago.items()):
        source = harvest_factories.HarvestSource(
            name=name, url=f"http://{name}.example.org/", schedule="0 3 * * *",
            config=json.dumps({"datasets": datasets(1, start=start + 1)}))
        ids[name] = source["id"]
        due = datetime.datetime.utcnow() - datetime.timedelta(minutes=minutes)
        with site.engine.begin() as connection:
            connection.exec_driver_sql(
                "UPDATE harvest_source SET next_run = %(due)s WHERE id = %(id)s",
                {"due": due, "id": source["id"]})
    model.Session.remove()
    return ids


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cap_of_one_runs_three_due_sources_one_after_another_in_due_order(
    backend, make_site
):
    site = make_site(backend, "cap", options={"ckan.harvest.max_running_jobs": "1"})
    sources = _due_sources(site, {"cap-a": 10, "cap-b": 30, "cap-c": 20})
    site.consumer("gather").start()
    site.consumer("fetch").start()

    site.ckan("run")

    jobs = {name: site.scalar("SELECT id FROM harvest_job WHERE source_id = :s", s=source_id)
            for name, source_id in sources.items()}
    assert site.job(jobs["cap-b"]).status == "Running"
    assert [site.job(jobs[name]).status for name in ("cap-c", "cap-a")] == ["New", "New"]

    most_running = []

    def count_running() -> None:
        most_running.append(site.scalar(
            "SELECT count(*) FROM harvest_job WHERE status = 'Running'"))

    for name in ("cap-b", "cap-c", "cap-a"):
        took = site.wait_until_finished(jobs[name], timeout=120, on_tick=count_running)
        print(f"[{backend}] {name} finished after {took:.1f} s more")

    assert max(most_running) == 1
    spans = [site.job(jobs[name]) for name in ("cap-b", "cap-c", "cap-a")]
    for before, after in zip(spans, spans[1:]):
        assert before.finished <= after.gather_started, (before, after)
    for name in jobs:
        assert site.object_states(jobs[name]) == {"COMPLETE": 1}
    site.check_consumers()
