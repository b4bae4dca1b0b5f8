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


@click.group(short_help="Harvests remotely mastered metadata.")
def harvester() -> None:
    """Harvests remotely mastered metadata."""


class _SourceGroup(click.Group):
    """``source`` subcommands; ``source NAME URL TYPE ...`` still means ``source create``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["create"] + list(args)
        return super().parse_args(ctx, args)


@harvester.group(cls=_SourceGroup, short_help="Manage harvest sources")
def source() -> None:
    """Manage harvest sources.

    The older spelling ``source NAME URL TYPE [...]`` creates a source, like
    ``source create``.
    """


@source.command(short_help="Create new harvest source.")
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
    """Create new harvest source.

    TYPE is a harvester name (e.g. ``ckan``), FREQUENCY one of MANUAL (default),
    MONTHLY, WEEKLY, BIWEEKLY, DAILY, ALWAYS; an empty FREQUENCY ("") also starts
    a first job. CONFIG is the harvester configuration (usually JSON). ACTIVE is
    accepted for compatibility and has no effect.
    """
    _echo(utils.create_harvest_source(
        name, url, type, title, active, owner_org, frequency, config
    ))


@source.command(short_help="Shows a harvest source.")
@click.argument("source_id_or_name", metavar=_SOURCE_ARG)
@_command()
def show(source_id_or_name: str) -> None:
    """Shows a harvest source."""
    _echo(utils.show_harvest_source(source_id_or_name))


@source.command(short_help="Remove (deactivate) a harvest source.")
@click.argument("source_id_or_name", metavar=_SOURCE_ARG)
@_command()
def remove(source_id_or_name: str) -> None:
    """Remove (deactivate) a harvester source, whilst leaving any related datasets,
    jobs and objects.

    The source dataset is deleted (it can be restored from the trash) and its
    pending jobs are aborted.
    """
    utils.remove_harvest_source(source_id_or_name)
    click.secho("Removed harvest source: {}".format(source_id_or_name), fg="green")


@source.command(short_help="Clear the datasets, jobs and objects of a source.")
@click.argument("source_id_or_name", metavar=_SOURCE_ARG)
@_command()
def clear(source_id_or_name: str) -> None:
    """Clears all datasets, jobs and objects related to a harvest source, but keeps
    the source itself.
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
    """If no source id is given the history for all harvest sources (maximum is
    1000) will be cleared.

    Clears all jobs and objects related to a harvest source (or to every
    source), but keeps the sources and their datasets. Without a source, the
    gather and fetch queues are purged first unless --keep-current is given.
    """
    message = utils.clear_harvest_source_history(source_id_or_name, bool(keep_current))
    click.secho(message, fg="green")


# -- sources and jobs ----------------------------------------------------------------


@harvester.command(short_help="Lists harvest sources.")
@click.argument("all_sources", metavar="[ALL]", required=False)
@_command()
def sources(all_sources: Optional[str]) -> None:
    """Lists harvest sources.

    If 'all' is defined, it also shows the Inactive sources
    """
    _echo(utils.list_sources(bool(all_sources)))


@harvester.command(short_help="Create new harvest job and runs it.")
@click.argument("source_id_or_name", metavar=_SOURCE_ARG)
@_command()
def job(source_id_or_name: str) -> None:
    """Create new harvest job and runs it (puts it on the gather queue)."""
    _echo(utils.create_job(source_id_or_name))


@harvester.command(short_help="Lists harvest jobs.")
@_command()
def jobs() -> None:
    """Lists harvest jobs."""
    _echo(utils.list_jobs())


@harvester.command(name="job-abort", short_help="Marks a job as \"Aborted\".")
@click.argument("source_or_job_id", metavar="SOURCE_OR_JOB_ID")
@_command()
def job_abort(source_or_job_id: str) -> None:
    """Marks a job as "Aborted" so that the source can be restarted afresh.

    Takes a job id, or a source id or name (its latest job). The job's status
    becomes Finished; its unfinished objects become errors.
    """
    try:
        status = utils.abort_job(source_or_job_id)
    except toolkit.ObjectNotFound:
        _abort("Job not found.")
    click.echo(status)


@harvester.command(name="abort-failed-jobs", short_help="Abort jobs stuck in running.")
@click.argument("life_span", metavar="[LIFE_SPAN]", type=click.INT, required=False)
@click.option("-i", "--include", default=None,
              help="If source_id provided as included, then only it's failed jobs will "
                   "be aborted. You can use comma as a separator to provide multiple "
                   "source_id's")
@click.option("-e", "--exclude", default=None,
              help="If source_id provided as excluded, all sources failed jobs, except "
                   "for that will be aborted. You can use comma as a separator to "
                   "provide multiple source_id's")
@_command()
def abort_failed_jobs(life_span: Optional[int], include: Optional[str],
                      exclude: Optional[str]) -> None:
    """Abort all jobs which are in a "limbo state" where the job has run with errors
    but the harvester run command will not mark it as finished, and therefore you
    cannot run another job.

    A running job is aborted when it is older than its source's frequency
    (DAILY 1 day, WEEKLY 7, BIWEEKLY 14, MONTHLY 30); LIFE_SPAN (days, default 7)
    applies to MANUAL and ALWAYS sources.
    """
    click.echo(utils.abort_failed_jobs(
        life_span if life_span is not None else False, include, exclude
    ))
    click.echo()


@harvester.command(name="job-all", short_help="Create new harvest jobs for all active sources.")
@_command()
def job_all() -> None:
    """Create new harvest jobs for all active sources."""
    click.echo(utils.job_all())


@harvester.command(short_help="Starts any harvest jobs that have been created.")
@_command()
def run() -> None:
    """Starts any harvest jobs that have been created by putting them onto the
    gather queue.

    Also creates the jobs of scheduled sources that are due, and marks finished
    the running jobs whose objects are all done. Run it from cron, e.g. every
    15 minutes.
    """
    utils.run_harvester()


@harvester.command(name="run-test", short_help="Runs a harvest - for testing only.")
@click.argument("source_id_or_name", metavar=_SOURCE_ARG)
@click.argument("force_import", metavar="[GUID]", required=False)
@_command()
def run_test(source_id_or_name: str, force_import: Optional[str]) -> None:
    """Runs a harvest - for testing only.

    Gathers, fetches and imports a job of the source in this process (the job is
    also put on the gather queue). With GUID, only the objects whose guid is
    contained in GUID are imported.
    """
    def confirm(pending: utils.JobToAbort) -> bool:
        click.echo(pending.describe())
        answer = click.prompt("Abort it? (y/n)", default="", show_default=False,
                              prompt_suffix="")
        return answer == "y"

    if not utils.run_test_harvester(source_id_or_name, force_import, confirm,
                                    echo=click.echo, progress=_progress()):
        raise click.exceptions.Exit(1)


@harvester.command(name="import", short_help="Perform the import stage again.")
@click.argument("source_id_or_name", metavar="[SOURCE_ID_OR_NAME]", required=False)
@click.option("-j", "--no-join-datasets", is_flag=True, default=False,
              help="Do not join harvest objects to existing datasets")
@click.option("-o", "--harvest-object-id",
              help="Id of the harvest object to which perform the import stage")
@click.option("-p", "--package-id",
              help="Id of the package whose harvest object to perform the import stage for")
@click.option("-g", "--guid",
              help="Guid of the harvest object to which perform the import stage for")
@click.option("--segments",
              help="A string containing hex digits that represent which of the 16 "
                   "harvest object segments to import. e.g. 15af will run segments "
                   "1,5,a,f")
@_command()
def import_stage(source_id_or_name: Optional[str], no_join_datasets: bool,
                 harvest_object_id: Optional[str], package_id: Optional[str],
                 guid: Optional[str], segments: Optional[str]) -> None:
    """Perform the import stage with the last fetched objects, for a certain source
    or a single harvest object.

    Without arguments, every current object is imported again. The harvester
    of each object's source runs its import stage with force_import set.
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


@harvester.command(name="purge-queues", short_help="Removes all jobs from fetch and gather queue.")
@_command(with_context=False)
def purge_queues() -> None:
    """Removes all jobs from fetch and gather queue."""
    utils.purge_queues()


@harvester.command(name="gather-consumer",
                   short_help="Starts the consumer for the gathering queue.")
@_command(with_context=False)
def gather_consumer() -> None:
    """Starts the consumer for the gathering queue.

    Runs until stopped (SIGTERM or Ctrl-C); run it under supervisor or systemd.
    """
    _until_stopped(utils.gather_consumer)


@harvester.command(name="fetch-consumer", short_help="Starts the consumer for the fetching queue.")
@_command(with_context=False)
def fetch_consumer() -> None:
    """Starts the consumer for the fetching queue.

    Runs until stopped (SIGTERM or Ctrl-C); run it under supervisor or systemd.
    """
    _until_stopped(utils.fetch_consumer)


@harvester.command(name="clean-harvest-log",
                   short_help="Clean-up mechanism for the harvest log table.")
@_command()
def clean_harvest_log() -> None:
    """Clean-up mechanism for the harvest log table.

    Deletes the records older than ckan.harvest.log_timeframe days (30 by default).
    """
    utils.clean_harvest_log()


@harvester.command(short_help="Reindexes the harvest source datasets.")
@_command()
def reindex() -> None:
    """Reindexes the harvest source datasets."""
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
