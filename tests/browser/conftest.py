"""Real-browser tests of the web interface (``/harvest``), in headless Chromium.

One served CKAN site for the whole ``tests/browser`` package (``live_site``): the
database and index are reset once, users and organisations created, then a
:class:`~tests.support.site.HarvestSite` serves the web interface (``ckan run``,
CSRF protection on) while real gather and fetch consumers run. Every test gets a
fresh browser (``browser``: a new Chromium profile, so nobody is logged in).

Tests share the site, so each one uses its own source names and dataset guids.

Screenshots go to ``tests/browser/screenshots/`` (git-ignored); a failing test also
leaves ``failures/<test>.png``, ``.html`` and ``.console.log`` there.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Optional
from unittest import mock

import pytest
from ckan import model
from ckan.tests import factories
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.selenium_manager import SeleniumManager
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from ckanext.harvest.model import migrations
from tests.support.site import HarvestSite, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
FAILURES = SCREENSHOTS / "failures"
WINDOW = (1280, 900)
#: Tallest full-page screenshot (px); longer pages are cut there.
MAX_SCREENSHOT_HEIGHT = 12000
#: Password of every user of the served site.
PASSWORD = "Browser-Tests-2024"
#: Seconds to wait for page content (a page load, a modal, a redirect).
WAIT = 30.0
#: Seconds a small harvest job may take, consumers and ``harvester run`` included.
JOB_TIMEOUT = 180.0

CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--no-default-browser-check",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)


# --- the served site ---------------------------------------------------------------


@dataclasses.dataclass
class LiveSite:
    """The served site of the package, its users and organisations."""

    site: HarvestSite
    url: str
    sysadmin: str
    editor: str  # editor of ``org``, nothing else
    org: dict[str, Any]  # the editor's organisation
    other_org: dict[str, Any]  # an organisation the editor is not a member of

    def source(self, name: str) -> Any:
        """The source dataset ``name`` joined with its harvest_source row (or None)."""
        rows = self.site.query(
            "SELECT p.id, p.name, p.state, p.owner_org, p.title, s.active, s.config "
            "FROM package p LEFT JOIN harvest_source s ON s.id = p.id "
            "WHERE p.name = :name AND p.type = 'harvest'", name=name)
        return rows[0] if rows else None

    def jobs(self, source_id: str) -> list[Any]:
        """The source's jobs, oldest first."""
        return self.site.query(
            "SELECT id, status, created FROM harvest_job WHERE source_id = :source "
            "ORDER BY created", source=source_id)

    def datasets(self, prefix: str) -> dict[str, str]:
        """``name -> state`` of the harvested datasets of guids ``<prefix>*``."""
        return {name: state for name, state in self.site.harvested_datasets().items()
                if name.startswith("harvested-" + prefix)}

    def create_source(self, name: str, title: str, owner_org: str,
                      config: dict[str, Any]) -> str:
        """Create a source with the CLI (not through the browser); returns its id."""
        url = f"http://{name}.example.org/"
        self.site.ckan("source", "create", name, url, "test", title, "true",
                       owner_org, "MANUAL", json.dumps(config))
        source = self.source(name)
        assert source is not None, f"source {name} not created"
        return str(source.id)

    def harvest(self, name: str, source_id: str) -> str:
        """Run a job of the source to the end, without the browser; returns its id."""
        job_id = self.site.create_job(name, source_id)
        self.site.wait_until_finished(job_id, timeout=JOB_TIMEOUT)
        return job_id


@pytest.fixture(scope="session")
def browser_binaries() -> None:
    """Chromium and chromedriver must be installed: their absence is a failure."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER)
               if not (path.is_file() and os.access(path, os.X_OK))]
    if missing:
        pytest.fail(
            "The browser tests need headless Chromium: missing {}. Install the Debian "
            "packages `chromium` and `chromium-driver` (`make test` does it through "
            "dev/services.sh; or `apt-get install chromium chromium-driver`)."
            .format(", ".join(missing)), pytrace=False)


@pytest.fixture(scope="package")
def live_site(tmp_path_factory: pytest.TempPathFactory, reset_db: Callable[[], None],
              reset_index: Callable[[], None], browser_binaries: None,
              ) -> Iterator[LiveSite]:
    """A fresh database and index, users, and CKAN served with consumers running."""
    model.Session.remove()
    reset_db()
    migrations.upgrade()
    reset_index()
    # No image_url: the factories' default points the browser at the Internet.
    sysadmin = factories.Sysadmin(password=PASSWORD, image_url="")
    editor = factories.User(password=PASSWORD, image_url="")
    org = factories.Organization(users=[{"name": editor["name"], "capacity": "editor"}])
    other_org = factories.Organization()
    model.Session.remove()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    site = HarvestSite(tmp_path_factory.mktemp("browser-site"), "redis", "browser",
                       options={"WTF_CSRF_ENABLED": "true", "ckan.site_url": url,
                                # no requests to the Internet from the pages
                                "ckan.gravatar_default": "disabled"})
    try:
        site.consumer("gather").start()
        site.consumer("fetch").start()
        server = site.serve(port)
        assert server.url == url
        yield LiveSite(site=site, url=url, sysadmin=sysadmin["name"],
                       editor=editor["name"], org=org, other_org=other_org)
    finally:
        site.close()


# --- the browser ---------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    """Keep each phase's report on the item (``rep_call``) for the driver fixture."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, "rep_" + report.when, report)


def _no_selenium_manager(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("Selenium Manager must not run (it would download drivers)")


def _start_chromium(profile: Path, log_path: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in CHROMIUM_ARGS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(log_path))
    # Both paths are given, so Selenium does not look for a driver; make sure.
    with mock.patch.object(SeleniumManager, "binary_paths", _no_selenium_manager):
        driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT * 2)
    # --window-size is the window's: make the page's viewport WINDOW instead.
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(2 * WINDOW[0] - inner[0], 2 * WINDOW[1] - inner[1])
    return driver


@pytest.fixture
def driver(request: pytest.FixtureRequest, browser_binaries: None,
           tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """Headless Chromium with a fresh profile; on failure, saves what it showed."""
    chromium = _start_chromium(tmp_path / "chromium-profile", tmp_path / "chromedriver.log")
    try:
        yield chromium
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            _save_failure(chromium, request.node.name)
    finally:
        chromium.quit()


def _save_failure(driver: webdriver.Chrome, test_name: str) -> None:
    FAILURES.mkdir(parents=True, exist_ok=True)
    stem = FAILURES / re.sub(r"[^\w.-]+", "_", test_name)
    try:
        _full_page_png(driver, stem.with_suffix(".png"))
        stem.with_suffix(".html").write_text(
            f"<!-- {driver.current_url} -->\n{driver.page_source}")
        console = "\n".join(f"{entry['level']} {entry['message']}"
                            for entry in driver.get_log("browser"))
        stem.with_suffix(".console.log").write_text(console)
        print(f"\nfailure screenshot, page source and console: {stem}.*")
    except Exception as exc:  # noqa: BLE001 - do not hide the test's own failure
        print(f"\ncould not save the failure screenshot: {exc!r}")


def _full_page_png(driver: WebDriver, path: Path) -> Path:
    """The whole page, ``WINDOW[0]`` CSS pixels wide, as tall as its content."""
    width = WINDOW[0]
    height = WINDOW[1]
    try:
        for _ in range(3):  # the new viewport may change the content height
            size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            wanted = min(MAX_SCREENSHOT_HEIGHT, max(WINDOW[1], math.ceil(size["height"])))
            if wanted == height and _ > 0:
                break
            height = wanted
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 1,
                "mobile": False})
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


class Browser:
    """The driver plus the few things the tests do with it, user-style."""

    def __init__(self, driver: WebDriver, live: LiveSite) -> None:
        self.driver = driver
        self.live = live
        self.screenshots: list[Path] = []

    # -- pages --------------------------------------------------------------------

    def get(self, path: str) -> None:
        """Open a page of the served site and wait until it is loaded."""
        self.driver.get(self.live.url + path)
        self.wait_loaded()

    def wait_loaded(self) -> None:
        """The page is loaded and CKAN's JavaScript modules are initialised (after
        the load event: CKAN fetches its translations first)."""
        self.wait().until(lambda d: d.execute_script("""
            if (document.readyState !== 'complete') return false;
            if (!window.ckan || !ckan.module || !document.querySelector('[data-module]'))
                return true;
            return Object.keys(ckan.module.instances).length > 0;
        """), f"page {self.path} did not finish loading")

    @property
    def path(self) -> str:
        url = self.driver.current_url
        return url[len(self.live.url):] if url.startswith(self.live.url) else url

    def wait(self, timeout: float = WAIT) -> WebDriverWait[WebDriver]:
        return WebDriverWait(self.driver, timeout, poll_frequency=0.25, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException))

    def find(self, css: str, within: Optional[WebElement] = None) -> WebElement:
        return (within or self.driver).find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str, within: Optional[WebElement] = None) -> list[WebElement]:
        return (within or self.driver).find_elements(By.CSS_SELECTOR, css)

    def wait_for(self, css: str, timeout: float = WAIT) -> WebElement:
        """The first element matching ``css``, once it is on the page."""
        return self.wait(timeout).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, css)),
            f"no {css!r} on {self.path}")

    def link(self, text: str, within: Optional[WebElement] = None) -> WebElement:
        """The visible link whose text is ``text`` (icons and spaces ignored)."""
        xpath = f".//a[normalize-space()={_xpath_literal(text)}]"
        links = [a for a in (within or self.driver).find_elements(By.XPATH, xpath)
                 if a.is_displayed()] or (within or self.driver).find_elements(By.XPATH, xpath)
        assert links, f"no link {text!r} on {self.path}"
        return links[0]

    @property
    def text(self) -> str:
        return self.find("body").text

    def flashes(self) -> list[str]:
        return [e.text.strip() for e in self.find_all(".flash-messages .alert")]

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    # -- actions ---------------------------------------------------------------------

    def click_and_load(self, element: WebElement) -> None:
        """Click something that loads a new page; wait for that page."""
        old = self.find("html")
        self.click(element)
        self.wait().until(ec.staleness_of(old), f"clicking did not leave {self.path}")
        self.wait_loaded()

    def click(self, element: WebElement) -> None:
        """Scroll the element to the middle of the window, click it."""
        self.scroll_to(element)
        element.click()

    def scroll_to(self, element: WebElement) -> None:
        # "instant": Bootstrap makes scrolling smooth, clicks would miss.
        self.js("arguments[0].scrollIntoView({block: 'center', behavior: 'instant'})",
                element)

    def confirm(self, link: WebElement) -> None:
        """Click a ``confirm-action`` link and confirm in CKAN's modal (a POST).

        Without the JavaScript module the link leads to the view's own
        confirmation page, confirmed there with ``#harvest-confirm-submit``.
        """
        assert link.get_attribute("data-module") == "confirm-action", (
            f"{link.text!r} ({link.get_attribute('href')}) is not a confirm-action link")
        label = link.text
        self.click(link)
        button = self.wait().until(
            # CKAN 2.12 gives the button an id; 2.11's modal has none.
            ec.element_to_be_clickable(
                (By.CSS_SELECTOR, "#ckan-confirm-yes, .modal.show .modal-footer .btn-primary")),
            f"no confirmation dialog after clicking {label!r}")
        self.click_and_load(button)

    def login(self, user: str) -> None:
        self.get("/user/login")
        self.find("#field-login").send_keys(user)
        self.find("#field-password").send_keys(PASSWORD)
        self.click_and_load(self.find("#field-password").find_element(
            By.XPATH, "ancestor::form//button[@type='submit']"))
        self.wait_for("form[action$='/user/_logout']")

    def post(self, path: str) -> None:
        """Submit a POST form (with this session's CSRF token) to ``path``.

        What a crafted page, or the user's own devtools, can do: checks what the
        server refuses, whatever buttons the page shows.
        """
        old = self.find("html")
        self.js("""
            const field = document.querySelector('meta[name=csrf_field_name]').content;
            const token = document.querySelector('meta[name="' + field + '"]').content;
            const form = document.createElement('form');
            form.method = 'POST';
            form.action = arguments[0];
            const input = document.createElement('input');
            input.type = 'hidden'; input.name = field; input.value = token;
            form.appendChild(input);
            document.body.appendChild(form);
            form.submit();
        """, self.live.url + path)
        self.wait().until(ec.staleness_of(old), f"POST {path} did not load a page")
        self.wait_loaded()

    def assert_forbidden(self, what: str) -> None:
        """The page shown is CKAN's 403 error page."""
        # CKAN 2.12 puts the heading in #error-content, 2.11 does not.
        heading = self.driver.find_elements(
            By.XPATH, "//h1[starts-with(normalize-space(.), '403')]")
        assert heading, (
            f"{what}: expected a 403 page, got {self.path}:\n{self.text[:1500]}")

    # -- harvest pages -----------------------------------------------------------------

    def fill_source_form(self, url: str, title: str, name: str, config: str,
                         owner_org: Optional[str] = None) -> WebElement:
        """Fill ``form#source-new`` (type ``test``, Manual); returns the form."""
        form = self.wait_for("form#source-new")
        _type(self.find("[name=url]", form), url)
        _type(self.find("[name=title]", form), title)
        name_input = self.find("[name=name]", form)
        if not name_input.is_displayed():  # CKAN's slug preview hides it: "Edit"
            self.click(self.find(".slug-preview button", form))
        self.wait().until(lambda d: name_input.is_displayed(), "name field not shown")
        _type(name_input, name)
        radio = self.find("input[name=source_type][value=test]", form)
        self.click(radio)
        assert radio.is_selected()
        Select(self.find("select[name=frequency]", form)).select_by_value("MANUAL")
        _type(self.find("[name=config]", form), config)
        if owner_org is not None:
            Select(self.find("select[name=owner_org]", form)).select_by_value(owner_org)
        return form

    def field_group_text(self, name: str) -> str:
        """Text of the form group around field ``name`` (label, field, error)."""
        field = self.find(f"form#source-new [name={name}]")
        group = field.find_element(By.XPATH, (
            "ancestor::div[contains(concat(' ', normalize-space(@class), ' '), "
            "' form-group ') or contains(concat(' ', normalize-space(@class), ' '), "
            "' control-group ')][1]"))
        return str(group.text)

    def wait_for_job_report(self, job_id: str, timeout: float = JOB_TIMEOUT) -> None:
        """On a job page: run the harvest (cron's ``harvester run``) until the page,
        reloading itself, shows the finished job's report."""
        site = self.live.site

        def finished(driver: WebDriver) -> bool:
            site.check_consumers()
            site.run_in_background()
            return (not driver.find_elements(By.ID, "harvest-job-progress")
                    and "Error Summary" in driver.find_element(By.TAG_NAME, "body").text)

        try:
            self.wait(timeout).until(finished)
        except TimeoutException:
            pytest.fail(f"the job page did not show a finished job after {timeout:.0f} s "
                        f"({self.path})\n" + site.diagnostics(job_id))
        self.wait_loaded()

    def stats(self) -> dict[str, int]:
        """The statistics badges of the page: ``data-diff`` value -> number.

        The first visible element with a number for each value: the badges of
        the job come before anything else carrying ``data-diff``.
        """
        result: dict[str, int] = {}
        for badge in self.find_all("[data-diff]"):
            numbers = re.findall(r"\d+", badge.text.replace(",", ""))
            diff = str(badge.get_attribute("data-diff"))
            if diff not in result and numbers and badge.is_displayed():
                result[diff] = int(numbers[0])
        return result

    def open_in_same_or_new_tab(self, link: WebElement) -> None:
        """Follow a link; if it opens a new tab, switch to that tab."""
        handles = set(self.driver.window_handles)
        old = self.find("html")
        self.click(link)
        self.wait().until(lambda d: set(d.window_handles) - handles
                          or _is_stale(old), "the link opened nothing")
        new = set(self.driver.window_handles) - handles
        if new:
            self.driver.switch_to.window(new.pop())
        self.wait_loaded()

    # -- evidence -----------------------------------------------------------------------

    def screenshot(self, name: str) -> Path:
        """Save a full-page PNG ``tests/browser/screenshots/<name>.png``."""
        path = _full_page_png(self.driver, SCREENSHOTS / f"{name}.png")
        self.screenshots.append(path)
        return path


def _is_stale(element: WebElement) -> bool:
    try:
        element.is_enabled()
        return False
    except StaleElementReferenceException:
        return True


def _type(element: WebElement, value: str) -> None:
    element.clear()
    element.send_keys(value)


def _xpath_literal(text: str) -> str:
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "concat('" + text.replace("'", "', \"'\", '") + "')"


@pytest.fixture
def browser(driver: WebDriver, live_site: LiveSite) -> Browser:
    """A fresh browser (nobody logged in) on the served site."""
    return Browser(driver, live_site)
