"""A second, plain CKAN site for the two-CKAN tests: the "remote" being harvested.

:class:`RemoteCkan` serves ``ckan run`` (through :class:`~tests.support.site.WebServer`)
on a free loopback port, with its own database, its own Solr core and a configuration
generated from ``dev/remote.ini.in`` (the template of the demo and the benchmark). It
is filled through its action API with the API token of a sysadmin
(:meth:`RemoteCkan.action`); ``dev/make_catalogue.py`` provides the catalogue.

Database: ``ckan_test_remote`` (``CKAN_TEST_REMOTE_DB`` overrides the name) on the
server of the test database, with its credentials. On a CKAN other than 2.12 the name
ends with the CKAN minor version (``ckan_test_remote_2_11``): a database migrated by
CKAN 2.12 cannot be opened by 2.11. The database must exist (``dev/services.sh``
creates it); :meth:`RemoteCkan.start` brings it up to date with ``ckan db init``.

Solr: the core named like the database on the Solr server of the tests
(``CKAN_TEST_REMOTE_SOLR_URL`` overrides the whole URL; the core is emptied at start).
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any, Optional

import ckan
import pysolr
import pytest
import requests
import sqlalchemy as sa
from ckan.plugins import toolkit
from sqlalchemy.pool import NullPool

from dev import make_catalogue
from tests.support.site import (
    CKAN_EXECUTABLE,
    COMMAND_TIMEOUT,
    REPO,
    WebServer,
    free_port,
)

DEFAULT_DATABASE = "ckan_test_remote"
DATABASE_ENV = "CKAN_TEST_REMOTE_DB"
SOLR_URL_ENV = "CKAN_TEST_REMOTE_SOLR_URL"
ADMIN = "remote-admin"

ApiError = make_catalogue.ApiError


def remote_database_name(name: Optional[str] = None) -> str:
    """The database of a remote: ``name`` (default: ``$CKAN_TEST_REMOTE_DB``, else
    ``ckan_test_remote``) suffixed by the CKAN minor version unless it is 2.12 (the
    convention of the Makefile for the test database)."""
    name = name or os.environ.get(DATABASE_ENV) or DEFAULT_DATABASE
    minor = "_".join(ckan.__version__.split(".")[:2])
    return name if minor == "2_12" else f"{name}_{minor}"


class RemoteCkan:
    """A plain CKAN site (no extension) on a loopback port, driven through its API."""

    def __init__(self, directory: Path, site_id: str = "two-ckan-remote",
                 database: Optional[str] = None) -> None:
        """:param database: the database name (default: :func:`remote_database_name`)"""
        config = toolkit.config
        self.directory = directory
        self.site_id = site_id
        self.port = free_port()
        self.database = database or remote_database_name()
        self.db_url = sa.engine.make_url(config["sqlalchemy.url"]).set(
            database=self.database).render_as_string(hide_password=False)
        local_solr = config["solr_url"].rstrip("/")
        self.solr_url = (os.environ.get(SOLR_URL_ENV)
                         or local_solr.rsplit("/", 1)[0] + "/" + self.database)
        storage = directory / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        self.ini = directory / "remote.ini"
        self.ini.write_text(_render_template({
            "@DB_URL@": self.db_url, "@SOLR_URL@": self.solr_url,
            "@REDIS_URL@": config["ckan.redis.url"], "@SITE_ID@": site_id,
            "@PORT@": str(self.port), "@STORAGE@": str(storage),
        }))
        # CKAN_* variables (CKAN_SQLALCHEMY_URL ...) would override the remote's ini.
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith("CKAN_")}
        self.env["PYTHONUNBUFFERED"] = "1"
        self.engine = sa.create_engine(self.db_url, poolclass=NullPool)
        self.server = WebServer(self.ini, self.port, self.env, directory / "web.log")
        self.api: Optional[make_catalogue.Api] = None

    @property
    def url(self) -> str:
        return self.server.url

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> RemoteCkan:
        """Migrate the database, empty the index, start the server, get a sysadmin."""
        self._check_database()
        self.ckan("db", "init")
        self._empty_index()
        self.server.start()
        self.api = make_catalogue.Api(self.url, self._sysadmin_token())
        return self

    def stop_server(self) -> None:
        self.server.stop()

    def start_server(self) -> None:
        self.server.start()

    def close(self) -> None:
        self.server.stop()
        self.engine.dispose()

    def ckan(self, *args: str) -> str:
        """Run ``ckan -c <remote ini> <args>``; its standard output (fails on error)."""
        result = subprocess.run(
            [str(CKAN_EXECUTABLE), "-c", str(self.ini), *args], capture_output=True,
            text=True, env=self.env, cwd=REPO, timeout=COMMAND_TIMEOUT,
            stdin=subprocess.DEVNULL)
        assert result.returncode == 0, (
            f"remote: ckan {' '.join(args[:3])} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr[-3000:]}")
        return result.stdout

    def _check_database(self) -> None:
        try:
            with self.engine.connect():
                pass
        except sa.exc.OperationalError as e:
            pytest.fail(f"cannot open the database of the remote CKAN ({self.database}); "
                        f"dev/services.sh creates it: {e}")

    def _empty_index(self) -> None:
        try:
            pysolr.Solr(self.solr_url, always_commit=True, timeout=30).delete(q="*:*")
        except pysolr.SolrError as e:
            pytest.fail(f"cannot use the Solr core of the remote CKAN ({self.solr_url}): "
                        f"{e}; set {SOLR_URL_ENV} to the URL of a dedicated core")

    def _sysadmin_token(self) -> str:
        rows = self.query('SELECT sysadmin FROM "user" WHERE name = :name '
                          "AND state = 'active'", name=ADMIN)
        if not rows:
            self.ckan("user", "add", ADMIN, f"email={ADMIN}@remote.example.org",
                      "password=Two-ckan-tests-2026")
        if not rows or not rows[0][0]:
            self.ckan("sysadmin", "add", ADMIN)
        token = self.ckan("user", "token", "add", ADMIN, "two-ckan-tests", "-q")
        return token.strip().splitlines()[-1]

    # -- the action API ----------------------------------------------------------------

    def action(self, name: str, /, **data: Any) -> Any:
        """Call an action as the remote sysadmin; its ``result``.

        :raises ApiError: the action failed (``status`` is the HTTP status)
        """
        assert self.api is not None, "the remote is not started"
        return self.api.call(name, data)

    def anonymous(self, name: str, /, **data: Any) -> Any:
        assert self.api is not None, "the remote is not started"
        return self.api.call(name, data, anonymous=True)

    def upload(self, package_id: str, filename: str, content: bytes,
               **fields: Any) -> dict[str, Any]:
        """``resource_create`` with an uploaded file (``url_type`` ``upload``)."""
        assert self.api is not None, "the remote is not started"
        response = requests.post(
            f"{self.url}/api/3/action/resource_create",
            data={"package_id": package_id, **fields},
            files={"upload": (filename, content)},
            headers={"Authorization": self.api.token or ""}, timeout=60)
        body = response.json()
        assert body.get("success"), body
        return dict(body["result"])

    def user_token(self, name: str, org: Optional[str] = None,
                   capacity: str = "member") -> str:
        """An API token of a (created if need be) ordinary user, ``capacity`` in ``org``."""
        try:
            self.action("user_show", id=name)
        except ApiError as e:
            if e.status != 404:
                raise
            self.action("user_create", name=name, email=f"{name}@remote.example.org",
                        password="Two-ckan-tests-2026")
        if org:
            self.action("organization_member_create", id=org, username=name, role=capacity)
        return str(self.action("api_token_create", user=name, name="harvest")["token"])

    # -- content --------------------------------------------------------------------

    def seed(self, catalogue: make_catalogue.Catalogue) -> None:
        """Load a generated catalogue (organisations, groups, datasets)."""
        assert self.api is not None, "the remote is not started"
        make_catalogue.seed(self.api, catalogue, workers=1, quiet=True)

    def purge(self) -> None:
        """Purge every dataset, group and organisation, whatever its state."""
        for (package_id,) in self.query("SELECT id FROM package"):
            self.action("dataset_purge", id=package_id)
        for group_id, is_org in self.query('SELECT id, is_organization FROM "group"'):
            self.action("organization_purge" if is_org else "group_purge", id=group_id)

    def public_datasets(self) -> dict[str, dict[str, Any]]:
        """``package_show`` of every dataset an anonymous harvester sees, by id."""
        found = self.anonymous("package_search", rows=1000)
        assert found["count"] == len(found["results"])
        return {dataset["id"]: self.action("package_show", id=dataset["id"])
                for dataset in found["results"]}

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as connection:
            return list(connection.execute(sa.text(sql), params))

    def access_log(self) -> list[str]:
        """Request lines (``GET /api/3/action/... HTTP/1.1``) the server logged."""
        try:
            text = self.server.log_path.read_text(errors="replace")
        except OSError:
            return []
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # werkzeug colours some lines
        return [line.split('"')[1] for line in text.splitlines()
                if "[werkzeug]" in line and line.count('"') >= 2]


def _render_template(values: dict[str, str]) -> str:
    text = (REPO / "dev" / "remote.ini.in").read_text()
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text
