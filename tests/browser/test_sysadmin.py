"""A sysadmin's whole journey with a harvest source, in a real browser.

Create the source through the form (an invalid configuration is refused next to
the field first), harvest it twice with the Reharvest button while the consumers
run, follow the job page until the report shows, open an object's content, look
at the dashboard chart, clear the source, delete it.
"""
from __future__ import annotations

import json

from selenium.webdriver.remote.webelement import WebElement

from tests.browser.conftest import Browser, LiveSite

SOURCE = "browser-sysadmin-source"
# Six datasets; "sa-6" fails at import: 5 added and 1 error per job.
CONFIG = {
    "datasets": [{"guid": f"sa-{i}", "title": f"Sysadmin dataset {i}"} for i in range(1, 7)],
    "import": {"sa-6": "error"},
}


def test_sysadmin_source_lifecycle(browser: Browser, live_site: LiveSite) -> None:
    browser.login(live_site.sysadmin)

    # The "Harvest" sysadmin tab and the search page lead to the form.
    browser.get("/harvest/")
    browser.click_and_load(browser.link("Add Harvest Source"))
    assert browser.path.startswith("/harvest/new")

    # An invalid configuration: refused, the message next to the config field.
    browser.fill_source_form(
        url=f"http://{SOURCE}.example.org/", title="Browser sysadmin source",
        name=SOURCE, config='{"datasets": [')
    browser.click_and_load(browser.find("form#source-new #save"))
    browser.wait_for("form#source-new")
    config_group = browser.field_group_text("config")
    assert "Error parsing the configuration options" in config_group, config_group
    assert live_site.source(SOURCE) is None
    # What was typed is kept.
    assert browser.find("form#source-new [name=url]").get_attribute("value") == (
        f"http://{SOURCE}.example.org/")
    browser.screenshot("form-config-error")

    # Fixed: the source is created.
    config_field = browser.find("form#source-new [name=config]")
    config_field.clear()
    config_field.send_keys(json.dumps(CONFIG))
    browser.click_and_load(browser.find("form#source-new #save"))
    source = live_site.source(SOURCE)
    assert source is not None, browser.text[:2000]
    assert source.state == "active" and source.active
    assert json.loads(source.config) == CONFIG
    assert "Browser sysadmin source" in browser.text

    # First job: Reharvest on the admin dashboard (confirmed in the modal).
    browser.get(f"/harvest/admin/{source.id}")
    assert "No jobs yet for this source" in browser.text
    browser.confirm(browser.link("Reharvest"))
    assert any("Harvest will start shortly" in f for f in browser.flashes()), browser.flashes()
    jobs = live_site.jobs(source.id)
    assert len(jobs) == 1
    job_id = jobs[0].id

    # The job page shows it running (no "harvester run" has marked it finished yet),
    # reloads itself until every object is done, then the report once it finishes.
    browser.get(f"/harvest/{SOURCE}/job/last")
    progress = browser.wait_for("#harvest-job-progress")
    assert progress.get_attribute("data-status") in ("New", "Running")
    assert job_id in browser.text
    browser.screenshot("job-running")
    browser.wait(120).until(
        lambda d: d.find_element("id", "harvest-job-progress").get_attribute("data-done")
        == d.find_element("id", "harvest-job-progress").get_attribute("data-total") == "6",
        "the job page never showed 6 of 6 objects done")
    browser.wait_for_job_report(job_id)
    assert live_site.site.job(job_id).status == "Finished"

    # The report: statistics, the error summary, the failed object.
    text = browser.text
    assert "Job Report" in text
    assert browser.stats() == {"added": 5, "updated": 0, "not modified": 0,
                               "deleted": 0, "error": 1}
    assert "Error Summary" in text and "Error Report" in text
    assert "Import failed on purpose" in text
    assert "sa-6" in text
    assert "1 documents with errors" in text or "1 document with errors" in text, text
    browser.screenshot("job-report")

    # "Local content" of the failed object: its raw JSON.
    failed_object = live_site.site.scalar(
        "SELECT id FROM harvest_object WHERE harvest_job_id = :job AND guid = 'sa-6'",
        job=job_id)
    local = browser.link("Local content")
    assert local.get_attribute("href") == f"{live_site.url}/harvest/object/{failed_object}"
    browser.open_in_same_or_new_tab(local)
    assert browser.path == f"/harvest/object/{failed_object}"
    raw = browser.find("pre").text if browser.find_all("pre") else browser.text
    assert json.loads(raw) == {"guid": "sa-6", "title": "Sysadmin dataset 6"}
    browser.screenshot("object-content")
    browser.driver.switch_to.window(browser.driver.window_handles[0])

    assert live_site.datasets("sa-") == {f"harvested-sa-{i}": "active" for i in range(1, 6)}

    # Second job: 5 updated, 1 error. Then the dashboard chart shows both jobs.
    browser.get(f"/harvest/admin/{source.id}")
    browser.confirm(browser.link("Reharvest"))
    jobs = live_site.jobs(source.id)
    assert len(jobs) == 2
    second_id = jobs[1].id
    live_site.site.wait_until_finished(second_id, timeout=180)

    browser.get(f"/harvest/admin/{source.id}")
    chart = browser.wait_for("figure#harvest-job-chart")
    assert browser.find_all("svg.harvest-job-chart", chart), "no chart svg"
    table = browser.find("table.harvest-job-chart-table", chart)
    # The table (folded under "Show as table"): one row per job, oldest first.
    summary = [e for e in browser.find_all("summary", chart)
               if e.text.strip() == "Show as table"]
    if summary and not table.is_displayed():
        browser.click(summary[0])
        browser.wait().until(lambda d: table.is_displayed(), "the table did not unfold")
    rows = _table(browser, table)
    assert len(rows) == 2, table.get_attribute("outerHTML")
    first, second = rows
    assert first == {"added": 5, "updated": 0, "not modified": 0, "error": 1}, rows
    assert second == {"added": 0, "updated": 5, "not modified": 0, "error": 1}, rows
    bars = {(bar.get_attribute("data-diff"), bar.get_attribute("data-count"))
            for bar in browser.find_all("svg.harvest-job-chart rect[data-diff]", chart)}
    assert bars == {("added", "5"), ("updated", "5"), ("error", "1")}, bars
    # The dashboard's last job is the second one.
    assert second_id in browser.text
    assert browser.stats().get("updated") == 5
    browser.screenshot("source-admin-chart")

    # The source page lists the harvested datasets.
    browser.get(f"/harvest/{SOURCE}")
    for i in range(1, 6):
        assert f"Sysadmin dataset {i}" in browser.text
    assert "Sysadmin dataset 6" not in browser.text

    # The job list: both jobs.
    browser.get(f"/harvest/{SOURCE}/job")
    assert f"Job: {job_id}" in browser.text and f"Job: {second_id}" in browser.text

    # Clear: the datasets and jobs are gone, the source stays.
    browser.get(f"/harvest/admin/{source.id}")
    browser.confirm(browser.link("Clear"))
    assert any("Harvest source cleared" in f for f in browser.flashes()), browser.flashes()
    assert not {name: state for name, state in live_site.datasets("sa-").items()
                if state == "active"}
    assert live_site.jobs(source.id) == []
    assert live_site.source(SOURCE).state == "active"
    browser.get(f"/harvest/{SOURCE}")
    assert "There are no datasets associated to this harvest source." in browser.text
    browser.screenshot("source-cleared")

    # Delete, from the edit form's delete menu.
    browser.get(f"/harvest/admin/{source.id}")
    browser.click_and_load(browser.link("Edit"))
    browser.wait_for("form#source-new")
    _open_delete_menu(browser)
    browser.confirm(browser.link("Delete source"))
    assert any("successfully inactivated" in f for f in browser.flashes()), browser.flashes()
    deleted = live_site.source(SOURCE)
    assert deleted.state == "deleted" and not deleted.active
    browser.screenshot("source-deleted")


def _open_delete_menu(browser: Browser) -> None:
    """Open the dropdown that holds "Delete source" / "Delete and clear source"."""
    toggles = [t for t in browser.find_all("form#source-new [data-bs-toggle=dropdown]")
               if t.is_displayed()]
    assert toggles, "no delete menu in the source form"
    browser.click(toggles[0])
    browser.wait().until(lambda d: browser.link("Delete source").is_displayed(),
                         "the delete menu did not open")


def _table(browser: Browser, table: WebElement) -> list[dict[str, int]]:
    """Rows of the chart's table as ``{data-diff of the cell: number}``."""
    return [{str(cell.get_attribute("data-diff")): int(cell.text.replace(",", ""))
             for cell in browser.find_all("td[data-diff]", row)}
            for row in browser.find_all("tbody tr", table)]
