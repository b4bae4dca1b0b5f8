"""``ckan harvester job | jobs | job-abort | abort-failed-jobs | job-all | run``.

Harvest jobs and the scheduler. The implementations (``create_job``...) call
the job actions as the site user and return the text the commands print.

``job`` is a group (:class:`~ckanext.harvest.cli.base.DefaultCommandGroup`):
``job SOURCE [--force]`` runs its hidden default command, ``start``; other
modules add commands about existing jobs with ``job_command.add_command(...)``.
"""
from __future__ import annotations

from typing import Any, Optional

import click
from ckan.plugins import toolkit

from ckanext.harvest.cli import status
from ckanext.harvest.cli.base import (
    SOURCE_ARG,
    DefaultCommandGroup,
    abort,
    action,
    echo,
    guarded,
    source_dict,
)
from ckanext.harvest.cli.output import format_job, format_jobs, there_are
from ckanext.harvest.lib import retention
from ckanext.harvest.model import JobStatus

#: The hidden subcommand ``job SOURCE`` runs (``job start SOURCE`` works too).
START_COMMAND = "start"


def start_job(source_id_or_name: str, force: bool = False) -> tuple[dict[str, Any], str]:
    """Start a job for a source now: it is sent to the gather queue.

    :param force: import every record, even those whose content hash is
        unchanged since the last import
    :returns: the job, and the text printed: the job block and the count of
        ``New`` jobs
    :raises SourceNotFound:
    :raises HarvestJobExists: the source has a New or Running job
    """
    source = source_dict(source_id_or_name)
    data_dict: dict[str, Any] = {"source_id": source["id"], "run": True}
    if force:
        data_dict["force"] = True
    job = action("harvest_job_create", data_dict)
    new_jobs = action("harvest_job_list", {"status": JobStatus.NEW.value})
    return job, format_job(job) + there_are("harvest job", new_jobs, "new") + "\n"


def create_job(source_id_or_name: str, force: bool = False) -> str:
    """Start a job for a source now (see :func:`start_job`); returns the text."""
    return start_job(source_id_or_name, force)[1]


def list_jobs() -> str:
    """Job blocks of every job, newest first, and their count."""
    jobs = action("harvest_job_list", {})
    return format_jobs(jobs) + there_are("harvest job", jobs) + "\n"


def abort_job(job_or_source_id: str) -> str:
    """Abort a job (or the latest job of a source).

    :returns: ``Job status: <status>``
    :raises ObjectNotFound: no such job or source
    """
    job = action("harvest_job_abort", {"id": job_or_source_id})
    return "Job status: {}".format(job["status"])


def abort_failed_jobs(
    job_life_span: Any = False, include: Optional[str] = None, exclude: Optional[str] = None
) -> str:
    """Abort the running jobs older than their life span.

    :returns: the action's summary line
    """
    return action(
        "harvest_abort_failed_jobs",
        {"life_span": job_life_span, "include": include, "exclude": exclude},
    )


def job_all() -> str:
    """Create (and start) a job for every active source without an open job."""
    jobs = action("harvest_job_create_all", {})
    return "Created {} new harvest jobs".format(len(jobs))


def run_harvester() -> None:
    """Start due scheduled jobs and close the finished ones (cron); then remove
    the jobs past the site's retention, when ``ckan.harvest.keep_jobs`` or
    ``ckan.harvest.keep_days`` is set."""
    action("harvest_jobs_run", {})
    retention.apply_site_policy(toolkit.config)


# -- commands ------------------------------------------------------------------------


@click.group(name="job", cls=DefaultCommandGroup, default_command=START_COMMAND,
             short_help="Start a harvest of one source now.",
             subcommand_metavar="SOURCE_ID_OR_NAME [--force] [--wait] | COMMAND [ARGS]...")
def job_command() -> None:
    """Start a harvest of one source now: job SOURCE_ID_OR_NAME [--force] [--wait].

    A job is created and sent to the gather queue, which makes it Running;
    the job is printed, then the number of jobs still waiting (New). Fails
    when the source is inactive or already has a New or Running job. With
    --force, every record is imported, even those unchanged since their last
    import (same content hash). With --wait, waits until the job is finished
    (progress bar and ETA in a terminal), then prints its statistics.

    Commands acting on existing jobs, if any, are listed below.
    """


@job_command.command(name=START_COMMAND, hidden=True,
                     short_help="Start a harvest of one source now.")
@click.argument("source_id_or_name", metavar=SOURCE_ARG)
@click.option("--force", is_flag=True, default=False,
              help="Import every record, even those unchanged since their last "
                   "import (same content hash).")
@click.option("--wait", is_flag=True, default=False,
              help="Then wait until the job is finished, with a progress bar and "
                   "its ETA in a terminal, and print its statistics.")
@guarded()
def job_start_command(source_id_or_name: str, force: bool, wait: bool) -> None:
    """Start a harvest of one source now (what ``job SOURCE`` runs).

    A job is created and sent to the gather queue, which makes it Running;
    the job is printed, then the number of jobs still waiting (New). Fails
    when the source is inactive or already has a New or Running job. With
    --wait, waits for the job (the consumers must run) and closes it as soon
    as its objects are done.
    """
    job, text = start_job(source_id_or_name, force)
    echo(text)
    if wait:
        finished = status.wait_for_job(job["id"], "Harvesting {}".format(source_id_or_name))
        echo(status.format_finished(finished))


@click.command(name="jobs", short_help="Print every job, newest first.")
@guarded()
def jobs_command() -> None:
    """Print the jobs of every source, newest first, then how many there are."""
    echo(list_jobs())


@click.command(name="job-abort", short_help="Stop a job, freeing its source.")
@click.argument("source_or_job_id", metavar="SOURCE_OR_JOB_ID")
@guarded()
def job_abort_command(source_or_job_id: str) -> None:
    """Stop a job, which frees its source for a new harvest.

    Takes a job id, or a source id or name (meaning that source's latest
    job). The job's status becomes Finished and its unfinished objects are
    marked as errors.
    """
    try:
        status = abort_job(source_or_job_id)
    except toolkit.ObjectNotFound:
        abort("Job not found.")
    click.echo(status)


@click.command(name="abort-failed-jobs", short_help="Stop jobs running for too long.")
@click.argument("life_span", metavar="[LIFE_SPAN]", type=click.INT, required=False)
@click.option("-i", "--include", default=None,
              help="Look only at the jobs of these sources (source ids, "
                   "separated by commas).")
@click.option("-e", "--exclude", default=None,
              help="Leave the jobs of these sources alone (source ids, separated "
                   "by commas); ignored when --include is given.")
@guarded()
def abort_failed_jobs_command(life_span: Optional[int], include: Optional[str],
                              exclude: Optional[str]) -> None:
    """Stop the Running jobs that are older than their source allows.

    Such a job blocks its source: no new job can start while it runs. The
    allowed age, in days, follows the source's frequency: DAILY 1, WEEKLY 7,
    BIWEEKLY 14, MONTHLY 30, and LIFE_SPAN (7 when omitted) for MANUAL and
    ALWAYS sources. Each job found is stopped as by job-abort; the number of
    stopped jobs is printed.
    """
    click.echo(abort_failed_jobs(
        life_span if life_span is not None else False, include, exclude
    ))
    click.echo()


@click.command(name="job-all", short_help="Start a harvest of every active source.")
@guarded()
def job_all_command() -> None:
    """Start a harvest of every active source that has no New or Running job.

    Each job is created and sent to the gather queue; the number of jobs
    created is printed.
    """
    click.echo(job_all())


@click.command(name="run", short_help="The scheduler: start due jobs, close done ones.")
@guarded()
def run_command() -> None:
    """The scheduler: start the jobs that are due and close the finished ones.

    Creates and queues a job for every scheduled source whose next run is
    due, marks Finished the Running jobs whose objects are all done (or that
    timed out, see ckan.harvest.timeout) and sends the configured status
    e-mails; with Redis it also re-queues work lost by stopped consumers. Then,
    when ckan.harvest.keep_jobs or ckan.harvest.keep_days is set, removes the
    jobs past that retention (see clean-jobs). Prints nothing. Run it from cron
    or a systemd timer, e.g. every 15 minutes.
    """
    run_harvester()
