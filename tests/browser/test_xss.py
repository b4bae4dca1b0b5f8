"""Harvested and source-provided text is escaped on every harvest page."""
from __future__ import annotations

from tests.browser.conftest import Browser, LiveSite

SOURCE = "browser-xss-source"
DATASET_TITLE = "<script>window.__xss=1</script>"
SOURCE_TITLE = "<img src=x onerror=window.__xss_title=1> XSS source"


def test_harvested_markup_is_escaped(browser: Browser, live_site: LiveSite) -> None:
    config = {
        "datasets": [{"guid": "xss-1", "title": DATASET_TITLE},
                     {"guid": "xss-2", "title": "Plain title"}],
        "import": {"xss-2": "error"},
    }
    source_id = live_site.create_source(SOURCE, SOURCE_TITLE, "", config)
    live_site.harvest(SOURCE, source_id)
    # The test harvester links a new dataset to its object after indexing it, so
    # only the second job's update puts the dataset in the source's list.
    job_id = live_site.harvest(SOURCE, source_id)
    assert live_site.datasets("xss-") == {"harvested-xss-1": "active"}

    browser.login(live_site.sysadmin)
    pages = {
        "/harvest/": SOURCE_TITLE,
        f"/harvest/{SOURCE}": DATASET_TITLE,  # the source's dataset list
        f"/harvest/about/{SOURCE}": SOURCE_TITLE,
        f"/harvest/admin/{source_id}": SOURCE_TITLE,
        f"/harvest/{SOURCE}/job": SOURCE_TITLE,
        f"/harvest/{SOURCE}/job/{job_id}": SOURCE_TITLE,
        f"/harvest/edit/{SOURCE}": None,
    }
    for path, literal in pages.items():
        browser.get(path)  # waits for the load event: failed images have fired
        injected = browser.js("return [typeof window.__xss, typeof window.__xss_title]")
        assert injected == ["undefined", "undefined"], f"script ran on {path}"
        assert not browser.find_all("img[src=x]"), f"injected <img> on {path}"
        if literal is not None:
            assert literal in browser.text, f"{literal!r} not shown as text on {path}"
        if path == f"/harvest/{SOURCE}":
            browser.screenshot("xss-escaped")
