"""Secrets in source configurations are write-only.

``api_key`` (and the keys a harvester lists in ``secret_config_keys``: the
test harvester lists ``password``) are shown only to sysadmins and the admins
of the source's organisation; everyone else, the search index and e-mails see
``********``; saving a configuration that carries ``********`` keeps the stored
secret.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

import pytest
from ckan import model
from ckan.plugins import toolkit
from ckan.tests import factories

from ckanext.harvest.lib import mail
from ckanext.harvest.lib.secret_config import REDACTED
from ckanext.harvest.model import HarvestSource
from ckanext.harvest.tests import factories as harvest_factories
from tests.support.marks import harvest_site

pytestmark = harvest_site("harvest test_harvester ckan_harvester")

SECRET = "s3cr3t-t0ken-value"
CONFIG = {"api_key": SECRET, "password": "pa55word-value", "default_tags": ["a"]}


@dataclass
class World:
    source: dict[str, Any]
    org: dict[str, Any]
    users: dict[str, Optional[str]]

    @property
    def stored(self) -> dict[str, Any]:
        model.Session.remove()
        row = HarvestSource.get(self.source["id"])
        return json.loads(row.config)


@pytest.fixture
def world() -> World:
    users = {role: factories.User()["name"]
             for role in ("admin", "editor", "member", "other_admin", "nobody")}
    org = factories.Organization(users=[
        {"name": users["admin"], "capacity": "admin"},
        {"name": users["editor"], "capacity": "editor"},
        {"name": users["member"], "capacity": "member"},
    ])
    factories.Organization(users=[{"name": users["other_admin"], "capacity": "admin"}])
    source = harvest_factories.HarvestSource(
        source_type="test", owner_org=org["id"], config=json.dumps(CONFIG)
    )
    all_users: dict[str, Optional[str]] = dict(users)
    all_users["sysadmin"] = factories.Sysadmin()["name"]
    all_users["anonymous"] = None
    return World(source, org, all_users)


def _call(action: str, user: Optional[str], **data: Any) -> Any:
    model.Session.remove()
    return toolkit.get_action(action)({"user": user or ""}, data)


PRIVILEGED = ("sysadmin", "admin")
OTHERS = ("editor", "member", "other_admin", "nobody", "anonymous")


def _config_of(source: dict[str, Any]) -> dict[str, Any]:
    return json.loads(source["config"])


def test_show_redacts_for_everyone_but_sysadmins_and_org_admins(world: World) -> None:
    for action in ("harvest_source_show", "package_show"):
        for role in PRIVILEGED:
            shown = _call(action, world.users[role], id=world.source["id"])
            assert _config_of(shown) == CONFIG, (action, role)
        for role in OTHERS:
            shown = _call(action, world.users[role], id=world.source["name"])
            assert _config_of(shown) == {
                "api_key": REDACTED, "password": REDACTED, "default_tags": ["a"]
            }, (action, role)
            assert SECRET not in json.dumps(shown)


def test_list_redacts_per_source(world: World) -> None:
    for role, expected in (("sysadmin", SECRET), ("admin", SECRET), ("editor", REDACTED)):
        listed = _call("harvest_source_list", world.users[role])
        assert [_config_of(s)["api_key"] for s in listed] == [expected], role


def test_the_search_index_never_holds_secrets(world: World) -> None:
    for role in ("sysadmin", "anonymous"):
        found = _call("package_search", world.users[role], fq="+dataset_type:harvest",
                      include_private=True)
        assert found["count"] == 1
        assert SECRET not in json.dumps(found), role
        assert _config_of(found["results"][0])["api_key"] == REDACTED
        # Nor can the value be searched for.
        probe = _call("package_search", world.users[role], q=SECRET,
                      fq="+dataset_type:harvest")
        assert probe["count"] == 0


def test_sysadmins_see_the_secret_even_from_the_cached_dict(world: World) -> None:
    # package_show may answer from the search index (redacted): the real value
    # comes back from the database for those who may see it.
    shown = _call("package_show", world.users["sysadmin"], id=world.source["id"],
                  use_default_schema=False)
    assert _config_of(shown)["api_key"] == SECRET


def test_saving_a_redacted_config_keeps_the_stored_secrets(world: World) -> None:
    editor = world.users["editor"]
    shown = _call("harvest_source_show", editor, id=world.source["id"])
    config = _config_of(shown)
    config["default_tags"] = ["b"]
    shown["config"] = json.dumps(config)
    _call("harvest_source_update", editor, **shown)
    assert world.stored == dict(CONFIG, default_tags=["b"])
    # A patch that does not mention config keeps it too.
    _call("harvest_source_patch", editor, id=world.source["id"], title="New title")
    assert world.stored == dict(CONFIG, default_tags=["b"])


def test_secrets_stay_writable(world: World) -> None:
    editor = world.users["editor"]
    new_config = dict(CONFIG, api_key="a-new-key", password=REDACTED)
    _call("harvest_source_patch", editor, id=world.source["id"],
          config=json.dumps(new_config))
    assert world.stored == dict(CONFIG, api_key="a-new-key")
    shown = _call("harvest_source_show", editor, id=world.source["id"])
    assert _config_of(shown)["api_key"] == REDACTED


def test_a_redacted_value_without_a_stored_one_is_dropped(world: World) -> None:
    source = harvest_factories.HarvestSource(
        source_type="test", owner_org=world.org["id"],
        config=json.dumps({"password": REDACTED, "x": 1}),
    )
    model.Session.remove()
    assert json.loads(HarvestSource.get(source["id"]).config) == {"x": 1}


def test_status_mails_never_contain_secrets(world: World) -> None:
    job = harvest_factories.HarvestJobObj(source_id=world.source["id"])
    job.status = "Finished"
    job.save()
    status = toolkit.get_action("harvest_source_show_status")(
        {"ignore_auth": True}, {"id": world.source["id"]}
    )
    extra_vars = mail.get_mail_extra_vars({}, world.source["id"], status)
    configuration = json.loads(extra_vars["harvest_configuration"])
    assert configuration["api_key"] == REDACTED
    assert configuration["password"] == REDACTED
    assert SECRET not in json.dumps(extra_vars, default=str)
