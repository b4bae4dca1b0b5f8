"""The remote CKAN of the faults suite: 1,000+ public datasets, seeded once.

Built on :class:`tests.support.remote.RemoteCkan` (a second real CKAN process with its
own database and Solr core), with its own database, ``ckan_test_faults_remote``
(``CKAN_TEST_FAULTS_REMOTE_DB`` overrides it; suffixed with the CKAN minor version
on CKAN < 2.12 like every test database), so that it never disturbs the two-CKAN
tests. Seeding a thousand datasets through the action API takes minutes: the
content is kept between runs and only checked at start-up (every dataset of the
catalogue in the database, active and public as generated, and in the search
index); it is completed or re-indexed when the check fails.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from dev import make_catalogue
from tests.support import remote as support_remote
from tests.support.remote import RemoteCkan

DATABASE_ENV = "CKAN_TEST_FAULTS_REMOTE_DB"
DEFAULT_DATABASE = "ckan_test_faults_remote"
#: 1,060 generated datasets: 21 private and 11 deleted, 1,028 public ones to harvest.
CATALOGUE = make_catalogue.generate(1060, seed=7007, private_ratio=0.02,
                                    deleted_ratio=0.01)
SEED_WORKERS = 2


class FaultsRemote(RemoteCkan):
    """The remote CKAN, its catalogue kept from one run to the next."""

    def __init__(self, directory: Path) -> None:
        previous = os.environ.get(support_remote.DATABASE_ENV)
        os.environ[support_remote.DATABASE_ENV] = (os.environ.get(DATABASE_ENV)
                                                   or DEFAULT_DATABASE)
        try:
            super().__init__(directory, site_id="faults-remote")
        finally:
            if previous is None:
                del os.environ[support_remote.DATABASE_ENV]
            else:
                os.environ[support_remote.DATABASE_ENV] = previous
        self.seeding = "kept"

    def start(self) -> FaultsRemote:
        """Like :meth:`RemoteCkan.start`, but the search index is kept."""
        self._check_database()
        self.ckan("db", "init")
        self.server.start()
        self.api = make_catalogue.Api(self.url, self._sysadmin_token())
        return self

    # -- content ------------------------------------------------------------------

    def public_ids(self, organisation: Optional[str] = None) -> dict[str, str]:
        """``id -> name`` of the datasets a harvester must get (database view).

        :param organisation: only those of this organisation (its name)
        """
        return dict(self.query(
            "SELECT p.id, p.name FROM package p LEFT JOIN \"group\" g ON g.id = p.owner_org "
            "WHERE p.state = 'active' AND NOT p.private AND p.type = 'dataset' "
            "AND (CAST(:organisation AS text) IS NULL OR g.name = :organisation)",
            organisation=organisation))

    def organisations(self) -> set[str]:
        """Ids of the organisations owning public datasets."""
        return {row[0] for row in self.query(
            "SELECT DISTINCT owner_org FROM package WHERE state = 'active' "
            "AND NOT private AND type = 'dataset' AND owner_org IS NOT NULL")}

    def titles(self) -> dict[str, str]:
        return dict(self.query("SELECT id, title FROM package WHERE state = 'active' "
                               "AND NOT private AND type = 'dataset'"))

    def _database_holds_catalogue(self) -> bool:
        rows = self.query("SELECT name, state, private FROM package "
                          "WHERE type = 'dataset'")
        found = {name: (state, private) for name, state, private in rows}
        for dataset in CATALOGUE.datasets:
            name = dataset["name"]
            wanted = ("deleted" if name in CATALOGUE.deleted else "active",
                      name in CATALOGUE.private)
            if found.get(name) != wanted:
                return False
        return len(found) == len(CATALOGUE.datasets)

    def _index_holds_catalogue(self) -> bool:
        """What an anonymous ``package_search`` lists: exactly the public datasets."""
        indexed: set[str] = set()
        while True:
            page = self.anonymous("package_search", q="*:*", fl="id", sort="id asc",
                                  rows=1000, start=len(indexed))
            ids = {dataset["id"] for dataset in page["results"]}
            if not ids or ids <= indexed:
                break
            indexed |= ids
        return indexed == set(self.public_ids())

    def ensure_catalogue(self) -> str:
        """Make the remote hold :data:`CATALOGUE`; returns what had to be done."""
        if not self._database_holds_catalogue():
            self.purge()
            assert self.api is not None
            make_catalogue.seed(self.api, CATALOGUE, workers=SEED_WORKERS, quiet=True)
            self.seeding = "seeded"
        elif not self._index_holds_catalogue():
            self.ckan("search-index", "rebuild", "--force")
            self.seeding = "re-indexed"
        assert self._database_holds_catalogue(), "the remote catalogue is incomplete"
        assert self._index_holds_catalogue(), "the remote search index is incomplete"
        return self.seeding

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "database": self.database, "public": len(self.public_ids()),
                "seeding": self.seeding}
