"""The web side of cron schedules and of the cap on running jobs.

The source form's Schedule field (server-rendered preview of the next runs,
errors next to the field), the preview action the form's script calls, the
source page, and the "waiting for a slot" badge of the job list.
"""
from __future__ import annotations

import html
import re
from typing import Any

import pytest
from ckan import model
from ckan.plugins import toolkit

from ckanext.harvest.model import HarvestSource

_ISO_MINUTE = r"\d{4}-\d\d-\d\d \d\d:\d\d"


def _body(response: Any) -> str:
    return response.get_data(as_text=True)


def _text(response: Any) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", _body(response))).split())


def _form_data(**fields: Any) -> dict[str, Any]:
    data = {"url": "http://schedule.example.org/catalogue", "title": "Scheduled",
            "name": "scheduled-by-form", "notes": "", "source_type": "test",
            "frequency": "MANUAL", "config": "", "schedule": "", "save": "Save"}
    data.update(fields)
    return data


@pytest.fixture
def delete_form_source():
    """Delete the source the form test makes, as ``fresh_source`` does."""
    yield
    model.Session.remove()
    if model.Package.get("scheduled-by-form") is not None:
        toolkit.get_action("harvest_source_delete")(
            {"ignore_auth": True, "user": ""}, {"id": "scheduled-by-form"})


def test_the_new_form_has_a_schedule_field_with_its_preview_script(client):
    body = _body(client("editor").get("/harvest/new"))

    assert re.search(r'<input id="field-schedule" type="text" name="schedule" value=""'
                     r'[^>]*data-module="harvest-schedule-preview"', body)
    assert '<div id="schedule-preview"' in body
    assert "harvest_schedule_preview.js" in body


def test_a_source_saved_with_a_schedule_shows_it_and_its_next_runs(world, client,
                                                                    delete_form_source):
    response = client("editor").post("/harvest/new", data=_form_data(
        owner_org=world.org_id, schedule=" 30 4 * * 1 "), follow_redirects=False)

    assert response.status_code == 302, _text(response)
    package = model.Package.get("scheduled-by-form")
    assert package.extras["schedule"] == "30 4 * * 1"
    assert HarvestSource.get(package.id).next_run.strftime("%H:%M %w") == "04:30 1"
    page = _text(client("anonymous").get("/harvest/scheduled-by-form"))
    assert "Schedule: 30 4 * * 1 (UTC)" in page
    assert re.search(r"Next run: {} ".format(_ISO_MINUTE), page)
    form = _text(client("editor").get("/harvest/edit/scheduled-by-form"))
    runs = re.search(r"Next runs \(UTC\): ((?:{} ?){{3}})".format(_ISO_MINUTE), form)
    assert runs, form
    assert [time[-5:] for time in re.findall(_ISO_MINUTE, runs.group(1))] == ["04:30"] * 3


def test_an_invalid_schedule_is_shown_next_to_the_field(world, client):
    response = client("editor").post("/harvest/new", data=_form_data(
        owner_org=world.org_id, name="bad-schedule", schedule="0 3 * * * *"))

    assert response.status_code == 200
    body = _body(response)
    group = re.search(r'for="field-schedule".*?<span class="error-block">(.*?)</span>',
                      body, re.S)
    assert group and html.unescape(group.group(1)).startswith(
        "Invalid schedule '0 3 * * * *': a cron expression has 5 fields")
    assert "Traceback" not in body and "Next runs" not in _text(response)
    assert model.Package.get("bad-schedule") is None


def test_the_preview_action_lists_the_next_runs_or_says_what_is_wrong(client):
    good = client("anonymous").get("/api/3/action/harvest_schedule_preview",
                                   query_string={"schedule": "0 3 * * *", "count": "2"})
    bad = client("anonymous").get("/api/3/action/harvest_schedule_preview",
                                  query_string={"schedule": "0 3 * * mon-funday"})

    assert good.status_code == 200
    result = good.get_json()["result"]
    assert result["schedule"] == "0 3 * * *" and result["timezone"] == "UTC"
    assert [time[11:] for time in result["next_runs"]] == ["03:00:00+00:00"] * 2
    assert bad.status_code == 409
    assert bad.get_json()["error"]["schedule"] == [
        "Invalid schedule '0 3 * * mon-funday': Bad day-of-week"]


def test_a_job_waiting_for_a_slot_says_so_in_the_job_list(
    fresh_source, client, ckan_config, monkeypatch
):
    # The world's running job holds the only slot.
    monkeypatch.setitem(ckan_config, "ckan.harvest.max_running_jobs", "1")
    source = fresh_source()
    client("editor").post("/harvest/refresh/{}".format(source["id"]))

    page = _text(client("editor").get("/harvest/{}/job".format(source["name"])))

    assert "Waiting for a slot (1 of 1)" in page
