"""The delete page of a source: keep, detach or clear its datasets (web-interface.rst).

Each test harvests a fresh source of the world's organisation in-process (test
harvester: datasets ``harvested-<guid>``), then deletes it through the page.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable

import pytest
from ckan import model

from ckanext.harvest.lib import detaching
from ckanext.harvest.model import HarvestJob, HarvestObject, HarvestSource, JobStatus
from tests.web.conftest import MANAGERS, ROLES, _harvest
from tests.web.test_views import _body, _job_count, _text

pytestmark = pytest.mark.usefixtures("clean_queues")

OUTSIDERS = tuple(role for role in ROLES if role not in MANAGERS)
CHOICE = re.compile(r'<input class="form-check-input" type="radio" name="datasets" '
                    r'id="harvest-datasets-(\w+)" value="\w+"( checked)?>')


def _harvested(fresh_source: Callable[..., dict[str, Any]], *guids: str) -> dict[str, Any]:
    source = fresh_source()
    _harvest(source, json.dumps({"datasets": [{"guid": g, "title": g} for g in guids]}))
    model.Session.remove()
    return source


def _dataset_state(name: str) -> tuple[Any, ...]:
    """(state, current objects, source it was detached from) of a dataset;
    (None, 0, None) when it is gone."""
    model.Session.remove()
    package = model.Package.get(name)
    if package is None:
        return (None, 0, None)
    current = model.Session.query(HarvestObject).filter(
        HarvestObject.package_id == package.id, HarvestObject.current.is_(True)).count()
    return (package.state, current, detaching.detached_from(package.id))


def _choices(response: Any) -> dict[str, bool]:
    """The choices of the page: name -> checked."""
    return {name: bool(checked) for name, checked in CHOICE.findall(_body(response))}


def _source_active(source_id: str) -> bool:
    model.Session.remove()
    return bool(HarvestSource.get(source_id).active)


# --- the page ------------------------------------------------------------------------


@pytest.mark.parametrize("role", MANAGERS)
def test_managers_are_offered_the_three_choices_keep_first(world, client, role):
    response = client(role).get("/harvest/delete/{}".format(world.source["name"]))

    assert response.status_code == 200
    assert _choices(response) == {"keep": True, "detach": False, "clear": False}
    assert 'action="/harvest/delete/{}"'.format(world.source["name"]) in _body(response)


@pytest.mark.parametrize("flag, checked", (("clear", "clear"), ("detach", "detach")))
def test_the_query_flag_selects_its_choice(world, client, flag, checked):
    url = "/harvest/delete/{}?{}=True".format(world.source["name"], flag)

    response = client("editor").get(url)

    assert [name for name, on in _choices(response).items() if on] == [checked]
    assert 'action="{}"'.format(url) in _body(response)


def test_detach_page_says_what_detaching_means(world, client):
    page = _text(client("editor").get(
        "/harvest/delete/{}?detach=True".format(world.source["name"])))

    assert "Delete source and detach its datasets" in page
    assert "they become ordinary datasets of this site" in page


@pytest.mark.parametrize("role", OUTSIDERS)
def test_outsiders_get_no_choice(world, client, role):
    response = client(role).get("/harvest/delete/{}?detach=True".format(
        world.source["name"]), follow_redirects=False)

    assert response.status_code == 403
    assert _choices(response) == {}


def test_edit_form_offers_the_detach_link(world, client):
    body = _body(client("admin").get("/harvest/edit/{}".format(world.source["name"])))

    assert re.search(r'id="harvest-delete-detach-source" href="/harvest/delete/{}\?detach=True"'
                     r' data-module="confirm-action"'.format(world.source["name"]), body)


# --- each choice, posted ---------------------------------------------------------------


def test_keep_deletes_the_source_and_leaves_the_datasets_harvested(fresh_source, client):
    source = _harvested(fresh_source, "keep-a")

    response = client("editor").post("/harvest/delete/{}".format(source["name"]),
                                      data={"datasets": "keep"})

    assert "Harvesting source successfully inactivated" in _text(response)
    assert _source_active(source["id"]) is False
    assert _dataset_state("harvested-keep-a") == ("active", 1, None)


@pytest.mark.parametrize("role", MANAGERS)
def test_detach_detaches_then_deletes_the_source(fresh_source, client, role):
    source = _harvested(fresh_source, "detach-a-" + role, "detach-b-" + role)

    response = client(role).post("/harvest/delete/{}".format(source["name"]),
                                 data={"datasets": "detach"}, follow_redirects=False)

    assert response.status_code == 302
    assert response.headers["Location"].endswith("/harvest/admin/{}".format(source["name"]))
    assert _source_active(source["id"]) is False
    for name in ("harvested-detach-a-" + role, "harvested-detach-b-" + role):
        assert _dataset_state(name) == ("active", 0, source["id"])


def test_detach_message(fresh_source, client):
    source = _harvested(fresh_source, "message-a", "message-b")

    page = _text(client("editor").post("/harvest/delete/{}".format(source["name"]),
                                       data={"datasets": "detach"}))

    assert "2 datasets detached: they are now ordinary datasets of this site." in page


def test_detach_link_of_the_edit_form_posts_without_a_field(fresh_source, client):
    # CKAN's confirm-action modal posts to the link's URL, query included.
    source = _harvested(fresh_source, "modal-a")

    client("editor").post("/harvest/delete/{}?detach=True".format(source["name"]))

    assert _dataset_state("harvested-modal-a") == ("active", 0, source["id"])
    assert _source_active(source["id"]) is False


def test_clear_deletes_the_datasets_and_the_history(fresh_source, client):
    source = _harvested(fresh_source, "clear-a")

    page = _text(client("editor").post("/harvest/delete/{}".format(source["name"]),
                                       data={"datasets": "clear"}))

    assert "Harvesting source successfully cleared" in page
    assert _dataset_state("harvested-clear-a") == (None, 0, None)
    assert _job_count(source["id"]) == 0
    assert _source_active(source["id"]) is False


def test_the_field_wins_over_the_query_flag(fresh_source, client):
    source = _harvested(fresh_source, "field-a")

    client("editor").post("/harvest/delete/{}?clear=True".format(source["name"]),
                          data={"datasets": "keep"})

    assert _dataset_state("harvested-field-a") == ("active", 1, None)


def test_an_unknown_choice_is_a_400_and_changes_nothing(fresh_source, client):
    source = _harvested(fresh_source, "bad-a")

    response = client("editor").post("/harvest/delete/{}".format(source["name"]),
                                     data={"datasets": "purge"}, follow_redirects=False)

    assert response.status_code == 400
    assert _source_active(source["id"]) is True
    assert _dataset_state("harvested-bad-a") == ("active", 1, None)


@pytest.mark.parametrize("role", OUTSIDERS)
def test_outsiders_may_not_detach(fresh_source, client, role):
    guid = "outsider-" + role.replace("_", "-")
    source = _harvested(fresh_source, guid)

    response = client(role).post("/harvest/delete/{}".format(source["name"]),
                                 data={"datasets": "detach"}, follow_redirects=False)

    assert response.status_code == 403
    assert _source_active(source["id"]) is True
    assert _dataset_state("harvested-" + guid) == ("active", 1, None)


def test_a_running_job_stops_the_detach_and_the_deletion(fresh_source, client):
    source = _harvested(fresh_source, "busy-a")
    job = HarvestJob(source_id=source["id"], status=JobStatus.RUNNING.value)
    job.save()

    page = _text(client("editor").post("/harvest/delete/{}".format(source["name"]),
                                       data={"datasets": "detach"}))

    assert "The source has a running job" in page
    assert _source_active(source["id"]) is True
    assert _dataset_state("harvested-busy-a") == ("active", 1, None)
    job = HarvestJob.get(job.id)
    job.status = JobStatus.FINISHED.value
    job.save()
