"""``ckan harvester ...``: every command, its output, exit status and error lines.

Commands are invoked through CKAN's own ``ckan`` click group with the ``cli``
fixture (a click ``CliRunner``). ``with_extended_cli`` makes ``ckan`` load the
test's configuration (plugins ``harvest test_harvester``) instead of the ini
file; the ``harvester_command`` fixture registers the ``harvester`` group on
``ckan`` when the ``harvest`` plugin does not (yet) provide it through ``IClick``.

A few tests run the real ``ckan`` executable in a subprocess, against the same
database (the ``CKAN_*`` environment variables are passed on).
"""
from __future__ import annotations

import datetime
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import click
import pytest
import redis
import sqlalchemy as sa
from ckan import model
from ckan.cli.cli import ckan as ckan_command
from ckan.plugins import toolkit

from ckanext.harvest import cli as harvest_cli
from ckanext.harvest import queue
from ckanext.harvest.lib import hashes
from ckanext.harvest.model import (
    HarvestJob,
    HarvestLog,
    HarvestObject,
    HarvestSource,
)
from ckanext.harvest.plugin import Harvest
from ckanext.harvest.tests import factories as harvest_factories
from tests.support.jobs import old_job
from tests.support.marks import harvest_site

pytestmark = harvest_site(
    fixtures=("clean_queues", "with_extended_cli", "harvester_command"))

REPO = Path(__file__).resolve().parents[1]

COMMANDS = [
    "source", "sources", "job", "jobs", "job-abort", "abort-failed-jobs",
    "purge-queues", "gather-consumer", "fetch-consumer", "run", "run-test", "import",
    "clean-harvest-log", "job-all", "reindex", "harvesters_info", "preview",
    "job-status", "clean-jobs",
]
SOURCE_COMMANDS = ["create", "show", "update", "remove", "clear", "clear-history", "detach"]
ALIASES = [
    "rmsource", "clearsource", "clearsource_history", "job_abort", "run_test",
    "gather_consumer", "fetch_consumer", "purge_queues", "clean_harvest_log",
]
DATASETS = [{"guid": "g1", "title": "Trees"}, {"guid": "g2", "title": "Rivers"}]

#: The original extension's help texts, quoted in the spec (cli.md) only to say
#: what each command means: our help must say it in its own words.
ORIGINAL_HELP = [
    "Harvests remotely mastered metadata.",
    "Manage harvest sources",
    "Create new harvest source.",
    "Shows a harvest source.",
    "Remove (deactivate) a harvester source, whilst leaving any related datasets, "
    "jobs and objects.",
    "Clears all datasets, jobs and objects related to a harvest source, but keeps "
    "the source itself.",
    "If no source id is given the history for all harvest sources (maximum is 1000) "
    "will be cleared.",
    "Lists harvest sources.",
    "If 'all' is defined, it also shows the Inactive sources",
    "Create new harvest job and runs it (puts it on the gather queue).",
    "Lists harvest jobs.",
    'Marks a job as "Aborted" so that the source can be restarted afresh.',
    "If source_id provided as included, then only it's failed jobs will be aborted. "
    "You can use comma as a separator to provide multiple source_id's",
    "If source_id provided as excluded, all sources failed jobs, except for that "
    "will be aborted. You can use comma as a separator to provide multiple "
    "source_id's",
    'Abort all jobs which are in a "limbo state" where the job has run with errors '
    "but the harvester run command will not mark it as finished, and therefore you "
    "cannot run another job.",
    "Removes all jobs from fetch and gather queue.",
    "Starts the consumer for the gathering queue.",
    "Starts the consumer for the fetching queue.",
    "Starts any harvest jobs that have been created by putting them onto the "
    "gather queue.",
    "Runs a harvest - for testing only.",
    "Do not join harvest objects to existing datasets",
    "Id of the harvest object to which perform the import stage",
    "Id of the package whose harvest object to perform the import stage for",
    "Guid of the harvest object to which perform the import stage for",
    "A string containing hex digits that represent which of the 16 harvest object "
    "segments to import. e.g. 15af will run segments 1,5,a,f",
    "Perform the import stage with the last fetched objects, for a certain source "
    "or a single harvest object.",
    "Clean-up mechanism for the harvest log table.",
    "Create new harvest jobs for all active sources.",
    "Reindexes the harvest source datasets.",
]


# --- fixtures and helpers -----------------------------------------------------


def _plugin_registers_cli() -> bool:
    return hasattr(Harvest, "get_commands")


@pytest.fixture
def harvester_command(monkeypatch):
    """Make ``ckan harvester`` available even if the plugin does not add it."""
    from ckan.cli import cli as ckan_cli

    if _plugin_registers_cli():
        return
    original = ckan_cli._add_external_commands

    def add_external_commands(ctx: Any) -> None:
        original(ctx)
        ctx.command.add_command(harvest_cli.harvester)

    monkeypatch.setattr(ckan_cli, "_add_external_commands", add_external_commands)


@pytest.fixture
def run(cli):
    """``run("sources", "all")`` invokes ``ckan harvester sources all``."""

    def _run(*args: str, input: Optional[str] = None) -> Any:
        return cli.invoke(ckan_command, ["harvester", *args], input=input)

    return _run


@pytest.fixture
def redis_conn(ckan_config):
    return redis.Redis.from_url(ckan_config["ckan.redis.url"], decode_responses=True)


def _gather_key() -> str:
    return queue.get_gather_routing_key()


def _fetch_key() -> str:
    return queue.get_fetch_routing_key()


def _source(**kwargs: Any) -> Any:
    kwargs.setdefault("config", json.dumps({"datasets": DATASETS}))
    kwargs.setdefault("frequency", "MANUAL")
    return harvest_factories.HarvestSource(**kwargs)


def _harvested_source(**kwargs: Any) -> Any:
    """A source whose datasets g1 and g2 have been harvested (no queues)."""
    from ckanext.harvest.tests.lib import run_harvest_job

    source = _source(**kwargs)
    job = harvest_factories.HarvestJobObj(source=HarvestSource.get(source["id"]))
    run_harvest_job(job, queue.get_harvester("test"))
    return source


def _jobs_of(source_id: str) -> list[HarvestJob]:
    model.Session.expire_all()
    return model.Session.query(HarvestJob).filter_by(source_id=source_id).all()


def _source_block(source: dict[str, Any], jobs: int = 0, name: bool = True,
                  frequency: str = "MANUAL", active: bool = True) -> str:
    lines = ["Source id: {}".format(source["id"])]
    if name:
        lines.append("\tname: {}".format(source["name"]))
    lines += [
        "\turl: {}".format(source["url"]),
        "\ttype: test",
        "\tactive: {}".format(active),
        "\tfrequency: {}".format(frequency),
        "\tjobs: {}".format(jobs),
    ]
    return "\n".join(lines) + "\n\n"


def _job_block(job_id: str, status: str, source_id: str) -> str:
    return (
        "\tJob id: {}\n\t\tstatus: {}\n\t\tsource: {}\n\t\tobjects: 0\n"
        "\t\tgather_errors: 0\n".format(job_id, status, source_id)
    )


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9_']+", text.lower())


def _shared_runs(text: str, sentence: str, length: int = 5) -> list[str]:
    """Runs of ``length`` words (the whole sentence if shorter) of ``sentence``
    that also occur in ``text``, whatever the case, punctuation or wrapping."""
    padded = " {} ".format(" ".join(_words(text)))
    words = _words(sentence)
    size = min(length, len(words))
    runs = (" ".join(words[i:i + size]) for i in range(len(words) - size + 1))
    return [run for run in runs if " {} ".format(run) in padded]


def _dataset_exists(name: str) -> bool:
    model.Session.expire_all()
    package = model.Package.get(name)
    return package is not None and package.state == "active"


# --- the group ------------------------------------------------------------------


def test_help_lists_every_command_and_hides_the_older_spellings(run):
    result = run("--help")

    assert result.exit_code == 0, result.output
    assert "Harvest datasets from remote catalogues into this CKAN site." in result.stdout
    listed = [line.split()[0] for line in
              result.stdout.split("Commands:")[1].strip().splitlines()]
    assert sorted(listed) == sorted(COMMANDS)
    assert not set(ALIASES) & set(listed)


def test_source_help_lists_its_subcommands(run):
    result = run("source", "--help")

    assert result.exit_code == 0, result.output
    listed = [line.split()[0] for line in
              result.stdout.split("Commands:")[1].strip().splitlines()]
    assert sorted(listed) == sorted(SOURCE_COMMANDS)


def test_help_texts_do_not_repeat_the_original_wording(run):
    invocations = (
        [[]] + [[command] for command in COMMANDS]
        + [["source", command] for command in SOURCE_COMMANDS]
        + [[alias] for alias in ALIASES]
    )
    repeated = {}
    for args in invocations:
        result = run(*args, "--help")
        assert result.exit_code == 0, (args, result.output)
        for sentence in ORIGINAL_HELP:
            shared = _shared_runs(result.stdout, sentence)
            if shared:
                repeated[(" ".join(args) or "harvester", sentence)] = shared

    assert repeated == {}


def test_ckan_help_lists_the_harvester_group(run, cli):
    result = cli.invoke(ckan_command, ["--help"])

    assert result.exit_code == 0, result.output
    assert "harvester" in result.stdout


# --- source create / show / remove / clear / clear-history ------------------------


def test_source_create_prints_the_source_and_the_source_count(run):
    harvest_factories.HarvestSource()

    result = run("source", "create", "my-source", "http://example.com/cat", "test",
                 "My title")

    assert result.exit_code == 0, result.output
    source = toolkit.get_action("harvest_source_show")(
        {"ignore_auth": True}, {"id": "my-source"})
    assert source["title"] == "My title"
    assert source["source_type"] == "test"
    assert source["frequency"] == "MANUAL"
    assert result.stdout == (
        "Created new harvest source:\n" + _source_block(source)
        + "There are 2 harvest sources\n"
    )
    assert _jobs_of(source["id"]) == []


def test_source_create_with_empty_frequency_also_starts_a_job(run, redis_conn):
    result = run("source", "create", "my-source", "http://example.com/cat", "test",
                 "My title", "true", "", "")

    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(
        "There is 1 harvest source\n"
        "A new Harvest Job for this source has also been created\n"
    )
    source = HarvestSource.get("http://example.com/cat", attr="url")
    [job] = _jobs_of(source.id)
    assert job.status == "Running"
    assert redis_conn.lrange(_gather_key(), 0, -1) == [
        json.dumps({"harvest_job_id": job.id})
    ]


def test_source_create_validation_error_lists_the_fields(run):
    result = run("source", "create", "my-source", "http://example.com/cat", "nope")

    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "Validation error:"
    assert any(line.startswith("\tSource type: ") for line in lines[1:-1])
    assert all(line.startswith("\t") for line in lines[1:-1])
    assert lines[-1] == "Aborted!"
    assert model.Session.query(HarvestSource).count() == 0


def test_older_source_spelling_creates_a_source(run):
    result = run("source", "old-style", "http://example.com/old", "test", "Old", "true",
                 "", "WEEKLY", '{"datasets": []}')

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Created new harvest source:\n")
    source = toolkit.get_action("harvest_source_show")(
        {"ignore_auth": True}, {"id": "old-style"})
    assert source["frequency"] == "WEEKLY"
    assert source["config"] == '{"datasets": []}'


def test_source_show_prints_the_source_block(run):
    source = _source()
    harvest_factories.HarvestJob(source=HarvestSource.get(source["id"]))

    result = run("source", "show", source["name"])

    assert result.exit_code == 0, result.output
    assert result.stdout == _source_block(source, jobs=1)


def test_source_show_unknown_source(run):
    result = run("source", "show", "missing")

    assert result.exit_code == 1
    assert result.stderr == "Source <missing> not found.\nAborted!\n"
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [["source", "remove"], ["rmsource"]])
def test_source_remove_deactivates_the_source(run, command):
    source = _harvested_source()

    result = run(*command, source["name"])

    assert result.exit_code == 0, result.output
    assert result.stdout == "Removed harvest source: {}\n".format(source["name"])
    model.Session.expire_all()
    assert HarvestSource.get(source["id"]).active is False
    assert model.Package.get(source["id"]).state == "deleted"
    assert _dataset_exists("harvested-g1")
    assert len(_jobs_of(source["id"])) == 1


@pytest.mark.parametrize("command", [["source", "clear"], ["clearsource"]])
def test_source_clear_deletes_datasets_jobs_and_objects(run, command):
    source = _harvested_source()
    assert _dataset_exists("harvested-g1")

    result = run(*command, source["id"])

    assert result.exit_code == 0, result.output
    assert result.stdout == "Cleared harvest source: {}\n".format(source["id"])
    assert not _dataset_exists("harvested-g1")
    assert _jobs_of(source["id"]) == []
    assert model.Session.query(HarvestObject).count() == 0
    assert HarvestSource.get(source["id"]) is not None


@pytest.mark.parametrize("command", ["clear", "detach"])
def test_source_clear_unknown_source(run, command):
    result = run("source", command, "missing")

    assert result.exit_code == 1
    assert result.stderr == "Source <missing> not found.\nAborted!\n"


def test_source_detach_turns_the_datasets_into_local_ones(run):
    source = _harvested_source()
    dataset_id = model.Package.get("harvested-g1").id

    result = run("source", "detach", source["name"])

    assert result.exit_code == 0, result.output
    assert result.stdout == "Detached 2 dataset(s) from harvest source: {}\n".format(
        source["name"])
    model.Session.expire_all()
    assert model.Session.query(HarvestObject).filter(
        HarvestObject.package_id == dataset_id, HarvestObject.current.is_(True)).count() == 0
    # The source stays; clearing it afterwards leaves the detached datasets alone.
    assert HarvestSource.get(source["id"]).active is True
    assert run("source", "clear", source["id"]).exit_code == 0
    assert _dataset_exists("harvested-g1") and _dataset_exists("harvested-g2")


def test_source_detach_refused_while_a_job_runs(run):
    source = _harvested_source()
    job = harvest_factories.HarvestJobObj(source=HarvestSource.get(source["id"]))
    job.status = "Running"
    job.save()

    result = run("source", "detach", source["id"])

    assert result.exit_code == 1
    assert result.stderr.startswith("Cannot detach: The source has a running job (")
    assert len(result.stderr.splitlines()) == 1
    assert _dataset_exists("harvested-g1")
    assert model.Session.query(HarvestObject).filter(
        HarvestObject.current.is_(True)).count() == 2


def test_source_clear_history_of_one_source_keeps_datasets(run):
    source = _harvested_source()
    other = _harvested_source(url="http://other.example.com")

    result = run("source", "clear-history", source["name"])

    assert result.exit_code == 0, result.output
    assert result.stdout == "Cleared job history of harvest source: {}\n".format(
        source["name"])
    assert _jobs_of(source["id"]) == []
    assert len(_jobs_of(other["id"])) == 1
    assert _dataset_exists("harvested-g1")


@pytest.mark.parametrize("value", ["yes", "false"])
def test_source_clear_history_keep_current_takes_any_value(run, value):
    source = _harvested_source()

    result = run("source", "clear-history", source["id"], "-k", value)

    assert result.exit_code == 0, result.output
    # The current objects (and so their job) are kept.
    assert len(_jobs_of(source["id"])) == 1


@pytest.mark.parametrize("command", [["source", "clear-history"], ["clearsource_history"]])
def test_source_clear_history_of_all_sources_purges_the_queues(run, redis_conn, command):
    first = _harvested_source()
    second = _harvested_source(url="http://other.example.com")
    redis_conn.rpush(_fetch_key(), json.dumps({"harvest_object_id": "x"}))

    result = run(*command)

    assert result.exit_code == 0, result.output
    assert result.stdout == "Cleared job history for all harvest sources: 2 source(s)\n"
    assert _jobs_of(first["id"]) == [] and _jobs_of(second["id"]) == []
    assert redis_conn.llen(_fetch_key()) == 0


# --- sources, jobs ------------------------------------------------------------------


def test_sources_lists_active_sources_or_all(run):
    active = _source()
    inactive = _source(url="http://inactive.example.com")
    toolkit.get_action("harvest_source_delete")({"ignore_auth": True},
                                                {"id": inactive["id"]})

    only_active = run("sources")
    every = run("sources", "all")

    assert only_active.exit_code == 0, only_active.output
    assert only_active.stdout == (
        _source_block(active, name=False) + "There is 1 active harvest source\n"
    )
    assert every.exit_code == 0, every.output
    assert every.stdout == (
        _source_block(inactive, name=False, active=False)
        + _source_block(active, name=False) + "There are 2 harvest sources\n"
    )


def test_sources_with_no_sources(run):
    result = run("sources")

    assert result.exit_code == 0, result.output
    assert result.stdout == "There are 0 active harvest sources\n"


def test_job_creates_and_queues_a_job(run, redis_conn):
    source = _source()

    result = run("job", source["name"])

    assert result.exit_code == 0, result.output
    [job] = _jobs_of(source["id"])
    assert job.status == "Running"
    assert result.stdout == (
        _job_block(job.id, "Running", source["id"]) + "There are 0 new harvest jobs\n"
    )
    assert redis_conn.lrange(_gather_key(), 0, -1) == [
        json.dumps({"harvest_job_id": job.id})
    ]


@pytest.mark.parametrize("args", [("--force", "{name}"), ("{name}", "--force"),
                                  ("start", "{name}", "--force")])
def test_job_force_creates_a_forced_job_with_the_same_output(run, args):
    source = _source()

    result = run("job", *(arg.format(name=source["name"]) for arg in args))

    assert result.exit_code == 0, result.output
    [job] = _jobs_of(source["id"])
    assert result.stdout == (
        _job_block(job.id, "Running", source["id"]) + "There are 0 new harvest jobs\n"
    )
    assert hashes.is_forced(job.id)


def test_job_without_force_creates_an_unforced_job(run):
    source = _source()

    result = run("job", source["name"])

    assert result.exit_code == 0, result.output
    [job] = _jobs_of(source["id"])
    assert not hashes.is_forced(job.id)


@pytest.fixture
def job_subcommand():
    """A subcommand added to ``job`` the way other modules add theirs."""
    from ckanext.harvest.cli.jobs import job_command

    @click.command(name="echo-job")
    @click.argument("job_id")
    def echo_job(job_id: str) -> None:
        click.echo("job subcommand got " + job_id)

    job_command.add_command(echo_job)
    yield echo_job
    job_command.commands.pop("echo-job")


def test_job_dispatches_to_its_subcommands(run, job_subcommand):
    result = run("job", "echo-job", "1234")

    assert result.exit_code == 0, result.output
    assert result.stdout == "job subcommand got 1234\n"
    assert model.Session.query(HarvestJob).count() == 0


def test_job_help_lists_its_subcommands(run, job_subcommand):
    result = run("job", "--help")

    assert result.exit_code == 0, result.output
    assert "echo-job" in result.stdout and "--force" in result.stdout


def test_job_without_a_source_is_a_usage_error(run):
    result = run("job")

    assert result.exit_code == 2
    assert "Missing argument 'SOURCE_ID_OR_NAME'" in result.stderr


def test_job_when_the_source_has_an_unrun_job(run):
    source = _source()
    harvest_factories.HarvestJob(source=HarvestSource.get(source["id"]))

    result = run("job", source["id"])

    assert result.exit_code == 1
    assert result.stderr == "There already is an unrun job for this source\nAborted!\n"
    assert len(_jobs_of(source["id"])) == 1


def test_job_for_an_inactive_source(run):
    source = _source()
    toolkit.get_action("harvest_source_delete")({"ignore_auth": True}, {"id": source["id"]})

    result = run("job", source["name"])

    assert result.exit_code == 1
    assert result.stderr == "Can not create jobs on inactive sources\nAborted!\n"
    assert _jobs_of(source["id"]) == []


def test_job_for_an_unknown_source(run):
    result = run("job", "missing")

    assert result.exit_code == 1
    assert result.stderr == "Source <missing> not found.\nAborted!\n"


def test_jobs_lists_every_job(run):
    first = harvest_factories.HarvestJob()
    second = harvest_factories.HarvestJob(
        source=harvest_factories.HarvestSourceObj(url="http://two.example.com"))

    result = run("jobs")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        _job_block(second["id"], "New", second["source_id"])
        + _job_block(first["id"], "New", first["source_id"])
        + "There are 2 harvest jobs\n"
    )


@pytest.mark.parametrize("command", ["job-abort", "job_abort"])
def test_job_abort_finishes_the_job(run, command):
    job = harvest_factories.HarvestJob()

    result = run(command, job["id"])

    assert result.exit_code == 0, result.output
    assert result.stdout == "Job status: Finished\n"
    model.Session.expire_all()
    assert HarvestJob.get(job["id"]).status == "Finished"


def test_job_abort_unknown_job(run):
    result = run("job-abort", "missing")

    assert result.exit_code == 1
    assert result.stderr == "Job not found.\nAborted!\n"


def test_abort_failed_jobs_prints_the_result_and_an_empty_line(run):
    job = harvest_factories.HarvestJobObj()
    job.status = "Running"
    job.created = datetime.datetime(2000, 1, 1)
    job.save()

    result = run("abort-failed-jobs", "3", "-e", "some-other-source")

    assert result.exit_code == 0, result.output
    assert result.stdout == "Done. Aborted jobs: 1\n\n"
    model.Session.expire_all()
    assert HarvestJob.get(job.id).status == "Finished"


def test_abort_failed_jobs_without_running_jobs(run):
    result = run("abort-failed-jobs")

    assert result.exit_code == 0, result.output
    assert result.stdout == "There is no jobs to abort\n\n"


def test_job_all_creates_a_job_per_active_source(run):
    first = _source()
    second = _source(url="http://two.example.com")

    result = run("job-all")

    assert result.exit_code == 0, result.output
    assert result.stdout == "Created 2 new harvest jobs\n"
    assert len(_jobs_of(first["id"])) == 1 and len(_jobs_of(second["id"])) == 1


def test_run_starts_due_scheduled_sources(run, redis_conn):
    source = _source(frequency="DAILY")

    result = run("run")

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    [job] = _jobs_of(source["id"])
    assert job.status == "Running"
    assert redis_conn.llen(_gather_key()) == 1


# --- run-test, import, reindex --------------------------------------------------------


@pytest.mark.parametrize("command", ["run-test", "run_test"])
def test_run_test_harvests_in_process(run, command):
    source = _source()

    result = run(command, source["name"])

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert _dataset_exists("harvested-g1") and _dataset_exists("harvested-g2")
    [job] = _jobs_of(source["id"])
    assert job.status == "Finished"


def test_run_test_with_a_guid_imports_only_that_object(run):
    source = _source()

    result = run("run-test", source["id"], "force-import=g2")

    assert result.exit_code == 0, result.output
    assert _dataset_exists("harvested-g2")
    assert not _dataset_exists("harvested-g1")


@pytest.mark.parametrize("force", [True, False])
def test_run_test_force_flags_the_job(run, force):
    source = _source()

    result = run("run-test", source["name"], *(["--force"] if force else []))

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    [job] = _jobs_of(source["id"])
    assert job.status == "Finished"
    assert hashes.is_forced(job.id) is force
    assert _dataset_exists("harvested-g1")


def test_run_test_reuses_the_new_job_of_the_source(run):
    source = _source()
    job = harvest_factories.HarvestJob(source=HarvestSource.get(source["id"]))

    result = run("run-test", source["name"])

    assert result.exit_code == 0, result.output
    assert result.stdout == "Reusing existing harvest job\n"
    assert [j.id for j in _jobs_of(source["id"])] == [job["id"]]
    assert _dataset_exists("harvested-g1")


@pytest.mark.parametrize("answer, exit_code", [("n", 1), ("y", 0)])
def test_run_test_asks_before_aborting_a_running_job(run, answer, exit_code):
    source = _source()
    job = harvest_factories.HarvestJobObj(source=HarvestSource.get(source["id"]))
    job.status = "Running"
    job.save()

    result = run("run-test", source["name"], input=answer + "\n")

    assert result.exit_code == exit_code, result.output
    assert result.stdout.startswith(
        '\nSource "{}" apparently has a "Running" job:\n'.format(source["name"])
        + _job_block(job.id, "Running", source["id"]) + "\n"
        + "Abort it? (y/n)"
    )
    assert _dataset_exists("harvested-g1") is (answer == "y")


def test_run_test_unknown_source(run):
    result = run("run-test", "missing")

    assert result.exit_code == 1
    assert result.stderr == "Source <missing> not found.\nAborted!\n"


def test_import_reimports_the_objects_of_a_source(run):
    source = _harvested_source()
    model.Package.get("harvested-g1").title = "Changed locally"
    model.Session.commit()

    result = run("import", source["name"])

    assert result.exit_code == 0, result.output
    assert result.stdout == "2 objects reimported\n"
    model.Session.expire_all()
    assert model.Package.get("harvested-g1").title == "Trees"


def test_import_by_object_guid_and_package(run):
    _harvested_source()
    obj = model.Session.query(HarvestObject).filter_by(guid="g1").one()

    by_object = run("import", "-o", obj.id)
    by_guid = run("import", "--guid", "g2")
    by_package = run("import", "-p", "harvested-g1", "--no-join-datasets")

    assert by_object.stdout == "1 objects reimported\n"
    assert by_guid.stdout == "1 objects reimported\n"
    assert by_package.stdout == "1 objects reimported\n"


def test_import_segments(run):
    import hashlib

    _harvested_source()
    ids = [obj.id for obj in model.Session.query(HarvestObject)]
    segment = hashlib.md5(ids[0].encode("utf-8")).hexdigest()[0]
    expected = sum(hashlib.md5(i.encode("utf-8")).hexdigest()[0] == segment for i in ids)

    result = run("import", "--segments", segment)

    assert result.exit_code == 0, result.output
    assert result.stdout == "{} objects reimported\n".format(expected)


def test_import_unknown_source_is_reported_without_failing(run):
    result = run("import", "missing")

    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == "Source <missing> not found.\n"


def test_progress_bars_in_a_terminal(run, monkeypatch):
    source = _harvested_source()
    monkeypatch.setattr("ckanext.harvest.cli.base.interactive", lambda: True)

    imported = run("import", source["id"])
    reindexed = run("reindex")
    harvested = run("run-test", _source(url="http://two.example.com")["id"])
    cleared = run("source", "clear", source["id"])

    assert imported.exit_code == 0, imported.output
    assert "Importing harvest objects" in imported.stdout
    assert imported.stdout.endswith("2 objects reimported\n")
    assert "Reindexing harvest sources" in reindexed.stdout
    assert "Harvesting test_source" in harvested.stdout
    assert "Clearing harvest source" in cleared.stdout
    assert cleared.stdout.endswith("Cleared harvest source: {}\n".format(source["id"]))
    assert not _dataset_exists("harvested-g1")


def test_reindex(run):
    source = _source()

    result = run("reindex")

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    found = toolkit.get_action("package_search")(
        {"ignore_auth": True}, {"fq": "+dataset_type:harvest", "include_private": True})
    assert [pkg["id"] for pkg in found["results"]] == [source["id"]]


# --- queues and maintenance -----------------------------------------------------------


@pytest.mark.parametrize("command", ["purge-queues", "purge_queues"])
def test_purge_queues_empties_both_queues(run, redis_conn, command):
    redis_conn.rpush(_gather_key(), json.dumps({"harvest_job_id": "a"}))
    redis_conn.rpush(_fetch_key(), json.dumps({"harvest_object_id": "b"}))
    redis_conn.set("ckanext-harvest:some-random-key", "kept")

    result = run(command)

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert redis_conn.llen(_gather_key()) == 0
    assert redis_conn.llen(_fetch_key()) == 0
    assert redis_conn.get("ckanext-harvest:some-random-key") == "kept"
    redis_conn.delete("ckanext-harvest:some-random-key")


def test_purge_queues_when_the_broker_is_down(run, ckan_config, monkeypatch):
    # Set here rather than with marks: the clean_queues fixture needs the broker.
    monkeypatch.setitem(ckan_config, "ckan.harvest.mq.type", "amqp")
    monkeypatch.setitem(ckan_config, "ckan.harvest.mq.hostname", "127.0.0.1")
    monkeypatch.setitem(ckan_config, "ckan.harvest.mq.port", "1")

    result = run("purge-queues")

    assert result.exit_code == 1
    assert result.stderr.startswith("Cannot use the queue broker: ")
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.output


def test_consumers_gather_then_fetch_and_import(run, monkeypatch):
    monkeypatch.setattr(queue, "run_gather_consumer", functools.partial(
        queue.run_gather_consumer, stop_after=1, idle_timeout=10))
    monkeypatch.setattr(queue, "run_fetch_consumer", functools.partial(
        queue.run_fetch_consumer, stop_after=2, idle_timeout=10))
    source = _source()
    toolkit.get_action("harvest_job_create")(
        {"ignore_auth": True, "user": ""}, {"source_id": source["id"], "run": True})

    gathered = run("gather-consumer")
    fetched = run("fetch_consumer")

    assert gathered.exit_code == 0, gathered.output
    assert fetched.exit_code == 0, fetched.output
    model.Session.expire_all()
    states = {obj.guid: obj.state for obj in model.Session.query(HarvestObject)}
    assert states == {"g1": "COMPLETE", "g2": "COMPLETE"}
    assert _dataset_exists("harvested-g1") and _dataset_exists("harvested-g2")


@pytest.mark.parametrize("command", ["clean-harvest-log", "clean_harvest_log"])
@pytest.mark.ckan_config("ckan.harvest.log_timeframe", "10")
def test_clean_harvest_log_deletes_old_records(run, command):
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    HarvestLog(content="old", level="INFO", created=now - datetime.timedelta(days=11)).save()
    HarvestLog(content="recent", level="INFO", created=now - datetime.timedelta(days=9)).save()

    result = run(command)

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    model.Session.expire_all()
    assert [row.content for row in model.Session.query(HarvestLog)] == ["recent"]


# --- clean-jobs and the retention of run -----------------------------------------------

_HARVEST_TABLES = ("harvest_job", "harvest_object", "harvest_object_extra",
                   "harvest_object_error", "harvest_gather_error")


def _row_counts() -> dict[str, int]:
    model.Session.remove()
    return {table: model.Session.execute(sa.text("SELECT count(*) FROM " + table)).scalar()
            for table in _HARVEST_TABLES}


def _old_jobs(source: dict[str, Any], ages: tuple[int, ...] = (40, 30, 20, 10)) -> list[str]:
    return [old_job(HarvestSource.get(source["id"]), age) for age in ages]


def test_clean_jobs_removes_the_jobs_past_the_options_and_prints_the_counts(run):
    source = _source()
    jobs = _old_jobs(source)

    result = run("clean-jobs", "--keep", "2", "--older-than", "25")

    assert result.exit_code == 0, result.output
    assert result.stdout == ("Removed 2 job(s) of 1 source(s): 4 object(s), 4 object "
                             "error(s), 2 gather error(s).\n")
    assert {job.id for job in _jobs_of(source["id"])} == set(jobs[2:])


def test_clean_jobs_dry_run_prints_the_same_counts_and_removes_nothing(run):
    source = _source()
    _old_jobs(source)
    old_job(HarvestSource.get(source["id"]), 50, current=True)
    before = _row_counts()

    result = run("clean-jobs", "--keep", "1", "--dry-run")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Would remove 3 job(s) of 1 source(s): 6 object(s), 6 object error(s), 3 gather "
        "error(s). Kept 1 older job(s) that are protected. Nothing was removed "
        "(--dry-run).\n")
    assert _row_counts() == before


def test_clean_jobs_of_one_source(run):
    one, two = _source(), _source(url="http://two.example.com")
    one_jobs, two_jobs = _old_jobs(one), _old_jobs(two)

    result = run("clean-jobs", "--keep", "1", "--source", one["name"])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Removed 3 job(s) of 1 source(s)")
    assert {job.id for job in _jobs_of(one["id"])} == {one_jobs[-1]}
    assert {job.id for job in _jobs_of(two["id"])} == set(two_jobs)


@pytest.mark.ckan_config("ckan.harvest.keep_days", "15")
def test_clean_jobs_without_options_applies_the_site_options(run):
    source = _source()
    jobs = _old_jobs(source)

    result = run("clean-jobs")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Removed 3 job(s) of 1 source(s)")
    assert {job.id for job in _jobs_of(source["id"])} == {jobs[-1]}


def test_clean_jobs_without_options_nor_site_options_is_one_error_line(run):
    source = _source()
    jobs = _old_jobs(source)

    result = run("clean-jobs")

    assert result.exit_code == 1
    assert result.stderr == ("Nothing to do: give --keep or --older-than, or set "
                             "ckan.harvest.keep_jobs or ckan.harvest.keep_days.\n")
    assert len(_jobs_of(source["id"])) == len(jobs)


def test_clean_jobs_shows_a_progress_bar_in_a_terminal(run, monkeypatch):
    _old_jobs(_source())
    monkeypatch.setattr("ckanext.harvest.cli.base.interactive", lambda: True)

    result = run("clean-jobs", "--keep", "1")

    assert result.exit_code == 0, result.output
    assert "Removing harvest jobs" in result.stdout
    assert result.stdout.endswith("3 gather error(s).\n")


@pytest.mark.ckan_config("ckan.harvest.keep_jobs", "1")
def test_run_applies_the_site_retention_and_prints_nothing(run):
    source = _source()
    jobs = _old_jobs(source)

    result = run("run")

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert {job.id for job in _jobs_of(source["id"])} == {jobs[-1]}


def test_run_without_retention_options_keeps_every_job(run):
    source = _source()
    jobs = _old_jobs(source, ages=(4000, 3000))

    result = run("run")

    assert result.exit_code == 0, result.output
    assert {job.id for job in _jobs_of(source["id"])} == set(jobs)


def test_harvesters_info_prints_the_list(run):
    result = run("harvesters_info")

    assert result.exit_code == 0, result.output
    expected = toolkit.get_action("harvesters_info_show")({"ignore_auth": True}, {})
    assert result.stdout == "{}\n".format(expected)
    assert "'name': 'test'" in result.stdout


# --- the real executable --------------------------------------------------------------


@pytest.fixture
def ckan_ini(tmp_path: Path) -> Path:
    """test-core.ini with the test harvester (source type ``test``) enabled."""
    ini = tmp_path / "cli-test.ini"
    ini.write_text(
        "[app:main]\nuse = config:{}\nckan.plugins = harvest test_harvester\n".format(
            REPO / "test-core.ini") + _LOGGING
    )
    return ini


# CKAN 2.11 reads the logging sections of the ini it is given (not of the one
# it "use"s): a minimal set keeps it quiet and working.
_LOGGING = """
[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)s [%(name)s] %(message)s
"""


def _ckan_command(ini: Path, *args: str) -> list[str]:
    if _plugin_registers_cli():
        command = [str(Path(sys.executable).with_name("ckan"))]
    else:  # the same entry point, with the group registered by hand
        command = [sys.executable, "-c", (
            "import sys; from ckan.cli.cli import ckan; "
            "from ckanext.harvest.cli import harvester; "
            "ckan.add_command(harvester); sys.argv[0] = 'ckan'; ckan()"
        )]
    return command + ["-c", str(ini), "harvester", *args]


def _ckan(ini: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``ckan -c <ini> harvester ...``."""
    return subprocess.run(_ckan_command(ini, *args), capture_output=True, text=True,
                          env=dict(os.environ), cwd=REPO, timeout=120)


def test_real_executable_create_list_and_purge(redis_conn, ckan_ini):
    created = _ckan(ckan_ini, "source", "create", "real-source", "http://real.example.com",
                    "test")
    duplicate = _ckan(ckan_ini, "source", "create", "real-source",
                      "http://real.example.com", "test")
    listed = _ckan(ckan_ini, "sources")
    redis_conn.rpush(_gather_key(), json.dumps({"harvest_job_id": "a"}))
    purged = _ckan(ckan_ini, "purge-queues")

    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("Created new harvest source:\nSource id: ")
    assert duplicate.returncode == 1
    assert "Validation error:\n\t" in duplicate.stderr
    assert duplicate.stderr.endswith("Aborted!\n")
    assert "Traceback" not in duplicate.stderr
    assert listed.returncode == 0, listed.stderr
    assert "\turl: http://real.example.com\n\ttype: test\n" in listed.stdout
    assert listed.stdout.endswith("There is 1 active harvest source\n")
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout == ""
    assert redis_conn.llen(_gather_key()) == 0


def test_real_executable_gather_consumer_stops_cleanly_on_sigterm(ckan_ini):
    source = _source()
    job = toolkit.get_action("harvest_job_create")(
        {"ignore_auth": True, "user": ""}, {"source_id": source["id"], "run": True})
    consumer = subprocess.Popen(
        _ckan_command(ckan_ini, "gather-consumer"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=dict(os.environ), cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        gathered = None
        while gathered is None and time.monotonic() < deadline:
            time.sleep(0.5)
            model.Session.expire_all()
            gathered = HarvestJob.get(job["id"]).gather_finished
        consumer.send_signal(signal.SIGTERM)
        stdout, stderr = consumer.communicate(timeout=30)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.communicate()

    assert gathered is not None, stderr
    assert consumer.returncode == 0, stderr
    assert stdout == ""
    assert "Traceback" not in stderr
    assert model.Session.query(HarvestObject).filter_by(
        harvest_job_id=job["id"]).count() == 2


# --- preview -----------------------------------------------------------------------


def test_preview_prints_each_record_and_writes_nothing(run):
    source = _source(source_type="test", config=json.dumps({
        "datasets": [{"guid": "p1", "title": "One"}, {"guid": "p2", "title": "Two"},
                     {"guid": "p3", "title": "Three"}],
        "import": {"p2": "error"}}))

    result = run("preview", source["id"], "--limit", "2")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == ("Preview of {}: 3 record(s) gathered, 2 previewed; nothing was "
                        "written.".format(source["id"]))
    assert lines[1] == "create        p1 -> harvested-p1"
    assert lines[2] == "error         p2"
    assert lines[3].startswith("    error: ")
    assert _jobs_of(source["id"]) == []
    assert not _dataset_exists("harvested-p1")


@pytest.mark.parametrize("limit", ["0", "101", "many"])
def test_preview_refuses_a_bad_limit_in_one_line(run, limit):
    source = _source(source_type="test")

    result = run("preview", source["id"], "--limit", limit)

    assert result.exit_code == 2
    assert "Invalid value for '--limit'" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_preview_of_an_unknown_source(run):
    result = run("preview", "no-such-source")

    assert result.exit_code != 0
    assert "Source <no-such-source> not found." in result.stderr


# --- job errors --------------------------------------------------------------------


def _job_with_errors() -> str:
    from ckanext.harvest.model import HarvestGatherError, HarvestObject, HarvestObjectError

    source = _source(source_type="test")
    job = HarvestJob(source_id=source["id"], status="Finished")
    job.save()
    HarvestGatherError(job=job, message="Listing failed").save()
    obj = HarvestObject(job=job, guid="broken")
    obj.save()
    HarvestObjectError(object=obj, message="Bad record", stage="Import").save()
    return job.id


def test_job_errors_writes_every_error_as_json(run):
    job_id = _job_with_errors()

    result = run("job", "errors", job_id, "--format", "json")

    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["stage"], r["guid"], r["message"]) for r in rows] == [
        ("Gather", None, "Listing failed"), ("Import", "broken", "Bad record")]


def test_job_errors_writes_a_csv_file(run, tmp_path):
    job_id = _job_with_errors()
    target = tmp_path / "errors.csv"

    result = run("job", "errors", job_id, "--output", str(target))

    assert result.exit_code == 0, result.output
    assert result.stdout == "Wrote 2 error(s) of job {} to {}\n".format(job_id, target)
    lines = target.read_text().splitlines()
    assert lines[0] == "job_id,stage,object_id,guid,dataset_id,dataset_url,message,created"
    assert len(lines) == 3 and not (tmp_path / "errors.csv.part").exists()


@pytest.mark.parametrize(("args", "status", "message"), [
    (["--format", "xml"], 2, "Invalid value for '--format'"),
    (["--output", "/"], 2, "is a directory"),
])
def test_job_errors_refuses_bad_options_in_one_line(run, args, status, message):
    result = run("job", "errors", _job_with_errors(), *args)

    assert result.exit_code == status
    assert message in result.stderr and "Traceback" not in result.stdout + result.stderr


def test_job_errors_of_an_unknown_job(run):
    result = run("job", "errors", "no-such-job")

    assert result.exit_code == 1
    assert "Not found" in result.stderr and "Traceback" not in result.stdout + result.stderr


# --- cron schedules and the cap on running jobs -----------------------------------


def test_source_create_with_a_schedule_prints_it_in_the_source_block(run):
    result = run("source", "create", "cron-source", "http://example.com/cron", "test",
                 "--schedule", "0  3 * * *")

    assert result.exit_code == 0, result.output
    source = toolkit.get_action("harvest_source_show")(
        {"ignore_auth": True}, {"id": "cron-source"})
    assert source["schedule"] == "0 3 * * *"
    assert "\tfrequency: MANUAL\n\tschedule: 0 3 * * *\n\tjobs: 0\n" in result.stdout
    assert HarvestSource.get(source["id"]).next_run is not None


def test_source_create_with_an_invalid_schedule_says_why_in_one_line(run):
    result = run("source", "create", "cron-source", "http://example.com/cron", "test",
                 "--schedule", "0 3 * *")

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Validation error:",
        "\tSchedule: Invalid schedule '0 3 * *': a cron expression has 5 fields (minute "
        "hour day-of-month month day-of-week), e.g. '0 3 * * *' for 03:00 every day; "
        "this one has 4",
        "Aborted!",
    ]
    assert model.Session.query(HarvestSource).count() == 0


def test_source_update_sets_and_removes_the_schedule(run):
    source = _source(frequency="WEEKLY")

    set_result = run("source", "update", source["id"], "--schedule", "*/30 * * * *")
    cleared = run("source", "update", source["id"], "--schedule", "")

    assert set_result.exit_code == 0, set_result.output
    assert set_result.stdout.startswith("Updated harvest source:\nSource id: " + source["id"])
    assert "\tfrequency: WEEKLY\n\tschedule: */30 * * * *\n" in set_result.stdout
    assert cleared.exit_code == 0, cleared.output
    assert "schedule" not in cleared.stdout
    shown = toolkit.get_action("harvest_source_show")({"ignore_auth": True}, {"id": source["id"]})
    assert "schedule" not in shown and shown["frequency"] == "WEEKLY"


def test_source_update_without_an_option_fails_clearly(run):
    source = _source()

    result = run("source", "update", source["id"])

    assert result.exit_code == 1
    assert result.stderr.strip() == "Nothing to update: give --schedule or --frequency"


@pytest.mark.ckan_config("ckan.harvest.max_running_jobs", "1")
def test_job_and_jobs_show_a_job_waiting_for_a_slot_and_its_position(run):
    first, second = _source(), _source()

    started = run("job", first["id"])
    waiting = run("job", second["id"])
    listed = run("jobs")

    assert started.exit_code == waiting.exit_code == listed.exit_code == 0
    assert "\t\tstatus: Running\n\t\tsource: " in started.stdout
    assert "waiting for a slot" not in started.stdout
    assert "\t\tstatus: New\n\t\twaiting for a slot: position 1 of 1\n" \
        "\t\tsource: {}\n".format(second["id"]) in waiting.stdout
    assert listed.stdout.count("waiting for a slot: position 1 of 1") == 1
