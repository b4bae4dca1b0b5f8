"""Two real CKAN sites: the local one harvests the remote one end to end.

The remote (:class:`~tests.support.remote.RemoteCkan`) is a plain CKAN served by
``ckan run`` on a loopback port, with its own database and Solr core. It is filled
through its action API with the generated catalogue of ``dev/make_catalogue.py``:
organisations, groups, and ten datasets with resources, tags and extras, one of them
private and one deleted, plus an uploaded file.

The local site is a :class:`~tests.support.site.HarvestSite`: its gather and fetch
consumers are real ``ckan harvester`` subprocesses on Redis (one test on RabbitMQ),
sharing the database and search index of the test process. The test process plays the
rest of the local site: it creates sources and jobs with the harvest actions and, once a
job's objects are all done, closes it with ``harvest_jobs_run`` as ``ckan harvester
run`` (cron) would. It therefore runs with the site's ``ckan.site_id`` and queue
backend, so that both publish to and read from the same queues.

The remote and the local site are started once for the module. Each test starts from
an empty local database and index; the remote is seeded again only after a test that
changed it. Expectations come from ``docs/ckan-harvester.rst`` (the spec of the CKAN
harvester and the project's decisions on its quirks).
"""
from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import time
from typing import Any, Callable, Iterator, Optional
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from ckan import model, plugins
from ckan.common import config
from ckan.lib.munge import munge_tag
from ckan.plugins import toolkit

from ckanext.harvest.model import migrations
from dev import make_catalogue
from tests.support.remote import RemoteCkan
from tests.support.site import HarvestSite, job_stats

PLUGINS = "harvest ckan_harvester"
#: Harvests run on loopback: let the harvester fetch from there.
SITE_OPTIONS = {"ckan.harvest.ssrf_allowed_hosts": "127.0.0.1"}
#: The remote catalogue: 10 datasets (8 public, 1 private, 1 deleted) in the
#: organisations and groups of dev/make_catalogue.py (always the same for this seed).
CATALOGUE = make_catalogue.generate(10, seed=2026, private_ratio=0.1, deleted_ratio=0.1)
PUBLIC = len(CATALOGUE.public)
UPLOADED = CATALOGUE.public[0]  # this dataset also gets an uploaded file
JOB_TIMEOUT = 120.0
SEARCH_PATH = "/api/3/action/package_search"

#: What the harvest changes by design in a remote dataset (docs/ckan-harvester.rst),
#: compared separately or not at all: local dates and creator; the organisation and
#: groups depend on remote_orgs / remote_groups / default_groups.
LOCAL_FIELDS = ("metadata_created", "metadata_modified", "creator_user_id",
                "owner_org", "organization", "groups")
#: The local CKAN stamps the resources it writes (package_create / package_update).
LOCAL_RESOURCE_FIELDS = ("metadata_modified",)
#: Extras the harvest plugin adds when a harvested dataset is shown.
HARVEST_EXTRAS = ("harvest_object_id", "harvest_source_id", "harvest_source_title")


# --- the two sites ---------------------------------------------------------------------


@dataclasses.dataclass
class Local:
    """The local harvesting site and the configuration the test process runs with."""

    site: HarvestSite
    config: dict[str, Any]
    org_id: str = ""


@pytest.fixture(scope="module")
def remote_ckan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteCkan]:
    remote = RemoteCkan(tmp_path_factory.mktemp("remote-ckan"))
    try:
        remote.start()
        yield remote
    finally:
        remote.close()


class _RemoteState:
    """Seeds the remote again when a test changed its datasets (purging everything
    and seeding through the API takes about a second)."""

    def __init__(self, remote: RemoteCkan) -> None:
        self.remote = remote
        self.pristine: Any = None

    def fingerprint(self) -> Any:
        return self.remote.query(
            "SELECT count(*), max(metadata_modified), "
            "string_agg(id || state || private::text, ',' ORDER BY id) FROM package")

    def ensure_pristine(self) -> None:
        if self.pristine is not None and self.fingerprint() == self.pristine:
            return
        self.remote.purge()
        self.remote.seed(CATALOGUE)
        uploaded = self.remote.action("package_show", id=UPLOADED)
        self.remote.upload(uploaded["id"], "counts.csv", b"site,count\nA,12\nB,7\n",
                           name="Counts (uploaded)", format="CSV",
                           description="An uploaded file.")
        self.pristine = self.fingerprint()


@pytest.fixture(scope="module")
def remote_state(remote_ckan: RemoteCkan) -> _RemoteState:
    return _RemoteState(remote_ckan)


@pytest.fixture
def remote(remote_state: _RemoteState) -> RemoteCkan:
    """The remote CKAN holding the pristine catalogue."""
    remote_state.ensure_pristine()
    return remote_state.remote


@pytest.fixture(scope="module")
def local_site(tmp_path_factory: pytest.TempPathFactory,
               reset_db: Callable[[], None]) -> Iterator[Local]:
    """The local site, its consumers running, and CKAN loaded as that site in-process.

    Does what CKAN's ``ckan_config`` mark and ``with_plugins`` fixture do per test, once
    for the module, and undoes it at the end.
    """
    from ckan.lib.app_globals import _CONFIG_CACHE

    original = copy.deepcopy(config)
    model.Session.remove()
    reset_db()  # before any consumer runs: the first reset of a session drops tables
    migrations.upgrade()
    site = HarvestSite(tmp_path_factory.mktemp("local-ckan"), "redis", "two-ckan",
                       SITE_OPTIONS)
    try:
        _become(site)
        _CONFIG_CACHE.clear()
        plugins.load_all()
        site.consumer("gather").start()
        site.consumer("fetch").start()
        yield Local(site, copy.deepcopy(config))
    finally:
        site.close()
        plugins.unload_all()
        model.Session.remove()
        config.clear()
        config.update(original)
        _CONFIG_CACHE.clear()


def _become(site: HarvestSite) -> None:
    """Run the test process as ``site``: same plugins, site id and queue backend."""
    config["ckan.plugins"] = PLUGINS.split()
    config["ckan.site_id"] = site.site_id
    config["ckan.harvest.mq.type"] = site.backend
    config.update(SITE_OPTIONS)


@pytest.fixture
def local(local_site: Local, reset_db: Callable[[], None],
          reset_index: Callable[[], None]) -> Iterator[Local]:
    """The local site with an empty database and index, and the source's organisation.

    CKAN's pytest plugin resets the configuration before every test: put back the one
    of the module (what ``with_plugins`` leaves in place).
    """
    config.clear()
    config.update(copy.deepcopy(local_site.config))
    model.Session.remove()
    reset_db()
    migrations.upgrade()
    reset_index()
    local_site.org_id = _action("organization_create", name="harvest-org",
                                title="Harvesting organisation")["id"]
    yield local_site
    local_site.site.check_consumers()


# --- helpers: local side ---------------------------------------------------------------


def _site_user() -> str:
    return toolkit.get_action("get_site_user")({"ignore_auth": True}, {})["name"]


def _action(action_name: str, /, **data: Any) -> Any:
    """A local action as the site user (a sysadmin)."""
    return _action_as(_site_user(), action_name, **data)


def _action_as(user: str, action_name: str, /, **data: Any) -> Any:
    """A local action as ``user``."""
    model.Session.remove()  # see what the consumers wrote
    return toolkit.get_action(action_name)({"user": user}, data)


def _create_source(local: Local, remote: RemoteCkan, source_config: dict[str, Any],
                   name: str = "remote-ckan") -> str:
    source = _action("harvest_source_create", name=name, url=remote.url + "/",
                     source_type="ckan", title="Remote CKAN", owner_org=local.org_id,
                     frequency="MANUAL", config=json.dumps(source_config))
    return str(source["id"])


def _harvest(local: Local, source_id: str) -> str:
    """Run a job of the source through the consumers; returns the job id once Finished."""
    job_id = _start_job(source_id)
    _wait_until_finished(local, source_id, job_id)
    return job_id


def _start_job(source_id: str) -> str:
    """Create a job and put it on the gather queue (``ckan harvester job``)."""
    return str(_action("harvest_job_create", source_id=source_id, run=True)["id"])


def _wait_until_finished(local: Local, source_id: str, job_id: str,
                         gathered_only: bool = False) -> None:
    """Wait for the consumers; close the job once its objects are done, like cron.

    :param gathered_only: only wait until the gather stage is over
    """
    site = local.site
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        site.check_consumers()
        job = site.job(job_id)
        if job.status == "Finished" or (gathered_only and job.gather_finished):
            return
        if job.gather_finished and _all_objects_done(site, job_id):
            _action("harvest_jobs_run", source_id=source_id)
            if site.job(job_id).status == "Finished":
                return
        if time.monotonic() > deadline:
            pytest.fail(f"job not Finished after {JOB_TIMEOUT:.0f} s\n"
                        + site.diagnostics(job_id))
        time.sleep(0.2)


def _all_objects_done(site: HarvestSite, job_id: str) -> bool:
    return not site.scalar("SELECT count(*) FROM harvest_object WHERE harvest_job_id = :j "
                           "AND state NOT IN ('COMPLETE', 'ERROR')", j=job_id)


def _stats(job_id: str) -> dict[str, int]:
    stats = job_stats(job_id)
    return {key: value for key, value in stats.items() if value}


def _gather_errors(local: Local, job_id: str) -> list[str]:
    return [row[0] for row in local.site.query(
        "SELECT message FROM harvest_gather_error WHERE harvest_job_id = :j", j=job_id)]


def _job_guids(local: Local, job_id: str) -> set[str]:
    return {row[0] for row in local.site.query(
        "SELECT guid FROM harvest_object WHERE harvest_job_id = :j", j=job_id)}


def _local_datasets() -> dict[str, dict[str, Any]]:
    """``package_show`` of every local dataset (type ``dataset``, any state), by id."""
    model.Session.remove()
    ids = [row[0] for row in model.Session.query(model.Package.id).filter_by(type="dataset")]
    return {package_id: _action("package_show", id=package_id) for package_id in ids}


def _window_starts_at(local: Local, job_id: str, since: datetime.datetime) -> None:
    """Make the next incremental harvest ask for what was modified since ``since``.

    The window starts one hour (the documented margin) before the start of the last
    clean job. A test cannot wait for an hour: it moves that job's start instead.
    """
    with local.site.engine.begin() as connection:
        connection.execute(sa.text("UPDATE harvest_job SET gather_started = :at "
                                   "WHERE id = :j"),
                           {"at": since + datetime.timedelta(hours=1), "j": job_id})


def _searches(remote: RemoteCkan, since: int = 0) -> list[dict[str, list[str]]]:
    """Parameters of the remote package searches logged (after the first ``since``)."""
    lines = [line.split()[1] for line in remote.access_log()
             if line.startswith("GET " + SEARCH_PATH)]
    return [parse_qs(urlsplit(path).query) for path in lines[since:]]


def _search_filters(remote: RemoteCkan, since: int) -> set[Optional[str]]:
    """The ``fq`` of the package searches logged after the first ``since`` (at least
    one), None for a search without ``fq``."""
    searches = _searches(remote, since)
    assert searches, "no package_search reached the remote"
    return {search["fq"][0] if "fq" in search else None for search in searches}


# --- helpers: comparing ------------------------------------------------------------------


def _comparable(dataset: dict[str, Any]) -> dict[str, Any]:
    """A dataset without what harvesting changes by design (see LOCAL_FIELDS)."""
    result = {key: value for key, value in dataset.items() if key not in LOCAL_FIELDS}
    result["tags"] = sorted(tag["name"] for tag in dataset.get("tags", []))
    result["extras"] = _extras(dataset)
    result["resources"] = [_comparable_resource(r) for r in dataset.get("resources", [])]
    return result


def _comparable_resource(resource: dict[str, Any]) -> dict[str, Any]:
    # url_type is dropped on import: an uploaded remote file is linked, not copied.
    return {key: value for key, value in resource.items()
            if key not in LOCAL_RESOURCE_FIELDS + ("url_type",)}


def _extras(dataset: dict[str, Any]) -> dict[str, Any]:
    return {extra["key"]: extra["value"] for extra in dataset.get("extras", [])
            if extra["key"] not in HARVEST_EXTRAS}


def _assert_copies(local: dict[str, dict[str, Any]],
                   remote: dict[str, dict[str, Any]]) -> None:
    """Each remote dataset has a local copy with its id, equal field by field."""
    assert set(remote) <= set(local)
    different = {dataset_id: (_comparable(local[dataset_id]), _comparable(remote_dataset))
                 for dataset_id, remote_dataset in remote.items()
                 if _comparable(local[dataset_id]) != _comparable(remote_dataset)}
    assert not different, f"local != remote for {len(different)} datasets: {different}"


def _group_names(dataset: dict[str, Any]) -> set[str]:
    return {group["name"] for group in dataset.get("groups", [])}


# --- the tests ---------------------------------------------------------------------------


def test_first_harvest_copies_every_public_dataset_field_by_field(
        local: Local, remote: RemoteCkan) -> None:
    source_id = _create_source(local, remote, {})

    job_id = _harvest(local, source_id)

    assert _stats(job_id) == {"added": PUBLIC}
    assert _gather_errors(local, job_id) == []
    remote_datasets = remote.public_datasets()
    assert len(remote_datasets) == PUBLIC
    local_datasets = _local_datasets()
    assert set(local_datasets) == set(remote_datasets)  # the remote ids are kept
    # Field by field, tags included: without clean_tags, "land cover" stays as it is.
    _assert_copies(local_datasets, remote_datasets)
    site_user_id = _action("user_show", id=_site_user())["id"]
    for dataset in local_datasets.values():
        # Without remote_orgs / remote_groups: the source's organisation, no group.
        assert dataset["owner_org"] == local.org_id
        assert dataset["groups"] == []
        assert dataset["creator_user_id"] == site_user_id
        assert dataset["state"] == "active" and not dataset["private"]
    # The uploaded remote file is linked: its remote download URL, no url_type.
    uploaded = [r for r in remote_datasets[_id_of(remote, UPLOADED)]["resources"]
                if r["url_type"] == "upload"]
    assert len(uploaded) == 1
    assert uploaded[0]["url"].startswith(remote.url + "/dataset/")
    local_copy = [r for r in local_datasets[uploaded[0]["package_id"]]["resources"]
                  if r["id"] == uploaded[0]["id"]]
    assert [(r["url"], r["url_type"]) for r in local_copy] == [(uploaded[0]["url"], None)]
    # Neither the private nor the deleted remote dataset.
    hidden = {_id_of(remote, name) for name in CATALOGUE.private | CATALOGUE.deleted}
    assert len(hidden) == 2 and not hidden & set(local_datasets)


def _id_of(remote: RemoteCkan, name: str) -> str:
    return str(remote.action("package_show", id=name)["id"])


def test_private_datasets_are_not_harvested_even_with_an_api_key(
        local: Local, remote: RemoteCkan) -> None:
    # package_search is called without include_private: a remote API token changes
    # who asks, not what is listed (docs/ckan-harvester.rst, spec of the gather).
    (private_name,) = CATALOGUE.private
    private = remote.action("package_show", id=private_name)
    token = remote.user_token("harvest-reader", org=private["owner_org"])
    reader = make_catalogue.Api(remote.url, token)
    assert reader.call("package_show", {"id": private_name})["private"] is True
    assert reader.call("package_search", {"include_private": True})["count"] == PUBLIC + 1
    used_before = _token_last_access(remote, "harvest-reader")
    source_id = _create_source(local, remote, {"api_key": token})

    job_id = _harvest(local, source_id)

    assert _stats(job_id) == {"added": PUBLIC}
    assert private["id"] not in _local_datasets()
    assert set(_local_datasets()) == set(remote.public_datasets())
    # The harvester's requests carried the token: the remote saw it used.
    assert _token_last_access(remote, "harvest-reader") > used_before


def _token_last_access(remote: RemoteCkan, user: str) -> datetime.datetime:
    return remote.query("SELECT max(t.last_access) FROM api_token t JOIN \"user\" u "
                        "ON u.id = t.user_id WHERE u.name = :name", name=user)[0][0]


def test_defaults_user_and_read_only_options(local: Local, remote: RemoteCkan) -> None:
    _action("user_create", name="harvest-bot", email="bot@local.example.org",
            password="Harvest-bot-2026")
    _action("user_create", name="org-editor", email="editor@local.example.org",
            password="Org-editor-2026")
    for user in ("harvest-bot", "org-editor"):
        _action("organization_member_create", id=local.org_id, username=user,
                role="editor")
    _action("group_create", name="national-collection", title="National collection")
    _action("group_member_create", id="national-collection", username="harvest-bot",
            role="member")
    source_config = {
        "api_version": 1,  # only passed to package_create: the remote is read by API v3
        "default_tags": [{"name": "harvested"}, {"name": "remote-ckan"}],
        "default_groups": ["national-collection"],
        "default_extras": {
            "original_url": "{harvest_source_url}/dataset/{dataset_id}",
            "harvest_info": "{harvest_source_id}|{harvest_source_title}|"
                            "{harvest_job_id}|{harvest_object_id}",
            "language": "und",
        },
        "clean_tags": True,
        "user": "harvest-bot",
        "read_only": True,
    }
    source_id = _create_source(local, remote, source_config)
    stored = json.loads(_action("harvest_source_show", id=source_id)["config"])
    assert [g["name"] for g in stored["default_group_dicts"]] == ["national-collection"]
    searches = len(_searches(remote))

    job_id = _harvest(local, source_id)

    assert _stats(job_id) == {"added": PUBLIC}
    assert _search_filters(remote, searches) == {None}  # through /api/3/action
    assert not [line for line in remote.access_log() if "/api/1/" in line]
    remote_datasets = remote.public_datasets()
    local_datasets = _local_datasets()
    remote_tags = {tag["name"] for d in remote_datasets.values() for tag in d["tags"]}
    assert any(munge_tag(tag) != tag for tag in remote_tags)  # clean_tags has work
    languages = [_extras(d).get("language") for d in remote_datasets.values()]
    assert None in languages and set(languages) - {None}  # some remote ones win
    bot_id = _action("user_show", id="harvest-bot")["id"]
    expected = {}
    for dataset_id, remote_dataset in remote_datasets.items():
        local_dataset = local_datasets[dataset_id]
        object_id = _current_object(local, dataset_id)
        tags = sorted({munge_tag(tag["name"]) for tag in remote_dataset["tags"]}
                      | {"harvested", "remote-ckan"})
        extras = dict(_extras(remote_dataset), **{
            "original_url": f"{remote.url}/dataset/{dataset_id}",
            "harvest_info": f"{source_id}|Remote CKAN|{job_id}|{object_id}",
            "language": _extras(remote_dataset).get("language", "und"),
        })
        expected[dataset_id] = dict(remote_dataset, num_tags=len(tags),
                                    tags=[{"name": tag} for tag in tags],
                                    extras=[{"key": k, "value": v}
                                            for k, v in extras.items()])
        assert local_dataset["owner_org"] == local.org_id
        assert _group_names(local_dataset) == {"national-collection"}
        assert local_dataset["creator_user_id"] == bot_id  # written by the user
    _assert_copies(local_datasets, expected)

    # read_only: only the harvest user and sysadmins may change the datasets.
    harvested = next(iter(local_datasets))
    with pytest.raises(toolkit.NotAuthorized, match="is harvested read-only"):
        _check_access("org-editor", "package_update", {"id": harvested})
    _check_access("harvest-bot", "package_update", {"id": harvested})
    own = _action_as("org-editor", "package_create", name="not-harvested",
                     owner_org=local.org_id)
    _check_access("org-editor", "package_update", {"id": own["id"]})


def _check_access(user: str, auth: str, data: dict[str, Any]) -> None:
    model.Session.remove()
    toolkit.check_access(auth, {"user": user}, data)


def _current_object(local: Local, dataset_id: str) -> str:
    return str(local.site.scalar("SELECT id FROM harvest_object WHERE package_id = :p "
                                 "AND current", p=dataset_id))


def test_remote_organisations_and_groups_are_created(
        local: Local, remote: RemoteCkan) -> None:
    source_id = _create_source(local, remote, {
        "remote_orgs": "create", "remote_groups": "create",
        "default_extras": {"language": "und"}, "override_extras": True,
    })

    job_id = _harvest(local, source_id)

    assert _stats(job_id) == {"added": PUBLIC}
    remote_datasets = remote.public_datasets()
    local_datasets = _local_datasets()
    # Datasets keep their remote organisation and groups, created locally with the
    # remote ids (the harvest user is a sysadmin) and the remote names and titles.
    for dataset_id, remote_dataset in remote_datasets.items():
        local_dataset = local_datasets[dataset_id]
        assert local_dataset["owner_org"] == remote_dataset["owner_org"]
        assert ([(g["id"], g["name"], g["title"]) for g in local_dataset["groups"]]
                == [(g["id"], g["name"], g["title"]) for g in remote_dataset["groups"]])
    remote_orgs = {d["owner_org"] for d in remote_datasets.values()}
    remote_groups = {g["id"] for d in remote_datasets.values() for g in d["groups"]}
    local_orgs = {o["id"]: o for o in _action("organization_list", all_fields=True)}
    assert set(local_orgs) == remote_orgs | {local.org_id}  # only those needed
    assert {g["id"] for g in _action("group_list", all_fields=True)} == remote_groups
    for org_id in remote_orgs:
        remote_org = remote.action("organization_show", id=org_id)
        assert ({k: local_orgs[org_id][k] for k in ("name", "title", "description")}
                == {k: remote_org[k] for k in ("name", "title", "description")})
    # override_extras: the default extra replaces the remote value.
    expected = {dataset_id: dict(d, extras=[{"key": k, "value": v} for k, v in dict(
        _extras(d), language="und").items()]) for dataset_id, d in remote_datasets.items()}
    _assert_copies(local_datasets, expected)


def test_only_local_organisations_and_groups_are_used(
        local: Local, remote: RemoteCkan) -> None:
    agency = remote.action("organization_show", id="environment-agency")
    society = remote.action("group_show", id="society")
    _action("organization_create", id=agency["id"], name="environment-agency",
            title="Local environment agency")
    _action("group_create", name="environment", title="Local environment group")
    local_society = _action("group_create", id=society["id"], name="local-society",
                            title="Local society group")
    taken = CATALOGUE.public[4]  # a local dataset has this remote name already
    _action("package_create", name=taken, title="Not harvested", owner_org=local.org_id)
    source_id = _create_source(local, remote, {"remote_orgs": "only_local",
                                               "remote_groups": "only_local"})

    job_id = _harvest(local, source_id)

    assert _stats(job_id) == {"added": PUBLIC}
    remote_datasets = remote.public_datasets()
    local_datasets = _local_datasets()
    for dataset_id, remote_dataset in remote_datasets.items():
        local_dataset = local_datasets[dataset_id]
        in_agency = remote_dataset["owner_org"] == agency["id"]
        assert local_dataset["owner_org"] == (agency["id"] if in_agency else local.org_id)
        # A remote group is matched by id, else by name; the others are dropped.
        expected_groups = ({"environment"} & _group_names(remote_dataset)) | (
            {"local-society"} if "society" in _group_names(remote_dataset) else set())
        assert _group_names(local_dataset) == expected_groups
    used = [d for d in remote_datasets.values()
            if d["owner_org"] == agency["id"] or _group_names(d) & {"environment", "society"}]
    assert 0 < len(used) < PUBLIC
    assert {g["name"] for g in _action("group_list", all_fields=True)} == {
        "environment", local_society["name"]}  # nothing created
    assert len(_action("organization_list")) == 2
    # A new dataset gets the remote name, suffixed when the name is taken locally.
    expected = dict(remote_datasets)
    renamed = _id_of(remote, taken)
    expected[renamed] = dict(remote_datasets[renamed], name=taken + "1")
    _assert_copies(local_datasets, expected)


FILTERS = [
    pytest.param(
        {"organizations_filter_include": ["environment-agency", "mapping-agency"],
         "groups_filter_exclude": ["geospatial"]},
        lambda org, groups: org in ("environment-agency", "mapping-agency"),
        lambda org, groups: "geospatial" not in groups,
        "organization:environment-agency OR organization:mapping-agency -groups:geospatial",
        id="include-orgs-exclude-groups"),
    pytest.param(
        {"organizations_filter_exclude": ["city-of-riverton"],
         "groups_filter_include": ["society", "environment"]},
        lambda org, groups: org != "city-of-riverton",
        lambda org, groups: bool(groups & {"society", "environment"}),
        "-organization:city-of-riverton groups:society OR groups:environment",
        id="exclude-orgs-include-groups"),
]


@pytest.mark.parametrize("source_config, org_filter, group_filter, fq", FILTERS)
def test_organisation_and_group_filters_select_the_remote_datasets(
        local: Local, remote: RemoteCkan, source_config: dict[str, Any],
        org_filter: Callable[[str, set[str]], bool],
        group_filter: Callable[[str, set[str]], bool], fq: str) -> None:
    remote_datasets = remote.public_datasets()
    keys = {dataset_id: (d["organization"]["name"], _group_names(d))
            for dataset_id, d in remote_datasets.items()}
    by_orgs = {i for i, key in keys.items() if org_filter(*key)}
    by_groups = {i for i, key in keys.items() if group_filter(*key)}
    expected = by_orgs & by_groups
    # Each filter leaves out datasets the other one keeps.
    assert expected and by_orgs - expected and by_groups - expected
    source_id = _create_source(local, remote, source_config)
    searches = len(_searches(remote))

    job_id = _harvest(local, source_id)

    assert _stats(job_id) == {"added": len(expected)}
    assert set(_local_datasets()) == expected
    _assert_copies(_local_datasets(), {i: remote_datasets[i] for i in expected})
    assert _search_filters(remote, searches) == {fq}


def test_stopped_remote_is_a_gather_error_and_the_next_job_harvests_everything(
        local: Local, remote: RemoteCkan) -> None:
    source_id = _create_source(local, remote, {})
    remote.stop_server()
    try:
        failed = _harvest(local, source_id)
    finally:
        remote.start_server()

    (error,) = _gather_errors(local, failed)
    search_url = f"{remote.url}{SEARCH_PATH}?rows=100&start=0&sort=id+asc"
    assert error.startswith(
        "Unable to search remote CKAN for datasets:Error sending request to search "
        f"remote CKAN instance {remote.url} using URL '{search_url}'. Error: "
        "Request error: "), error
    assert error.endswith(f"url:{remote.url}terms:[]"), error
    assert "Connection refused" in error
    assert _stats(failed) == {"errored": 1}  # the gather error counts
    assert _job_guids(local, failed) == set() and _local_datasets() == {}

    # The failed job does not count as the last clean one: a full harvest follows.
    searches = len(_searches(remote))
    job_id = _harvest(local, source_id)

    assert _stats(job_id) == {"added": PUBLIC}
    assert _search_filters(remote, searches) == {None}
    _assert_copies(_local_datasets(), remote.public_datasets())


def test_remote_gone_before_import_leaves_no_dataset_half_imported(
        local: Local, remote: RemoteCkan) -> None:
    # Three remote datasets: two in the remote group "environment" (to be created
    # from the remote's group_show), one in "education", which exists locally.
    _action("group_create", name="education", title="Local education group")
    source_id = _create_source(local, remote, {
        "organizations_filter_include": ["environment-agency", "board-of-education"],
        "remote_groups": "create",
    })
    remote_datasets = remote.public_datasets()
    in_environment = {i for i, d in remote_datasets.items()
                      if _group_names(d) == {"environment"}}
    in_education = {i for i, d in remote_datasets.items()
                    if _group_names(d) == {"education"}}
    assert len(in_environment) == 2 and len(in_education) == 1
    fetch = next(c for c in local.site.consumers if c.kind == "fetch")
    fetch.stop()
    try:
        job_id = _start_job(source_id)
        _wait_until_finished(local, source_id, job_id, gathered_only=True)
        remote.stop_server()
        fetch.start()
        _wait_until_finished(local, source_id, job_id)
    finally:
        remote.start_server()
        if not fetch.running:
            fetch.start()

    assert _stats(job_id) == {"added": 1, "errored": 2}
    errors = local.site.object_errors(job_id)
    assert {(e.guid, e.stage) for e in errors} == {(i, "Import") for i in in_environment}
    for error in errors:
        assert error.message.startswith(
            "Could not fetch/decode remote group environment: Request error: "), error
    # Imported without the remote: the dataset whose group exists locally only.
    assert set(_local_datasets()) == in_education
    assert _action("group_list") == ["education"]

    # The job had errors, so the next one searches everything again and repairs.
    job_id = _harvest(local, source_id)

    assert _stats(job_id) == {"added": 2, "not modified": 1}
    local_datasets = _local_datasets()
    assert set(local_datasets) == in_environment | in_education
    for dataset_id in in_environment:
        assert (local_datasets[dataset_id]["groups"][0]["id"]
                == remote_datasets[dataset_id]["groups"][0]["id"])
    _assert_copies(local_datasets, {i: remote_datasets[i] for i in local_datasets})


def test_harvest_through_rabbitmq_consumers(
        local: Local, remote: RemoteCkan,
        make_site: Callable[..., HarvestSite]) -> None:
    site = make_site("amqp", "two-ckan", SITE_OPTIONS)
    site.consumer("gather").start()
    site.consumer("fetch").start()
    _become(site)
    source_id = _create_source(local, remote, {})

    job_id = _harvest(Local(site, dict(config), local.org_id), source_id)

    assert _stats(job_id) == {"added": PUBLIC}
    _assert_copies(_local_datasets(), remote.public_datasets())


def test_reharvest_picks_up_exactly_the_remote_changes(
        local: Local, remote: RemoteCkan) -> None:
    source_id = _create_source(local, remote, {})
    first = _harvest(local, source_id)
    assert _stats(first) == {"added": PUBLIC}
    modified = {i: d["metadata_modified"] for i, d in _local_datasets().items()}

    # Change 2, add 2, delete 1 on the remote.
    since = _utcnow()
    public = [_id_of(remote, name) for name in CATALOGUE.public]
    changed, deleted = public[1:3], public[3]
    before = remote.action("package_show", id=changed[0])
    remote.action("package_patch", id=changed[0], name=before["name"] + "-renamed",
                  title=before["title"] + " (revised)", notes="Revised notes.",
                  tags=[{"name": "revised"}], extras=[{"key": "revision", "value": "2"}])
    resource = remote.action("package_show", id=changed[1])["resources"][0]
    remote.action("resource_patch", id=resource["id"], description="Moved.",
                  url="https://files.example.org/moved.csv")
    added = [remote.action("package_create", **dict(dataset, private=False))["id"]
             for dataset in make_catalogue.generate(12, seed=2026).datasets[10:]]
    remote.action("package_delete", id=deleted)
    _window_starts_at(local, first, since)
    searches = len(_searches(remote))

    second = _harvest(local, source_id)

    assert _stats(second) == {"added": 2, "updated": 2}
    assert _job_guids(local, second) == set(changed) | set(added)
    window = f"metadata_modified:[{since.isoformat()}Z TO *]"
    assert _search_filters(remote, searches) == {window}
    remote_datasets = remote.public_datasets()
    assert len(remote_datasets) == PUBLIC + 1
    local_datasets = _local_datasets()
    # On update the local name is kept.
    _assert_copies(local_datasets, dict(remote_datasets, **{changed[0]: dict(
        remote_datasets[changed[0]], name=before["name"])}))
    # Remote deletions are not harvested: the dataset stays, untouched.
    assert set(local_datasets) == set(remote_datasets) | {deleted}
    assert local_datasets[deleted]["state"] == "active"
    untouched = set(modified) - set(changed)
    assert {i: local_datasets[i]["metadata_modified"] for i in untouched} == {
        i: modified[i] for i in untouched}

    # Nothing changed since: nothing to do (not an error).
    modified = {i: d["metadata_modified"] for i, d in local_datasets.items()}
    _window_starts_at(local, second, _utcnow())
    third = _harvest(local, source_id)

    assert _stats(third) == {}
    assert _job_guids(local, third) == set() and _gather_errors(local, third) == []
    assert {i: d["metadata_modified"] for i, d in _local_datasets().items()} == modified

    # force_all: every remote dataset is looked at again. The new source config
    # changes every content hash: each is imported again, once.
    _action("harvest_source_patch", id=source_id, config=json.dumps({"force_all": True}))
    _window_starts_at(local, third, _utcnow())
    searches = len(_searches(remote))
    fourth = _harvest(local, source_id)

    assert _stats(fourth) == {"updated": PUBLIC + 1}
    assert _job_guids(local, fourth) == set(remote_datasets)
    assert _search_filters(remote, searches) == {None}

    # force_all again, nothing changed: none is written.
    modified = {i: d["metadata_modified"] for i, d in _local_datasets().items()}
    fifth = _harvest(local, source_id)

    assert _stats(fifth) == {"not modified": PUBLIC + 1}
    assert _job_guids(local, fifth) == set(remote_datasets)
    assert {i: d["metadata_modified"] for i, d in _local_datasets().items()} == modified


# --- content hashes ------------------------------------------------------------------


def _modified_dates() -> dict[str, str]:
    return {i: d["metadata_modified"] for i, d in _local_datasets().items()}


def _object_states(local: Local, job_id: str) -> set[tuple[str, str, bool, bool]]:
    """(state, report status, current, ever queued-and-imported) of the job's objects:
    an object finished at gather has no import of its own after its gather."""
    return {(row[0], row[1], row[2], row[3]) for row in local.site.query(
        "SELECT o.state, o.report_status, o.current, o.import_started > j.gather_finished "
        "FROM harvest_object o JOIN harvest_job j ON j.id = o.harvest_job_id "
        "WHERE o.harvest_job_id = :j", j=job_id)}


def _current_jobs(local: Local) -> dict[str, str]:
    """The job that last wrote each dataset (that of its current object)."""
    return {row[0]: row[1] for row in local.site.query(
        "SELECT package_id, harvest_job_id FROM harvest_object WHERE current")}


def _current_objects(local: Local) -> dict[str, str]:
    return {row[0]: row[1] for row in local.site.query(
        "SELECT package_id, id FROM harvest_object WHERE current")}


def _on_rabbitmq(local: Local, make_site: Callable[..., HarvestSite]) -> Local:
    """The local site harvesting through RabbitMQ consumers (same database)."""
    site = make_site("amqp", "two-ckan", SITE_OPTIONS)
    site.consumer("gather").start()
    site.consumer("fetch").start()
    _become(site)
    return Local(site, dict(config), local.org_id)


@pytest.mark.parametrize("backend", ["redis", "amqp"])
def test_content_hashes_skip_unchanged_records_until_config_force_or_local_edit(
        local: Local, remote: RemoteCkan, make_site: Callable[..., HarvestSite],
        backend: str) -> None:
    if backend == "amqp":
        local = _on_rabbitmq(local, make_site)
    source_id = _create_source(local, remote, {"force_all": True})
    first = _harvest(local, source_id)
    assert _stats(first) == {"added": PUBLIC}
    modified, current = _modified_dates(), _current_objects(local)

    # force_all, nothing changed: no dataset is written, no object is imported.
    unchanged = _harvest(local, source_id)

    assert _stats(unchanged) == {"not modified": PUBLIC}
    assert _object_states(local, unchanged) == {("COMPLETE", "not modified", False, False)}
    assert _modified_dates() == modified
    assert _current_objects(local) == current

    # A local edit: that dataset is imported again (the remote copy wins).
    edited = _id_of(remote, CATALOGUE.public[2])
    _action("package_patch", id=edited, title="Edited locally")
    after_edit = _harvest(local, source_id)

    assert _stats(after_edit) == {"not modified": PUBLIC - 1, "updated": 1}
    assert _local_datasets()[edited]["title"] == remote.action(
        "package_show", id=edited)["title"]
    assert _current_jobs(local) == {
        i: after_edit if i == edited else first for i in modified}

    # A new source config: every dataset is imported again, once.
    _action("harvest_source_patch", id=source_id,
            config=json.dumps({"force_all": True, "clean_tags": False}))
    new_config = _harvest(local, source_id)
    again = _harvest(local, source_id)

    assert _stats(new_config) == {"updated": PUBLIC}
    assert _stats(again) == {"not modified": PUBLIC}
    assert set(_current_jobs(local).values()) == {new_config}

    # A forced job writes every dataset, whatever its hash.
    forced = str(_action("harvest_job_create", source_id=source_id, run=True,
                         force=True)["id"])
    _wait_until_finished(local, source_id, forced)

    assert _stats(forced) == {"updated": PUBLIC}
    assert set(_current_jobs(local).values()) == {forced}


def _utcnow() -> datetime.datetime:
    """Now in UTC, naive, like CKAN's and the harvest tables' timestamps."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
