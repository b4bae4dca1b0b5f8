"""``ckan harvester job-status JOB`` and the waiting of ``job SOURCE --wait``.

Both read ``harvest_job_progress``: objects done of total, the rate since
the gather started, the ETA at that rate, and whether ``harvester run``
found the job stalled (``ckan.harvest.stall_minutes``).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

import click
from ckan.plugins import toolkit

from ckanext.harvest.cli.base import action, fail, guarded, interactive
from ckanext.harvest.model import JobStatus

#: Seconds between two looks at a job waited for.
POLL_SECONDS = 1.0

_STATS = ("added", "updated", "not modified", "deleted", "errored")


def duration(seconds: Optional[float]) -> str:
    """``45 s``, ``2 min 5 s``, ``1 h 3 min``, ``2 d 4 h``; ``unknown`` for None."""
    if seconds is None:
        return "unknown"
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return "{} d {} h".format(days, hours)
    if hours:
        return "{} h {} min".format(hours, minutes)
    if minutes:
        return "{} min {} s".format(minutes, secs)
    return "{} s".format(secs)


def _objects_line(progress: dict[str, Any]) -> str:
    if progress["gathering"]:
        return "gathering, {} found so far".format(progress["total"])
    return "{} of {} done ({}%)".format(progress["done"], progress["total"],
                                        progress["percent"])


def _stall_line(progress: dict[str, Any]) -> str:
    if progress["stalled"]:
        return "yes, objects unmoved since {} UTC".format(progress["last_moved"])
    return "no"


def format_status(progress: dict[str, Any]) -> str:
    """The text of ``job-status``: one ``key: value`` line per figure."""
    rate = progress["rate_per_minute"]
    states = ", ".join("{} {}".format(state, count)
                       for state, count in sorted(progress["states"].items()))
    lines = [
        "Job id: {}".format(progress["id"]),
        "\tstatus: {}".format(progress["status"]),
        "\tsource: {}".format(progress["source_id"]),
        "\tobjects: {}".format(_objects_line(progress)),
        "\tstates: {}".format(states or "none"),
        "\telapsed: {}".format(duration(progress["elapsed_seconds"])),
        "\trate: {}".format("{:.1f} objects/minute".format(rate)
                            if rate is not None else "unknown"),
        "\teta: {}".format(duration(progress["eta_seconds"])),
        "\tstalled: {}".format(_stall_line(progress)),
    ]
    return "\n".join(lines) + "\n"


def job_progress(job_id: str) -> dict[str, Any]:
    """``harvest_job_progress`` of a job, as the site user.

    :raises click.exceptions.Exit: no such job (after saying so)
    """
    try:
        return action("harvest_job_progress", {"id": job_id})
    except toolkit.ObjectNotFound:
        fail("Job {} not found.".format(job_id))


def _eta_text(progress: Optional[dict[str, Any]]) -> Optional[str]:
    """What the bar shows after its counts: the job's ETA while objects are left."""
    if not progress or progress["done"] >= progress["total"]:
        return None
    return "ETA {}".format(duration(progress["eta_seconds"]))


class _Bar:
    """A ``click.progressbar`` over a job's objects, made once their number
    is known (gathering over) and redrawn at each look, with the job's ETA
    (objects left at the rate since the gather started); does nothing outside
    a terminal."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled
        self.bar: Any = None
        self.shown = 0

    def show(self, progress: dict[str, Any]) -> None:
        if not self.enabled or progress["gathering"]:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=max(progress["total"], 1), label=self.label,
                                         show_eta=False, show_pos=True,
                                         item_show_func=_eta_text)
            self.bar.__enter__()
        step = max(0, progress["done"] - self.shown)
        self.bar.update(step, current_item=progress)
        self.shown += step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _finish_when_done(progress: dict[str, Any]) -> None:
    """Every object done: close the job now, as ``harvester run`` would."""
    if (progress["status"] == JobStatus.RUNNING.value and not progress["gathering"]
            and progress["done"] >= progress["total"]):
        action("harvest_jobs_run", {"source_id": progress["source_id"]})


def wait_for_job(job_id: str, label: str, bar: Optional[bool] = None,
                 sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Wait until a job is ``Finished``, with a progress bar in a terminal.

    The job is closed here as soon as its objects are all done (no need to
    wait for cron's ``harvester run``); a stall found by ``harvester run`` is
    reported once on stderr.

    :param bar: show the progress bar (default: when stdout is a terminal)
    :returns: the finished job (``harvest_job_show``)
    """
    shown = _Bar(label, interactive() if bar is None else bar)
    warned = False
    try:
        while True:
            progress = job_progress(job_id)
            shown.show(progress)
            if progress["status"] == JobStatus.FINISHED.value:
                break
            if progress["stalled"] and not warned:
                toolkit.error_shout("Job {} is stalled: no object has moved since {} UTC."
                                    .format(job_id, progress["last_moved"]))
                warned = True
            _finish_when_done(progress)
            sleep(POLL_SECONDS)
    finally:
        shown.close()
    return action("harvest_job_show", {"id": job_id})


def format_finished(job: dict[str, Any]) -> str:
    """``Job <id> finished: added 2, updated 0, ...`` (the end of ``--wait``)."""
    stats = job.get("stats") or {}
    return "Job {} finished: {}\n".format(
        job["id"], ", ".join("{} {}".format(key, stats.get(key, 0)) for key in _STATS))


@click.command(name="job-status", short_help="Show how far a job got, its rate and ETA.")
@click.argument("job_id", metavar="JOB_ID")
@guarded()
def job_status_command(job_id: str) -> None:
    """Show a job's status: objects done of total, objects per state, the rate
    (objects per minute since the gather started), the ETA at that rate, and
    whether ``harvester run`` found it stalled (no object moved for
    ckan.harvest.stall_minutes)."""
    click.echo(format_status(job_progress(job_id)), nl=False)
