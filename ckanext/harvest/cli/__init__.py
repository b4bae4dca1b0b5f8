"""``ckan harvester ...``: the command line of the harvest framework.

The ``harvester`` group gathers the commands of one module per command group,
like CKAN core's ``ckan/cli/``:

* :mod:`~ckanext.harvest.cli.sources`: ``source ...`` and ``sources``;
* :mod:`~ckanext.harvest.cli.jobs`: ``job``, ``jobs``, ``job-abort``,
  ``abort-failed-jobs``, ``job-all`` and the scheduler, ``run``;
* :mod:`~ckanext.harvest.cli.status`: ``job-status`` (and ``job --wait``);
* :mod:`~ckanext.harvest.cli.run_test`: ``run-test``;
* :mod:`~ckanext.harvest.cli.reports`: ``preview`` and ``job errors``;
* :mod:`~ckanext.harvest.cli.removals`: ``job approve-removals``;
* :mod:`~ckanext.harvest.cli.retention`: ``clean-jobs``;
* :mod:`~ckanext.harvest.cli.queues`: ``purge-queues`` and the consumers;
* :mod:`~ckanext.harvest.cli.maintenance`: ``import``, ``reindex``,
  ``clean-harvest-log``, ``harvesters_info``.

Each module holds its commands and their implementations (which call the
actions as the site user and build the text printed); :mod:`.base` has the
shared plumbing and :mod:`.output` the printed blocks. Failures end as one
error line on stderr and a non-zero exit status, never a traceback.
"""
from __future__ import annotations

import click

from ckanext.harvest.cli import (
    jobs,
    maintenance,
    queues,
    removals,
    reports,
    retention,
    run_test,
    sources,
    status,
)


def get_commands() -> list[click.Command]:
    """The commands the ``harvest`` plugin adds to ``ckan`` (``IClick``)."""
    return [harvester]


@click.group(short_help="Harvest datasets from remote catalogues.")
def harvester() -> None:
    """Harvest datasets from remote catalogues into this CKAN site.

    Set up sources, start and stop their jobs, run the queue consumers and
    the scheduler, and look after the harvest data. Commands act as the site
    user; wherever a source is expected, its id or its name may be given.
    """


for _subcommand in (
    sources.source_group,
    sources.sources_command,
    jobs.job_command,
    jobs.jobs_command,
    jobs.job_abort_command,
    jobs.abort_failed_jobs_command,
    jobs.job_all_command,
    jobs.run_command,
    status.job_status_command,
    run_test.run_test_command,
    reports.preview_command,
    maintenance.import_command,
    queues.purge_queues_command,
    queues.gather_consumer_command,
    queues.fetch_consumer_command,
    maintenance.clean_harvest_log_command,
    retention.clean_jobs_command,
    maintenance.reindex_command,
    maintenance.harvesters_info_command,
):
    harvester.add_command(_subcommand)

# ``job SOURCE`` starts a job; ``job <command> JOB`` works on an existing job.
for _job_subcommand in (reports.errors_command, removals.approve_removals_command):
    jobs.job_command.add_command(_job_subcommand)


# -- older spellings -----------------------------------------------------------------

_ALIASES = {
    "rmsource": sources.remove_command,
    "clearsource": sources.clear_command,
    "clearsource_history": sources.clear_history_command,
    "job_abort": jobs.job_abort_command,
    "run_test": run_test.run_test_command,
    "gather_consumer": queues.gather_consumer_command,
    "fetch_consumer": queues.fetch_consumer_command,
    "purge_queues": queues.purge_queues_command,
    "clean_harvest_log": maintenance.clean_harvest_log_command,
}


def _alias(name: str, command: click.Command) -> click.Command:
    """A hidden copy of ``command`` under an older name."""
    return click.Command(
        name=name,
        callback=command.callback,
        params=command.params,
        help=command.help,
        short_help=command.short_help,
        hidden=True,
    )


for _name, _target in _ALIASES.items():
    harvester.add_command(_alias(_name, _target))
