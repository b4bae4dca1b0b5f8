"""A whole harvest, in-process: gather, fetch, import and finishing the job."""
from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from ckan import model
from ckan.plugins import get_plugin, toolkit

from ckanext.harvest.tests.lib import run_harvest
from tests.support.marks import harvest_site

pytestmark = harvest_site("harvest test_harvester test_harvester2", fixtures=("clean_queues",))

URL = "http://lifecycle.example.org/"
CONFIG = {"datasets": [{"guid": "a", "title": "A"}, {"guid": "b"}],
          "import": {"b": "error"}}


def _rows(sql: str, **params: Any) -> list[Any]:
    """Committed rows, read on a connection of their own."""
    with model.meta.engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params))


def test_run_harvest_imports_good_records_records_errors_and_finishes_the_job():
    results = run_harvest(URL, get_plugin("test_harvester"), json.dumps(CONFIG))

    assert set(results) == {"a", "b"}
    a, b = results["a"], results["b"]
    assert (a["state"], a["report_status"], a["errors"]) == ("COMPLETE", "added", [])
    assert (a["dataset"]["name"], a["dataset"]["title"]) == ("harvested-a", "A")
    assert (b["state"], b["report_status"]) == ("ERROR", "errored")
    assert [(e.message, e.stage) for e in b["errors"]] == [
        ("Import failed on purpose", "Import")
    ]
    assert "dataset" not in b
    packages = _rows("select name, state from package where type = 'dataset'")
    assert [tuple(row) for row in packages] == [("harvested-a", "active")]
    objects = _rows("select guid, current, package_id from harvest_object")
    assert sorted(tuple(row) for row in objects) == [
        ("a", True, a["dataset"]["id"]), ("b", False, None)
    ]
    source = toolkit.get_action("harvest_source_show")(
        {"ignore_auth": True}, {"url": URL}
    )
    jobs = toolkit.get_action("harvest_job_list")(
        {"ignore_auth": True}, {"source_id": source["id"]}
    )
    assert len(jobs) == 1
    job = jobs[0]
    assert job["status"] == "Finished"
    assert job["gather_finished"] is not None and job["finished"] is not None
    assert job["stats"] == {
        "added": 1, "updated": 0, "not modified": 0, "errored": 1, "deleted": 0
    }
