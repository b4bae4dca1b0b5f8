"""Two real CKAN sites: datasets deleted at the remote, end to end (``delete_missing``).

The sites, consumers and helpers are those of :mod:`tests.harvesters.test_two_ckan`
(a remote ``ckan run`` with its own database and Solr core, the local consumers as
``ckan harvester`` subprocesses). Every scenario runs on Redis and on RabbitMQ.

The grace period passes in the database: the ``missing_since`` marks the jobs
recorded are moved back (the consumers are other processes, whose clock a test
cannot patch).
"""
from __future__ import annotations

import datetime
import time
from typing import Any, Callable, Iterator

import pytest
import sqlalchemy as sa
from ckan.common import config

from tests.harvesters import test_two_ckan as two_ckan
from tests.harvesters.test_two_ckan import (
    PUBLIC,
    SITE_OPTIONS,
    Local,
    _action,
    _become,
    _create_source,
    _gather_errors,
    _harvest,
    _local_datasets,
    _stats,
)
from tests.support.remote import RemoteCkan
from tests.support.site import HarvestSite

# The sites of test_two_ckan (module-scoped fixtures: started once for this module).
remote_ckan = two_ckan.remote_ckan
remote_state = two_ckan.remote_state
remote = two_ckan.remote
local_site = two_ckan.local_site
local = two_ckan.local


@pytest.fixture(params=["redis", "amqp"])
def site(request: pytest.FixtureRequest, local: Local,
         make_site: Callable[..., HarvestSite]) -> Iterator[Local]:
    """The local site on Redis (the module's), or one on RabbitMQ."""
    if request.param == "redis":
        yield local
        return
    amqp = make_site("amqp", "two-ckan", SITE_OPTIONS)
    amqp.consumer("gather").start()
    amqp.consumer("fetch").start()
    _become(amqp)
    yield Local(amqp, dict(config), local.org_id)
    amqp.check_consumers()


def _public_ids(remote: RemoteCkan) -> list[str]:
    return sorted(remote.public_datasets())


def _source(site: Local, remote: RemoteCkan, **delete_missing: Any) -> str:
    settings = dict({"after_days": 7, "max_fraction": 1}, **delete_missing)
    return _create_source(site, remote, {"delete_missing": settings})


def _days_pass(site: Local, days: int) -> None:
    """Move every ``missing_since`` mark ``days`` back."""
    with site.site.engine.begin() as connection:
        rows = connection.execute(sa.text(
            "SELECT id, value FROM harvest_object_extra WHERE key = 'missing_since'"))
        for extra_id, value in list(rows):
            moved = datetime.datetime.fromisoformat(value) - datetime.timedelta(days=days)
            connection.execute(sa.text("UPDATE harvest_object_extra SET value = :v "
                                       "WHERE id = :id"),
                               {"v": moved.isoformat(), "id": extra_id})


def _missing_marks(site: Local) -> set[str]:
    return {row[0] for row in site.site.query(
        "SELECT o.guid FROM harvest_object_extra e JOIN harvest_object o "
        "ON o.id = e.harvest_object_id WHERE e.key = 'missing_since' AND o.current")}


def _state(dataset_id: str) -> tuple[str, bool, str]:
    dataset = _local_datasets()[dataset_id]
    return dataset["state"], dataset["private"], dataset["name"]


# --- each mode, the grace period, restoration ---------------------------------------------


def test_mode_delete_after_the_grace_period_then_restored_when_back(
        site: Local, remote: RemoteCkan) -> None:
    source_id = _source(site, remote, mode="delete")
    assert _stats(_harvest(site, source_id)) == {"added": PUBLIC}
    gone = _public_ids(remote)[0]
    name = _state(gone)[2]
    remote.action("package_delete", id=gone)

    within = _harvest(site, source_id)  # missed: marked only
    assert _state(gone)[0] == "active" and _missing_marks(site) == {gone}
    assert "deleted" not in _stats(within)
    _days_pass(site, 8)
    after = _harvest(site, source_id)

    assert _stats(after).get("deleted") == 1
    assert _state(gone)[0] == "deleted"
    again = _harvest(site, source_id)
    assert "deleted" not in _stats(again)  # nothing is withdrawn twice

    remote.action("package_patch", id=gone, state="active")
    back = _harvest(site, source_id)

    assert _stats(back).get("updated") == 1
    assert _state(gone) == ("active", False, name)


def test_mode_private_then_public_again_when_back(site: Local, remote: RemoteCkan) -> None:
    source_id = _source(site, remote, mode="private", after_days=0)
    _harvest(site, source_id)
    gone = _public_ids(remote)[1]
    remote.action("package_delete", id=gone)

    job_id = _harvest(site, source_id)

    assert _stats(job_id).get("deleted") == 1
    assert _state(gone)[:2] == ("active", True)
    remote.action("package_patch", id=gone, state="active")
    _harvest(site, source_id)
    assert _state(gone)[:2] == ("active", False)


def test_mode_keep_changes_nothing(site: Local, remote: RemoteCkan) -> None:
    source_id = _source(site, remote, mode="keep", after_days=0)
    _harvest(site, source_id)
    gone = _public_ids(remote)[2]
    remote.action("package_delete", id=gone)

    job_id = _harvest(site, source_id)

    assert "deleted" not in _stats(job_id)
    assert _state(gone)[0] == "active" and _missing_marks(site) == set()


def test_a_dataset_back_within_the_grace_period_is_kept_and_unmarked(
        site: Local, remote: RemoteCkan) -> None:
    source_id = _source(site, remote, mode="delete")
    _harvest(site, source_id)
    gone = _public_ids(remote)[3]
    remote.action("package_delete", id=gone)
    _harvest(site, source_id)
    assert _missing_marks(site) == {gone}
    remote.action("package_patch", id=gone, state="active")

    _harvest(site, source_id)
    _days_pass(site, 30)
    job_id = _harvest(site, source_id)

    assert _missing_marks(site) == set()
    assert "deleted" not in _stats(job_id)
    assert _state(gone)[0] == "active"


# --- the circuit breaker ------------------------------------------------------------------


def test_a_mass_deletion_is_held_until_approved(site: Local, remote: RemoteCkan) -> None:
    source_id = _source(site, remote, mode="delete", after_days=0, max_fraction=0.25)
    _harvest(site, source_id)
    gone = _public_ids(remote)[:3]
    for dataset_id in gone:
        remote.action("package_delete", id=dataset_id)

    job_id = _harvest(site, source_id)

    assert "deleted" not in _stats(job_id)
    assert [_state(i)[0] for i in gone] == ["active"] * 3
    assert _action("harvest_job_removals_show", id=job_id) == {"job_id": job_id,
                                                               "held": 3}
    (warning,) = _gather_errors(site, job_id)
    assert "approve-removals %s" % job_id in warning

    assert _action("harvest_job_approve_removals", id=job_id)["approved"] == 3
    _wait_until_withdrawn(site, job_id, 3)

    assert [_state(i)[0] for i in gone] == ["deleted"] * 3
    assert _stats(job_id).get("deleted") == 3
    assert _action("harvest_job_approve_removals", id=job_id)["approved"] == 0


def test_an_empty_remote_withdraws_nothing(site: Local, remote: RemoteCkan) -> None:
    source_id = _source(site, remote, mode="delete", after_days=0)
    _harvest(site, source_id)
    for dataset_id in _public_ids(remote):
        remote.action("package_delete", id=dataset_id)

    job_id = _harvest(site, source_id)

    assert all(d["state"] == "active" for d in _local_datasets().values())
    assert _action("harvest_job_removals_show", id=job_id)["held"] == PUBLIC
    assert any("the source listed no dataset at all" in message
               for message in _gather_errors(site, job_id))


def _wait_until_withdrawn(site: Local, job_id: str, count: int) -> None:
    """Wait for the fetch consumer to perform ``count`` approved withdrawals."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        site.site.check_consumers()
        done = site.site.scalar(
            "SELECT count(*) FROM harvest_object o JOIN harvest_object_extra e ON "
            "e.harvest_object_id = o.id WHERE o.harvest_job_id = :j AND "
            "e.key = 'harvest_withdrawal' AND o.state IN ('COMPLETE', 'ERROR')",
            j=job_id)
        if done >= count:
            return
        time.sleep(0.2)
    pytest.fail("approved withdrawals not performed\n" + site.site.diagnostics(job_id))
