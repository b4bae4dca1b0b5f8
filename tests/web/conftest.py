"""The site of the web interface tests: plugins, a test app and a world.

The world (users in every role, an organisation with sources in known
states, jobs, objects and errors) is built once for the package on a reset
database and search index. Tests that change something work on sources of
their own (``fresh_source``), so the world stays valid for every test.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import re
from typing import Any, Callable, Iterator, Optional
from urllib.parse import urlparse

import pytest
from ckan import model, plugins
from ckan.common import config
from ckan.lib import search
from ckan.plugins import toolkit
from ckan.tests import factories
from ckan.tests.helpers import _get_test_app
from flask.testing import FlaskClient

from ckanext.harvest.lib import harvesters
from ckanext.harvest.model import (
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectExtra,
    JobStatus,
    ObjectState,
    migrations,
    utcnow,
)
from ckanext.harvest.tests import factories as harvest_factories
from ckanext.harvest.tests.lib import run_harvest_job

PLUGINS = "harvest test_harvester test_harvester2"
ROLES = ("anonymous", "user", "member", "editor", "admin", "other_admin", "sysadmin")
#: Roles that may manage the organisation's sources (and see their jobs).
MANAGERS = ("editor", "admin", "sysadmin")

XML_DOCUMENT = '<?xml version="1.0" encoding="UTF-8"?>\n<record><title>Trees</title></record>'


@dataclasses.dataclass
class World:
    users: dict[str, str]  # role -> user name ('' for anonymous)
    org_id: str
    source: dict[str, Any]  # public source: two finished jobs, errors, objects
    first_job_id: str  # finished, 2 added
    job_id: str  # finished (latest): 1 updated, 1 not modified, 2 errored, gather error
    running_source: dict[str, Any]  # a Running job, gathered, 1 of 3 objects done
    running_job_id: str
    idle_source: dict[str, Any]  # no jobs
    private_source: dict[str, Any]
    object_id: str  # JSON content
    xml_object_id: str
    text_object_id: str
    original_document_object_id: str  # content empty, extra original_document (XML)
    empty_object_id: str  # no content at all
    dataset_name: str  # a dataset harvested by ``source``


def _config(datasets: list[str], **modes: Any) -> str:
    return json.dumps(dict({"datasets": [{"guid": g, "title": g.title()} for g in datasets]},
                           **modes))


def _harvest(source: Any, config: str) -> Any:
    source_obj = harvest_factories.HarvestSourceObj(url=source["url"])
    source_obj.config = config
    source_obj.save()
    job = harvest_factories.HarvestJobObj(source=source_obj)
    run_harvest_job(job, harvesters.find_harvester("test"))
    return HarvestJob.get(job.id)


def _object(job_id: str, guid: str, content: Optional[str], **state: Any) -> str:
    obj = harvest_factories.HarvestObjectObj(job=HarvestJob.get(job_id), guid=guid,
                                             content=content)
    for key, value in state.items():
        setattr(obj, key, value)
    obj.save()
    return obj.id


def _running_job(source: dict[str, Any]) -> str:
    job = harvest_factories.HarvestJobObj(source=harvest_factories.HarvestSourceObj(
        url=source["url"]))
    job.status = JobStatus.RUNNING.value
    job.gather_started = utcnow()
    job.gather_finished = utcnow()
    job.save()
    _object(job.id, "r1", "{}", state=ObjectState.COMPLETE.value, report_status="added")
    _object(job.id, "r2", "{}", state=ObjectState.FETCH.value)
    _object(job.id, "r3", "{}", state=ObjectState.WAITING.value)
    return job.id


def _objects(job_id: str) -> dict[str, str]:
    ids = {
        "xml": _object(job_id, "doc-xml", XML_DOCUMENT),
        "text": _object(job_id, "doc-text", "just <b>text</b>"),
        "empty": _object(job_id, "doc-empty", None),
        "original": _object(job_id, "doc-original", None),
    }
    model.Session.add(HarvestObjectExtra(
        harvest_object_id=ids["original"], key="original_document",
        value="<record><title>Original</title></record>",
    ))
    model.Session.commit()
    return ids


def _build_world() -> World:
    users = {role: factories.User()["name"] for role in ROLES[1:-1]}
    users["anonymous"] = ""
    users["sysadmin"] = factories.Sysadmin()["name"]
    org = factories.Organization(users=[
        {"name": users["member"], "capacity": "member"},
        {"name": users["editor"], "capacity": "editor"},
        {"name": users["admin"], "capacity": "admin"},
    ])
    factories.Organization(users=[{"name": users["other_admin"], "capacity": "admin"}])
    source = harvest_factories.HarvestSource(
        owner_org=org["id"], title="Forest records", notes="Trees of the *north*.")
    first = _harvest(source, _config(["oak", "elm"]))
    latest = _harvest(source, _config(
        ["oak", "elm", "ash", "fir"], fetch={"ash": "error"}, **{"import": {
            "elm": "unchanged", "fir": "error"}}))
    HarvestGatherError.create("Remote catalogue answered 503 once", latest)
    running = harvest_factories.HarvestSource(owner_org=org["id"], title="Busy source")
    idle = harvest_factories.HarvestSource(owner_org=org["id"], title="Idle source")
    private = harvest_factories.HarvestSource(
        owner_org=org["id"], title="Secret source", private=True)
    extra_objects = _objects(latest.id)
    # The test harvester links its objects to their datasets only after
    # indexing them (real harvesters link first): index them again.
    for dataset in ("harvested-oak", "harvested-elm"):
        search.rebuild(model.Package.get(dataset).id)
    oak = model.Session.query(HarvestObject).filter(
        HarvestObject.harvest_job_id == latest.id, HarvestObject.guid == "oak").one()
    return World(
        users=users, org_id=org["id"], source=_show(source["id"]),
        first_job_id=first.id, job_id=latest.id,
        running_source=_show(running["id"]), running_job_id=_running_job(running),
        idle_source=_show(idle["id"]), private_source=_show(private["id"]),
        object_id=oak.id, xml_object_id=extra_objects["xml"],
        text_object_id=extra_objects["text"],
        original_document_object_id=extra_objects["original"],
        empty_object_id=extra_objects["empty"],
        dataset_name=model.Package.get(oak.package_id).name,
    )


def _show(source_id: str) -> dict[str, Any]:
    return toolkit.get_action("harvest_source_show")({"ignore_auth": True}, {"id": source_id})


class WebSite:
    """The package's CKAN site: plugins, the test app and the world."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.world: Optional[World] = None
        self.config: dict[str, Any] = {}

    def client(self, role: str = "anonymous") -> Any:
        """A test client of the whole CKAN app, logged in as the user of ``role``
        with a session cookie (as a browser is: CSRF checks apply)."""
        client = self.app.test_client()
        assert self.world is not None
        name = self.world.users[role]
        if name:
            self._log_in(client, model.User.get(name).id)
        return client

    def _log_in(self, client: Any, user_id: str) -> None:
        """Copy the session cookie of a Flask-Login session to ``client``."""
        flask_app = self.app.flask_app
        helper = FlaskClient(flask_app, use_cookies=True)
        with helper.session_transaction(base_url=config["ckan.site_url"]) as session:
            session["_user_id"] = user_id
            session["_fresh"] = True
        cookie_name = flask_app.config["SESSION_COOKIE_NAME"]
        domain = urlparse(config["ckan.site_url"]).hostname or "localhost"
        cookie = helper.get_cookie(cookie_name, domain=domain)
        assert cookie is not None, "no session cookie"
        client.set_cookie(cookie.key, cookie.value, domain=cookie.domain)


@pytest.fixture(scope="package")
def web_site(reset_db: Callable[[], None], reset_index: Callable[[], None]) -> Iterator[WebSite]:
    """Load the plugins, build the app and the world once for tests/web."""
    from ckan.lib.app_globals import _CONFIG_CACHE

    original = copy.deepcopy(config)
    config["ckan.plugins"] = PLUGINS.split()
    _CONFIG_CACHE.clear()
    try:
        plugins.load_all()
        site = WebSite(_get_test_app())
        site.config = copy.deepcopy(config)
        model.Session.remove()
        reset_db()
        migrations.upgrade()
        reset_index()
        site.world = _build_world()
        model.Session.remove()
        yield site
    finally:
        plugins.unload_all()
        model.Session.remove()
        config.clear()
        config.update(original)
        _CONFIG_CACHE.clear()


@pytest.fixture(autouse=True)
def site_config(web_site: WebSite) -> Iterator[None]:
    """CKAN's pytest plugin resets the configuration before each test: put
    back the one with the plugins loaded."""
    config.clear()
    config.update(copy.deepcopy(web_site.config))
    yield
    model.Session.remove()


@pytest.fixture
def world(web_site: WebSite) -> World:
    assert web_site.world is not None
    return web_site.world


@pytest.fixture
def client(web_site: WebSite) -> Callable[[str], Any]:
    """``client(role)``: a fresh logged-in test client."""
    return web_site.client


@pytest.fixture
def fresh_source(world: World) -> Iterator[Callable[..., dict[str, Any]]]:
    """``fresh_source(**fields)``: a new source of the organisation (for tests that
    change it). Deleted after the test, so that the world's sources stay on the
    first page of the source search."""
    made: list[str] = []

    def make(**fields: Any) -> dict[str, Any]:
        fields.setdefault("owner_org", world.org_id)
        source = harvest_factories.HarvestSource(**fields)
        made.append(source["id"])
        model.Session.remove()
        return _show(source["id"])

    yield make
    model.Session.remove()
    for source_id in made:
        if model.Package.get(source_id).state != "deleted":
            toolkit.get_action("harvest_source_delete")(
                {"ignore_auth": True, "user": ""}, {"id": source_id})


@pytest.fixture
def csrf_enabled(web_site: WebSite) -> Iterator[None]:
    """CSRF protection on (test-core.ini turns it off) for one test."""
    flask_config = web_site.app.flask_app.config
    previous = flask_config.get("WTF_CSRF_ENABLED")
    flask_config["WTF_CSRF_ENABLED"] = True
    try:
        yield
    finally:
        flask_config["WTF_CSRF_ENABLED"] = previous


_CSRF_INPUT = re.compile(r'<input[^>]*name="(?P<name>[^"]+)"[^>]*value="(?P<value>[^"]+)"')


def csrf_field(html: str) -> tuple[str, str]:
    """The (name, value) of the CSRF input of a page's form."""
    field_name = config.get("WTF_CSRF_FIELD_NAME", "_csrf_token")
    for match in _CSRF_INPUT.finditer(html):
        if match.group("name") == field_name:
            return field_name, match.group("value")
    raise AssertionError("no CSRF input in the page")
