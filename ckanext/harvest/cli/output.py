"""The text blocks the ``ckan harvester`` commands print (formats of ``cli.md``).

Scripts parse them: a source is a ``Source id: ...`` line followed by
tab-indented fields and a blank line, a job a ``\\tJob id: ...`` line followed
by doubly indented fields, and lists end with a ``There are ...`` count. Two
lines exist only with the newer features, so the original's output is
unchanged without them: ``\\tschedule: ...`` (a source with a cron schedule)
and ``\\t\\twaiting for a slot: position N of M`` (a job waiting under
``ckan.harvest.max_running_jobs``).
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence


def there_are(what: str, sequence: Sequence[Any], condition: str = "") -> str:
    """``There is 1 harvest source`` / ``There are 3 new harvest jobs``."""
    count = len(sequence)
    return "There {} {} {}{}{}".format(
        "is" if count == 1 else "are",
        count,
        condition.lower() + " " if condition else "",
        what,
        "" if count == 1 else "s",
    )


def format_source(source: dict[str, Any]) -> str:
    """The source block: ``Source id: ...`` lines and a blank line."""
    lines = ["Source id: {}".format(source.get("id"))]
    if "name" in source:
        lines.append("\tname: {}".format(source["name"]))
    lines.append("\turl: {}".format(source.get("url")))
    lines.append("\ttype: {}".format(source.get("source_type") or source.get("type")))
    active = source["active"] if "active" in source else source.get("state") == "active"
    lines.append("\tactive: {}".format(active))
    lines.append("\tfrequency: {}".format(source.get("frequency")))
    if source.get("schedule"):
        lines.append("\tschedule: {}".format(source["schedule"]))
    lines.append("\tjobs: {}".format((source.get("status") or {}).get("job_count")))
    return "\n".join(lines) + "\n\n"


def format_sources(sources: Iterable[dict[str, Any]]) -> str:
    """The source blocks of ``sources``, one after another."""
    return "".join(format_source(source) for source in sources)


def format_job(job: dict[str, Any]) -> str:
    """The job block: ``\\tJob id: ...`` lines."""
    gather_errors = job.get("gather_errors", [])
    lines = [
        "\tJob id: {}".format(job.get("id")),
        "\t\tstatus: {}".format(job.get("status")),
        *_waiting_line(job),
        "\t\tsource: {}".format(job.get("source_id")),
        "\t\tobjects: {}".format(len(job.get("objects", []))),
        "\t\tgather_errors: {}".format(len(gather_errors)),
    ]
    lines.extend("\t\t\t{}".format(error.get("message")) for error in gather_errors)
    return "\n".join(lines) + "\n"


def _waiting_line(job: dict[str, Any]) -> list[str]:
    """The line of a job waiting for a slot (``ckan.harvest.max_running_jobs``)."""
    waiting = job.get("waiting_for_slot")
    if not waiting:
        return []
    return ["\t\twaiting for a slot: position {} of {}".format(
        waiting["position"], waiting["waiting"])]


def format_jobs(jobs: Iterable[dict[str, Any]]) -> str:
    """The job blocks of ``jobs``, one after another."""
    return "".join(format_job(job) for job in jobs)
