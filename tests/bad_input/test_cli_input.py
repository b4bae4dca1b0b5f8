"""Bad command-line arguments: one clear line on stderr, no traceback, nothing
changed (the harvest tables and datasets are compared before and after)."""
from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from ckan import model
from ckan.cli.cli import ckan as ckan_command

from ckanext.harvest.tests import factories as harvest_factories
from tests.support.marks import harvest_site

pytestmark = harvest_site("harvest ckan_harvester test_harvester", index=False,
                          fixtures=("with_extended_cli",))

_TABLES = ("harvest_source", "harvest_job", "harvest_object", "harvest_gather_error",
           "harvest_object_error", "package", "\"group\"", "member")


def _state() -> list[Any]:
    model.Session.remove()
    with model.meta.engine.connect() as connection:
        return [connection.execute(sa.text(
            "SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), ''))"
            " FROM {} x".format(table))).one() for table in _TABLES]


# (case id, arguments, exit code, the error text on stderr)
CASES: list[tuple[str, list[str], int, str]] = [
    ("create-invalid-config", ["source", "create", "s1", "http://a.example.org/", "ckan",
                               "T", "true", "", "MANUAL", "{oops"], 1,
     "Error parsing the configuration options"),
    ("create-bad-url", ["source", "create", "s2", "ftp://a.example.org/", "ckan"], 1,
     "The URL must start with http:// or https://"),
    ("create-unknown-type", ["source", "create", "s3", "http://b.example.org/", "csw"], 1,
     "Unknown harvester type: csw"),
    ("create-bad-frequency", ["source", "create", "s4", "http://c.example.org/", "ckan",
                              "T", "true", "", "HOURLY"], 1,
     "Frequency HOURLY not recognised"),
    ("create-unknown-org", ["source", "create", "s5", "http://d.example.org/", "ckan",
                            "T", "true", "no-such-org"], 1,
     "Owner org: Organization does not exist"),
    ("show-unknown", ["source", "show", "nope"], 1, "Source <nope> not found."),
    ("remove-unknown", ["source", "remove", "nope"], 1, "Source <nope> not found."),
    ("clear-unknown", ["source", "clear", "nope"], 1, "Source <nope> not found."),
    ("job-unknown-source", ["job", "nope"], 1, "Source <nope> not found."),
    ("job-abort-unknown", ["job-abort", "nope"], 1, "Job not found."),
    ("run-test-unknown", ["run-test", "nope"], 1, "Source <nope> not found."),
    ("abort-failed-jobs-bad-life-span", ["abort-failed-jobs", "soon"], 2,
     "'soon' is not a valid integer"),
    # "import" goes on with the other sources when one is unknown (exit status 0)
    ("import-unknown-source", ["import", "nope"], 0, "Source <nope> not found."),
    ("unknown-command", ["harvest-everything"], 2, "No such command"),
    ("clean-jobs-bad-days", ["clean-jobs", "--older-than", "soon"], 2,
     "'soon' is not a number of days: give a whole number, 1 or more"),
    ("clean-jobs-negative-days", ["clean-jobs", "--older-than", "-3"], 2,
     "'-3' is not a number of days: give a whole number, 1 or more"),
    ("clean-jobs-zero-keep", ["clean-jobs", "--keep", "0"], 2,
     "'0' is not a number of jobs: give a whole number, 1 or more"),
    ("clean-jobs-fraction-keep", ["clean-jobs", "--keep", "2.5"], 2,
     "'2.5' is not a number of jobs: give a whole number, 1 or more"),
    ("clean-jobs-unknown-source", ["clean-jobs", "--keep", "1", "--source", "nope"], 1,
     "Source <nope> not found."),
]


@pytest.mark.parametrize(("args", "exit_code", "message"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_arguments_get_one_clear_error(cli: Any, args: list[str], exit_code: int,
                                           message: str) -> None:
    harvest_factories.HarvestSource(config=json.dumps({"datasets": []}),
                                    source_type="test")
    before = _state()

    result = cli.invoke(ckan_command, ["harvester", *args])

    assert result.exit_code == exit_code, result.output
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception))
    assert _state() == before
