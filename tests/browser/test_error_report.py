"""The complete error report of a job and the preview of a source, in a real browser.

A source whose job fails on three of its five records, with two different
messages (one fetch error, two import errors), is harvested by the consumers.
A sysadmin opens the job page: the errors are grouped by message with their
counts; the CSV download holds the header and one row per error. Then the
source's Preview shows what a job would do now. Screenshots:
``job-error-report.png`` and ``source-preview.png``.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

from ckanext.harvest.lib.error_report import COLUMNS
from tests.browser.conftest import WAIT, Browser, LiveSite

SOURCE = "browser-error-report-source"
CONFIG = {
    "datasets": [{"guid": f"er-{i}", "title": f"Error report dataset {i}"}
                 for i in range(1, 6)],
    "fetch": {"er-4": "error"},
    "import": {"er-3": "error", "er-5": "error"},
}
FETCH_MESSAGE = "Fetch failed on purpose"
IMPORT_MESSAGE = "Import failed on purpose"


def _downloaded(directory: Path, suffix: str) -> Path:
    """The file the browser finished downloading into ``directory``."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        done = [p for p in directory.glob("*" + suffix) if p.stat().st_size]
        if done and not list(directory.glob("*.crdownload")):
            return done[0]
        time.sleep(0.25)
    raise AssertionError(f"no {suffix} file downloaded in {directory}: "
                         f"{sorted(p.name for p in directory.iterdir())}")


def test_job_error_report_groups_and_csv_download(browser: Browser, live_site: LiveSite,
                                                  tmp_path: Path) -> None:
    source_id = live_site.create_source(SOURCE, "Browser error report source",
                                        live_site.org["name"], CONFIG)
    job_id = live_site.harvest(SOURCE, source_id)
    errors_in_db = live_site.site.query(
        "SELECT e.message FROM harvest_object_error e JOIN harvest_object o "
        "ON o.id = e.harvest_object_id WHERE o.harvest_job_id = :job", job=job_id)
    assert sorted(row.message for row in errors_in_db) == [
        FETCH_MESSAGE, IMPORT_MESSAGE, IMPORT_MESSAGE]

    browser.login(live_site.sysadmin)
    browser.get(f"/harvest/{SOURCE}/job/{job_id}")

    # The report: one row per message, most frequent first, with its count.
    table = browser.wait_for("table.harvest-error-groups")
    groups = [(browser.find("td.count", row).text,
               browser.find("pre.harvest-error-message", row).text)
              for row in browser.find_all("tbody tr", table)]
    assert groups == [("2", IMPORT_MESSAGE), ("1", FETCH_MESSAGE)], groups
    totals = browser.find(".harvest-error-totals").text
    assert "3 errors" in totals and "2 distinct messages" in totals, totals
    browser.screenshot("job-error-report")

    # One group opened: its errors, each with its record.
    browser.click_and_load(browser.link("Show the errors", table))
    rows = [r.text for r in browser.find_all("table.harvest-error-rows tbody tr")]
    assert len(rows) == 2, rows
    assert all(any(guid in row for row in rows) for guid in ("er-3", "er-5")), rows

    # The CSV download: the header, then one row per error of the job.
    browser.driver.execute_cdp_cmd("Browser.setDownloadBehavior", {
        "behavior": "allow", "downloadPath": str(tmp_path)})
    browser.get(f"/harvest/{SOURCE}/job/{job_id}")
    csv_link = [a for a in browser.find_all("a.harvest-errors-download")
                if a.text.strip() == "CSV"][0]
    browser.click(csv_link)
    downloaded = _downloaded(tmp_path, ".csv")
    assert downloaded.name == f"harvest-job-{job_id}-errors.csv"
    with open(downloaded, newline="", encoding="utf-8") as stream:
        lines = list(csv.reader(stream))
    assert tuple(lines[0]) == COLUMNS
    records = [dict(zip(COLUMNS, line)) for line in lines[1:]]
    assert sorted(r["message"] for r in records) == [
        FETCH_MESSAGE, IMPORT_MESSAGE, IMPORT_MESSAGE]
    assert {r["job_id"] for r in records} == {job_id}
    assert sorted(r["guid"] for r in records) == ["er-3", "er-4", "er-5"]

    # The Preview of the source: what a job would do now, nothing written.
    jobs_before = len(live_site.jobs(source_id))
    browser.get(f"/harvest/admin/{SOURCE}")
    browser.click_and_load(browser.find("#harvest-preview"))
    browser.wait_for("table.harvest-preview-records")
    outcomes = {row.text.split()[0] for row in
                browser.find_all("table.harvest-preview-records tbody tr")}
    assert "error" in outcomes, browser.text[:2000]
    assert "Nothing was saved" in browser.text
    browser.screenshot("source-preview")
    assert len(live_site.jobs(source_id)) == jobs_before
