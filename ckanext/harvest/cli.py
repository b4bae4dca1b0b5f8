"""``ckan harvester ...``: the command line of the harvest framework.

Each command parses its arguments, calls an implementation in
:mod:`ckanext.harvest.utils` (which calls the actions) and prints. Failures end
as one error line on stderr and a non-zero exit status, never a traceback.
"""
from __future__ import annotations

import functools
import logging
import signal
import sys
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, NoReturn, Optional, Sequence

import click
from ckan.plugins import toolkit

from ckanext.harvest import utils

log = logging.getLogger(__name__)

_SOURCE_ARG = "SOURCE_ID_OR_NAME"


def get_commands() -> list[click.Command]:
    """The commands the ``harvest`` plugin adds to ``ckan`` (``IClick``)."""
    return [harvester]


# -- plumbing ------------------------------------------------------------------------


def _interactive() -> bool:
    """Whether stdout is a terminal (progress bars are shown only then)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _progress() -> Optional[utils.Progress]:
    """A progress-bar factory for a terminal, None otherwise (output stays parseable)."""
    if not _interactive():
        return None

    def bar(items: Sequence[Any], label: str) -> Any:
        return click.progressbar(items, label=label, show_pos=True)

    return bar


def _app_context() -> ContextManager[Any]:
    """The Flask test request context of the CKAN app loaded by ``ckan``."""
    ctx = click.get_current_context(silent=True)
    app = ctx.meta.get("flask_app") if ctx is not None else None
    return app.test_request_context() if app is not None else nullcontext()


def _shout_validation(error: Any) -> None:
    toolkit.error_shout("Validation error:")
    for field, message in error.error_summary.items():
        toolkit.error_shout("\t{}: {}".format(field, message))


def _abort(message: Any) -> NoReturn:
    toolkit.error_shout(message)
    raise click.Abort()


def _fail(message: str) -> NoReturn:
    toolkit.error_shout(message)
    raise click.exceptions.Exit(1)


def _exception_handlers() -> list[tuple[tuple[type[BaseException], ...], Callable[[Any], None]]]:
    """(exception classes, handler) pairs, most specific first."""
    import pika.exceptions
    import redis.exceptions
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    from ckanext.harvest import mq
    from ckanext.harvest.logic import HarvestJobExists, HarvestSourceInactiveError

    def validation(error: Any) -> None:
        _shout_validation(error)
        raise click.Abort()

    return [
        ((utils.SourceNotFound, HarvestJobExists, HarvestSourceInactiveError), _abort),
        ((toolkit.ValidationError,), validation),
        ((toolkit.NotAuthorized,), lambda e: _fail("Not authorized: {}".format(e))),
        ((toolkit.ObjectNotFound,), lambda e: _fail("Not found: {}".format(e))),
        ((mq.UnknownBackendError,), lambda e: _fail("Configuration error: {}".format(e))),
        ((mq.BrokerError, pika.exceptions.AMQPError, redis.exceptions.RedisError),
         lambda e: _fail("Cannot use the queue broker: {}".format(_first_line(e)))),
        ((DBAPIError,), lambda e: _fail("Database error: {}".format(_first_line(e.orig)))),
        ((SQLAlchemyError,), lambda e: _fail("Database error: {}".format(_first_line(e)))),
    ]


def _first_line(error: Any) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _report(error: Exception) -> None:
    """Turn an exception raised by a command into an error line and an exit status."""
    for classes, handler in _exception_handlers():
        if isinstance(error, classes):
            handler(error)
    _fail("Error: {}: {}".format(type(error).__name__, _first_line(error)))


def _command(with_context: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run a command inside the app's request context, reporting its errors."""

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                with _app_context() if with_context else nullcontext():
                    return func(*args, **kwargs)
            except (click.exceptions.ClickException, click.exceptions.Abort,
                    click.exceptions.Exit, KeyboardInterrupt):
                raise
            except Exception as error:
                _report(error)

        return wrapper

    return decorator


def _until_stopped(consume: Callable[[], None]) -> None:
    """Run a consumer loop; SIGTERM or Ctrl-C stop it cleanly (exit status 0).

    The loop is interrupted like by Ctrl-C: the message being handled is not
    acknowledged, so the broker delivers it again.
    """
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        consume()
    except KeyboardInterrupt:
        log.info("Harvest consumer stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _echo(text: str) -> None:
    click.echo(text, nl=False)


# -- the groups ----------------------------------------------------------------------


@click.group(short_help="Harvest datasets from remote catalogues.")
def harvester() -> None:
    """Harvest datasets from remote catalogues into this CKAN site.

    Set up sources, start and stop their jobs, run the queue consumers and
    the scheduler, and look after the harvest data. Commands act as the site
    user; wherever a source is expected, its id or its name may be given.
    """


class _SourceGroup(click.Group):
    """``source`` subcommands; ``source NAME URL TYPE ...`` still means ``source create``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["create"] + list(args)
        return super().parse_args(ctx, args)


@harvester.group(cls=_SourceGroup, short_help="Create, show, remove or clear sources.")
def source() -> None:
    """Create, show, remove or clear a harvest source.

    The older spelling ``source NAME URL TYPE [...]`` creates a source, like
    ``source create``.
    """


@source.command(short_help="Add a harvest source and print it.")
@click.argument("name")
@click.argument("url")
@click.argument("type")
@click.argument("title", required=False)
@click.argument("active", type=toolkit.asbool, default=True, required=False)
@click.argument("owner_org", required=False)
@click.argument("frequency", default="MANUAL", required=False)
@click.argument("config", required=False)
@_command(with_context=False)
def create(name: str, url: str, type: str, title: Optional[str], active: bool,
           owner_org: Optional[str], frequency: str, config: Optional[str]) -> None:
    """Add a harvest source, then print it and the number of sources.

    TYPE is a harvester name (e.g. ``ckan``), FREQUENCY one of MANUAL (default),
    MONTHLY, WEEKLY, BIWEEKLY, DAILY, ALWAYS; an empty FREQUENCY ("") also starts
    a first job. CONFIG is the harvester configuration (usually JSON). ACTIVE is
    accepted for compatibility and has no effect.
    """
    _echo(utils.create_harvest_source(
        name, url, type, title, active, owner_org, frequency, config
    ))


@source.command(short_help="Print the details of one source.")
@click.argument("source_id_or_name", metavar=_SOURCE_ARG)
@_command()
def show(source_id_or_name: str) -> None:
    """Print the details of one source: id, name, URL, type, state, frequency
    and number of jobs."""
    _echo(utils.show_harvest_source(source_id_or_name))


@source.command(short_help="Deactivate a source, keeping what it harvested.")
@click.argument("source_id_or_name", metavar=_SOURCE_ARG)
@_command()
def remove(source_id_or_name: str) -> None:
    """Deactivate a source without touching what it harvested.

    The source dataset is marked deleted (a sysadmin can make it active
    again) and its New jobs are aborted. The datasets it harvested, its job history and its
    harvest objects stay in place.
    """
    utils.remove_harvest_source(source_id_or_name)
    click.secho("Removed harvest source: {}".format(source_id_or_name), fg="green")


@source.command(short_help="Delete what a source harvested; keep the source.")
@click.argument("source_id_or_name", metavar=_SOURCE_ARG)
@_command()
def clear(source_id_or_name: str) -> None:
    """Delete everything a source harvested, but not the source.

    The datasets it created are deleted for good (not moved to the trash),
    along with its jobs, harvest objects and their errors. The source itself
    stays, ready to harvest again.
    """
    utils.clear_harvest_source(source_id_or_name, progress=_progress())
    click.secho("Cleared harvest source: {}".format(source_id_or_name), fg="green")


@source.command(name="clear-history", short_help="Clear the job history of sources.")
@click.argument("source_id_or_name", metavar="[SOURCE_ID_OR_NAME]", required=False)
@click.option("-k", "--keep-current", type=str, default=None, metavar="VALUE",
              help="Keep the jobs and objects of the current datasets "
                   "(any non-empty VALUE, e.g. -k yes).")
@_command()
def clear_history(source_id_or_name: Optional[str], keep_current: Any) -> None:
    """Delete the job history of one source, or of every source.

    Jobs, harvest objects and their errors are deleted; the sources and the
    datasets they harvested stay. Without SOURCE_ID_OR_NAME, every active
    source is cleared (private ones too) and, unless --keep-current is
    given, the gather and fetch queues are purged first, since their
    messages would point at deleted jobs.
    """
    message = utils.clear_harvest_source_history(source_id_or_name, bool(keep_current))
    click.secho(message, fg="green")


# -- sources and jobs ----------------------------------------------------------------


@harvester.command(short_help="Print the active sources (or all of them).")
@click.argument("all_sources", metavar="[ALL]", required=False)
@_command()
def sources(all_sources: Optional[str]) -> None:
    """Print the active sources, newest first, then how many there are.

    Give any ALL argument (``all`` for instance) to list the inactive
    sources as well. At most ckan.harvest.harvest_source_limit sources are
    printed.
    """
    _echo(utils.list_sources(bool(all_sources)))


@harvester.command(short_help="Start a harvest of one source now.")
@click.argument("source_id_or_name", metavar=_SOURCE_ARG)
@_command()
def job(source_id_or_name: str) -> None:
    """Start a harvest of one source now.

    A job is created and sent to the gather queue, which makes it Running;
    the job is printed, then the number of jobs still waiting (New). Fails
    when the source is inactive or already has a New or Running job.
    """
    _echo(utils.create_job(source_id_or_name))


@harvester.command(short_help="Print every job, newest first.")
@_command()
def jobs() -> None:
    """Print the jobs of every source, newest first, then how many there are."""
    _echo(utils.list_jobs())


@harvester.command(name="job-abort", short_help="Stop a job, freeing its source.")
@click.argument("source_or_job_id", metavar="SOURCE_OR_JOB_ID")
@_command()
def job_abort(source_or_job_id: str) -> None:
    """Stop a job, which frees its source for a new harvest.

    Takes a job id, or a source id or name (meaning that source's latest
    job). The job's status becomes Finished and its unfinished objects are
    marked as errors.
    """
    try:
        status = utils.abort_job(source_or_job_id)
    except toolkit.ObjectNotFound:
        _abort("Job not found.")
    click.echo(status)


@harvester.command(name="abort-failed-jobs", short_help="Stop jobs running for too long.")
@click.argument("life_span", metavar="[LIFE_SPAN]", type=click.INT, required=False)
@click.option("-i", "--include", default=None,
              help="Look only at the jobs of these sources (source ids, "
                   "separated by commas).")
@click.option("-e", "--exclude", default=None,
              help="Leave the jobs of these sources alone (source ids, separated "
                   "by commas); ignored when --include is given.")
@_command()
def abort_failed_jobs(life_span: Optional[int], include: Optional[str],
                      exclude: Optional[str]) -> None:
    """Stop the Running jobs that are older than their source allows.

    Such a job blocks its source: no new job can start while it runs. The
    allowed age, in days, follows the source's frequency: DAILY 1, WEEKLY 7,
    BIWEEKLY 14, MONTHLY 30, and LIFE_SPAN (7 when omitted) for MANUAL and
    ALWAYS sources. Each job found is stopped as by job-abort; the number of
    stopped jobs is printed.
    """
    click.echo(utils.abort_failed_jobs(
        life_span if life_span is not None else False, include, exclude
    ))
    click.echo()


@harvester.command(name="job-all", short_help="Start a harvest of every active source.")
@_command()
def job_all() -> None:
    """Start a harvest of every active source that has no New or Running job.

    Each job is created and sent to the gather queue; the number of jobs
    created is printed.
    """
    click.echo(utils.job_all())


@harvester.command(short_help="The scheduler: start due jobs, close done ones.")
@_command()
def run() -> None:
    """The scheduler: start the jobs that are due and close the finished ones.

    Creates and queues a job for every scheduled source whose next run is
    due, marks Finished the Running jobs whose objects are all done (or that
    timed out, see ckan.harvest.timeout) and sends the configured status
    e-mails; with Redis it also re-queues work lost by stopped consumers. Prints
    nothing. Run it from cron or a systemd timer, e.g. every 15 minutes.
    """
    utils.run_harvester()


@harvester.command(name="run-test", short_help="Harvest one source in this process.")
@click.argument("source_id_or_name", metavar=_SOURCE_ARG)
@click.argument("force_import", metavar="[GUID]", required=False)
@_command()
def run_test(source_id_or_name: str, force_import: Optional[str]) -> None:
    """Harvest one source in this process, to develop or debug a harvester.

    Gathers, fetches and imports a job of the source here, without the
    consumers (the job is also put on the gather queue). With GUID, only the
    objects whose guid is contained in GUID are imported. A pending New job
    is reused; if the source has a Running job, you are asked whether to
    abort it. Needs the test requirements (factory-boy).
    """
    def confirm(pending: utils.JobToAbort) -> bool:
        click.echo(pending.describe())
        answer = click.prompt("Abort it? (y/n)", default="", show_default=False,
                              prompt_suffix="")
        return answer == "y"

    if not utils.run_test_harvester(source_id_or_name, force_import, confirm,
                                    echo=click.echo, progress=_progress()):
        raise click.exceptions.Exit(1)


@harvester.command(name="import", short_help="Import fetched objects again.")
@click.argument("source_id_or_name", metavar="[SOURCE_ID_OR_NAME]", required=False)
@click.option("-j", "--no-join-datasets", is_flag=True, default=False,
              help="Also import objects whose dataset is missing or deleted "
                   "(by default only objects of active datasets are imported).")
@click.option("-o", "--harvest-object-id",
              help="Import only the harvest object with this id.")
@click.option("-p", "--package-id",
              help="Import only the current objects of this dataset (id or name).")
@click.option("-g", "--guid",
              help="Import only the current objects with this guid.")
@click.option("--segments",
              help="Import only part of the objects: each object falls in one of "
                   "16 segments, the first hex digit of the MD5 of its id; give "
                   "the digits of the segments wanted (e.g. 05af) to share a big "
                   "import between processes.")
@_command()
def import_stage(source_id_or_name: Optional[str], no_join_datasets: bool,
                 harvest_object_id: Optional[str], package_id: Optional[str],
                 guid: Optional[str], segments: Optional[str]) -> None:
    """Run the import stage again on objects already fetched, without fetching.

    Picks the current objects of SOURCE_ID_OR_NAME, or the objects chosen
    with an option; with neither, every current object. The harvester of
    each object's source imports it with force_import set. Prints how many
    objects were imported.
    """
    try:
        result = utils.import_stage(
            source_id_or_name, no_join_datasets, harvest_object_id, guid, package_id,
            segments, progress=_progress(),
        )
    except utils.SourceNotFound as error:
        toolkit.error_shout(error)
        return
    click.echo(result)


# -- queues and maintenance ----------------------------------------------------------


@harvester.command(name="purge-queues", short_help="Empty the gather and fetch queues.")
@_command(with_context=False)
def purge_queues() -> None:
    """Empty this site's gather and fetch queues.

    Every pending message is dropped; jobs and objects in the database are
    not changed, and the queues of other sites on the same broker are left
    alone.
    """
    utils.purge_queues()


@harvester.command(name="gather-consumer",
                   short_help="Run the gather consumer (jobs to objects).")
@_command(with_context=False)
def gather_consumer() -> None:
    """Run the gather consumer: turn queued jobs into harvest objects.

    For each job taken from the gather queue, the source's harvester lists
    the remote records as harvest objects, which go to the fetch queue.

    Runs until stopped (SIGTERM or Ctrl-C); run it under supervisor or systemd.
    """
    _until_stopped(utils.gather_consumer)


@harvester.command(name="fetch-consumer", short_help="Run the fetch consumer (fetch and import).")
@_command(with_context=False)
def fetch_consumer() -> None:
    """Run the fetch consumer: fetch and import queued harvest objects.

    Each object taken from the fetch queue is fetched by its source's
    harvester, then imported: its dataset is created, updated or deleted.

    Runs until stopped (SIGTERM or Ctrl-C); run it under supervisor or systemd.
    """
    _until_stopped(utils.fetch_consumer)


@harvester.command(name="clean-harvest-log",
                   short_help="Delete old records of the harvest log.")
@_command()
def clean_harvest_log() -> None:
    """Delete old records of the harvest database log.

    Records older than ckan.harvest.log_timeframe days (30 by default) are
    deleted. Prints nothing; run it daily.
    """
    utils.clean_harvest_log()


@harvester.command(short_help="Rebuild the search index of the sources.")
@_command()
def reindex() -> None:
    """Rebuild the search index entries of every active source dataset.

    The datasets the sources harvested are not reindexed: use
    ``ckan search-index rebuild`` for those.
    """
    utils.reindex(progress=_progress())


@harvester.command(name="harvesters_info")
@_command()
def harvesters_info() -> None:
    click.echo(utils.harvesters_info())


# -- older spellings -----------------------------------------------------------------

_ALIASES = {
    "rmsource": remove,
    "clearsource": clear,
    "clearsource_history": clear_history,
    "job_abort": job_abort,
    "run_test": run_test,
    "gather_consumer": gather_consumer,
    "fetch_consumer": fetch_consumer,
    "purge_queues": purge_queues,
    "clean_harvest_log": clean_harvest_log,
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
