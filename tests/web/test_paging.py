"""Long lists on the pages: the job list and the job report come a page at a
time (``ckan.harvest.jobs_per_page``, ``ckan.harvest.report_errors_per_page``),
with CKAN's pager; the counts shown are those of the whole job."""
from __future__ import annotations

import datetime
import hashlib
import html
import re
from typing import Any

from ckan import model
from ckan.common import config

from ckanext.harvest import options
from ckanext.harvest.model import (
    HarvestGatherError,
    HarvestJob,
    HarvestObject,
    HarvestObjectError,
)

START = datetime.datetime(2025, 6, 1, 9, 0, 0)


def _text(response: Any) -> str:
    assert response.status_code == 200, response.status_code
    text = re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))
    return " ".join(html.unescape(text).split())


def _jobs(source_id: str, count: int) -> list[str]:
    """Finished jobs one hour apart; their ids newest first."""
    ids = []
    for n in range(count):
        job = HarvestJob(source_id=source_id, status="Finished",
                         created=START + datetime.timedelta(hours=n),
                         gather_started=START, gather_finished=START, finished=START)
        job.save()
        ids.append(job.id)
    model.Session.remove()
    return list(reversed(ids))


def _errored_job(source_id: str, objects: int, gather_errors: int = 0) -> tuple[str, list[str]]:
    """A finished job with ``objects`` objects with one error each; the job id
    and the objects' guids in object id order."""
    (job_id,) = _jobs(source_id, 1)
    made = []
    for n in range(objects):
        obj = HarvestObject(job=HarvestJob.get(job_id), harvest_source_id=source_id,
                            guid="broken-%02d" % n, state="ERROR", report_status="errored")
        obj.save()
        HarvestObjectError(harvest_object_id=obj.id, message="Broken record",
                           stage="Import").save()
        made.append((obj.id, obj.guid))
    for n in range(gather_errors):
        HarvestGatherError(harvest_job_id=job_id, message="Gather trouble %d" % n).save()
    model.Session.remove()
    return job_id, [guid for _id, guid in sorted(made)]


def test_job_list_shows_a_page_of_jobs_with_a_pager(fresh_source, client):
    source = fresh_source()
    newest_first = _jobs(source["id"], 5)
    config[options.JOBS_PER_PAGE] = 2
    url = "/harvest/{}/job".format(source["name"])

    first = _text(client("sysadmin").get(url))
    last_response = client("sysadmin").get(url, query_string={"page": 3})
    last = _text(last_response)

    assert [job_id in first for job_id in newest_first] == [True, True, False, False, False]
    assert [job_id in last for job_id in newest_first] == [False] * 4 + [True]
    assert 'href="/harvest/{}/job?page=3"'.format(source["name"]) in (
        client("sysadmin").get(url).get_data(as_text=True))
    assert model.Session.query(HarvestJob).filter_by(source_id=source["id"]).count() == 5


def test_job_list_of_a_few_jobs_has_no_pager(fresh_source, client):
    source = fresh_source()
    newest_first = _jobs(source["id"], 2)

    body = client("sysadmin").get("/harvest/{}/job".format(source["name"])).get_data(
        as_text=True)

    assert all(job_id in body for job_id in newest_first)
    assert "?page=2" not in body


def test_job_report_shows_a_page_of_documents_and_the_total(fresh_source, client):
    source = fresh_source()
    job_id, guids = _errored_job(source["id"], 5, gather_errors=1)
    config[options.REPORT_ERRORS_PER_PAGE] = 2
    url = "/harvest/{}/job/{}".format(source["name"], job_id)

    first = _text(client("sysadmin").get(url))
    third = _text(client("sysadmin").get(url, query_string={"page": 3}))
    body = client("sysadmin").get(url).get_data(as_text=True)

    assert "5 documents with errors" in first and "5 documents with errors" in third
    assert [guid in first for guid in guids] == [True, True, False, False, False]
    assert [guid in third for guid in guids] == [False] * 4 + [True]
    # The gather errors are paged too; their summary (a count) is on every page.
    assert "Gather trouble 0" in first.split("Error Report")[1]
    assert "Gather trouble 0" not in third.split("Error Report")[1]
    assert 'href="/harvest/{}/job/{}?page=2"'.format(source["name"], job_id) in body
    # The summary counts the whole job, not the page.
    assert re.search(r'<td class="count">5</td>\s*<td>[^<]*</td>\s*'
                     r'<td><pre class="harvest-error-message">Broken record</pre>', body)


def test_last_job_report_pages_link_to_the_last_job_page(fresh_source, client):
    source = fresh_source()
    _errored_job(source["id"], 3)
    config[options.REPORT_ERRORS_PER_PAGE] = 1
    url = "/harvest/{}/job/last".format(source["name"])

    body = client("sysadmin").get(url, query_string={"page": 2}).get_data(as_text=True)

    assert 'href="/harvest/{}/job/last?page=3"'.format(source["name"]) in body
    assert "3 documents with errors" in _text(client("sysadmin").get(url))


def test_a_page_that_is_not_a_positive_number_is_a_bad_request(fresh_source, client):
    source = fresh_source()
    _jobs(source["id"], 1)

    answers = [client("sysadmin").get("/harvest/{}/job".format(source["name"]),
                                      query_string={"page": page}).status_code
               for page in ("two", "0", "-1")]

    assert answers == [400, 400, 400]


def test_message_groups_and_a_groups_errors_come_a_page_at_a_time(fresh_source, client):
    # 5 objects with "Broken record", 3 gather errors of 3 messages: 4 groups.
    source = fresh_source()
    job_id, guids = _errored_job(source["id"], 5, gather_errors=3)
    config[options.REPORT_ERRORS_PER_PAGE] = 2
    url = "/harvest/{}/job/{}".format(source["name"], job_id)
    group = hashlib.md5(b"Broken record").hexdigest()

    first = _text(client("sysadmin").get(url))
    second_body = client("sysadmin").get(url, query_string={"gpage": 2}).get_data(
        as_text=True)
    errors_1 = _text(client("sysadmin").get(url, query_string={"group": group}))
    errors_3 = _text(client("sysadmin").get(url, query_string={"group": group, "gpage": 3}))

    assert "8 errors, 4 distinct messages" in first
    groups_on_1 = [m for m in ("Broken record", "Gather trouble 0", "Gather trouble 1",
                               "Gather trouble 2") if m in first.split("Error Report")[0]]
    assert groups_on_1 == ["Broken record", "Gather trouble 0"]
    assert "Gather trouble 2" in html.unescape(second_body).split("Error Report")[0]
    assert "gpage=2" in client("sysadmin").get(url).get_data(as_text=True)
    created_order = sorted(guids)  # broken-00 ... (errors are listed oldest first)
    assert [guid in errors_1 for guid in created_order] == [True, True, False, False, False]
    assert [guid in errors_3 for guid in created_order] == [False] * 4 + [True]
