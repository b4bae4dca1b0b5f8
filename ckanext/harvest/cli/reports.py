"""``ckan harvester job errors JOB``: the whole error report of a job as a file.

The rows and their columns are those of the job page's downloads
(:mod:`ckanext.harvest.lib.error_report`), streamed: a job with 100,000 errors
is written in bounded memory. A file given with ``--output`` is written under a
temporary name and renamed when complete, so a failure never leaves half a
report under the name asked for.
"""
from __future__ import annotations

import os
import sys
from typing import Iterator

import click

from ckanext.harvest.cli.base import action, echo, guarded
from ckanext.harvest.lib import error_report


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
