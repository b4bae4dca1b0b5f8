"""The health page (``/harvest/health``) in a real browser: a sysadmin sorts and
filters the sources, an organisation editor is refused. Leaves the screenshot
``tests/browser/screenshots/health.png``."""
from __future__ import annotations

from selenium.webdriver.support.ui import Select

from tests.browser.conftest import Browser, LiveSite

OK_SOURCE = "browser-health-ok"
FAILING_SOURCE = "browser-health-failing"
IDLE_SOURCE = "browser-health-idle"


def _rows(browser: Browser) -> list[tuple[str, str, str]]:
    """(source name, state, consecutive failures) of each row, in page order."""
    return [(row.get_attribute("data-source"), row.get_attribute("data-state"),
             browser.find("td.failures", row).text)
            for row in browser.find_all("tr.harvest-health-source")]


def test_sysadmin_reads_sorts_and_filters_the_health_page(browser: Browser,
                                                          live_site: LiveSite) -> None:
    org_id = live_site.org["id"]
    ok_id = live_site.create_source(OK_SOURCE, "Healthy source", org_id, {
        "datasets": [{"guid": f"hl-{i}", "title": f"Healthy {i}"} for i in range(3)]})
    failing_id = live_site.create_source(FAILING_SOURCE, "Failing source", org_id, {
        "datasets": [{"guid": "hf-1", "title": "Failing 1"}], "fetch": {"hf-1": "error"}})
    live_site.create_source(IDLE_SOURCE, "Idle source", org_id, {"datasets": []})
    live_site.harvest(OK_SOURCE, ok_id)
    live_site.harvest(FAILING_SOURCE, failing_id)

    browser.login(live_site.sysadmin)
    browser.get("/harvest/health")

    rows = {name: (state, failures) for name, state, failures in _rows(browser)}
    assert rows[OK_SOURCE] == ("ok", "0")
    assert rows[FAILING_SOURCE] == ("failing", "1")
    assert rows[IDLE_SOURCE] == ("never run", "0")
    lanes = [e.text for e in browser.find_all(".harvest-timeline-source")]
    assert OK_SOURCE in lanes and FAILING_SOURCE in lanes
    queues = {e.get_attribute("data-queue"): e.text
              for e in browser.find_all("tr.harvest-health-queue")}
    assert set(queues) == {"gather", "fetch"}
    # The served site runs one gather and one fetch consumer.
    assert browser.find("tr[data-queue=fetch] td.consumers").text == "1"
    assert browser.find("tr[data-queue=gather] td.consumers").text == "1"
    browser.screenshot("health")

    # Sort by consecutive failures, most first; then filter on a state.
    browser.click_and_load(browser.find("a.harvest-health-sort[data-sort=consecutive_failures]"))
    browser.click_and_load(browser.find("a.harvest-health-sort[data-sort=consecutive_failures]"))
    assert _rows(browser)[0][0] == FAILING_SOURCE
    Select(browser.find("#harvest-health-state")).select_by_value("never run")
    browser.click_and_load(browser.find(".harvest-health-filter button[type=submit]"))
    assert [name for name, _, _ in _rows(browser)] == [IDLE_SOURCE]
    assert "state=never+run" in browser.path and "sort=consecutive_failures" in browser.path


def test_editor_is_refused_the_health_page(browser: Browser, live_site: LiveSite) -> None:
    browser.login(live_site.editor)
    browser.get("/harvest/health")

    browser.assert_forbidden("health page for an organisation editor")
