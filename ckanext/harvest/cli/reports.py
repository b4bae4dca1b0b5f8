"""``ckan harvester job errors JOB`` and ``ckan harvester preview SOURCE``.

``job errors`` writes the whole error report of a job as a file.
The rows and their columns are those of the job page's downloads
(:mod:`ckanext.harvest.lib.error_report`), streamed: a job with 100,000 errors
is written in bounded memory. A file given with ``--output`` is written under a
temporary name and renamed when complete, so a failure never leaves half a
report under the name asked for.

``preview`` prints what a job of a source would do with its first records,
writing nothing (``harvest_source_preview``).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Iterator

import click

from ckanext.harvest.cli.base import SOURCE_ARG, action, echo, guarded, source_dict
from ckanext.harvest.lib import error_report
from ckanext.harvest.logic.validators import MAX_PREVIEW_LIMIT


def write_errors(job_id: str, fmt: str, output: str) -> int:
    """Write every error of job ``job_id`` as ``fmt`` to ``output`` (``-``: stdout).

    :returns: the number of errors written
    :raises ObjectNotFound: no such job
    """
    report = action("harvest_job_error_report", {"id": job_id, "limit": 1})
    written = 0

    def counted() -> Iterator[dict[str, object]]:
        nonlocal written
        for row in error_report.iter_rows(report["job_id"]):
            written += 1
            yield row

    chunks = error_report.FORMATS[fmt][1](counted())
    if output == "-":
        for chunk in chunks:
            sys.stdout.write(chunk)
        sys.stdout.flush()
        return written
    partial = output + ".part"
    try:
        with open(partial, "w", encoding="utf-8", newline="") as stream:
            for chunk in chunks:
                stream.write(chunk)
        os.replace(partial, output)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return written


@click.command(name="errors", short_help="Write every error of a job (CSV or JSON).")
@click.argument("job_id", metavar="JOB_ID")
@click.option("--format", "fmt", type=click.Choice(sorted(error_report.FORMATS)),
              default="csv", show_default=True, help="The file format.")
@click.option("--output", "-o", default="-", metavar="FILE",
              help="Write to FILE instead of the standard output.")
@guarded()
def errors_command(job_id: str, fmt: str, output: str) -> None:
    """Write every error of job JOB_ID, gather and object errors, oldest first:
    job, stage, object, guid, dataset, message and time of each."""
    if output != "-" and os.path.isdir(output):
        raise click.BadParameter("{} is a directory".format(output), param_hint="--output")
    written = write_errors(job_id, fmt, output)
    if output != "-":
        echo("Wrote {} error(s) of job {} to {}\n".format(written, job_id, output))


# -- preview -------------------------------------------------------------------------


def format_preview(reference: str, result: dict[str, Any]) -> str:
    """The text of ``ckan harvester preview``: one line per record, its changes
    and errors indented below it."""
    records = result["records"]
    lines = ["Preview of {}: {} record(s) gathered, {} previewed; nothing was "
             "written.".format(reference, result["gathered"], len(records))]
    for message in result["gather_errors"]:
        lines.append("gather error: {}".format(message))
    for record in records:
        dataset = record.get("dataset") or {}
        lines.append("{:<13} {}{}".format(
            record["outcome"], record["guid"],
            " -> {}".format(dataset["name"]) if dataset.get("name") else ""))
        for change in record.get("changes") or []:
            lines.append("    {}: {} -> {}".format(
                change["field"], _short(change["old"]), _short(change["new"])))
        for message in record["errors"]:
            lines.append("    error: {}".format(message))
    return "\n".join(lines) + "\n"


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


@click.command(name="preview", short_help="Show what a job would do, writing nothing.")
@click.argument("source_id_or_name", metavar=SOURCE_ARG)
@click.option("--limit", "-l", type=click.IntRange(1, MAX_PREVIEW_LIMIT), default=20,
              show_default=True, help="Records to fetch and import.")
@guarded()
def preview_command(source_id_or_name: str, limit: int) -> None:
    """Run a dry run of a job of a source: the gather stage, then fetch and
    import of its first records, in a transaction that is rolled back. Prints
    what a real job would do with each record (create, update with the changed
    fields, not modified, withdraw, error); nothing is written, indexed,
    queued or mailed."""
    source = source_dict(source_id_or_name)
    result = action("harvest_source_preview", {"id": source["id"], "limit": limit})
    echo(format_preview(source_id_or_name, result))
