"""Crash safety of withdrawals: the fetch consumer killed (``kill -9``) again and
again while a job withdraws datasets that vanished at the source.

The harness is ``test_crash_safety.py``'s: real consumer processes, ``ckan
harvester run`` as cron, the test harvester (type ``test``), which reports its
complete listing when its configuration has ``delete_missing``. A first job
harvests ``OBJECTS`` datasets; the source then lists only ``KEPT`` of them, and
the second job withdraws the others (mode ``delete``, no grace period, no
circuit breaker) while its fetch consumer is killed every ``FETCH_KILL_STEP``
completed objects.

In the end nothing may be withdrawn twice or left half-withdrawn: every
withdrawal object ``COMPLETE`` and reported ``deleted``, exactly one per
vanished dataset; every vanished dataset deleted and without a current object;
every kept dataset active with exactly one current object.
"""
from __future__ import annotations

import json

import pytest

from tests.support.marks import harvest_site
from tests.support.site import BACKENDS, QUICK_RECOVERY, HarvestSite, datasets, job_stats
from tests.test_crash_safety import FetchKiller

pytestmark = harvest_site()

OBJECTS = 200
KEPT = 20
FETCH_KILL_STEP = 30
FETCH_KILLS = 4
JOB_TIMEOUT = 240.0
DELETE_NOW = {"mode": "delete", "after_days": 0, "max_fraction": 1}


def _set_config(site: HarvestSite, source_id: str, config: dict) -> None:
    with site.engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE harvest_source SET config = %(c)s WHERE id = %(id)s",
            {"c": json.dumps(config), "id": source_id})


def _withdrawals(site: HarvestSite, job_id: str) -> dict[tuple[str, str | None], int]:
    rows = site.query(
        "SELECT o.state, o.report_status, count(*) FROM harvest_object o "
        "JOIN harvest_object_extra e ON e.harvest_object_id = o.id "
        "WHERE o.harvest_job_id = :job AND e.key = 'harvest_withdrawal' "
        "GROUP BY o.state, o.report_status", job=job_id)
    return {(state, report): count for state, report, count in rows}


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_of_the_fetch_consumer_while_a_job_withdraws(backend, make_site):
    site = make_site(backend, "withdraw", QUICK_RECOVERY)
    site.consumer("gather").start()
    fetch = site.consumer("fetch")
    fetch.start()
    all_datasets = datasets(OBJECTS)
    source_id = site.create_source("withdraw-source", {
        "datasets": all_datasets, "delete_missing": DELETE_NOW})
    first = site.create_job("withdraw-source", source_id)
    site.wait_until_finished(first, timeout=JOB_TIMEOUT)
    _set_config(site, source_id, {"datasets": all_datasets[:KEPT],
                                  "delete_missing": DELETE_NOW})

    second = site.create_job("withdraw-source", source_id)
    killer = FetchKiller(site, fetch, second, FETCH_KILL_STEP, FETCH_KILLS)
    took = site.wait_until_finished(second, timeout=JOB_TIMEOUT, on_tick=killer)

    gone = OBJECTS - KEPT
    print(f"\n[{backend}] withdrawals: fetch kill -9 x{fetch.kills} at "
          f"{[kill['complete'] for kill in killer.kills]} COMPLETE objects; "
          f"interrupted: {killer.outcome()}; job took {took:.1f} s")
    assert fetch.kills >= 3, site.diagnostics(second)
    assert _withdrawals(site, second) == {("COMPLETE", "deleted"): gone}
    assert job_stats(second)["deleted"] == gone
    states = dict(site.query(
        "SELECT p.state, count(*) FROM package p WHERE p.name LIKE 'harvested-%' "
        "GROUP BY p.state"))
    assert states == {"active": KEPT, "deleted": gone}
    current = site.current_objects_per_guid(source_id)
    assert current == {f"g{i}": 1 for i in range(1, KEPT + 1)}
    withdrawn_datasets = site.scalar(
        "SELECT count(DISTINCT o.package_id) FROM harvest_object o "
        "JOIN harvest_object_extra e ON e.harvest_object_id = o.id "
        "WHERE o.harvest_job_id = :job AND e.key = 'harvest_withdrawal'", job=second)
    assert withdrawn_datasets == gone  # one withdrawal per dataset, none twice
    assert site.job(second).status == "Finished"
