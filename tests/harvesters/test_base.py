"""``HarvesterBase`` helpers against the real database and search index."""
from __future__ import annotations

import datetime
import json
import re
import uuid
from typing import Any, Optional

import pytest
import sqlalchemy as sa
from ckan import model
from ckan.plugins import toolkit
from ckan.tests import factories

from ckanext.harvest.harvesters import _package as _package_helpers
from ckanext.harvest.harvesters import base
from ckanext.harvest.harvesters.base import HarvesterBase
from ckanext.harvest.lib import hashes
from ckanext.harvest.model import (
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
    HarvestObjectExtra,
    HarvestSource,
    JobStatus,
    ReportStatus,
)
from tests.support.marks import harvest_site

NAME_APPEND = "ckanext.harvest.default_dataset_name_append"
SITE_USER = "test.ckan.net"  # ckan.site_id of test-core.ini
HEX5 = "[0-9a-f]{5}"

pytestmark = harvest_site("harvest")


class BaseTestHarvester(HarvesterBase):
    """The smallest concrete harvester: only what HarvesterBase leaves abstract."""

    def info(self) -> dict[str, Any]:
        return {"name": "test-base", "title": "Test base", "description": "Tests"}

    def gather_stage(self, harvest_job: HarvestJob) -> list[str]:
        return []

    def fetch_stage(self, harvest_object: HarvestObject) -> bool:
        return True

    def import_stage(self, harvest_object: HarvestObject) -> bool:
        return True


@pytest.fixture
def harvester():
    """The (singleton) test harvester with no cached user nor config."""
    instance = BaseTestHarvester()
    vars(instance).clear()
    yield instance
    vars(instance).clear()


# --- helpers ------------------------------------------------------------------


def _source(url: str = "http://remote.example.com/") -> HarvestSource:
    source = HarvestSource(url=url, type="test")
    source.save()
    return source


def _job(
    source: HarvestSource,
    status: str = JobStatus.FINISHED.value,
    started: Optional[datetime.datetime] = datetime.datetime(2024, 1, 1),
) -> HarvestJob:
    job = HarvestJob(source=source, status=status, gather_started=started)
    job.save()
    return job


def _object(job: HarvestJob, guid: Optional[str] = None, **fields: Any) -> HarvestObject:
    obj = HarvestObject(guid=guid or str(uuid.uuid4()), job=job, **fields)
    obj.save()
    return obj


def _object_row(object_id: str) -> Any:
    """The committed harvest_object row, read on a fresh connection."""
    with model.meta.engine.connect() as conn:
        return conn.execute(
            sa.text("select current, package_id from harvest_object where id = :id"),
            {"id": object_id},
        ).one()


def _object_errors(object_id: str) -> list[tuple[str, str]]:
    rows = model.Session.query(HarvestObjectError).filter_by(harvest_object_id=object_id)
    return [(row.message, row.stage) for row in rows]


def _gather_errors(job_id: str) -> list[str]:
    rows = model.Session.query(HarvestGatherError).filter_by(harvest_job_id=job_id)
    return [row.message for row in rows]


def _package(id_or_name: str) -> dict[str, Any]:
    return toolkit.get_action("package_show")({"ignore_auth": True}, {"id": id_or_name})


def _stored_extras(package_id: str) -> dict[str, str]:
    """Extras saved with the dataset (package_show adds the harvest_* ones on the fly)."""
    model.Session.remove()
    return dict(model.Package.get(package_id).extras)


def _add_package_rows(names: list[str], **fields: Any) -> None:
    """Insert bare package rows (no search index) straight through the ORM."""
    for name in names:
        model.Session.add(model.Package(name=name, **fields))
    model.Session.commit()


def _dataset(**fields: Any) -> dict[str, Any]:
    """A local dataset (datasets need an organization by default in CKAN 2.12)."""
    return factories.Dataset(owner_org=factories.Organization()["id"], **fields)


@pytest.fixture
def remote_dict():
    """Build harvested dataset dicts owned by one local organization."""
    org_id = factories.Organization()["id"]

    def make(**fields: Any) -> dict[str, Any]:
        data = {"id": str(uuid.uuid4()), "name": "remote-name", "title": "Remote title",
                "notes": "Remote notes", "owner_org": org_id}
        data.update(fields)
        return data

    return make


@pytest.fixture
def harvest_object() -> HarvestObject:
    return _object(_job(_source()), guid="remote-guid")


# --- _ensure_name_is_unique / _gen_new_name ------------------------------------


@pytest.mark.parametrize(
    ("existing_packages", "ideal", "existing_name", "expected"),
    [
        ([], "trees", None, "trees"),
        (["trees"], "trees", None, "trees1"),
        (["trees", "trees1"], "trees", None, "trees2"),
        ([], "x" * 101, None, "x" * 100),
        (["x" * 100], "x" * 100, None, "x" * 99 + "1"),
        (["trees1"], "tree", "trees1", "tree"),
        (["trees"], "trees", "trees", "trees"),
        (["trees1"], "trees", "trees1", "trees"),
        (["trees", "trees2"], "trees", "trees2", "trees2"),
        (["frogs", "trees2"], "frogs", "trees2", "frogs1"),
        (["trees", "trees1", "trees3"], "trees", None, "trees2"),
        (["x" * 100, "x" * 99 + "1"], "x" * 100, None, "x" * 99 + "2"),
    ],
)
def test_ensure_name_is_unique_number_sequence(existing_packages, ideal, existing_name,
                                               expected):
    for name in existing_packages:
        _dataset(name=name)

    result = HarvesterBase._ensure_name_is_unique(ideal, existing_name=existing_name)

    assert result == expected


def test_ensure_name_is_unique_counts_deleted_and_other_type_datasets():
    _add_package_rows(["trees"], state="deleted")
    _add_package_rows(["trees1"], type="harvest")

    assert HarvesterBase._ensure_name_is_unique("trees") == "trees2"


def test_ensure_name_is_unique_returns_none_after_999_numbers():
    _add_package_rows(["trees"] + ["trees%d" % n for n in range(1, 1000)])

    assert HarvesterBase._ensure_name_is_unique("trees") is None


def test_ensure_name_is_unique_treats_like_wildcards_literally():
    _add_package_rows(["tr_es", "tr_es1"])

    assert HarvesterBase._ensure_name_is_unique("tr_es") == "tr_es2"
    assert HarvesterBase._ensure_name_is_unique("trees") == "trees"


def test_ensure_name_is_unique_random_hex_suffix():
    _dataset(name="trees")

    result = HarvesterBase._ensure_name_is_unique("trees", append_type="random-hex")

    assert re.fullmatch("trees" + HEX5, result)


def test_ensure_name_is_unique_random_hex_keeps_maximum_length():
    _add_package_rows(["x" * 100])

    result = HarvesterBase._ensure_name_is_unique("x" * 100, append_type="random-hex")

    assert re.fullmatch("x" * 95 + HEX5, result)


def test_ensure_name_is_unique_random_hex_free_name_is_kept():
    assert HarvesterBase._ensure_name_is_unique("trees", append_type="random-hex") == "trees"


def test_ensure_name_is_unique_rejects_other_append_types():
    with pytest.raises(NotImplementedError, match="^append_type cannot be roman-numeral$"):
        HarvesterBase._ensure_name_is_unique("trees", append_type="roman-numeral")


def test_ensure_name_is_unique_other_append_type_is_fine_for_the_same_name():
    result = HarvesterBase._ensure_name_is_unique(
        "trees", existing_name="trees", append_type="roman-numeral"
    )

    assert result == "trees"


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Trees", "trees"),
        ("Trees and branches - survey.", "trees-and-branches-survey"),
    ],
)
def test_gen_new_name_munges_the_title(title, expected):
    assert HarvesterBase._gen_new_name(title) == expected


def test_gen_new_name_number_sequence_by_default():
    _dataset(name="trees")

    assert HarvesterBase._gen_new_name("Trees") == "trees1"


def test_gen_new_name_number_sequence_param():
    _dataset(name="trees")

    assert HarvesterBase._gen_new_name("Trees", append_type="number-sequence") == "trees1"


def test_gen_new_name_random_hex_param():
    _dataset(name="trees")

    result = HarvesterBase._gen_new_name("Trees", append_type="random-hex")

    assert re.fullmatch("trees" + HEX5, result)


@pytest.mark.ckan_config(NAME_APPEND, "random-hex")
def test_gen_new_name_append_type_from_config():
    _dataset(name="trees")

    assert re.fullmatch("trees" + HEX5, HarvesterBase._gen_new_name("Trees"))


@pytest.mark.ckan_config(NAME_APPEND, "random-hex")
def test_gen_new_name_param_wins_over_config():
    _dataset(name="trees")

    assert HarvesterBase._gen_new_name("Trees", append_type="number-sequence") == "trees1"


def test_gen_new_name_keeps_existing_name():
    _dataset(name="trees")
    _dataset(name="trees1")

    assert HarvesterBase._gen_new_name("Trees", existing_name="trees1") == "trees1"


# --- _get_user_name --------------------------------------------------------------


@pytest.mark.ckan_config("ckanext.harvest.user_name", "configured-user")
def test_get_user_name_from_config(harvester):
    factories.Sysadmin(name="harvest")

    assert harvester._get_user_name() == "configured-user"
    assert harvester._user_name == "configured-user"


def test_get_user_name_harvest_sysadmin(harvester):
    factories.Sysadmin(name="harvest")

    assert harvester._get_user_name() == "harvest"
    assert not hasattr(harvester, "_site_user")


def test_get_user_name_harvest_user_not_sysadmin_means_site_user(harvester):
    factories.User(name="harvest")

    assert harvester._get_user_name() == SITE_USER
    assert harvester._site_user["name"] == SITE_USER


def test_get_user_name_site_user_by_default(harvester):
    name = harvester._get_user_name()

    assert name == SITE_USER
    assert harvester._site_user["name"] == SITE_USER
    assert "name" in harvester._site_user  # 2.11 adds apikey, 2.12 id
    assert model.User.get(SITE_USER).sysadmin is True


def test_get_user_name_is_cached(harvester):
    assert harvester._get_user_name() == SITE_USER
    factories.Sysadmin(name="harvest")

    assert harvester._get_user_name() == SITE_USER


@pytest.mark.ckan_config("ckanext.harvest.user_name", "configured-user")
def test_get_user_name_cached_value_wins_over_config(harvester):
    harvester._user_name = "cached-user"

    assert harvester._get_user_name() == "cached-user"


# --- _create_harvest_objects ---------------------------------------------------


def test_create_harvest_objects(harvester):
    job = _job(_source())

    ids = harvester._create_harvest_objects(["a", "b", "c"], job)

    objects = model.Session.query(HarvestObject).filter(HarvestObject.id.in_(ids)).all()
    assert len(ids) == 3
    assert sorted(obj.guid for obj in objects) == ["a", "b", "c"]
    assert {obj.harvest_job_id for obj in objects} == {job.id}
    assert {obj.harvest_source_id for obj in objects} == {job.source_id}
    assert _gather_errors(job.id) == []


@pytest.mark.parametrize("remote_ids", [[], None])
def test_create_harvest_objects_without_ids(harvester, remote_ids):
    job = _job(_source())

    result = harvester._create_harvest_objects(remote_ids, job)

    assert result is None
    assert _gather_errors(job.id) == ["No remote datasets could be identified"]
    assert model.Session.query(HarvestObject).count() == 0


def test_create_harvest_objects_records_the_exception(harvester):
    job = _job(_source())

    result = harvester._create_harvest_objects([object()], job)

    assert result is None
    [message] = _gather_errors(job.id)
    assert message.startswith("ProgrammingError(")
    assert "can't adapt type" in message
    assert model.Session.query(HarvestObject).count() == 0


# --- _find_existing_package / _clean_tags ----------------------------------------


def test_find_existing_package(harvester):
    dataset = _dataset()

    assert harvester._find_existing_package({"id": dataset["id"]})["name"] == dataset["name"]


def test_find_existing_package_not_found(harvester):
    with pytest.raises(toolkit.ObjectNotFound):
        harvester._find_existing_package({"id": str(uuid.uuid4())})


def test_clean_tags_dicts_keep_order_and_duplicates(harvester):
    tags = [{"name": "some spaces  here"}, {"name": "random:other%characters&_.here"},
            {"name": "some spaces  here", "vocabulary_id": None}]

    result = harvester._clean_tags(tags)

    assert result == [{"name": "some-spaces--here"}, {"name": "randomothercharactershere"},
                      {"name": "some-spaces--here", "vocabulary_id": None}]


def test_clean_tags_strings_are_deduplicated(harvester):
    tags = ["some spaces  here", "random:other%characters&_.here", "some spaces  here"]

    result = harvester._clean_tags(tags)

    assert sorted(result) == ["randomothercharactershere", "some-spaces--here"]


@pytest.mark.parametrize("as_dicts", [True, False])
def test_clean_tags_drops_tags_munged_to_nothing(harvester, monkeypatch, as_dicts):
    # CKAN's munge_tag pads short tags, so an empty result needs a stricter munger.
    monkeypatch.setattr(base, "munge_tag", lambda tag: tag.strip("!"))
    tags = ["keep", "!!!", "also"]

    result = harvester._clean_tags([{"name": t} for t in tags] if as_dicts else tags)

    names = [t["name"] for t in result] if as_dicts else result
    assert sorted(names) == ["also", "keep"]


# --- last_error_free_job -----------------------------------------------------------


def _day(day: int) -> datetime.datetime:
    return datetime.datetime(2024, 1, day)


def test_last_error_free_job_is_the_latest_finished_job():
    source = _source()
    _job(source, started=_day(1))
    latest = _job(source, started=_day(3))
    _job(source, started=_day(2))
    current = _job(source, status=JobStatus.RUNNING.value, started=_day(4))

    assert HarvesterBase.last_error_free_job(current).id == latest.id


def test_last_error_free_job_never_the_job_itself():
    source = _source()
    job = _job(source)

    assert HarvesterBase.last_error_free_job(job) is None


@pytest.mark.parametrize(
    ("status", "started"),
    [
        (JobStatus.RUNNING.value, _day(2)),
        (JobStatus.NEW.value, _day(2)),
        (JobStatus.ABORTED.value, _day(2)),
        (JobStatus.FINISHED.value, None),
    ],
)
def test_last_error_free_job_skips_unfinished_or_ungathered_jobs(status, started):
    source = _source()
    older = _job(source, started=_day(1))
    _job(source, status=status, started=started)

    assert HarvesterBase.last_error_free_job(_job(source, started=_day(5))).id == older.id


def test_last_error_free_job_skips_jobs_with_gather_errors():
    source = _source()
    older = _job(source, started=_day(1))
    failed = _job(source, started=_day(2))
    HarvestGatherError(message="boom", job=failed).save()

    assert HarvesterBase.last_error_free_job(_job(source, started=_day(5))).id == older.id


@pytest.mark.parametrize(
    "report_status", [ReportStatus.ERRORED.value, ReportStatus.DELETED.value]
)
def test_last_error_free_job_skips_jobs_with_non_current_objects(report_status):
    source = _source()
    older = _job(source, started=_day(1))
    _object(_job(source, started=_day(2)), current=False, report_status=report_status)

    assert HarvesterBase.last_error_free_job(_job(source, started=_day(5))).id == older.id


@pytest.mark.parametrize(
    ("current", "report_status"),
    [(False, ReportStatus.NOT_MODIFIED.value), (False, None),
     (True, ReportStatus.ERRORED.value)],
)
def test_last_error_free_job_accepts_harmless_objects(current, report_status):
    source = _source()
    _job(source, started=_day(1))
    job = _job(source, started=_day(2))
    _object(job, current=current, report_status=report_status)

    assert HarvesterBase.last_error_free_job(_job(source, started=_day(5))).id == job.id


def test_last_error_free_job_ignores_other_sources():
    _job(_source("http://other.example.com/"), started=_day(2))

    assert HarvesterBase.last_error_free_job(_job(_source(), started=_day(5))) is None


# --- _create_or_update_package: package_show form --------------------------------


def test_create_package(harvester, harvest_object, remote_dict):
    data = remote_dict(tags=[{"name": "forest"}], extras=[{"key": "a", "value": "1"}])

    result = harvester._create_or_update_package(data, harvest_object, "package_show")

    assert result is True
    dataset = _package(data["id"])
    assert dataset["name"] == "remote-name"
    assert dataset["title"] == "Remote title"
    assert [t["name"] for t in dataset["tags"]] == ["forest"]
    assert _stored_extras(data["id"]) == {"a": "1"}
    assert dataset["creator_user_id"] == model.User.get(SITE_USER).id
    assert tuple(_object_row(harvest_object.id)) == (True, data["id"])
    assert _object_errors(harvest_object.id) == []


def test_create_package_is_indexed(harvester, harvest_object, remote_dict):
    data = remote_dict()

    harvester._create_or_update_package(data, harvest_object, "package_show")

    found = toolkit.get_action("package_search")({}, {"q": "name:remote-name"})
    assert [d["id"] for d in found["results"]] == [data["id"]]


def test_create_package_name_from_title(harvester, harvest_object, remote_dict):
    data = remote_dict(name=None, title="Trees and branches - survey.")

    harvester._create_or_update_package(data, harvest_object, "package_show")

    assert _package(data["id"])["name"] == "trees-and-branches-survey"


def test_create_package_name_made_unique(harvester, harvest_object, remote_dict):
    _dataset(name="remote-name")
    data = remote_dict()

    assert harvester._create_or_update_package(data, harvest_object, "package_show")

    assert _package(data["id"])["name"] == "remote-name1"


@pytest.fixture
def previous(harvester, remote_dict) -> HarvestObject:
    """A dataset created by an earlier import (its object is current)."""
    obj = _object(_job(_source(), started=_day(1)), guid="remote-guid")
    data = remote_dict(name="local-name", title="Old title", notes="Local notes",
                        metadata_modified="2024-01-01T00:00:00")
    assert harvester._create_or_update_package(data, obj, "package_show") is True
    return obj


def _next_object(previous: HarvestObject) -> HarvestObject:
    return _object(_job(previous.source, started=_day(2)), guid=previous.guid)


def test_update_package(harvester, previous, remote_dict):
    new = _next_object(previous)
    data = remote_dict(id=previous.package_id, name="remote-name", title="New title",
                        metadata_modified="2999-02-01T00:00:00")

    result = harvester._create_or_update_package(data, new, "package_show")

    assert result is True
    dataset = _package(previous.package_id)
    assert dataset["title"] == "New title"
    assert dataset["name"] == "local-name"
    assert data["name"] == "local-name"
    assert tuple(_object_row(new.id)) == (True, previous.package_id)
    assert tuple(_object_row(previous.id)) == (False, previous.package_id)


def test_update_package_without_metadata_modified(harvester, previous, remote_dict):
    new = _next_object(previous)
    data = remote_dict(id=previous.package_id, title="New title")

    assert harvester._create_or_update_package(data, new, "package_show") is True

    assert _package(previous.package_id)["title"] == "New title"
    assert tuple(_object_row(previous.id)) == (False, previous.package_id)


def test_update_package_reimporting_the_current_object(harvester, previous, remote_dict):
    data = remote_dict(id=previous.package_id, title="New title")

    assert harvester._create_or_update_package(data, previous, "package_show") is True

    assert tuple(_object_row(previous.id)) == (True, previous.package_id)


# The remote date of the previous import (2024-01-01), then an older one. (On CKAN
# 2.12 the local copy keeps the remote date; CKAN 2.11 stamps the import time.)
@pytest.mark.parametrize("modified", ["2024-01-01T00:00:00", "2000-01-01T00:00:00"])
def test_update_package_unchanged(harvester, previous, modified, remote_dict):
    new = _next_object(previous)
    data = remote_dict(id=previous.package_id, title="New title",
                        metadata_modified=modified)

    result = harvester._create_or_update_package(data, new, "package_show")

    assert result == "unchanged"
    assert data["name"] == "local-name"
    assert _package(previous.package_id)["title"] == "Old title"
    assert tuple(_object_row(new.id)) == (False, None)
    assert tuple(_object_row(previous.id)) == (True, previous.package_id)


@pytest.mark.ckan_config("ckan.harvest.not_overwrite_fields", "notes author")
def test_update_package_keeps_not_overwrite_fields(harvester, previous, remote_dict):
    new = _next_object(previous)
    data = remote_dict(id=previous.package_id, title="New title", notes="Remote notes",
                        author="Remote author")

    assert harvester._create_or_update_package(data, new, "package_show") is True

    dataset = _package(previous.package_id)
    assert dataset["title"] == "New title"
    assert dataset["notes"] == "Local notes"
    assert dataset["author"] is None


def _resources_by_id(package_id: str) -> dict[str, dict[str, Any]]:
    model.Session.remove()
    return {r["id"]: r for r in _package(package_id)["resources"]}


@pytest.mark.parametrize("url_type", ["shown", "dropped"])
def test_update_package_keeps_unchanged_resources_as_stored(harvester, remote_dict,
                                                            url_type):
    first = _object(_job(_source(), started=_day(1)), guid="remote-guid")
    kept, edited, dropped = (str(uuid.uuid4()) for _ in range(3))
    remote = remote_dict(metadata_modified="2024-01-01T00:00:00", resources=[
        {"id": kept, "url": "http://remote.example.com/a.csv", "name": "A",
         "format": "CSV", "metadata_modified": "2024-01-01T00:00:00"},
        {"id": edited, "url": "http://remote.example.com/b.csv", "name": "B",
         "format": "CSV", "metadata_modified": "2024-01-01T00:00:00"},
        {"id": dropped, "url": "http://remote.example.com/c.csv", "name": "C"},
    ])
    assert harvester._create_or_update_package(remote, first, "package_show") is True
    before = _resources_by_id(remote["id"])
    # The remote's next version, as package_show serves it: the kept resource's
    # metadata_modified is the remote's own, as in any harvested dict. The CKAN
    # harvester drops url_type (None here) from every harvested resource.
    kept_dict = dict(before[kept], metadata_modified="2024-01-01T00:00:00", position=0)
    if url_type == "dropped":
        assert kept_dict.pop("url_type") is None
    data = remote_dict(id=remote["id"], title="New title",
                       metadata_modified="2999-02-01T00:00:00", resources=[
        {"id": edited, "url": "http://remote.example.com/b2.csv", "name": "B",
         "format": "CSV", "metadata_modified": "2999-02-01T00:00:00"},
        kept_dict,
        {"id": None, "url": "http://remote.example.com/d.csv", "name": "D"},
    ])

    assert harvester._create_or_update_package(
        data, _next_object(first), "package_show") is True
    # The lookup kept the dataset's row loaded for the update, not beyond it.
    assert not model.Session().info.get("ckanext.harvest.kept_package")

    after = _resources_by_id(remote["id"])
    assert dropped not in after
    assert after[kept] == dict(before[kept], position=1)
    assert after[edited]["url"] == "http://remote.example.com/b2.csv"
    assert after[edited]["metadata_modified"] > before[edited]["metadata_modified"]
    assert [r["name"] for r in _package(remote["id"])["resources"]] == ["B", "A", "D"]
    assert _package(remote["id"])["title"] == "New title"


def test_reuse_unchanged_resources_needs_every_stored_key():
    stored = {"id": "r1", "url": "http://x/a", "name": "A", "size": 3,
              "metadata_modified": "2024-01-02T00:00:00", "position": 0}
    existing = {"id": "d", "title": "Old", "resources": [stored]}
    harvested = {"id": "r1", "url": "http://x/a", "name": "A",
                 "metadata_modified": "2024-01-01T00:00:00", "position": 0}
    data = {"id": "d", "title": "New", "resources": [harvested]}

    assert _package_helpers.reuse_unchanged_resources(data, existing) == 0
    assert data["resources"][0] is harvested

    harvested["size"] = 3
    assert _package_helpers.reuse_unchanged_resources(data, existing) == 1
    assert data["resources"][0] is stored


def test_reuse_unchanged_resources_takes_a_missing_column_for_its_stored_none():
    stored = {"id": "r1", "url": "http://x/a", "url_type": None, "size": None,
              "metadata_modified": "2024-01-02T00:00:00", "position": 0}
    existing = {"id": "d", "title": "Old", "resources": [stored]}
    harvested = {"id": "r1", "url": "http://x/a", "position": 0}
    data = {"id": "d", "title": "New", "resources": [harvested]}

    assert _package_helpers.reuse_unchanged_resources(data, existing) == 1
    assert data["resources"][0] is stored

    # A stored extra (not a column) missing from the harvested resource would be
    # deleted by the save, and a stored value that is not None overwritten.
    for key, value in (("an_extra", None), ("url_type", "upload")):
        data["resources"] = [harvested]
        existing["resources"] = [dict(stored, **{key: value})]
        assert _package_helpers.reuse_unchanged_resources(data, existing) == 0
        assert data["resources"][0] is harvested


def test_reuse_unchanged_resources_not_when_package_update_would_write_nothing():
    stored = {"id": "r1", "url": "http://x/a", "metadata_modified": "2024-01-02T00:00:00"}
    existing = {"id": "d", "title": "Same", "resources": [stored]}
    harvested = dict(stored, metadata_modified="2024-01-01T00:00:00")
    data = {"id": "d", "title": "Same", "resources": [harvested]}

    assert _package_helpers.reuse_unchanged_resources(data, existing) == 0
    assert data["resources"][0] is harvested


def test_validation_error(harvester, harvest_object, remote_dict):
    data = remote_dict(author_email="not an email")

    result = harvester._create_or_update_package(data, harvest_object, "package_show")

    assert result is None
    [(message, stage)] = _object_errors(harvest_object.id)
    assert message.startswith("Invalid package with GUID remote-guid: {")
    assert "author_email" in message
    assert stage == "Import"
    assert model.Session.query(model.Package).filter_by(id=data["id"]).count() == 0
    assert tuple(_object_row(harvest_object.id)) == (False, None)


def test_update_validation_error_leaves_previous_current(harvester, previous, remote_dict):
    new = _next_object(previous)
    data = remote_dict(id=previous.package_id, author_email="not an email")

    assert harvester._create_or_update_package(data, new, "package_show") is None

    [(message, stage)] = _object_errors(new.id)
    assert message.startswith("Invalid package with GUID remote-guid: {")
    assert stage == "Import"
    assert tuple(_object_row(new.id)) == (False, None)
    assert tuple(_object_row(previous.id)) == (True, previous.package_id)


def test_other_exception_is_recorded_with_repr(harvester, harvest_object, monkeypatch, remote_dict):
    def broken(package_dict):
        raise RuntimeError("remote exploded")

    monkeypatch.setattr(harvester, "_find_existing_package", broken)

    result = harvester._create_or_update_package(remote_dict(), harvest_object, "package_show")

    assert result is None
    assert _object_errors(harvest_object.id) == [("RuntimeError('remote exploded')", "Import")]


def test_failure_after_the_object_was_flushed_is_recorded(harvester, harvest_object,
                                                          monkeypatch, remote_dict):
    real_get_action = toolkit.get_action

    def get_action(name):
        if name != "package_create":
            return real_get_action(name)

        def package_create(context, data_dict):
            raise RuntimeError("search index down")
        return package_create

    monkeypatch.setattr(toolkit, "get_action", get_action)
    data = remote_dict()

    result = harvester._create_or_update_package(data, harvest_object, "package_show")

    assert result is None
    assert _object_errors(harvest_object.id) == [
        ("RuntimeError('search index down')", "Import")
    ]
    assert tuple(_object_row(harvest_object.id)) == (False, None)


@pytest.mark.parametrize("api_version", ["two", None])
def test_api_version_must_be_an_integer(harvester, harvest_object, api_version, remote_dict):
    harvester.config = {"api_version": api_version}
    data = remote_dict()

    assert harvester._create_or_update_package(data, harvest_object, "package_show") is None

    assert _object_errors(harvest_object.id) == [
        ("ValueError('api_version must be an integer')", "Import")
    ]
    assert model.Session.query(model.Package).filter_by(id=data["id"]).count() == 0


def test_unknown_form_is_rejected(harvester, harvest_object, remote_dict):
    with pytest.raises(AssertionError):
        harvester._create_or_update_package(remote_dict(), harvest_object, "dcat")


def test_clean_tags_config(harvester, harvest_object, remote_dict):
    harvester.config = {"clean_tags": True}
    data = remote_dict(tags=[{"name": "some spaces  here"},
                              {"name": "random:other%characters&_.here"}])

    assert harvester._create_or_update_package(data, harvest_object, "package_show") is True

    tags = sorted(t["name"] for t in _package(data["id"])["tags"])
    assert tags == ["randomothercharactershere", "some-spaces--here"]


def test_without_clean_tags_bad_tags_are_a_validation_error(harvester, harvest_object, remote_dict):
    data = remote_dict(tags=[{"name": "random:other%characters&_.here"}])

    assert harvester._create_or_update_package(data, harvest_object, "package_show") is None

    [(message, _stage)] = _object_errors(harvest_object.id)
    assert "'tags'" in message


# --- _create_or_update_package: rest form ------------------------------------------


def test_rest_form_is_the_default_and_is_mapped(harvester, harvest_object, remote_dict):
    group = factories.Group()
    data = remote_dict(extras={"spatial": "somewhere", "lang": "en"},
                        tags=["forest", "trees"], groups=[group["id"]])

    result = harvester._create_or_update_package(data, harvest_object)

    assert result is True
    dataset = _package(data["id"])
    assert sorted(t["name"] for t in dataset["tags"]) == ["forest", "trees"]
    assert _stored_extras(data["id"]) == {"lang": "en", "spatial": "somewhere"}
    assert [g["name"] for g in dataset["groups"]] == [group["name"]]
    assert tuple(_object_row(harvest_object.id)) == (True, data["id"])


def test_rest_form_api_version_1_groups_are_names(harvester, harvest_object, remote_dict):
    group = factories.Group()
    harvester.config = {"api_version": 1}
    data = remote_dict(groups=[group["name"]], tags="forest trees")

    assert harvester._create_or_update_package(data, harvest_object, "rest") is True

    dataset = _package(data["id"])
    assert [g["id"] for g in dataset["groups"]] == [group["id"]]
    assert sorted(t["name"] for t in dataset["tags"]) == ["forest", "trees"]


def test_rest_form_download_url_becomes_a_resource(harvester, harvest_object, remote_dict):
    data = remote_dict(download_url="http://remote.example.com/data.csv")

    assert harvester._create_or_update_package(data, harvest_object, "rest") is True

    resources = _package(data["id"])["resources"]
    assert [r["url"] for r in resources] == ["http://remote.example.com/data.csv"]


def test_rest_form_update_merges_extras(harvester, harvest_object, remote_dict):
    data = remote_dict(extras={"a": "1", "b": "2"})
    assert harvester._create_or_update_package(data, harvest_object, "rest") is True
    new = _next_object(harvest_object)

    update = remote_dict(id=data["id"], extras={"b": "3", "c": "4"})
    assert harvester._create_or_update_package(update, new, "rest") is True

    assert _stored_extras(data["id"]) == {"a": "1", "b": "3", "c": "4"}
    assert tuple(_object_row(new.id)) == (True, data["id"])
    assert tuple(_object_row(harvest_object.id)) == (False, data["id"])


def test_rest_form_clean_tags(harvester, harvest_object, remote_dict):
    harvester.config = {"clean_tags": True}
    data = remote_dict(tags=["some spaces  here", "some spaces  here", "Random:Tag"])

    assert harvester._create_or_update_package(data, harvest_object, "rest") is True

    tags = sorted(t["name"] for t in _package(data["id"])["tags"])
    assert tags == ["randomtag", "some-spaces--here"]


# --- content hashes ---------------------------------------------------------------


def _extras_of(obj: HarvestObject) -> dict[str, Optional[str]]:
    rows = model.Session.query(HarvestObjectExtra).filter_by(harvest_object_id=obj.id)
    return {row.key: row.value for row in rows}


def _content(**fields: Any) -> str:
    return json.dumps(dict({"title": "Remote title", "notes": "n"}, **fields))


@pytest.fixture
def hashed(harvester, remote_dict) -> HarvestObject:
    """A dataset created by an earlier import of an object with content."""
    obj = _object(_job(_source(), started=_day(1)), guid="remote-guid", content=_content())
    data = remote_dict(name="local-name", title="Old title",
                       metadata_modified="2024-01-01T00:00:00")
    assert harvester._create_or_update_package(data, obj, "package_show") is True
    return obj


def _again(previous: HarvestObject, content: Optional[str] = None,
           **job_fields: Any) -> HarvestObject:
    job = _job(previous.source, started=_day(2), **job_fields)
    return _object(job, guid=previous.guid, content=content or previous.content)


def test_an_import_records_the_content_hash_and_the_local_date(harvester, hashed):
    package = model.Package.get(hashed.package_id)

    assert _extras_of(hashed) == {
        hashes.HASH_KEY: hashes.record_hash(hashed.content, None, harvester),
        hashes.LOCAL_MODIFIED_KEY: package.metadata_modified.isoformat(),
    }


def test_same_content_is_not_written_even_with_a_newer_remote_date(
        harvester, hashed, remote_dict):
    new = _again(hashed)
    data = remote_dict(id=hashed.package_id, title="New title",
                       metadata_modified="2999-01-01T00:00:00")

    assert harvester._create_or_update_package(data, new, "package_show") == "unchanged"

    assert _package(hashed.package_id)["title"] == "Old title"
    assert tuple(_object_row(new.id)) == (False, None)
    assert _extras_of(new) == {}


def test_new_content_is_written_even_with_the_same_remote_date(
        harvester, hashed, remote_dict):
    new = _again(hashed, _content(title="New title"))
    data = remote_dict(id=hashed.package_id, title="New title",
                       metadata_modified="2024-01-01T00:00:00")

    assert harvester._create_or_update_package(data, new, "package_show") is True

    assert _package(hashed.package_id)["title"] == "New title"
    assert tuple(_object_row(new.id)) == (True, hashed.package_id)
    assert _extras_of(new)[hashes.HASH_KEY] != _extras_of(hashed)[hashes.HASH_KEY]
    # Recorded in the update's own transaction, with the date it committed.
    model.Session.expire_all()
    assert _extras_of(new)[hashes.LOCAL_MODIFIED_KEY] == (
        model.Package.get(hashed.package_id).metadata_modified.isoformat())
    assert harvester._create_or_update_package(
        data, _again(new), "package_show") == "unchanged"


@pytest.mark.parametrize("change", ["source config", "local edit", "forced job"])
def test_same_content_is_written_again_after(harvester, hashed, remote_dict, change):
    if change == "source config":
        hashed.source.config = '{"default_tags": ["x"]}'
        hashed.source.save()
    elif change == "local edit":
        toolkit.get_action("package_patch")(
            {"ignore_auth": True, "user": SITE_USER},
            {"id": hashed.package_id, "notes": "Edited here"})
    new = _again(hashed)
    if change == "forced job":
        hashes.mark_forced(new.harvest_job_id)
    data = remote_dict(id=hashed.package_id, title="New title",
                       metadata_modified="2024-01-01T00:00:00")

    assert harvester._create_or_update_package(data, new, "package_show") is True

    assert _package(hashed.package_id)["title"] == "New title"
    assert tuple(_object_row(new.id)) == (True, hashed.package_id)
    assert tuple(_object_row(hashed.id)) == (False, hashed.package_id)


def test_gather_finishes_the_objects_of_unchanged_records(harvester, hashed):
    job = _job(hashed.source, status=JobStatus.RUNNING.value, started=_day(2))

    ids = harvester._create_hashed_objects(
        [(hashed.guid, hashed.content), ("other-guid", _content())], job)

    objects = {obj.guid: obj for obj in model.Session.query(HarvestObject)
               .filter_by(harvest_job_id=job.id)}
    assert ids == [objects["other-guid"].id]
    assert objects["other-guid"].state == "WAITING"
    unchanged = objects[hashed.guid]
    assert (unchanged.state, unchanged.report_status, unchanged.current) == (
        "COMPLETE", ReportStatus.NOT_MODIFIED.value, False)
    assert unchanged.import_finished is not None


@pytest.mark.parametrize("change", ["content", "forced job"])
def test_gather_queues_changed_records_and_those_of_forced_jobs(harvester, hashed, change):
    job = _job(hashed.source, status=JobStatus.RUNNING.value, started=_day(2))
    content = hashed.content
    if change == "forced job":
        hashes.mark_forced(job.id)
    else:
        content = _content(title="Changed")

    ids = harvester._create_hashed_objects([(hashed.guid, content)], job)

    [obj] = model.Session.query(HarvestObject).filter_by(harvest_job_id=job.id)
    assert ids == [obj.id] and obj.state == "WAITING"


def test_a_record_unchanged_by_date_adopts_a_hash_for_the_next_gather(
        harvester, previous, remote_dict):
    """``previous`` was imported without a hash (as before an upgrade)."""
    new = _again(previous, _content())
    data = remote_dict(id=previous.package_id, title="New title",
                       metadata_modified="2024-01-01T00:00:00")

    assert harvester._create_or_update_package(data, new, "package_show") == "unchanged"
    new.save()  # as the stage driver does with the report status

    assert _extras_of(previous)[hashes.HASH_KEY] == hashes.record_hash(
        new.content, None, harvester)
    job = _job(previous.source, status=JobStatus.RUNNING.value, started=_day(3))
    assert harvester._create_hashed_objects([(previous.guid, new.content)], job) == []
    assert _package(previous.package_id)["title"] == "Old title"
