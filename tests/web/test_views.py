"""The harvest pages through the Flask test client: roles, content, state changes.

Expected status codes are written out from web.md and auth.md: anyone may
read public sources and raw objects; the admin pages, jobs and state
changes need update permission on the source (org editors and admins,
sysadmins); the views that change something act on POST only.
"""
from __future__ import annotations

import csv
import html
import io
import json
import re
from typing import Any

import pytest
from ckan import model
from ckan.lib.helpers import check_ckan_version
from ckan.plugins import toolkit

from ckanext.harvest.model import HarvestJob, HarvestObject, HarvestSource, JobStatus
from tests.web.conftest import MANAGERS, ROLES, XML_DOCUMENT, World, csrf_field

pytestmark = pytest.mark.usefixtures("clean_queues")


def _urls(w: World) -> dict[str, str]:
    name = w.source["name"]
    return {
        "search": "/harvest/",
        "read": "/harvest/{}".format(name),
        "about": "/harvest/about/{}".format(name),
        "admin": "/harvest/admin/{}".format(name),
        "job_list": "/harvest/{}/job".format(name),
        "job_show_last": "/harvest/{}/job/last".format(name),
        "job_show": "/harvest/{}/job/{}".format(name, w.job_id),
        "job_errors_csv": "/harvest/{}/job/{}/errors.csv".format(name, w.job_id),
        "job_errors_json": "/harvest/{}/job/{}/errors.json".format(name, w.job_id),
        "refresh": "/harvest/refresh/{}".format(w.idle_source["id"]),
        "clear": "/harvest/clear/{}".format(name),
        "delete": "/harvest/delete/{}".format(name),
        "delete_clear": "/harvest/delete/{}?clear=True".format(name),
        "job_abort": "/harvest/{}/job/{}/abort".format(
            w.running_source["name"], w.running_job_id),
        "object_show": "/harvest/object/{}".format(w.object_id),
        "dataset_object": "/dataset/harvest_object/{}".format(w.dataset_name),
        "new": "/harvest/new",
        "edit": "/harvest/edit/{}".format(name),
    }


PUBLIC = ("search", "read", "about", "object_show", "dataset_object")
MANAGED = ("admin", "job_list", "job_show_last", "job_show", "job_errors_csv",
           "job_errors_json", "refresh", "clear", "delete", "delete_clear", "job_abort",
           "edit")


def _expected(page: str, role: str) -> int:
    if page in PUBLIC:
        return 200
    if page == "new":  # ckan.auth.create_unowned_dataset = true (test-core.ini)
        return 403 if role == "anonymous" else 200
    return 200 if role in MANAGERS else 403


def _body(response: Any) -> str:
    return response.get_data(as_text=True)


def _text(response: Any) -> str:
    """The page as text with tags removed and whitespace collapsed."""
    text = re.sub(r"<[^>]+>", " ", _body(response))
    return " ".join(html.unescape(text).split())


def _job_count(source_id: str) -> int:
    model.Session.remove()
    return model.Session.query(HarvestJob).filter(HarvestJob.source_id == source_id).count()


# ---------------------------------------------------------------------------
# Who may see which page (GET)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("page", PUBLIC + MANAGED + ("new",))
def test_get_status_per_role(world, client, page, role):
    response = client(role).get(_urls(world)[page], follow_redirects=False)

    assert response.status_code == _expected(page, role)


OUTSIDERS = tuple(role for role in ROLES if role not in MANAGERS)
STATE_CHANGES = ("refresh", "clear", "delete", "delete_clear", "job_abort", "edit")


def _source_state(source_id: str) -> tuple[Any, ...]:
    """What a state-changing route could alter: the source, its dataset, its jobs."""
    model.Session.remove()
    source = HarvestSource.get(source_id)
    package = model.Package.get(source_id)
    jobs = model.Session.query(HarvestJob.id, HarvestJob.status).filter(
        HarvestJob.source_id == source_id).order_by(HarvestJob.id).all()
    return (source.active, source.url, source.title, source.config, package.state,
            package.title, package.metadata_modified, tuple(jobs))


@pytest.mark.parametrize("role", OUTSIDERS)
@pytest.mark.parametrize("page", STATE_CHANGES)
def test_post_of_a_state_change_is_refused_to_outsiders(fresh_source, client, page,
                                                         role):
    """Every state-changing route, posted by every role that may not manage the
    source: 403 and nothing changed (with the job running the abort would stop)."""
    source = fresh_source()
    client("sysadmin").post("/harvest/refresh/{}".format(source["id"]))
    job_id = model.Session.query(HarvestJob.id).filter(
        HarvestJob.source_id == source["id"]).scalar()
    url = {"refresh": "/harvest/refresh/{}", "clear": "/harvest/clear/{}",
           "delete": "/harvest/delete/{}", "delete_clear": "/harvest/delete/{}?clear=True",
           "job_abort": "/harvest/{}/job/" + job_id + "/abort",
           "edit": "/harvest/edit/{}"}[page].format(source["name"])
    data = _form_data(name=source["name"], title="Taken over",
                      url="http://attacker.example.org/") if page == "edit" else {}
    before = _source_state(source["id"])

    response = client(role).post(url, data=data, follow_redirects=False)

    assert response.status_code == 403
    assert _source_state(source["id"]) == before


@pytest.mark.parametrize("page", ("refresh", "clear", "delete", "delete_clear", "job_abort"))
def test_get_of_a_state_change_changes_nothing(world, client, page):
    jobs_before = {s["id"]: _job_count(s["id"])
                   for s in (world.source, world.idle_source, world.running_source)}

    response = client("sysadmin").get(_urls(world)[page])

    assert response.status_code == 200
    assert '<form id="harvest-confirm" method="post"' in _body(response)
    assert 'id="harvest-confirm-submit"' in _body(response)
    assert {s: _job_count(s) for s in jobs_before} == jobs_before
    assert HarvestSource.get(world.source["id"]).active is True
    assert HarvestJob.get(world.running_job_id).status == "Running"


def test_delete_confirmation_keeps_the_clear_flag(world, client):
    response = client("editor").get(_urls(world)["delete_clear"])

    assert 'action="/harvest/delete/{}?clear=True"'.format(world.source["name"]) in _body(
        response)
    assert "Delete and clear source" in _text(response)


def test_confirmation_page_carries_the_csrf_token_and_a_cancel_link(world, client):
    response = client("admin").get(_urls(world)["clear"])

    assert csrf_field(_body(response))[1]
    assert 'href="/harvest/admin/{}"'.format(world.source["name"]) in _body(response)


@pytest.mark.parametrize("role", ROLES)
def test_private_source_is_hidden_from_outsiders(world, client, role):
    name = world.private_source["name"]
    insiders = ("member",) + MANAGERS

    read = client(role).get("/harvest/{}".format(name), follow_redirects=False)
    about = client(role).get("/harvest/about/{}".format(name), follow_redirects=False)

    assert read.status_code == (200 if role in insiders else 404)
    assert about.status_code == (200 if role in insiders else 403)


# ---------------------------------------------------------------------------
# Unknown ids and bad input: 404 / 403, never a 500
# ---------------------------------------------------------------------------

BAD_GETS = [
    "/harvest/admin/no-such-source",
    "/harvest/about/no-such-source",
    "/harvest/no-such-source/job",
    "/harvest/no-such-source/job/last",
    "/harvest/no-such-source/job/no-such-job",
    "/harvest/refresh/no-such-source",
    "/harvest/clear/no-such-source",
    "/harvest/delete/no-such-source",
    "/harvest/delete/no-such-source?clear=yes",
    "/harvest/no-such-source/job/no-such-job/abort",
    "/harvest/object/no-such-object",
    "/dataset/harvest_object/no-such-dataset",
    "/harvest/no-such-source",
    "/harvest/edit/no-such-source",
    "/harvest/?q=%22unbalanced&sort=nonsense+desc",
    "/harvest/?page=-3",
    "/harvest/{source}?page=abc",
]


@pytest.mark.parametrize("role", ROLES)
def test_bad_urls_never_fail_with_a_server_error(world, client, role):
    for url in BAD_GETS:
        response = client(role).get(url.format(source=world.source["name"]),
                                    follow_redirects=False)
        assert response.status_code in (200, 400, 403, 404), url
        post_url = url.format(source=world.source["name"])
        if any(part in post_url for part in ("refresh", "clear", "delete", "abort")):
            response = client(role).post(post_url, follow_redirects=False)
            assert response.status_code in (403, 404), post_url


@pytest.mark.parametrize("url, message", [
    ("/harvest/admin/no-such-source", "Harvest source not found"),
    ("/harvest/no-such-source/job", "Harvest source not found"),
    ("/harvest/no-such-source/job/no-such-job", "Harvest job not found"),
    ("/harvest/object/no-such-object", "Harvest object not found"),
    ("/dataset/harvest_object/no-such-dataset", "Dataset not found"),
])
def test_unknown_ids_are_404_with_a_message(client, url, message):
    response = client("sysadmin").get(url)

    assert response.status_code == 404
    assert message in _text(response)


def test_last_job_of_a_source_without_jobs_is_404(world, client):
    response = client("editor").get("/harvest/{}/job/last".format(world.idle_source["name"]))

    assert response.status_code == 404
    assert "No jobs yet for this source" in _text(response)


def test_not_authorised_page_says_so(world, client):
    response = client("other_admin").get(_urls(world)["admin"])

    assert response.status_code == 403
    assert "Not authorized to see this page" in _text(response)


# ---------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------

class TestSearch:
    def test_lists_the_sources_the_user_may_see(self, world, client):
        anonymous = _text(client("anonymous").get("/harvest/"))
        member = _text(client("member").get("/harvest/"))

        assert "Forest records" in anonymous and "Idle source" in anonymous
        assert "Secret source" not in anonymous
        assert "Secret source" in member

    def test_counts_and_facets(self, client):
        public = model.Session.query(model.Package).filter(
            model.Package.type == "harvest", model.Package.state == "active",
            model.Package.private.is_(False)).count()

        page = _text(client("anonymous").get("/harvest/"))

        assert "{} harvest sources found".format(public) in page
        assert "Type" in page and "Frequency" in page

    def test_query_without_results(self, client):
        page = _text(client("anonymous").get("/harvest/?q=nothingmatchesthis"))

        assert 'Sorry no harvest sources found for "nothingmatchesthis"' in page

    def test_query_with_results(self, client):
        page = _text(client("anonymous").get("/harvest/?q=Forest"))

        assert '1 harvest source found for "Forest"' in page

    def test_facet_links_stay_on_the_harvest_search(self, client):
        body = _body(client("anonymous").get("/harvest/"))

        assert 'href="/harvest/?source_type=test"' in body

    def test_add_button_for_those_who_may_create(self, client):
        assert "Add Harvest Source" not in _text(client("anonymous").get("/harvest/"))
        assert 'href="/harvest/new"' in _body(client("editor").get("/harvest/"))

    @pytest.mark.skipif(not check_ckan_version(min_version="2.12"),
                        reason="htmx searches are CKAN 2.12's")
    def test_htmx_search_answers_the_swappable_parts(self, client):
        response = client("anonymous").get(
            "/harvest/?q=Idle", headers={"HX-Request": "true"})

        body = _body(response)
        assert response.status_code == 200
        assert re.search(r'id="search-results"[^>]*hx-swap-oob="true"', body)
        assert re.search(r'id="search-facets"[^>]*hx-swap-oob="true"', body)
        assert "Idle source" in body and "Forest records" not in _text(response)


class TestSourcePages:
    def test_read_lists_the_harvested_datasets(self, world, client):
        response = client("anonymous").get(_urls(world)["read"])

        assert "Forest records" in _text(response)
        assert "Oak" in _text(response)
        assert "/harvest/admin/" not in _body(response)

    def test_read_offers_the_admin_button_to_managers(self, world, client):
        body = _body(client("editor").get(_urls(world)["read"]))

        assert 'href="/harvest/admin/{}"'.format(world.source["name"]) in body

    def test_read_of_a_source_without_datasets(self, world, client):
        page = _text(client("anonymous").get("/harvest/{}".format(world.idle_source["name"])))

        assert "There are no datasets associated to this harvest source." in page
        assert "There is no description for this harvest source" in page

    def test_about_renders_the_description(self, world, client):
        response = client("anonymous").get(_urls(world)["about"])

        assert "<em>north</em>" in _body(response)
        assert "Additional Info" in _text(response)

    def test_breadcrumb_goes_through_the_organisation(self, world, client):
        body = _body(client("anonymous").get(_urls(world)["about"]))

        assert 'href="/organization/"' in body and 'href="/harvest/"' in body


class TestAdmin:
    def test_dashboard_shows_the_last_job_and_its_statistics(self, world, client):
        response = client("editor").get(_urls(world)["admin"])

        body = _body(response)
        assert "Last Harvest Job" in _text(response)
        assert world.job_id in body
        assert '<span class="badge harvest-badge" data-diff="updated">1 updated</span>' in body
        assert 'data-diff="error">3 errors</span>' in body
        assert 'href="/harvest/{}/job/last"'.format(world.source["name"]) in body

    def test_actions_carry_confirmation_texts(self, world, client):
        body = _body(client("admin").get(_urls(world)["admin"]))

        assert re.search(
            r'href="/harvest/refresh/{}" data-module="confirm-action" '
            r'data-module-content="[^"]+"'.format(world.source["id"]), body)
        assert re.search(r'href="/harvest/clear/{}" data-module="confirm-action"'.format(
            world.source["name"]), body)
        assert "/abort" not in body

    def test_running_job_disables_reharvest_and_offers_stop(self, world, client):
        response = client("editor").get(
            "/harvest/admin/{}".format(world.running_source["name"]))

        body = _body(response)
        assert "There already is an unrun job for this source" in body
        assert 'id="harvest-reharvest"' not in body
        assert 'href="/harvest/{}/job/{}/abort"'.format(
            world.running_source["name"], world.running_job_id) in body

    def test_chart_of_the_recent_jobs(self, world, client):
        body = _body(client("editor").get(_urls(world)["admin"]))

        figure = body[body.index('<figure id="harvest-job-chart"'):body.index("</figure>")]
        assert re.search(r'<svg class="harvest-job-chart" role="img" aria-labelledby="', figure)
        groups = re.findall(r'<g class="harvest-job-chart-job" data-job-id="([^"]+)"', figure)
        assert groups == [world.first_job_id, world.job_id]  # oldest left
        assert 'data-diff="added" data-count="2"' in figure
        assert 'data-diff="error" data-count="3"' in figure
        assert '<table class="table table-sm table-striped harvest-job-chart-table">' in figure
        rows = re.findall(r'<tr data-job-id="([^"]+)">', figure)
        assert rows == groups
        assert "<summary>Show as table</summary>" in figure

    def test_no_chart_before_the_first_finished_job(self, world, client):
        response = client("editor").get("/harvest/admin/{}".format(world.idle_source["name"]))

        assert 'id="harvest-job-chart"' not in _body(response)
        assert "No jobs yet for this source" in _text(response)
        assert "No finished jobs yet" in _text(response)

    def test_admin_tab_in_the_sysadmin_area(self, client):
        body = _body(client("sysadmin").get("/ckan-admin/"))

        assert re.search(r'<a href="/harvest/"[^>]*><i class="fa fa-download"></i> Harvest</a>',
                         body)


class TestJobPages:
    def test_job_list(self, world, client):
        response = client("editor").get(_urls(world)["job_list"])

        body = _body(response)
        for job_id in (world.first_job_id, world.job_id):
            assert 'href="/harvest/{}/job/{}">Job: {}</a>'.format(
                world.source["name"], job_id, job_id) in body
        assert 'data-diff="added">2 added</span>' in body

    def test_job_report_statistics_and_errors(self, world, client):
        response = client("editor").get(_urls(world)["job_show"])

        page = _text(response)
        body = _body(response)
        assert "Job Report" in page
        assert "Error Summary" in page and "3 errors, 3 distinct messages" in page
        assert "Remote catalogue answered 503 once" in page
        assert "2 documents with errors" in page
        assert "Fetch failed on purpose" in page and "Import failed on purpose" in page

        assert 'class="table table-sm table-striped harvest-error-summary harvest-error-groups"' \
            in body
        assert "http://remote.example.org/dataset/ash" in body
        for fmt in ("csv", "json"):
            assert 'href="{}"'.format(_urls(world)["job_errors_" + fmt]) in body

    def test_every_message_group_links_to_its_errors(self, world, client):
        report = toolkit.get_action("harvest_job_error_report")(
            {"ignore_auth": True}, {"id": world.job_id})
        body = _body(client("editor").get(_urls(world)["job_show"]))

        for group in report["groups"]:
            assert '?group={}#error-summary'.format(group["group"]) in body

    def test_a_group_lists_its_errors_with_links_to_their_objects(self, world, client):
        report = toolkit.get_action("harvest_job_error_report")(
            {"ignore_auth": True}, {"id": world.job_id, "stage": "Fetch"})
        group = report["groups"][0]

        response = client("editor").get(_urls(world)["job_show"],
                                         query_string={"group": group["group"]})

        body = _body(response)
        assert response.status_code == 200
        assert "Errors with this message" in _text(response)
        for error in report["errors"]:
            assert 'href="/harvest/object/{}">{}</a>'.format(
                error["object_id"], error["guid"]) in body
        assert "Import failed on purpose" not in _text(response)

    @pytest.mark.parametrize(("query", "status"), [
        ({"group": "0" * 32}, 404), ({"group": "nope"}, 400), ({"gpage": "0"}, 400),
        ({"gpage": "x"}, 400),
    ])
    def test_a_bad_group_or_page_is_refused(self, world, client, query, status):
        response = client("editor").get(_urls(world)["job_show"], query_string=query)

        assert response.status_code == status

    def test_csv_download_has_every_error(self, world, client):
        response = client("editor").get(_urls(world)["job_errors_csv"])

        assert response.status_code == 200
        assert response.mimetype == "text/csv"
        assert "attachment" in response.headers["Content-Disposition"]
        rows = list(csv.DictReader(io.StringIO(_body(response))))
        assert sorted(r["stage"] for r in rows) == ["Fetch", "Gather", "Import"]
        assert {r["job_id"] for r in rows} == {world.job_id}
        assert "Remote catalogue answered 503 once" in {r["message"] for r in rows}

    def test_json_download_has_every_error(self, world, client):
        response = client("admin").get(_urls(world)["job_errors_json"])

        rows = json.loads(_body(response))
        assert response.mimetype == "application/json"
        assert sorted(r["stage"] for r in rows) == ["Fetch", "Gather", "Import"]

    def test_download_of_an_unknown_format_or_job(self, world, client):
        name = world.source["name"]
        assert client("sysadmin").get(_urls(world)["job_errors_csv"][:-3] + "xml"
                                      ).status_code == 404
        assert client("sysadmin").get("/harvest/{}/job/nope/errors.csv".format(name)
                                      ).status_code == 404

    def test_errors_are_grouped_by_message_with_links_to_the_objects(self, world, client):
        body = _body(client("editor").get(_urls(world)["job_show"]))

        groups = body.split('<section class="harvest-error-group">')[1:]
        assert len(groups) == 2
        for group, guid in zip(groups, ("ash", "fir")):
            obj = model.Session.query(HarvestObject).filter(
                HarvestObject.harvest_job_id == world.job_id, HarvestObject.guid == guid).one()
            assert guid in group
            assert 'href="/harvest/object/{}">Local content</a>'.format(obj.id) in group

    def test_last_job_is_the_latest(self, world, client):
        page = _text(client("editor").get(_urls(world)["job_show_last"]))

        assert world.job_id in page and "latest job" in page

    def test_finished_job_without_errors(self, world, client):
        page = _text(client("editor").get(
            "/harvest/{}/job/{}".format(world.source["name"], world.first_job_id)))

        assert "No errors for this job" in page
        assert 'id="harvest-job-progress"' not in page

    def test_running_job_shows_its_progress(self, world, client):
        response = client("editor").get("/harvest/{}/job/{}".format(
            world.running_source["name"], world.running_job_id))

        body = _body(response)
        assert re.search(r'<div id="harvest-job-progress"[^>]*data-status="Running" '
                         r'data-done="1" data-total="3"', body)
        assert "1 of 3 objects done" in _text(response)
        assert "Running for" in _text(response)
        assert 'data-module="harvest-job-progress"' in body
        assert "harvest_job_progress.js" in body
        assert ">Refresh</a>" in body
        assert "Error Summary" not in _text(response)

    def test_progress_while_gathering(self, fresh_source, client):
        source = fresh_source()
        job = HarvestJob(source_id=source["id"], status=JobStatus.RUNNING.value)
        job.save()

        page = _text(client("editor").get("/harvest/{}/job/{}".format(source["name"], job.id)))

        assert "Gathering… 0 objects found so far" in page


class TestObjectView:
    def test_json_content(self, world, client):
        response = client("anonymous").get(_urls(world)["object_show"])

        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert '"guid": "oak"' in _body(response)

    def test_xml_content_keeps_its_declaration(self, world, client):
        response = client("anonymous").get("/harvest/object/{}".format(world.xml_object_id))

        assert response.headers["Content-Type"] == "application/xml; charset=utf-8"
        assert _body(response) == XML_DOCUMENT

    def test_original_document_gets_an_xml_declaration(self, world, client):
        response = client("anonymous").get(
            "/harvest/object/{}".format(world.original_document_object_id))

        assert response.headers["Content-Type"] == "application/xml; charset=utf-8"
        assert _body(response) == (
            '<?xml version="1.0" encoding="UTF-8"?>\n<record><title>Original</title></record>')

    def test_other_content_is_plain_text_never_html(self, world, client):
        response = client("anonymous").get("/harvest/object/{}".format(world.text_object_id))

        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in response.headers["Content-Security-Policy"]
        assert _body(response) == "just <b>text</b>"

    def test_object_without_content_is_404(self, world, client):
        response = client("anonymous").get("/harvest/object/{}".format(world.empty_object_id))

        assert response.status_code == 404
        assert "No content found" in _text(response)

    def test_current_object_of_a_dataset(self, world, client):
        response = client("anonymous").get(_urls(world)["dataset_object"])

        assert response.status_code == 200
        assert '"guid": "oak"' in _body(response)


# ---------------------------------------------------------------------------
# State changes (POST)
# ---------------------------------------------------------------------------

class TestRefresh:
    @pytest.mark.parametrize("role", MANAGERS)
    def test_managers_start_a_job(self, fresh_source, client, role):
        source = fresh_source()

        response = client(role).post("/harvest/refresh/{}".format(source["id"]),
                                     follow_redirects=False)

        assert response.status_code == 302
        assert response.headers["Location"].endswith("/harvest/admin/{}".format(source["id"]))
        jobs = model.Session.query(HarvestJob).filter(HarvestJob.source_id == source["id"]).all()
        assert [job.status for job in jobs] == ["Running"]

    def test_success_message(self, fresh_source, client):
        source = fresh_source()

        page = _text(client("editor").post("/harvest/refresh/{}".format(source["id"])))

        assert "Harvest will start shortly. Refresh this page for updates." in page

    @pytest.mark.parametrize("role", ("anonymous", "user", "member", "other_admin"))
    def test_others_are_refused(self, fresh_source, client, role):
        source = fresh_source()

        response = client(role).post("/harvest/refresh/{}".format(source["id"]),
                                     follow_redirects=False)

        assert response.status_code == 403
        assert _job_count(source["id"]) == 0

    def test_a_second_job_is_refused_with_a_notice(self, world, client):
        page = _text(client("editor").post(
            "/harvest/refresh/{}".format(world.running_source["id"])))

        assert "A harvest job has already been scheduled for this source" in page
        assert _job_count(world.running_source["id"]) == 1

    def test_inactive_source_is_refused_with_a_message(self, fresh_source, client):
        source = fresh_source()
        client("editor").post("/harvest/delete/{}".format(source["name"]))

        page = _text(client("editor").post("/harvest/refresh/{}".format(source["id"])))

        assert ('Cannot create new harvest jobs on inactive sources. First, please change '
                'the source status to "active".') in page
        assert _job_count(source["id"]) == 0

    def test_unreachable_broker_is_a_message_not_a_500(self, fresh_source, client,
                                                       monkeypatch):
        from ckanext.harvest import queue

        def broken_publisher() -> Any:
            raise ConnectionError("broker unreachable")

        monkeypatch.setattr(queue, "get_gather_publisher", broken_publisher)
        source = fresh_source()

        response = client("editor").post("/harvest/refresh/{}".format(source["id"]))

        assert response.status_code == 200
        assert "An error occurred: [broker unreachable]" in _text(response)
        job = model.Session.query(HarvestJob).filter(HarvestJob.source_id == source["id"]).one()
        assert job.status == "New"


class TestClear:
    def test_clear_deletes_jobs_and_keeps_the_source(self, fresh_source, client):
        source = fresh_source()
        client("admin").post("/harvest/refresh/{}".format(source["id"]))
        assert _job_count(source["id"]) == 1

        response = client("admin").post("/harvest/clear/{}".format(source["name"]))

        assert "Harvest source cleared" in _text(response)
        assert _job_count(source["id"]) == 0
        assert HarvestSource.get(source["id"]).active is True

    def test_others_are_refused(self, fresh_source, client):
        source = fresh_source()
        client("admin").post("/harvest/refresh/{}".format(source["id"]))

        response = client("other_admin").post("/harvest/clear/{}".format(source["name"]),
                                              follow_redirects=False)

        assert response.status_code == 403
        assert _job_count(source["id"]) == 1


class TestDelete:
    def test_delete_inactivates(self, fresh_source, client):
        source = fresh_source()

        response = client("editor").post("/harvest/delete/{}".format(source["name"]),
                                         follow_redirects=False)

        assert response.status_code == 302
        assert response.headers["Location"].endswith("/harvest/admin/{}".format(source["name"]))
        model.Session.remove()
        assert HarvestSource.get(source["id"]).active is False
        assert model.Package.get(source["id"]).state == "deleted"

    def test_delete_message(self, fresh_source, client):
        source = fresh_source()

        page = _text(client("editor").post("/harvest/delete/{}".format(source["name"])))

        assert "Harvesting source successfully inactivated" in page

    @pytest.mark.parametrize("flag", ("True", "true", "1"))
    def test_delete_and_clear(self, fresh_source, client, flag):
        source = fresh_source()
        client("editor").post("/harvest/refresh/{}".format(source["id"]))

        page = _text(client("editor").post(
            "/harvest/delete/{}?clear={}".format(source["name"], flag)))

        assert "Harvesting source successfully cleared" in page
        assert _job_count(source["id"]) == 0
        assert HarvestSource.get(source["id"]).active is False

    @pytest.mark.parametrize("role", ("anonymous", "member", "other_admin"))
    def test_others_are_refused(self, fresh_source, client, role):
        source = fresh_source()

        response = client(role).post("/harvest/delete/{}".format(source["name"]),
                                     follow_redirects=False)

        assert response.status_code == 403
        assert HarvestSource.get(source["id"]).active is True


class TestJobAbort:
    def _running(self, fresh_source: Any, client: Any) -> tuple[dict[str, Any], str]:
        source = fresh_source()
        client("sysadmin").post("/harvest/refresh/{}".format(source["id"]))
        job = model.Session.query(HarvestJob).filter(HarvestJob.source_id == source["id"]).one()
        return source, job.id

    @pytest.mark.parametrize("role", MANAGERS)
    def test_managers_stop_a_job(self, fresh_source, client, role):
        source, job_id = self._running(fresh_source, client)

        response = client(role).post(
            "/harvest/{}/job/{}/abort".format(source["name"], job_id), follow_redirects=False)

        assert response.status_code == 302
        assert response.headers["Location"].endswith("/harvest/admin/{}".format(source["name"]))
        model.Session.remove()
        assert HarvestJob.get(job_id).status == "Finished"

    def test_stop_message(self, fresh_source, client):
        source, job_id = self._running(fresh_source, client)

        page = _text(client("editor").post("/harvest/{}/job/{}/abort".format(
            source["name"], job_id)))

        assert "Harvest job stopped" in page

    def test_others_are_refused(self, fresh_source, client):
        source, job_id = self._running(fresh_source, client)

        response = client("other_admin").post(
            "/harvest/{}/job/{}/abort".format(source["name"], job_id), follow_redirects=False)

        assert response.status_code == 403
        model.Session.remove()
        assert HarvestJob.get(job_id).status == "Running"


# ---------------------------------------------------------------------------
# The source form (CKAN's dataset views with the harvest templates)
# ---------------------------------------------------------------------------

def _form_data(**fields: Any) -> dict[str, Any]:
    data = {"url": "http://form.example.org/catalogue", "title": "Form source",
            "name": "form-source", "notes": "", "source_type": "test",
            "frequency": "MANUAL", "config": "", "save": "Save"}
    data.update(fields)
    return data


def _field_error(body: str, field: str) -> str:
    """The error shown in the form group of ``field``."""
    group = re.search(
        r'<div class="form-group[^"]*error[^"]*">\s*<label class="form-label" for="field-{}"'
        r'.*?<span class="error-block">(.*?)</span>'.format(field), body, re.S)
    assert group, "no error next to field {}".format(field)
    return html.unescape(group.group(1))


class TestSourceForm:
    def test_new_form(self, client):
        response = client("editor").get("/harvest/new")

        body = _body(response)
        assert '<form id="source-new" class="form-horizontal' in body
        assert re.search(r'<input class="form-check-input" type="radio" '
                         r'id="field-source_type-test" name="source_type" value="test"[^>]*'
                         r'data-module="harvest-type-change"', body)
        first_radio = re.search(r'<input class="form-check-input" type="radio"[^>]*>', body)
        assert first_radio and 'checked="checked"' in first_radio.group(0)
        assert re.findall(r'<option value="(\w+)"[^>]*>(\w+)</option>',
                          body[body.index('id="field-frequency"'):])[:6] == [
            ("MANUAL", "Manual"), ("MONTHLY", "Monthly"), ("WEEKLY", "Weekly"),
            ("BIWEEKLY", "Biweekly"), ("DAILY", "Daily"), ("ALWAYS", "Always")]
        assert '<textarea id="field-config" name="config"' in body
        assert 'data-module-form-items="{&#34;test2&#34;: [&#34;custom_option&#34;]}"' in body
        assert '<input id="save" name="save" value="Save" type="submit"' in body
        assert "harvest_extra_fieldmain.js" in body

    def test_create(self, world, client):
        response = client("editor").post("/harvest/new", data=_form_data(
            owner_org=world.org_id, name="created-by-form", url="http://created.example.org"),
            follow_redirects=False)

        assert response.status_code == 302
        assert response.headers["Location"].endswith("/harvest/created-by-form")
        source = HarvestSource.get(model.Package.get("created-by-form").id)
        assert source.url == "http://created.example.org" and source.type == "test"

    def test_invalid_config_is_shown_next_to_the_field(self, world, client):
        response = client("editor").post("/harvest/new", data=_form_data(
            owner_org=world.org_id, config='{"default_tags": ["geo",]', name="bad-config"))

        assert response.status_code == 200
        assert _field_error(_body(response), "config").startswith(
            "Error parsing the configuration options:")
        assert "The form contains invalid entries:" in _text(response)
        assert model.Package.get("bad-config") is None

    def test_duplicate_url_is_shown_next_to_the_field(self, world, fresh_source, client):
        existing = fresh_source()

        response = client("editor").post("/harvest/new", data=_form_data(
            owner_org=world.org_id, url=existing["url"] + "/", name="duplicate-url"))

        assert response.status_code == 200
        assert "There already is a Harvest Source for this URL" in _field_error(
            _body(response), "url")
        assert model.Package.get("duplicate-url") is None

    def test_unknown_harvester_is_an_error(self, world, client):
        response = client("editor").post("/harvest/new", data=_form_data(
            owner_org=world.org_id, source_type="no-such-harvester", name="bad-type"))

        assert response.status_code == 200
        assert "Unknown harvester type: no-such-harvester" in _text(response)
        assert 'value="no-such-harvester" checked="checked"' in _body(response)

    def test_anonymous_may_not_post(self, world, client):
        response = client("anonymous").post("/harvest/new", data=_form_data(
            name="anonymous-source"), follow_redirects=False)

        assert response.status_code == 403
        assert model.Package.get("anonymous-source") is None

    def test_edit_form_offers_both_delete_links(self, world, client):
        body = _body(client("admin").get(_urls(world)["edit"]))

        name = world.source["name"]
        assert re.search(r'href="/harvest/delete/{}" data-module="confirm-action"'.format(name),
                         body)
        assert re.search(r'href="/harvest/delete/{}\?clear=True" data-module="confirm-action"'
                         .format(name), body)
        assert 'id="field-state"' not in body

    def test_edit_of_a_deleted_source_offers_the_state(self, fresh_source, client):
        source = fresh_source()
        client("editor").post("/harvest/delete/{}".format(source["name"]))

        body = _body(client("editor").get("/harvest/edit/{}".format(source["name"])))

        assert 'id="field-state"' in body
        assert "/harvest/delete/" not in body

    def test_edit_with_invalid_config(self, world, client):
        data = _form_data(url=world.source["url"], name=world.source["name"],
                          owner_org=world.org_id, config="not json")

        response = client("editor").post(_urls(world)["edit"], data=data)

        assert response.status_code == 200
        assert _field_error(_body(response), "config").startswith(
            "Error parsing the configuration options:")
        model.Session.remove()
        assert HarvestSource.get(world.source["id"]).config != "not json"


# ---------------------------------------------------------------------------
# CSRF: POST without the token is refused, with it accepted
# ---------------------------------------------------------------------------

@pytest.mark.usefixtures("csrf_enabled")
class TestCSRF:
    def test_state_change_without_token_is_refused(self, fresh_source, client):
        source = fresh_source()

        response = client("editor").post("/harvest/refresh/{}".format(source["id"]),
                                         follow_redirects=False)

        assert response.status_code == 400
        assert _job_count(source["id"]) == 0

    @pytest.mark.parametrize("action", ("refresh", "clear", "delete"))
    def test_confirmation_form_posts_with_its_token(self, fresh_source, client, action):
        source = fresh_source()
        browser = client("editor")
        page = browser.get("/harvest/{}/{}".format(action, source["name"]))
        name, token = csrf_field(_body(page))

        response = browser.post("/harvest/{}/{}".format(action, source["name"]),
                                data={name: token}, follow_redirects=False)

        assert response.status_code == 302
        model.Session.remove()
        if action == "refresh":
            assert _job_count(source["id"]) == 1
        if action == "delete":
            assert HarvestSource.get(source["id"]).active is False

    def test_abort_without_token_is_refused(self, world, client):
        response = client("sysadmin").post(_urls(world)["job_abort"], follow_redirects=False)

        assert response.status_code == 400
        assert HarvestJob.get(world.running_job_id).status == "Running"

    def test_still_refused_after_an_anonymous_post(self, fresh_source, client):
        """CKAN 2.12 exempts a view from CSRF checks for good once an anonymous
        user posted to it; the harvest views check the token themselves."""
        source = fresh_source()
        client("anonymous").post("/harvest/refresh/{}".format(source["id"]))

        response = client("editor").post("/harvest/refresh/{}".format(source["id"]),
                                         follow_redirects=False)

        assert response.status_code == 400
        assert _job_count(source["id"]) == 0

    def test_source_form_carries_the_token(self, world, client):
        browser = client("editor")
        name, token = csrf_field(_body(browser.get("/harvest/new")))

        response = browser.post("/harvest/new", data=dict(_form_data(
            owner_org=world.org_id, name="csrf-accepted", url="http://csrf.example.org"),
            **{name: token}), follow_redirects=False)

        assert response.status_code == 302
        assert model.Package.get("csrf-accepted") is not None
