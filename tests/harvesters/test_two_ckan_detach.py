"""Two real CKAN sites: detaching what the local one harvested from the remote one.

The sites, their fixtures and helpers are those of :mod:`tests.harvesters.test_two_ckan`
(real ``ckan harvester`` gather and fetch consumers, a remote CKAN served by ``ckan
run``); this module starts its own pair. After a first harvest, the source's datasets
are detached (``harvest_source_detach``); then the remote changes a dataset and every
later job, of the same source or of a second source of the same remote, must leave the
detached datasets exactly as they were, as must clearing and deleting the source
(docs/web-interface.rst, *Deleting a source*). On Redis and on RabbitMQ consumers.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest
from ckan import model
from ckan.common import config
from ckan.plugins import toolkit

from ckanext.harvest.model import HarvestObject
from tests.harvesters.test_two_ckan import (  # noqa: F401 - fixtures of this module too
    CATALOGUE,
    PUBLIC,
    SITE_OPTIONS,
    Local,
    _action,
    _become,
    _create_source,
    _harvest,
    _id_of,
    _local_datasets,
    _site_user,
    _stats,
    local,
    local_site,
    remote,
    remote_ckan,
    remote_state,
)
from tests.support.remote import RemoteCkan
from tests.support.site import HarvestSite

#: The source stores two extras on each dataset: a harvest one (removed by the
#: detach) and another one (kept).
DEFAULT_EXTRAS = {"harvest_url": "{harvest_source_url}/dataset/{dataset_id}",
                  "licence_note": "Open data"}
HARVEST_EXTRAS = {"harvest_object_id", "harvest_source_id", "harvest_source_title",
                  "harvest_url"}


def _extras(dataset: dict[str, Any]) -> dict[str, str]:
    return {extra["key"]: extra["value"] for extra in dataset.get("extras", [])}


def _without_harvest_extras(dataset: dict[str, Any]) -> dict[str, Any]:
    """The dataset without its harvest extras, the others sorted (PostgreSQL's
    JSONB, where CKAN 2.12 stores extras, keeps its own key order once rewritten)."""
    return dict(dataset, extras=sorted(
        (e for e in dataset.get("extras", []) if e["key"] not in HARVEST_EXTRAS),
        key=lambda extra: extra["key"]))


def _datasets() -> dict[str, dict[str, Any]]:
    """The local datasets, extras sorted."""
    return {i: _without_harvest_extras(d) for i, d in _local_datasets().items()}


def _indexed_under(source_id: str) -> int:
    return int(_action("package_search", fq='+harvest_source_id:"{}"'.format(source_id),
                       include_private=True)["count"])


def _current_objects(package_ids: Any) -> int:
    model.Session.remove()
    return model.Session.query(HarvestObject).filter(
        HarvestObject.package_id.in_(list(package_ids)),
        HarvestObject.current.is_(True)).count()


def _on_backend(module_site: Local, backend: str,
                make_site: Callable[..., HarvestSite]) -> Local:
    """The local site whose consumers use ``backend`` (the module's own is Redis)."""
    if backend == "redis":
        return module_site
    site = make_site(backend, "two-ckan", SITE_OPTIONS)
    site.consumer("gather").start()
    site.consumer("fetch").start()
    _become(site)
    return Local(site, dict(config), module_site.org_id)


@pytest.mark.parametrize("backend", ["redis", "amqp"])
def test_detached_datasets_are_left_alone_by_every_later_job(
        local: Local, remote: RemoteCkan,  # noqa: F811 - the imported fixtures
        make_site: Callable[..., HarvestSite], backend: str) -> None:
    site = _on_backend(local, backend, make_site)
    source_id = _create_source(site, remote, {"default_extras": DEFAULT_EXTRAS})
    first = _harvest(site, source_id)
    assert _stats(first) == {"added": PUBLIC}
    harvested = _local_datasets()
    assert len(harvested) == PUBLIC and _indexed_under(source_id) == PUBLIC
    for dataset in harvested.values():
        assert HARVEST_EXTRAS <= set(_extras(dataset))
        assert _extras(dataset)["harvest_source_id"] == source_id

    result = _action("harvest_source_detach", id="remote-ckan")

    assert result == {"id": source_id, "detached": PUBLIC}
    detached = _local_datasets()
    for dataset in detached.values():
        assert _extras(dataset)["licence_note"] == "Open data"
        assert not HARVEST_EXTRAS & set(_extras(dataset))
    # The same datasets, field by field, without their harvest extras only.
    detached = _datasets()
    assert detached == {i: _without_harvest_extras(d) for i, d in harvested.items()}
    assert _current_objects(detached) == 0
    assert _indexed_under(source_id) == 0
    status = _action("harvest_source_show_status", id=source_id)
    assert status["total_datasets"] == 0

    # The remote revises a dataset; the source harvests again (everything: its last
    # job no longer counts as clean, its objects being no longer current).
    changed = _id_of(remote, CATALOGUE.public[1])
    remote.action("package_patch", id=changed, title="Revised on the remote",
                  notes="Revised notes.")
    again = _harvest(site, source_id)

    assert _stats(again) == {"not modified": PUBLIC}
    assert _datasets() == detached
    assert _current_objects(detached) == 0 and _indexed_under(source_id) == 0

    # Another source of the same remote: no job of any source writes them.
    other_id = _create_source(site, remote, {}, name="remote-ckan-again")
    other = _harvest(site, other_id)

    assert _stats(other) == {"not modified": PUBLIC}
    assert _datasets() == detached
    assert _current_objects(detached) == 0 and _indexed_under(other_id) == 0

    # Clearing the source, then deleting it (cleared), leave them too.
    _action("harvest_source_clear", id=source_id)
    model.Session.remove()
    toolkit.get_action("harvest_source_delete")(
        {"user": _site_user(), "clear_source": True}, {"id": source_id})

    assert _datasets() == detached
