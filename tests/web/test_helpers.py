"""The template helpers, called directly in a request of the test site."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest
from ckan import model
from flask_login import login_user
from markupsafe import Markup

from ckanext.harvest import helpers
from ckanext.harvest.model import HarvestJob, JobStatus, utcnow
from tests.web.conftest import WebSite, World

pytestmark = pytest.mark.usefixtures("clean_queues")


@pytest.fixture
def request_as(web_site: WebSite) -> Iterator[Callable[..., Any]]:
    """``request_as(role, path='/')``: enter a request of that user."""
    contexts: list[Any] = []

    def enter(role: str, path: str = "/") -> None:
        context = web_site.app.flask_app.test_request_context(path)
        context.push()
        contexts.append(context)
        name = web_site.world.users[role] if web_site.world else ""
        if name:
            login_user(model.User.get(name))

    yield enter
    for context in reversed(contexts):
        context.pop()


class TestSpecHelpers:
    def test_frequencies(self, request_as):
        request_as("anonymous")

        assert helpers.harvest_frequencies() == [
            {"text": "Manual", "value": "MANUAL"}, {"text": "Monthly", "value": "MONTHLY"},
            {"text": "Weekly", "value": "WEEKLY"}, {"text": "Biweekly", "value": "BIWEEKLY"},
            {"text": "Daily", "value": "DAILY"}, {"text": "Always", "value": "ALWAYS"},
        ]

    def test_harvester_types(self, request_as):
        request_as("anonymous")

        types = helpers.harvester_types()

        assert {"text": "Test", "value": "test"} in types
        assert {"text": "Test 2", "value": "test2"} in types

    def test_harvesters_info(self, request_as):
        request_as("anonymous")

        info = {h["name"]: h for h in helpers.harvesters_info()}

        assert info["test2"]["show_config"] is True
        assert info["test"]["show_config"] is False

    def test_extra_fields(self, request_as):
        request_as("anonymous")

        assert helpers.harvest_source_extra_fields() == {"test2": ["custom_option"]}

    def test_link_for_object_by_id(self, request_as, world: World):
        request_as("anonymous")

        link = helpers.link_for_harvest_object(id=world.object_id)

        assert link == Markup('<a href="/harvest/object/{0}">{0}</a>'.format(world.object_id))

    def test_link_for_object_by_guid(self, request_as, world: World):
        """Quirk Q52: the original read ``.id`` off a dict here."""
        request_as("anonymous")

        link = helpers.link_for_harvest_object(guid="doc-xml", text="<b>Raw</b>")

        assert link == Markup('<a href="/harvest/object/{}">&lt;b&gt;Raw&lt;/b&gt;</a>'.format(
            world.xml_object_id))

    def test_link_for_object_without_reference(self, request_as):
        request_as("anonymous")

        assert helpers.link_for_harvest_object() is None

    def test_get_harvest_source_by_id_or_name(self, request_as, world: World):
        request_as("anonymous")

        by_name = helpers.get_harvest_source(world.source["name"])

        assert by_name is not None and by_name["id"] == world.source["id"]
        assert helpers.get_harvest_source() is None

    def test_get_harvest_source_of_the_page(self, request_as, world: World):
        from ckan.plugins import toolkit

        request_as("anonymous")
        toolkit.g.pkg = model.Package.get(world.idle_source["id"])

        source = helpers.get_harvest_source()

        assert source is not None and source["title"] == "Idle source"

    def test_package_count(self, request_as, world: World):
        request_as("anonymous")

        assert helpers.package_count_for_source(world.source["id"]) == 2
        assert helpers.package_count_for_source(world.idle_source["id"]) == 0

    def test_package_list(self, request_as, world: World):
        request_as("anonymous")

        listed = helpers.package_list_for_source(world.source["id"])
        empty = helpers.package_list_for_source(world.idle_source["id"])

        assert "/dataset/harvested-oak" in listed and "/dataset/harvested-elm" in listed
        assert "There are no datasets associated to this harvest source." in empty

    def test_package_list_bad_page_is_the_first(self, request_as, world: World):
        request_as("anonymous", "/?page=nonsense")

        assert "/dataset/harvested-oak" in helpers.package_list_for_source(world.source["id"])


class TestJobHelpers:
    def test_chart_data(self, request_as, world: World):
        request_as("editor")

        chart = helpers.harvest_job_chart_data(world.source["id"])

        assert chart is not None
        assert [job["id"] for job in chart["jobs"]] == [world.first_job_id, world.job_id]
        assert [s["key"] for s in chart["series"]] == [
            "added", "updated", "not modified", "errored"]
        first, latest = chart["jobs"]
        assert first["counts"]["added"] == 2 and first["total"] == 2
        assert latest["counts"] == {"added": 0, "updated": 1, "not modified": 1,
                                    "deleted": 0, "errored": 3}
        plot = chart["plot"]
        top = chart["ticks"][-1]
        assert chart["ticks"][0] == {"value": 0, "y": plot["bottom"]}
        assert top["value"] >= 5
        # stacked segments: bottom to top, heights proportional to the counts
        segments = latest["segments"]
        assert segments[0]["y"] + segments[0]["height"] == pytest.approx(plot["bottom"], abs=0.2)
        for lower, upper in zip(segments, segments[1:]):
            assert upper["y"] + upper["height"] == pytest.approx(lower["y"], abs=0.2)
        unit = (plot["bottom"] - top["y"]) / top["value"]
        assert segments[-1]["height"] == pytest.approx(3 * unit, abs=0.2)

    def test_chart_keeps_the_last_ten_finished_jobs(self, request_as, fresh_source):
        source = fresh_source()
        for _ in range(12):
            HarvestJob(source_id=source["id"], status=JobStatus.FINISHED.value).save()
        HarvestJob(source_id=source["id"], status=JobStatus.RUNNING.value).save()
        ids = [job.id for job in model.Session.query(HarvestJob).filter(
            HarvestJob.source_id == source["id"],
            HarvestJob.status == JobStatus.FINISHED.value,
        ).order_by(HarvestJob.created)]
        request_as("admin")

        chart = helpers.harvest_job_chart_data(source["id"])

        assert chart is not None
        assert [job["id"] for job in chart["jobs"]] == ids[-10:]
        assert all(job["segments"] == [] for job in chart["jobs"])

    def test_no_chart_without_finished_jobs_or_permission(self, request_as, world: World):
        request_as("editor")
        assert helpers.harvest_job_chart_data(world.idle_source["id"]) is None
        assert helpers.harvest_job_chart_data(world.running_source["id"]) is None

    def test_no_chart_for_those_who_may_not_see_jobs(self, request_as, world: World):
        request_as("member")

        assert helpers.harvest_job_chart_data(world.source["id"]) is None

    def test_progress_of_a_running_job(self, request_as, world: World):
        request_as("editor")
        job = {"id": world.running_job_id, "status": "Running",
               "gather_finished": utcnow().isoformat(),
               "gather_started": utcnow().replace(microsecond=0).isoformat()}

        progress = helpers.harvest_job_progress(job)

        assert progress is not None
        assert (progress["done"], progress["total"], progress["percent"]) == (1, 3, 33)
        assert progress["gathering"] is False
        assert progress["elapsed"].endswith(" s")

    def test_no_progress_for_finished_jobs(self, request_as, world: World):
        request_as("editor")

        assert helpers.harvest_job_progress({"id": world.job_id, "status": "Finished"}) is None

    @pytest.mark.parametrize("seconds, text", [
        (0, "0 s"), (45, "45 s"), (125, "2 min 5 s"), (3780, "1 h 3 min"),
        (187200, "2 d 4 h"), (None, "0 s"), (-5, "0 s"),
    ])
    def test_duration(self, request_as, seconds, text):
        request_as("anonymous")

        assert helpers.harvest_duration(seconds) == text

    def test_stats_items(self, request_as):
        request_as("anonymous")

        items = helpers.harvest_stats_items({"added": 2, "errored": 1, None: 4})

        assert [(i["diff"], i["count"], i["label"]) for i in items] == [
            ("added", 2, "added"), ("updated", 0, "updated"),
            ("not modified", 0, "not modified"), ("deleted", 0, "deleted"),
            ("error", 1, "errors")]
        assert [i["diff"] for i in helpers.harvest_stats_items(
            {"added": 2, "errored": 1}, hide_zero=True)] == ["added", "error"]

    def test_errors_by_message(self, request_as):
        request_as("anonymous")
        report = {"object_errors": {
            "o1": {"guid": "g1", "errors": [{"message": "Bad", "line": 3}]},
            "o2": {"guid": "g2", "original_url": "http://r/g2",
                   "errors": [{"message": "Bad", "line": None}, {"message": "Worse"}]},
        }}

        groups = helpers.harvest_errors_by_message(report)

        assert [(g["message"], g["count"]) for g in groups] == [("Bad", 2), ("Worse", 1)]
        assert groups[0]["objects"] == [
            {"id": "o1", "guid": "g1", "line": 3, "original_url": None},
            {"id": "o2", "guid": "g2", "line": None, "original_url": "http://r/g2"},
        ]


class TestTexts:
    @pytest.mark.parametrize("action, clear, words", [
        ("refresh", False, "new harvest job"),
        ("clear", False, "delete every dataset"),
        ("job_abort", False, "Stop this job"),
        ("delete", False, "Its datasets stay"),
        ("delete", True, "every dataset harvested from it"),
    ])
    def test_confirm_texts(self, request_as, action, clear, words):
        request_as("anonymous")

        assert words in helpers.harvest_confirm_text(action, clear)

    def test_facet_labels(self, request_as):
        request_as("anonymous")

        frequency = helpers.harvest_facet_label("frequency")
        source_type = helpers.harvest_facet_label("source_type")

        assert frequency is not None and frequency({"display_name": "BIWEEKLY"}) == "Biweekly"
        assert source_type is not None and source_type({"display_name": "test2"}) == "Test 2"
        assert source_type({"display_name": "gone"}) == "gone"
        assert helpers.harvest_facet_label("tags") is None

    def test_every_helper_is_registered(self):
        from ckanext.harvest.plugin import Harvest

        registered = Harvest().get_helpers()

        for name in ("package_list_for_source", "package_count_for_source", "harvesters_info",
                     "harvester_types", "harvest_frequencies", "link_for_harvest_object",
                     "harvest_source_extra_fields", "get_harvest_source"):
            assert callable(registered[name])
