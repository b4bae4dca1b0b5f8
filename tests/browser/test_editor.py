"""An organisation editor in a real browser: full control over the sources of
their organisation, none over another organisation's."""
from __future__ import annotations

import json
from typing import Any

from tests.browser.conftest import Browser, LiveSite

SOURCE = "browser-editor-source"
# Five datasets; "ed-5" fails at fetch: 4 added and 1 error.
CONFIG = {
    "datasets": [{"guid": f"ed-{i}", "title": f"Editor dataset {i}"} for i in range(1, 6)],
    "fetch": {"ed-5": "error"},
}


def test_editor_manages_own_organisation_source(browser: Browser,
                                                live_site: LiveSite) -> None:
    browser.login(live_site.editor)
    org = live_site.org

    # Create a source of their organisation through the form.
    browser.get("/harvest/new")
    browser.fill_source_form(url=f"http://{SOURCE}.example.org/",
                             title="Browser editor source", name=SOURCE,
                             config=json.dumps(CONFIG), owner_org=org["id"])
    browser.click_and_load(browser.find("form#source-new #save"))
    source = live_site.source(SOURCE)
    assert source is not None, browser.text[:2000]
    assert source.owner_org == org["id"] and source.state == "active"
    browser.screenshot("editor-source-created")

    # The source page offers the admin pages to the editor.
    browser.get(f"/harvest/{SOURCE}")
    browser.click_and_load(browser.link("Admin"))
    assert browser.path == f"/harvest/admin/{SOURCE}" or browser.path == (
        f"/harvest/admin/{source.id}"), browser.path

    # Reharvest, follow the job page to its report.
    browser.confirm(browser.link("Reharvest"))
    assert any("Harvest will start shortly" in f for f in browser.flashes()), browser.flashes()
    (job,) = live_site.jobs(source.id)
    browser.get(f"/harvest/{SOURCE}/job/{job.id}")
    browser.wait_for_job_report(job.id)
    assert browser.stats() == {"added": 4, "updated": 0, "not modified": 0,
                               "deleted": 0, "error": 1}
    assert "Fetch failed on purpose" in browser.text
    browser.screenshot("editor-job-report")

    # The failed object's content.
    browser.open_in_same_or_new_tab(browser.link("Local content"))
    assert browser.path.startswith("/harvest/object/")
    raw = browser.find("pre").text if browser.find_all("pre") else browser.text
    assert json.loads(raw)["guid"] == "ed-5"
    browser.driver.switch_to.window(browser.driver.window_handles[0])
    assert live_site.datasets("ed-") == {f"harvested-ed-{i}": "active" for i in range(1, 5)}

    # Clear, through the confirmation page (the link opened without JavaScript,
    # e.g. in a new tab): the GET changes nothing, its form does.
    browser.get(f"/harvest/clear/{source.id}")
    browser.wait_for("form#harvest-confirm[method=post]")
    assert len([s for s in live_site.datasets("ed-").values() if s == "active"]) == 4
    assert len(live_site.jobs(source.id)) == 1
    browser.click_and_load(browser.find("#harvest-confirm-submit"))
    assert any("Harvest source cleared" in f for f in browser.flashes()), browser.flashes()
    assert not {n: s for n, s in live_site.datasets("ed-").items() if s == "active"}
    assert live_site.jobs(source.id) == []

    # Harvest again, then "Delete and clear source" from the edit form.
    browser.get(f"/harvest/admin/{source.id}")
    browser.confirm(browser.link("Reharvest"))
    (job,) = live_site.jobs(source.id)
    live_site.site.wait_until_finished(job.id, timeout=180)
    assert len([s for s in live_site.datasets("ed-").values() if s == "active"]) == 4
    browser.get(f"/harvest/edit/{SOURCE}")
    browser.wait_for("form#source-new")
    toggle = [t for t in browser.find_all("form#source-new [data-bs-toggle=dropdown]")
              if t.is_displayed()]
    assert toggle, "no delete menu in the source form"
    browser.click(toggle[0])
    browser.confirm(browser.link("Delete and clear source"))
    assert any("successfully cleared" in f for f in browser.flashes()), browser.flashes()
    deleted = live_site.source(SOURCE)
    assert deleted is None or deleted.state == "deleted", deleted
    assert not {n: s for n, s in live_site.datasets("ed-").items() if s == "active"}
    browser.screenshot("editor-source-deleted")


OTHER = "browser-other-org-source"


def _snapshot(live_site: LiveSite, source_id: str) -> Any:
    """What the refused requests must not change."""
    site = live_site.site
    return (
        site.query("SELECT p.name, p.state, p.title, p.metadata_modified, s.active, "
                   "s.config, s.frequency FROM package p JOIN harvest_source s "
                   "ON s.id = p.id WHERE p.id = :id", id=source_id),
        site.query("SELECT id, status, finished FROM harvest_job WHERE source_id = :id "
                   "ORDER BY id", id=source_id),
        site.query("SELECT id, state, current, package_id FROM harvest_object "
                   "WHERE harvest_source_id = :id ORDER BY id", id=source_id),
        sorted(live_site.datasets("ot-").items()),
    )


def test_editor_is_refused_another_organisation_source(browser: Browser,
                                                       live_site: LiveSite) -> None:
    config = {"datasets": [{"guid": f"ot-{i}", "title": f"Other dataset {i}"}
                           for i in range(1, 4)]}
    source_id = live_site.create_source(OTHER, "Other organisation source",
                                        live_site.other_org["id"], config)
    job_id = live_site.harvest(OTHER, source_id)
    before = _snapshot(live_site, source_id)
    assert before[3] == [(f"harvested-ot-{i}", "active") for i in range(1, 4)]

    browser.login(live_site.editor)

    # The public source page: readable, without the Admin button.
    browser.get(f"/harvest/{OTHER}")
    assert "Other organisation source" in browser.text
    assert not browser.find_all("a[href*='/harvest/admin/']"), "Admin button shown"

    # Every admin page and state change is refused, whatever the method.
    pages = [
        f"/harvest/admin/{source_id}",
        f"/harvest/edit/{OTHER}",
        f"/harvest/refresh/{source_id}",
        f"/harvest/clear/{source_id}",
        f"/harvest/delete/{source_id}",
        f"/harvest/delete/{source_id}?clear=True",
        f"/harvest/{OTHER}/job/{job_id}/abort",
    ]
    for path in pages:
        browser.get(path)
        browser.assert_forbidden(f"GET {path}")
        if not path.startswith("/harvest/edit/"):  # CKAN's own view, own message
            assert "Not authorized to see this page" in browser.text, path
        if path.startswith("/harvest/admin/"):
            browser.screenshot("editor-denied-admin")
    for path in pages[2:]:
        browser.post(path)
        browser.assert_forbidden(f"POST {path}")

    assert _snapshot(live_site, source_id) == before
