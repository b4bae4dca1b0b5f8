"""``ckan harvester clean-jobs``: remove old harvest jobs (retention).

The rules and what is never removed are those of
:mod:`ckanext.harvest.lib.retention`; ``ckan harvester run`` applies the site's
rules (``ckan.harvest.keep_jobs``, ``ckan.harvest.keep_days``) after its usual
work when one of them is set (:func:`~ckanext.harvest.lib.retention.apply_site_policy`).
"""
from __future__ import annotations

from typing import Any, Optional

import click
from ckan.plugins import toolkit

from ckanext.harvest.cli.base import (
    Progress,
    fail,
    guarded,
    progress_bars,
    source_dict,
)
from ckanext.harvest.lib import retention


class _WholeNumber(click.ParamType):
    """A whole number, at least 1, with a one-line message otherwise."""

    name = "integer"

    def __init__(self, what: str) -> None:
        self.what = what

    def convert(self, value: Any, param: Optional[click.Parameter],
                ctx: Optional[click.Context]) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                number = 0
        if number < 1:
            self.fail("{!r} is not a {}: give a whole number, 1 or more".format(
                value, self.what), param, ctx)
        return number


def _summary(outcome: retention.Outcome, sources: int, protected: int,
             dry_run: bool) -> str:
    verb = "Would remove" if dry_run else "Removed"
    text = ("{} {} job(s) of {} source(s): {} object(s), {} object error(s), {} gather "
            "error(s).".format(verb, outcome.jobs, sources, outcome.objects,
                               outcome.object_errors, outcome.gather_errors))
    if protected:
        text += " Kept {} older job(s) that are protected.".format(protected)
    if outcome.skipped:
        text += " Skipped {} job(s) that changed meanwhile.".format(outcome.skipped)
    if dry_run:
        text += " Nothing was removed (--dry-run)."
    return text


def clean_jobs(policy: retention.Policy, source: Optional[str] = None,
               dry_run: bool = False, progress: Optional[Progress] = None) -> str:
    """Remove the jobs past ``policy`` (of one source if ``source`` is given).

    :returns: the summary line printed
    :raises SourceNotFound: no such source
    """
    source_id = source_dict(source)["id"] if source else None
    chosen = retention.plan(policy, source_id)
    if dry_run:
        outcome = retention.measure(chosen)
    else:
        outcome = retention.apply(chosen, progress)
    return _summary(outcome, chosen.sources, chosen.protected, dry_run)


@click.command(name="clean-jobs", short_help="Remove old harvest jobs (retention).")
@click.option("--keep", "keep", type=_WholeNumber("number of jobs"), default=None,
              metavar="N", help="Keep the last N finished jobs of each source.")
@click.option("--older-than", "older_than", type=_WholeNumber("number of days"),
              default=None, metavar="DAYS",
              help="Remove the finished jobs created more than DAYS days ago.")
@click.option("--source", "source", default=None, metavar="SOURCE_ID_OR_NAME",
              help="Only the jobs of this source.")
@click.option("--dry-run", is_flag=True, default=False,
              help="Print what would be removed; remove nothing.")
@guarded()
def clean_jobs_command(keep: Optional[int], older_than: Optional[int],
                       source: Optional[str], dry_run: bool) -> None:
    """Remove old finished harvest jobs, each with its objects and errors.

    With --keep and --older-than together, a job is kept when either keeps
    it. With neither, the site's ckan.harvest.keep_jobs and
    ckan.harvest.keep_days apply. Never removed: jobs not Finished, jobs
    owning a dataset's current object, each source's last error-free job
    (incremental harvests compare against it) and jobs the removal of missing
    datasets still needs. Prints what was (or would be) removed.
    """
    if keep is None and older_than is None:
        try:
            policy = retention.Policy.from_config(toolkit.config)
        except ValueError as error:
            fail("Configuration error: {}".format(error))
        if not policy.active:
            fail("Nothing to do: give --keep or --older-than, or set "
                 "ckan.harvest.keep_jobs or ckan.harvest.keep_days.")
    else:
        policy = retention.Policy(keep_jobs=keep or 0, keep_days=older_than or 0)
    click.echo(clean_jobs(policy, source, dry_run, progress_bars()))
