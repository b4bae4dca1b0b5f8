"""Who may call which harvest function: the auth registry, role by role.

The expected tables below are written out by hand from ``auth.md``, the
project's decisions on quirks Q1-Q9 and CKAN's own package_create / update /
delete / show rules (org editors and admins may create, update and delete the
organisation's datasets, members may only read its private ones, sysadmins
may do anything). They are data, not derived from the code under test.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import pytest
from ckan import model, plugins
from ckan.plugins import toolkit
from ckan.tests import factories
from ckan.tests.helpers import call_auth

from ckanext.harvest.logic import auth as harvest_auth
from ckanext.harvest.logic.action import create as action_create
from ckanext.harvest.logic.action import update as action_update
from ckanext.harvest.model import HarvestJob, HarvestObject, HarvestSource
from tests.support.world import ROLES, World, WorldSite

pytestmark = pytest.mark.usefixtures("world")

# Every test of this module runs with these plugins (loaded once for the module
# by ``harvest_site``) on a fresh world: the database is reset and the world
# built once, and only rebuilt after a test changed it (see ``world``).
PLUGINS = "harvest test_harvester test_harvester2"

Y, N = True, False


@pytest.fixture
def app(harvest_site: WorldSite) -> Any:
    """The module's test app, with a fresh client (no cookies of earlier tests)."""
    harvest_site.app.client = harvest_site.app.test_client()
    return harvest_site.app


DataBuilder = Callable[[World], dict[str, Any]]


def _source(w: World) -> dict[str, Any]:
    return {"id": w.source_id}


def _private_source(w: World) -> dict[str, Any]:
    return {"id": w.private_source_id}


def _nothing(w: World) -> dict[str, Any]:
    return {}


# (row id, auth name, data_dict builder, expected per role in ROLES order)
#                                                                   (an us me ed ad ot sy)
AUTH_MATRIX: list[tuple[str, str, DataBuilder, tuple[bool, ...]]] = [
    ("harvest_source_create", "harvest_source_create",
     lambda w: {"owner_org": w.org_id},                             (N, N, N, Y, Y, N, Y)),
    # test-core.ini sets ckan.auth.create_unowned_dataset = true
    ("harvest_source_create[unowned]", "harvest_source_create",
     _nothing,                                                      (N, Y, Y, Y, Y, Y, Y)),
    ("harvest_job_create", "harvest_job_create",
     lambda w: {"source_id": w.source_id},                          (N, N, N, Y, Y, N, Y)),
    ("harvest_job_create_all", "harvest_job_create_all",
     _nothing,                                                      (N, N, N, N, N, N, Y)),
    ("harvest_object_create", "harvest_object_create",
     lambda w: {"job_id": w.job_id, "guid": "new"},                 (N, N, N, N, N, N, Y)),
    ("harvest_source_delete", "harvest_source_delete",
     _source,                                                       (N, N, N, Y, Y, N, Y)),
    ("harvest_source_show", "harvest_source_show",
     _source,                                                       (Y, Y, Y, Y, Y, Y, Y)),
    ("harvest_source_show_status", "harvest_source_show_status",
     _source,                                                       (Y, Y, Y, Y, Y, Y, Y)),
    ("harvest_source_list", "harvest_source_list",
     _nothing,                                                      (Y, Y, Y, Y, Y, Y, Y)),
    ("harvest_job_show", "harvest_job_show",
     lambda w: {"id": w.job_id},                                    (N, N, N, Y, Y, N, Y)),
    ("harvest_job_error_report", "harvest_job_error_report",
     lambda w: {"id": w.job_id},                                    (N, N, N, Y, Y, N, Y)),
    ("harvest_source_preview", "harvest_source_preview",
     lambda w: {"id": w.source_id},                                 (N, N, N, Y, Y, N, Y)),
    ("harvest_job_list", "harvest_job_list",
     lambda w: {"source_id": w.source_id},                          (N, N, N, Y, Y, N, Y)),
    # Q9: without source_id only sysadmins may list jobs, others get a clean 403
    ("harvest_job_list[no source_id]", "harvest_job_list",
     _nothing,                                                      (N, N, N, N, N, N, Y)),
    ("harvest_object_show", "harvest_object_show",
     lambda w: {"id": w.object_id},                                 (Y, Y, Y, Y, Y, Y, Y)),
    ("harvest_object_list", "harvest_object_list",
     lambda w: {"source_id": w.source_id},                          (N, Y, Y, Y, Y, Y, Y)),
    ("harvesters_info_show", "harvesters_info_show",
     _nothing,                                                      (Y, Y, Y, Y, Y, Y, Y)),
    ("harvest_get_notifications_recipients", "harvest_get_notifications_recipients",
     lambda w: {"source_id": w.source_id},                          (N, N, N, N, N, N, Y)),
    # Q3: sysadmin-only auth of its own
    ("harvest_log_list", "harvest_log_list",
     _nothing,                                                      (N, N, N, N, N, N, Y)),
    # Q4: alias of harvest_source_update
    ("harvest_source_patch", "harvest_source_patch",
     _source,                                                       (N, N, N, Y, Y, N, Y)),
    ("harvest_source_update", "harvest_source_update",
     _source,                                                       (N, N, N, Y, Y, N, Y)),
    ("harvest_source_clear", "harvest_source_clear",
     _source,                                                       (N, N, N, Y, Y, N, Y)),
    # issue 15: follows harvest_source_update
    ("harvest_source_detach", "harvest_source_detach",
     _source,                                                       (N, N, N, Y, Y, N, Y)),
    ("harvest_sources_clear", "harvest_sources_clear",
     _nothing,                                                      (N, N, N, N, N, N, Y)),
    ("harvest_objects_import", "harvest_objects_import",
     lambda w: {"source_id": w.source_id},                          (N, N, N, N, N, N, Y)),
    ("harvest_jobs_run", "harvest_jobs_run",
     _nothing,                                                      (N, N, N, N, N, N, Y)),
    # receives the job dict, which carries source_id
    ("harvest_send_job_to_gather_queue", "harvest_send_job_to_gather_queue",
     lambda w: {"id": w.job_id, "source_id": w.source_id},          (N, N, N, Y, Y, N, Y)),
    # Q8: follows harvest_source_update (the action passes the job id and its source id)
    ("harvest_job_abort", "harvest_job_abort",
     lambda w: {"id": w.job_id, "source_id": w.source_id},          (N, N, N, Y, Y, N, Y)),
    # delete_missing: like the job and its source
    ("harvest_job_approve_removals", "harvest_job_approve_removals",
     lambda w: {"id": w.job_id},                                    (N, N, N, Y, Y, N, Y)),
    ("harvest_job_removals_show", "harvest_job_removals_show",
     lambda w: {"id": w.job_id},                                    (N, N, N, Y, Y, N, Y)),
    # issue 17: job progress like the job; the health page for sysadmins
    ("harvest_job_progress", "harvest_job_progress",
     lambda w: {"id": w.job_id},                                    (N, N, N, Y, Y, N, Y)),
    ("harvest_health_show", "harvest_health_show",
     _nothing,                                                      (N, N, N, N, N, N, Y)),
    # issue 17: a pure computation, open to all
    ("harvest_schedule_preview", "harvest_schedule_preview",
     lambda w: {"schedule": "0 3 * * *"},                           (Y, Y, Y, Y, Y, Y, Y)),
    # Q5: sysadmin only
    ("harvest_abort_failed_jobs", "harvest_abort_failed_jobs",
     lambda w: {"life_span": 7},                                    (N, N, N, N, N, N, Y)),
    ("harvest_sources_reindex", "harvest_sources_reindex",
     _nothing,                                                      (N, N, N, N, N, N, Y)),
    # Q5: harvest_source_update permission
    ("harvest_source_reindex", "harvest_source_reindex",
     _source,                                                       (N, N, N, Y, Y, N, Y)),
    # A private source of the same organisation: only its members (and sysadmins)
    # may read it; updating still needs an editor or admin.
    ("harvest_source_show[private]", "harvest_source_show",
     _private_source,                                               (N, N, Y, Y, Y, N, Y)),
    ("harvest_source_show_status[private]", "harvest_source_show_status",
     _private_source,                                               (N, N, Y, Y, Y, N, Y)),
    ("harvest_source_update[private]", "harvest_source_update",
     _private_source,                                               (N, N, N, Y, Y, N, Y)),
    ("harvest_source_delete[private]", "harvest_source_delete",
     _private_source,                                               (N, N, N, Y, Y, N, Y)),
    ("harvest_job_create[private]", "harvest_job_create",
     lambda w: {"source_id": w.private_source_id},                  (N, N, N, Y, Y, N, Y)),
    ("harvest_job_show[private]", "harvest_job_show",
     lambda w: {"id": w.private_job_id},                            (N, N, N, Y, Y, N, Y)),
    ("harvest_job_list[private]", "harvest_job_list",
     lambda w: {"source_id": w.private_source_id},                  (N, N, N, Y, Y, N, Y)),
]

EXPECTED_AUTH_NAMES = {
    # every name of auth.md
    "harvest_source_create", "harvest_job_create", "harvest_job_create_all",
    "harvest_object_create", "harvest_source_delete", "harvest_source_show",
    "harvest_source_show_status", "harvest_source_list", "harvest_job_show",
    "harvest_job_list", "harvest_object_show", "harvest_object_list",
    "harvesters_info_show", "harvest_get_notifications_recipients",
    "harvest_source_update", "harvest_source_clear", "harvest_sources_clear",
    "harvest_objects_import", "harvest_jobs_run", "harvest_send_job_to_gather_queue",
    "harvest_job_abort", "harvest_sources_reindex", "harvest_source_reindex",
    # the project's decisions (Q3, Q4, Q5)
    "harvest_log_list", "harvest_source_patch", "harvest_abort_failed_jobs",
    # the project's additions
    "harvest_job_error_report", "harvest_source_preview",
    "harvest_source_detach",
    # delete_missing (issue 15)
    "harvest_job_approve_removals", "harvest_job_removals_show",
    # issue 17
    "harvest_job_progress", "harvest_health_show",
    # cron schedules (issue 17)
    "harvest_schedule_preview",
}

EXPECTED_ACTION_NAMES = {
    "harvest_source_create", "harvest_source_update", "harvest_source_patch",
    "harvest_source_delete", "harvest_source_show", "harvest_source_show_status",
    "harvest_source_list", "harvest_source_clear", "harvest_source_index_clear",
    "harvest_source_job_history_clear", "harvest_sources_job_history_clear",
    "harvest_source_reindex", "harvest_sources_reindex", "harvest_job_create",
    "harvest_job_create_all", "harvest_send_job_to_gather_queue", "harvest_job_show",
    "harvest_job_list", "harvest_job_report", "harvest_job_abort",
    "harvest_abort_failed_jobs", "harvest_jobs_run", "harvest_objects_import",
    "harvest_object_create", "harvest_object_show", "harvest_object_list",
    "harvesters_info_show", "harvest_log_list", "harvest_get_notifications_recipients",
    # the project's additions
    "harvest_job_error_report", "harvest_source_preview",
    "harvest_source_detach",
    "harvest_job_approve_removals", "harvest_job_removals_show",
    # issue 17
    "harvest_job_progress", "harvest_health_show",
    "harvest_schedule_preview",
}

ANONYMOUS_ALLOWED = {
    "harvest_source_show", "harvest_source_show_status", "harvest_source_list",
    "harvest_object_show", "harvesters_info_show", "harvest_schedule_preview",
}


def _cells(matrix: list[tuple[str, str, DataBuilder, tuple[bool, ...]]]) -> list[Any]:
    return [
        pytest.param(auth_name, build, role, expected[index], id="{}-{}".format(row, role))
        for row, auth_name, build, expected in matrix
        for index, role in enumerate(ROLES)
    ]


def _is_authorized(auth_name: str, user: str, data_dict: dict[str, Any]) -> bool:
    try:
        return call_auth(auth_name, {"user": user}, **data_dict)
    except toolkit.NotAuthorized:
        return False


def _refusal(auth_name: str, user: str, data_dict: dict[str, Any]) -> Optional[str]:
    """The NotAuthorized message, or None when the call was allowed."""
    try:
        call_auth(auth_name, {"user": user}, **data_dict)
    except toolkit.NotAuthorized as e:
        return str(e)
    return None


def _plugin() -> Any:
    return plugins.get_plugin("harvest")


# ---------------------------------------------------------------------------
# 1. The auth matrix through check_access
# ---------------------------------------------------------------------------

class TestAuthMatrix:
    def test_registered_auth_names_are_exactly_those_of_auth_md_and_the_decisions(self):
        registered = set(_plugin().get_auth_functions())

        assert registered == EXPECTED_AUTH_NAMES

    def test_matrix_covers_every_registered_auth_name(self):
        covered = {auth_name for _row, auth_name, _build, _exp in AUTH_MATRIX}

        assert covered == set(_plugin().get_auth_functions())

    @pytest.mark.parametrize("auth_name, build, role, expected", _cells(AUTH_MATRIX))
    def test_role_is_allowed_or_denied(self, world, auth_name, build, role, expected):
        allowed = _is_authorized(auth_name, world.users[role], build(world))

        assert allowed is expected

    def test_job_abort_with_only_a_job_id_follows_the_jobs_source(self, world):
        # Q8: "users who may update the source may stop its job"; `id` alone is
        # the action's own parameter shape (`harvest_job_abort({'id': job_id})`)
        allowed = _is_authorized(
            "harvest_job_abort", world.users["editor"], {"id": world.job_id}
        )

        assert allowed is True


class TestAuthMessages:
    @pytest.mark.parametrize("auth_name, role, data_key, template", [
        ("harvest_source_update", "other_admin", "source_id",
         "User {user} not authorized to update harvest source {id}"),
        ("harvest_source_patch", "member", "source_id",
         "User {user} not authorized to update harvest source {id}"),
        ("harvest_source_reindex", "user", "source_id",
         "User {user} not authorized to update harvest source {id}"),
        ("harvest_source_delete", "user", "source_id",
         "User {user} not authorized to delete harvest source {id}"),
        ("harvest_source_show", "other_admin", "private_source_id",
         "User {user} not authorized to read harvest source {id}"),
    ])
    def test_source_refusal_names_user_and_source(
        self, world, auth_name, role, data_key, template
    ):
        source_id = getattr(world, data_key)

        message = _refusal(auth_name, world.users[role], {"id": source_id})

        assert message == template.format(user=world.users[role], id=source_id)

    def test_job_create_refusal_names_the_source(self, world):
        message = _refusal(
            "harvest_job_create", world.users["member"], {"source_id": world.source_id}
        )

        assert message == "User not authorized to create a job for source {}".format(
            world.source_id
        )

    def test_source_create_refusal_names_the_user(self, world):
        message = _refusal(
            "harvest_source_create", world.users["other_admin"], {"owner_org": world.org_id}
        )

        assert message == "User {} not authorized to create harvest sources".format(
            world.users["other_admin"]
        )

    def test_job_show_refusal_names_user_and_source(self, world):
        message = _refusal("harvest_job_show", world.users["user"], {"id": world.job_id})

        assert message == "User {} not authorized to see jobs from source {}".format(
            world.users["user"], world.source_id
        )

    def test_job_list_refusal_names_user_and_source(self, world):
        message = _refusal(
            "harvest_job_list", world.users["member"], {"source_id": world.source_id}
        )

        assert message == "User {} not authorized to list jobs for source {}".format(
            world.users["member"], world.source_id
        )

    @pytest.mark.parametrize("auth_name, expected", [
        ("harvest_jobs_run", "Only sysadmins can run the pending harvest jobs"),
        ("harvest_job_create_all", "Only sysadmins can create harvest jobs for all sources"),
        ("harvest_object_create", "Only the sysadmins can create harvest objects"),
        ("harvest_sources_clear", "Only sysadmins can clear history for all harvest jobs"),
        ("harvest_objects_import", "Only sysadmins can reimport all harvest objects"),
        ("harvest_sources_reindex", "Only sysadmins can reindex all harvest sources"),
    ])
    def test_sysadmin_only_refusal_message(self, world, auth_name, expected):
        message = _refusal(auth_name, world.users["admin"], {})

        assert message == expected

    @pytest.mark.parametrize(
        "auth_name", sorted(EXPECTED_AUTH_NAMES - ANONYMOUS_ALLOWED)
    )
    def test_anonymous_gets_ckans_authenticated_user_message(self, world, auth_name):
        message = _refusal(auth_name, "", {"id": world.source_id})

        assert message == "Action {} requires an authenticated user".format(auth_name)

    def test_job_list_without_source_id_is_refused_not_crashed(self, world):
        with pytest.raises(toolkit.NotAuthorized):
            call_auth("harvest_job_list", {"user": world.users["admin"]})

    @pytest.mark.parametrize("auth_name, data_dict", [
        ("harvest_source_update", {"id": "no-such-source"}),
        ("harvest_source_delete", {"id": "no-such-source"}),
        ("harvest_source_detach", {"id": "no-such-source"}),
        ("harvest_source_show", {"id": "no-such-source"}),
        ("harvest_job_create", {"source_id": "no-such-source"}),
    ])
    def test_missing_source_is_not_found(self, world, auth_name, data_dict):
        with pytest.raises(toolkit.ObjectNotFound, match="Harvest source not found"):
            call_auth(auth_name, {"user": world.users["editor"]}, **data_dict)


# ---------------------------------------------------------------------------
# 2. The same rules through the HTTP Action API
# ---------------------------------------------------------------------------

def _update_payload(w: World) -> dict[str, Any]:
    return {
        "id": w.source_id, "name": w.source_name, "url": w.source_url,
        "source_type": "test", "owner_org": w.org_id, "title": "Updated title",
    }


# (row id, action, payload builder, expected per role in ROLES order)
#                                                                   (an us me ed ad ot sy)
API_MATRIX: list[tuple[str, str, DataBuilder, tuple[bool, ...]]] = [
    ("harvest_source_update", "harvest_source_update",
     _update_payload,                                               (N, N, N, Y, Y, N, Y)),
    ("harvest_source_patch", "harvest_source_patch",
     lambda w: {"id": w.source_id, "title": "Patched title"},       (N, N, N, Y, Y, N, Y)),
    ("harvest_source_delete", "harvest_source_delete",
     _source,                                                       (N, N, N, Y, Y, N, Y)),
    ("harvest_job_create", "harvest_job_create",
     lambda w: {"source_id": w.idle_source_id, "run": False},       (N, N, N, Y, Y, N, Y)),
    ("harvest_job_abort", "harvest_job_abort",
     lambda w: {"id": w.job_id},                                    (N, N, N, Y, Y, N, Y)),
    ("harvest_jobs_run", "harvest_jobs_run",
     _nothing,                                                      (N, N, N, N, N, N, Y)),
    ("harvest_abort_failed_jobs", "harvest_abort_failed_jobs",
     lambda w: {"life_span": 7},                                    (N, N, N, N, N, N, Y)),
    ("harvest_log_list", "harvest_log_list",
     _nothing,                                                      (N, N, N, N, N, N, Y)),
    ("harvest_source_reindex", "harvest_source_reindex",
     _source,                                                       (N, N, N, Y, Y, N, Y)),
    ("harvest_object_create", "harvest_object_create",
     lambda w: {"job_id": w.job_id, "guid": "api-guid"},            (N, N, N, N, N, N, Y)),
    ("harvest_job_list", "harvest_job_list",
     lambda w: {"source_id": w.source_id},                          (N, N, N, Y, Y, N, Y)),
    ("harvest_job_list[no source_id]", "harvest_job_list",
     _nothing,                                                      (N, N, N, N, N, N, Y)),
    ("harvest_job_show", "harvest_job_show",
     lambda w: {"id": w.job_id},                                    (N, N, N, Y, Y, N, Y)),
    ("harvest_job_error_report", "harvest_job_error_report",
     lambda w: {"id": w.job_id},                                    (N, N, N, Y, Y, N, Y)),
    ("harvest_source_preview", "harvest_source_preview",
     lambda w: {"id": w.source_id},                                 (N, N, N, Y, Y, N, Y)),
    ("harvest_object_list", "harvest_object_list",
     lambda w: {"source_id": w.source_id},                          (N, Y, Y, Y, Y, Y, Y)),
    ("harvest_source_show[private]", "harvest_source_show",
     _private_source,                                               (N, N, Y, Y, Y, N, Y)),
]

# Every action whose auth function is not anonymous-friendly, with a payload that
# would succeed for a sysadmin. Over HTTP CKAN 2.12 puts an AnonymousUser object
# in ``auth_user_obj``, so its "requires an authenticated user" gate does not
# fire and the harvest auth functions themselves must refuse anonymous callers.
ANONYMOUS_REFUSED_ACTIONS: list[tuple[str, DataBuilder]] = [
    ("harvest_source_create", lambda w: {
        "name": "anonymous-source", "url": "http://anonymous.example.com",
        "source_type": "test", "owner_org": w.org_id}),
    ("harvest_source_update", lambda w: _update_payload(w)),
    ("harvest_source_patch", lambda w: {"id": w.source_id, "title": "Patched"}),
    ("harvest_source_delete", _source),
    ("harvest_source_clear", _source),
    ("harvest_source_detach", _source),
    ("harvest_source_index_clear", _source),
    ("harvest_source_job_history_clear", _source),
    ("harvest_sources_job_history_clear", _nothing),
    ("harvest_source_reindex", _source),
    ("harvest_sources_reindex", _nothing),
    ("harvest_job_create", lambda w: {"source_id": w.idle_source_id, "run": False}),
    ("harvest_job_create_all", lambda w: {"run": False}),
    ("harvest_send_job_to_gather_queue", lambda w: {"id": w.job_id}),
    ("harvest_job_show", lambda w: {"id": w.job_id}),
    ("harvest_job_report", lambda w: {"id": w.job_id}),
    ("harvest_job_error_report", lambda w: {"id": w.job_id}),
    ("harvest_source_preview", lambda w: {"id": w.source_id}),
    ("harvest_job_list", lambda w: {"source_id": w.source_id}),
    ("harvest_job_abort", lambda w: {"id": w.job_id}),
    ("harvest_abort_failed_jobs", lambda w: {"life_span": 7}),
    ("harvest_jobs_run", _nothing),
    ("harvest_objects_import", lambda w: {"source_id": w.source_id}),
    ("harvest_object_create", lambda w: {"job_id": w.job_id, "guid": "anon-guid"}),
    ("harvest_object_list", lambda w: {"source_id": w.source_id}),
    ("harvest_log_list", _nothing),
    ("harvest_get_notifications_recipients", lambda w: {"source_id": w.source_id}),
    ("harvest_job_approve_removals", lambda w: {"id": w.job_id}),
    ("harvest_job_removals_show", lambda w: {"id": w.job_id}),
    ("harvest_job_progress", lambda w: {"id": w.job_id}),
    ("harvest_health_show", _nothing),
]

ANONYMOUS_ALLOWED_ACTIONS: list[tuple[str, DataBuilder]] = [
    ("harvest_source_show", _source),
    ("harvest_source_show_status", _source),
    ("harvest_source_list", _nothing),
    ("harvest_object_show", lambda w: {"id": w.object_id}),
    ("harvesters_info_show", _nothing),
    ("harvest_schedule_preview", lambda w: {"schedule": "0 3 * * *"}),
]


def _headers(w: World, role: str) -> dict[str, str]:
    if role == "anonymous":
        return {}
    return {"Authorization": w.tokens[role]}


# Actions that change the world when allowed: a test calling one successfully
# discards the world (the fingerprint check would catch the database part too,
# this also covers the search index).
STATE_CHANGING_ACTIONS = {
    "harvest_source_update", "harvest_source_patch", "harvest_source_delete",
    "harvest_job_create", "harvest_job_abort", "harvest_jobs_run",
    "harvest_abort_failed_jobs", "harvest_source_reindex", "harvest_object_create",
}


def _snapshot(w: World) -> dict[str, Any]:
    """What a refused call must leave untouched."""
    model.Session.expire_all()
    source_package = model.Package.get(w.source_id)
    return {
        "source": (source_package.state, source_package.title),
        "jobs": sorted(
            (job.id, job.source_id, job.status) for job in model.Session.query(HarvestJob)
        ),
        "objects": sorted(obj.id for obj in model.Session.query(HarvestObject)),
    }


class TestApiMatrix:
    @pytest.mark.parametrize("action, build, role, expected", _cells(API_MATRIX))
    def test_role_is_allowed_or_denied_over_http(
        self, app, harvest_site, world, action, build, role, expected
    ):
        headers = _headers(world, role)
        payload = build(world)
        before = _snapshot(world)

        response = app.post("/api/3/action/" + action, json=payload, headers=headers)
        if response.status_code != 403 and action in STATE_CHANGING_ACTIONS:
            harvest_site.discard()

        body = response.json
        if expected:
            assert response.status_code != 403, body
            assert (response.status_code, body["success"]) == (200, True), body
        else:
            assert response.status_code == 403, body
            assert body["error"]["__type"] == "Authorization Error"
            assert _snapshot(world) == before

    def test_refusal_message_reaches_the_api_client(self, app, world):
        headers = _headers(world, "editor")

        response = app.post("/api/3/action/harvest_jobs_run", json={}, headers=headers)

        assert response.status_code == 403
        assert response.json["error"]["message"] == (
            "Access denied: Only sysadmins can run the pending harvest jobs"
        )

    def test_source_refusal_message_reaches_the_api_client(self, app, world):
        headers = _headers(world, "other_admin")

        response = app.post(
            "/api/3/action/harvest_job_list", json={"source_id": world.source_id},
            headers=headers,
        )

        assert response.status_code == 403
        assert response.json["error"]["message"] == (
            "Access denied: User {} not authorized to list jobs for source {}".format(
                world.users["other_admin"], world.source_id
            )
        )

    def test_anonymous_get_of_source_reindex_is_refused(self, app, world):
        # Q5: the original let anyone reindex a source with a plain GET
        response = app.get(
            "/api/3/action/harvest_source_reindex", query_string={"id": world.source_id}
        )

        assert response.status_code == 403
        assert response.json["error"]["__type"] == "Authorization Error"

    def test_every_non_anonymous_action_is_covered_by_the_anonymous_sweep(self):
        covered = {action for action, _build in ANONYMOUS_REFUSED_ACTIONS}
        allowed = {action for action, _build in ANONYMOUS_ALLOWED_ACTIONS}

        assert (covered | allowed, covered & allowed) == (EXPECTED_ACTION_NAMES, set())

    @pytest.mark.parametrize("action, build", [
        pytest.param(action, build, id=action) for action, build in ANONYMOUS_REFUSED_ACTIONS
    ])
    def test_anonymous_is_refused_over_http(self, app, world, action, build):
        payload = build(world)
        before = _snapshot(world)

        response = app.post("/api/3/action/" + action, json=payload)

        assert response.status_code == 403, response.json
        assert response.json["error"]["__type"] == "Authorization Error"
        assert _snapshot(world) == before

    @pytest.mark.parametrize("action, build", [
        pytest.param(action, build, id=action) for action, build in ANONYMOUS_ALLOWED_ACTIONS
    ])
    def test_anonymous_may_read_public_things_over_http(self, app, world, action, build):
        response = app.post("/api/3/action/" + action, json=build(world))

        assert (response.status_code, response.json["success"]) == (200, True)


# ---------------------------------------------------------------------------
# 3. Registry hygiene and the helpers of ckanext.harvest.logic.auth
# ---------------------------------------------------------------------------

NOT_ACTIONS = [
    "InactiveSource", "get_mail_extra_vars", "prepare_summary_mail",
    "prepare_error_mail", "send_summary_email", "send_error_email", "send_mail",
]
NOT_AUTH = ["auth_allow_anonymous_access"]
# Action-only names that the original leaked into the auth registry (Q1)
ACTION_ONLY = [
    "harvest_job_report", "harvest_source_index_clear",
    "harvest_source_job_history_clear", "harvest_sources_job_history_clear",
]


class TestRegistries:
    def test_registered_actions_are_exactly_the_public_api(self):
        registered = set(_plugin().get_actions())

        assert registered == EXPECTED_ACTION_NAMES

    @pytest.mark.parametrize("name", NOT_ACTIONS)
    def test_helper_is_not_an_action(self, name):
        with pytest.raises(KeyError):
            toolkit.get_action(name)

    def test_module_level_helpers_stay_importable(self):
        found = {
            name: getattr(action_create, name, None) or getattr(action_update, name, None)
            for name in NOT_ACTIONS
        }

        assert [name for name, value in found.items() if not callable(value)] == []

    @pytest.mark.parametrize("name", NOT_AUTH + ["harvest_sources_clear"])
    def test_auth_only_name_is_not_an_action(self, name):
        with pytest.raises(KeyError):
            toolkit.get_action(name)

    @pytest.mark.parametrize("name", NOT_AUTH + ACTION_ONLY)
    def test_name_is_not_an_auth_function(self, name):
        with pytest.raises(ValueError, match="Authorization function not found"):
            call_auth(name, {"user": ""})

    @pytest.mark.parametrize("name", sorted(EXPECTED_AUTH_NAMES))
    def test_auth_function_comes_from_the_auth_package(self, name):
        function = _plugin().get_auth_functions()[name]

        assert function.__module__.startswith("ckanext.harvest.logic.auth.")

    @pytest.mark.parametrize("name", sorted(EXPECTED_ACTION_NAMES))
    def test_action_comes_from_the_action_package(self, name):
        function = _plugin().get_actions()[name]

        assert function.__module__.startswith("ckanext.harvest.logic.action.")

    def test_log_list_is_an_action_with_its_own_auth_function(self):
        action = _plugin().get_actions()["harvest_log_list"]
        auth_function = _plugin().get_auth_functions()["harvest_log_list"]

        assert (action.__module__, auth_function.__module__) == (
            "ckanext.harvest.logic.action.get", "ckanext.harvest.logic.auth.get"
        )
        assert action is not auth_function


class TestAuthHelpers:
    def test_user_is_sysadmin_raises_not_found_for_unknown_user(self):
        with pytest.raises(toolkit.ObjectNotFound, match="User no-such-user not found"):
            harvest_auth.user_is_sysadmin({"user": "no-such-user"})

    @pytest.mark.parametrize("factory, expected", [
        (factories.Sysadmin, True), (factories.User, False),
    ])
    def test_user_is_sysadmin_reads_the_user_flag(self, factory, expected):
        name = factory()["name"]

        assert harvest_auth.user_is_sysadmin({"user": name}) is expected

    GETTERS = [
        pytest.param(harvest_auth.get_source_object, "source", "source_id", HarvestSource,
                     id="get_source_object"),
        pytest.param(harvest_auth.get_job_object, "job", "job_id", HarvestJob,
                     id="get_job_object"),
        pytest.param(harvest_auth.get_obj_object, "obj", "object_id", HarvestObject,
                     id="get_obj_object"),
    ]

    @pytest.mark.parametrize("getter, key, attr, model_class", GETTERS)
    def test_getter_prefers_the_context_object(self, world, getter, key, attr, model_class):
        in_context = model_class.get(getattr(world, attr))

        found = getter({key: in_context}, {"id": "no-such-id"})

        assert found is in_context

    @pytest.mark.parametrize("getter, key, attr, model_class", GETTERS)
    def test_getter_looks_up_the_id(self, world, getter, key, attr, model_class):
        found = getter({}, {"id": getattr(world, attr)})

        assert (type(found), found.id) == (model_class, getattr(world, attr))

    @pytest.mark.parametrize("getter, key, attr, model_class", GETTERS)
    def test_getter_raises_not_found_for_missing_id(self, world, getter, key, attr,
                                                    model_class):
        with pytest.raises(toolkit.ObjectNotFound):
            getter({}, {"id": "no-such-id"})
