"""``ckan harvester source ...`` and ``ckan harvester sources``: harvest sources.

The implementations (``create_harvest_source``...) call the source actions as
the site user and return the text the commands print; they raise the actions'
exceptions (and :class:`~ckanext.harvest.cli.base.SourceNotFound`), which the
commands turn into error lines.
"""
from __future__ import annotations

from typing import Any, Optional

import click
from ckan.plugins import toolkit

from ckanext.harvest.cli.base import (
    SOURCE_ARG,
    NoProgress,
    Progress,
    action,
    echo,
    fail,
    guarded,
    progress_bars,
    source_dict,
)
from ckanext.harvest.cli.output import format_source, format_sources, there_are
from ckanext.harvest.cli.queues import purge_queues


def create_harvest_source(
    name: str,
    url: str,
    type: str,
    title: Optional[str] = None,
    active: bool = True,
    owner_org: Optional[str] = None,
    frequency: str = "MANUAL",
    config: Optional[str] = None,
    schedule: Optional[str] = None,
) -> str:
    """Create a source (and start a job when ``frequency`` is empty).

    :param schedule: a cron expression (``ckan.harvest.timezone``), if any

    :returns: the text to print
    :raises ValidationError: invalid source fields
    """
    data_dict = {
        "name": name,
        "url": url,
        "source_type": type,
        "title": title,
        "active": active,
        "owner_org": owner_org,
        "frequency": frequency,
        "config": config,
    }
    if schedule is not None:
        data_dict["schedule"] = schedule
    source = action("harvest_source_create", data_dict, ignore_auth=True)
    output = "Created new harvest source:\n" + format_source(source)
    sources = action("harvest_source_list", {})
    output += there_are("harvest source", sources) + "\n"
    if not frequency:
        action("harvest_job_create", {"source_id": source["id"], "run": True})
        output += "A new Harvest Job for this source has also been created\n"
    return output


def update_harvest_source(source_id_or_name: str, changes: dict[str, Any]) -> str:
    """Change some fields of a source (``harvest_source_patch``); the others stay.

    :param changes: e.g. ``{"schedule": "0 3 * * *"}`` (``""`` removes it)
    :returns: the text to print
    :raises SourceNotFound:
    :raises ValidationError: invalid source fields
    """
    source = source_dict(source_id_or_name)
    updated = action("harvest_source_patch", dict(changes, id=source["id"]))
    return "Updated harvest source:\n" + format_source(updated)


def show_harvest_source(source_id_or_name: str) -> str:
    """The source block of a source.

    :raises SourceNotFound:
    """
    return format_source(source_dict(source_id_or_name))


def remove_harvest_source(source_id_or_name: str) -> None:
    """Deactivate a source (its dataset is marked deleted); what it harvested stays.

    :raises SourceNotFound:
    """
    source = source_dict(source_id_or_name)
    action("harvest_source_delete", {"id": source["id"]})


def clear_harvest_source(source_id_or_name: str, progress: Optional[Progress] = None) -> None:
    """Hard-delete what a source harvested, and its history; the source remains.

    :raises SourceNotFound:
    """
    source = source_dict(source_id_or_name)
    label = "Clearing harvest source {}".format(source_id_or_name)
    with (progress or NoProgress)([source["id"]], label) as bar:
        for source_id in bar:
            action("harvest_source_clear", {"id": source_id})


def detach_harvest_source(source_id_or_name: str) -> int:
    """Make the datasets of a source ordinary local datasets; the source stays.

    :returns: the number of datasets detached
    :raises SourceNotFound:
    :raises ValidationError: the source has a running job
    """
    source = source_dict(source_id_or_name)
    return int(action("harvest_source_detach", {"id": source["id"]})["detached"])


def clear_harvest_source_history(
    source_id_or_name: Optional[str] = None, keep_current: bool = False
) -> str:
    """Delete the job history of one source, or of every source.

    Without a source, the queues are purged first (unless ``keep_current``):
    their messages would refer to the jobs and objects deleted.

    :returns: the confirmation line to print
    :raises SourceNotFound:
    """
    if source_id_or_name:
        source = source_dict(source_id_or_name)
        action("harvest_source_job_history_clear",
               {"id": source["id"], "keep_current": keep_current})
        return "Cleared job history of harvest source: {}".format(source_id_or_name)
    if not keep_current:
        purge_queues()
    cleared = action("harvest_sources_job_history_clear", {"keep_current": keep_current})
    return "Cleared job history for all harvest sources: {} source(s)".format(len(cleared))


def list_sources(all: bool = False) -> str:
    """Source blocks of the active sources (``all``: inactive ones too)."""
    sources = action("harvest_source_list", {} if all else {"only_active": True})
    return format_sources(sources) + there_are(
        "harvest source", sources, "" if all else "active"
    ) + "\n"


# -- commands ------------------------------------------------------------------------


class _SourceGroup(click.Group):
    """``source`` subcommands; ``source NAME URL TYPE ...`` still means ``source create``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["create"] + list(args)
        return super().parse_args(ctx, args)


@click.group(name="source", cls=_SourceGroup,
             short_help="Create, show, update, remove, clear or detach sources.")
def source_group() -> None:
    """Create, show, update, remove, clear or detach a harvest source.

    The older spelling ``source NAME URL TYPE [...]`` creates a source, like
    ``source create``.
    """


@source_group.command(name="create", short_help="Add a harvest source and print it.")
@click.argument("name")
@click.argument("url")
@click.argument("type")
@click.argument("title", required=False)
@click.argument("active", type=toolkit.asbool, default=True, required=False)
@click.argument("owner_org", required=False)
@click.argument("frequency", default="MANUAL", required=False)
@click.argument("config", required=False)
@click.option("--schedule", metavar="CRON", default=None,
              help="Run the source on this cron schedule (5 fields, read in "
                   "ckan.harvest.timezone), e.g. '0 3 * * *' for 03:00 every day.")
@guarded(with_context=False)
def create_command(name: str, url: str, type: str, title: Optional[str], active: bool,
                   owner_org: Optional[str], frequency: str, config: Optional[str],
                   schedule: Optional[str]) -> None:
    """Add a harvest source, then print it and the number of sources.

    TYPE is a harvester name (e.g. ``ckan``), FREQUENCY one of MANUAL (default),
    MONTHLY, WEEKLY, BIWEEKLY, DAILY, ALWAYS; an empty FREQUENCY ("") also starts
    a first job. With --schedule, the source runs on that cron schedule instead
    of its frequency. CONFIG is the harvester configuration (usually JSON). ACTIVE is
    accepted for compatibility and has no effect.
    """
    echo(create_harvest_source(
        name, url, type, title, active, owner_org, frequency, config, schedule
    ))


@source_group.command(name="update", short_help="Change the schedule or frequency of a source.")
@click.argument("source_id_or_name", metavar=SOURCE_ARG)
@click.option("--schedule", metavar="CRON", default=None,
              help="A cron schedule (5 fields, read in ckan.harvest.timezone), e.g. "
                   "'0 3 * * *'; an empty string removes it.")
@click.option("--frequency", default=None,
              help="MANUAL, MONTHLY, WEEKLY, BIWEEKLY, DAILY or ALWAYS.")
@guarded()
def update_command(source_id_or_name: str, schedule: Optional[str],
                   frequency: Optional[str]) -> None:
    """Change the schedule or the frequency of a source, then print it.

    Only the options given change. A source with a schedule runs by its
    schedule; without one (``--schedule ""``), by its frequency.
    """
    changes = {key: value for key, value in
               (("schedule", schedule), ("frequency", frequency)) if value is not None}
    if not changes:
        fail("Nothing to update: give --schedule or --frequency")
    echo(update_harvest_source(source_id_or_name, changes))


@source_group.command(name="show", short_help="Print the details of one source.")
@click.argument("source_id_or_name", metavar=SOURCE_ARG)
@guarded()
def show_command(source_id_or_name: str) -> None:
    """Print the details of one source: id, name, URL, type, state, frequency
    and number of jobs."""
    echo(show_harvest_source(source_id_or_name))


@source_group.command(name="remove",
                      short_help="Deactivate a source, keeping what it harvested.")
@click.argument("source_id_or_name", metavar=SOURCE_ARG)
@guarded()
def remove_command(source_id_or_name: str) -> None:
    """Deactivate a source without touching what it harvested.

    The source dataset is marked deleted (a sysadmin can make it active
    again) and its New jobs are aborted. The datasets it harvested, its job history and its
    harvest objects stay in place.
    """
    remove_harvest_source(source_id_or_name)
    click.secho("Removed harvest source: {}".format(source_id_or_name), fg="green")


@source_group.command(name="clear", short_help="Delete what a source harvested; keep the source.")
@click.argument("source_id_or_name", metavar=SOURCE_ARG)
@guarded()
def clear_command(source_id_or_name: str) -> None:
    """Delete everything a source harvested, but not the source.

    The datasets it created are deleted for good (not moved to the trash),
    along with its jobs, harvest objects and their errors. The source itself
    stays, ready to harvest again.
    """
    clear_harvest_source(source_id_or_name, progress=progress_bars())
    click.secho("Cleared harvest source: {}".format(source_id_or_name), fg="green")


@source_group.command(name="detach",
                      short_help="Turn what a source harvested into local datasets.")
@click.argument("source_id_or_name", metavar=SOURCE_ARG)
@guarded()
def detach_command(source_id_or_name: str) -> None:
    """Let the datasets of a source go: they become ordinary local datasets.

    Their link to the source and their harvest_* extras are removed; their
    content is kept. No later job, of this source or any other, updates or
    deletes them. The source itself, its jobs and its settings are unchanged.
    Refused while the source has a running job.
    """
    try:
        detached = detach_harvest_source(source_id_or_name)
    except toolkit.ValidationError as error:
        fail("Cannot detach: {}".format("; ".join(
            str(message) for messages in error.error_dict.values()
            for message in (messages if isinstance(messages, list) else [messages]))))
    click.secho("Detached {} dataset(s) from harvest source: {}".format(
        detached, source_id_or_name), fg="green")


@source_group.command(name="clear-history", short_help="Clear the job history of sources.")
@click.argument("source_id_or_name", metavar="[SOURCE_ID_OR_NAME]", required=False)
@click.option("-k", "--keep-current", type=str, default=None, metavar="VALUE",
              help="Keep the jobs and objects of the current datasets "
                   "(any non-empty VALUE, e.g. -k yes).")
@guarded()
def clear_history_command(source_id_or_name: Optional[str], keep_current: Any) -> None:
    """Delete the job history of one source, or of every source.

    Jobs, harvest objects and their errors are deleted; the sources and the
    datasets they harvested stay. Without SOURCE_ID_OR_NAME, every active
    source is cleared (private ones too) and, unless --keep-current is
    given, the gather and fetch queues are purged first, since their
    messages would point at deleted jobs.
    """
    message = clear_harvest_source_history(source_id_or_name, bool(keep_current))
    click.secho(message, fg="green")


@click.command(name="sources", short_help="Print the active sources (or all of them).")
@click.argument("all_sources", metavar="[ALL]", required=False)
@guarded()
def sources_command(all_sources: Optional[str]) -> None:
    """Print the active sources, newest first, then how many there are.

    Give any ALL argument (``all`` for instance) to list the inactive
    sources as well. At most ckan.harvest.harvest_source_limit sources are
    printed.
    """
    echo(list_sources(bool(all_sources)))
