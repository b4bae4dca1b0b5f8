"""A module-scoped "world" for tests that must not change it.

An organisation with members of every role, another organisation's admin, a
public and a private harvest source with jobs and an object, and API tokens:
built once per test module on a freshly reset database and search index (with
the module's ``PLUGINS`` loaded, default ``harvest test_harvester
test_harvester2``), and rebuilt only after a test changed it. After every test
the whole database (but last-use stamps and logs) is compared with its state
right after the build: ``harvest_site.check()`` and ``harvest_site.changed()``.

Used by the auth matrix (``tests/logic/test_auth.py``) and the bad-input corpus
(``tests/bad_input/``). Registered as a pytest plugin by the root conftest; a
module opts in with ``pytestmark = pytest.mark.usefixtures("world")``.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Iterator, Optional

import pytest
import sqlalchemy as sa
from ckan import model, plugins
from ckan.common import config
from ckan.tests import factories
from ckan.tests.helpers import _get_test_app, call_action

from ckanext.harvest.model import migrations
from ckanext.harvest.tests import factories as harvest_factories

DEFAULT_PLUGINS = "harvest test_harvester test_harvester2"

ROLES = ("anonymous", "user", "member", "editor", "admin", "other_admin", "sysadmin")


@dataclasses.dataclass
class World:
    """An organisation with a public and a private source, and the role holders."""

    users: dict[str, str]  # role -> user name ('' for anonymous)
    tokens: dict[str, str]  # role -> API token of the user (no anonymous entry)
    org_id: str
    source_id: str  # public source of the organisation, with a New job and an object
    source_name: str
    source_url: str
    private_source_id: str  # private source of the same organisation, with a New job
    idle_source_id: str  # public source of the organisation without jobs
    job_id: str
    private_job_id: str
    object_id: str


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
    source = harvest_factories.HarvestSourceObj(owner_org=org["id"])
    private_source = harvest_factories.HarvestSourceObj(owner_org=org["id"], private=True)
    idle_source = harvest_factories.HarvestSourceObj(owner_org=org["id"])
    job = harvest_factories.HarvestJobObj(source=source)
    private_job = harvest_factories.HarvestJobObj(source=private_source)
    obj = harvest_factories.HarvestObjectObj(job=job, guid="guid-1")
    tokens = {
        role: call_action("api_token_create", {"user": user}, user=user,
                          name="auth-matrix")["token"]
        for role, user in users.items() if user
    }
    return World(
        users=users, tokens=tokens, org_id=org["id"],
        source_id=source.id, source_name=model.Package.get(source.id).name,
        source_url=source.url, private_source_id=private_source.id,
        idle_source_id=idle_source.id, job_id=job.id, private_job_id=private_job.id,
        object_id=obj.id,
    )


# Tables and columns that requests touch without changing the world: the
# last-use stamps of users and tokens, the DB log and CKAN's bookkeeping.
_UNTRACKED_TABLES = {
    "alembic_version", "harvest_alembic_version", "harvest_log",
    "activity", "activity_detail", "tracking_raw", "tracking_summary",
}
_UNTRACKED_COLUMNS = ("last_active", "last_access")


def _fingerprint_query() -> Any:
    tables = sorted(
        set(sa.inspect(model.meta.engine).get_table_names()) - _UNTRACKED_TABLES
    )
    columns = ", ".join("'{}'".format(column) for column in _UNTRACKED_COLUMNS)
    return sa.text(" UNION ALL ".join(
        "SELECT '{table}' AS t, count(*) AS n, "
        "md5(coalesce(string_agg(r, '|' ORDER BY r), '')) AS h "
        "FROM (SELECT (to_jsonb(x) - ARRAY[{columns}])::text AS r "
        "FROM \"{table}\" x) rows".format(table=table, columns=columns)
        for table in tables
    ))


class WorldSite:
    """The module's CKAN site: plugins, a test app and the (lazily rebuilt) world.

    The world is built on a freshly reset database and search index, exactly
    like the function-scoped ``clean_db``/``clean_index`` + world of a single
    test would do. After every test the whole database (but the last-use stamps
    and logs) is compared with its state right after the build; any difference,
    and any allowed call of a state-changing action, discards the world so the
    next test gets a fresh one.
    """

    def __init__(self, app: Any, reset_db: Callable[[], None],
                 reset_index: Callable[[], None]) -> None:
        self.app = app
        self._reset_db = reset_db
        self._reset_index = reset_index
        self._world: Optional[World] = None
        self._pristine: Any = None
        self._query: Any = None
        self.config: dict[str, Any] = {}  # the configuration with the plugins loaded
        self.builds = 0

    def world(self) -> World:
        if self._world is None:
            model.Session.remove()
            self._reset_db()
            migrations.upgrade()
            self._reset_index()
            self._world = _build_world()
            model.Session.remove()
            self._query = _fingerprint_query()
            self._pristine = self._fingerprint()
            self.builds += 1
        return self._world

    def discard(self) -> None:
        """The world was changed: build a new one for the next test."""
        self._world = None

    def check(self) -> None:
        """Discard the world if the test left the database changed."""
        model.Session.remove()
        if self._world is not None and self._fingerprint() != self._pristine:
            self.discard()

    def unchanged(self) -> bool:
        """Is the database as it was right after the world was built?"""
        model.Session.remove()
        return self._world is None or self._fingerprint() == self._pristine

    def _fingerprint(self) -> Any:
        with model.meta.engine.connect() as connection:
            return connection.execute(self._query).all()


@pytest.fixture(scope="module")
def harvest_site(request, reset_db, reset_index) -> Iterator[WorldSite]:
    """Load the plugins and build the test app once for the module.

    Does what CKAN's ``ckan_config`` mark + ``with_plugins`` + ``app`` fixtures
    do per test, and undoes it at module teardown: plugins unloaded and the
    configuration restored, so that other test modules are unaffected.
    """
    from ckan.lib.app_globals import _CONFIG_CACHE

    original = copy.deepcopy(config)
    config["ckan.plugins"] = getattr(request.module, "PLUGINS", DEFAULT_PLUGINS).split()
    _CONFIG_CACHE.clear()
    try:
        plugins.load_all()
        site = WorldSite(_get_test_app(), reset_db, reset_index)
        site.config = copy.deepcopy(config)
        yield site
    finally:
        plugins.unload_all()
        model.Session.remove()
        config.clear()
        config.update(original)
        _CONFIG_CACHE.clear()


@pytest.fixture
def site_config(harvest_site: WorldSite) -> Iterator[None]:
    """CKAN's pytest plugin resets the configuration before every test: put
    back the one of the loaded plugins (what ``with_plugins`` leaves in place)."""
    config.clear()
    config.update(copy.deepcopy(harvest_site.config))
    yield


@pytest.fixture
def world(harvest_site: WorldSite, site_config: None) -> Iterator[World]:
    """A pristine world for every test (autouse: no test sees a changed one)."""
    yield harvest_site.world()
    harvest_site.check()
